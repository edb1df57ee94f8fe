"""Emergent-generalization splits, proven from the samplers alone (no physics): disjointness of seen and
held-out objects, colours, backgrounds, phrasings and symbols; math and relational referents; suite files."""

import re
from pathlib import Path

import numpy as np
import pytest

from vlabench.language import CATEGORY_PHRASES, NUMBER_WORDS, TEMPLATES, get_split
from vlabench.sim.camera import project_to_front
from vlabench.sim.library import CATALOG, HELD_OUT_COLOR_SHAPES, HELD_OUT_OBJECTS, volume
from vlabench.sim.pads import HELD_OUT_SYMBOLS, SEEN_SYMBOLS, symbol_phrase
from vlabench.suite import SuiteError, load_suite
from vlabench.tasks import TASKS
from vlabench.tasks.arithmetic import evaluate, operand_pairs
from vlabench.tasks.base import SEEN_BACKGROUNDS, UNSEEN_BACKGROUNDS
from vlabench.tasks.relational import BIG_RATIO, NEAREST_GAP

ROOT = Path(__file__).resolve().parents[2]
N_SEEDS = 300
SEEN_TASKS = [t for t, task in TASKS.items() if "seen" in task.splits]
SEEN_BG = {b.name for b in SEEN_BACKGROUNDS}


def scenes(task: str, split: str, n: int = N_SEEDS, start: int = 0):
    for seed in range(start, start + n):
        yield seed, TASKS[task].sample(np.random.default_rng(seed), get_split(split))


def held_out_symbol_patterns() -> list[re.Pattern]:
    return [re.compile(rf"\b{re.escape(symbol_phrase(s))}\b") for s in HELD_OUT_SYMBOLS]


def template_regex(template: str) -> re.Pattern:
    parts = re.split(r"\{\w+\}", template)
    return re.compile("^" + ".+".join(re.escape(p) for p in parts) + "$")


# -- seen never shows anything held out --------------------------------------------------------------
@pytest.mark.parametrize("task", SEEN_TASKS)
def test_seen_scenes_hold_nothing_held_out(task):
    symbols = held_out_symbol_patterns()
    for seed, scene in scenes(task, "seen"):
        assert scene.background.name in SEEN_BG, (seed, scene.background.name)
        for o in scene.objects:
            assert o.spec.name not in HELD_OUT_OBJECTS, (seed, o.spec.name)
            assert (o.spec.family, o.spec.color) not in HELD_OUT_COLOR_SHAPES, (seed, o.spec.name)
            assert o.symbol is None or o.symbol not in HELD_OUT_SYMBOLS, (seed, o.symbol)
        assert not any(p.search(scene.instruction) for p in symbols), (seed, scene.instruction)
        for phrasing in TEMPLATES[task]["heldout"]:
            assert not template_regex(phrasing).match(scene.instruction), (seed, scene.instruction)


@pytest.mark.parametrize("task, split", [("relational", "relational"), ("math", "math"), ("category", "semantic")])
def test_reasoning_splits_use_only_seen_objects_and_backgrounds(task, split):
    # Only the reasoning is new in these splits; objects, backgrounds and symbols are all seen ones.
    for seed, scene in scenes(task, split, 150):
        assert scene.background.name in SEEN_BG
        for o in scene.objects:
            assert o.spec.name.removeprefix("big ") not in HELD_OUT_OBJECTS, (seed, o.spec.name)
            assert (o.spec.family, o.spec.color) not in HELD_OUT_COLOR_SHAPES, (seed, o.spec.name)
            assert o.symbol is None or o.symbol in SEEN_SYMBOLS


@pytest.mark.parametrize("task", [t for t, x in TASKS.items() if "unseen_objects" in x.splits])
def test_unseen_objects_split_targets_a_held_out_object(task):
    for seed, scene in scenes(task, "unseen_objects", 100):
        assert scene.by_role("target").spec.name in HELD_OUT_OBJECTS, seed


@pytest.mark.parametrize("task", [t for t, x in TASKS.items() if "unseen_colors" in x.splits])
def test_unseen_colors_split_targets_a_held_out_pair(task):
    for seed, scene in scenes(task, "unseen_colors", 100):
        t = scene.by_role("target").spec
        assert (t.family, t.color) in HELD_OUT_COLOR_SHAPES, (seed, t.name)


@pytest.mark.parametrize("task", [t for t, x in TASKS.items() if "unseen_backgrounds" in x.splits])
def test_unseen_backgrounds_are_never_seen_ones(task):
    unseen = {b.name for b in UNSEEN_BACKGROUNDS}
    assert not unseen & SEEN_BG
    for seed, scene in scenes(task, "unseen_backgrounds", 100):
        assert scene.background.name in unseen, seed


# -- phrasings ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("task", list(TEMPLATES))
def test_heldout_templates_are_not_train_templates(task):
    train, heldout = set(TEMPLATES[task]["train"]), set(TEMPLATES[task]["heldout"])
    assert train and not train & heldout


