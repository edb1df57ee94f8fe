"""pick up {object}: lift the named object at least 5 cm off the table and hold it."""

from __future__ import annotations

import dataclasses

import numpy as np

from vlabench.language import Split, refer
from vlabench.tasks.base import (Scene, SceneObject, background_for, choose_distractors, object_pool, pick, place,
                                 random_yaw)
from vlabench.tasks.registry import register_task
from vlabench.tasks.task import Task, held, pos

LIFT = 0.05
"""Metres the target must rise above its resting height."""


@register_task
class PickTask(Task):
    name = "pick"
    gym_id = "Pick"
    max_steps = 60
    splits = ("seen", "unseen_objects", "unseen_colors", "unseen_backgrounds", "distractors", "paraphrase")
    example = "pick up the banana"
    templates = {
        "train": ("pick up the {obj}", "grab the {obj}", "lift the {obj}", "pick the {obj} up"),
        "heldout": ("raise the {obj} off the table", "could you lift up the {obj}?", "get the {obj} into the air"),
    }
    expert = "vlabench.experts.grasping:PickExpert"
    order = 10

    def target_pool(self, split: Split):
        return object_pool(split)

    def describe(self, rng: np.random.Generator, split: Split, target, others) -> str:
        return self.instruction(split.phrasing, rng, obj=refer(target.name, target.synonyms, rng))

    def sample(self, rng: np.random.Generator, split: Split) -> Scene:
        target = pick(rng, self.target_pool(split))
        others = choose_distractors(rng, split, [target])
        specs = [target] + others
        xys = place(rng, specs)
        objects = [SceneObject(s, "target" if i == 0 else "distractor", xy, random_yaw(rng))
                   for i, (s, xy) in enumerate(zip(specs, xys))]
        background = background_for(split, rng)
        return Scene(objects, background, self.describe(rng, split, target, others))

    def twin(self, scene: Scene, split: Split, rng: np.random.Generator) -> Scene:
        """For a split of the family's own (semantic, relational): the instruction that names the target
        directly, in one of pick's training phrasings; otherwise the generic twin."""
        if split.name not in ("semantic", "relational"):
            return super().twin(scene, split, rng)
        direct = PickTask.templates["train"]
        name = scene.by_role("target").spec.name
        return dataclasses.replace(scene, instruction=direct[int(rng.integers(len(direct)))].format(obj=name))

    def goal_position(self, env, scene: Scene) -> None:
        """None: a pick's goal is the lift itself (the relational family's reference is no goal either)."""
        return None

    def success(self, env, scene: Scene) -> tuple[bool, dict]:
        target = scene.by_role("target")
        lift = float(pos(env, target)[2] - env.initial_z[target.body])
        is_held = held(env, target)
        return bool(lift > LIFT and is_held), {"lift": lift, "held": is_held}
