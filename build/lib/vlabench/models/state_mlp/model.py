"""``state-mlp``: an MLP on the privileged low-dim state, the benchmark's control ceiling.

It sees what a vision policy would see if perception were solved (``obs["privileged"]``, layout in
``vlabench.env.PRIVILEGED_FIELDS``: end-effector pose and gripper, the target's pose, the goal's
position, the task family), so the gap between its row and a vision policy's row is what perception
costs. Like the scripted expert it reads state the camera does not give; unlike the expert it learns
from the same demos as every other family, with the same training loop.

Input: the last ``n_obs_steps`` privileged states, min-max normalized to [-1, 1] with the dataset's
``stats["privileged"]`` (recorded in every demo collected since the stream exists). Output: a chunk of
``horizon`` actions, min-max normalized per dimension, trained with an L1 loss (ACT's choice for
chunked regression; the actions' gripper dimension is bimodal and L1 fits its median, not a blurred mean).

Why chunks: the experts hold still for a fixed number of steps after closing or opening the gripper,
so at those points the next action is not a function of the current state; a chunk carries the plan
across the pause (measured in the issue behind this family: place 24-68% single-step vs 86-96% with
chunks of 4 and temporal ensembling). The policy ensembles overlapping chunks (ACT's temporal
ensembling) or executes ``n_action_steps`` of each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from vlabench.contracts import ACTION_DIM
from vlabench.models.blocks.normalize import minmax_limits
from vlabench.models.configs import PresetConfig

PRESETS: dict[str, dict[str, Any]] = {
    "base": dict(hidden=(256, 256)),
    "tiny": dict(hidden=(16,)),
}


@dataclass
class StateMLPConfig(PresetConfig):
    """Hyperparameters of the privileged-state MLP. Fields left unset (None) take the value of
    ``preset``: "base" (the control-ceiling recipe) or "tiny" (tests)."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = PRESETS
    TUPLE_FIELDS: ClassVar[tuple[str, ...]] = ("hidden",)
    n_obs_steps: int = 1
    """Privileged states fed per prediction (t-n_obs_steps+1 .. t)."""
    horizon: int = 4
    """Actions predicted per step (a chunk a_t .. a_{t+horizon-1}); 1 = single-step prediction."""
    hidden: tuple[int, ...] | None = None
    """Hidden layer widths (preset: base 256, 256)."""
    dropout: float = 0.0
    """Dropout after every hidden layer."""

    def validate(self, r: "StateMLPConfig") -> None:
        if r.n_obs_steps < 1 or r.horizon < 1:
            raise ValueError(f"n_obs_steps and horizon must be >= 1, got {r.n_obs_steps} and {r.horizon}")
        if not r.hidden or any(int(h) < 1 for h in r.hidden):
            raise ValueError(f"hidden must be a non-empty list of positive widths, got {r.hidden!r}")
        if not 0.0 <= r.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {r.dropout}")


class StateMLP(nn.Module):
    """Privileged state history -> action chunk; see the module docstring."""

    def __init__(self, cfg: StateMLPConfig, stats: Mapping) -> None:
        super().__init__()
        self.cfg = cfg = cfg.resolved()
        for key in ("action", "privileged"):
            center, half = minmax_limits(stats, key)
            self.register_buffer(f"{key}_center", center)
            self.register_buffer(f"{key}_half_range", half)
        self.state_dim = int(self.privileged_center.shape[0])
        if self.action_center.shape != (ACTION_DIM,):
            raise ValueError(f"stats['action'] must have {ACTION_DIM} entries, got {tuple(self.action_center.shape)}")
        layers: list[nn.Module] = []
        width = cfg.n_obs_steps * self.state_dim
        for h in cfg.hidden:
            layers += [nn.Linear(width, int(h)), nn.ReLU()] + ([nn.Dropout(cfg.dropout)] if cfg.dropout else [])
            width = int(h)
        layers.append(nn.Linear(width, cfg.horizon * ACTION_DIM))
        self.net = nn.Sequential(*layers)

    def data_spec(self) -> dict:
        """DemoDataset kwargs: privileged states only, no image stream is read."""
        return {"n_obs": self.cfg.n_obs_steps, "horizon": self.cfg.horizon, "image_keys": (), "privileged": True}

    def forward(self, privileged: torch.Tensor) -> torch.Tensor:
        """``(B, n_obs_steps, P)`` privileged states -> normalized action chunk ``(B, horizon, 7)``."""
        b = privileged.shape[0]
        if privileged.shape[1:] != (self.cfg.n_obs_steps, self.state_dim):
            raise ValueError(f"privileged must be (B, {self.cfg.n_obs_steps}, {self.state_dim}), "
                             f"got {tuple(privileged.shape)}")
        x = (privileged.float().to(self.action_center.device) - self.privileged_center) / self.privileged_half_range
        return self.net(x.flatten(1)).view(b, self.cfg.horizon, ACTION_DIM)

    def predict_action_chunk(self, privileged: torch.Tensor) -> torch.Tensor:
        """Env actions ``(B, horizon, 7)`` in [-1, 1]."""
        return (self(privileged) * self.action_half_range + self.action_center).clamp(-1.0, 1.0)

    def compute_loss(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """L1 between the predicted and the demo's normalized chunk, padded steps left out."""
        target = ((batch["action"].float() - self.action_center) / self.action_half_range).clamp(-1.0, 1.0)
        err = F.l1_loss(self(batch["privileged"]), target, reduction="none").mean(-1)  # (B, horizon)
        keep = (~batch["action_is_pad"]).float()
        loss = (err * keep).sum() / keep.sum().clamp(min=1.0)
        return loss, {"l1": float(loss.detach())}
