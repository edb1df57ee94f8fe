"""1-D temporal U-Net denoiser of the Diffusion Policy (Chi et al. 2023, "CNN-based" variant).

The network convolves over the *time* axis of an action sequence ``(B, T, A)`` (actions are the
channels). Every residual block is conditioned by FiLM: the concatenation of the diffusion-step
embedding and the global observation conditioning predicts a per-channel scale and bias.

Layout for ``down_dims = [d0, d1, d2]``::

    down:  [Res(A->d0), Res(d0->d0), Down] [Res(d0->d1), Res(d1->d1), Down] [Res(d1->d2), Res(d2->d2)]
    mid:   Res(d2->d2), Res(d2->d2)
    up:    [Up, cat skip1, Res(d2+d1->d1), Res(d1->d1)] [Up, cat skip0, Res(d1+d0->d0), Res(d0->d0)]
    final: Conv(d0->d0, k), Conv1x1(d0->A)

Only the first ``len(down_dims) - 1`` levels down-sample, so the horizon must be divisible by
``2 ** (len(down_dims) - 1)`` (see :func:`check_horizon`).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn


def downsample_factor(down_dims: Sequence[int]) -> int:
    """How much the U-Net shrinks the time axis at its bottleneck."""
    return 2 ** (len(down_dims) - 1)


def check_horizon(horizon: int, down_dims: Sequence[int]) -> None:
    """Raise ValueError unless ``horizon`` survives the U-Net's down- and up-sampling exactly."""
    factor = downsample_factor(down_dims)
    if horizon < 1 or horizon % factor:
        raise ValueError(
            f"horizon={horizon} must be a positive multiple of {factor} = 2**(len(down_dims)-1) "
            f"for down_dims={list(down_dims)}; e.g. use horizon={max(factor, factor * round(horizon / factor))} "
            f"or fewer down_dims"
        )


class SinusoidalPosEmb(nn.Module):
    """Diffusion step ``(B,)`` -> sinusoidal embedding ``(B, dim)`` (Transformer positional encoding)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"step embedding dim must be an even number >= 2, got {dim}")
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        scale = -math.log(10000.0) / max(half - 1, 1)
        freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * scale)
        args = t.float()[:, None] * freqs[None, :]
        return torch.cat([args.sin(), args.cos()], dim=-1)


class Conv1dBlock(nn.Sequential):
    """Conv1d -> GroupNorm -> Mish over ``(B, C, T)``; padding keeps T."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, n_groups: int) -> None:
        super().__init__(
            nn.Conv1d(in_ch, out_ch, kernel_size, padding=kernel_size // 2),
            nn.GroupNorm(n_groups, out_ch),
            nn.Mish(),
        )


class ConditionalResidualBlock1D(nn.Module):
    """Two conv blocks with FiLM (scale and bias from ``cond``) between them, plus a residual path."""

    def __init__(self, in_ch: int, out_ch: int, cond_dim: int, kernel_size: int, n_groups: int) -> None:
        super().__init__()
        self.block1 = Conv1dBlock(in_ch, out_ch, kernel_size, n_groups)
        self.block2 = Conv1dBlock(out_ch, out_ch, kernel_size, n_groups)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * out_ch))
        self.residual = nn.Conv1d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        self.out_ch = out_ch

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x ``(B, in_ch, T)``, cond ``(B, cond_dim)`` -> ``(B, out_ch, T)``."""
        h = self.block1(x)
        scale, bias = self.film(cond).unsqueeze(-1).chunk(2, dim=1)
        h = self.block2(scale * h + bias)
        return h + self.residual(x)


class ConditionalUnet1D(nn.Module):
    """Noise predictor: noisy actions ``(B, T, A)``, step ``(B,)``, global cond ``(B, G)`` -> ``(B, T, A)``."""

    def __init__(
        self,
        input_dim: int,
        global_cond_dim: int,
        down_dims: Sequence[int] = (256, 512, 1024),
        step_embed_dim: int = 128,
        kernel_size: int = 5,
        n_groups: int = 8,
    ) -> None:
        super().__init__()
        down_dims = [int(d) for d in down_dims]
        if not down_dims:
            raise ValueError("down_dims must name at least one level, e.g. [256, 512, 1024]")
        bad = [d for d in down_dims if d < n_groups or d % n_groups]
        if bad:
            raise ValueError(f"every down_dims entry must be a multiple of n_groups={n_groups}; bad: {bad}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd so padding keeps the length, got {kernel_size}")
        self.down_dims = down_dims
        self.step_encoder = nn.Sequential(
            SinusoidalPosEmb(step_embed_dim),
            nn.Linear(step_embed_dim, 4 * step_embed_dim),
            nn.Mish(),
            nn.Linear(4 * step_embed_dim, step_embed_dim),
        )
        cond_dim = step_embed_dim + global_cond_dim

        def res(i: int, o: int) -> ConditionalResidualBlock1D:
            return ConditionalResidualBlock1D(i, o, cond_dim, kernel_size, n_groups)

        dims = [input_dim, *down_dims]
        n_levels = len(down_dims)
        self.down = nn.ModuleList()
        for level, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            last = level == n_levels - 1
            sample = nn.Identity() if last else nn.Conv1d(d_out, d_out, 3, stride=2, padding=1)
            self.down.append(nn.ModuleList([res(d_in, d_out), res(d_out, d_out), sample]))
        self.mid = nn.ModuleList([res(down_dims[-1], down_dims[-1]), res(down_dims[-1], down_dims[-1])])
        self.up = nn.ModuleList()
        # Walk back up through the levels that down-sampled: up-sample, then concatenate the skip
        # saved at that same resolution. This is a standard U-Net in which every skip is used, the
        # full-resolution one included. The reference instead concatenates the bottleneck output with
        # itself and never uses the full-resolution skip; we did not copy that quirk.
        for d_skip, d_deep in reversed(list(zip(down_dims[:-1], down_dims[1:]))):
            sample = nn.ConvTranspose1d(d_deep, d_deep, 4, stride=2, padding=1)
            self.up.append(nn.ModuleList([sample, res(d_deep + d_skip, d_skip), res(d_skip, d_skip)]))
        self.final = nn.Sequential(
            Conv1dBlock(down_dims[0], down_dims[0], kernel_size, n_groups),
            nn.Conv1d(down_dims[0], input_dim, 1),
        )

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | int, global_cond: torch.Tensor) -> torch.Tensor:
        """sample ``(B, T, A)``, timestep int or ``(B,)``/``()`` tensor, global_cond ``(B, G)`` -> ``(B, T, A)``."""
        if sample.ndim != 3:
            raise ValueError(f"expected sample of shape (B, T, A), got {tuple(sample.shape)}")
        b, horizon, _ = sample.shape
        check_horizon(horizon, self.down_dims)
        t = torch.as_tensor(timestep, device=sample.device)
        t = t.reshape(-1).expand(b) if t.numel() == 1 else t.reshape(b)
        cond = torch.cat([self.step_encoder(t), global_cond], dim=-1)

        x = sample.transpose(1, 2)  # convolve over time: (B, A, T)
        skips = []
        for res1, res2, down in self.down:
            x = res2(res1(x, cond), cond)
            skips.append(x)
            x = down(x)
        for block in self.mid:
            x = block(x, cond)
        skips.pop()  # the bottleneck output is already x
        for up, res1, res2 in self.up:
            x = torch.cat([up(x), skips.pop()], dim=1)
            x = res2(res1(x, cond), cond)
        return self.final(x).transpose(1, 2)
