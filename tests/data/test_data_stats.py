"""stats.json: values against numpy, freshness tied to the manifest hash."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vlabench.data import DemoDataset, ShardWriter, load_manifest
from vlabench.data.stats import STAT_KEYS, StatsAccumulator, array_stats, ensure_stats, load_stats


def _numpy_stats(x: np.ndarray) -> dict[str, np.ndarray]:
    x = x.astype(np.float64)
    return {"min": x.min(0), "max": x.max(0), "q01": np.percentile(x, 1, axis=0),
            "q99": np.percentile(x, 99, axis=0), "mean": x.mean(0), "std": x.std(0)}


def test_stats_match_numpy(dataset_dir: Path, episodes: list[dict]) -> None:
    stats = load_stats(dataset_dir)
    assert set(stats) == {"action", "state"}
    for group, key, dim in (("action", "actions", 7), ("state", "state", 8)):
        frames = np.concatenate([e[key] if key == "actions" else e["obs"][key] for e in episodes])
        want = _numpy_stats(frames)
        assert set(stats[group]) == set(STAT_KEYS)
        for k in STAT_KEYS:
            assert len(stats[group][k]) == dim
            np.testing.assert_allclose(stats[group][k], want[k], rtol=1e-6, atol=1e-7, err_msg=f"{group}.{k}")
    assert DemoDataset(dataset_dir).stats == stats


def test_accumulator_and_errors() -> None:
    rng = np.random.default_rng(1)
    acc = StatsAccumulator()
    chunks = [(rng.standard_normal((n, 7)), rng.standard_normal((n, 8))) for n in (5, 17, 9)]
    for a, s in chunks:
        acc.update(a, s)
    got = acc.result()
    assert got["action"] == array_stats(np.concatenate([a for a, _ in chunks]))
    assert acc.n_frames == 31
    with pytest.raises(ValueError, match="expected actions"):
        acc.update(np.zeros((3, 6)), np.zeros((3, 8)))
    with pytest.raises(ValueError, match="no frames"):
        StatsAccumulator().result()


def test_stats_refresh_when_dataset_grows(tmp_path: Path, synth) -> None:
    eps = synth.make_episodes(6)
    root = synth.write_dataset(tmp_path / "d", eps[:3])
    before = load_stats(root)
    with ShardWriter(root, shard_index=10) as w:
        for ep in eps[3:]:
            w.write(ep)
    m = load_manifest(root)
    after = ensure_stats(root, m)
    assert after != before and json.loads((root / "stats.json").read_text()) == after
    frames = np.concatenate([e["actions"] for e in eps])
    np.testing.assert_allclose(after["action"]["max"], frames.max(0), rtol=1e-6)
    assert load_manifest(root)["stats_hash"] == m["hash"]
