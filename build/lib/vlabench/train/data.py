"""Data plumbing of the training loop: the demo dataset and its statistics, episode split,
reproducible epoch order, per-sample seeds.

Reproducibility across ``--resume`` (and across worker counts) rests on two rules:

* the order of epoch ``e`` is a permutation seeded by ``(seed, e)``; rank ``r`` of ``W`` takes every
  W-th entry, so batch ``b`` of epoch ``e`` is a pure function of (seed, e, b, r, W). Global step
  ``s`` consumes batch ``s % batches_per_epoch`` of epoch ``s // batches_per_epoch``; resuming at step
  ``s`` therefore just starts the sampler at that batch, loading nothing twice.
* every sample is fetched with the torch/numpy/python RNGs seeded from (seed, epoch, position), so
  random augmentation inside the dataset does not depend on which worker fetched it or when.
"""

from __future__ import annotations

import random
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, get_worker_info

#: attributes/methods looked up (in order) on the dataset for the episode of every sample
EPISODE_ATTRS = ("episode_index", "episode_ids", "sample_episodes", "episode_of_sample")


def episode_ids(ds: Any) -> np.ndarray:
    """Episode id of every sample, shape ``(len(ds),)``.

    Taken from ``ds.episode_lengths()`` (DemoDataset: sample order = episode order, frame order), else
    from one of EPISODE_ATTRS (an array/list, or a no-argument method returning one), else from
    ``ds.index``, an ``(N, >=2)`` array of (episode, t) rows.
    """
    n = len(ds)
    lengths = getattr(ds, "episode_lengths", None)  # DemoDataset: samples are episodes' frames, in order
    if callable(lengths):
        lengths = np.asarray(lengths(), dtype=np.int64)
        if lengths.sum() == n:
            return np.repeat(np.arange(len(lengths)), lengths)
    for name in EPISODE_ATTRS:
        val = getattr(ds, name, None)
        if val is None:
            continue
        if callable(val):
            val = val()
        arr = np.asarray(val)
        if arr.shape == (n,):
            return arr
    index = getattr(ds, "index", None)
    if index is not None:
        arr = np.asarray(index)
        if arr.ndim == 2 and arr.shape[0] == n and arr.shape[1] >= 2:
            return arr[:, 0]
    raise TypeError(
        f"{type(ds).__name__} does not say which episode each sample comes from; the training loop needs "
        f"episode_lengths() or one of the attributes {', '.join(EPISODE_ATTRS)} (length {n}) or an (N, 2) `index` of (episode, t) "
        f"to split train/val by episode"
    )


def split_by_episode(episodes: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, list]:
    """Hold out ``round(val_fraction * n_episodes)`` whole episodes (at least 1, never all).

    Returns ``(train_sample_indices, val_sample_indices, val_episode_ids)``.
    """
    uniq = np.unique(episodes)
    n_val = 0
    if val_fraction > 0:
        if len(uniq) < 2:
            warnings.warn(f"only {len(uniq)} episode(s) in the dataset: no validation split", stacklevel=2)
        else:
            n_val = min(len(uniq) - 1, max(1, round(val_fraction * len(uniq))))
    perm = np.random.default_rng([seed, 7919]).permutation(len(uniq))
    val_eps = np.sort(uniq[perm[:n_val]])
    is_val = np.isin(episodes, val_eps)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val), val_eps.tolist()


_M1, _M2, _GOLD = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)


def _splitmix(x: np.ndarray) -> np.ndarray:
    x = x + _GOLD
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def sample_seeds(seed: int, stream: int, epoch: int, positions: np.ndarray) -> list[int]:
    """63-bit seeds, one per position, from (seed, stream, epoch, position) via chained splitmix64."""
    with np.errstate(over="ignore"):
        h = _splitmix(np.array([seed % 2**64], dtype=np.uint64))
        h = _splitmix(h ^ np.uint64(stream))
        h = _splitmix(h ^ np.uint64(epoch % 2**64))
        out = _splitmix(h ^ np.asarray(positions, dtype=np.uint64)) >> np.uint64(1)
    return [int(v) for v in out]


def seed_all(s: int, cpu_only: bool = False) -> None:
    # torch.manual_seed also queues seeding of every accelerator backend, which costs milliseconds
    # per call; per-sample seeding only needs the CPU generator.
    if cpu_only:
        torch.default_generator.manual_seed(s)
    else:
        torch.manual_seed(s)
    np.random.seed(s % (2**32))
    random.seed(s)


