"""The two-stage policy (vlabench.models.localizer): the estimated privileged vector, learning while the
controller stays frozen, heatmap labels from the front camera, and a checkpoint that no longer needs the
controller's directory."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from vlabench.contracts import privileged_slice
from vlabench.env import PRIVILEGED_DIM, PRIVILEGED_TASKS
from vlabench.models.localizer import LocalizerConfig, LocalizerModel, LocalizerPolicy
from vlabench.models.localizer.model import cell_index
from vlabench.models.state_mlp import StateMLP, StateMLPConfig

STATS = {"action": {"min": [-1.0] * 7, "max": [1.0] * 7},
         "privileged": {"min": [-1.0] * PRIVILEGED_DIM, "max": [1.0] * PRIVILEGED_DIM}}


@pytest.fixture
def controller_dir(tmp_path):
    from vlabench.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    cfg = StateMLPConfig(preset="tiny", n_obs_steps=2, horizon=3)
    return save_checkpoint(tmp_path / "controller", StateMLP(cfg, STATS), "state-mlp", cfg, {}, STATS,
                           {"manifest_hash": "t"})


def frames(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def batch(B: int = 6, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    priv = torch.zeros(B, 1, PRIVILEGED_DIM)
    priv[:, 0, privileged_slice("target_pos")] = torch.rand(B, 3, generator=g) * torch.tensor([0.2, 0.3, 0.05]) + torch.tensor([0.45, -0.15, 0.0])
    priv[:, 0, privileged_slice("goal_pos")] = torch.rand(B, 3, generator=g) * torch.tensor([0.2, 0.3, 0.05]) + torch.tensor([0.45, -0.15, 0.0])
    priv[:, 0, privileged_slice("target_quat")] = torch.tensor([0.0, 0.0, 0.0, 1.0])
    priv[:, 0, privileged_slice("has_goal")] = (torch.arange(B) % 2).float()[:, None]
    priv[torch.arange(B), 0, privileged_slice("goal_minus_target").stop + torch.arange(B) % len(PRIVILEGED_TASKS)] = 1.0
    pixels = torch.rand(B, 1, 2, 2, generator=g)
    return {"image": frames(B, seed=seed)[:, None], "instruction": [f"task {i}" for i in range(B)], "privileged": priv,
            "front_pixels": pixels}


def test_config_needs_a_controller_and_sane_values() -> None:
    with pytest.raises(ValueError, match="state-mlp controller"):
        LocalizerModel(LocalizerConfig(text_encoder="hash"), STATS)
    with pytest.raises(ValueError, match="channels"):
        LocalizerConfig(controller="x", channels=12)


def test_estimate_is_the_privileged_layout_with_derived_fields(controller_dir) -> None:
    model = LocalizerModel(LocalizerConfig(preset="tiny", controller=str(controller_dir), text_encoder="hash"), STATS)
    state = torch.rand(3, 8)
    est = torch.from_numpy(model.estimate(frames(3), ["a", "b", "c"], state))
    assert est.shape == (3, PRIVILEGED_DIM)
    torch.testing.assert_close(est[:, :8], state)
    target, goal = est[:, privileged_slice("target_pos")], est[:, privileged_slice("goal_pos")]
    torch.testing.assert_close(est[:, privileged_slice("target_minus_ee")], target - state[:, :3])
    torch.testing.assert_close(est[:, privileged_slice("goal_minus_target")], goal - target)
    no_goal = est[:, privileged_slice("has_goal")][:, 0] == 0
    torch.testing.assert_close(goal[no_goal], target[no_goal])
    torch.testing.assert_close(est[:, privileged_slice("target_quat")].norm(dim=1), torch.ones(3))
    task = est[:, privileged_slice("goal_minus_target").stop:]
    assert task.shape[1] == len(PRIVILEGED_TASKS) and torch.equal(task.sum(1), torch.ones(3))
    with pytest.raises(ValueError, match="state must be"):
        model.estimate(frames(3), ["a", "b", "c"], torch.rand(3, 7))


def test_heatmap_labels_land_on_the_target_in_the_front_frame(tmp_path) -> None:
    from vlabench.data import ShardWriter
    from vlabench.data.collect_worker import rollout
    from vlabench.data.dataset import DemoDataset
    from vlabench.env import make_env
    from vlabench.suite import Episode

    env = make_env("place", image_size=64, wrist_size=32, max_steps=4, segmentation=True)
    rec = rollout(env, Episode("place", "seen", 0, 5), 0.0, "unit", {})
    obs, _ = env.reset(seed=5)  # the episode's first frame again
    target, container = env.scene.by_role("target").body, env.scene.by_role("container").body
    seg = obs["segmentation"]
    env.close()
    with ShardWriter(tmp_path / "demos") as w:
        w.write(rec)
    ds = DemoDataset(tmp_path / "demos", image_keys=(), privileged=True, front_pixels=True)
    pixels = ds[0]["front_pixels"][0]  # frame 0: (target, goal) x (u, v) / 64
    assert pixels.shape == (2, 2) and 0 < pixels.min() and pixels.max() < 1
    (tu, tv), (gu, gv) = (pixels * 64).long().tolist()
    assert seg[tv, tu] == target and seg[gv, gu] == container  # the label is on the object, not beside it
    t_cell, g_cell = cell_index(pixels[None], 16)
    assert int(t_cell) == (tv // 4) * 16 + tu // 4 and int(g_cell) == (gv // 4) * 16 + gu // 4
    with pytest.raises(ValueError, match="privileged=True"):
        DemoDataset(tmp_path / "demos", image_keys=(), front_pixels=True)


def test_learns_a_batch_and_the_controller_stays_frozen(controller_dir) -> None:
    torch.manual_seed(0)
    model = LocalizerModel(LocalizerConfig(preset="tiny", controller=str(controller_dir), text_encoder="hash"), STATS)
    frozen = {k: v.clone() for k, v in model.controller.state_dict().items()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert not any(p.requires_grad for p in model.controller.parameters())
    b = batch()
    opt = torch.optim.Adam(trainable, 1e-2)
    first, metrics = model.compute_loss(b)
    assert {"target_cm", "goal_cm", "heat_ce", "quat_mse", "task_ce"} <= set(metrics)
    for _ in range(150):
        opt.zero_grad()
        model.compute_loss(b)[0].backward()
        opt.step()
    last, metrics = model.compute_loss(b)
    assert float(last.detach()) < 0.3 * float(first.detach()) and metrics["target_cm"] < 3.0
    for k, v in model.controller.state_dict().items():
        torch.testing.assert_close(v, frozen[k])


def test_checkpoint_rebuilds_without_the_controller_and_the_policy_acts(controller_dir, tmp_path) -> None:
    from vlabench.agents.spec import PolicySpec
    from vlabench.train.checkpoint import save_checkpoint

    model = LocalizerModel(LocalizerConfig(preset="tiny", controller=str(controller_dir), text_encoder="hash"), STATS)
    ckpt = save_checkpoint(tmp_path / "ckpt", model, "localizer", model.cfg, {}, STATS, {"manifest_hash": "t"})
    shutil.rmtree(controller_dir)
    policy = PolicySpec.parse(str(ckpt)).build("cpu")
    assert isinstance(policy, LocalizerPolicy)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(policy.model.state_dict()[k], v)
    obs = {"image": frames(2).permute(0, 2, 3, 1).numpy(), "state": np.zeros((2, 8), np.float32),
           "instruction": ["pick a", "pick b"], "slot": np.array([0, 1]), "is_first": np.array([True, True])}
    a = policy.act(obs)
    assert a.shape == (2, 7) and a.dtype == np.float32 and np.abs(a).max() <= 1
    est = model.estimate(frames(2), obs["instruction"], torch.zeros(2, 8))
    expected = model.controller.predict_action_chunk(torch.from_numpy(np.stack([est, est], 1)))[:, 0].numpy()
    np.testing.assert_allclose(a, expected, atol=1e-5)  # the first step of a fresh episode: the first chunk's head
    with pytest.raises(KeyError, match="state"):
        policy.act({k: v for k, v in obs.items() if k != "state"})
    with pytest.raises(KeyError, match="image"):
        policy.act({k: v for k, v in obs.items() if k != "image"})


def test_the_controllers_chunk_options_pass_through(controller_dir, tmp_path) -> None:
    """ensemble=false n_action_steps=K: the estimate drives one chunk, run open loop for K steps."""
    from vlabench.agents.spec import PolicySpec
    from vlabench.train.checkpoint import save_checkpoint

    model = LocalizerModel(LocalizerConfig(preset="tiny", controller=str(controller_dir), text_encoder="hash"), STATS)
    ckpt = save_checkpoint(tmp_path / "ckpt", model, "localizer", model.cfg, {}, STATS, {"manifest_hash": "t"})
    policy = PolicySpec.parse(str(ckpt), ["ensemble=false", f"n_action_steps={model.controller.cfg.horizon}"]).build("cpu")
    assert not policy.controller.ensemble and policy.controller.n_action_steps == model.controller.cfg.horizon
    obs = {"image": frames(1).permute(0, 2, 3, 1).numpy(), "state": np.zeros((1, 8), np.float32),
           "instruction": ["pick a"], "slot": np.array([0]), "is_first": np.array([True])}
    est = model.estimate(frames(1), obs["instruction"], torch.zeros(1, 8))
    chunk = model.controller.predict_action_chunk(torch.from_numpy(np.stack([est, est], 1)))[0].numpy()
    got = [policy.act({**obs, "is_first": np.array([t == 0])})[0] for t in range(model.controller.cfg.horizon)]
    np.testing.assert_allclose(np.stack(got), chunk, atol=1e-5)
