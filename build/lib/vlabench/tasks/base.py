"""What every task family shares: scene description, object pools per split, collision-free placement."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from vlabench.language import Split
from vlabench.sim import constants as C
from vlabench.sim.library import CATALOG, HELD_OUT_COLOR_SHAPES, HELD_OUT_OBJECTS
from vlabench.sim.objects import ObjectSpec
from vlabench.sim.world import Background

SEEN_BACKGROUNDS = (
    Background("oak", (0.62, 0.47, 0.32, 1.0), texture="grain"),
    Background("gray", (0.55, 0.55, 0.57, 1.0)),
    Background("beige", (0.80, 0.74, 0.62, 1.0)),
)
UNSEEN_BACKGROUNDS = (
    Background("checker", (0.30, 0.45, 0.70, 1.0), texture="checker", light_dir=(-0.5, 0.6, 1.0)),
    Background("green felt", (0.18, 0.45, 0.25, 1.0), texture="dots", light_color=(1.0, 0.92, 0.8)),
    Background("dark slate", (0.20, 0.20, 0.24, 1.0), texture="stripes", light_dir=(0.0, 0.8, 0.6),
               light_color=(0.85, 0.9, 1.0)),
)


@dataclass
class SceneObject:
    """An object placed in a scene. ``body`` is filled in when it is spawned."""

    spec: ObjectSpec
    role: str
    """target | container | base | reference | pad | distractor."""
    xy: tuple[float, float]
    yaw: float
    body: int = -1
    symbol: str | None = None


@dataclass
class Scene:
    """A sampled episode: what to spawn, what to say and what success means."""

    objects: list[SceneObject]
    background: Background
    instruction: str
    goal: dict = field(default_factory=dict)

    def by_role(self, role: str) -> SceneObject:
        """The first object with ``role``."""
        return next(o for o in self.objects if o.role == role)


def _is_seen(spec: ObjectSpec) -> bool:
    if spec.name in HELD_OUT_OBJECTS:
        return False
    return not (spec.family and (spec.family, spec.color) in HELD_OUT_COLOR_SHAPES)


def object_pool(split: Split, graspable: bool = True, families: tuple[str, ...] | None = None) -> list[ObjectSpec]:
    """Candidate *target* objects for a split (sorted by name, so sampling is reproducible)."""
    specs = [s for s in CATALOG.values() if s.kind == "object"]
    if families is not None:
        specs = [s for s in specs if s.family in families]
    if split.objects == "unseen":
        pool = [s for s in specs if s.name in HELD_OUT_OBJECTS]
    elif split.colors == "unseen":
        pool = [s for s in specs if s.family and (s.family, s.color) in HELD_OUT_COLOR_SHAPES]
    else:
        pool = [s for s in specs if _is_seen(s)]
    if split.only:
        pool = [s for s in pool if s.name in split.only]
    return sorted(pool, key=lambda s: s.name)


def distractor_pool() -> list[ObjectSpec]:
    """Distractors always come from the seen objects, in every split."""
    return sorted((s for s in CATALOG.values() if s.kind == "object" and _is_seen(s)), key=lambda s: s.name)


def containers() -> list[ObjectSpec]:
    """Containers (bowl, plate, tray)."""
    return sorted((s for s in CATALOG.values() if s.kind == "container"), key=lambda s: s.name)


def background_for(split: Split, rng: np.random.Generator) -> Background:
    """A seen or held-out background for the split."""
    options = UNSEEN_BACKGROUNDS if split.background == "unseen" else SEEN_BACKGROUNDS
    return options[int(rng.integers(len(options)))]


def pick(rng: np.random.Generator, items: list, exclude=()) -> object:
    """A uniformly random element of ``items`` not in ``exclude``."""
    options = [x for x in items if x not in exclude]
    if not options:
        raise RuntimeError("no candidates left to sample from")
    return options[int(rng.integers(len(options)))]


def conflicts(a: ObjectSpec, b: ObjectSpec) -> bool:
    """Whether two objects could be confused by name (same name, or one's name/synonym is the other's)."""
    na = {a.name, *a.synonyms}
    nb = {b.name, *b.synonyms}
    return bool(na & nb) or a.name in b.name or b.name in a.name


def choose_distractors(rng: np.random.Generator, split: Split, taken: list[ObjectSpec],
                       avoid_categories: tuple[str, ...] = (), avoid_colors: tuple[str, ...] = ()) -> list[ObjectSpec]:
    """``split.distractors`` random distractors that cannot be confused with the objects already taken."""
    lo, hi = split.distractors
    n = int(rng.integers(lo, hi + 1))
    out: list[ObjectSpec] = []
    pool = distractor_pool()
    for _ in range(n):
        options = [s for s in pool if not any(conflicts(s, t) for t in taken + out)
                   and not set(avoid_categories) & set(s.categories) and s.color not in avoid_colors]
        if not options:
            break
        out.append(options[int(rng.integers(len(options)))])
    return out


def place(rng: np.random.Generator, specs: list[ObjectSpec], fixed: dict[int, tuple[float, float]] | None = None,
          margin: float = 0.015, max_tries: int = 400) -> list[tuple[float, float]]:
    """Collision-free (x, y) for each spec inside the object region (rejection sampling on footprints).

    ``fixed`` pins some indices to given positions. Raises RuntimeError if the scene does not fit."""
    fixed = fixed or {}
    lo, hi = C.OBJECT_REGION_LOW, C.OBJECT_REGION_HIGH
    out: list[tuple[float, float] | None] = [fixed.get(i) for i in range(len(specs))]
    order = sorted(range(len(specs)), key=lambda i: -specs[i].radius)
    for i in order:
        if out[i] is not None:
            continue
        r = specs[i].radius
        for _ in range(max_tries):
            xy = (float(rng.uniform(lo[0] + r * 0.5, hi[0] - r * 0.5)), float(rng.uniform(lo[1] + r * 0.5, hi[1] - r * 0.5)))
            if all(o is None or math.dist(xy, o) > r + specs[j].radius + margin for j, o in enumerate(out) if j != i):
                out[i] = xy
                break
        else:
            raise RuntimeError(f"could not place {specs[i].name!r} without overlap")
    return out  # type: ignore[return-value]


def random_yaw(rng: np.random.Generator) -> float:
    """A yaw in [-pi, pi)."""
    return float(rng.uniform(-math.pi, math.pi))
