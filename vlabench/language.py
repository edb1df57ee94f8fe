"""Instruction templates, synonyms, category references and the split definitions.

Phrasings come in two disjoint sets per task: ``train`` (used for demos and the seen split) and
``heldout`` (only in the ``paraphrase`` split). Tests check that no held-out template is ever a train
template and that templates are filled deterministically from the episode's RNG.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    "pick": {
        "train": ("pick up the {obj}", "grab the {obj}", "lift the {obj}", "pick the {obj} up"),
        "heldout": ("raise the {obj} off the table", "could you lift up the {obj}?", "get the {obj} into the air"),
    },
    "place": {
        "train": ("put the {obj} in the {container}", "place the {obj} in the {container}",
                  "move the {obj} into the {container}"),
        "heldout": ("drop the {obj} into the {container}", "the {obj} belongs in the {container}, put it there"),
    },
    "push": {
        "train": ("push the {obj} to the {region} of the table", "slide the {obj} to the {region}",
                  "push the {obj} toward the {region}"),
        "heldout": ("nudge the {obj} over to the {region}", "shove the {obj} so it ends up at the {region}"),
    },
    "stack": {
        "train": ("stack the {obj} on the {base}", "put the {obj} on top of the {base}", "place the {obj} on the {base}"),
        "heldout": ("build a tower with the {obj} above the {base}", "set the {obj} down onto the {base}"),
    },
    "next_to": {
        "train": ("move the {obj} next to the {ref}", "put the {obj} beside the {ref}", "place the {obj} near the {ref}"),
        "heldout": ("bring the {obj} close to the {ref}", "the {obj} should sit right by the {ref}"),
    },
    "pad": {
        "train": ("move the {obj} to the pad with the {symbol}", "put the {obj} on the {symbol} pad",
                  "place the {obj} on the pad showing the {symbol}"),
        "heldout": ("drop the {obj} onto the pad marked with the {symbol}", "the {obj} goes on the {symbol} pad"),
    },
    # The three reasoning families below exist only in their emergent split (relational, math, semantic),
    # never in training; "train" is simply the phrasing set those splits use, "heldout" stays empty.
    "relational": {
        "train": ("pick up the {desc}", "grab the {desc}", "lift the {desc}"),
        "heldout": (),
    },
    "math": {
        "train": ("put the {obj} on the pad showing {expr}", "place the {obj} on the pad with {expr}",
                  "move the {obj} to the pad that shows {expr}"),
        "heldout": (),
    },
    "category": {
        "train": ("pick up {cat}", "grab {cat}", "lift {cat}"),
        "heldout": (),
    },
}

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


def instruction(task: str, phrasing: str, rng: np.random.Generator, **slots: str) -> str:
    """Fill a random template of ``task`` from the ``phrasing`` set with ``slots``."""
    options = TEMPLATES[task][phrasing]
    return options[int(rng.integers(len(options)))].format(**slots)


def refer(name: str, synonyms: tuple[str, ...], rng: np.random.Generator, p_synonym: float = 0.25) -> str:
    """The object's name, or now and then one of its synonyms."""
    if synonyms and rng.random() < p_synonym:
        return synonyms[int(rng.integers(len(synonyms)))]
    return name
