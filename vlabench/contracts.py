"""The contracts between the parts: action and state sizes, the observation batch a policy receives,
the episode record the harness writes, the Policy protocol, and the per-slot memory every policy uses.

A policy is batched over env *slots*: the eval harness runs K envs side by side and calls ``act`` once
per control step with one row per active slot. Rows may be a subset of the slots (a slot whose episode
ended and that has no work left drops out), so a policy keys its per-env memory on
``obs_batch["slot"]``, never on the row position. :class:`SlotMemory` does that bookkeeping once.

Action: float32 in [-1, 1]^7 at 10 Hz -- dx, dy, dz (x 0.05 m), droll, dpitch, dyaw
(x 0.25 rad), gripper (< 0 open, > 0 close). State: ee xyz, ee quaternion xyzw, gripper opening (m).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TypedDict, runtime_checkable

import numpy as np

ACTION_DIM = 7
STATE_DIM = 8
PRIVILEGED_GEOMETRY_FIELDS = (("ee_pos", 3), ("ee_quat", 4), ("gripper", 1), ("target_pos", 3), ("target_quat", 4),
                              ("goal_pos", 3), ("has_goal", 1), ("target_minus_ee", 3), ("goal_minus_target", 3))
"""The fixed-size head of the privileged state's layout (``vlabench.env.PRIVILEGED_FIELDS`` appends the task
family one-hot); here so that models can name fields without importing the env."""


def privileged_slice(field: str) -> slice:
    """Where ``field`` of ``PRIVILEGED_GEOMETRY_FIELDS`` lies in the privileged state vector."""
    start = 0
    for name, n in PRIVILEGED_GEOMETRY_FIELDS:
        if name == field:
            return slice(start, start + n)
        start += n
    raise KeyError(f"unknown privileged field {field!r}; known: {', '.join(n for n, _ in PRIVILEGED_GEOMETRY_FIELDS)}")


def compose_privileged(robot: np.ndarray, target_pos: np.ndarray, target_quat: np.ndarray, goal_pos: np.ndarray,
                       has_goal: np.ndarray, task_onehot: np.ndarray) -> np.ndarray:
    """The privileged vector (float32, ``(..., P)``; layout ``PRIVILEGED_GEOMETRY_FIELDS`` + the task one-hot) from
    its measured fields, each ``(..., n)``: the proprioceptive ``robot`` state (8), the target's position and
    quaternion, the goal's position and ``has_goal`` (1). The two offsets are derived, and where ``has_goal``
    is below 0.5 the goal field is the target's own position. The env's true state and a perception model's
    estimate (vlabench.models.localizer) are both built here, so the two cannot drift apart."""
    goal = np.where(np.asarray(has_goal) >= 0.5, goal_pos, target_pos)
    return np.concatenate([robot, target_pos, target_quat, goal, has_goal, np.subtract(target_pos, robot[..., :3]),
                           goal - target_pos, task_onehot], axis=-1).astype(np.float32)


class UserError(ValueError):
    """An expected failure caused by the user's input (a bad flag, a missing file, an existing output):
    the CLI prints its message as one line and exits with 1, without a traceback."""


def parse_options(items: Sequence[str] | Mapping[str, Any]) -> dict[str, Any]:
    """``["decode=mean", ...]`` (or a mapping) -> ``{"decode": "mean"}``; UserError on an item without "="."""
    if isinstance(items, Mapping):
        return dict(items)
    out = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        if not sep or not key:
            raise UserError(f"policy option {item!r} must look like KEY=VALUE, e.g. decode=mean")
        out[key] = value
    return out


def coerce_option(default: Any, value: Any, name: str) -> Any:
    """A ``KEY=VALUE`` option's string value converted to the type of the parameter's ``default``
    (bool, int, float); other values pass through. UserError naming the option when it does not parse."""
    import inspect

    if not isinstance(value, str) or isinstance(default, str) or default is inspect.Parameter.empty or default is None:
        return value
    try:
        if isinstance(default, bool):
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(value)
            return value.lower() in ("true", "1")
        if isinstance(default, (int, float)):
            return type(default)(value)
    except ValueError:
        raise UserError(f"policy option {name}={value!r} must be a {type(default).__name__}") from None
    return value


class ObsBatch(TypedDict, total=False):
    """What ``Policy.act`` receives: n rows, one per env slot waiting for an action."""

    image: np.ndarray
    """(n, H, W, 3) uint8: front camera."""
    wrist_image: np.ndarray
    """(n, h, w, 3) uint8: wrist camera."""
    state: np.ndarray
    """(n, 8) float32: ee xyz, ee quaternion xyzw, gripper opening."""
    instruction: list[str]
    slot: np.ndarray
    """(n,) int64: env slot of each row."""
    is_first: np.ndarray
    """(n,) bool: first step of a new episode in that slot (clear its history and queues)."""
    rng_seed: np.ndarray
    """(n,) int64: a seed for the policy's own randomness, derived from the episode's identity (a one-way
    hash of task, split, index and manifest seed, :func:`policy_rng_seed`), so a stochastic policy draws the same noise for
    an episode whatever slot, worker or backend runs it, without learning which scene it is."""
    privileged: np.ndarray
    """(n, P) float32: the privileged low-dim state (vlabench.env.PRIVILEGED_FIELDS); only for policies
    whose ``obs_keys`` name it."""
    seed: np.ndarray
    """(n,) int64: episode seed. Episode metadata (seed, index, task, split) reaches only policies with
    ``needs_episode_info = True``: the seed rebuilds the scene, the split names what is being tested."""
    index: np.ndarray
    """(n,) int64: episode index within its cell (episode metadata)."""
    task: list[str]
    """(episode metadata)"""
    split: list[str]
    """(episode metadata)"""
    expert_action: np.ndarray
    """(n, 7) float32: the scripted oracle's action; only for policies with ``needs_expert = True``."""


