"""Low-level half of ``goal-diffusion``: the goal-conditioned Diffusion Policy and the deployment loop.

``GoalConditionedDiffusion`` is :class:`vlabench.models.diffusion_policy.DiffusionModel` with one
more input, the goal frame, encoded by the front camera's ResNet (shared weights: same camera, as
SuSIE's policy shares one encoder for observation and goal) and appended to the FiLM conditioning
vector. It is trained with hindsight goals: the dataset's ``goal_image`` at ``goal_offset`` steps ahead.
By default it does not see the instruction (SuSIE's low-level policy is goal-only), so the goal image
is the only task information it gets; ``policy_language=True`` adds the sentence embedding back.

``GoalDiffusionPolicy`` is the Policy protocol over a whole :class:`~vlabench.models.goal_image.GoalImageModel`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from vlabench.models.diffusion_policy import ACTION_DIM, DiffusionConfig, DiffusionModel, DiffusionPolicy
from vlabench.models.unet1d import ConditionalUnet1D

if TYPE_CHECKING:
    from vlabench.models.goal_image import GoalImageModel


class GoalConditionedDiffusion(DiffusionModel):
    """Diffusion Policy whose conditioning also holds the goal image's features.

    The goal frame goes through the *front* camera's encoder (same camera, shared weights, as SuSIE's
    policy shares one encoder for observation and goal) and gets the same random crop as the
    observation frames of its sample, so goal-vs-current keypoint offsets are not perturbed by
    augmentation. batch["goal_image"]: uint8 (B, 3, H, W).
    """

    def __init__(self, cfg: DiffusionConfig, stats: Mapping, use_language: bool = False) -> None:
        super().__init__(cfg, stats)
        self.use_language = use_language
        if not use_language:
            self.cond_dim -= cfg.lang_dim
            self.lang_proj = None
        self.cond_dim += cfg.image_feature_dim
        # Rebuilt because the goal features widen the conditioning vector.
        self.unet = ConditionalUnet1D(ACTION_DIM, self.cond_dim, cfg.down_dims, cfg.step_embed_dim,
                                      cfg.kernel_size, cfg.n_groups)

    def encode_obs(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """As DiffusionModel.encode_obs plus the goal: -> (B, cond_dim)."""
        goal = torch.as_tensor(batch["goal_image"])
        image = torch.as_tensor(batch["image"])
        b, t = image.shape[:2]
        if t != self.cfg.n_obs_steps:
            raise ValueError(f"image must be (B, n_obs_steps={self.cfg.n_obs_steps}, 3, H, W), "
                             f"got {tuple(image.shape)}")
        if goal.shape != (b, *image.shape[2:]):
            raise ValueError(f"goal_image must be (B, 3, H, W) like one image frame {tuple(image.shape[2:])}, "
                             f"got {tuple(goal.shape)}")
        frames = self._prepare_joint(torch.cat([image, goal.to(image.device)[:, None]], dim=1))
        feats = self.front_encoder(frames).view(b, t + 1, -1)
        out = [feats[:, :t].flatten(1)]
        if self.wrist_encoder is not None:
            out.append(self.wrist_encoder(self._prepare_images(batch["wrist_image"], "wrist_image")).view(b, -1))
        state = torch.as_tensor(batch["state"], device=self.action_center.device).float()
        out.append(((state - self.state_center) / self.state_half_range).view(b, -1))
        if self.use_language:
            instr = batch["instruction"]
            instr = [instr] * b if isinstance(instr, str) else list(instr)
            out.append(self.lang_proj(self.embed_instructions(instr)))
        out.append(feats[:, t])
        return torch.cat(out, dim=-1)

    def _prepare_joint(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) uint8 -> (B*T, 3, crop, crop) in [-1, 1]; one crop per sample, shared by its T frames.

        The parent's ``_prepare_images`` does the same but insists on T = n_obs_steps.
        """
        b, t = frames.shape[:2]
        x = frames.flatten(0, 1).to(self.action_center.device).float() / 255.0
        s, c = self.cfg.image_size, self.cfg.crop_size
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", antialias=True, align_corners=False)
        x = x.view(b, t, 3, s, s)
        if c < s and self.training:
            offs = torch.randint(0, s - c + 1, (b, 2)).tolist()
            x = torch.stack([x[i, ..., oy:oy + c, ox:ox + c] for i, (oy, ox) in enumerate(offs)])
        elif c < s:
            o = (s - c) // 2
            x = x[..., o:o + c, o:o + c]
        return x.flatten(0, 1) * 2.0 - 1.0


class _LowLevel(DiffusionPolicy):
    """DiffusionPolicy whose model batches carry each slot's current goal image."""

    goals: dict[int, np.ndarray]  # slot -> uint8 (3, H, W) goal frame, set by GoalDiffusionPolicy

    def _stack(self, slots: list[int]) -> dict[str, Any]:
        batch = super()._stack(slots)
        batch["goal_image"] = torch.from_numpy(np.stack([self.goals[s] for s in slots])).to(self.device)
        return batch


class GoalDiffusionPolicy:
    """Policy protocol: per slot, generate a subgoal, act toward it for ``replan_every`` steps, repeat."""

    def __init__(self, model: "GoalImageModel", device: str | torch.device = "cpu", seed: int | None = 0) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.cfg = model.cfg
        self.seed = seed
        self.low = _LowLevel(model.policy, self.device, seed)
        self.reset(1)

    def reset(self, n_envs: int) -> None:
        """Forget all slots (goals, counters, low-level queues); reseeds the goal noise."""
        self.n_envs = n_envs
        self.low.reset(n_envs)
        self.low.goals = {}
        self.steps_since_goal: dict[int, int] = {}
        self.n_goals_generated = 0
        self._generator = torch.Generator().manual_seed(self.seed) if self.seed is not None else None

    def act(self, obs_batch: Mapping[str, Any]) -> np.ndarray:
        """obs_batch per contracts.md (rows may be a subset of slots) -> float32 actions (n, 7)."""
        n = len(obs_batch["state"])
        slots = [int(s) for s in obs_batch.get("slot", range(n))]
        is_first = np.asarray(obs_batch.get("is_first", np.zeros(n, bool)), dtype=bool)
        instr = obs_batch["instruction"]
        instr = [instr] * n if isinstance(instr, str) else list(instr)
        need = [i for i, s in enumerate(slots) if is_first[i] or s not in self.low.goals
                or self.steps_since_goal[s] >= self.cfg.replan_every]
        if need:
            images = torch.from_numpy(np.stack([np.asarray(obs_batch["image"][i]) for i in need])).permute(0, 3, 1, 2)
            goals = self.model.generate_goals(images.to(self.device), [instr[i] for i in need],
                                              generator=self._generator).cpu().numpy()
            self.n_goals_generated += len(need)
            for i, g in zip(need, goals):
                s = slots[i]
                self.low.goals[s] = g
                self.steps_since_goal[s] = 0
                if s in self.low._queue:  # act toward the new goal now, not after the old chunk
                    self.low._queue[s].clear()
        actions = self.low.act(obs_batch)
        for s in slots:
            self.steps_since_goal[s] += 1
        return actions

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu") -> "GoalDiffusionPolicy":
        """Policy from a checkpoint directory (EMA weights when present)."""
        from vlabench.models.goal_image import load_goal_model

        model, _ = load_goal_model(path, device)
        return cls(model, device)
