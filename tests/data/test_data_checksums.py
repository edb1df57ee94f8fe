"""Checksums recorded when a shard is written are enforced: a changed shard is bad, never re-recorded."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from vlabench.data import CorruptShardError, DemoDataset, ShardWriter, load_manifest
from vlabench.data.info import DataInfoConfig
from vlabench.data.info import run as info_run
from vlabench.data.layout import file_sha256
from vlabench.data.lerobot import ExportConfig
from vlabench.data.lerobot import run as export_run
from vlabench.data.manifest import rebuild_manifest, verify_dataset
from vlabench.data.stats import compute_stats, ensure_stats


def _overwrite_middle(path: Path, n: int = 2000, keep_mtime: bool = False) -> bytes:
    """Overwrite n bytes in the middle of a file (same size); returns the original bytes."""
    st = path.stat()
    original = path.read_bytes()
    with open(path, "r+b") as f:
        f.seek(len(original) // 2)
        f.write(bytes(255 - b for b in original[len(original) // 2: len(original) // 2 + n]))
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    else:  # make the change visible to an mtime check even on coarse-mtime file systems
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert path.stat().st_size == st.st_size
    return original


def _manifest_json(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())


def test_changed_shard_is_bad_and_never_healed(tmp_path: Path, synth) -> None:
    root = synth.write_dataset(tmp_path / "d", synth.make_episodes(6), per_shard=2)
    shard = root / "shard_00001.h5"
    recorded = _manifest_json(root)["checksums"]["shard_00001.h5"]
    assert recorded == file_sha256(shard)
    original = _overwrite_middle(shard)
    for _ in range(2):  # the first rescan must not record the new hash: the second one still fails
        with pytest.raises(CorruptShardError, match=r"shard_00001\.h5: its bytes changed after it was written"):
            load_manifest(root)
        assert _manifest_json(root)["checksums"]["shard_00001.h5"] == recorded
    with pytest.raises(CorruptShardError, match="shard_00001.h5"):
        info_run(DataInfoConfig(data=root))
    with pytest.raises(CorruptShardError, match="shard_00001.h5"):
        rebuild_manifest(root)  # re-reading everything does not accept it either
    with pytest.raises(CorruptShardError, match="shard_00001.h5"):
        DemoDataset(root)
    with pytest.warns(UserWarning, match="shard_00001.h5"):
        ds = DemoDataset(root, skip_bad=True)
    assert ds.num_episodes == 4
    with pytest.warns(UserWarning, match="shard_00001.h5"):
        assert "1 unreadable or changed" in info_run(DataInfoConfig(data=root, skip_bad=True))
    shard.write_bytes(original)  # restored from a backup: healthy again
    assert load_manifest(root)["n_episodes"] == 6


def test_verify_catches_a_change_that_kept_size_and_mtime(tmp_path: Path, synth, capsys) -> None:
    root = synth.write_dataset(tmp_path / "d", synth.make_episodes(4), per_shard=2)
    text = info_run(DataInfoConfig(data=root, verify=True))
    assert "verified   2 files" in text and "every checksum matches" in text
    _overwrite_middle(root / "shard_00000.h5", keep_mtime=True)
    load_manifest(root)  # size and mtime unchanged: only re-hashing can see it
    with pytest.raises(CorruptShardError, match="shard_00000.h5.*changed after it was written"):
        info_run(DataInfoConfig(data=root, verify=True))
    with pytest.raises(CorruptShardError, match="shard_00000.h5"):
        verify_dataset(root)
    with pytest.warns(UserWarning, match="shard_00000.h5"):
        m = verify_dataset(root, skip_bad=True)
    assert m["n_episodes"] == 2 and [b["file"] for b in m["bad"]] == ["shard_00000.h5"]
    with pytest.raises(CorruptShardError, match="shard_00000.h5"):
        DemoDataset(root, verify=True)


def test_checksum_is_recorded_at_write_time_not_first_read(tmp_path: Path, synth) -> None:
    w = ShardWriter(tmp_path, episodes_per_shard=2)
    for ep in synth.make_episodes(2):
        w.write(ep)  # packs shard_00000.h5; nothing has indexed it yet
    shard = tmp_path / "shard_00000.h5"
    assert _manifest_json(tmp_path)["checksums"] == {"shard_00000.h5": file_sha256(shard)}
    _overwrite_middle(shard)
    with pytest.raises(CorruptShardError, match="shard_00000.h5.*changed after it was written"):
        load_manifest(tmp_path)


def test_changed_pending_file_is_not_packed(tmp_path: Path, synth) -> None:
    eps = synth.make_episodes(3)
    w = ShardWriter(tmp_path, episodes_per_shard=3)
    pending = [w.write(ep) for ep in eps[:2]]
    _overwrite_middle(pending[1], n=500)
    with pytest.warns(UserWarning, match=r"not packing .*w00000_000001\.h5"):
        w.write(eps[2])  # packs: the changed file must not enter a shard under a fresh checksum
    with pytest.warns(UserWarning, match="w00000_000001.h5"):
        m = load_manifest(tmp_path, skip_bad=True)
    assert m["n_episodes"] == 2 and [b["file"] for b in m["bad"]] == ["pending/w00000_000001.h5"]


def test_manifest_without_checksums_uses_its_entries(tmp_path: Path, synth) -> None:
    """Manifests written before "checksums" existed recorded the hash in each entry; that still counts."""
    root = synth.write_dataset(tmp_path / "d", synth.make_episodes(2), per_shard=2)
    m = _manifest_json(root)
    del m["checksums"]
    (root / "manifest.json").write_text(json.dumps(m))
    _overwrite_middle(root / "shard_00000.h5")
    with pytest.raises(CorruptShardError, match="changed after it was written"):
        load_manifest(root)


def test_export_verifies_before_it_starts(tmp_path: Path, synth) -> None:
    root = synth.write_dataset(tmp_path / "d", synth.make_episodes(4), per_shard=2)
    _overwrite_middle(root / "shard_00001.h5", keep_mtime=True)
    out = tmp_path / "lerobot"
    with pytest.raises(CorruptShardError, match="shard_00001.h5"):
        export_run(ExportConfig(data=root, out=out))
    assert not out.exists() and not list(tmp_path.glob(".lerobot*"))
    with pytest.warns(UserWarning, match="shard_00001.h5"):
        export_run(ExportConfig(data=root, out=out, skip_bad=True))
    assert json.loads((out / "meta/info.json").read_text())["total_episodes"] == 2


def test_stats_skip_bad(tmp_path: Path, synth) -> None:
    eps = synth.make_episodes(4)
    root = synth.write_dataset(tmp_path / "d", eps, per_shard=2)
    manifest = load_manifest(root)
    (root / "stats.json").unlink()
    synth.truncate_half(root / "shard_00001.h5")  # unreadable after the manifest was taken
    with pytest.raises(CorruptShardError, match="shard_00001.h5"):
        compute_stats(root, manifest)
    with pytest.warns(UserWarning, match="shard_00001.h5"):
        stats = ensure_stats(root, manifest, skip_bad=True)
    kept = [e for e in eps if e["attrs"]["index"] in _indices_in(manifest, "shard_00000.h5")]
    np.testing.assert_allclose(stats["action"]["max"], np.concatenate([e["actions"] for e in kept]).max(0), rtol=1e-6)
    assert not (root / "stats.json").exists()  # partial stats are not cached as the dataset's


def _indices_in(manifest: dict, file: str) -> set[int]:
    return {ep["index"] for s in manifest["shards"] if s["file"] == file for ep in s["episodes"]}


def test_unchanged_dataset_loads_without_warnings(tmp_path: Path, synth) -> None:
    root = synth.write_dataset(tmp_path / "d", synth.make_episodes(3), per_shard=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert verify_dataset(root)["n_episodes"] == 3
        os.utime(root / "shard_00000.h5")  # touched, bytes unchanged: re-hashed and accepted
        assert load_manifest(root)["n_episodes"] == 3
