"""Closed-loop policy of the privileged-state MLP: per-slot state history and temporal ensembling."""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import numpy as np
import torch

from vlabench.contracts import SlotMemory, privileged_slice
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

    ``target_noise_cm`` / ``goal_noise_cm`` (inference options, 0 = off) probe how much perception error the
    ceiling tolerates: each episode's target (goal) position seen by the MLP is off by a constant offset drawn
    from N(0, sigma^2) per axis, from the episode's ``rng_seed``, and every field derived from it moves along
    (for pick-like families the goal is the target itself), as a vision policy that mislocates an object by
    that much would see it.
    """

    obs_keys: ClassVar[tuple[str, ...]] = ("privileged",)

    def __init__(self, model: StateMLP, device: str | torch.device = "cpu", ensemble: bool = True,
                 ensemble_decay: float = 0.01, n_action_steps: int = 1, target_noise_cm: float = 0.0,
                 goal_noise_cm: float = 0.0) -> None:
        if not 1 <= n_action_steps <= model.cfg.horizon:
            raise ValueError(f"n_action_steps must be in 1..horizon={model.cfg.horizon}, got {n_action_steps}")
        if ensemble_decay < 0:
            raise ValueError(f"ensemble_decay must be >= 0, got {ensemble_decay}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.ensemble, self.ensemble_decay, self.n_action_steps = bool(ensemble), float(ensemble_decay), n_action_steps
        self.memory = SlotMemory(history=model.cfg.n_obs_steps)
        if min(target_noise_cm, goal_noise_cm) < 0:
            raise ValueError(f"noise must be >= 0 cm, got target {target_noise_cm}, goal {goal_noise_cm}")
        self.noise_m = (float(target_noise_cm) / 100, float(goal_noise_cm) / 100)
        self.stochastic = any(self.noise_m)
        self.offsets: dict[int, tuple[np.ndarray, np.ndarray]] = {}

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
        if self.stochastic:
            priv = self._mislocate(priv, obs_batch, states)
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

    def _mislocate(self, priv: np.ndarray, obs_batch: Mapping[str, Any], states: list) -> np.ndarray:
        """``priv`` with each slot's per-episode target and goal offsets applied (see the class docstring)."""
        priv = priv.copy()
        slots = [int(s) for s in obs_batch.get("slot", range(len(states)))]
        for i, (st, slot) in enumerate(zip(states, slots)):
            if st.fresh or slot not in self.offsets:
                rng = np.random.default_rng(int(obs_batch["rng_seed"][i]))
                self.offsets[slot] = (rng.normal(0.0, self.noise_m[0], 3), rng.normal(0.0, self.noise_m[1], 3))
            target, goal = self.offsets[slot]
            if priv[i, privileged_slice("has_goal")][0] < 0.5:
                goal = target  # pick-like families: the goal field is the target's own position
            priv[i, privileged_slice("target_pos")] += target
            priv[i, privileged_slice("target_minus_ee")] += target
            priv[i, privileged_slice("goal_pos")] += goal
            priv[i, privileged_slice("goal_minus_target")] += goal - target
        return priv
