"""The per-frame feature cache of a frozen encoder (DemoDataset(features=...), vlabench.data.features)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vlabench.data import DemoDataset


class MeanEncoder:
    """A toy frozen encoder: per-channel means of 4 horizontal bands, times ``scale``; counts its frames."""

    stream = "image"

    def __init__(self, scale: float = 1.0) -> None:
        self.scale, self.frames = scale, 0

    def fingerprint(self) -> str:
        return f"{self.scale:.3f}".encode().hex().ljust(16, "0")

    def describe(self) -> dict:
        return {"toy": "band means", "scale": self.scale}

    def encode(self, frames: np.ndarray) -> np.ndarray:
        self.frames += len(frames)
        bands = np.array_split(frames.astype(np.float32), 4, axis=1)
        return (np.stack([b.mean(axis=(1, 2)) for b in bands], axis=2) * self.scale / 255).astype(np.float16)


def _feature_files(root: Path) -> list[Path]:
    return sorted((root / ".cache").rglob("image.features-*.npy"))


def test_features_match_the_encoder_on_each_window(dataset_dir: Path) -> None:
    enc = MeanEncoder()
    ds = DemoDataset(dataset_dir, n_obs=3, horizon=2, image_keys=(), features={"image": enc})
    plain = DemoDataset(dataset_dir, n_obs=3, horizon=2, image_keys=("image",))
    assert enc.frames == len(plain)  # every frame encoded once
    for i in range(0, len(ds), 7):
        sample, ref = ds[i], plain[i]
        assert "image" not in sample and sample["image_features"].shape == (3, 3, 4)
        frames = ref["image"].permute(0, 2, 3, 1).numpy()
        np.testing.assert_array_equal(sample["image_features"].numpy(), MeanEncoder().encode(frames))
        np.testing.assert_array_equal(sample["action"].numpy(), ref["action"].numpy())
    sidecar = json.loads(_feature_files(dataset_dir)[0].with_suffix(".json").read_text())
    assert sidecar["encoder"] == {"toy": "band means", "scale": 1.0} and sidecar["shape"] == [3, 4]


def test_cache_is_reused_rebuilt_for_other_weights_and_repaired(dataset_dir: Path) -> None:
    DemoDataset(dataset_dir, image_keys=(), features={"image": MeanEncoder()})
    files = _feature_files(dataset_dir)
    again = MeanEncoder()
    DemoDataset(dataset_dir, image_keys=(), features={"image": again})
    assert again.frames == 0  # verified and reused
    other = MeanEncoder(scale=2.0)
    ds = DemoDataset(dataset_dir, image_keys=(), features={"image": other})
    assert other.frames > 0 and len(_feature_files(dataset_dir)) == 2 * len(files)  # a new key, never the old file
    ref = DemoDataset(dataset_dir, image_keys=("image",))[3]["image"].permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(ds[3]["image_features"].numpy(), MeanEncoder(scale=2.0).encode(ref))
    damaged = files[0]
    arr = np.load(damaged)
    arr[0] += 1
    np.save(damaged, arr)  # contents no longer match the recorded sha256
    repair = MeanEncoder()
    fixed = DemoDataset(dataset_dir, image_keys=(), features={"image": repair})
    assert 0 < repair.frames < len(fixed)  # only the damaged shard was encoded again
    first = DemoDataset(dataset_dir, image_keys=("image",))[0]["image"].permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(fixed[0]["image_features"].numpy(), MeanEncoder().encode(first))


def test_interrupted_build_leaves_no_partial_file(dataset_dir: Path) -> None:
    class Dies(MeanEncoder):
        def encode(self, frames):
            if self.frames > 100:  # of 172 frames in 4 shards: at least one shard is done
                raise KeyboardInterrupt
            return super().encode(frames)

    with pytest.raises(KeyboardInterrupt):
        DemoDataset(dataset_dir, image_keys=(), features={"image": Dies()})
    done = _feature_files(dataset_dir)
    assert done
    assert not list((dataset_dir / ".cache").rglob("*.tmp*"))
    assert all(p.with_suffix(".json").is_file() for p in done)
    rest = MeanEncoder()
    DemoDataset(dataset_dir, image_keys=(), features={"image": rest})
    assert 0 < rest.frames < len(DemoDataset(dataset_dir))  # carried on with the shards not yet done


def test_unknown_feature_stream_is_refused(dataset_dir: Path) -> None:
    enc = MeanEncoder()
    with pytest.raises(ValueError, match="unknown image_keys"):
        DemoDataset(dataset_dir, image_keys=(), features={"depth": enc})
