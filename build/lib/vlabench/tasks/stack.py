"""stack {object} on {object}: one block rests centred on top of another, released."""

from __future__ import annotations

import numpy as np

from vlabench.language import Split, refer
from vlabench.tasks.base import (Scene, SceneObject, background_for, choose_distractors, object_pool, pick, place,
                                 random_yaw)
from vlabench.tasks.registry import register_task
from vlabench.tasks.task import Task, pos, touching_gripper, xy_dist


@register_task
class StackTask(Task):
    name = "stack"
    gym_id = "Stack"
    max_steps = 100
    splits = ("seen", "unseen_colors", "unseen_backgrounds", "distractors", "paraphrase")
    example = "stack the red block on the blue block"
    templates = {
        "train": ("stack the {obj} on the {base}", "put the {obj} on top of the {base}",
                  "place the {obj} on the {base}"),
        "heldout": ("build a tower with the {obj} above the {base}", "set the {obj} down onto the {base}"),
    }
    expert = "vlabench.experts.grasping:StackExpert"
    order = 40

    def sample(self, rng: np.random.Generator, split: Split) -> Scene:
        top = pick(rng, object_pool(split, families=("block",)))
        base = pick(rng, object_pool(type(split)("seen"), families=("block",)), exclude=[top])
        while base.color == top.color:
            base = pick(rng, object_pool(type(split)("seen"), families=("block",)), exclude=[top])
        others = choose_distractors(rng, split, [top, base], avoid_colors=(top.color, base.color))
        specs = [top, base] + others
        xys = place(rng, specs)
        roles = ["target", "base"] + ["distractor"] * len(others)
        objects = [SceneObject(s, r, xy, random_yaw(rng)) for s, r, xy in zip(specs, roles, xys)]
        text = self.instruction(split.phrasing, rng, obj=refer(top.name, top.synonyms, rng),
                                base=refer(base.name, base.synonyms, rng))
        return Scene(objects, background_for(split, rng), text)

    def success(self, env, scene: Scene) -> tuple[bool, dict]:
        top, base = scene.by_role("target"), scene.by_role("base")
        t, b = pos(env, top), pos(env, base)
        dz = float(t[2] - b[2])
        aligned = xy_dist(t, b) < 0.025
        on_top = abs(dz - base.spec.height) < 0.015
        released = not touching_gripper(env, top)
        return bool(aligned and on_top and released), {"xy_dist": xy_dist(t, b), "dz": dz, "released": released}
