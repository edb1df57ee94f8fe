"""``GoalDiffusionPolicy``: the Policy protocol over a whole goal-image model (generator + low-level policy).

Per slot: generate a subgoal from the current frame, act toward it with the low-level goal-conditioned
Diffusion Policy for ``replan_every`` steps, then generate the next one. Slots due for a new goal in
the same ``act`` call share one batched sampling call; a replan flushes the slot's queued actions so
it acts toward the new goal at once.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from vlabench.contracts import SlotState
from vlabench.models.diffusion.policy import DiffusionPolicy


class GoalDiffusionPolicy(DiffusionPolicy):
    """Inference options: ``replan_every`` (env steps per subgoal) and ``goal_steps`` (DDIM steps of the
    goal generator); None keeps the checkpoint's values. Both trade quality for speed, e.g. on a CPU.
    Goal noise, like action noise, comes from the slot's own per-episode generator (DiffusionPolicy)."""

    def __init__(self, model: Any, device: str | torch.device = "cpu", seed: int | None = 0,
                 replan_every: int | None = None, goal_steps: int | None = None) -> None:
        self.goal_model = model
        super().__init__(model.policy, device, seed)  # calls reset(); chunk_model = the low-level policy
        self.model = self.goal_model.to(self.device).eval()
        self.replan_every = int(replan_every or model.cfg.replan_every)
        self.goal_steps = int(goal_steps or model.cfg.n_sampling_steps)
        if self.replan_every < 1 or self.goal_steps < 1:
            raise ValueError(f"replan_every and goal_steps must be >= 1, got {self.replan_every}, {self.goal_steps}")

    def reset(self, n_envs: int) -> None:
        """Forget all slots (goals, counters, queues, noise generators)."""
        super().reset(n_envs)
        self.n_goals_generated = 0

    def act(self, obs_batch: Mapping[str, Any]) -> np.ndarray:
        """obs_batch (rows may be a subset of slots) -> float32 actions (n, 7)."""
        states = self.observe(obs_batch)
        instr = obs_batch["instruction"]
        instr = [instr] * len(states) if isinstance(instr, str) else list(instr)
        need = [i for i, st in enumerate(states) if st.fresh or st.data["since_goal"] >= self.replan_every]
        if need:
            images = torch.from_numpy(np.stack([np.asarray(obs_batch["image"][i]) for i in need])).permute(0, 3, 1, 2)
            generators = None if self.seed is None else [self.slot_generator(states[i], "goals") for i in need]
            goals = self.goal_model.generate_goals(images.to(self.device), [instr[i] for i in need],
                                                   n_steps=self.goal_steps, generator=generators).cpu().numpy()
            self.n_goals_generated += len(need)
            for i, g in zip(need, goals):
                states[i].data.update(goal=g, since_goal=0)
                states[i].queue.clear()
        self.plan([st for st in states if not st.queue])
        actions = np.stack([st.queue.popleft() for st in states]).astype(np.float32)
        for st in states:
            st.data["since_goal"] += 1
        return actions

    def model_batch(self, states: list[SlotState]) -> dict[str, Any]:
        batch = super().model_batch(states)
        batch["goal_image"] = torch.from_numpy(np.stack([st.data["goal"] for st in states])).to(self.device)
        return batch
