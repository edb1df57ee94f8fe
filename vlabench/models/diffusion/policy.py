"""Policy protocol around a :class:`DiffusionModel`: per-slot observation history and action queue."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from vlabench.contracts import SlotMemory, SlotState
from vlabench.models.checkpoint import CheckpointPolicy
from vlabench.models.diffusion.model import DiffusionModel

STREAMS = ("actions", "goals")
"""The independent noise streams of a slot (the goal-image policy also samples goals)."""


class DiffusionPolicy(CheckpointPolicy):
    """A slot's history holds its last ``n_obs_steps`` observations (padded by repeating the first one
    of an episode). When its queue is empty the slot gets a new chunk and executes
    ``chunk[n_obs_steps-1 : n_obs_steps-1+n_action_steps]`` (index n_obs_steps-1 is the current step).
    All slots needing a chunk in one ``act`` call share one batched sampling call.

    Noise is per episode: each slot's generator is seeded on the episode's first step from
    ``(seed, obs_batch["rng_seed"])`` (the slot number when a hand-driven batch has no ``rng_seed``),
    and each row of a batched sampling call draws from its own slot's generator. An episode therefore
    samples the same noise whatever slot, worker layout or backend runs it. ``seed=None`` draws
    unseeded noise. ``num_inference_steps`` (0 = the checkpoint's) sets the sampler's denoising steps.
    """

    stochastic = True

    def __init__(self, model: DiffusionModel, device: str | torch.device = "cpu", seed: int | None = 0,
                 num_inference_steps: int = 0) -> None:
        if num_inference_steps < 0:
            raise ValueError(f"num_inference_steps must be >= 0 (0 = the checkpoint's), got {num_inference_steps}")
        self.num_inference_steps = num_inference_steps or None
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.chunk_model: DiffusionModel = self.model
        self.seed = seed
        self.memory = SlotMemory(history=self.chunk_model.cfg.n_obs_steps)
        self.reset(1)

    @property
    def cfg(self):
        return self.chunk_model.cfg

    def reset(self, n_envs: int) -> None:
        """Forget every slot's history, queued actions and noise generators."""
        self.memory.reset()

    def slot_generator(self, st: SlotState, stream: str) -> torch.Generator | None:
        """The slot's CPU generator for noise ``stream`` ("actions", "goals"), seeded on first use in an
        episode from (policy seed, episode rng_seed, stream)."""
        if self.seed is None:
            return None
        if stream not in st.data:
            g = torch.Generator()
            g.manual_seed(int(np.random.SeedSequence([self.seed, st.data["rng_seed"], STREAMS.index(stream)])
                              .generate_state(1, np.uint64)[0] >> np.uint64(1)))
            st.data[stream] = g
        return st.data[stream]

    def act(self, obs_batch: Mapping[str, Any]) -> np.ndarray:
        """obs_batch (rows may be a subset of slots) -> float32 actions ``(n, 7)``."""
        states = self.observe(obs_batch)
        self.plan([st for st in states if not st.queue])
        return np.stack([st.queue.popleft() for st in states]).astype(np.float32)

    def observe(self, obs_batch: Mapping[str, Any]) -> list[SlotState]:
        """Append each row's observation to its slot's history (filled with it on a fresh episode)."""
        states = self.memory.update(obs_batch)
        rng_seeds = obs_batch.get("rng_seed", obs_batch.get("slot", range(len(states))))
        instructions = obs_batch["instruction"]
        keys = ("image", "wrist_image", "state") if self.cfg.use_wrist else ("image", "state")
        for i, st in enumerate(states):
            frame = {k: np.array(obs_batch[k][i], copy=True) for k in keys}
            frame["instruction"] = instructions if isinstance(instructions, str) else instructions[i]
            if st.fresh:
                st.data["rng_seed"] = int(rng_seeds[i])
                st.history.extend([frame] * self.cfg.n_obs_steps)
            else:
                st.history.append(frame)
        return states

    def plan(self, states: list[SlotState]) -> None:
        """Sample one action chunk for each of ``states`` (one batched call) and queue its executed part."""
        if not states:
            return
        generators = None if self.seed is None else [self.slot_generator(st, "actions") for st in states]
        steps = {"num_inference_steps": self.num_inference_steps} if self.num_inference_steps else {}
        chunks = self.chunk_model.predict_action_chunk(self.model_batch(states), generator=generators, **steps)
        start = self.cfg.n_obs_steps - 1
        chunks = chunks[:, start:start + self.cfg.n_action_steps].float().cpu().numpy()
        for st, chunk in zip(states, chunks):
            st.queue.extend(chunk)

    def model_batch(self, states: list[SlotState]) -> dict[str, Any]:
        """Histories -> model batch: images ``(b, n_obs, 3, H, W)`` uint8, state ``(b, n_obs, 8)``."""
        hist = [list(st.history) for st in states]
        batch: dict[str, Any] = {"instruction": [h[-1]["instruction"] for h in hist]}
        for key in ("image", "wrist_image") if self.cfg.use_wrist else ("image",):
            arr = np.stack([np.stack([f[key] for f in h]) for h in hist])  # (b, T, H, W, 3)
            batch[key] = torch.from_numpy(arr).permute(0, 1, 4, 2, 3).to(self.device)
        batch["state"] = torch.from_numpy(np.stack([np.stack([f["state"] for f in h]) for h in hist]).astype(np.float32))
        return batch
