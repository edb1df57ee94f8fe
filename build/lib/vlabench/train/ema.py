"""Exponential moving average of model weights (Diffusion-Policy style warmup of the decay).

Only trainable parameters are averaged; floating-point buffers (e.g. BatchNorm running stats) are
copied as they are, because averaging running statistics of an averaged network is meaningless
(the Diffusion Policy EMA does the same). Frozen parameters never change, so they are not stored at
all: the shadow holds trainable parameters + buffers, and ``ema.safetensors`` is overlaid on
``model.safetensors`` when a checkpoint is loaded with EMA weights.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


def ema_decay_at(step: int, max_decay: float, power: float) -> float:
    """Decay used for the update after ``step`` optimizer steps (0-based).

    ``power > 0``: ``min(max_decay, 1 - (1 + step) ** -power)``, so early updates follow the weights
    closely (decay 0 at step 0) and the average only lengthens as training settles. ``power == 0``:
    constant ``max_decay``.
    """
    if power <= 0:
        return max_decay
    return max(0.0, min(max_decay, 1.0 - (1.0 + step) ** -power))


class EMA:
    """Shadow copy of a model's trainable parameters (averaged) and buffers (copied)."""

    def __init__(self, model: nn.Module, decay: float, power: float = 0.75) -> None:
        self.decay = float(decay)
        self.power = float(power)
        self.num_updates = 0
        self._param_names = [n for n, p in model.named_parameters() if p.requires_grad]
        self._buffer_names = [n for n, b in model.named_buffers() if self._persistent(model, n)]
        state = model.state_dict()
        self.shadow: dict[str, torch.Tensor] = {
            n: state[n].detach().clone() for n in self._param_names + self._buffer_names if n in state
        }

    @staticmethod
    def _persistent(model: nn.Module, name: str) -> bool:
        mod_name, _, buf = name.rpartition(".")
        mod = model.get_submodule(mod_name) if mod_name else model
        return buf not in mod._non_persistent_buffers_set

    @torch.no_grad()
    def update(self, model: nn.Module) -> float:
        """Fold the current weights into the average; returns the decay used."""
        d = ema_decay_at(self.num_updates, self.decay, self.power)
        params = dict(model.named_parameters())
        buffers = dict(model.named_buffers())
        for n in self._param_names:
            s, p = self.shadow[n], params[n].detach()
            if s.is_floating_point():
                s.lerp_(p.to(s.dtype), 1.0 - d)  # s = d * s + (1 - d) * p
            else:
                s.copy_(p)
        for n in self._buffer_names:
            if n in self.shadow:
                self.shadow[n].copy_(buffers[n])
        self.num_updates += 1
        return d

    def state_dict(self) -> dict:
        """Plain, weights_only-loadable metadata (the tensors go to ema.safetensors)."""
        return {"decay": self.decay, "power": self.power, "num_updates": self.num_updates}

    def load_state_dict(self, meta: dict, shadow: dict[str, torch.Tensor]) -> None:
        """Restore from ``state_dict()`` metadata and the tensors read from ema.safetensors."""
        missing = sorted(set(self.shadow) - set(shadow))
        unexpected = sorted(set(shadow) - set(self.shadow))
        if missing or unexpected:
            raise ValueError(f"EMA state does not match the model: missing {missing[:20]}, unexpected {unexpected[:20]}")
        for n, t in shadow.items():
            self.shadow[n].copy_(t)
        self.num_updates = int(meta.get("num_updates", 0))

    def to(self, device: torch.device | str) -> "EMA":
        self.shadow = {n: t.to(device) for n, t in self.shadow.items()}
        return self

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily load the averaged weights into ``model`` (e.g. for a validation pass)."""
        state = model.state_dict()
        backup = {n: state[n].detach().clone() for n in self.shadow}
        try:
            model.load_state_dict(self.shadow, strict=False)
            yield model
        finally:
            model.load_state_dict(backup, strict=False)