@pytest.mark.parametrize("task", [t for t, x in TASKS.items() if "paraphrase" in x.splits])
def test_paraphrase_instructions_never_match_a_train_template(task):
    # Stronger than comparing strings: no paraphrase instruction fits ANY train template, whatever the slots.
    train = [template_regex(t) for t in TEMPLATES[task]["train"]]
    for seed, scene in scenes(task, "paraphrase", 200):
        assert not any(r.match(scene.instruction) for r in train), (seed, scene.instruction)


# -- symbols -----------------------------------------------------------------------------------------
def test_symbols_split_names_a_held_out_symbol_never_said_in_training():
    patterns = held_out_symbol_patterns()
    for seed, scene in scenes("pad", "symbols", 200):
        assert scene.goal["symbol"] in HELD_OUT_SYMBOLS
        assert any(p.search(scene.instruction) for p in patterns), (seed, scene.instruction)
    assert HELD_OUT_SYMBOLS and not HELD_OUT_SYMBOLS & set(SEEN_SYMBOLS)


def test_pad_scenes_have_distinct_pads_and_name_one():
    for seed, scene in scenes("pad", "seen", 200):
        pads = [o for o in scene.objects if o.role == "pad"]
        assert 2 <= len(pads) <= 4 and len({o.symbol for o in pads}) == len(pads)
        assert scene.objects[scene.goal["pad"]].symbol == scene.goal["symbol"]


# -- math --------------------------------------------------------------------------------------------
WORD = {w: i for i, w in enumerate(NUMBER_WORDS)}
PARSERS = [(re.compile(r"the sum of (\w+) and (\w+)"), "add"), (re.compile(r"(\w+) plus (\w+)"), "add"),
           (re.compile(r"the difference between (\w+) and (\w+)"), "sub"), (re.compile(r"(\w+) minus (\w+)"), "sub"),
           (re.compile(r"the product of (\w+) and (\w+)"), "mul"), (re.compile(r"(\w+) times (\w+)"), "mul"),
           (re.compile(r"(\w+) divided by (\w+)"), "div")]


def parse_math(text: str) -> int:
    for rx, op in PARSERS:
        m = rx.search(text)
        if m:
            a, b = (int(x) if x.isdigit() else WORD[x] for x in m.groups())
            return evaluate(op, a, b)
    raise AssertionError(f"no arithmetic expression in {text!r}")


def test_math_instructions_hide_the_answer_and_it_is_on_exactly_one_pad():
    answers = set()
    for seed, scene in scenes("math", "math", 300):
        text, answer = scene.instruction, scene.goal["answer"]
        answers.add(answer)
        assert not re.search(rf"\b({answer}|{NUMBER_WORDS[answer]})\b", text), (seed, text)
        assert parse_math(text) == answer, (seed, text)
        pads = [o for o in scene.objects if o.role == "pad"]
        assert [o.symbol for o in pads].count(str(answer)) == 1
        assert scene.objects[scene.goal["pad"]].symbol == str(answer)
    assert answers == set(range(10))


def test_every_digit_has_an_expression_without_its_operands_equal_to_it():
    for answer in range(10):
        pairs = operand_pairs(answer)
        assert pairs, answer
        for op, ab in pairs.items():
            assert all(answer not in (a, b) and evaluate(op, a, b) == answer for a, b in ab)


def test_math_instructions_never_appear_in_training():
    train = {s.instruction for t in SEEN_TASKS for _, s in scenes(t, "seen", 100)}
    assert not train & {s.instruction for _, s in scenes("math", "math", 200)}


# -- relational and category: the referent is unique -------------------------------------------------
def _u(obj) -> float:
    return float(project_to_front(np.array([[*obj.xy, 0.0]]), 1)[0, 0])


def test_relational_referent_is_unique():
    relations = set()
    for seed, scene in scenes("relational", "relational", 300):
        rel = scene.goal["relation"]
        relations.add(rel)
        target = scene.by_role("target")
        others = [o for o in scene.objects if o is not target]
        if rel in ("left", "right"):
            ref = scene.by_role("reference")
            side = (lambda o: _u(o) < _u(ref)) if rel == "left" else (lambda o: _u(o) > _u(ref))
            assert [o for o in scene.objects if o is not ref and side(o)] == [target], seed
            assert (target.xy[1] < ref.xy[1]) == (rel == "left")  # viewer's left is world -y
        elif rel == "nearest":
            ref = scene.by_role("reference")
            d = sorted((np.hypot(*np.subtract(o.xy, ref.xy)), o.spec.name) for o in scene.objects if o is not ref)
            assert d[0][1] == target.spec.name and (len(d) < 2 or d[1][0] - d[0][0] >= NEAREST_GAP - 1e-9), seed
        elif rel == "same_color":
            ref = scene.by_role("reference")
            assert [o for o in scene.objects if o is not ref and o.spec.color == ref.spec.color] == [target], seed
        else:
            assert all(volume(target.spec) >= BIG_RATIO * volume(o.spec) for o in others), seed
        assert target.spec.name not in scene.instruction, seed
    assert relations == {"left", "right", "nearest", "same_color", "biggest"}


