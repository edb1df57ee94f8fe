"""TokenLearner v1.1 (Ryoo et al. 2021), as used by RT-1 to squeeze a feature map into a few tokens.

Each of the S output tokens is a spatial softmax-weighted average of the input feature vectors; the
weights come from a small MLP on the LayerNorm-ed features (google-research/robotics_transformer,
``tokenizers/token_learner.py``). The weighted sum is over the raw (un-normalised) features.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class TokenLearner(nn.Module):
    """``(B, C, h, w)`` feature map -> ``(B, S, C)`` tokens.

    Args:
        dim: channels C.
        num_tokens: S, the number of output tokens.
        hidden: MLP width (64 in RT-1).
        dropout: dropout inside the MLP.
    """

    def __init__(self, dim: int, num_tokens: int = 8, hidden: int = 64, dropout: float = 0.0) -> None:
        super().__init__()
        if num_tokens < 1:
            raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
        self.num_tokens = num_tokens
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, num_tokens)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x ``(B, C, h, w)`` -> tokens ``(B, S, C)``."""
        if x.ndim != 4:
            raise ValueError(f"TokenLearner expects (B, C, h, w), got {tuple(x.shape)}")
        feats = x.flatten(2).transpose(1, 2)  # (B, hw, C)
        logits = self.mlp(self.norm(feats))  # (B, hw, S)
        attn = logits.transpose(1, 2).softmax(dim=-1)  # (B, S, hw): softmax over space
        return attn @ feats  # (B, S, C)
