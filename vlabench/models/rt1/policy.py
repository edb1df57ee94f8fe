"""Batched closed-loop RT-1 policy with a rolling per-slot history of frame tokens."""

from __future__ import annotations

import numpy as np
import torch

from vlabench.contracts import SlotMemory
from vlabench.models.blocks.camera_input import camera_frames
from vlabench.models.blocks.chunking import ensemble_step
from vlabench.models.checkpoint import CheckpointPolicy
from vlabench.models.rt1.model import RT1Model


class RT1Policy(CheckpointPolicy):
    """Keeps each slot's last ``n_frames`` frame tokens (RT-1's ``network_state``), so each step encodes
    one new frame per env instead of six.

    On a slot's first step the history is filled with the current frame, matching the dataset's edge
    padding; afterwards each step drops the oldest frame and appends the newest. A model with
    ``action_horizon`` > 1 predicts a chunk every step and the slot executes the temporal ensemble of every
    chunk covering the step (``ensemble_decay``; vlabench.models.blocks.chunking).
    """

    DECODES = ("argmax", "mean")

    def __init__(self, model: RT1Model, device: str | torch.device = "cpu", decode: str = "argmax",
                 ensemble_decay: float = 0.01) -> None:
        if decode not in self.DECODES:
            raise ValueError(f"unknown decode {decode!r}; valid: {', '.join(self.DECODES)}")
        if ensemble_decay < 0:
            raise ValueError(f"ensemble_decay must be >= 0, got {ensemble_decay}")
        self.decode, self.ensemble_decay = decode, float(ensemble_decay)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.memory = SlotMemory(history=model.cfg.n_frames)

    def reset(self, n_envs: int) -> None:
        """Forget every slot's history."""
        if n_envs < 1:
            raise ValueError(f"n_envs must be >= 1, got {n_envs}")
        self.memory.reset()

    @torch.inference_mode()
    def act(self, obs_batch: dict) -> np.ndarray:
        """obs_batch (image (n, H, W, 3) uint8, instruction, slot, is_first) -> actions (n, 7) float32 in [-1, 1]."""
        m = self.model
        cond = m.text_embedding(list(obs_batch["instruction"]))
        per_camera = []
        for cam in m.cameras:
            frames = camera_frames(obs_batch, cam, "RT-1")[:, None]  # (n, 1, 3, H, W)
            per_camera.append(m.camera_tokens(frames, cond))
        tokens = m.join_cameras(per_camera)[:, 0]  # (n, S, d)
        if m.cfg.use_state:
            if "state" not in obs_batch:
                raise KeyError("this RT-1 model was trained with use_state=True: obs_batch needs 'state'")
            state = torch.as_tensor(np.asarray(obs_batch["state"], np.float32))[:, None]
            tokens = m.add_state(tokens[:, None], state)[:, 0]  # a frame's tokens carry its own state
        states = self.memory.update(obs_batch)  # after the inputs are checked: a bad batch leaves memory as it was
        for st, tok in zip(states, tokens):
            if st.fresh:
                st.history.extend([tok] * m.cfg.n_frames)
            else:
                st.history.append(tok)
        hist = torch.stack([torch.stack(list(st.history)) for st in states])  # (n, T, S, d)
        logits = m.forward_tokens(hist)  # (n, H, 7, n_bins)
        if self.decode == "mean":
            chunks = m.tokenizer.decode_expected(logits.float().softmax(-1))
        else:
            chunks = m.tokenizer.decode(logits.argmax(dim=-1).cpu())
        if m.cfg.action_horizon == 1:
            actions = chunks[:, 0]
        else:
            actions = np.stack([ensemble_step(st, chunk, self.ensemble_decay) for st, chunk in zip(states, chunks)])
        return np.clip(actions, -1.0, 1.0).astype(np.float32)
