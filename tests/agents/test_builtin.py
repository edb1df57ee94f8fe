"""Tests for vlabench.agents.builtin: the built-in policies, built by name through PolicySpec."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vlabench.data import ShardWriter
from vlabench.agents.builtin import BUILTIN_POLICIES, ExpertPolicy, NoopPolicy, RandomPolicy, ReplayPolicy
from vlabench.agents.spec import PolicySpec
from vlabench.contracts import Policy


def make_policy(name: str, device: str):
    return PolicySpec.parse(name).build(device)


def batch(n: int, slots=None, first=None, seeds=None, tasks=None, size: int = 16) -> dict:
    slots = np.arange(n) if slots is None else np.asarray(slots)
    return {"image": np.zeros((n, size, size, 3), np.uint8), "wrist_image": np.zeros((n, size, size, 3), np.uint8),
            "state": np.zeros((n, 8), np.float32), "instruction": ["pick the ball"] * n,
            "slot": slots.astype(np.int64), "is_first": np.ones(n, bool) if first is None else np.asarray(first),
            "seed": np.arange(1000, 1000 + n) if seeds is None else np.asarray(seeds),
            "task": tasks or ["pick"] * n, "split": ["seen"] * n}


@pytest.mark.parametrize("name", ["expert", "random", "noop"])
def test_builtins_shapes_and_protocol(name: str) -> None:
    p = make_policy(name, "cpu")
    assert isinstance(p, Policy)
    p.reset(3)
    b = batch(3)
    b["expert_action"] = np.full((3, 7), 0.5, np.float32)
    a = p.act(b)
    assert a.shape == (3, 7) and a.dtype == np.float32
    assert np.all(np.abs(a) <= 1.0)


def test_expert_passes_privileged_actions_and_needs_them() -> None:
    p = ExpertPolicy()
    assert p.needs_expert is True and NoopPolicy.needs_expert is False
    b = batch(2)
    b["expert_action"] = np.arange(14, dtype=np.float32).reshape(2, 7) / 14
    np.testing.assert_array_equal(p.act(b), b["expert_action"])
    with pytest.raises(KeyError, match="expert_action"):
        p.act(batch(2))


def test_single_obs_batch_drives_a_policy_by_hand() -> None:
    from vlabench.contracts import single_obs_batch

    obs = {k: v[0] for k, v in batch(1).items() if k in ("image", "wrist_image", "state")}
    obs["instruction"] = "pick the ball"
    expert = np.linspace(-1, 1, 7, dtype=np.float32)
    b = single_obs_batch(obs, first=True, seed=7, task="pick", split="seen", expert_action=expert)
    assert b["image"].shape == (1, 16, 16, 3) and b["instruction"] == ["pick the ball"] and b["seed"].tolist() == [7]
    np.testing.assert_array_equal(ExpertPolicy().act(b), expert[None])
    no_expert = single_obs_batch(obs, first=False, seed=7, task="pick", split="seen")
    assert "expert_action" not in no_expert and no_expert["is_first"].tolist() == [False]
    assert make_policy("random", "cpu").act(no_expert).shape == (1, 7)


def test_noop_is_zero_with_open_gripper() -> None:
    a = NoopPolicy().act(batch(2))
    np.testing.assert_array_equal(a[:, :6], 0)
    np.testing.assert_array_equal(a[:, 6], -1)


def _rollout(p: RandomPolicy, seed: int, slot: int, steps: int = 4) -> np.ndarray:
    out = []
    for t in range(steps):
        out.append(p.act(batch(1, slots=[slot], first=[t == 0], seeds=[seed]))[0])
    return np.stack(out)


def test_random_is_reproducible_per_episode_seed() -> None:
    p = RandomPolicy()
    p.reset(4)
    a = _rollout(p, seed=7, slot=0)
    b = _rollout(p, seed=7, slot=3)  # another slot, same episode seed: same actions
    c = _rollout(p, seed=8, slot=0)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert a.min() >= -1 and a.max() <= 1
    # interleaved slots in one batch give each episode its own stream
    p.reset(2)
    rows = [p.act(batch(2, slots=[0, 1], first=[t == 0] * 2, seeds=[7, 8])) for t in range(4)]
    np.testing.assert_array_equal(np.stack([r[0] for r in rows]), a)
    np.testing.assert_array_equal(np.stack([r[1] for r in rows]), c)


def test_unknown_policy_lists_valid_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as e:
        make_policy("expret", "cpu")
    for name in BUILTIN_POLICIES:
        assert name in str(e.value)
    assert "checkpoint" in str(e.value)
    with pytest.raises(ValueError, match="replay:DATASET_DIR"):
        make_policy("replay", "cpu")
    f = tmp_path / "weights.bin"
    f.write_bytes(b"x")
    with pytest.raises(ValueError, match="directory"):
        make_policy(str(f), "cpu")


def _demo(task: str, seed: int, T: int, rng: np.random.Generator) -> dict:
    return {"obs": {"image": np.zeros((T, 8, 8, 3), np.uint8), "wrist_image": np.zeros((T, 8, 8, 3), np.uint8),
                    "state": np.zeros((T, 8), np.float32)},
            "actions": rng.uniform(-1, 1, (T, 7)).astype(np.float32),
            "attrs": {"instruction": "x", "task": task, "split": "seen", "index": seed, "seed": seed}}


def test_replay_returns_recorded_actions_then_holds(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    demos = [_demo("pick", 5, 3, rng), _demo("push", 5, 4, rng), _demo("pick", 6, 2, rng)]
    with ShardWriter(tmp_path / "demos", episodes_per_shard=2) as w:
        for d in demos:
            w.write(d)
    p = make_policy(f"replay:{tmp_path / 'demos'}", "cpu")
    assert isinstance(p, ReplayPolicy) and len(p) == 3
    p.reset(2)
    got = [p.act(batch(2, first=[t == 0] * 2, seeds=[5, 5], tasks=["pick", "push"])) for t in range(5)]
    np.testing.assert_array_equal(np.stack([g[0] for g in got[:3]]), demos[0]["actions"])
    np.testing.assert_array_equal(np.stack([g[1] for g in got[:4]]), demos[1]["actions"])
    after = got[4][0]  # past the end: no motion, last gripper command held
    np.testing.assert_array_equal(after[:6], 0)
    assert after[6] == demos[0]["actions"][-1, 6]
    with pytest.raises(KeyError, match="no demo for task 'place'"):
        p.act(batch(1, first=[True], seeds=[5], tasks=["place"]))
