"""Emergent families in the simulator: deterministic resets from the manifest, experts that solve
them, symbol pads that the front camera can read, pad assets cached atomically."""

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlabench.env import make_env
from vlabench.sim import pads
from vlabench.suite import load_suite

ROOT = Path(__file__).resolve().parents[2]
SMALL = dict(image_size=64, wrist_size=32)
NEW_FAMILIES = ["next_to:distractors", "pad:symbols", "relational:relational", "math:math", "category:semantic"]


def _manifest_cells() -> list[tuple[str, str, int]]:
    """One (task, split, seed) per cell of envs/emergent.toml: its first episode."""
    suite = load_suite(ROOT / "envs/emergent.toml")
    first = {}
    for e in suite.episodes:
        first.setdefault((e.task, e.split), e.seed)
    return [(t, s, seed) for (t, s), seed in first.items()]


def _sampled_cells() -> list[tuple[str, str, int]]:
    # Every task family once and every split once, without running all 38 cells.
    cells, tasks, splits = [], set(), set()
    for t, s, seed in _manifest_cells():
        if t not in tasks or s not in splits:
            cells.append((t, s, seed))
            tasks.add(t), splits.add(s)
    return cells


@pytest.mark.parametrize("task, split, seed", _sampled_cells())
def test_manifest_cell_resets_deterministically(task, split, seed):
    a, b = make_env(task, split, **SMALL), make_env(task, split, **SMALL)
    oa, ia = a.reset(seed=seed)
    ob, ib = b.reset(seed=seed)
    assert oa["instruction"] == ob["instruction"] == ia["instruction"]
    for key in ("image", "wrist_image", "state"):
        assert np.array_equal(oa[key], ob[key]), key
    assert np.array_equal(a.object_poses(), b.object_poses())
    assert a.scene_info() == b.scene_info()
    a.close(), b.close()


@pytest.mark.parametrize("cell", NEW_FAMILIES)
def test_new_expert_solves_a_few_seeds(cell):
    task, split = cell.split(":")
    env = make_env(task, split, image_size=16, wrist_size=16)
    for seed in range(1_100_000, 1_100_003):
        env.reset(seed=seed)
        info = {"success": False}
        for _ in range(env.max_steps):
            *_, term, trunc, info = env.step(env.expert_action())
            if term or trunc:
                break
        assert info["success"], (cell, seed, info["instruction"], info["diagnostics"])
    env.close()


def test_pad_symbols_are_visible_from_the_front_camera():
    env = make_env("pad", "seen", image_size=128, wrist_size=16, segmentation=True)
    obs, _ = env.reset(seed=3)
    info = env.scene_info()
    pad_objs = [(i, o) for i, o in enumerate(info["objects"]) if o["kind"] == "pad"]
    assert pad_objs and all(o["symbol"] for _, o in pad_objs)
    for i, o in pad_objs:
        mask = obs["segmentation"] == env.scene.objects[i].body
        assert mask.sum() > 60, o  # ~14 x 10 px at 128 px
        gray = obs["image"][mask].mean(axis=1)
        # A light face and dark ink: the texture is applied and faces the camera.
        assert gray.max() > 170 and gray.min() < 90, (o["symbol"], gray.min(), gray.max())
    env.close()


def test_pad_assets_are_cached_atomically(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    urdf = pads.ensure_assets("heart")
    folder = Path(pads.cache_dir())
    assert Path(urdf).parent == folder and folder.is_relative_to(tmp_path)
    stem = pads.asset_stem("heart")
    assert {p.name for p in folder.iterdir()} == {f"{stem}.{ext}" for ext in ("png", "obj", "mtl", "urdf")}
    mtime = os.path.getmtime(urdf)
    assert pads.ensure_assets("heart") == urdf and os.path.getmtime(urdf) == mtime  # reused, not rewritten
    img = np.asarray(Image.open(folder / f"{stem}.png"))
    assert img.shape == (pads.TEXTURE_SIZE, pads.TEXTURE_SIZE, 3)


def test_every_symbol_draws_a_distinct_texture():
    images = {s: np.asarray(pads.draw_symbol(s, 64)) for s in pads.SYMBOLS}
    flat = {s: im.tobytes() for s, im in images.items()}
    assert len(set(flat.values())) == len(pads.SYMBOLS)
    with pytest.raises(ValueError, match="unknown pad symbol 'Q'; valid: star"):
        pads.draw_symbol("Q")


def test_reasoning_families_default_to_their_own_split():
    for task, split in (("relational", "relational"), ("math", "math"), ("category", "semantic"), ("pad", "seen")):
        env = make_env(task, image_size=16, wrist_size=16)
        assert env.split.name == split
        env.close()
    with pytest.raises(ValueError, match="task 'math' has no split 'seen'; its splits: math"):
        make_env("math", "seen")
