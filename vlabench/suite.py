"""Benchmark suites as data: ``envs/*.toml`` -> a frozen, versioned list of episodes.

A suite file names its purpose (``kind = "train"`` or ``"eval"``), a seed range, episodes per cell, the
env options, and cells (a task and the splits it is evaluated in)::

    name = "smoke"
    kind = "eval"
    seed_range = [1000000, 1000100]
    episodes_per_cell = 2
    [env]
    image_size = 128
    [[cells]]
    task = "pick"
    splits = ["seen", "paraphrase"]
    episodes = 4              # optional per-cell override

Episode identity: ``(suite, task, split, index) -> seed = seed_range[0] + index``. The seed never depends
on batch position or worker count. Collection and evaluation seeds are disjoint by construction:
train suites must draw from ``TRAIN_SEEDS`` and eval suites from ``EVAL_SEEDS``, and a file that
breaks this is refused. The manifest hash covers every episode, the env options, ``SUITE_FORMAT`` and the
simulator version (``vlabench.sim.constants.SIM_VERSION``), so results made on another simulator version
never pair with these episodes.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from vlabench.language import get_split
from vlabench.sim.world import RENDERERS
from vlabench.tasks import TASKS

SUITE_FORMAT = 1
TRAIN_SEEDS = (0, 1_000_000)
"""Half-open seed range reserved for demo collection."""
EVAL_SEEDS = (1_000_000, 2_000_000)
"""Half-open seed range reserved for evaluation."""
KINDS = {"train": TRAIN_SEEDS, "eval": EVAL_SEEDS}
ENV_OPTIONS = ("image_size", "wrist_size", "renderer", "max_steps", "depth", "segmentation", "objects", "distractors",
               "front_fov")
IMAGE_SIZES = (16, 512)
"""Camera sizes TabletopEnv accepts (inclusive; vlabench.env checks the same range, MAX_IMAGE_SIZE)."""


class SuiteError(ValueError):
    """A malformed suite file; the message names the file, the line and the field."""


@dataclass(frozen=True)
class Episode:
    """One benchmark episode."""

    task: str
    split: str
    index: int
    seed: int
    twin: bool = False
    """The episode's paired twin (``vlabench.tasks.twins``): the same seed with the split's shift undone."""

    @property
    def key(self) -> tuple:
        """(task, split, index, seed), with "twin" appended for a twin (``vlabench.eval.metrics.episode_key``)."""
        key = (self.task, self.split, self.index, self.seed)
        return (*key, "twin") if self.twin else key

    def as_dict(self) -> dict:
        """The episode as the eval workers take it."""
        out = {"task": self.task, "split": self.split, "index": self.index, "seed": self.seed}
        return {**out, "twin": True} if self.twin else out


@dataclass
class Suite:
    """A loaded suite: its episodes in a fixed order and the hash that identifies them."""

    name: str
    path: str
    kind: str
    episodes: list[Episode]
    env_kwargs: dict = field(default_factory=dict)
    manifest_hash: str = ""
    seed_range: tuple[int, int] = (0, 0)
    """Half-open range the episode seeds come from (``seed = seed_range[0] + index``)."""

    def with_twins(self) -> "Suite":
        """This suite plus the paired twin of every episode of a held-out split, each right after its
        episode; the manifest hash covers the twins."""
        episodes = [x for e in self.episodes for x in ((e,) if e.split == "seen" else (e, replace(e, twin=True)))]
        return replace(self, episodes=episodes, manifest_hash=manifest_hash(self.name, episodes, self.env_kwargs))

    def cells(self) -> list[tuple[str, str]]:
        """(task, split) cells in file order."""
        seen: dict[tuple[str, str], None] = {}
        for e in self.episodes:
            seen.setdefault((e.task, e.split), None)
        return list(seen)


def _line_of(text: str, needle: str) -> int:
    """Line of ``needle = ...`` if the file assigns it, else the first line where it appears as a word."""
    for i, line in enumerate(text.splitlines(), 1):
        if re.match(rf"\s*{re.escape(needle)}\s*=", line):
            return i
    for i, line in enumerate(text.splitlines(), 1):
        if re.search(rf"(^|[^\w]){re.escape(needle)}([^\w]|$)", line):
            return i
    return 0


def _fail(path: Path, text: str, needle: str, message: str) -> SuiteError:
    line = _line_of(text, needle)
    where = f"{path}:{line}" if line else str(path)
    return SuiteError(f"{where}: {message}")


def manifest_hash(name: str, episodes: list[Episode], env_kwargs: dict) -> str:
    """sha256 over the suite format, the simulator version, name, env options and every episode key."""
    from vlabench.sim.constants import SIM_VERSION

    payload = json.dumps({"format": SUITE_FORMAT, "sim": SIM_VERSION, "name": name, "env": env_kwargs,
                          "episodes": [e.as_dict() for e in episodes]}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def env_option_error(key: str, value: object) -> str | None:
    """Why ``value`` is not valid for the env option ``key`` (None when it is): types and ranges. The
    options that depend on the cell (objects, distractors, front_fov) are checked per cell by
    ``vlabench.env.narrow`` (see `_check_cell_env`); only their types are checked here."""
    lo, hi = IMAGE_SIZES
    if key not in ENV_OPTIONS:
        return f"unknown env option {key!r}; valid: {', '.join(ENV_OPTIONS)}"
    if key in ("image_size", "wrist_size") and not (_is_int(value) and lo <= value <= hi):
        return f"{key} must be an integer in [{lo}, {hi}], got {value!r}"
    if key == "renderer" and value not in RENDERERS:
        return f"renderer must be one of {', '.join(RENDERERS)}, got {value!r}"
    if key == "max_steps" and not (_is_int(value) and value >= 1):
        return f"max_steps must be an integer >= 1, got {value!r}"
    if key in ("depth", "segmentation") and not isinstance(value, bool):
        return f"{key} must be true or false, got {value!r}"
    if key == "objects" and not (isinstance(value, list) and value and all(isinstance(o, str) for o in value)):
        return f'objects must be a non-empty list of catalogue names, e.g. ["red ball"], got {value!r}'
    if key == "distractors" and not isinstance(value, list):
        return f"distractors must be [lo, hi] with integers 0 <= lo <= hi, got {value!r}"
    return None  # the values of distractors and front_fov: vlabench.env.narrow, per cell


def check_env_options(env: dict, source: str = "env option") -> None:
    """Raise ValueError naming the first bad option of ``env`` (make_env keyword arguments), e.g. to refuse
    command-line overrides before any worker starts. ``source`` says where the values came from."""
    for key, value in env.items():
        why = env_option_error(key, value)
        if why is not None:
            raise ValueError(f"{source} {key}={value!r}: {why}")


def _check_cell_env(path: Path, text: str, task: str, split: str, env: dict) -> None:
    """Refuse env options that no env of this cell could be built with (a misspelt object name, say) at
    load time, instead of letting every episode fail in the workers."""
    from vlabench.env import narrow

    picked = {k: env[k] for k in ("objects", "distractors", "front_fov") if k in env}
    if not picked:
        return
    try:
        narrow(get_split(split), TASKS[task], **{"objects": None, "distractors": None, **picked})
    except ValueError as e:
        key = next((k for k in picked if k in str(e)), next(iter(picked)))
        raise _fail(path, text, key, f"[env] for cell ({task}, {split}): {e}") from None


def env_kwargs_of(suite: str | Path | None, image_size: int) -> dict:
    """make_env keyword arguments for tools that render outside a suite run (imagine, vqa-gen): the
    suite file's [env] table, so frames match data collected from it, else just ``image_size``."""
    return {"image_size": image_size} if suite is None else dict(load_suite(suite).env_kwargs)


