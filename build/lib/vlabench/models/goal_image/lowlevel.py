"""Low-level half of ``goal-diffusion``: the goal-conditioned Diffusion Policy model.

``GoalConditionedDiffusion`` is :class:`vlabench.models.diffusion.DiffusionModel` with one more
input, the goal frame, encoded by the front camera's ResNet (shared weights: same camera, as SuSIE's
policy shares one encoder for observation and goal) and appended to the FiLM conditioning vector. It
is trained with hindsight goals: the dataset's ``goal_image`` at ``goal_offset`` steps ahead. By
default it does not see the instruction (SuSIE's low-level policy is goal-only), so the goal image is
the only task information it gets; ``use_language=True`` adds the sentence embedding back.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from vlabench.contracts import ACTION_DIM
from vlabench.models.blocks.unet1d import ConditionalUnet1D
from vlabench.models.diffusion.model import DiffusionConfig, DiffusionModel


class GoalConditionedDiffusion(DiffusionModel):
    """Diffusion Policy whose conditioning also holds the goal image's features.

    The goal frame goes through the *front* camera's encoder and gets the same random crop as the
    observation frames of its sample, so goal-vs-current keypoint offsets are not perturbed by
    augmentation. batch["goal_image"]: uint8 (B, 3, H, W).
    """

    def __init__(self, cfg: DiffusionConfig, stats: Mapping, use_language: bool = False) -> None:
        super().__init__(cfg, stats)
        cfg = self.cfg
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
        joint = torch.cat([image, goal.to(image.device)[:, None]], dim=1)
        feats = self.front_encoder(self._prepare_images(joint, "image + goal_image", steps=t + 1)).view(b, t + 1, -1)
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
