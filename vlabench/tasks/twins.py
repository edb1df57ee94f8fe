"""Paired twins: the same episode with only its split's shift undone.

A twin starts from the scene the episode's seed samples (the same objects, poses, background and
instruction) and changes one axis back to what training saw, so that an episode and its twin differ only
in what the split tests:

- ``unseen_backgrounds``: the same scene on a seen background;
- ``unseen_colors``: every object in a held-out colour/shape pair becomes the same shape in a seen colour
  (same geometry, same pose), and the instruction names the new colour;
- ``unseen_objects``: every held-out object becomes a seen object of the same size class that fits its
  footprint, at the same pose, and the instruction names it;
- ``distractors``: the same scene without the distractors beyond the seen split's most (the first ones
  kept, in scene order);
- ``paraphrase``: the held-out phrasing re-filled into a training template with the same slots.

The reasoning splits (symbols, math, semantic, relational) are each one family's, and their twin is
defined in that family's module (``Task.twin``): the instruction that names the target directly.

Every choice a twin makes is drawn from ``twin_rng(seed)``, a stream separate from the scene's, so the
twin of an episode is the same whoever builds it.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from vlabench.language import SPLITS, Split
from vlabench.sim.library import CATALOG, HELD_OUT_COLOR_SHAPES, HELD_OUT_OBJECTS
from vlabench.sim.objects import ObjectSpec
from vlabench.tasks.base import SEEN_BACKGROUNDS, Scene, conflicts

TWIN_STREAM = 0x7717
"""Second word of the twin's RNG seed (``default_rng([seed, TWIN_STREAM])``)."""
SEEN_MAX_DISTRACTORS = SPLITS["seen"].distractors[1]
GENERIC_AXES = ("unseen_backgrounds", "unseen_colors", "unseen_objects", "distractors", "paraphrase")
"""Splits whose twin this module builds for every family; ``seen`` has none (it is its own twin)."""


def twin_rng(seed: int) -> np.random.Generator:
    """The generator of every choice the twin of episode ``seed`` makes."""
    return np.random.default_rng([int(seed), TWIN_STREAM])


def _held_out(spec: ObjectSpec) -> bool:
    return spec.name in HELD_OUT_OBJECTS or bool(spec.family and (spec.family, spec.color) in HELD_OUT_COLOR_SHAPES)


def rename(text: str, old: ObjectSpec, new: ObjectSpec) -> str:
    """``text`` with every mention of ``old`` (its name or a synonym, longest first, whole words) replaced by
    ``new``'s name, or by ``new``'s synonym of the same position."""
    words = [(old.name, new.name)] + [(s, new.synonyms[i] if i < len(new.synonyms) else new.name)
                                      for i, s in enumerate(old.synonyms)]
    for before, after in sorted(words, key=lambda w: -len(w[0])):
        text = re.sub(rf"\b{re.escape(before)}\b", after, text)
    return text


def seen_color_twin(spec: ObjectSpec, others: list[ObjectSpec], rng: np.random.Generator) -> ObjectSpec:
    """The same shape in a seen colour that no other object of the scene could be confused with."""
    options = sorted((s for s in CATALOG.values() if s.family == spec.family and s.kind == spec.kind
                      and not _held_out(s) and not any(conflicts(s, o) for o in others)), key=lambda s: s.name)
    if not options:
        raise RuntimeError(f"no seen colour of {spec.family!r} fits beside {[o.name for o in others]}")
    return options[int(rng.integers(len(options)))]


def seen_object_twin(spec: ObjectSpec, others: list[ObjectSpec], rng: np.random.Generator) -> ObjectSpec:
    """A seen object of the same size class whose footprint fits the held-out one's (the closest fits when
    none is smaller), not confusable with the other objects."""
    options = [s for s in CATALOG.values() if s.kind == spec.kind and s.size == spec.size and not _held_out(s)
               and not any(conflicts(s, o) for o in others)]
    if not options:
        raise RuntimeError(f"no seen {spec.size} object fits beside {[o.name for o in others]}")
    fits = sorted((s for s in options if s.radius <= spec.radius), key=lambda s: s.name)
    if not fits:
        return min(options, key=lambda s: (s.radius, s.name))
    return fits[int(rng.integers(len(fits)))]


def swap_objects(scene: Scene, swap, rng: np.random.Generator) -> Scene:
    """``scene`` with every held-out object replaced by ``swap(spec, others, rng)`` at its pose, and the
    instruction renamed to match."""
    objects, text = list(scene.objects), scene.instruction
    for i, obj in enumerate(objects):
        if _held_out(obj.spec):
            new = swap(obj.spec, [o.spec for j, o in enumerate(objects) if j != i], rng)
            text = rename(text, obj.spec, new)
            objects[i] = dataclasses.replace(obj, spec=new, body=-1)
    return dataclasses.replace(scene, objects=objects, instruction=text)


def _template_regex(template: str) -> re.Pattern:
    parts = re.split(r"\{(\w+)\}", template)
    pattern = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>.+?)" for i, p in enumerate(parts))
    return re.compile(pattern)


def rephrase_slots(task, text: str, phrasing: str) -> dict[str, str]:
    """The slots (``{"obj": "red block", ...}``) of an instruction of ``task`` said in ``phrasing``."""
    for template in task.templates.get(phrasing, ()):
        m = _template_regex(template).fullmatch(text)
        if m:
            return m.groupdict()
    raise RuntimeError(f"{task.name}: {text!r} matches none of its {phrasing} templates")


def rephrase(task, text: str, rng: np.random.Generator) -> str:
    """A held-out-phrased instruction of ``task`` said with one of its training templates, same slots."""
    options = task.templates["train"]
    return options[int(rng.integers(len(options)))].format(**rephrase_slots(task, text, "heldout"))


def generic_twin(task, scene: Scene, split: Split, rng: np.random.Generator) -> Scene:
    """The twin of ``scene`` for the split axes every family shares (see the module docstring)."""
    if split.name == "unseen_backgrounds":
        return dataclasses.replace(scene, background=SEEN_BACKGROUNDS[int(rng.integers(len(SEEN_BACKGROUNDS)))])
    if split.name == "unseen_colors":
        return swap_objects(scene, seen_color_twin, rng)
    if split.name == "unseen_objects":
        return swap_objects(scene, seen_object_twin, rng)
    if split.name == "distractors":
        kept, n = [], 0
        for obj in scene.objects:
            n += obj.role == "distractor"
            if obj.role != "distractor" or n <= SEEN_MAX_DISTRACTORS:
                kept.append(obj)
        goal = dict(scene.goal)
        if "pad" in goal:  # an index into the objects
            goal["pad"] = kept.index(scene.objects[goal["pad"]])
        return dataclasses.replace(scene, objects=kept, goal=goal)
    if split.name == "paraphrase":
        return dataclasses.replace(scene, instruction=rephrase(task, scene.instruction, rng))
    raise ValueError(f"split {split.name!r} has no generic twin; twins exist for {', '.join(GENERIC_AXES)} and "
                     "for the reasoning splits of their own family")
