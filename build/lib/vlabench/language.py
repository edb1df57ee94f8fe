"""Instruction templates, synonyms, category references and the split definitions.

Phrasings come in two disjoint sets per task: ``train`` (used for demos and the seen split) and
``heldout`` (only in the ``paraphrase`` split). Each task family declares its own in its module
(``Task.templates``); registering it records them in ``TEMPLATES`` after checking that no held-out
template is a train template. Templates are filled deterministically from the episode's RNG.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {}
"""Task name -> {"train": phrasings, "heldout": phrasings}. Each family declares its own (``Task.templates``
in its module); registering the family adds them here through ``add_templates``. Read-only elsewhere."""


def check_templates(task: str, templates: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
    """``task``'s phrasings as {"train": (...), "heldout": (...)}; ValueError unless both are tuples of
    strings, train non-empty, and no held-out phrasing equals a train one."""
    if not isinstance(templates, Mapping) or set(templates) != {"train", "heldout"}:
        keys = sorted(templates) if isinstance(templates, Mapping) else type(templates).__name__
        raise ValueError(f"templates of task {task!r} must have exactly the keys 'train' and 'heldout', got {keys}")
    out = {}
    for phrasing in ("train", "heldout"):
        seq = templates[phrasing]
        if isinstance(seq, str) or not all(isinstance(t, str) and t for t in seq):
            raise ValueError(f"{phrasing} templates of task {task!r} must be a tuple of non-empty strings, got {seq!r}")
        out[phrasing] = tuple(seq)
    if not out["train"]:
        raise ValueError(f"task {task!r} needs at least one train template")
    shared = set(out["train"]) & set(out["heldout"])
    if shared:
        raise ValueError(f"held-out templates of task {task!r} repeat train templates: {sorted(shared)}")
    return out


def add_templates(task: str, templates: Mapping[str, Sequence[str]]) -> None:
    """Record ``task``'s phrasings (checked by ``check_templates``) in ``TEMPLATES``."""
    TEMPLATES[task] = check_templates(task, templates)


RELATIONS: dict[str, tuple[str, ...]] = {
    "left": ("object to the left of the {ref}", "object left of the {ref}"),
    "right": ("object to the right of the {ref}", "object right of the {ref}"),
    "nearest": ("object nearest to the {ref}", "object closest to the {ref}"),
    "same_color": ("object with the same color as the {ref}", "object that has the same color as the {ref}"),
    "biggest": ("biggest object", "largest object"),
}
"""Relation key -> phrasings of the referring expression (relational family). Left/right: the front camera's."""

EXPRESSIONS: dict[str, tuple[str, ...]] = {
    "add": ("the sum of {a} and {b}", "{a} plus {b}"),
    "sub": ("{a} minus {b}", "the difference between {a} and {b}"),
    "mul": ("{a} times {b}", "the product of {a} and {b}"),
    "div": ("{a} divided by {b}",),
}
"""Arithmetic phrasings of a digit (math family); operands are written as numerals or number words."""

CATEGORY_PHRASES: dict[str, str] = {
    "the fruit": "fruit",
    "the vegetable": "vegetable",
    "the extinct animal": "extinct animal",
    "something you can drink from": "drinkware",
    "the tool": "tool",
    "the bird": "bird",
    "the stuffed animal": "stuffed animal",
    "the game piece": "game piece",
    "the citrus fruit": "citrus",
    "the berry": "berry",
    "something to eat": "food",
}
"""Category reference -> catalogue category (category family, ``semantic`` split)."""

REGIONS = {"left side": "left", "right side": "right", "front": "front", "back": "back"}
"""Push targets: phrase -> region key. Left/right are the front camera's (the viewer's) left and right."""

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@dataclass(frozen=True)
class Split:
    """How a split changes scene sampling and language."""

    name: str
    objects: str = "seen"
    """seen | unseen: pool the target object is drawn from."""
    colors: str = "seen"
    """seen | unseen: colour/shape pairs for procedural targets."""
    background: str = "seen"
    """seen | unseen: table texture, colour and lighting."""
    distractors: tuple[int, int] = (1, 2)
    """Inclusive range of distractor objects."""
    phrasing: str = "train"
    """train | heldout instruction templates."""
    symbols: str = "seen"
    """seen | heldout symbol pads (pad tasks)."""
    only: tuple[str, ...] = ()
    """If set, target objects are restricted to these catalogue names (the env option ``objects``)."""


SPLITS: dict[str, Split] = {
    "seen": Split("seen"),
    "unseen_objects": Split("unseen_objects", objects="unseen"),
    "unseen_colors": Split("unseen_colors", colors="unseen"),
    "unseen_backgrounds": Split("unseen_backgrounds", background="unseen"),
    "distractors": Split("distractors", distractors=(4, 5)),
    "paraphrase": Split("paraphrase", phrasing="heldout"),
    "symbols": Split("symbols", symbols="heldout"),
    "math": Split("math"),
    "semantic": Split("semantic"),
    "relational": Split("relational"),
}


def get_split(name: str) -> Split:
    """A split by name; raises ValueError listing the valid names."""
    if name not in SPLITS:
        raise ValueError(f"unknown split {name!r}; valid: {', '.join(SPLITS)}")
    return SPLITS[name]


def fill(options: Sequence[str], rng: np.random.Generator, **slots: str) -> str:
    """One of ``options``, drawn with a single ``rng.integers`` call, formatted with ``slots``."""
    if not options:
        raise ValueError("no templates to choose from")
    return options[int(rng.integers(len(options)))].format(**slots)


def instruction(task: str, phrasing: str, rng: np.random.Generator, **slots: str) -> str:
    """Fill a random template of ``task`` from the ``phrasing`` set (train | heldout) with ``slots``.
    The same as ``TASKS[task].instruction(...)``, for callers that only hold the name."""
    if task not in TEMPLATES:
        raise ValueError(f"no templates for task {task!r}; known: {', '.join(TEMPLATES)} (import vlabench.tasks "
                         "registers the shipped families)")
    if phrasing not in TEMPLATES[task]:
        raise ValueError(f"unknown phrasing {phrasing!r}; valid: train, heldout")
    return fill(TEMPLATES[task][phrasing], rng, **slots)


def refer(name: str, synonyms: tuple[str, ...], rng: np.random.Generator, p_synonym: float = 0.25) -> str:
    """The object's name, or now and then one of its synonyms."""
    if synonyms and rng.random() < p_synonym:
        return synonyms[int(rng.integers(len(synonyms)))]
    return name
