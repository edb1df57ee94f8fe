"""pick up the {category}: the ``category`` family (``semantic`` split). Success is pick's.

The instruction refers to the target only through a category phrase ("the fruit", "the extinct
animal", "something you can drink from"; ``language.CATEGORY_PHRASES`` maps each phrase to a catalogue
category). Exactly one object in the scene has that category: distractors are drawn among seen
objects without it. Targets are seen objects, so only the way of referring to them is new.
"""

from __future__ import annotations

import numpy as np

from vlabench.language import CATEGORY_PHRASES, Split
from vlabench.tasks.base import Scene, background_for, choose_distractors, pick
from vlabench.tasks.layout import place_retry, scene_objects, seen_pool, with_distractors
from vlabench.tasks.pick import PickTask
from vlabench.tasks.registry import register_task

DISTRACTORS = (2, 3)
"""More clutter than pick's 1-2: a category reference only means something among other objects."""


def members(category: str) -> list:
    """Seen objects of ``category`` (sorted by name)."""
    return seen_pool(lambda s: category in s.categories)


def usable_phrases() -> list[str]:
    """Category phrases with at least one seen member, in declaration order."""
    return [ph for ph, cat in CATEGORY_PHRASES.items() if members(cat)]


@register_task
class CategoryTask(PickTask):
    name = "category"
    gym_id = "Category"
    max_steps = 60
    splits = ("semantic",)
    example = "pick up something you can drink from"
    # Only in its own emergent split, never in training: "train" is the phrasing set that split uses.
    templates = {"train": ("pick up {cat}", "grab {cat}", "lift {cat}"), "heldout": ()}
    expert = "vlabench.experts.placing:RegraspPickExpert"
    order = 90

    def sample(self, rng: np.random.Generator, split: Split) -> Scene:
        phrase = pick(rng, usable_phrases())
        category = CATEGORY_PHRASES[phrase]
        target = pick(rng, members(category))
        others = choose_distractors(rng, with_distractors(split, *DISTRACTORS), [target], avoid_categories=(category,))
        specs = [target] + others
        xys = place_retry(rng, specs, droppable=len(others) - 1)
        specs, others = specs[:len(xys)], others[:len(xys) - 1]
        roles = ["target"] + ["distractor"] * len(others)
        text = self.instruction(split.phrasing, rng, cat=phrase)
        return Scene(scene_objects(specs, roles, xys, rng), background_for(split, rng), text, {"category": category})
