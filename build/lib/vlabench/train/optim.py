"""The optimizer every model trains with: AdamW (weight decay on matrices only), linear warmup, cosine decay."""

from __future__ import annotations

import math

import torch
from torch import nn

from vlabench.train.config import TrainConfig


def lr_lambda(warmup: int, total: int):
    """Multiplier of the peak lr after ``s`` scheduler steps: linear warmup, then cosine to 0 at ``total``."""
    def f(s: int) -> float:
        if s < warmup:
            return (s + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (s - warmup) / max(1, total - warmup))))
    return f


def build_optimizer(model: nn.Module, cfg: TrainConfig, fused: bool) -> tuple[list, torch.optim.Optimizer, object]:
    """(trainable params, AdamW, LambdaLR scheduler); biases and norm gains (ndim < 2) get no weight decay."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    if not decay and not no_decay:
        raise ValueError(f"model {type(model).__name__} has no trainable parameters")
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=cfg.betas, fused=fused)
    return decay + no_decay, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg.warmup_steps, cfg.steps))
