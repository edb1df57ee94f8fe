"""The built-in policies (expert, random, noop, replay) and ``make_policy``, which builds any policy
from a name or a checkpoint directory.

The Policy protocol, the observation batch and the per-slot memory every policy uses are defined
once in vlabench.contracts (see its docstring for ``obs_batch``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from vlabench.contracts import ACTION_DIM, Policy, SlotMemory

__all__ = ["BUILTIN_POLICIES", "ExpertPolicy", "NoopPolicy", "Policy", "RandomPolicy", "ReplayPolicy",
           "is_builtin", "make_policy"]


class ExpertPolicy:
    """Replays the privileged scripted oracle (``env.expert_action()``), computed in the env worker.

    An upper bound for the benchmark and a check that every episode is solvable; the harness fills
    ``obs_batch["expert_action"]`` because this class declares ``needs_expert = True``.
    """

    needs_expert: ClassVar[bool] = True

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


class RandomPolicy:
    """Uniform actions in [-1, 1]^7, reproducible per episode.

    Each slot's generator is re-seeded from ``(seed_offset, episode seed)`` on ``is_first``, so an
    episode gets the same action sequence whatever slot or worker count runs it. Without a ``seed``
    key (a caller other than the harness) the slot number seeds it instead.
    """

    needs_expert: ClassVar[bool] = False

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


class NoopPolicy:
    """Zero motion with the gripper open (-1): the floor of every task, and a pure sim-speed probe."""

    needs_expert: ClassVar[bool] = False

    def __init__(self) -> None:
        self.memory = SlotMemory()

    def reset(self, n_envs: int) -> None:
        self.memory.reset()

    def act(self, obs_batch: dict[str, Any]) -> np.ndarray:
        a = np.zeros((len(self.memory.update(obs_batch)), ACTION_DIM), np.float32)
        a[:, 6] = -1.0
        return a


class ReplayPolicy:
    """Replays the recorded actions of the demo with the same (task, seed) from a vlabench demo dataset.

    Used to check that collected demos still reproduce in the current simulator (run it on the suite
    the demos were collected from: demo seeds are train seeds, disjoint from every eval suite's).
    After the recorded actions run out it sends zero motion and repeats the last gripper command (all
    zeros would open the gripper -- 0 counts as open -- and drop a held object). An episode with no
    demo raises KeyError from ``act``, which the harness records as an error for that episode only.
    """

    needs_expert: ClassVar[bool] = False

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
"""Names ``make_policy`` accepts besides a checkpoint path ("replay" takes ``replay:DATASET_DIR``)."""


def is_builtin(name_or_path: str | Path) -> bool:
    """Whether a policy spec names a built-in policy (not a checkpoint).

    Built-in names win over a same-named directory in the working directory; write ``./expert`` to
    mean such a directory.
    """
    spec = str(name_or_path)
    name = spec.partition(":")[0]
    return name in BUILTIN_POLICIES and (spec == name or name == "replay")


def make_policy(name_or_path: str | Path, device: str = "cpu", **kw: Any) -> Policy:
    """Build a policy from a name or a checkpoint directory.

    Args:
        name_or_path: "expert", "random", "noop", "replay:DATASET_DIR" (or "replay" with
            ``dataset_dir=`` in kw), or a checkpoint directory / training run directory.
        device: torch device for learned policies ("cpu", "cuda", "cuda:N", "auto").
        kw: extra constructor arguments of a built-in (random: seed_offset; replay: dataset_dir), or
            inference options of a checkpoint's policy class (RT-1: decode).
    Raises:
        ValueError naming the valid choices for an unknown name.
    """
    spec = str(name_or_path)
    if not is_builtin(spec):
        path = Path(spec)
        if path.is_dir():
            from vlabench.models.checkpoint import load_policy

            return load_policy(path, device, **kw)
        if path.exists():
            raise ValueError(f"policy {spec!r} is a file; a checkpoint is a directory (holding model.safetensors "
                             "and config.json, or a run directory with latest/)")
        raise ValueError(f"unknown policy {spec!r}; valid: {', '.join(BUILTIN_POLICIES)} "
                         "(replay as 'replay:DATASET_DIR'), or an existing checkpoint directory")
    name, _, arg = spec.partition(":")
    if name == "expert":
        return ExpertPolicy()
    if name == "random":
        return RandomPolicy(**kw)
    if name == "noop":
        return NoopPolicy()
    if name == "replay":
        dataset_dir = arg or kw.get("dataset_dir")
        if not dataset_dir:
            raise ValueError("policy 'replay' needs a demo dataset: use 'replay:DATASET_DIR'")
        return ReplayPolicy(dataset_dir)
    raise AssertionError(f"built-in policy {name!r} has no constructor")  # BUILTIN_POLICIES out of sync
