"""Paired twins: every held-out split of every family has one, and a twin differs from its episode only on
the split's axis (same poses; the same pixels where only words change)."""

from __future__ import annotations

import numpy as np
import pytest

from vlabench.env import make_env
from vlabench.language import get_split
from vlabench.sim.library import HELD_OUT_COLOR_SHAPES, HELD_OUT_OBJECTS
from vlabench.sim.pads import HELD_OUT_SYMBOLS, symbol_phrase
from vlabench.tasks import TASKS
from vlabench.tasks.base import SEEN_BACKGROUNDS
from vlabench.tasks.pad import PadTask
from vlabench.tasks.pick import PickTask
from vlabench.tasks.twins import _template_regex, twin_rng

CELLS = [(t, s) for t, task in TASKS.items() for s in task.splits if s != "seen"]
SEEDS = range(2_000_000, 2_000_012)
INSTRUCTION_ONLY = ("paraphrase", "semantic", "relational", "math")


def _held_out(spec) -> bool:
    return spec.name in HELD_OUT_OBJECTS or (spec.family, spec.color) in HELD_OUT_COLOR_SHAPES


def _says(templates, text: str) -> bool:
    return any(_template_regex(t).fullmatch(text) for t in templates)


def _pose(o):
    return (o.role, o.xy, o.yaw)


@pytest.mark.parametrize("task,split", CELLS)
def test_twin_undoes_only_its_axis(task, split):
    fam, sp = TASKS[task], get_split(split)
    for seed in SEEDS:
        scene = fam.sample(np.random.default_rng(seed), sp)
        twin = fam.twin(scene, sp, twin_rng(seed))
        again = fam.twin(fam.sample(np.random.default_rng(seed), sp), sp, twin_rng(seed))
        assert (again.instruction, [o.spec.name for o in again.objects]) == (twin.instruction,
                                                                            [o.spec.name for o in twin.objects])
        names = lambda s: [o.spec.name for o in s.objects]  # noqa: E731
        if split != "distractors":
            assert [_pose(o) for o in twin.objects] == [_pose(o) for o in scene.objects]
        if split != "unseen_backgrounds":
            assert twin.background == scene.background
        if split == "unseen_backgrounds":
            assert scene.background not in SEEN_BACKGROUNDS and twin.background in SEEN_BACKGROUNDS
            assert (names(twin), twin.instruction) == (names(scene), scene.instruction)
        elif split in ("unseen_colors", "unseen_objects"):
            assert any(_held_out(o.spec) for o in scene.objects) and not any(_held_out(o.spec) for o in twin.objects)
            for a, b in zip(scene.objects, twin.objects):
                if a.spec.name != b.spec.name:
                    assert _held_out(a.spec)
                    assert (b.spec.family == a.spec.family) if split == "unseen_colors" else (b.spec.size == a.spec.size)
                    assert b.spec.name in twin.instruction or any(s in twin.instruction for s in b.spec.synonyms) \
                        or a.role == "distractor"
            assert twin.instruction != scene.instruction
        elif split == "distractors":
            kept = [o for o in scene.objects if o.role != "distractor"] + \
                   [o for o in scene.objects if o.role == "distractor"][:2]
            assert sorted(map(_pose, twin.objects)) == sorted(map(_pose, kept))
            assert sum(o.role == "distractor" for o in scene.objects) >= 3 > 2 >= sum(
                o.role == "distractor" for o in twin.objects)
            assert twin.instruction == scene.instruction
            if "pad" in scene.goal:
                assert twin.objects[twin.goal["pad"]].symbol == scene.objects[scene.goal["pad"]].symbol
        elif split == "symbols":
            pad = twin.objects[twin.goal["pad"]]
            assert scene.goal["symbol"] in HELD_OUT_SYMBOLS and pad.symbol == twin.goal["symbol"]
            assert not {o.symbol for o in twin.objects} & HELD_OUT_SYMBOLS
            changed = [a for a, b in zip(scene.objects, twin.objects) if a.spec.name != b.spec.name]
            assert changed and all(a.role == "pad" and a.symbol in HELD_OUT_SYMBOLS for a in changed)
            assert symbol_phrase(scene.goal["symbol"]) in scene.instruction
            assert symbol_phrase(pad.symbol) in twin.instruction and twin.instruction != scene.instruction
        else:  # the instruction alone changes: the objects are the same
            assert names(twin) == names(scene) and twin.instruction != scene.instruction
            if split == "paraphrase":
                assert _says(fam.templates["heldout"], scene.instruction) and _says(fam.templates["train"],
                                                                                   twin.instruction)
            elif split == "math":
                assert _says(PadTask.templates["train"], twin.instruction)
            else:  # semantic, relational: the target by its name
                target = twin.by_role("target").spec.name
                assert any(t.format(obj=target) == twin.instruction for t in PickTask.templates["train"])


@pytest.mark.parametrize("split", ["paraphrase", "unseen_backgrounds", "unseen_colors"])
def test_twin_episode_in_the_env(split):
    env = make_env("place", split, image_size=64, wrist_size=48, segmentation=True)
    seed = 2_000_003
    obs, _ = env.reset(seed=seed)
    twin, _ = env.reset(seed=seed, options={"twin": True})
    assert env.is_twin
    twin2, _ = env.reset(seed=seed, options={"twin": True})
    np.testing.assert_array_equal(twin["image"], twin2["image"])
    np.testing.assert_array_equal(obs["state"], twin["state"])
    if split == "paraphrase":  # only words change: the same pixels
        np.testing.assert_array_equal(obs["image"], twin["image"])
        assert obs["instruction"] != twin["instruction"]
    elif split == "unseen_backgrounds":  # the same objects where they were; only the table differs
        np.testing.assert_array_equal(obs["segmentation"], twin["segmentation"])
        assert not np.array_equal(obs["image"], twin["image"])
    else:
        assert not np.array_equal(obs["image"], twin["image"])
    with pytest.raises(ValueError, match=r"unknown reset options \['twins'\]; valid: twin"):
        env.reset(seed=seed, options={"twins": True})
    env.close()


def test_seen_has_no_twin():
    with pytest.raises(ValueError, match="has no generic twin"):
        TASKS["pick"].twin(TASKS["pick"].sample(np.random.default_rng(0), get_split("seen")), get_split("seen"),
                           twin_rng(0))
