"""Imports inside vlabench.data flow one way (no cycles), and its writers go through vlabench.fileio."""

from __future__ import annotations

import ast
from pathlib import Path

import vlabench.data

DATA = Path(vlabench.data.__file__).parent
# module -> the vlabench.data modules it may import (directly or lazily)
ALLOWED = {
    "layout": set(),
    "manifest": {"layout"},
    "stats": {"layout", "manifest"},
    "shards": {"layout", "manifest", "stats"},
    "features": {"layout"},
    "dataset": {"features", "layout", "manifest", "stats"},
    "info": {"manifest", "stats"},
    "lerobot": {"layout", "manifest", "stats"},
    "video": set(),
    "collect_worker": {"shards"},
    "collect": {"collect_worker", "manifest", "stats"},
    "replay": {"manifest", "shards", "video"},
}


def _data_imports(module: str) -> set[str]:
    tree = ast.parse((DATA / f"{module}.py").read_text())
    out = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        out |= {n.split(".")[2] for n in names if n.startswith("vlabench.data.")}
    return out


def test_imports_flow_one_way() -> None:
    for module, allowed in ALLOWED.items():
        got = _data_imports(module)
        assert got <= allowed, f"vlabench.data.{module} imports {sorted(got - allowed)}; allowed: {sorted(allowed)}"


def test_stats_and_shards_no_longer_import_each_other() -> None:
    assert "shards" not in _data_imports("stats")
    assert "stats" in _data_imports("shards")


def test_no_hand_rolled_temp_files() -> None:
    """Temp-then-rename writing lives in vlabench.fileio; the LeRobot exporter keeps its directory rename."""
    for module in ALLOWED:
        text = (DATA / f"{module}.py").read_text()
        for needle in ("os.replace(", "os.rename(", '.tmp")', "locked_tmp"):
            if module == "lerobot" and needle == "os.replace(":
                continue
            assert needle not in text, f"vlabench/data/{module}.py uses {needle}"


def test_orphans_of_fileio_temp_names_are_removed_and_live_ones_kept(tmp_path: Path, synth) -> None:
    from vlabench.data import load_manifest
    from vlabench.fileio import atomic_path

    root = synth.write_dataset(tmp_path / "d", synth.make_episodes(2), per_shard=2)
    orphans = [root / ".shard_00007.h5.999999.tmp", root / "pending" / ".w00003_000000.h5.999999.tmp",
               root / ".cache" / "shard_00000.h5-abc" / ".image.npy.999999.tmp.npy"]
    for p in orphans:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"left by a killed writer")
    with atomic_path(root / "shard_00009.h5") as live:  # a live writer's temp file (flocked)
        live.write_bytes(b"being written")
        assert load_manifest(root)["n_episodes"] == 2
        assert live.exists() and not any(p.exists() for p in orphans)
    assert (root / "shard_00009.h5").exists()
