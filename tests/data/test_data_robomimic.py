"""robomimic 0.3 opens a shard: SequenceDataset (load_next_obs=False) and FileUtils' metadata readers.

robomimic is not a project dependency; the test runs where it imports (``pip install --no-deps
robomimic==0.3.0 termcolor six`` is enough for these modules) and is skipped elsewhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

robomimic_dataset = pytest.importorskip("robomimic.utils.dataset", reason="robomimic is not installed")
ObsUtils = pytest.importorskip("robomimic.utils.obs_utils")
FileUtils = pytest.importorskip("robomimic.utils.file_utils")

OBS_KEYS = ["image", "wrist_image", "state"]


@pytest.fixture(scope="module", autouse=True)
def _obs_specs():
    ObsUtils.initialize_obs_utils_with_obs_specs({"obs": {"low_dim": ["state"], "rgb": ["image", "wrist_image"]}})


@pytest.mark.parametrize("cache_mode", [None, "low_dim", "all"])
def test_sequence_dataset_reads_a_shard(tmp_path: Path, synth, cache_mode) -> None:
    eps = synth.make_episodes(3)
    root = synth.write_dataset(tmp_path / "d", eps, per_shard=4)
    shard = root / "shard_00000.h5"
    ds = robomimic_dataset.SequenceDataset(
        str(shard), obs_keys=OBS_KEYS, dataset_keys=["actions", "rewards", "dones"], seq_length=4, frame_stack=2,
        load_next_obs=False, filter_by_attribute="train", hdf5_cache_mode=cache_mode)
    assert ds.n_demos == 3 and len(ds) == sum(len(e["actions"]) for e in eps)
    # demo_i is the i-th episode written; robomimic's first sample of demo_1 is its frame 0
    first = ds[len(eps[0]["actions"])]
    want = eps[1]
    assert first["obs"]["image"].shape == (5, synth.H, synth.W, 3)  # frame_stack - 1 + seq_length
    np.testing.assert_array_equal(first["obs"]["image"][1], want["obs"]["image"][0])
    np.testing.assert_array_equal(first["obs"]["state"][1:], want["obs"]["state"][:4])
    np.testing.assert_allclose(first["actions"][1:], want["actions"][:4])
    last = ds[len(eps[0]["actions"]) + len(want["actions"]) - 1]  # last frame of demo_1: reward and done
    assert float(np.ravel(last["dones"])[1]) == 1.0
    assert float(np.ravel(last["rewards"])[1]) == float(want["attrs"]["success"])


def test_metadata_readers(tmp_path: Path, synth) -> None:
    root = synth.write_dataset(tmp_path / "d", synth.make_episodes(2), per_shard=2)
    shard = str(root / "shard_00000.h5")
    env_meta = FileUtils.get_env_metadata_from_dataset(shard)
    assert env_meta["type"] == 2 and env_meta["env_kwargs"]["image_size"] == 128
    shape = FileUtils.get_shape_metadata_from_dataset(shard, all_obs_keys=OBS_KEYS)
    assert shape["ac_dim"] == 7 and shape["all_shapes"]["image"] == [3, synth.H, synth.W]
    with h5py.File(shard) as f:
        assert [n.decode() for n in f["mask/train"][()]] == ["demo_0", "demo_1"]
        assert json.loads(f["data"].attrs["env_args"])["cells"] == [["pick", "seen"], ["place", "seen"]]
        assert all(f["data"][d].attrs["num_samples"] == len(f["data"][d]["actions"]) for d in ("demo_0", "demo_1"))


def test_load_next_obs_is_not_supported(tmp_path: Path, synth) -> None:
    """What does not hold: there is no next_obs group, so robomimic's default load_next_obs=True fails."""
    root = synth.write_dataset(tmp_path / "d", synth.make_episodes(1), per_shard=1)
    with pytest.raises(KeyError):
        ds = robomimic_dataset.SequenceDataset(str(root / "shard_00000.h5"), obs_keys=OBS_KEYS,
                                               dataset_keys=["actions"], hdf5_cache_mode="all")
        ds[0]