class SeededDataset(Dataset):
    """Wraps a dataset; items are requested as ``(index, seed)`` and fetched with all RNGs seeded."""

    def __init__(self, inner: Dataset) -> None:
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        idx, s = key
        if get_worker_info() is not None:
            seed_all(s, cpu_only=True)
            return self.inner[idx]
        # In the training process: leave its RNG streams (model noise, dropout) untouched.
        states = (torch.get_rng_state(), np.random.get_state(), random.getstate())
        try:
            seed_all(s, cpu_only=True)
            return self.inner[idx]
        finally:
            torch.set_rng_state(states[0])
            np.random.set_state(states[1])
            random.setstate(states[2])


class EpochBatchSampler(Sampler):
    """Infinite-training batch sampler: one epoch per ``iter()``, this rank's shard, from a start batch.

    Yields lists of ``(index, seed)`` for SeededDataset. Every rank gets ``batches_per_epoch`` batches of
    exactly ``batch_size`` (the epoch's tail that does not fill a batch on every rank is dropped, unless
    that would leave no batch at all).
    """

    def __init__(self, indices: Sequence[int], batch_size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.indices = np.asarray(indices, dtype=np.int64)
        if len(self.indices) == 0:
            raise ValueError("no training samples: the train split is empty")
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world
        per_rank = len(self.indices) // world
        if per_rank == 0:
            raise ValueError(f"{len(self.indices)} training samples cannot be sharded over {world} processes")
        self.batches_per_epoch = max(1, per_rank // batch_size)
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start = epoch, start_batch

    def epoch_batches(self, epoch: int, start: int = 0) -> Iterator[list[tuple[int, int]]]:
        """Batches ``start..`` of ``epoch`` for this rank (a pure function of its arguments)."""
        perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.indices))
        per_rank = len(self.indices) // self.world
        # rank r takes positions r, r+W, ... of the permutation; the position also keys the sample seed
        pos = np.arange(self.rank, len(perm), self.world)[:per_rank]
        for b in range(start, self.batches_per_epoch):
            p = pos[b * self.batch_size:(b + 1) * self.batch_size]
            seeds = sample_seeds(self.seed, 0, epoch, p)
            yield [(int(i), s) for i, s in zip(self.indices[perm[p]], seeds)]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return self.epoch_batches(self.epoch, self.start)

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start


class FixedBatchSampler(Sampler):
    """Validation batches: a fixed seeded subset of ``indices``, sharded over ranks, fixed per-sample seeds."""

    def __init__(self, indices: Sequence[int], batch_size: int, seed: int, max_batches: int = 0,
                 rank: int = 0, world: int = 1) -> None:
        idx = np.asarray(indices, dtype=np.int64)
        idx = idx[np.random.default_rng([seed, 104729]).permutation(len(idx))]
        if max_batches > 0:
            idx = idx[: max_batches * batch_size * world]
        pos = np.arange(rank, len(idx), world)
        seeds = sample_seeds(seed, 1, 0, pos)
        mine = [(int(idx[p]), s) for p, s in zip(pos, seeds)]
        self.batches = [mine[s:s + batch_size] for s in range(0, len(mine), batch_size)]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor in a (nested) collated batch to ``device``; strings and others stay."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def make_dataset(data_dir: Path, data_spec: dict, skip_bad: bool = False, cache: bool = False) -> Dataset:
    """The demo dataset for a model; ``data_spec`` is ``model.data_spec()`` (n_obs, horizon, goal_offset)."""
    from vlabench.data.dataset import DemoDataset

    return DemoDataset(data_dir, skip_bad=skip_bad, cache=cache, **data_spec)


def read_dataset_meta(data_dir: Path, skip_bad: bool = False) -> tuple[dict, str | None]:
    """(stats, manifest hash) of a demo directory, before the dataset is built (the model needs stats
    to say which samples it wants). Verifies every shard against the checksum recorded when it was
    written (a corrupt one is named; with ``skip_bad`` it is left out), and goes through
    vlabench.data so stale stats.json get recomputed."""
    from vlabench.data.manifest import load_manifest
    from vlabench.data.stats import ensure_stats

    manifest = load_manifest(data_dir, skip_bad=skip_bad, verify=True)
    return ensure_stats(data_dir, manifest, skip_bad=skip_bad), manifest.get("hash")
