"""push {object} to {region} of the table: slide a block or cylinder into a table region."""

from __future__ import annotations

import numpy as np

from vlabench.language import REGIONS, Split, refer
from vlabench.tasks.base import Scene, SceneObject, background_for, choose_distractors, object_pool, pick
from vlabench.tasks.layout import place_retry
from vlabench.tasks.registry import register_task
from vlabench.tasks.task import Task, pos

REGION_TESTS = {
    "left": lambda xy: xy[1] < -0.14,
    "right": lambda xy: xy[1] > 0.14,
    "front": lambda xy: xy[0] > 0.60,
    "back": lambda xy: xy[0] < 0.40,
}
"""Region membership of an (x, y) table position; left/right as seen from the front camera."""
REGION_GOALS = {"left": (0.5, -0.19), "right": (0.5, 0.19), "front": (0.64, 0.0), "back": (0.36, 0.0)}
"""Where the expert aims inside each region."""


@register_task
class PushTask(Task):
    name = "push"
    gym_id = "Push"
    max_steps = 100
    splits = ("seen", "unseen_colors", "unseen_backgrounds", "distractors", "paraphrase")
    example = "push the red block to the left side of the table"
    templates = {
        "train": ("push the {obj} to the {region} of the table", "slide the {obj} to the {region}",
                  "push the {obj} toward the {region}"),
        "heldout": ("nudge the {obj} over to the {region}", "shove the {obj} so it ends up at the {region}"),
    }
    expert = "vlabench.experts.pushing:PushExpert"
    order = 30

    def sample(self, rng: np.random.Generator, split: Split) -> Scene:
        target = pick(rng, object_pool(split, families=("block", "cylinder")))
        phrase = pick(rng, sorted(REGIONS))
        region = REGIONS[phrase]
        start = (float(rng.uniform(0.46, 0.54)), float(rng.uniform(-0.06, 0.06)))
        others = choose_distractors(rng, split, [target])
        specs = [target] + others
        # Keep distractors out of the target's path: they are placed away from the centre strip. Scene
        # sampling must never fail, so distractors that do not fit are dropped (the first attempt draws
        # exactly what a plain ``place`` would, so scenes that fit are unchanged).
        xys = place_retry(rng, specs, margin=0.05, droppable=len(others), fixed={0: start})
        specs = specs[:len(xys)]
        objects = [SceneObject(s, "target" if i == 0 else "distractor", xy, float(rng.uniform(-0.4, 0.4)))
                   for i, (s, xy) in enumerate(zip(specs, xys))]
        text = self.instruction(split.phrasing, rng, obj=refer(target.name, target.synonyms, rng), region=phrase)
        return Scene(objects, background_for(split, rng), text, {"region": region})

    def goal_position(self, env, scene: Scene) -> np.ndarray:
        """The point the expert aims at inside the named region, at the target's starting height."""
        target = scene.by_role("target")
        return np.array([*REGION_GOALS[scene.goal["region"]], env.initial_z[target.body]])

    def success(self, env, scene: Scene) -> tuple[bool, dict]:
        target = scene.by_role("target")
        t = pos(env, target)
        region = scene.goal["region"]
        inside = REGION_TESTS[region](t[:2])
        on_table = float(t[2] - env.initial_z[target.body]) < 0.02
        return bool(inside and on_table), {"in_region": inside, "on_table": on_table, "xy": t[:2].round(3).tolist()}
