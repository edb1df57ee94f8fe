"""vlabench suites as a vla-eval benchmark, so vla-eval users run them against any of their model servers.

In a vla-eval config (run with ``vla-eval run --no-docker --render cpu --config CONFIG``)::

    server:
      url: ws://127.0.0.1:8000
    benchmarks:
      - benchmark: "vlabench.eval.vla_eval_benchmark:VlabenchBenchmark"
        episodes_per_task: 2           # at most the suite's episodes per cell
        params:
          suite: envs/smoke.toml       # any vlabench suite file
          cells: ["pick/seen"]         # optional: a subset of the suite's task/split cells

Each (task, split) cell of the suite is one vla-eval task named ``task/split``; vla-eval's episode index
``i`` is the cell's episode ``i``, with the suite's own seed, so episode ``i`` is the same scene as in
``vlabench eval``. Observations follow vla-eval's convention and match what vlabench's own vla-eval client
sends (:mod:`vlabench.agents.served`): ``images`` {``image``, ``wrist_image``} (HWC uint8),
``task_description``, ``state`` (end-effector xyz, quaternion xyzw, gripper opening). The action is
vlabench's 7-D delta action in [-1, 1] (one per step; a server that predicts chunks buffers them itself, as
vla-eval's model servers do). An episode succeeds when the task's success predicate held at any step, as in
``vlabench eval``; it ends when the env terminates or truncates (the task's own step budget).

The results are vla-eval's (its result JSON and recording), not a vlabench results.json: for the
benchmark's statistics and provenance, evaluate a served model with ``vlabench eval --policy ws://...``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from vla_eval.benchmarks.base import StepBenchmark, StepResult
from vla_eval.specs import GRIPPER_CLOSE_POS, IMAGE_RGB, LANGUAGE, POSITION_DELTA, STATE_EEF_POS_QUAT_GRIP, DimSpec

from vlabench.agents.served import vla_eval_observation
from vlabench.contracts import ACTION_DIM
from vlabench.eval.workers import EnvSlot
from vlabench.suite import load_suite

ROTATION_DELTA = DimSpec("rotation", 3, "delta_euler_xyz", (-1, 1))
MAX_STEPS = 1000
"""vla-eval's step cap per episode; every vlabench task truncates well before it."""


class VlabenchBenchmark(StepBenchmark):
    """The episodes of one vlabench suite file, cell by cell (see the module docstring)."""

    render_backends: ClassVar[frozenset[str]] = frozenset({"cpu", "gpu"})
    _render_mode: ClassVar[str] = "cpu"

    @classmethod
    def configure_render(cls, mode: str) -> dict[str, str]:
        """PyBullet chooses its renderer per env: cpu -> the tiny software renderer, gpu -> EGL."""
        cls._render_mode = mode
        return {}

    def __init__(self, suite: str = "envs/smoke.toml", cells: list[str] | None = None,
                 renderer: str | None = None) -> None:
        super().__init__()
        if not Path(suite).is_file():
            raise FileNotFoundError(f"vlabench suite file not found: {suite} (a path relative to where vla-eval runs)")
        self.suite = load_suite(suite)
        self.episodes: dict[str, list] = {}
        for ep in self.suite.episodes:
            self.episodes.setdefault(f"{ep.task}/{ep.split}", []).append(ep)
        if cells is not None:
            unknown = [c for c in cells if c not in self.episodes]
            if unknown:
                raise ValueError(f"cells {unknown} are not in {suite}; its cells: {', '.join(self.episodes)}")
            self.episodes = {c: self.episodes[c] for c in cells}
        renderer = renderer or self.suite.env_kwargs.get("renderer") or ("egl" if self._render_mode == "gpu" else "tiny")
        self.slot = EnvSlot({**self.suite.env_kwargs, "renderer": renderer})
        self.success, self.episode = False, None

    def get_tasks(self) -> list[dict]:
        return [{"name": name, "task": eps[0].task, "split": eps[0].split, "suite": self.suite.name}
                for name, eps in self.episodes.items()]

    def get_metadata(self) -> dict[str, Any]:
        return {"max_steps": MAX_STEPS, "max_episodes_per_task": min(len(e) for e in self.episodes.values()),
                "suite": self.suite.name, "manifest_hash": self.suite.manifest_hash}

    def get_action_spec(self) -> dict[str, DimSpec]:
        return {"position": POSITION_DELTA, "rotation": ROTATION_DELTA, "gripper": GRIPPER_CLOSE_POS}

    def get_observation_spec(self) -> dict[str, DimSpec]:
        return {"image": IMAGE_RGB, "wrist_image": IMAGE_RGB, "state": STATE_EEF_POS_QUAT_GRIP,
                "language": LANGUAGE}

    def reset(self, task: dict) -> dict:
        eps = self.episodes[task["name"]]
        index = int(task.get("episode_idx", 0))
        if not 0 <= index < len(eps):
            raise ValueError(f"{task['name']} has {len(eps)} episodes in suite {self.suite.name!r}; "
                             f"set episodes_per_task <= {len(eps)}")
        ep = self.episode = eps[index]
        self.success = False
        return self.slot.reset({"task": ep.task, "split": ep.split, "index": ep.index, "seed": ep.seed})

    def step(self, action: dict) -> StepResult:
        raw = action.get("actions", action.get("action")) if isinstance(action, dict) else action
        a = np.asarray(raw, np.float32).reshape(-1) if raw is not None else np.zeros(0, np.float32)
        if a.shape != (ACTION_DIM,):
            raise ValueError(f"vlabench takes one 7-D delta action per step, got an action of shape "
                             f"{np.shape(raw)}; a server that predicts chunks must buffer them")
        reply = self.slot.step(np.clip(a, -1.0, 1.0))
        self.success = self.success or reply["success"]
        return StepResult(obs=reply, reward=float(reply["success"]), done=reply["done"],
                          info={"success": self.success, "steps": reply["steps"]})

    def make_obs(self, raw_obs: dict, task: dict) -> dict:
        return vla_eval_observation(raw_obs["obs"], raw_obs["instruction"])

    def get_step_result(self, step_result: StepResult) -> dict:
        return {"success": bool(self.success), "steps": int(step_result.obs.get("steps", 0)), "seed": self.episode.seed}

    def cleanup(self) -> None:
        self.slot.close()