def test_category_target_is_the_only_member_and_is_not_named():
    for seed, scene in scenes("category", "semantic", 300):
        cat = scene.goal["category"]
        assert [o.role for o in scene.objects if cat in o.spec.categories] == ["target"], seed
        assert any(ph in scene.instruction for ph, c in CATEGORY_PHRASES.items() if c == cat)
        t = scene.by_role("target").spec
        assert not any(re.search(rf"\b{re.escape(n)}\b", scene.instruction) for n in (t.name, *t.synonyms)), seed


def test_catalogue_is_large_and_described():
    objects = [s for s in CATALOG.values() if s.kind == "object"]
    assert len(CATALOG) >= 40 and len({c for s in objects for c in s.categories}) >= 10
    assert all(s.name and s.color and s.size and s.categories for s in CATALOG.values())


# -- suites ------------------------------------------------------------------------------------------
def test_shipped_suites_are_disjoint_and_cover_every_cell():
    train, emergent = load_suite(ROOT / "envs/train.toml"), load_suite(ROOT / "envs/emergent.toml")
    assert not {e.seed for e in train.episodes} & {e.seed for e in emergent.episodes}
    assert {s for _, s in train.cells()} == {"seen"}
    expected = {(t, s) for t, task in TASKS.items() for s in task.splits}
    assert set(emergent.cells()) == expected
    counts = {c: sum(1 for e in emergent.episodes if (e.task, e.split) == c) for c in expected}
    assert min(counts.values()) >= 50


@pytest.mark.parametrize("task, split", sorted({(t, s) for t, x in TASKS.items() for s in x.splits}))
def test_every_cell_samples_deterministically(task, split):
    seed = 1_100_000 + len(task) + len(split)
    a = TASKS[task].sample(np.random.default_rng(seed), get_split(split))
    b = TASKS[task].sample(np.random.default_rng(seed), get_split(split))
    assert a.instruction == b.instruction and a.background == b.background
    assert [(o.spec.name, o.role, o.xy, o.yaw, o.symbol) for o in a.objects] == \
           [(o.spec.name, o.role, o.xy, o.yaw, o.symbol) for o in b.objects]


GOOD = """name = "bad"
kind = "{kind}"
seed_range = [{lo}, {hi}]
episodes_per_cell = {per_cell}

[[cells]]
task = "{task}"
splits = ["seen"]
"""


@pytest.mark.parametrize("change, line, field", [
    (dict(task="pik"), 7, "task"),
    (dict(per_cell=-3), 4, "episodes_per_cell"),
    (dict(kind="eval", lo=999_990, hi=1_000_050), 3, "seed_range"),
    (dict(kind="train", lo=999_990, hi=1_000_050), 3, "seed_range"),
])
def test_malformed_suite_names_file_line_and_field(tmp_path, change, line, field):
    values = dict(kind="eval", lo=1_000_000, hi=1_000_100, per_cell=2, task="pick") | change
    path = tmp_path / "bad.toml"
    path.write_text(GOOD.format(**values))
    with pytest.raises(SuiteError) as e:
        load_suite(path)
    msg = str(e.value)
    assert str(path) in msg and f":{line}" in msg and field in msg, msg


def test_negative_cell_count_names_its_line(tmp_path):
    path = tmp_path / "neg.toml"
    path.write_text(GOOD.format(kind="eval", lo=1_000_000, hi=1_000_100, per_cell=2, task="pad")
                    + "episodes = -1\n")
    with pytest.raises(SuiteError, match=rf"{re.escape(str(path))}:9: field 'episodes'"):
        load_suite(path)


@pytest.mark.parametrize("env_lines, line, needle", [
    ('objects = ["red bal"]', 6, "not targets of split 'seen'"),
    ('objects = ["red ball"]\nfront_fov = 5.0', 7, "front_fov must be"),
    ("distractors = [3, 1]", 6, "0 <= lo <= hi"),
])
def test_bad_env_options_are_refused_when_the_suite_loads(tmp_path, env_lines, line, needle):
    path = tmp_path / "env.toml"
    path.write_text('name = "x"\nkind = "eval"\nseed_range = [1000000, 1000010]\nepisodes_per_cell = 1\n'
                    f'[env]\n{env_lines}\n[[cells]]\ntask = "pick"\nsplits = ["seen"]\n')
    with pytest.raises(SuiteError, match=rf"{re.escape(str(path))}:{line}: \[env\] for cell \(pick, seen\): .*{needle}"):
        load_suite(path)
