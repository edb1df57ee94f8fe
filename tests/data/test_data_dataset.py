"""DemoDataset: sample contract, edge padding, goal frames, workers, cache, corrupt shards."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from vlabench.data import CorruptShardError, DemoDataset
from vlabench.data.info import DataInfoConfig
from vlabench.data.info import run as info_run


def _locate(ds: DemoDataset, ep: int, t: int) -> int:
    return sum(ds.episode_lengths()[:ep]) + t


def test_sample_contract(dataset_dir: Path, episodes: list[dict], synth) -> None:
    ds = DemoDataset(dataset_dir, n_obs=2, horizon=4, goal_offset=3)
    assert len(ds) == sum(len(e["actions"]) for e in episodes) and ds.num_episodes == len(episodes)
    s = ds[0]
    assert s["image"].shape == (2, 3, synth.H, synth.W) and s["image"].dtype == torch.uint8
    assert s["wrist_image"].shape == (2, 3, synth.WH, synth.WW) and s["wrist_image"].dtype == torch.uint8
    assert s["state"].shape == (2, 8) and s["state"].dtype == torch.float32
    assert s["action"].shape == (4, 7) and s["action"].dtype == torch.float32
    assert s["action_is_pad"].shape == (4,) and s["action_is_pad"].dtype == torch.bool
    assert s["goal_image"].shape == (3, synth.H, synth.W) and s["goal_image"].dtype == torch.uint8
    assert isinstance(s["instruction"], str) and isinstance(s["task"], str)
    assert "goal_image" not in DemoDataset(dataset_dir)[0]
    assert set(DemoDataset(dataset_dir, image_keys=("image",))[0]) >= {"image"}
    assert "wrist_image" not in DemoDataset(dataset_dir, image_keys=("image",))[0]
    assert ds.manifest_hash and set(ds.stats) == {"action", "state"}
    assert ds.episode_keys() == sorted(ds.episode_keys())
    info = ds.episode_info()
    assert [(e["task"], e["split"], e["index"], e["seed"]) for e in info] == ds.episode_keys()
    assert [e["start"] for e in info] == [_locate(ds, i, 0) for i in range(len(info))]
    last = info[-1]
    assert ds[last["start"] + last["length"] - 1]["instruction"] == last["instruction"] and last["start"] + last["length"] == len(ds)


def test_windows_pad_at_both_edges(dataset_dir: Path, episodes: list[dict], synth) -> None:
    n_obs, horizon = 3, 5
    ds = DemoDataset(dataset_dir, n_obs=n_obs, horizon=horizon)
    for e, want in enumerate(synth.sorted_by_key(episodes)):
        T = len(want["actions"])
        for t in (0, 1, T // 2, T - 2, T - 1):
            s = ds[_locate(ds, e, t)]
            obs_idx = np.clip(np.arange(t - n_obs + 1, t + 1), 0, T - 1)
            act_idx = np.arange(t, t + horizon)
            # the frame id written into pixel [0, 0, red] tells which frames were picked
            assert s["image"][:, 0, 0, 0].tolist() == obs_idx.tolist()
            np.testing.assert_array_equal(s["image"].numpy(), want["obs"]["image"][obs_idx].transpose(0, 3, 1, 2))
            np.testing.assert_array_equal(s["wrist_image"].numpy(),
                                          want["obs"]["wrist_image"][obs_idx].transpose(0, 3, 1, 2))
            np.testing.assert_array_equal(s["state"].numpy(), want["obs"]["state"][obs_idx])
            np.testing.assert_array_equal(s["action"].numpy(), want["actions"][np.minimum(act_idx, T - 1)])
            assert s["action_is_pad"].tolist() == (act_idx > T - 1).tolist()
            assert s["instruction"] == want["attrs"]["instruction"] and s["task"] == want["attrs"]["task"]
    first = ds[_locate(ds, 0, 0)]  # left edge: frame 0 repeated, no action padding
    assert first["image"][:, 0, 0, 0].tolist() == [0, 0, 0] and not first["action_is_pad"].any()
    T0 = ds.episode_lengths()[0]
    last = ds[_locate(ds, 0, T0 - 1)]  # right edge: the last action repeats, marked as padding
    assert last["action_is_pad"].tolist() == [False, True, True, True, True]
    assert torch.equal(last["action"][1], last["action"][0])


def test_goal_frame_clamped(dataset_dir: Path, episodes: list[dict], synth) -> None:
    k = 6
    ds = DemoDataset(dataset_dir, goal_offset=k)
    for e, want in enumerate(synth.sorted_by_key(episodes)):
        T = len(want["actions"])
        for t in (0, T - k - 1, T - k, T - 1):
            if t < 0:
                continue
            g = ds[_locate(ds, e, t)]["goal_image"]
            np.testing.assert_array_equal(g.numpy(), want["obs"]["image"][min(t + k, T - 1)].transpose(2, 0, 1))


def test_episode_subset(dataset_dir: Path, episodes: list[dict]) -> None:
    full = DemoDataset(dataset_dir)
    sub = DemoDataset(dataset_dir, episodes=[4, 1])
    assert sub.episode_keys() == [full.episode_keys()[4], full.episode_keys()[1]]
    assert len(sub) == full.episode_lengths()[4] + full.episode_lengths()[1]
    np.testing.assert_array_equal(sub[0]["image"], full[_locate(full, 4, 0)]["image"])
    with pytest.raises(IndexError, match="out of range"):
        DemoDataset(dataset_dir, episodes=[99])


def _all_batches(ds: DemoDataset, workers: int) -> list[dict]:
    return list(DataLoader(ds, batch_size=5, shuffle=False, num_workers=workers))


def _assert_batches_equal(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            if isinstance(x[k], torch.Tensor):
                assert torch.equal(x[k], y[k]), k
            else:
                assert x[k] == y[k], k


def test_workers_match_single_process(dataset_dir: Path) -> None:
    ds = DemoDataset(dataset_dir, n_obs=2, horizon=3, goal_offset=2)
    ds[0]  # open a handle in the parent before forking: workers must not reuse it
    ref = _all_batches(ds, 0)
    _assert_batches_equal(_all_batches(ds, 2), ref)
    assert isinstance(ref[0]["instruction"], list)
    clone = pickle.loads(pickle.dumps(ds))  # spawn-style transfer drops handles
    assert clone._files == {}
    _assert_batches_equal(_all_batches(clone, 0), ref)


def test_mmap_cache_identical(dataset_dir: Path) -> None:
    plain = DemoDataset(dataset_dir, n_obs=2, horizon=3, goal_offset=4)
    cached = DemoDataset(dataset_dir, n_obs=2, horizon=3, goal_offset=4, cache=True)
    npys = sorted((dataset_dir / ".cache").rglob("*.npy"))
    assert npys and not list((dataset_dir / ".cache").rglob("*.tmp"))
    _assert_batches_equal(_all_batches(cached, 0), _all_batches(plain, 0))
    _assert_batches_equal(_all_batches(cached, 2), _all_batches(plain, 0))
    mtimes = [p.stat().st_mtime_ns for p in npys]
    DemoDataset(dataset_dir, n_obs=2, cache=True)  # reuses the cache
    assert [p.stat().st_mtime_ns for p in npys] == mtimes


def test_truncated_shard_error_and_skip(tmp_path: Path, synth) -> None:
    eps = synth.make_episodes(6)
    root = synth.write_dataset(tmp_path / "d", eps, per_shard=2)
    full = DemoDataset(root)
    bad = root / "shard_00001.h5"
    synth.truncate_half(bad)
    with pytest.raises(CorruptShardError, match=str(bad)):
        DemoDataset(root)
    with pytest.warns(UserWarning, match="shard_00001.h5"):
        ds = DemoDataset(root, skip_bad=True)
    assert ds.num_episodes == full.num_episodes - 2
    assert len(ds) == len(full) - sum(len(e["actions"]) for e in eps[2:4])
    ds[len(ds) - 1]
    with pytest.raises(CorruptShardError, match=str(bad)):
        info_run(DataInfoConfig(data=root))
    with pytest.warns(UserWarning, match="shard_00001.h5"):
        text = info_run(DataInfoConfig(data=root, skip_bad=True))
    assert "1 unreadable" in text


def test_corrupt_image_chunk_named_at_read(tmp_path: Path, synth) -> None:
    """Damage that leaves the file structure readable surfaces when the frames are read."""
    import h5py

    root = synth.write_dataset(tmp_path / "d", synth.make_episodes(2), per_shard=2)
    path = root / "shard_00000.h5"
    with h5py.File(path, "r") as f:
        offset = f["data/demo_0/obs/image"].id.get_chunk_info(0).byte_offset
    ds = DemoDataset(root)
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\x00" * 64)  # break the gzip stream of frame 0
    with pytest.raises(CorruptShardError, match="shard_00000.h5"):
        for i in range(len(ds)):
            ds[i]