OBSERVATION_KEYS = ("image", "wrist_image", "state", "instruction")
"""What every policy is sent by default (besides ``slot``, ``is_first`` and ``rng_seed``)."""
OPTIONAL_OBSERVATION_KEYS = ("privileged",)
"""Observation keys a policy gets only by naming them in ``obs_keys`` (the env then computes them)."""
EPISODE_INFO_KEYS = ("seed", "index", "task", "split")


def policy_rng_seed(task: str, split: str, index: int, seed: int) -> int:
    """The ``rng_seed`` of an episode: the first 63 bits of sha256("vlabench-policy-rng:TASK:SPLIT:INDEX:SEED")
    (cells of a suite may share seeds, so the seed alone does not identify an episode)."""
    import hashlib

    digest = hashlib.sha256(f"vlabench-policy-rng:{task}:{split}:{int(index)}:{int(seed)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def single_obs_batch(obs: dict, *, first: bool, seed: int, task: str, split: str,
                     expert_action: np.ndarray | None = None) -> ObsBatch:
    """A one-row :class:`ObsBatch` (slot 0) from one env's observation, for driving a policy by hand."""
    batch: ObsBatch = {"image": obs["image"][None], "wrist_image": obs["wrist_image"][None],
                       "state": obs["state"][None], "instruction": [obs["instruction"]], "slot": np.array([0]),
                       "is_first": np.array([first]), "rng_seed": np.array([policy_rng_seed(task, split, 0, seed)]),
                       "seed": np.array([seed]), "index": np.array([0]), "task": [task], "split": [split]}
    if "privileged" in obs:
        batch["privileged"] = np.asarray(obs["privileged"], np.float32)[None]
    if expert_action is not None:
        batch["expert_action"] = np.asarray(expert_action, np.float32)[None]
    return batch


class EpisodeRecord(TypedDict, total=False):
    """One line of episodes.jsonl."""

    task: str
    split: str
    index: int
    seed: int
    instruction: str
    status: str
    """ok | error (an error counts as a failure in every rate)."""
    success: bool
    """The success predicate held at some step (the headline metric, "success_once")."""
    success_step: int | None
    steps: int
    error: str | None
    renderer: str
    wall_s: float


def new_record(episode: dict) -> EpisodeRecord:
    """The record of ``episode`` (task, split, index, seed) before it has run."""
    rec: EpisodeRecord = {k: episode[k] for k in ("task", "split", "index", "seed")}  # type: ignore[assignment]
    if episode.get("twin"):
        rec["twin"] = True  # type: ignore[typeddict-unknown-key]
    rec.update(instruction="", status="ok", success=False, success_step=None, steps=0, error=None)
    return rec


@runtime_checkable
class Policy(Protocol):
    """What the eval harness drives: ``reset`` and ``act``, plus the declarations of :class:`PolicyTraits`
    as class attributes (a class that leaves one out gets its default; subclassing PolicyTraits is
    the easy way to see them)."""

    def reset(self, n_envs: int) -> None:
        """Forget everything; the next episodes run in slots 0..n_envs-1."""

    def act(self, obs_batch: ObsBatch) -> np.ndarray:
        """Actions (n, 7) float32 in [-1, 1] for the n rows of ``obs_batch``."""


class PolicyTraits:
    """What a policy declares about itself; the harness sends exactly what these ask for."""

    needs_expert: bool = False
    """Send ``expert_action`` (the scripted oracle's action, computed in the env worker)."""
    needs_episode_info: bool = False
    """Send the episode metadata ``seed``, ``index``, ``task`` and ``split`` (replay and baselines only:
    a policy under test should not know which split it is scored on)."""
    obs_keys: tuple[str, ...] = OBSERVATION_KEYS
    """Observation keys it reads; names in ``OPTIONAL_OBSERVATION_KEYS`` switch the env's extra outputs on."""
    stochastic: bool = False
    """It draws random numbers (then from generators seeded by ``rng_seed``, per slot)."""


