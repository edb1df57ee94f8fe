"""Visual question answering data from simulator scenes, for RT-2-style co-fine-tuning and `vqa-eval`.

RT-2 keeps its web knowledge by co-training on VQA data. Offline, we make VQA data from our own scenes:
questions with text answers built from ``env.unwrapped.scene_info()`` (vlabench.env) and the rendered
front-camera image. :func:`generate_vqa` is pure: ``(scene_info, rng) -> [(question, answer)]``.

Question kinds (``KINDS``):
  color        "what color is the banana?" -> "yellow"
  category     "is there a fruit on the table?" -> "yes" / "no"
  which        "which object is a fruit?" -> "banana" (exactly one object has that category)
  count        "how many blocks are there?" / "how many fruits are there?" -> "2"
  size         "what size is the mug?" -> "small" (only when ``size`` is a word)
  symbol       "which digit is on the pad on the left?" -> "3"; "which symbol is on the pad?" -> "star"
  arithmetic   "what is two plus one?" -> "3"
  pad_sum      "which pad shows two plus one?" -> "left"
  left_right   "is the apple left of the mug?" -> "yes" / "no"

Answer conventions: lower case; numbers (counts, arithmetic, digits) are NUMERALS ("3"), while
questions spell numbers as words ("two plus one"), as the benchmark's arithmetic instructions do, so
answering links the word to the symbol drawn on the pads. Exact-match scoring compares
:func:`normalize_answer` forms.

Left/right are in the FRONT CAMERA's image frame, the viewer's left/right, as in the instructions
(vlabench.sim.constants). That camera sits at +x looking back toward the robot, so world -y is
image-left: ``IMAGE_LEFT_AXIS = 1``, ``IMAGE_LEFT_SIGN = -1`` (checked with
``vlabench.sim.camera.project_to_front``: y = -0.2 projects to column 32 of 128, y = +0.2 to 96).
Pairs closer than ``LR_MARGIN`` metres along that axis are not asked about.

Files (``run(VQAGenConfig)``): one compressed ``.npz`` with ``images`` (M, H, W, 3) uint8,
``scene_seed`` (M,), ``scene_task`` (M,), ``question``/``answer``/``kind`` (N,) str and
``image_index`` (N,) int64 (row of ``images``), written atomically. Generation seeds (default from
900000) and evaluation seeds (default from 950000) are disjoint; ``vlabench vqa-eval``
(vlabench.eval.vqa) refuses to score on scenes the checkpoint's VQA data used.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vlabench.fileio import atomic_path

IMAGE_LEFT_AXIS = 1
"""World axis that runs across the front image (0 = x, 1 = y); see the module docstring."""
IMAGE_LEFT_SIGN = -1.0
"""-1: a SMALLER world y is further LEFT in the front image (the camera looks along -x)."""
LR_MARGIN = 0.03
KINDS = ("color", "category", "which", "count", "size", "symbol", "arithmetic", "pad_sum", "left_right")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
DEFAULT_CATEGORIES = ("animal", "ball", "berry", "bird", "block", "brick", "citrus", "container", "cup", "cutlery",
                      "dish", "drinkware", "food", "fruit", "game piece", "kitchenware", "mammal", "reptile",
                      "shape", "stuffed animal", "tool", "toy", "utensil", "vegetable")
"""Pool for "is there a ...?" questions answered "no" (the object library's categories; render_vqa
uses the live library's)."""
_PAD_POSITIONS = {1: ["only"], 2: ["left", "right"], 3: ["left", "middle", "right"]}


def normalize_answer(text: str) -> str:
    """Lower case, punctuation -> spaces, single spaces: "T-Rex." and "t - rex" both -> "t rex"."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower()).split())


def image_left(position) -> float:
    """How far left in the front image a world position is (larger = further left)."""
    return IMAGE_LEFT_SIGN * float(position[IMAGE_LEFT_AXIS])


def plural(noun: str) -> str:
    words = noun.split()
    w = words[-1]
    if w.endswith(("s", "x", "ch", "sh", "z")):
        w += "es"
    elif w.endswith("y") and len(w) > 1 and w[-2] not in "aeiou":
        w = w[:-1] + "ies"
    else:
        w += "s"
    return " ".join(words[:-1] + [w])


def _article(noun: str) -> str:
    return "an" if noun[:1] in "aeiou" else "a"


def _refer(obj: dict, objects: list[dict]) -> str | None:
    """A unique description of ``obj`` among ``objects``: its name, else "color name", else None."""
    name = obj["name"]
    if sum(o["name"] == name for o in objects) == 1:
        return name
    color = obj.get("color")
    if color and color not in name.split():
        full = f"{color} {name}"
        if sum(o["name"] == name and o.get("color") == color for o in objects) == 1:
            return full
    return None


def _items_color(things: list[dict], everything: list[dict]):
    for o in things:
        ref, color = _refer(o, everything), o.get("color")
        if ref and color and color not in ref.split():
            yield "color", f"what color is the {ref}?", color


def _items_category(things: list[dict], rng: np.random.Generator, pool):
    present = sorted({c for o in things for c in o.get("categories") or []})
    for c in present:
        yield "category", f"is there {_article(c)} {c} on the table?", "yes"
    absent = [c for c in sorted(set(pool) | set(present)) if c not in present]
    for c in rng.permutation(absent)[: max(1, len(present))].tolist() if absent else []:
        yield "category", f"is there {_article(c)} {c} on the table?", "no"
    for c in present:
        holders = [o for o in things if c in (o.get("categories") or [])]
        if len(holders) == 1 and _refer(holders[0], things) == holders[0]["name"]:
            yield "which", f"which object is {_article(c)} {c}?", holders[0]["name"]


def _items_count(things: list[dict]):
    for name, n in sorted(Counter(o["name"] for o in things).items()):
        yield "count", f"how many {plural(name)} are there?", str(n)
    cats = Counter(c for o in things for c in set(o.get("categories") or []))
    for c, n in sorted(cats.items()):
        if c not in {o["name"] for o in things}:
            yield "count", f"how many {plural(c)} are there?", str(n)


def _items_size(things: list[dict]):
    for o in things:
        ref, size = _refer(o, things), o.get("size")
        if ref and isinstance(size, str) and size:
            yield "size", f"what size is the {ref}?", size


def _items_pads(pads: list[dict], rng: np.random.Generator):
    pads = [p for p in pads if p.get("symbol")]
    if not 1 <= len(pads) <= 3:
        return
    ordered = sorted(pads, key=lambda p: -image_left(p["position"]))  # leftmost first
    if any(image_left(a["position"]) - image_left(b["position"]) < LR_MARGIN for a, b in zip(ordered, ordered[1:])):
        return
    words = _PAD_POSITIONS[len(ordered)]
    for pad, where in zip(ordered, words):
        sym = str(pad["symbol"])
        what = "digit" if sym.isdigit() else "symbol"
        q = f"which {what} is on the pad?" if where == "only" else f"which {what} is on the pad on the {where}?"
        yield "symbol", q, sym.lower()
        if sym.isdigit() and where != "only" and sum(p["symbol"] == pad["symbol"] for p in ordered) == 1:
            total = int(sym)
            a = int(rng.integers(0, total + 1))
            yield "pad_sum", f"which pad shows {NUMBER_WORDS[a]} plus {NUMBER_WORDS[total - a]}?", where


def _items_arithmetic(rng: np.random.Generator):
    a, b = (int(x) for x in rng.integers(0, 10, size=2))
    if a + b <= 9:
        yield "arithmetic", f"what is {NUMBER_WORDS[a]} plus {NUMBER_WORDS[b]}?", str(a + b)
    hi, lo = max(a, b), min(a, b)
    yield "arithmetic", f"what is {NUMBER_WORDS[hi]} minus {NUMBER_WORDS[lo]}?", str(hi - lo)


def _items_left_right(things: list[dict], rng: np.random.Generator):
    refs = [(o, _refer(o, things)) for o in things]
    refs = [(o, r) for o, r in refs if r]
    for i, (a, ra) in enumerate(refs):
        for b, rb in refs[i + 1 :]:
            d = image_left(a["position"]) - image_left(b["position"])
            if abs(d) < LR_MARGIN:
                continue
            first, second, d = (a, b, d) if rng.random() < 0.5 else (b, a, -d)
            side = "left" if rng.random() < 0.5 else "right"
            truth = d > 0 if side == "left" else d < 0
            yield ("left_right", f"is the {_refer(first, things)} {side} of the {_refer(second, things)}?",
                   "yes" if truth else "no")


def generate_vqa_items(scene_info: dict, rng: np.random.Generator, max_questions: int | None = None,
                       categories=DEFAULT_CATEGORIES) -> list[tuple[str, str, str]]:
    """All questions about one scene as ``(kind, question, answer)``, balanced over kinds.

    With ``max_questions``, kinds are visited round-robin in a random order (one random question of
    each kind per round), so rare kinds are not drowned out by pairwise ones like left_right.
    ``categories``: pool for "is there a ...?" questions whose answer is "no".
    """
    objects = list(scene_info.get("objects", []))
    things = [o for o in objects if o.get("kind", "object") != "pad"]
    pads = [o for o in objects if o.get("kind") == "pad"]
    items = [*_items_color(things, things), *_items_category(things, rng, categories), *_items_count(things),
             *_items_size(things), *_items_pads(pads, rng), *_items_arithmetic(rng),
             *_items_left_right(things, rng)]
    if max_questions is None or len(items) <= max_questions:
        return items
    by_kind: dict[str, list] = defaultdict(list)
    for it in items:
        by_kind[it[0]].append(it)
    queues = [[by_kind[k][j] for j in rng.permutation(len(by_kind[k]))] for k in rng.permutation(sorted(by_kind))]
    out: list[tuple[str, str, str]] = []
    while len(out) < max_questions:
        for q in queues:
            if q and len(out) < max_questions:
                out.append(q.pop())
    return out


def generate_vqa(scene_info: dict, rng: np.random.Generator, max_questions: int | None = None) -> list[tuple[str, str]]:
    """``(question, answer)`` pairs about one scene (see :func:`generate_vqa_items`)."""
    return [(q, a) for _, q, a in generate_vqa_items(scene_info, rng, max_questions)]


# ----------------------------------------------------------------------------------------------
@dataclass
class VQAGenConfig:
    """Render simulator scenes and write VQA samples (question, answer, front image) to one .npz."""

    out: str = "data/vqa/train.npz"
    """Output .npz path (written to a temp name, then renamed)."""
    tasks: list[str] = field(default_factory=list)
    """Task ids to draw scenes from (scene i uses tasks[i % len(tasks)]); empty = every registered task.
    ``task:split`` (e.g. ``pad:symbols``) gives that task its own split."""
    split: str = "seen"
    """Split passed to make_env (which objects/backgrounds appear) for tasks without ``:split``."""
    suite: str | None = None
    """Optional suite file whose [env] options (camera size, zoom, objects, ...) build the env, so the
    images match robot data collected from it; overrides image_size."""
    seed_start: int = 900_000
    """First scene seed; scene i uses seed_start + i. Keep disjoint from VQAEvalConfig.seed_start."""
    n_scenes: int = 500
    """Number of scenes to render."""
    questions_per_scene: int = 8
    """Questions kept per scene (balanced over kinds)."""
    image_size: int = 128
    """Front-camera size, matching the robot data."""
    renderer: str = "tiny"
    """Renderer passed to make_env."""


def task_splits(tasks: list[str], split: str) -> list[tuple[str, str]]:
    """``["pad:symbols", "pick"]`` -> ``[("pad", "symbols"), ("pick", split)]``; empty = every registered task."""
    if not tasks:
        from vlabench.tasks import TASKS

        tasks = sorted(TASKS)
    pairs = []
    for t in tasks:
        name, sep, own = t.partition(":")
        if not name or (sep and not own):
            raise ValueError(f"bad task entry {t!r}: expected TASK or TASK:SPLIT")
        pairs.append((name, own or split))
    return pairs


def render_vqa(tasks: list[str], split: str, seeds: list[int], questions_per_scene: int, suite: str | None,
               image_size: int, renderer: str) -> dict[str, np.ndarray]:
    """Reset one env per (task, split) at each seed; returns the arrays of the .npz format (module
    docstring). ``tasks`` and ``split`` are read by :func:`task_splits`; the env is built from
    ``suite``'s [env] options, else at ``image_size``."""
    from tqdm import tqdm

    from vlabench.env import make_env  # the env is only needed here; generate_vqa stays pure
    from vlabench.suite import env_kwargs_of

    if not seeds or questions_per_scene < 1:
        raise ValueError(f"need at least one scene and one question per scene, got n_scenes={len(seeds)}, "
                         f"questions_per_scene={questions_per_scene}")
    pairs = task_splits(tasks, split)
    env_kwargs = env_kwargs_of(suite, image_size)
    try:
        from vlabench.sim.library import CATALOG

        categories = sorted({c for spec in CATALOG.values() for c in spec.categories})
    except ImportError:
        categories = list(DEFAULT_CATEGORIES)
    envs: dict = {}
    images, scene_task, questions, answers, kinds, index = [], [], [], [], [], []
    try:
        for i, seed in enumerate(tqdm(seeds, desc="vqa scenes")):
            task = pairs[i % len(pairs)]
            if task not in envs:
                envs[task] = make_env(*task, **{**env_kwargs, "renderer": renderer})
            obs, _ = envs[task].reset(seed=int(seed))
            items = generate_vqa_items(envs[task].unwrapped.scene_info(), np.random.default_rng(int(seed)),
                                       questions_per_scene, categories)
            for kind, q, a in items:
                kinds.append(kind), questions.append(q), answers.append(a), index.append(len(images))
            images.append(np.asarray(obs["image"], dtype=np.uint8))
            scene_task.append(task[0])
    finally:
        for env in envs.values():
            env.close()
    return {"images": np.stack(images), "scene_seed": np.asarray(seeds, dtype=np.int64),
            "scene_task": np.asarray(scene_task), "question": np.asarray(questions),
            "answer": np.asarray(answers), "kind": np.asarray(kinds), "image_index": np.asarray(index, dtype=np.int64)}


def write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """Compressed .npz written atomically."""
    with atomic_path(path, suffix=".npz") as tmp:  # np.savez appends .npz to any other name
        np.savez_compressed(tmp, **arrays)
    return Path(path)


def run(cfg: VQAGenConfig) -> Path:
    """``vlabench vqa-gen``: render the scenes and write the .npz; returns its path."""
    seeds = list(range(cfg.seed_start, cfg.seed_start + cfg.n_scenes))
    arrays = render_vqa(cfg.tasks, cfg.split, seeds, cfg.questions_per_scene, cfg.suite, cfg.image_size, cfg.renderer)
    return write_npz(cfg.out, arrays)
