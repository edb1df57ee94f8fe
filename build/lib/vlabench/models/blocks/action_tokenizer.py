"""256-bin action tokenizer shared by RT-1 and RT-2.

Dimensions 0..5 (end-effector deltas) are normalized with the dataset's q01/q99 bounds to [-1, 1]
(clipped), the gripper (dim 6) is already in [-1, 1] and is left alone, as in OpenVLA's BOUNDS_Q99
scheme. Each dimension is then split into ``n_bins`` equal bins over [-1, 1].

Encoding rounds to the nearest bin *center* and decoding returns that center, so every token decodes
to a distinct value and the worst-case error inside [-1, 1] is half a bin width. This avoids two known
pitfalls: floor-binning (RT-1's TF tokenizer) biases every action by -0.5 bin, and OpenVLA's
``digitize`` + ``clip(idx-1, 0, 254)`` maps two tokens to the same value.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

ACTION_DIM = 7
NORMALIZED_DIMS = 6  # the gripper (last dim) is not normalized


class ActionTokenizer:
    """Maps env actions ``(..., 7)`` to integer tokens ``(..., 7)`` in ``[0, n_bins)`` and back."""

    def __init__(self, stats: Mapping, n_bins: int = 256) -> None:
        if n_bins < 2:
            raise ValueError(f"n_bins must be >= 2, got {n_bins}")
        action = stats["action"] if "action" in stats else stats
        lo = np.asarray(action["q01"], dtype=np.float64)
        hi = np.asarray(action["q99"], dtype=np.float64)
        if lo.shape != (ACTION_DIM,) or hi.shape != (ACTION_DIM,):
            raise ValueError(f"action stats q01/q99 must have {ACTION_DIM} entries, got {lo.shape} and {hi.shape}")
        self.n_bins = n_bins
        self.low = lo
        # A constant dimension (q99 == q01) would divide by zero; give it a unit range instead.
        self.high = np.where(hi - lo < 1e-6, lo + 1.0, hi)
        self.bin_width = 2.0 / n_bins
        self.centers = -1.0 + self.bin_width * (np.arange(n_bins) + 0.5)

    # -- normalization ------------------------------------------------------------------------
    def normalize(self, actions: np.ndarray) -> np.ndarray:
        """Env actions ``(..., 7)`` -> clipped normalized actions in [-1, 1]."""
        a = np.asarray(actions, dtype=np.float64).copy()
        d = NORMALIZED_DIMS
        a[..., :d] = 2.0 * (a[..., :d] - self.low[:d]) / (self.high[:d] - self.low[:d]) - 1.0
        return np.clip(a, -1.0, 1.0)

    def unnormalize(self, normalized: np.ndarray) -> np.ndarray:
        """Normalized actions ``(..., 7)`` -> env actions."""
        a = np.asarray(normalized, dtype=np.float64).copy()
        d = NORMALIZED_DIMS
        a[..., :d] = 0.5 * (a[..., :d] + 1.0) * (self.high[:d] - self.low[:d]) + self.low[:d]
        return a

    # -- tokens -------------------------------------------------------------------------------
    def encode(self, actions: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Env actions ``(..., 7)`` -> int64 tokens ``(..., 7)``; returns the input's array type."""
        is_tensor = isinstance(actions, torch.Tensor)
        x = actions.detach().cpu().numpy() if is_tensor else actions
        norm = self.normalize(x)
        tokens = np.floor((norm + 1.0) / self.bin_width).astype(np.int64)
        tokens = np.clip(tokens, 0, self.n_bins - 1)  # +1.0 exactly lands in the last bin
        return torch.from_numpy(tokens).to(actions.device) if is_tensor else tokens

    def decode_expected(self, probs: torch.Tensor) -> np.ndarray:
        """Bin probabilities ``(..., 7, n_bins)`` -> float32 env actions ``(..., 7)``: the expectation over
        bin centres in normalized space. Unlike argmax it can land between bins, so a policy that is
        unsure between "move" and "stay" moves part of the way instead of snapping to the mode."""
        if probs.shape[-1] != self.n_bins:
            raise ValueError(f"probs must end in n_bins={self.n_bins}, got {tuple(probs.shape)}")
        centers = torch.as_tensor(self.centers, dtype=torch.float32, device=probs.device)
        return self.unnormalize((probs.float() * centers).sum(-1).cpu().numpy()).astype(np.float32)

    def decode(self, tokens: np.ndarray | torch.Tensor | Sequence[int]) -> np.ndarray:
        """Tokens ``(..., 7)`` -> float32 env actions ``(..., 7)`` at the bin centers."""
        t = tokens.detach().cpu().numpy() if isinstance(tokens, torch.Tensor) else np.asarray(tokens)
        if t.size and (t.min() < 0 or t.max() >= self.n_bins):
            raise ValueError(f"action tokens must lie in [0, {self.n_bins}), got range [{t.min()}, {t.max()}]")
        return self.unnormalize(self.centers[t]).astype(np.float32)