@dataclass(frozen=True)
class Traits:
    """The resolved declarations of one policy class (defaults filled in)."""

    needs_expert: bool = False
    needs_episode_info: bool = False
    obs_keys: tuple[str, ...] = OBSERVATION_KEYS
    stochastic: bool = False

    @classmethod
    def of(cls, policy: Any) -> "Traits":
        """The traits a policy class or instance declares (ValueError for unknown observation keys)."""
        out = cls(**{f: getattr(policy, f, getattr(PolicyTraits, f)) for f in
                     ("needs_expert", "needs_episode_info", "obs_keys", "stochastic")})
        keys = tuple(out.obs_keys)
        bad = [k for k in keys if k not in OBSERVATION_KEYS + OPTIONAL_OBSERVATION_KEYS]
        if bad:
            raise ValueError(f"{getattr(policy, '__name__', type(policy).__name__)} declares unknown obs_keys {bad}; "
                             f"valid: {', '.join(OBSERVATION_KEYS + OPTIONAL_OBSERVATION_KEYS)}")
        return cls(bool(out.needs_expert), bool(out.needs_episode_info), keys, bool(out.stochastic))

    def env_kwargs(self) -> dict:
        """Env options the declared observation keys need (``{"privileged_state": True}`` or {})."""
        return {"privileged_state": True} if "privileged" in self.obs_keys else {}


@dataclass
class SlotState:
    """One slot's memory for the episode it is running."""

    history: deque
    """Recent observations or features, oldest first (``maxlen`` = the memory's ``history``)."""
    queue: deque = field(default_factory=deque)
    """Actions planned but not yet executed (action chunks)."""
    data: dict[str, Any] = field(default_factory=dict)
    """Anything else the policy keeps per episode (an RNG, a goal image, counters)."""
    fresh: bool = True
    """True on the episode's first ``act``: nothing in it comes from an earlier episode."""


class SlotMemory:
    """Per-slot memory keyed on ``obs_batch["slot"]``, cleared on ``is_first``.

    ``update(obs_batch)`` validates ``slot`` and ``is_first`` and returns each row's :class:`SlotState`;
    rows of a new episode (or a slot seen for the first time) get a fresh, empty state. Callers other
    than the harness may leave out ``slot`` (rows are then slots 0..n-1) and ``is_first``.
    """

    def __init__(self, history: int = 0) -> None:
        self.history = history
        self._states: dict[int, SlotState] = {}

    def reset(self) -> None:
        self._states = {}

    def __len__(self) -> int:
        return len(self._states)

    def __getitem__(self, slot: int) -> SlotState:
        """The memory of ``slot`` (KeyError if it has not acted since the last reset)."""
        return self._states[slot]

    def slots(self) -> list[int]:
        return sorted(self._states)

    def update(self, obs_batch: ObsBatch | dict) -> list[SlotState]:
        slots, first = batch_slots(obs_batch)
        out = []
        for slot, is_first in zip(slots.tolist(), first.tolist()):
            state = self._states.get(slot)
            if is_first or state is None:
                state = SlotState(deque(maxlen=self.history or None))
                self._states[slot] = state
            else:
                state.fresh = False
            out.append(state)
        return out


def batch_rows(obs_batch: ObsBatch | dict) -> int:
    """Number of rows n of an observation batch."""
    for key in ("slot", "instruction", "state", "image"):
        if key in obs_batch:
            return len(obs_batch[key])
    raise ValueError(f"obs_batch has none of slot, instruction, state, image; got keys {sorted(obs_batch)}")


def batch_slots(obs_batch: ObsBatch | dict) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(slot (n,) int64, is_first (n,) bool)`` of an observation batch.

    Raises ValueError for slots that are not distinct non-negative integers, or lengths that differ.
    """
    n = batch_rows(obs_batch)
    raw = obs_batch.get("slot")
    slots = np.arange(n, dtype=np.int64) if raw is None else np.asarray(raw)
    if slots.shape != (n,) or (n and not np.issubdtype(slots.dtype, np.integer)):
        raise ValueError(f"obs_batch['slot'] must be {n} integers, got {np.asarray(raw).tolist()!r}")
    slots = slots.astype(np.int64)
    if n and int(slots.min()) < 0:
        raise ValueError(f"obs_batch['slot'] must be >= 0, got {slots.tolist()}")
    if len(set(slots.tolist())) != n:
        raise ValueError(f"obs_batch['slot'] has duplicate slots: {slots.tolist()}")
    raw_first = obs_batch.get("is_first")
    first = np.zeros(n, bool) if raw_first is None else np.asarray(raw_first, dtype=bool)
    if first.shape != (n,):
        raise ValueError(f"obs_batch['is_first'] must be {n} booleans, got shape {first.shape}")
    return slots, first
