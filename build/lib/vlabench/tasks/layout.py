"""Scene-building helpers shared by the emergent task families (next_to, pad, relational, math, category) and push."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from vlabench.language import SPLITS, Split
from vlabench.sim.objects import ObjectSpec
from vlabench.sim.pads import pad_spec
from vlabench.tasks.base import SceneObject, conflicts, distractor_pool, place, random_yaw

SEEN = SPLITS["seen"]
PAD_YAW_JITTER = 0.25
"""Pads lie roughly square to the front camera (+-0.25 rad), so their symbols read upright."""


def place_retry(rng: np.random.Generator, specs: list[ObjectSpec], attempts: int = 30, margin: float = 0.015,
                accept=None, droppable: int = 0,
                fixed: dict[int, tuple[float, float]] | None = None) -> list[tuple[float, float]]:
    """``place`` until it fits and ``accept(xys)`` (if given) holds. Every attempt draws from ``rng``, so
    the result is still a function of the seed. When ``attempts`` fail, up to ``droppable`` trailing specs
    (distractors) are dropped one at a time, so the result may be shorter than ``specs``: callers keep
    ``specs[:len(xys)]``. ``fixed`` pins leading indices as in ``place`` (never dropped: keep them
    before the droppable tail). Raises RuntimeError naming the specs when even that does not fit."""
    for n in range(len(specs), len(specs) - droppable - 1, -1):
        for _ in range(attempts):
            try:
                xys = place(rng, specs[:n], fixed=fixed, margin=margin)
            except RuntimeError:
                continue
            if accept is None or accept(xys):
                return xys
    raise RuntimeError(f"no acceptable layout for {[s.name for s in specs]} in {attempts} attempts")


def distinct_objects(rng: np.random.Generator, pool: list[ObjectSpec], n: int, taken: list[ObjectSpec] = (),
                     ok=None) -> list[ObjectSpec]:
    """``n`` objects from ``pool`` that cannot be confused by name with each other or with ``taken``
    (and satisfy ``ok(spec)`` if given). Raises RuntimeError when the pool runs dry."""
    out: list[ObjectSpec] = []
    for _ in range(n):
        options = [s for s in pool if not any(conflicts(s, t) for t in list(taken) + out) and (ok is None or ok(s))]
        if not options:
            raise RuntimeError(f"no object left in the pool after {[s.name for s in list(taken) + out]}")
        out.append(options[int(rng.integers(len(options)))])
    return out


def seen_pool(ok=None) -> list[ObjectSpec]:
    """Seen, graspable catalogue objects (the distractor pool), optionally filtered by ``ok``."""
    return [s for s in distractor_pool() if ok is None or ok(s)]


def with_distractors(split: Split, lo: int, hi: int) -> Split:
    """``split`` with its distractor range replaced (for families that need a fixed amount of clutter)."""
    return dataclasses.replace(split, distractors=(lo, hi))


def scene_objects(specs: list[ObjectSpec], roles: list[str], xys: list[tuple[float, float]],
                  rng: np.random.Generator) -> list[SceneObject]:
    """SceneObjects with random yaws for objects and near-square yaws (plus their symbol) for pads."""
    out = []
    for spec, role, xy in zip(specs, roles, xys):
        if role == "pad":
            out.append(SceneObject(spec, role, xy, float(rng.uniform(-PAD_YAW_JITTER, PAD_YAW_JITTER)),
                                   symbol=spec.extra["symbol"]))
        else:
            out.append(SceneObject(spec, role, xy, random_yaw(rng)))
    return out


def pads(symbols: list[str]) -> list[ObjectSpec]:
    """Pad specs for ``symbols`` (assets are drawn and cached on first use)."""
    return [pad_spec(s) for s in symbols]


def dist(a, b) -> float:
    """Horizontal distance between two (x, y[, z]) points."""
    return math.dist(a[:2], b[:2])
