"""TabletopEnv: the Gymnasium environment. ``import vlabench`` registers its ids, ``vlabench/<GymId>-v0``
(one per task family, see ``vlabench.tasks.registry``), with this class as a string entry point.

Contract (shared shapes and constants in ``vlabench.contracts``):
- ``reset(seed=s)``: the same seed gives the same scene, instruction and images. The scene is sampled
  from ``np.random.default_rng(seed)`` only, and the physics client is rebuilt from scratch.
  ``reset(seed=s, options={"twin": True})`` builds the episode's paired twin instead: the same scene with
  only the split's shift undone (``vlabench.tasks.twins``; ``env.is_twin`` says which was built).
- Observation: ``image`` (H, W, 3) uint8 front camera, ``wrist_image`` (h, w, 3) uint8, ``state`` (8,)
  float32 (ee xyz, ee quaternion xyzw, gripper width), ``instruction`` str; ``depth`` / ``segmentation``
  of the front camera when asked for.
- Action: float32 in [-1, 1]^7 (see ``vlabench.sim.constants``: 0.05 m and 0.25 rad per unit; gripper
  < 0 open, > 0 close). NaN/inf raises ValueError. Values outside [-1, 1] are clipped, and
  ``info["action_clipped"]`` says so.
- ``info["success"]`` from the task's state predicate, ``info["diagnostics"]`` its parts,
  ``info["renderer"]`` the renderer in use. ``terminated`` is True on success (when
  ``terminate_on_success``), ``truncated`` after ``max_steps``.
- Vectorized: ``gym.make_vec(id, n, vectorization_mode="sync" | "async")`` both batch ``instruction`` as a
  tuple of n str; the async env's shared memory is read correctly thanks to ``InstructionSpace``.
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import pybullet as p
from gymnasium import spaces
from gymnasium.vector.utils import read_from_shared_memory

from vlabench.contracts import PRIVILEGED_GEOMETRY_FIELDS, compose_privileged
from vlabench.language import Split, get_split
from vlabench.sim import camera
from vlabench.sim import constants as C
from vlabench.sim.objects import spawn
from vlabench.sim.world import World
from vlabench.tasks import TASKS, get_task
from vlabench.tasks.base import object_pool
from vlabench.tasks.twins import twin_rng

CHARSET = string.ascii_letters + string.digits + " ,.?!'-+=*/()"
"""Characters an instruction may contain (the Text space's charset)."""
MAX_IMAGE_SIZE = 512
PRIVILEGED_TASKS = tuple(TASKS)
"""The families of the privileged state's one-hot: those registered when vlabench.env was imported (a
family registered later gets an all-zero one-hot, so the state's size never changes in a process)."""
PRIVILEGED_FIELDS = (*PRIVILEGED_GEOMETRY_FIELDS, ("task_onehot", len(PRIVILEGED_TASKS)))
"""Layout of ``TabletopEnv.privileged_state()``, in order: the proprioceptive ``state`` (ee xyz, quaternion
xyzw, gripper opening), the target object's base pose, the goal's position (``Task.goal_position``: the
named pad, container, base or reference object, or push's region; the target's own position and
``has_goal`` = 0 for pick-like families), two differences, and the task family one-hot in ``TASKS`` order.
Positions are world metres (robot base at the origin, table centre near x = 0.5)."""
PRIVILEGED_DIM = sum(n for _, n in PRIVILEGED_FIELDS)


class InstructionSpace(spaces.Text):
    """The ``instruction`` observation: a ``Text`` space that stays correct in ``AsyncVectorEnv``.

    Gymnasium's async vector env reads a ``Text`` space's shared memory once, when it is built, and
    returns those strings forever (Gymnasium issue #1164): every instruction would read as the padding
    character, 256 x "a". For this subclass the read returns a live view (``SharedInstructions``) that
    decodes the buffer the workers write; the copy the vector env hands out (its default ``copy=True``)
    is a plain tuple of the current instructions. Everywhere else it is an ordinary ``Text`` space.
    """


class SharedInstructions(Sequence):
    """The instructions of an async vector env's sub-envs, decoded from shared memory on each access.

    Copying (``copy.deepcopy``, as ``AsyncVectorEnv(copy=True)`` does; ``copy.copy``; pickling) gives a
    tuple of str, so the batch a step returns never changes afterwards."""

    def __init__(self, space: InstructionSpace, shared_memory: Any, n: int) -> None:
        self._space, self._memory, self._n = space, shared_memory, n

    def snapshot(self) -> tuple[str, ...]:
        """The current instructions, as a tuple of str."""
        return read_from_shared_memory.dispatch(spaces.Text)(self._space, self._memory, self._n)

    def __getitem__(self, i: int | slice) -> str | tuple[str, ...]:
        return self.snapshot()[i]

    def __len__(self) -> int:
        return self._n

    def __eq__(self, other: object) -> bool:
        return self.snapshot() == (other.snapshot() if isinstance(other, SharedInstructions) else other)

    __hash__ = None

    def __repr__(self) -> str:
        return f"SharedInstructions{self.snapshot()!r}"

    def __copy__(self) -> tuple[str, ...]:
        return self.snapshot()

    def __deepcopy__(self, memo: dict) -> tuple[str, ...]:
        return self.snapshot()

    def __reduce__(self) -> tuple[type, tuple[tuple[str, ...]]]:
        return tuple, (self.snapshot(),)


@read_from_shared_memory.register(InstructionSpace)
def _read_instructions(space: InstructionSpace, shared_memory: Any, n: int = 1) -> SharedInstructions:
    return SharedInstructions(space, shared_memory, n)


def narrow(split: Split, task, objects: list[str] | None, distractors: tuple[int, int] | None,
           front_fov: float = camera.FRONT_FOV) -> Split:
    """``split`` restricted to the target ``objects`` (catalogue names from the split's own pool) and with
    its distractor range replaced: easier variants of a cell, e.g. for CPU-sized training demos. Families
    that need a fixed amount of clutter (relational, category, ...) keep their own distractor counts.
    Also checks ``front_fov``, so suite files can validate every env option of a cell in one call."""
    if not isinstance(front_fov, (int, float)) or not 20.0 <= front_fov <= 90.0:
        raise ValueError(f"front_fov must be a number of degrees in [20, 90], got {front_fov!r}")
    if distractors is not None:
        if (len(distractors) != 2 or not all(isinstance(d, (int, np.integer)) for d in distractors)
                or not 0 <= distractors[0] <= distractors[1]):
            raise ValueError(f"distractors must be [lo, hi] with 0 <= lo <= hi, got {distractors!r}")
        split = dataclasses.replace(split, distractors=(int(distractors[0]), int(distractors[1])))
    if objects:
        valid = sorted(s.name for s in object_pool(split))
        unknown = [o for o in objects if o not in valid]
        if unknown:
            raise ValueError(f"objects {unknown} are not targets of split {split.name!r}; valid: {', '.join(valid)}")
        split = dataclasses.replace(split, only=tuple(objects))
        try:  # family-specific filters (size, shape family) may leave no target
            scene = task.sample(np.random.default_rng(0), split)
        except (ValueError, IndexError, RuntimeError) as e:
            raise ValueError(f"task {task.name!r} finds no target among objects {list(objects)}: {e}") from None
        targets = [o.spec.name for o in scene.objects if o.role == "target"]
        if not targets or targets[0] not in objects:
            raise ValueError(f"task {task.name!r} does not draw its target from the split's pool, so the objects "
                             "option cannot apply to it")
    return split


class TabletopEnv(gym.Env):
    """A Panda on a table, a task family, a split. See the module docstring for the contract."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": C.CONTROL_HZ}

    def __init__(self, task: str = "pick", split: str | None = None, image_size: int = 128, wrist_size: int = 84,
                 renderer: str = "tiny", max_steps: int | None = None, depth: bool = False,
                 segmentation: bool = False, terminate_on_success: bool = True,
                 render_mode: str | None = "rgb_array", objects: list[str] | None = None,
                 distractors: tuple[int, int] | None = None, front_fov: float = camera.FRONT_FOV,
                 privileged_state: bool = False) -> None:
        self.task = get_task(task)
        if split is None:
            # "seen" where the family has it; the reasoning families (relational, math, category) exist
            # only in their own emergent split.
            split = "seen" if "seen" in self.task.splits else self.task.splits[0]
        if split not in self.task.splits:
            get_split(split)  # unknown split names get the full list of splits
            raise ValueError(f"task {task!r} has no split {split!r}; its splits: {', '.join(self.task.splits)}")
        self.split = narrow(get_split(split), self.task, objects, distractors, front_fov)
        for name, size in (("image_size", image_size), ("wrist_size", wrist_size)):
            if not isinstance(size, (int, np.integer)) or not 16 <= size <= MAX_IMAGE_SIZE:
                raise ValueError(f"{name} must be an int in [16, {MAX_IMAGE_SIZE}], got {size!r}")
        if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, (int, np.integer))
                                      or max_steps < 1):
            raise ValueError(f"max_steps must be a positive int or None (the task's own), got {max_steps!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"unknown render_mode {render_mode!r}; valid: rgb_array, None")
        self.kwargs = dict(task=task, split=split, image_size=image_size, wrist_size=wrist_size, renderer=renderer,
                           max_steps=max_steps, depth=depth, segmentation=segmentation,
                           terminate_on_success=terminate_on_success, objects=objects, distractors=distractors,
                           front_fov=front_fov, privileged_state=privileged_state)
        self.privileged = bool(privileged_state)
        self.front_fov = float(front_fov)
        self.image_size, self.wrist_size = int(image_size), int(wrist_size)
        self.max_steps = int(max_steps or self.task.max_steps)
        self.depth, self.segmentation = depth, segmentation
        self.terminate_on_success = terminate_on_success
        self.render_mode = render_mode
        self.world = World(renderer)
        self.renderer = self.world.renderer
        obs = {
            "image": spaces.Box(0, 255, (self.image_size, self.image_size, 3), np.uint8),
            "wrist_image": spaces.Box(0, 255, (self.wrist_size, self.wrist_size, 3), np.uint8),
            "state": spaces.Box(np.array([-2, -2, -2, -1, -1, -1, -1, 0], np.float32),
                                np.array([2, 2, 2, 1, 1, 1, 1, 0.1], np.float32), dtype=np.float32),
            "instruction": InstructionSpace(max_length=256, min_length=1, charset=CHARSET),
        }
        if self.privileged:
            obs["privileged"] = spaces.Box(-np.inf, np.inf, (PRIVILEGED_DIM,), np.float32)
        if depth:
            obs["depth"] = spaces.Box(0, 10.0, (self.image_size, self.image_size), np.float32)
        if segmentation:
            obs["segmentation"] = spaces.Box(-1, 2**20, (self.image_size, self.image_size), np.int32)
        self.observation_space = spaces.Dict(obs)
        self.action_space = spaces.Box(-1.0, 1.0, (7,), np.float32)
        self.scene = None
        self.steps = 0
        self.initial_z: dict[int, float] = {}
        self._expert = None
        self._succeeded = False

    # -- gymnasium API -------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        if seed is None:
            seed = int(self.np_random.integers(2**31 - 1))
        self.seed_value = int(seed)
        rng = np.random.default_rng(self.seed_value)
        self.scene = self.task.sample(rng, self.split)
        unknown = sorted(set(options or {}) - {"twin"})
        if unknown:
            raise ValueError(f"unknown reset options {unknown}; valid: twin")
        self.is_twin = bool((options or {}).get("twin", False))
        if self.is_twin:
            self.scene = self.task.twin(self.scene, self.split, twin_rng(self.seed_value))
        self.world.build(self.scene.background)
        for obj in self.scene.objects:
            obj.body = spawn(obj.spec, obj.xy, obj.yaw, self.world.client)
        self.world.settle([o.body for o in self.scene.objects])
        self.initial_z = {o.body: p.getBasePositionAndOrientation(o.body, physicsClientId=self.world.client)[0][2]
                          for o in self.scene.objects}
        self.steps = 0
        self._expert = None
        self._succeeded = False
        obs = self._obs()
        success, diag = self.task.success(self, self.scene)
        return obs, self._info(success, diag, clipped=False)

    def step(self, action) -> tuple[dict, float, bool, bool, dict]:
        if self.scene is None:
            raise RuntimeError("call reset() before step()")
        a = np.asarray(action, dtype=np.float32)
        if a.shape != (7,):
            raise ValueError(f"action must have shape (7,), got {a.shape}: {a!r}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action contains NaN or inf: {a.tolist()}")
        clipped = bool(np.any(np.abs(a) > 1.0))
        a = np.clip(a, -1.0, 1.0)
        self.world.robot.apply_action(a)
        self.world.step()
        self.steps += 1
        success, diag = self.task.success(self, self.scene)
        self._succeeded |= success
        terminated = bool(success and self.terminate_on_success)
        truncated = self.steps >= self.max_steps and not terminated
        return self._obs(), float(success), terminated, truncated, self._info(success, diag, clipped)

    def render(self) -> np.ndarray:
        """The front camera image (H, W, 3) uint8."""
        return self._front().rgb

    def close(self) -> None:
        self.world.close()

    # -- privileged access for experts, data collection and VQA --------------------------------
    def expert_action(self, noise: float = 0.0, driven: bool = False) -> np.ndarray:
        """The scripted oracle's next action for the current episode (privileged state).

        ``driven``: the arm is moved by a policy, not by these actions (DAgger labelling). The expert then
        reads its progress off the scene where it can (``WaypointExpert.sync``) and, when its plan has run
        out with the task undone, starts over from the current state instead of holding still."""
        finished = getattr(self._expert, "finished", None)  # None too for an expert that cannot say
        if driven and not self._succeeded and finished is not None and finished():
            self._expert = None
        if self._expert is None:
            from vlabench.experts import make_expert

            self._expert = make_expert(self, noise=noise, rng=np.random.default_rng(self.seed_value + 1))
            self._expert.follow_state = driven
        return self._expert.act()

    def object_poses(self) -> np.ndarray:
        """``(K, 7)`` float32 poses of the scene objects, in scene order."""
        return self.world.poses([o.body for o in self.scene.objects])

    def privileged_state(self) -> np.ndarray:
        """The low-dim privileged state ``(PRIVILEGED_DIM,)`` float32 (layout in ``PRIVILEGED_FIELDS``):
        what a policy would see if perception were solved. The ``privileged`` observation key when the
        env is built with ``privileged_state=True``; collection records it in every demo."""
        robot = self.world.robot.state()
        target = self.scene.by_role("target")
        t_pos, t_orn = p.getBasePositionAndOrientation(target.body, physicsClientId=self.world.client)
        goal = self.task.goal_position(self, self.scene)
        task = np.zeros(len(PRIVILEGED_TASKS), np.float32)
        if self.task.name in PRIVILEGED_TASKS:
            task[PRIVILEGED_TASKS.index(self.task.name)] = 1.0
        has_goal = np.array([float(goal is not None)])
        goal = np.asarray(t_pos if goal is None else goal, np.float32)
        return compose_privileged(np.asarray(robot), np.asarray(t_pos), np.asarray(t_orn), goal, has_goal, task)

    def scene_info(self) -> dict:
        """Objects with names, colours, sizes, categories, positions, kinds and front-image pixels."""
        poses = self.object_poses()
        pixels = camera.project_to_front(poses[:, :3], self.image_size, self.front_fov)
        objs = [{"name": o.spec.name, "color": o.spec.color, "size": o.spec.size,
                 "categories": list(o.spec.categories), "position": poses[i, :3].tolist(),
                 "pixel": pixels[i].tolist(), "kind": "pad" if o.role == "pad" else o.spec.kind,
                 "symbol": o.symbol, "role": o.role} for i, o in enumerate(self.scene.objects)]
        return {"objects": objs, "background": self.scene.background.name, "instruction": self.scene.instruction}

    # -- internals ----------------------------------------------------------------------------
    def _front(self, depth: bool = False, seg: bool = False) -> camera.Frame:
        bg = self.scene.background
        return camera.render(self.world.client, self.image_size, camera.front_view(), self.front_fov,
                             self.world.render_flag, depth, seg, bg.light_dir, bg.light_color,
                             self.world.scenery, cache=True)

    def _obs(self) -> dict[str, Any]:
        front = self._front(self.depth, self.segmentation)
        hand = p.getLinkState(self.world.robot.body, 8, computeForwardKinematics=True, physicsClientId=self.world.client)
        bg = self.scene.background
        wrist = camera.render(self.world.client, self.wrist_size, camera.wrist_view(np.array(hand[4]), np.array(hand[5])),
                              camera.WRIST_FOV, self.world.render_flag, False, False, bg.light_dir, bg.light_color,
                              self.world.scenery)
        obs = {"image": front.rgb, "wrist_image": wrist.rgb, "state": self.world.robot.state(),
               "instruction": self.scene.instruction}
        if self.privileged:
            obs["privileged"] = self.privileged_state()
        if self.depth:
            obs["depth"] = front.depth
        if self.segmentation:
            obs["segmentation"] = front.segmentation
        return obs

    def _info(self, success: bool, diag: dict, clipped: bool) -> dict:
        return {"success": bool(success), "success_once": bool(self._succeeded or success), "diagnostics": diag,
                "renderer": self.renderer, "task": self.task.name, "split": self.split.name, "seed": self.seed_value,
                "instruction": self.scene.instruction, "action_clipped": clipped, "steps": self.steps}

    # -- pickling: an env is rebuilt from its constructor arguments ------------------------------
    def __getstate__(self) -> dict:
        return {"kwargs": self.kwargs, "render_mode": self.render_mode}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state["kwargs"], render_mode=state["render_mode"])


def make_env(task: str, split: str | None = None, **kwargs) -> TabletopEnv:
    """A TabletopEnv without gymnasium's wrappers (faster; what the harness uses)."""
    return TabletopEnv(task=task, split=split, **kwargs)
