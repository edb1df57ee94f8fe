"""move {object} to the pad with {symbol | digit | letter}: 2-4 symbol pads lie on the table.

Success (state predicate): the target's centre lies inside the named pad's square, the target rests
(within ``PAD_THICKNESS`` + 2 cm of its start height: on the pad, not hovering) and is released.

Symbols: seen scenes show only ``SEEN_SYMBOLS``; in the ``symbols`` split the named pad shows one of
``HELD_OUT_SYMBOLS`` (never on a pad in a seen scene, hence never in a seen instruction).
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pybullet as p

from vlabench.language import Split, refer
from vlabench.sim.pads import (HELD_OUT_SYMBOLS, PAD_THICKNESS, SEEN_SYMBOLS, SYMBOLS, on_pad, pad_spec, symbol_kind,
                               symbol_phrase)
from vlabench.tasks.base import Scene, background_for, choose_distractors, object_pool, pick
from vlabench.tasks.layout import pads, place_retry, scene_objects
from vlabench.tasks.registry import register_task
from vlabench.tasks.task import Task, pos, touching_gripper
from vlabench.tasks.twins import rephrase_slots

MAX_TARGET_RADIUS = 0.06
"""Targets larger than this (spoon, hammer, ...) would overhang a 9 cm pad too much."""


def goal_pad(scene: Scene):
    """The pad the instruction names."""
    return scene.objects[scene.goal["pad"]]


def pad_success(env, scene: Scene) -> tuple[bool, dict]:
    """Success of every "put the target on a pad" family (pad, math)."""
    target, pad = scene.by_role("target"), goal_pad(scene)
    t = pos(env, target)
    pad_pos, pad_orn = p.getBasePositionAndOrientation(pad.body, physicsClientId=env.world.client)
    pad_yaw = p.getEulerFromQuaternion(pad_orn)[2]
    inside = on_pad(t, np.asarray(pad_pos), pad_yaw)
    rise = float(t[2] - env.initial_z[target.body])
    resting = rise < PAD_THICKNESS + 0.02
    released = not touching_gripper(env, target)
    offset = math.dist(t[:2], pad_pos[:2])
    return bool(inside and resting and released), {"on_pad": inside, "pad_offset": offset, "resting": resting,
                                                   "released": released, "rise": rise}


@register_task
class PadTask(Task):
    name = "pad"
    gym_id = "Pad"
    max_steps = 100
    splits = ("seen", "unseen_objects", "unseen_colors", "unseen_backgrounds", "distractors", "paraphrase", "symbols")
    example = "move the apple to the pad with the star"
    templates = {
        "train": ("move the {obj} to the pad with the {symbol}", "put the {obj} on the {symbol} pad",
                  "place the {obj} on the pad showing the {symbol}"),
        "heldout": ("drop the {obj} onto the pad marked with the {symbol}", "the {obj} goes on the {symbol} pad"),
    }
    expert = "vlabench.experts.placing:PadExpert"
    order = 60

    def n_pads(self, rng: np.random.Generator, split: Split) -> int:
        # The extra clutter of the distractors split leaves room for at most three pads.
        return int(rng.integers(2, 4 if split.distractors[1] > 2 else 5))

    def choose_symbols(self, rng: np.random.Generator, split: Split) -> tuple[list[str], int, dict]:
        """(pad symbols in scene order, index of the named pad, extra goal facts for ``describe``)."""
        if split.symbols == "heldout":
            goal = pick(rng, sorted(HELD_OUT_SYMBOLS, key=SYMBOLS.index))
            pool = list(SYMBOLS)
        else:
            goal = pick(rng, list(SEEN_SYMBOLS))
            pool = list(SEEN_SYMBOLS)
        n = self.n_pads(rng, split)
        others = []
        for _ in range(n - 1):
            others.append(pick(rng, pool, exclude=[goal] + others))
        symbols = [goal] + others
        order = rng.permutation(len(symbols))
        symbols = [symbols[i] for i in order]
        return symbols, symbols.index(goal), {}

    def describe(self, rng: np.random.Generator, split: Split, target, symbol: str, facts: dict) -> str:
        return self.instruction(split.phrasing, rng, obj=refer(target.name, target.synonyms, rng),
                                symbol=symbol_phrase(symbol, rng))

    def sample(self, rng: np.random.Generator, split: Split) -> Scene:
        target = pick(rng, [s for s in object_pool(split) if s.radius <= MAX_TARGET_RADIUS])
        symbols, goal_index, facts = self.choose_symbols(rng, split)
        pad_specs = pads(symbols)
        others = choose_distractors(rng, split, [target])
        specs = [target] + pad_specs + others
        xys = place_retry(rng, specs, droppable=len(others))
        specs, others = specs[:len(xys)], others[:len(xys) - 1 - len(pad_specs)]
        roles = ["target"] + ["pad"] * len(pad_specs) + ["distractor"] * len(others)
        text = self.describe(rng, split, target, symbols[goal_index], facts)
        return Scene(scene_objects(specs, roles, xys, rng), background_for(split, rng), text,
                     {"pad": 1 + goal_index, "symbol": symbols[goal_index], **facts})

    def success(self, env, scene: Scene) -> tuple[bool, dict]:
        return pad_success(env, scene)

    def twin(self, scene: Scene, split: Split, rng: np.random.Generator) -> Scene:
        """symbols: every pad showing a held-out symbol shows a seen one instead (of the same kind where one is
        free, none shown twice), and the instruction names the named pad's new symbol (the same words
        otherwise); math: the instruction names the answer's pad by its own label, in one
        of pad's training phrasings. Other splits: the generic twin."""
        if split.name == "symbols":
            objects = list(scene.objects)
            shown = {o.symbol for o in objects if o.role == "pad"}
            for i, o in enumerate(objects):
                if o.role == "pad" and o.symbol in HELD_OUT_SYMBOLS:
                    free = [s for s in SEEN_SYMBOLS if s not in shown]
                    new = pick(rng, [s for s in free if symbol_kind(s) == symbol_kind(o.symbol)] or free)
                    shown.add(new)
                    objects[i] = dataclasses.replace(o, spec=pad_spec(new), symbol=new, body=-1)
            old, new = scene.goal["symbol"], objects[scene.goal["pad"]].symbol
            text = re.sub(rf"\b{re.escape(symbol_phrase(old))}\b", symbol_phrase(new), scene.instruction)
            return dataclasses.replace(scene, objects=objects, instruction=text, goal={**scene.goal, "symbol": new})
        if split.name == "math":
            obj = rephrase_slots(self, scene.instruction, "train")["obj"]
            direct = PadTask.templates["train"]
            text = direct[int(rng.integers(len(direct)))].format(obj=obj, symbol=symbol_phrase(scene.goal["symbol"]))
            return dataclasses.replace(scene, instruction=text)
        return super().twin(scene, split, rng)
