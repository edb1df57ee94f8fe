"""The privileged-state MLP (vlabench.models.state_mlp): shapes, overfitting, save/load, the policy's
temporal ensembling; and the privileged state it reads, from the env through collection to the dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vlabench.models.state_mlp import StateMLP, StateMLPConfig, StateMLPPolicy

P = 12


def stats(p: int = P) -> dict:
    return {"action": {"min": [-1.0] * 7, "max": [1.0] * 7}, "privileged": {"min": [-2.0] * p, "max": [2.0] * p}}


def test_shapes_and_missing_stats_are_explained() -> None:
    m = StateMLP(StateMLPConfig(preset="tiny", n_obs_steps=2, horizon=3), stats())
    out = m.predict_action_chunk(torch.zeros(5, 2, P))
    assert out.shape == (5, 3, 7) and out.abs().max() <= 1
    with pytest.raises(ValueError, match=r"privileged must be \(B, 2, 12\)"):
        m(torch.zeros(5, 1, P))
    with pytest.raises(ValueError, match="obs/privileged"):
        StateMLP(StateMLPConfig(preset="tiny"), {"action": stats()["action"]})
    with pytest.raises(ValueError, match="hidden"):
        StateMLPConfig(hidden=[])
    assert m.data_spec() == {"n_obs": 2, "horizon": 3, "image_keys": (), "privileged": True}


def test_overfits_a_state_to_action_map() -> None:
    torch.manual_seed(0)
    m = StateMLP(StateMLPConfig(preset="base", horizon=2), stats())
    x = torch.rand(64, 1, P) * 2 - 1
    y = torch.tanh(x[:, :, :7].repeat(1, 2, 1) * 2)
    batch = {"privileged": x, "action": y, "action_is_pad": torch.zeros(64, 2, dtype=torch.bool)}
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    first = float(m.compute_loss(batch)[0])
    for _ in range(300):
        opt.zero_grad()
        m.compute_loss(batch)[0].backward()
        opt.step()
    assert float(m.compute_loss(batch)[0]) < 0.1 * first


def test_save_load_round_trip(tmp_path) -> None:
    from vlabench.agents.spec import PolicySpec
    from vlabench.train.checkpoint import save_checkpoint

    cfg = StateMLPConfig(preset="tiny", horizon=3)
    m = StateMLP(cfg, stats())
    ckpt = save_checkpoint(tmp_path / "ckpt", m, "state-mlp", cfg, {}, stats(), {"manifest_hash": "t"})
    policy = PolicySpec.parse(str(ckpt), ["n_action_steps=2", "ensemble=false"]).build("cpu")
    assert isinstance(policy, StateMLPPolicy) and policy.n_action_steps == 2 and not policy.ensemble
    x = torch.rand(4, 1, P)
    torch.testing.assert_close(policy.model.predict_action_chunk(x), m.predict_action_chunk(x))
    assert PolicySpec.parse(str(ckpt)).traits().env_kwargs() == {"privileged_state": True}


def test_temporal_ensembling_averages_overlapping_chunks() -> None:
    cfg = StateMLPConfig(preset="tiny", horizon=3)
    m = StateMLP(cfg, stats())
    chunks = iter([np.full((1, 3, 7), v, np.float32) for v in (0.1, 0.4, 0.7, 1.0)])
    m.predict_action_chunk = lambda x: torch.from_numpy(next(chunks))  # the chunk each step predicts
    p = StateMLPPolicy(m, ensemble_decay=0.0)
    got = [p.act({"privileged": np.zeros((1, P), np.float32), "slot": np.array([0]),
                  "is_first": np.array([t == 0])})[0, 0] for t in range(4)]
    # step t averages the chunks predicted at steps t-2..t that still cover it (equal weights at decay 0)
    np.testing.assert_allclose(got, [0.1, 0.25, 0.4, 0.7], rtol=1e-6)
    with pytest.raises(KeyError, match="privileged_state=True"):
        p.act({"state": np.zeros((1, 8), np.float32)})


def test_env_privileged_state_layout_and_collection(tmp_path) -> None:
    from vlabench.data.collect_worker import rollout
    from vlabench.data.dataset import DemoDataset
    from vlabench.env import PRIVILEGED_DIM, PRIVILEGED_FIELDS, make_env
    from vlabench.suite import Episode

    env = make_env("place", image_size=32, wrist_size=32, privileged_state=True, max_steps=5)
    obs, _ = env.reset(seed=3)
    priv = obs["privileged"]
    assert env.observation_space["privileged"].contains(priv) and priv.shape == (PRIVILEGED_DIM,)
    at = {name: i for i, (name, _) in enumerate(PRIVILEGED_FIELDS)}
    offsets = np.cumsum([0] + [n for _, n in PRIVILEGED_FIELDS])
    field = {name: priv[offsets[i]:offsets[i + 1]] for name, i in at.items()}
    np.testing.assert_allclose(field["ee_pos"], obs["state"][:3])
    container = env.scene.by_role("container")
    np.testing.assert_allclose(field["goal_pos"], env.object_poses()[env.scene.objects.index(container), :3], atol=1e-6)
    assert field["has_goal"][0] == 1.0 and field["task_onehot"].sum() == 1.0
    np.testing.assert_allclose(field["target_minus_ee"], field["target_pos"] - field["ee_pos"], atol=1e-6)
    assert "privileged" not in make_env("pick", image_size=32, wrist_size=32).reset(seed=3)[0]
    pick = make_env("pick", image_size=32, wrist_size=32, privileged_state=True)
    priv = pick.reset(seed=3)[0]["privileged"]
    pick.close()
    field = {name: priv[offsets[i]:offsets[i + 1]] for name, i in at.items()}
    assert field["has_goal"][0] == 0.0  # a goal-less family: the goal field is the target itself
    np.testing.assert_array_equal(field["goal_pos"], field["target_pos"])
    np.testing.assert_array_equal(field["goal_minus_target"], 0.0)
    env.close()
    # collection records it, the dataset serves it and its statistics
    from vlabench.data import ShardWriter

    env = make_env("pick", image_size=32, wrist_size=32, max_steps=6)
    rec = rollout(env, Episode("pick", "seen", 0, 11), 0.0, "unit", {})
    env.close()
    assert rec["obs"]["privileged"].shape == (len(rec["actions"]), PRIVILEGED_DIM)
    with ShardWriter(tmp_path / "demos") as w:
        w.write(rec)
    ds = DemoDataset(tmp_path / "demos", horizon=2, image_keys=(), privileged=True)
    assert ds[0]["privileged"].shape == (1, PRIVILEGED_DIM) and "image" not in ds[0]
    assert len(ds.stats["privileged"]["min"]) == PRIVILEGED_DIM


def test_perception_noise_probe_moves_the_target_fields_per_episode() -> None:
    from vlabench.contracts import Traits, privileged_slice
    from vlabench.env import PRIVILEGED_DIM

    m = StateMLP(StateMLPConfig(preset="tiny", horizon=2), stats(PRIVILEGED_DIM))
    seen = []
    m.predict_action_chunk = lambda x: (seen.append(x[:, -1].clone()), torch.zeros(len(x), 2, 7))[1]
    p = StateMLPPolicy(m, target_noise_cm=2.0, goal_noise_cm=5.0)
    assert Traits.of(p).stochastic and not Traits.of(StateMLPPolicy(m)).stochastic
    priv = np.zeros((2, PRIVILEGED_DIM), np.float32)
    priv[0, privileged_slice("has_goal")] = 1.0  # slot 0 has a goal of its own, slot 1 is pick-like

    def step(first, seeds=(11, 12)):
        p.act({"privileged": priv, "slot": np.array([0, 1]), "is_first": np.array([first] * 2),
               "rng_seed": np.array(seeds)})
        return seen[-1].numpy()

    a, b = step(True), step(False)
    np.testing.assert_array_equal(a, b)  # one offset per episode, not per step
    t, g = privileged_slice("target_pos"), privileged_slice("goal_pos")
    off_t = a[:, t]
    assert 0 < np.abs(off_t).max() < 0.1 and not np.allclose(off_t[0], off_t[1])
    np.testing.assert_allclose(a[:, privileged_slice("target_minus_ee")], off_t)
    np.testing.assert_allclose(a[1, g], off_t[1])  # pick-like: the goal is the target
    np.testing.assert_allclose(a[0, privileged_slice("goal_minus_target")], a[0, g] - off_t[0], atol=1e-6)
    np.testing.assert_array_equal(a[:, privileged_slice("ee_pos")], 0.0)
    np.testing.assert_array_equal(step(True), a)  # the same episode seeds give the same offsets
    assert not np.allclose(step(True, seeds=(13, 14)), a)
    with pytest.raises(ValueError, match="noise must be >= 0"):
        StateMLPPolicy(m, target_noise_cm=-1.0)
