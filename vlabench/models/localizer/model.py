"""``localizer``: perception, then the privileged-state controller. The CPU-cheap two-stage vision reference.

Behaviour cloning from pixels has to learn where the target is from the one or two frames per demo in
which the hand moves sideways (the demos align over the target in their first steps), and no end-to-end
family has learned that on this CPU (results/lite_v2). This family splits the problem the way the data
allows:

1. **A localizer CNN** estimates, from the front frame and the instruction, what the state-MLP ceiling
   reads: the target's position and orientation, the goal's position, whether the task has a goal, and
   the task family. It is supervised on *every* demo frame by the demo's privileged state (a training
   label only: at test time the policy sees the front camera, the proprioceptive state and the
   instruction). Where the target and the goal are comes from one heatmap each over a ``grid`` x ``grid``
   map of the front frame, trained with a cross-entropy on the cell the object projects to (dense
   supervision, the way keypoint detectors learn) and read out as its soft-argmax, which a small MLP maps
   to table coordinates (the front camera is fixed). Heights and the target's orientation are regressed
   from the map's features pooled under each heatmap. Task family and "has a goal" come from the
   sentence embedding alone.
2. **The controller** is a trained ``state-mlp`` checkpoint (``controller``), frozen and stored inside this
   checkpoint. The policy builds the privileged vector from the proprioceptive state and the estimate and
   runs the controller on it as the ceiling runs on the true state.

The CNN is small and trained from scratch on raw frames at lite resolution (CoordConv input, two stride-2
convs to a 32 x 32 map of a 128 px frame, then two 3x3 convs; GroupNorm, then FiLM on the sentence
embedding after every conv but the first), so it needs no feature cache.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vlabench.contracts import STATE_DIM, compose_privileged, privileged_slice
from vlabench.models.blocks.film_efficientnet import FiLM
from vlabench.models.blocks.spatial_softmax import SpatialSoftmax
from vlabench.models.blocks.text_encoder import get_sentence_encoder
from vlabench.models.configs import PresetConfig
from vlabench.models.state_mlp.model import StateMLP, StateMLPConfig

PRESETS: dict[str, dict[str, Any]] = {
    "base": dict(channels=32),
    "tiny": dict(channels=8),
}
TEXT_DEVICE = "cpu"  # one cached sentence-encoder forward per distinct instruction
TABLE_CENTER = (0.55, 0.0, 0.0)
"""Origin of the localizer's position outputs (metres): about the middle of the objects' spawn area."""
POSITION_UNIT = 0.1
"""The position outputs are in units of 10 cm from TABLE_CENTER."""
FIELDS = ("target_pos", "target_quat", "goal_pos", "has_goal")
"""The privileged fields the localizer estimates (the robot's come from proprioception, the rest derive)."""


@dataclass
class LocalizerConfig(PresetConfig):
    """Hyperparameters of the two-stage policy. Fields left unset (None) take the value of ``preset``: "base"
    (the lite recipe) or "tiny" (tests)."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = PRESETS
    controller: str | None = None
    """A trained ``state-mlp`` checkpoint or run directory: the frozen controller (copied into this model)."""
    controller_config: dict | None = None
    """The controller's model config, filled in from ``controller`` when the model is first built, so that a
    saved checkpoint rebuilds without the controller's directory."""
    channels: int | None = None
    """Width of the CNN (a multiple of 8; preset: base 32)."""
    heatmap_weight: float = 1.0
    """Weight of the heatmap cross-entropy next to the position L1 (in cm)."""
    text_encoder: str | None = None
    """Sentence encoder: None = packaged all-MiniLM-L6-v2, a local model path, or "hash" (tests only)."""

    def validate(self, r: "LocalizerConfig") -> None:
        if r.channels < 8 or r.channels % 8:
            raise ValueError(f"channels must be a positive multiple of 8, got {r.channels}")
        if r.heatmap_weight < 0:
            raise ValueError(f"heatmap_weight must be >= 0, got {r.heatmap_weight}")

    def for_loading(self) -> "LocalizerConfig":
        # the checkpoint holds the controller's weights: rebuild it from its recorded config
        return dataclasses.replace(self, controller=None) if self.controller_config is not None else self


def load_controller(cfg: LocalizerConfig, stats: Mapping) -> tuple[StateMLP, dict]:
    """The frozen state-MLP controller and its config dict: read from ``cfg.controller`` when set, else an
    untrained skeleton of ``cfg.controller_config`` (whose weights the checkpoint then loads)."""
    if cfg.controller is None and cfg.controller_config is None:
        raise ValueError("the localizer needs a trained state-mlp controller: set model.controller (--model.controller)"
                         " to its checkpoint or run directory (vlabench train --recipe policies/state_mlp.toml)")
    if cfg.controller is not None:
        from vlabench.models.checkpoint import load_model  # the checkpoint loader imports the registry

        controller, _ = load_model(cfg.controller, "cpu", use_ema=True, expect="state-mlp")
        config = dataclasses.asdict(controller.cfg)
    else:
        config = dict(cfg.controller_config)
        controller = StateMLP(StateMLPConfig(**config), stats)
    for p in controller.parameters():
        p.requires_grad_(False)
    return controller.eval(), config


def cell_index(front_pixels: torch.Tensor, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, 2, 2)`` normalized front-image (u, v) of the target and the goal -> the flat index of the cell of a
    ``side`` x ``side`` heatmap each falls in (clamped to the map), as two ``(B,)`` tensors."""
    cell = (front_pixels * side).floor().long().clamp(0, side - 1)
    flat = cell[..., 1] * side + cell[..., 0]
    return flat[:, 0], flat[:, 1]


class LocalizerNet(nn.Module):
    """Front frame ``(B, 3, H, W)`` uint8 + sentence embedding ``(B, D)`` -> heatmap logits ``(B, 2, g, g)``
    (target, goal) and the features ``(B, C, g, g)`` they were computed from."""

    def __init__(self, channels: int, cond_dim: int) -> None:
        super().__init__()
        c = channels
        self.convs = nn.ModuleList([nn.Conv2d(5, c // 2, 5, 2, 2), nn.Conv2d(c // 2, c, 3, 2, 1),
                                    nn.Conv2d(c, c, 3, 1, 1), nn.Conv2d(c, c, 3, 1, 1)])
        self.norms = nn.ModuleList([nn.GroupNorm(4 if k < 8 else 8, k) for k in (c // 2, c, c, c)])
        self.films = nn.ModuleList([FiLM(cond_dim, k) for k in (c, c, c)])
        self.heat = nn.Conv2d(c, 2, 1)

    def forward(self, frames: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = frames.float() / 255.0
        b, _, h, w = x.shape
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h, device=x.device), torch.linspace(-1, 1, w, device=x.device),
                                indexing="ij")
        x = torch.cat([x, xs.expand(b, 1, h, w), ys.expand(b, 1, h, w)], dim=1)
        x = F.relu(self.norms[0](self.convs[0](x)))
        for conv, norm, film in zip(self.convs[1:], self.norms[1:], self.films):
            x = F.relu(film(norm(conv(x)), cond))
        return self.heat(x), x


class LocalizerModel(nn.Module):
    """See the module docstring. ``estimate(frames, instructions, state) -> privileged (B, P)``."""

    def __init__(self, cfg: LocalizerConfig, stats: Mapping) -> None:
        super().__init__()
        cfg = cfg.resolved()
        self.controller, controller_config = load_controller(cfg, stats)
        self.cfg = dataclasses.replace(cfg, controller_config=controller_config)
        self.state_dim = self.controller.state_dim
        self.n_tasks = self.state_dim - privileged_slice("goal_minus_target").stop
        if self.n_tasks < 1:
            raise ValueError(f"the controller reads {self.state_dim} privileged values, too few for a task one-hot")
        text_dim = get_sentence_encoder(cfg.text_encoder, TEXT_DEVICE).dim
        c = cfg.channels
        self.net = LocalizerNet(c, text_dim)
        self.softargmax = SpatialSoftmax(learn_temperature=False)
        self.xy = nn.Sequential(nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 4))  # (u, v) x 2 -> (x, y) x 2
        self.target_head = nn.Linear(c + 2, 1 + 4)  # height, quaternion
        self.goal_head = nn.Linear(c + 2, 1)  # height
        self.text_head = nn.Linear(text_dim, self.n_tasks + 1)  # task family, has a goal
        self.register_buffer("origin", torch.tensor(TABLE_CENTER))

    @property
    def device(self) -> torch.device:
        return self.origin.device

    def text_embedding(self, instructions: list[str]) -> torch.Tensor:
        return get_sentence_encoder(self.cfg.text_encoder, TEXT_DEVICE).embed(list(instructions)).to(self.device)

    def data_spec(self) -> dict:
        """DemoDataset kwargs: the current front frame; the privileged state and where its target and goal
        appear in the front frame as the labels."""
        return {"n_obs": 1, "horizon": 1, "image_keys": ("image",), "privileged": True, "front_pixels": True}

    def forward(self, frames: torch.Tensor, instructions: list[str]) -> dict[str, torch.Tensor]:
        """Front frames ``(B, 3, H, W)`` uint8, B instructions -> raw outputs: ``heat`` (B, 2, g*g) logits,
        ``target_pos``/``goal_pos`` (B, 3) metres, ``target_quat`` (B, 4) unit, ``task`` (B, n_tasks) and
        ``has_goal`` (B,) logits."""
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"frames must be (B, 3, H, W), got {tuple(frames.shape)}")
        if len(instructions) != frames.shape[0]:
            raise ValueError(f"got {len(instructions)} instructions for {frames.shape[0]} frames")
        cond = self.text_embedding(instructions)
        heat, feats = self.net(frames.to(self.device), cond)
        attn = heat.flatten(2).softmax(-1)  # (B, 2, g*g)
        uv = self.softargmax(heat)  # (B, 2, 2)
        pooled = attn @ feats.flatten(2).transpose(1, 2)  # (B, 2, C): features under each heatmap
        xy = self.xy(uv.flatten(1)).view(-1, 2, 2)
        t = self.target_head(torch.cat([pooled[:, 0], uv[:, 0]], 1))
        g = self.goal_head(torch.cat([pooled[:, 1], uv[:, 1]], 1))
        unit, origin = POSITION_UNIT, self.origin
        text = self.text_head(cond)
        return {"heat": heat.flatten(2),
                "target_pos": torch.cat([xy[:, 0], t[:, :1]], 1) * unit + origin,
                "goal_pos": torch.cat([xy[:, 1], g], 1) * unit + origin,
                "target_quat": F.normalize(t[:, 1:], dim=1), "task": text[:, :-1], "has_goal": text[:, -1]}

    @torch.inference_mode()
    def estimate(self, frames: torch.Tensor, instructions: list[str], state: torch.Tensor) -> np.ndarray:
        """The privileged vector ``(B, P)`` the controller reads, with every scene field estimated: the robot's
        from ``state`` ``(B, 8)``, target and goal from the localizer, the task family one-hot; the offsets are
        derived as the env derives them (``vlabench.contracts.compose_privileged``)."""
        robot = np.asarray(state, np.float32)
        if robot.shape[1:] != (STATE_DIM,):
            raise ValueError(f"state must be (B, {STATE_DIM}), got {tuple(robot.shape)}")
        out = {k: v.float().cpu().numpy() for k, v in self(frames, instructions).items()}
        task = np.eye(self.n_tasks, dtype=np.float32)[out["task"].argmax(1)]
        return compose_privileged(robot, out["target_pos"], out["target_quat"], out["goal_pos"],
                                  (out["has_goal"] > 0).astype(np.float32)[:, None], task)

    def compute_loss(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Position L1 (cm) + ``heatmap_weight`` x heatmap cross-entropy + quaternion MSE + task and has-goal
        cross-entropies, against the current frame's privileged state; goal terms only where the task has a goal.
        batch: image (B, 1, 3, H, W) uint8, instruction, privileged (B, 1, P), front_pixels (B, 1, 2, 2)."""
        frames = batch["image"][:, -1]
        priv = batch["privileged"][:, -1].to(self.device).float()
        out = self(frames, list(batch["instruction"]))
        has_goal = priv[:, privileged_slice("has_goal")][:, 0]
        target, goal = priv[:, privileged_slice("target_pos")], priv[:, privileged_slice("goal_pos")]
        side = int(round(out["heat"].shape[-1] ** 0.5))
        cells = cell_index(batch["front_pixels"][:, -1].to(self.device), side)
        ce_t = F.cross_entropy(out["heat"][:, 0], cells[0])
        ce_g = (F.cross_entropy(out["heat"][:, 1], cells[1], reduction="none") * has_goal).sum() / has_goal.sum().clamp(min=1)
        err_t = (out["target_pos"] - target).abs().mean(1) * 100
        err_g = ((out["goal_pos"] - goal).abs().mean(1) * 100 * has_goal).sum() / has_goal.sum().clamp(min=1)
        quat = priv[:, privileged_slice("target_quat")]
        quat_mse = ((out["target_quat"] - quat) ** 2).sum(1).mean()
        task_ce = F.cross_entropy(out["task"], priv[:, -self.n_tasks:].argmax(1))
        goal_bce = F.binary_cross_entropy_with_logits(out["has_goal"], has_goal)
        loss = err_t.mean() + err_g + self.cfg.heatmap_weight * (ce_t + ce_g) + 10 * quat_mse + task_ce + goal_bce
        parts = {"target_cm": err_t.mean(), "goal_cm": err_g, "heat_ce": ce_t + ce_g, "quat_mse": quat_mse,
                 "task_ce": task_ce}
        return loss, {k: float(v.detach()) for k, v in parts.items()}
