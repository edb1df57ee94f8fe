"""Policy protocol wrapper of the RT-2-style model: single-frame, stateless, batched constrained decoding."""

from __future__ import annotations

import numpy as np
import torch

from vlabench.contracts import SlotMemory
from vlabench.models.checkpoint import CheckpointPolicy
from vlabench.models.rt2.model import RT2Model, to_chw_uint8


class RT2Policy(CheckpointPolicy):
    """RT-2 sees one frame and keeps no history; the slot memory only validates the batch."""

    def __init__(self, model: RT2Model, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.memory = SlotMemory()

    def reset(self, n_envs: int) -> None:
        self.memory.reset()

    @torch.no_grad()
    def act(self, obs_batch: dict) -> np.ndarray:
        """obs_batch image ``(n, H, W, 3)`` uint8 + instruction list[str] -> float32 actions ``(n, 7)``."""
        self.memory.update(obs_batch)
        images = to_chw_uint8(obs_batch["image"]).to(self.device)
        actions = self.model.predict_actions(images, list(obs_batch["instruction"]))
        if not np.all(np.isfinite(actions)):
            raise ValueError("RT-2 produced a non-finite action; check the checkpoint's stats.json")
        return np.clip(actions, -1.0, 1.0).astype(np.float32)
