"""The built-in policies: expert, random, noop and replay (``vlabench.agents.spec`` builds them by name).

The Policy protocol, the observation batch and the per-slot memory every policy uses are defined
once in vlabench.contracts (see its docstring for ``obs_batch``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from vlabench.contracts import ACTION_DIM, PolicyTraits, SlotMemory

__all__ = ["BUILTIN_POLICIES", "ExpertPolicy", "NoopPolicy", "RandomPolicy", "ReplayPolicy"]


class ExpertPolicy(PolicyTraits):
    """Replays the privileged scripted oracle (``env.expert_action()``), computed in the env worker.

    An upper bound for the benchmark and a check that every episode is solvable; the harness fills
    ``obs_batch["expert_action"]`` because this class declares ``needs_expert = True``.
    """

    needs_expert: ClassVar[bool] = True
    obs_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        self.memory = SlotMemory()

    def reset(self, n_envs: int) -> None:
        self.memory.reset()

    def act(self, obs_batch: dict[str, Any]) -> np.ndarray:
        if "expert_action" not in obs_batch:
            raise KeyError("the expert policy needs obs_batch['expert_action'] (n, 7); the harness fills it "
                           "for policies with needs_expert = True")
        n = len(self.memory.update(obs_batch))
        return np.asarray(obs_batch["expert_action"], dtype=np.float32).reshape(n, ACTION_DIM)


class RandomPolicy(PolicyTraits):
    """Uniform actions in [-1, 1]^7, reproducible per episode.

    Each slot's generator is re-seeded from ``(seed_offset, episode seed)`` on ``is_first``, so an
    episode gets the same action sequence whatever slot or worker count runs it. Without a ``seed``
    key (a caller other than the harness) the slot number seeds it instead. It reads the episode seed
    (``needs_episode_info``) rather than ``rng_seed`` so that the published random rows, drawn that way,
    stay reproducible; a baseline that never looks at the observation learns nothing from it.
    """

    needs_episode_info: ClassVar[bool] = True
    stochastic: ClassVar[bool] = True
    obs_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self, seed_offset: int = 0) -> None:
        self.seed_offset = int(seed_offset)
        self.memory = SlotMemory()

    def reset(self, n_envs: int) -> None:
        self.memory.reset()

    def act(self, obs_batch: dict[str, Any]) -> np.ndarray:
        states = self.memory.update(obs_batch)
        seeds = obs_batch.get("seed")
        slots = obs_batch.get("slot", range(len(states)))
        out = np.empty((len(states), ACTION_DIM), np.float32)
        for row, st in enumerate(states):
            if st.fresh:
                s = int(seeds[row]) if seeds is not None else int(slots[row])
                st.data["rng"] = np.random.default_rng([self.seed_offset, s])
            out[row] = st.data["rng"].uniform(-1.0, 1.0, ACTION_DIM)
        return out


class NoopPolicy(PolicyTraits):
    """Zero motion with the gripper open (-1): the floor of every task, and a pure sim-speed probe."""

    obs_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        self.memory = SlotMemory()

    def reset(self, n_envs: int) -> None:
        self.memory.reset()

    def act(self, obs_batch: dict[str, Any]) -> np.ndarray:
        a = np.zeros((len(self.memory.update(obs_batch)), ACTION_DIM), np.float32)
        a[:, 6] = -1.0
        return a


class ReplayPolicy(PolicyTraits):
    """Replays the recorded actions of the demo with the same (task, seed) from a vlabench demo dataset.

    Used to check that collected demos still reproduce in the current simulator (run it on the suite
    the demos were collected from: demo seeds are train seeds, disjoint from every eval suite's).
    After the recorded actions run out it sends zero motion and repeats the last gripper command (all
    zeros would open the gripper -- 0 counts as open -- and drop a held object). An episode with no
    demo raises KeyError from ``act``, which the harness records as an error for that episode only.
    """

    needs_episode_info: ClassVar[bool] = True
    obs_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self, dataset_dir: str | Path) -> None:
        from vlabench.data.manifest import load_manifest, manifest_episodes

        self.root = Path(dataset_dir)
        manifest = load_manifest(self.root, skip_bad=True)
        self._where: dict[tuple[str, int], tuple[str, str]] = {}
        for ep in manifest_episodes(manifest):
            self._where.setdefault((str(ep["task"]), int(ep["seed"])), (ep["file"], ep["demo"]))
        self.memory = SlotMemory()

    def __len__(self) -> int:
        return len(self._where)

    def actions_for(self, task: str, seed: int) -> np.ndarray:
        """Recorded actions (T, 7) float32 of the demo (task, seed)."""
        from vlabench.data.shards import read_lowdim

        key = (str(task), int(seed))
        if key not in self._where:
            raise KeyError(f"no demo for task {task!r} seed {seed} in {self.root} "
                           f"({len(self._where)} demos; replay needs the suite the demos were collected from)")
        file, demo = self._where[key]
        (_, actions), = read_lowdim(self.root / file, [demo])
        return np.asarray(actions, dtype=np.float32)

    def reset(self, n_envs: int) -> None:
        self.memory.reset()

    def act(self, obs_batch: dict[str, Any]) -> np.ndarray:
        if "task" not in obs_batch or "seed" not in obs_batch:
            raise KeyError("the replay policy needs obs_batch['task'] and obs_batch['seed'] (the harness sends them)")
        states = self.memory.update(obs_batch)
        out = np.zeros((len(states), ACTION_DIM), np.float32)
        for row, st in enumerate(states):
            if st.fresh:
                st.queue.extend(self.actions_for(obs_batch["task"][row], int(obs_batch["seed"][row])))
                st.data["gripper"] = st.queue[-1][6] if st.queue else 0.0
            if st.queue:
                out[row] = st.queue.popleft()
            else:
                out[row, 6] = st.data["gripper"]
        return out


BUILTIN_POLICIES = ("expert", "random", "noop", "replay")
"""Names of the built-in policies ("replay" takes ``replay:DATASET_DIR``)."""
