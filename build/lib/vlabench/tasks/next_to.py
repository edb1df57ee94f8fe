"""move {object} next to {object}: set the target down on the table beside a reference object.

Success (state predicate): the target is released, rests on the table (within 2 cm of its start height),
its centre lies within ``r_target + r_reference + NEAR_SLACK`` of the reference's centre (the footprint
radii of the catalogue), and the reference has not been pushed more than ``REF_MOVE_LIMIT``.
"""

from __future__ import annotations

import math

import numpy as np

from vlabench.language import Split, refer
from vlabench.sim import constants as C
from vlabench.tasks.base import Scene, background_for, choose_distractors, conflicts, object_pool, pick
from vlabench.tasks.layout import SEEN, dist, place_retry, scene_objects
from vlabench.tasks.registry import register_task
from vlabench.tasks.task import Task, pos, touching_gripper

NEAR_SLACK = 0.04
"""Allowed gap (m) between the two footprints for "next to"."""
REF_MOVE_LIMIT = 0.03
"""The reference may not be pushed further than this (m)."""
START_GAP = 0.06
"""At reset the target is at least this much (m) beyond the success distance, so no episode starts solved."""
SPOT_GAP = 0.012
"""Gap (m) between footprints where the expert sets the target down."""
SPOT_LOW = (C.OBJECT_REGION_LOW[0] - 0.02, C.OBJECT_REGION_LOW[1] - 0.04)
SPOT_HIGH = (C.OBJECT_REGION_HIGH[0] + 0.02, C.OBJECT_REGION_HIGH[1] + 0.04)
"""Where a set-down spot may lie: the object region, a little enlarged (still well inside the workspace)."""


def near_distance(target_spec, ref_spec) -> float:
    """The centre distance (m) below which the target counts as next to the reference."""
    return target_spec.radius + ref_spec.radius + NEAR_SLACK


def free_spot(ref_xy, ref_spec, target_spec, others: list[tuple[np.ndarray, float]], prefer) -> np.ndarray | None:
    """A point beside the reference where the target's footprint touches nothing (``others`` are (xy,
    radius) of every other object), inside the set-down area; of the candidates on a ring around the
    reference, the one nearest ``prefer``. None if the ring is blocked."""
    d = ref_spec.radius + target_spec.radius + SPOT_GAP
    best, best_cost = None, math.inf
    for k in range(24):
        a = 2 * math.pi * k / 24
        xy = np.array([ref_xy[0] + d * math.cos(a), ref_xy[1] + d * math.sin(a)])
        if not (SPOT_LOW[0] <= xy[0] <= SPOT_HIGH[0] and SPOT_LOW[1] <= xy[1] <= SPOT_HIGH[1]):
            continue
        if any(dist(xy, o) < target_spec.radius + r + 0.012 for o, r in others):
            continue
        cost = dist(xy, prefer)
        if cost < best_cost:
            best, best_cost = xy, cost
    return best


@register_task
class NextToTask(Task):
    name = "next_to"
    gym_id = "NextTo"
    max_steps = 100
    splits = ("seen", "unseen_objects", "unseen_colors", "unseen_backgrounds", "distractors", "paraphrase")
    example = "move the apple next to the blue block"
    templates = {
        "train": ("move the {obj} next to the {ref}", "put the {obj} beside the {ref}",
                  "place the {obj} near the {ref}"),
        "heldout": ("bring the {obj} close to the {ref}", "the {obj} should sit right by the {ref}"),
    }
    expert = "vlabench.experts.placing:NextToExpert"
    order = 50

    def sample(self, rng: np.random.Generator, split: Split) -> Scene:
        target = pick(rng, object_pool(split))
        # The reference always comes from the seen objects: a split varies the object being moved.
        ref = pick(rng, [s for s in object_pool(SEEN) if not conflicts(s, target)])
        others = choose_distractors(rng, split, [target, ref])
        specs = [target, ref] + others

        def accept(xys):
            if dist(xys[0], xys[1]) < near_distance(target, ref) + START_GAP:
                return False
            rest = [(np.asarray(xy), s.radius) for s, xy in zip(specs[2:], xys[2:])]
            return free_spot(xys[1], ref, target, rest, xys[0]) is not None

        xys = place_retry(rng, specs, accept=accept, droppable=len(others))
        specs, others = specs[:len(xys)], others[:len(xys) - 2]
        roles = ["target", "reference"] + ["distractor"] * len(others)
        text = self.instruction(split.phrasing, rng, obj=refer(target.name, target.synonyms, rng),
                                ref=refer(ref.name, ref.synonyms, rng))
        return Scene(scene_objects(specs, roles, xys, rng), background_for(split, rng), text)

    def success(self, env, scene: Scene) -> tuple[bool, dict]:
        target, ref = scene.by_role("target"), scene.by_role("reference")
        t, r = pos(env, target), pos(env, ref)
        d = dist(t, r)
        near = d < near_distance(target.spec, ref.spec)
        on_table = float(t[2] - env.initial_z[target.body]) < 0.02
        released = not touching_gripper(env, target)
        # The env evaluates success once right after spawning (in reset), before any action: that first
        # call records the reference's settled base position (mesh bases are not at the sampled xy).
        start = scene.goal.setdefault("ref_start", r[:2].tolist())
        ref_moved = dist(r, start)
        still = ref_moved < REF_MOVE_LIMIT
        return bool(near and on_table and released and still), {
            "distance": d, "near": near, "on_table": on_table, "released": released, "ref_moved": ref_moved}
