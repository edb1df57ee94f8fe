"""Synthetic Episode records and small demo datasets for the data-layer tests."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from vlabench.data import ShardWriter

H, W = 24, 32  # non-square, so a swapped H/W shows up as a shape error
WH, WW = 16, 20


def make_episode(rng: np.random.Generator, index: int, T: int, task: str = "pick", split: str = "seen") -> dict:
    """An Episode record as `collect` writes it; frame t of the front image has t in pixel [0, 0, 0]."""
    image = rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8)
    image[:, 0, 0, 0] = np.arange(T)  # frame id, to check which frames a window picked
    return {
        "obs": {"image": image,
                "wrist_image": rng.integers(0, 256, (T, WH, WW, 3), dtype=np.uint8),
                "state": rng.standard_normal((T, 8)).astype(np.float32)},
        "actions": rng.uniform(-1, 1, (T, 7)).astype(np.float32),
        "sim": {"object_poses": rng.standard_normal((T, 3, 7)).astype(np.float32)},
        "attrs": {"instruction": f"{task} the thing {index}", "task": task, "split": split, "index": index,
                  "seed": 10_000 + index, "suite": "unit", "success": bool(index % 2), "n_steps": T,
                  "env_kwargs": '{"image_size": 128}'},
    }


def make_episodes(n: int, seed: int = 0, tasks: tuple[str, ...] = ("pick", "place")) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [make_episode(rng, i, int(rng.integers(5, 41)), task=tasks[i % len(tasks)],
                         split=("seen", "unseen")[i % 3 == 2]) for i in range(n)]


def write_dataset(root: Path, episodes: list[dict], per_shard: int = 2) -> Path:
    with ShardWriter(root, episodes_per_shard=per_shard) as w:
        for ep in episodes:
            w.write(ep)
    return root


@pytest.fixture
def episodes() -> list[dict]:
    return make_episodes(7)


@pytest.fixture
def dataset_dir(tmp_path: Path, episodes: list[dict]) -> Path:
    return write_dataset(tmp_path / "demos", episodes)


def sorted_by_key(episodes: list[dict]) -> list[dict]:
    """Episodes in the dataset's global order: sorted (task, split, index, seed)."""
    return sorted(episodes, key=lambda e: tuple(e["attrs"][k] for k in ("task", "split", "index", "seed")))


def truncate_half(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)


@pytest.fixture
def synth() -> SimpleNamespace:
    """The helpers above, handed out as a fixture so tests never `import conftest` (a module name
    that other test directories' conftest files share)."""
    return SimpleNamespace(H=H, W=W, WH=WH, WW=WW, make_episode=make_episode, make_episodes=make_episodes,
                           write_dataset=write_dataset, sorted_by_key=sorted_by_key, truncate_half=truncate_half)