def load_suite(path: str | Path) -> Suite:
    """Parse and validate a suite file. Raises SuiteError naming file, line and field on bad input."""
    path = Path(path)
    if not path.is_file():
        raise SuiteError(f"{path}: suite file not found")
    text = path.read_text()
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SuiteError(f"{path}: not valid TOML: {e}") from None
    known = {"name", "kind", "seed_range", "episodes_per_cell", "env", "cells", "description"}
    for key in raw:
        if key not in known:
            raise _fail(path, text, key, f"unknown field {key!r}; valid: {', '.join(sorted(known))}")
    name = raw.get("name") or path.stem
    kind = raw.get("kind", "eval")
    if kind not in KINDS:
        raise _fail(path, text, "kind", f"field 'kind' must be one of {', '.join(KINDS)}, got {kind!r}")
    per_cell = raw.get("episodes_per_cell", 1)
    if not isinstance(per_cell, int) or per_cell < 1:
        raise _fail(path, text, "episodes_per_cell", f"field 'episodes_per_cell' must be a positive integer, got {per_cell!r}")
    seeds = raw.get("seed_range")
    if (not isinstance(seeds, list) or len(seeds) != 2 or not all(isinstance(s, int) for s in seeds)
            or seeds[0] < 0 or seeds[1] <= seeds[0]):
        raise _fail(path, text, "seed_range", f"field 'seed_range' must be [start, end) with 0 <= start < end, got {seeds!r}")
    lo, hi = KINDS[kind]
    if seeds[0] < lo or seeds[1] > hi:
        raise _fail(path, text, "seed_range", f"field 'seed_range' {seeds} overlaps seeds reserved for the other purpose: "
                    f"{kind} suites must stay inside [{lo}, {hi})")
    env = raw.get("env", {})
    if not isinstance(env, dict):
        raise _fail(path, text, "env", f"field 'env' must be a table ([env]), got {env!r}")
    for key, value in env.items():
        why = env_option_error(key, value)
        if why is not None:
            raise _fail(path, text, key, f"[env] field {key!r}: {why}")
    cells = raw.get("cells")
    if not isinstance(cells, list) or not cells:
        raise _fail(path, text, "cells", "needs at least one [[cells]] table with 'task' and 'splits'")
    episodes: list[Episode] = []
    seen_cells: set[tuple[str, str]] = set()
    for cell in cells:
        task = cell.get("task")
        if task not in TASKS:
            raise _fail(path, text, str(task), f"field 'task': unknown task {task!r}; known: {', '.join(TASKS)}")
        for key in cell:
            if key not in ("task", "splits", "episodes"):
                raise _fail(path, text, key, f"unknown cell field {key!r}; valid: task, splits, episodes")
        n = cell.get("episodes", per_cell)
        if not isinstance(n, int) or n < 1:
            raise _fail(path, text, "episodes", f"field 'episodes' of task {task!r} must be a positive integer, got {n!r}")
        if seeds[0] + n > seeds[1]:
            raise _fail(path, text, "seed_range", f"field 'seed_range' {seeds} holds {seeds[1] - seeds[0]} seeds, "
                        f"but task {task!r} asks for {n} episodes")
        splits = cell.get("splits", ["seen"])
        for split in splits:
            try:
                get_split(split)
            except ValueError as e:
                raise _fail(path, text, split, f"field 'splits': {e}") from None
            if split not in TASKS[task].splits:
                raise _fail(path, text, split, f"field 'splits': task {task!r} has no split {split!r}; "
                            f"its splits: {', '.join(TASKS[task].splits)}")
            if (task, split) in seen_cells:
                raise _fail(path, text, split, f"cell ({task}, {split}) appears twice")
            seen_cells.add((task, split))
            _check_cell_env(path, text, task, split, env)
            episodes += [Episode(task, split, i, seeds[0] + i) for i in range(n)]
    return Suite(name, str(path), kind, episodes, dict(env), manifest_hash(name, episodes, dict(env)),
                 (seeds[0], seeds[1]))


def example_instruction(task: str, split: str, seed: int) -> str:
    """The instruction an episode will show, from the task sampler alone (no physics)."""
    return TASKS[task].sample(np.random.default_rng(seed), get_split(split)).instruction


def describe(suite: Suite) -> str:
    """The grid of cells with episode counts and an example instruction per cell."""
    counts: dict[tuple[str, str], list[Episode]] = {}
    for e in suite.episodes:
        counts.setdefault((e.task, e.split), []).append(e)
    splits = list(dict.fromkeys(s for _, s in counts))
    tasks = list(dict.fromkeys(t for t, _ in counts))
    width = max(len(t) for t in tasks) + 2
    lines = [f"suite {suite.name} ({suite.kind}), {len(suite.episodes)} episodes, manifest {suite.manifest_hash[:12]}",
             "", " " * width + "".join(f"{s:>20}" for s in splits)]
    for t in tasks:
        lines.append(f"{t:<{width}}" + "".join(f"{len(counts.get((t, s), [])) or '-':>20}" for s in splits))
    lines += ["", "examples:"]
    for (t, s), eps in counts.items():
        lines.append(f"  {t:>10} / {s:<20} {example_instruction(t, s, eps[0].seed)!r}")
    return "\n".join(lines)
