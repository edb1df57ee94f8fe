"""pick the {relation} object: the ``relational`` family. Success is pick's (lifted 5 cm and held).

Relations, all defined so that exactly one object qualifies, with margins (scenes that miss a margin
are resampled from the same RNG stream):

- ``left`` / ``right`` of the reference: horizontal position in the FRONT camera's image, i.e. the
  viewer's left/right (world -y is the viewer's left). Exactly one object lies on that side of the
  reference, by at least ``SIDE_MARGIN_PX`` (fraction of the image width) and ``SIDE_MARGIN_M`` in
  world y; every other object lies on the other side by the same margins.
- ``nearest`` to the reference: smallest horizontal centre distance; the runner-up is at least
  ``NEAREST_GAP`` further away.
- ``same_color`` as the reference: exactly one other object has the reference's colour. Only objects
  whose rendering shows their colour take part (``library.colorfast``).
- ``biggest``: the largest by volume of its parts; the referent is an enlarged primitive shape
  (``library.scaled``, x``BIG_FACTOR``) with at least ``BIG_RATIO`` times the volume of every other
  object, and the others are compact (footprint radius <= 3.5 cm).
"""

from __future__ import annotations

import numpy as np

from vlabench.language import RELATIONS, Split
from vlabench.sim.camera import project_to_front
from vlabench.sim.library import colorfast, scaled, volume
from vlabench.tasks.base import Scene, background_for, conflicts, object_pool, pick
from vlabench.tasks.layout import SEEN, dist, distinct_objects, place_retry, scene_objects, seen_pool
from vlabench.tasks.pick import PickTask
from vlabench.tasks.registry import register_task

RELATION_KEYS = tuple(RELATIONS)
SIDE_MARGIN_PX = 0.04
"""Minimum horizontal separation in the front image, as a fraction of its width (5 px at 128 px)."""
SIDE_MARGIN_M = 0.04
"""Minimum separation in world y (m) for left/right."""
NEAREST_GAP = 0.06
"""The nearest object is at least this much (m) closer to the reference than any other."""
BIG_FACTOR = 1.4
BIG_RATIO = 1.8
COMPACT_RADIUS = 0.035


def image_u(xys) -> np.ndarray:
    """Horizontal front-image coordinate in [0, 1] (0 = the viewer's left) of table points ``(N, 2)``."""
    pts = np.c_[np.asarray(xys, dtype=float), np.zeros(len(xys))]
    return project_to_front(pts, 1)[:, 0]


def side_referent(xys, side: str) -> tuple[int, int] | None:
    """(target, reference) indices for "the object to the {side} of the reference", or None if no pair
    satisfies the margins. ``side`` is "left" or "right" as the front camera sees it."""
    xys = np.asarray(xys, dtype=float)
    sign = 1.0 if side == "left" else -1.0  # flip "right" into "left"
    u, y = sign * image_u(xys), sign * xys[:, 1]
    order = np.argsort(u)
    target, ref = int(order[0]), int(order[1])
    if u[ref] - u[target] < SIDE_MARGIN_PX or y[ref] - y[target] < SIDE_MARGIN_M:
        return None
    for o in order[2:]:
        if u[o] - u[ref] < SIDE_MARGIN_PX or y[o] - y[ref] < SIDE_MARGIN_M:
            return None
    return target, ref


def nearest_referent(xys, ref: int) -> int | None:
    """Index of the object nearest ``ref`` if it is nearer than the runner-up by ``NEAREST_GAP``."""
    d = sorted((dist(xy, xys[ref]), i) for i, xy in enumerate(xys) if i != ref)
    if len(d) > 1 and d[1][0] - d[0][0] < NEAREST_GAP:
        return None
    return d[0][1]


@register_task
class RelationalTask(PickTask):
    name = "relational"
    gym_id = "Relational"
    max_steps = 60
    splits = ("relational",)
    example = "pick up the object to the left of the apple"
    # Only in its own emergent split, never in training: "train" is the phrasing set that split uses.
    templates = {"train": ("pick up the {desc}", "grab the {desc}", "lift the {desc}"), "heldout": ()}
    expert = "vlabench.experts.placing:RegraspPickExpert"
    order = 70

    def sample(self, rng: np.random.Generator, split: Split) -> Scene:
        relation = RELATION_KEYS[int(rng.integers(len(RELATION_KEYS)))]
        build = getattr(self, f"_{relation}")
        for _ in range(200):
            built = build(rng)
            if built is not None:
                break
        else:
            raise RuntimeError(f"relational: no unambiguous {relation!r} scene in 200 draws")
        specs, roles, xys = built
        options = RELATIONS[relation]
        ref = specs[roles.index("reference")].name if "reference" in roles else ""
        desc = options[int(rng.integers(len(options)))].format(ref=ref)
        text = self.instruction(split.phrasing, rng, desc=desc)
        return Scene(scene_objects(specs, roles, xys, rng), background_for(split, rng), text, {"relation": relation})

    # Each builder returns (specs, roles, xys) with the target first, or None to draw again.
    def _side(self, rng: np.random.Generator, side: str):
        specs = distinct_objects(rng, seen_pool(), int(rng.integers(3, 5)))
        xys = place_retry(rng, specs)
        found = side_referent(xys, side)
        if found is None:
            return None
        t, r = found
        rest = [i for i in range(len(specs)) if i not in found]
        order = [t, r] + rest
        return [specs[i] for i in order], ["target", "reference"] + ["distractor"] * len(rest), [xys[i] for i in order]

    def _left(self, rng: np.random.Generator):
        return self._side(rng, "left")

    def _right(self, rng: np.random.Generator):
        return self._side(rng, "right")

    def _nearest(self, rng: np.random.Generator):
        specs = distinct_objects(rng, seen_pool(), int(rng.integers(3, 5)))
        xys = place_retry(rng, specs)
        r = int(rng.integers(len(specs)))
        t = nearest_referent(xys, r)
        if t is None:
            return None
        rest = [i for i in range(len(specs)) if i not in (t, r)]
        order = [t, r] + rest
        return [specs[i] for i in order], ["target", "reference"] + ["distractor"] * len(rest), [xys[i] for i in order]

    def _same_color(self, rng: np.random.Generator):
        pool = seen_pool(colorfast)
        ref = pick(rng, pool)
        mates = [s for s in pool if s.color == ref.color and not conflicts(s, ref)]
        if not mates:
            return None
        target = pick(rng, mates)
        others = distinct_objects(rng, pool, int(rng.integers(1, 3)), [ref, target], ok=lambda s: s.color != ref.color)
        specs = [target, ref] + others
        xys = place_retry(rng, specs)
        return specs, ["target", "reference"] + ["distractor"] * len(others), xys

    def _biggest(self, rng: np.random.Generator):
        base = pick(rng, object_pool(SEEN, families=("block", "cylinder", "ball")))
        target = scaled(base, BIG_FACTOR)
        limit = volume(target) / BIG_RATIO
        # Hollow drinkware would be underestimated by its parts' volume, so it never competes for "biggest".
        others = distinct_objects(rng, seen_pool(lambda s: bool(s.parts) and s.radius <= COMPACT_RADIUS
                                                 and "drinkware" not in s.categories and volume(s) <= limit),
                                  int(rng.integers(2, 4)), [target])
        specs = [target] + others
        xys = place_retry(rng, specs)
        return specs, ["target"] + ["distractor"] * len(others), xys
