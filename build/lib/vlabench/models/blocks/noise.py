"""Gaussian noise from one generator for a whole batch, or from one generator per row.

Per-row generators make a row's noise independent of which other rows share its batch: the policies
keep one generator per env slot (seeded by the episode) and sample many slots in one call.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Generators = torch.Generator | Sequence[torch.Generator] | None
"""None (torch's global RNG), one generator for the batch, or one per row of dimension 0."""


def randn(shape: Sequence[int], generator: Generators, device: torch.device | str,
          dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal noise of ``shape`` (B, ...) on ``device``, drawn on each generator's own device."""
    shape = tuple(shape)
    if isinstance(generator, Sequence):
        if len(generator) != shape[0]:
            raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]}")
        rows = [torch.randn(shape[1:], generator=g, device=g.device, dtype=dtype).to(device) for g in generator]
        return torch.stack(rows) if rows else torch.empty(shape, device=device, dtype=dtype)
    noise_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=noise_device, dtype=dtype).to(device)
