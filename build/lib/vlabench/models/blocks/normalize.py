"""Min-max normalization limits from a dataset's stats.json, shared by the families that regress or embed
low-dim vectors (actions, proprioceptive state, the privileged state)."""

from __future__ import annotations

from typing import Mapping

import torch


def minmax_limits(stats: Mapping, key: str, dim: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Center and half-range ``(D,)`` of ``stats[key]``'s min/max, so ``(x - center) / half`` lies in [-1, 1];
    a constant dimension gets half-range 1. ``dim`` checks the length. ValueError names what is missing."""
    if key not in stats or "min" not in stats[key] or "max" not in stats[key]:
        raise ValueError(f"stats must hold {key!r} with 'min' and 'max' (stats.json of demos that record "
                         f"obs/{key}); the dataset's stats hold {sorted(stats)}")
    lo = torch.as_tensor(stats[key]["min"], dtype=torch.float32)
    hi = torch.as_tensor(stats[key]["max"], dtype=torch.float32)
    if dim is not None and (lo.shape != (dim,) or hi.shape != (dim,)):
        raise ValueError(f"stats[{key!r}] min/max must have {dim} entries, got {tuple(lo.shape)}, {tuple(hi.shape)}")
    half = (hi - lo) / 2
    return (hi + lo) / 2, torch.where(half < 1e-6, torch.ones_like(half), half)
