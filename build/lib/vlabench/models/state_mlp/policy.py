"""Closed-loop policy of the privileged-state MLP: per-slot state history and temporal ensembling."""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import numpy as np
import torch

from vlabench.contracts import SlotMemory
from vlabench.models.blocks.chunking import ensemble_step
from vlabench.models.checkpoint import CheckpointPolicy
from vlabench.models.state_mlp.model import StateMLP


class StateMLPPolicy(CheckpointPolicy):
    """Predicts a chunk every step. With ``ensemble`` (the default) the executed action averages every
    chunk that covers the current step, weighted ``exp(-ensemble_decay * i)`` with i = 0 for the oldest
    (ACT's temporal ensembling: smooth, and still reacting each step). Without it the slot executes
    ``n_action_steps`` actions of each chunk before predicting the next.

    It reads ``obs_batch["privileged"]``; the harness turns the env's ``privileged_state`` on for a
    policy whose ``obs_keys`` name it.
    """

    obs_keys: ClassVar[tuple[str, ...]] = ("privileged",)

    def __init__(self, model: StateMLP, device: str | torch.device = "cpu", ensemble: bool = True,
                 ensemble_decay: float = 0.01, n_action_steps: int = 1) -> None:
        if not 1 <= n_action_steps <= model.cfg.horizon:
            raise ValueError(f"n_action_steps must be in 1..horizon={model.cfg.horizon}, got {n_action_steps}")
        if ensemble_decay < 0:
            raise ValueError(f"ensemble_decay must be >= 0, got {ensemble_decay}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.ensemble, self.ensemble_decay, self.n_action_steps = bool(ensemble), float(ensemble_decay), n_action_steps
        self.memory = SlotMemory(history=model.cfg.n_obs_steps)

    def reset(self, n_envs: int) -> None:
        self.memory.reset()

    @torch.inference_mode()
    def act(self, obs_batch: Mapping[str, Any]) -> np.ndarray:
        """obs_batch with ``privileged`` (n, P) float32 -> actions (n, 7) float32 in [-1, 1]."""
        if "privileged" not in obs_batch:
            raise KeyError("the state-mlp policy needs obs_batch['privileged']: build the env with "
                           "privileged_state=True (vlabench eval does it for this policy)")
        priv = np.asarray(obs_batch["privileged"], np.float32)
        states = self.memory.update(obs_batch)
        for st, row in zip(states, priv):
            if st.fresh:
                st.history.extend([row] * self.model.cfg.n_obs_steps)
            else:
                st.history.append(row)
        need = [i for i, st in enumerate(states) if self.ensemble or not st.queue]
        if need:
            hist = torch.from_numpy(np.stack([np.stack(list(states[i].history)) for i in need])).to(self.device)
            chunks = dict(zip(need, self.model.predict_action_chunk(hist).float().cpu().numpy()))
            if not self.ensemble:
                for i, chunk in chunks.items():
                    states[i].queue.extend(chunk[: self.n_action_steps])
        out = np.empty((len(states), 7), np.float32)
        for i, st in enumerate(states):
            out[i] = ensemble_step(st, chunks[i], self.ensemble_decay) if self.ensemble else st.queue.popleft()
        return np.clip(out, -1.0, 1.0)
