"""Spatial softmax: each channel of a feature map -> the expected image coordinate of its activation.

Levine, Finn et al. 2016 ("End-to-End Training of Deep Visuomotor Policies") turn conv maps into feature
points this way; Diffusion Policy and robomimic keep it as the pooling of their image encoders. A point is a
softmax over the map's cells (with a learned temperature) times each cell's (x, y), so it says *where*
something is, to a fraction of a cell, which global pooling throws away.
"""

from __future__ import annotations

import torch
from torch import nn


class SpatialSoftmax(nn.Module):
    """``(N, K, h, w)`` maps -> ``(N, K, 2)`` expected (x, y) in [-1, 1] (cell centres; x along w).

    ``learn_temperature``: a learned softmax temperature (starting at 1); False keeps it at 1, with no
    parameter (the Diffusion Policy encoder's keypoints, whose 1x1 conv can scale the logits itself)."""

    def __init__(self, learn_temperature: bool = True) -> None:
        super().__init__()
        self.log_temperature = nn.Parameter(torch.zeros(())) if learn_temperature else None

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        if maps.ndim != 4:
            raise ValueError(f"maps must be (N, K, h, w), got {tuple(maps.shape)}")
        n, k, h, w = maps.shape
        logits = maps.flatten(2) if self.log_temperature is None else maps.flatten(2) / self.log_temperature.exp()
        attn = logits.softmax(-1).view(n, k, h, w)
        xs = torch.linspace(-1.0, 1.0, w, device=maps.device, dtype=attn.dtype) if w > 1 else attn.new_zeros(1)
        ys = torch.linspace(-1.0, 1.0, h, device=maps.device, dtype=attn.dtype) if h > 1 else attn.new_zeros(1)
        return torch.stack([(attn.sum(2) * xs).sum(-1), (attn.sum(3) * ys).sum(-1)], dim=-1)
