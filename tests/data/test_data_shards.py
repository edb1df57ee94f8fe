"""Shard writer/reader round trip, crash safety and the self-healing manifest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from vlabench.data import (
    CorruptShardError, ShardWriter, completed_keys, load_manifest, manifest_episodes, read_episode,
    rebuild_manifest,
)


def _assert_same_episode(got: dict, want: dict) -> None:
    for k in ("image", "wrist_image", "state"):
        np.testing.assert_array_equal(got["obs"][k], want["obs"][k])
    np.testing.assert_array_equal(got["actions"], want["actions"])
    np.testing.assert_array_equal(got["sim"]["object_poses"], want["sim"]["object_poses"])
    assert got["attrs"] == want["attrs"]


def test_round_trip(tmp_path: Path, synth) -> None:
    eps = synth.make_episodes(5)
    root = synth.write_dataset(tmp_path / "d", eps, per_shard=2)
    assert sorted(p.name for p in root.glob("shard_*.h5")) == ["shard_00000.h5", "shard_00001.h5", "shard_00002.h5"]
    assert not list((root / "pending").iterdir()) and not list(root.rglob("*.tmp"))
    m = load_manifest(root)
    assert m["n_episodes"] == 5 and m["n_frames"] == sum(len(e["actions"]) for e in eps)
    assert [s["n_episodes"] for s in m["shards"]] == [2, 2, 1]
    listed = manifest_episodes(m)
    for entry, want in zip(listed, synth.sorted_by_key(eps)):
        assert entry["length"] == len(want["actions"])
        _assert_same_episode(read_episode(root / entry["file"], entry["demo"]), want)
    with h5py.File(root / "shard_00000.h5") as f:
        img = f["data/demo_0/obs/image"]
        assert img.chunks == (1, *img.shape[1:]) and img.compression == "gzip" and img.compression_opts == 4
        assert f.attrs["format"] == "vlabench-demos"
    assert (root / "stats.json").exists() and m["stats_hash"] == m["hash"]


def test_flat_record_and_dict_env_kwargs(tmp_path: Path, synth) -> None:
    ep = synth.make_episodes(1)[0]
    flat = {f"obs/{k}": v for k, v in ep["obs"].items()}
    flat.update({"actions": ep["actions"], **ep["attrs"], "env_kwargs": {"image_size": 128}})
    with ShardWriter(tmp_path, episodes_per_shard=4) as w:
        w.write(flat)
    got = read_episode(tmp_path / "shard_00000.h5")
    assert got["attrs"]["env_kwargs"] == '{"image_size": 128}'
    assert got["sim"]["object_poses"].shape == (len(ep["actions"]), 0, 7)


@pytest.mark.parametrize("mutate, message", [
    (lambda e: e["obs"].pop("wrist_image"), "lacks"),
    (lambda e: e.__setitem__("actions", e["actions"][:, :6]), "actions"),
    (lambda e: e["obs"].__setitem__("image", e["obs"]["image"].astype(np.float32)), "uint8"),
    (lambda e: e.__setitem__("extra", np.zeros(3)), "unknown episode array"),
])
def test_rejects_bad_records(tmp_path: Path, mutate, message, synth) -> None:
    ep = synth.make_episodes(1)[0]
    mutate(ep)
    with pytest.raises(ValueError, match=message):
        ShardWriter(tmp_path).write(ep)


def test_orphan_tmp_removed_and_manifest_rebuilt(tmp_path: Path, synth) -> None:
    root = synth.write_dataset(tmp_path / "d", synth.make_episodes(5), per_shard=2)
    h = load_manifest(root)["hash"]
    (root / "shard_00007.h5.tmp").write_bytes(b"half a shard")
    (root / "pending" / "w00003_000000.h5.tmp").write_bytes(b"half an episode")
    (root / "manifest.json").unlink()
    m = load_manifest(root)
    assert m["hash"] == h and m["n_episodes"] == 5
    assert not list(root.rglob("*.tmp"))
    (root / "manifest.json").write_text("{ torn")  # a torn manifest is rebuilt too
    assert load_manifest(root)["hash"] == h
    assert rebuild_manifest(root)["hash"] == h


def test_tmp_of_live_writer_is_kept(tmp_path: Path, synth) -> None:
    import fcntl

    root = synth.write_dataset(tmp_path / "d", synth.make_episodes(2), per_shard=2)
    live = root / "shard_00005.h5.tmp"
    fd = os.open(live, os.O_CREAT | os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # flock conflicts across open file descriptions
        load_manifest(root)
        assert live.exists()
    finally:
        os.close(fd)
    load_manifest(root)
    assert not live.exists()


def test_unpacked_episodes_survive_and_are_adopted(tmp_path: Path, synth) -> None:
    eps = synth.make_episodes(5)
    w = ShardWriter(tmp_path, shard_index=3, episodes_per_shard=8)
    for ep in eps[:3]:
        w.write(ep)
    del w  # "crash": never closed
    m = load_manifest(tmp_path)
    assert m["n_episodes"] == 3 and all(s["file"].startswith("pending/") for s in m["shards"])
    with ShardWriter(tmp_path, shard_index=3, episodes_per_shard=8) as w2:
        for ep in eps[3:]:
            w2.write(ep)
    m = load_manifest(tmp_path)
    assert [s["file"] for s in m["shards"]] == ["shard_00003.h5"] and m["n_episodes"] == 5
    assert completed_keys(tmp_path) == {(e["attrs"]["task"], e["attrs"]["split"], e["attrs"]["index"],
                                          e["attrs"]["seed"]) for e in eps}


def test_crash_between_publish_and_pending_delete(tmp_path: Path, synth) -> None:
    w = ShardWriter(tmp_path, episodes_per_shard=8)
    paths = [w.write(ep) for ep in synth.make_episodes(3)]
    saved = {p: p.read_bytes() for p in paths}
    w.close()
    for p, data in saved.items():  # as if the process died right after publishing the shard
        p.write_bytes(data)
    m = load_manifest(tmp_path)
    assert m["n_episodes"] == 3 and not m["duplicates"]
    assert not list((tmp_path / "pending").iterdir())


def test_concurrent_writers_never_overwrite(tmp_path: Path, synth) -> None:
    eps = synth.make_episodes(8)
    a = ShardWriter(tmp_path, shard_index=0, episodes_per_shard=2)
    b = ShardWriter(tmp_path, shard_index=1, episodes_per_shard=2)  # same stride 1: names collide
    for i, ep in enumerate(eps):
        (a if i % 2 else b).write(ep)
    a.close(), b.close()
    m = load_manifest(tmp_path)
    assert m["n_episodes"] == 8 and len(m["shards"]) == 4 and not m["duplicates"]


def test_kill_9_loses_only_the_episode_in_flight(tmp_path: Path, synth) -> None:
    script = textwrap.dedent(f"""
        import importlib.util
        spec = importlib.util.spec_from_file_location("data_synth", {str(Path(__file__).parent / "conftest.py")!r})
        synth = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(synth)
        from vlabench.data import ShardWriter
        w = ShardWriter({str(tmp_path)!r}, episodes_per_shard=3)
        for i, ep in enumerate(synth.make_episodes(40)):
            w.write(ep)
            print(i, flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    done = -1
    while done < 6:  # past two full shards, with pending episodes outstanding
        line = proc.stdout.readline()
        assert line, "writer process died early"
        done = int(line)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    m = load_manifest(tmp_path)
    assert m["n_episodes"] >= done + 1 and not m["bad"]
    for ep in manifest_episodes(m):
        read_episode(tmp_path / ep["file"], ep["demo"])  # every listed episode is whole
    assert not list(tmp_path.rglob("*.tmp"))


def test_truncated_shard_named_in_error(tmp_path: Path, synth) -> None:
    root = synth.write_dataset(tmp_path / "d", synth.make_episodes(5), per_shard=2)
    synth.truncate_half(root / "shard_00001.h5")
    with pytest.raises(CorruptShardError, match="shard_00001.h5"):
        load_manifest(root)
    with pytest.warns(UserWarning, match="shard_00001.h5"):
        m = load_manifest(root, skip_bad=True)
    assert m["n_episodes"] == 3 and [b["file"] for b in m["bad"]] == ["shard_00001.h5"]
    with pytest.raises(CorruptShardError, match="shard_00001.h5"):  # still an error without skip_bad
        load_manifest(root)


def test_verify_detects_silent_corruption(tmp_path: Path, synth) -> None:
    root = synth.write_dataset(tmp_path / "d", synth.make_episodes(2), per_shard=2)
    path = root / "shard_00000.h5"
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    load_manifest(root)  # size and mtime unchanged: the cheap check cannot see it
    with pytest.raises(CorruptShardError, match="shard_00000.h5"):
        load_manifest(root, verify=True)


def test_hash_depends_on_content_not_time(tmp_path: Path, synth) -> None:
    eps = synth.make_episodes(3)
    h1 = load_manifest(synth.write_dataset(tmp_path / "a", eps))["hash"]
    time.sleep(1.1)  # shards carry no timestamps: the same episodes give byte-identical files
    h2 = load_manifest(synth.write_dataset(tmp_path / "b", eps))["hash"]
    h3 = load_manifest(synth.write_dataset(tmp_path / "c", eps[:2]))["hash"]
    assert h1 == h2 != h3
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["hash"] == h1


def test_loading_a_directory_without_demos_writes_nothing_into_it(tmp_path: Path) -> None:
    from vlabench.data.manifest import load_manifest

    (tmp_path / "notes.txt").write_text("not a demo directory")
    m = load_manifest(tmp_path)
    assert m["shards"] == [] and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    from vlabench.data.stats import ensure_stats

    with pytest.raises(ValueError, match="holds no demos"):  # training/offline-eval name the directory
        ensure_stats(tmp_path, m)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
