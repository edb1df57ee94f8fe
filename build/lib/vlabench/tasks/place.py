"""put {object} in/on {container}: the object rests inside the container's footprint, released."""

from __future__ import annotations

import numpy as np

from vlabench.language import Split, refer
from vlabench.tasks.base import (Scene, SceneObject, background_for, choose_distractors, containers, object_pool,
                                 pick, place, random_yaw)
from vlabench.tasks.registry import register_task
from vlabench.tasks.task import Task, pos, touching_gripper, xy_dist


@register_task
class PlaceTask(Task):
    name = "place"
    gym_id = "Place"
    max_steps = 100
    splits = ("seen", "unseen_objects", "unseen_colors", "unseen_backgrounds", "distractors", "paraphrase")
    example = "put the apple in the bowl"
    templates = {
        "train": ("put the {obj} in the {container}", "place the {obj} in the {container}",
                  "move the {obj} into the {container}"),
        "heldout": ("drop the {obj} into the {container}", "the {obj} belongs in the {container}, put it there"),
    }
    expert = "vlabench.experts.grasping:PlaceExpert"
    order = 20

    def sample(self, rng: np.random.Generator, split: Split) -> Scene:
        target = pick(rng, [s for s in object_pool(split) if s.radius <= 0.06])
        container = pick(rng, containers())
        others = choose_distractors(rng, split, [target, container])
        specs = [target, container] + others
        xys = place(rng, specs)
        roles = ["target", "container"] + ["distractor"] * len(others)
        objects = [SceneObject(s, r, xy, random_yaw(rng)) for s, r, xy in zip(specs, roles, xys)]
        text = self.instruction(split.phrasing, rng, obj=refer(target.name, target.synonyms, rng),
                                container=container.name)
        return Scene(objects, background_for(split, rng), text)

    def success(self, env, scene: Scene) -> tuple[bool, dict]:
        target, container = scene.by_role("target"), scene.by_role("container")
        t, c = pos(env, target), pos(env, container)
        dist = xy_dist(t, c)
        inside = dist < container.spec.radius * 0.8
        low = float(t[2] - c[2]) < container.spec.height + 0.03
        released = not touching_gripper(env, target)
        return bool(inside and low and released), {"xy_dist": dist, "inside": inside, "resting": low,
                                                   "released": released}
