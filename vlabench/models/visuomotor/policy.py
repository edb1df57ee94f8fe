"""Closed-loop policy of the feature-point model: per-slot state history, temporal ensembling."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from vlabench.contracts import SlotMemory
from vlabench.models.blocks.camera_input import camera_frames
from vlabench.models.blocks.chunking import ensemble_step
from vlabench.models.checkpoint import CheckpointPolicy
from vlabench.models.visuomotor.model import VisuomotorModel


class VisuomotorPolicy(CheckpointPolicy):
    """Runs the frozen trunk on each new frame, keeps each slot's last ``n_obs_steps`` states (a new episode's
    history starts filled with its first state, as the dataset pads), predicts a chunk every step and
    executes the temporal ensemble of every chunk covering the step, weighted ``exp(-ensemble_decay * i)``
    with i = 0 for the oldest (vlabench.models.blocks.chunking)."""

    def __init__(self, model: VisuomotorModel, device: str | torch.device = "cpu", ensemble_decay: float = 0.01) -> None:
        if ensemble_decay < 0:
            raise ValueError(f"ensemble_decay must be >= 0, got {ensemble_decay}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.ensemble_decay = float(ensemble_decay)
        self.memory = SlotMemory(history=model.cfg.n_obs_steps)

    def reset(self, n_envs: int) -> None:
        self.memory.reset()

    @torch.inference_mode()
    def act(self, obs_batch: Mapping[str, Any]) -> np.ndarray:
        """obs_batch (image, wrist_image (n, H, W, 3) uint8, state (n, 8), instruction, slot, is_first) ->
        actions (n, 7) float32 in [-1, 1]."""
        m = self.model
        maps = {}
        for cam in m.cameras:
            maps[cam] = m.encode_frames(camera_frames(obs_batch, cam, "visuomotor"))
        if "state" not in obs_batch:
            raise KeyError("the visuomotor policy needs obs_batch['state'] (proprioception)")
        state = torch.as_tensor(np.asarray(obs_batch["state"], np.float32))
        states = self.memory.update(obs_batch)  # after the inputs are checked: a bad batch leaves memory as it was
        for st, row in zip(states, state):
            st.history.extend([row] * (m.cfg.n_obs_steps if st.fresh else 1))
        hist = torch.stack([torch.stack(list(st.history)) for st in states])
        chunks = m.predict_action_chunk(maps, list(obs_batch["instruction"]), hist).float().cpu().numpy()
        actions = np.stack([ensemble_step(st, chunk, self.ensemble_decay) for st, chunk in zip(states, chunks)])
        return np.clip(actions, -1.0, 1.0).astype(np.float32)
