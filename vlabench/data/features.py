"""Cached per-frame features of a frozen image encoder: computed once per dataset, then served instead of frames.

A model whose image encoder starts with a frozen trunk (RT-1 with ``frozen_blocks``) spends most of a
training step re-computing the same trunk output for the same frame. ``DemoDataset(features={...})``
computes it once per frame, stores it beside the decoded-image cache and serves it as
``sample["<stream>_features"]`` (``(n_obs, ...)`` float16) in place of the frames.

Files: ``<root>/.cache/<shard>-<shard sha>/<stream>.features-<fingerprint>.npy`` (every frame of the
shard, in the cache's frame order) and a ``.json`` sidecar with the array's sha256, shape and the encoder's
description. The cache is keyed by the shard's content (its sha, so the dataset's manifest) and by the
encoder's fingerprint (a hash of its frozen weights and preprocessing): a change to either gives a
different file name, so nothing stale is ever read. Each file is checked against its sidecar's sha256
when a dataset opens it; one that fails is rebuilt. Files are written through ``atomic_path``: an
interrupted build leaves no partial file, and a rerun carries on with the shards not yet done.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol, Sequence

import h5py
import numpy as np
from tqdm.auto import tqdm

from vlabench.data.layout import CorruptShardError, file_sha256
from vlabench.fileio import atomic_path, write_json_atomic


class FrameEncoder(Protocol):
    """What ``DemoDataset(features=...)`` needs of an encoder (duck-typed; ``vlabench.models.blocks.trunk_features.TrunkEncoder`` is one)."""

    stream: str
    """The image stream it encodes ("image" or "wrist_image")."""

    def fingerprint(self) -> str:
        """Hex digest that changes whenever the output for a given frame would."""

    def describe(self) -> dict:
        """JSON-able description recorded in the sidecar (backbone, blocks, input size, ...)."""

    def encode(self, frames: np.ndarray) -> np.ndarray:
        """uint8 frames ``(N, H, W, 3)`` -> float16 features ``(N, ...)``."""


ENCODE_BATCH = 64


def feature_file(shard_cache_dir: Path, encoder: FrameEncoder) -> Path:
    return shard_cache_dir / f"{encoder.stream}.features-{encoder.fingerprint()[:16]}.npy"


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def is_valid(path: Path) -> bool:
    """Whether ``path`` exists and matches the sha256 its sidecar recorded."""
    side = _sidecar(path)
    if not (path.is_file() and side.is_file()):
        return False
    try:
        recorded = json.loads(side.read_text())["sha256"]
    except (ValueError, KeyError):
        return False
    return recorded == file_sha256(path)


def encode_shard(shard: Path, demos: Sequence[str], encoder: FrameEncoder, out: Path, progress: tqdm | None) -> None:
    """Encode every frame of ``demos`` (in this order) of one shard into ``out`` (+ its sidecar)."""
    try:
        with h5py.File(shard, "r") as f:
            streams = [f["data"][d]["obs"][encoder.stream] for d in demos]
            n = sum(s.shape[0] for s in streams)
            with atomic_path(out, suffix=".npy") as tmp:
                arr, off = None, 0
                for s in streams:
                    frames = s[()]
                    for lo in range(0, len(frames), ENCODE_BATCH):
                        feats = encoder.encode(frames[lo:lo + ENCODE_BATCH])
                        if arr is None:  # the first batch gives the feature shape
                            arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(n, *feats.shape[1:]))
                        arr[off:off + len(feats)] = feats
                        off += len(feats)
                        if progress is not None:
                            progress.update(len(feats))
                shape = list(arr.shape[1:])
                arr.flush()
                del arr
    except (OSError, KeyError, ValueError) as e:
        raise CorruptShardError(shard, f"encoding obs/{encoder.stream} features: {type(e).__name__}: {e}") from e
    write_json_atomic(_sidecar(out), {"sha256": file_sha256(out), "frames": n, "shape": shape,
                                      "fingerprint": encoder.fingerprint(), "encoder": encoder.describe()})


def build_features(jobs: list[tuple[Path, list[str], int, Path]], encoder: FrameEncoder) -> None:
    """Build every missing or invalid feature file. ``jobs``: (shard, demos in cache order, frames, out file)."""
    todo = [job for job in jobs if not is_valid(job[3])]
    if not todo:
        return
    with tqdm(total=sum(j[2] for j in todo), unit="frame", desc=f"caching {encoder.stream} features") as bar:
        for shard, demos, _, out in todo:
            out.parent.mkdir(parents=True, exist_ok=True)
            encode_shard(shard, demos, encoder, out, bar)
