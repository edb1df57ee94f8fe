"""Closed-loop policy of the two-stage model: localize on each new front frame, then the frozen controller."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from vlabench.models.blocks.camera_input import camera_frames
from vlabench.models.checkpoint import CheckpointPolicy
from vlabench.models.localizer.model import LocalizerModel
from vlabench.models.state_mlp.policy import StateMLPPolicy


class LocalizerPolicy(CheckpointPolicy):
    """Builds the estimated privileged vector from ``image``, ``state`` and ``instruction`` and hands it to the
    state-MLP's own closed-loop policy: its per-slot history, and ``ensemble`` / ``ensemble_decay`` /
    ``n_action_steps`` as :class:`StateMLPPolicy` takes them."""

    def __init__(self, model: LocalizerModel, device: str | torch.device = "cpu", ensemble: bool = True,
                 ensemble_decay: float = 0.01, n_action_steps: int = 1) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.controller = StateMLPPolicy(model.controller, device, ensemble=ensemble, ensemble_decay=ensemble_decay,
                                         n_action_steps=n_action_steps)

    def reset(self, n_envs: int) -> None:
        self.controller.reset(n_envs)

    @torch.inference_mode()
    def act(self, obs_batch: Mapping[str, Any]) -> np.ndarray:
        """obs_batch (image (n, H, W, 3) uint8, state (n, 8), instruction, slot, is_first) -> actions (n, 7)."""
        frames = camera_frames(obs_batch, "image", "localizer")
        if "state" not in obs_batch:
            raise KeyError("the localizer policy needs obs_batch['state'] (proprioception)")
        estimate = self.model.estimate(frames, list(obs_batch["instruction"]), np.asarray(obs_batch["state"], np.float32))
        return self.controller.act({**obs_batch, "privileged": estimate})
