"""VQA generation from scene_info (pure), its file format, and the generation run with a fake env."""

import re
import sys
import types

import numpy as np
import pytest

from vlabench.data import vqa as vqa_data
from vlabench.data.vqa import (KINDS, NUMBER_WORDS, VQAGenConfig, generate_vqa, generate_vqa_items, normalize_answer,
                               plural, run, write_npz)
from vlabench.eval.vqa import exact_match


def obj(name, color, y, cats=(), kind="object", symbol=None, size="small", x=0.5):
    return {"name": name, "color": color, "size": size, "categories": list(cats), "position": [x, y, 0.02],
            "kind": kind, "symbol": symbol}


# World -y is image-left for the front camera, so the order below (ascending y) is left -> right.
SCENE = {
    "objects": [
        obj("banana", "yellow", -0.20, ("fruit", "food")),
        obj("red block", "red", -0.10, ("block", "toy")),
        obj("apple", "red", 0.00, ("fruit", "food")),
        obj("green block", "green", 0.10, ("block", "toy")),
        obj("mug", "blue", 0.20, ("kitchenware", "cup"), kind="container", size="medium"),
        obj("pad", "white", -0.15, kind="pad", symbol="3", x=0.65),
        obj("pad", "white", 0.15, kind="pad", symbol="5", x=0.65),
    ],
    "background": "oak",
}
LEFT_TO_RIGHT = ["banana", "red block", "apple", "green block", "mug"]


def qa_dict(items):
    return {q: a for _, q, a in items}


def test_answers_match_scene():
    items = generate_vqa_items(SCENE, np.random.default_rng(0))
    qa = qa_dict(items)
    assert qa["what color is the banana?"] == "yellow"
    assert qa["what color is the mug?"] == "blue"
    assert "what color is the red block?" not in qa  # the answer would be in the question
    assert qa["is there a fruit on the table?"] == "yes"
    assert qa["is there a cup on the table?"] == "yes"
    assert qa["how many blocks are there?"] == "2"
    assert qa["how many fruits are there?"] == "2"
    assert qa["which object is a cup?"] == "mug"
    assert "which object is a fruit?" not in qa  # two fruits: ambiguous
    assert qa["what size is the mug?"] == "medium"
    assert qa["which digit is on the pad on the left?"] == "3"
    assert qa["which digit is on the pad on the right?"] == "5"
    present = {c for o in SCENE["objects"] for c in o["categories"]}
    for kind, q, a in items:
        assert kind in KINDS and a == a.lower() and q.endswith("?")
        m = re.fullmatch(r"is there an? (.+) on the table\?", q)
        if m:
            assert a == ("yes" if m.group(1) in present else "no")


def test_left_right_and_pad_sum_follow_image_frame():
    for seed in range(20):
        for kind, q, a in generate_vqa_items(SCENE, np.random.default_rng(seed)):
            if kind == "left_right":
                m = re.fullmatch(r"is the (.+) (left|right) of the (.+)\?", q)
                first, side, second = m.groups()
                i, j = LEFT_TO_RIGHT.index(first), LEFT_TO_RIGHT.index(second)
                assert a == ("yes" if (i < j) == (side == "left") else "no"), q
            if kind == "pad_sum":
                m = re.fullmatch(r"which pad shows (\w+) plus (\w+)\?", q)
                total = NUMBER_WORDS.index(m.group(1)) + NUMBER_WORDS.index(m.group(2))
                assert a == {3: "left", 5: "right"}[total], q


def test_image_axis_is_a_named_constant(monkeypatch):
    qa = qa_dict(generate_vqa_items(SCENE, np.random.default_rng(0)))
    monkeypatch.setattr(vqa_data, "IMAGE_LEFT_SIGN", 1.0)  # a camera facing the other way
    flipped = qa_dict(generate_vqa_items(SCENE, np.random.default_rng(0)))
    assert qa["which digit is on the pad on the left?"] == flipped["which digit is on the pad on the right?"] == "3"


def test_arithmetic_answers_are_numerals():
    seen = 0
    for seed in range(50):
        for kind, q, a in generate_vqa_items({"objects": []}, np.random.default_rng(seed)):
            if kind != "arithmetic":
                assert (kind, a) == ("category", "no")  # an empty table has nothing
                continue
            x, op, y = re.fullmatch(r"what is (\w+) (plus|minus) (\w+)\?", q).groups()
            x, y = NUMBER_WORDS.index(x), NUMBER_WORDS.index(y)
            assert a == str(x + y if op == "plus" else x - y) and 0 <= int(a) <= 9
            seen += 1
    assert seen >= 50


def test_deterministic_and_balanced():
    a = generate_vqa(SCENE, np.random.default_rng(7), max_questions=8)
    assert a == generate_vqa(SCENE, np.random.default_rng(7), max_questions=8)
    assert len(a) == 8 and all(isinstance(q, str) and isinstance(ans, str) for q, ans in a)
    kinds = [k for k, _, _ in generate_vqa_items(SCENE, np.random.default_rng(7), max_questions=8)]
    assert len(set(kinds)) == 8  # one per kind before any kind repeats


def test_small_helpers():
    assert normalize_answer(" T-Rex. ") == normalize_answer("t - rex") == "t rex"
    assert [plural(w) for w in ("block", "box", "berry", "toy", "red ball")] == ["blocks", "boxes", "berries", "toys", "red balls"]
    r = exact_match(["Yes", "3", "left"], ["yes", "4", "left"], ["category", "arithmetic", "pad_sum"])
    assert r["n"] == 3 and r["correct"] == 2 and r["per_kind"]["arithmetic"]["accuracy"] == 0.0


class _FakeEnv:
    made: list = []

    def __init__(self, task, split, **kw):
        self.unwrapped, self.size = self, kw["image_size"]
        _FakeEnv.made.append((task, split, kw))

    def reset(self, seed):
        self.seed = seed
        return {"image": np.full((self.size, self.size, 3), seed % 256, np.uint8)}, {}

    def scene_info(self):
        return SCENE

    def close(self):
        pass


def test_run_writes_npz_atomically(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "vlabench.env", types.SimpleNamespace(make_env=_FakeEnv))
    out = run(VQAGenConfig(out=str(tmp_path / "vqa" / "train.npz"), tasks=["pick", "push"], n_scenes=3,
                           questions_per_scene=5, image_size=16, seed_start=10))
    assert sorted(p.name for p in out.parent.iterdir()) == ["train.npz"]  # no temp file left
    with np.load(out, allow_pickle=False) as z:
        assert z["images"].shape == (3, 16, 16, 3) and z["images"].dtype == np.uint8
        assert z["scene_seed"].tolist() == [10, 11, 12] and z["scene_task"].tolist() == ["pick", "push", "pick"]
        assert len(z["question"]) == len(z["answer"]) == len(z["kind"]) == len(z["image_index"]) == 15
        assert z["images"][z["image_index"][-1], 0, 0, 0] == 12
    write_npz(out, {"x": np.arange(3)})  # overwrite in place
    assert np.load(out)["x"].tolist() == [0, 1, 2]


def test_task_split_entries_and_suite_env_options(tmp_path, monkeypatch):
    from vlabench.env import narrow  # load_suite checks the suite's env options with the real one

    monkeypatch.setitem(sys.modules, "vlabench.env", types.SimpleNamespace(make_env=_FakeEnv, narrow=narrow))
    monkeypatch.setattr(_FakeEnv, "made", [])
    suite = tmp_path / "s.toml"
    suite.write_text('name = "s"\nkind = "train"\nseed_range = [0, 10]\nepisodes_per_cell = 1\n'
                     '[env]\nimage_size = 24\nfront_fov = 35.0\n[[cells]]\ntask = "pick"\nsplits = ["seen"]\n')
    out = run(VQAGenConfig(out=str(tmp_path / "v.npz"), tasks=["pick", "pad:symbols"], n_scenes=2,
                           questions_per_scene=2, suite=str(suite)))
    assert [(t, s) for t, s, _ in _FakeEnv.made] == [("pick", "seen"), ("pad", "symbols")]
    assert all(kw["front_fov"] == 35.0 and kw["image_size"] == 24 for _, _, kw in _FakeEnv.made)
    with np.load(out) as z:
        assert z["images"].shape[1:3] == (24, 24) and z["scene_task"].tolist() == ["pick", "pad"]
    with pytest.raises(ValueError, match="TASK:SPLIT"):
        vqa_data.task_splits(["pad:"], "seen")


def test_zero_scenes_is_refused(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "vlabench.env", types.SimpleNamespace(make_env=_FakeEnv))
    with pytest.raises(ValueError, match="at least one scene"):
        run(VQAGenConfig(out=str(tmp_path / "v.npz"), tasks=["pick"], n_scenes=0))
    assert not (tmp_path / "v.npz").exists()
