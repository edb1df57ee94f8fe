"""Tests of the Diffusion Policy baseline: shapes, schedules, checkpoints, overfitting, multimodality.

All models are tiny and run on CPU; the sentence encoder is the deterministic "hash" stand-in.
"""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from safetensors.torch import load_file, save_file
from torch import nn

from vlabench.models.diffusion import SPEC, DiffusionConfig, DiffusionModel, DiffusionPolicy
from vlabench.models.blocks.unet1d import ConditionalUnet1D
from vlabench.models.blocks.vision import KeypointPool, ResNetKeypointEncoder, resnet18_trunk

TEXT = "hash:16"
H = W = 32  # raw frame size in tests (the tiny preset resizes to 32 and crops 28)


def make_stats() -> dict:
    a_min = [-0.5, -0.4, -0.3, -0.2, -0.2, -0.1, -1.0]
    a_max = [0.5, 0.4, 0.3, 0.2, 0.2, 0.1, 1.0]
    s_min = [0.3, -0.3, 0.0, -1.0, -1.0, -1.0, -1.0, 0.0]
    s_max = [0.7, 0.3, 0.4, 1.0, 1.0, 1.0, 1.0, 0.08]
    return {"action": {"min": a_min, "max": a_max}, "state": {"min": s_min, "max": s_max}}


def tiny_cfg(**kw) -> DiffusionConfig:
    return DiffusionConfig(preset="tiny", text_encoder=TEXT, **kw)


def tiny_model(seed: int = 0, **kw) -> DiffusionModel:
    torch.manual_seed(seed)
    return DiffusionModel(tiny_cfg(**kw), make_stats())


def make_batch(b: int = 4, seed: int = 0, n_obs: int = 2, horizon: int = 16) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randint(0, 256, (b, n_obs, 3, H, W), generator=g, dtype=torch.uint8),
        "wrist_image": torch.randint(0, 256, (b, n_obs, 3, H, W), generator=g, dtype=torch.uint8),
        "state": torch.rand(b, n_obs, 8, generator=g),
        "action": (torch.rand(b, horizon, 7, generator=g) * 2 - 1) * 0.3,
        "action_is_pad": torch.zeros(b, horizon, dtype=torch.bool),
        "instruction": [f"pick the {c} block" for c in ("red", "blue", "green", "red")][:b],
    }


def smooth_batch(b: int, seed: int) -> dict:
    """make_batch with action sequences that are per-sample linear ramps (robot-like, learnable)."""
    batch = make_batch(b, seed)
    g = torch.Generator().manual_seed(seed + 100)
    start, end = torch.rand(2, b, 1, 7, generator=g) * 0.5 - 0.25
    batch["action"] = start + (end - start) * torch.linspace(0, 1, 16)[None, :, None]
    return batch


def make_obs(n: int, seed: int = 0, slots=None, is_first=None) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "image": rng.integers(0, 256, (n, H, W, 3), dtype=np.uint8),
        "wrist_image": rng.integers(0, 256, (n, H, W, 3), dtype=np.uint8),
        "state": rng.random((n, 8), dtype=np.float32),
        "instruction": ["put the cube in the bowl"] * n,
        "slot": np.arange(n) if slots is None else np.asarray(slots),
        "is_first": np.ones(n, bool) if is_first is None else np.asarray(is_first),
    }


# ---------------------------------------------------------------- shapes


def test_unet_shapes_and_timestep_forms():
    unet = ConditionalUnet1D(7, 10, down_dims=(16, 32, 64), step_embed_dim=16)
    x, cond = torch.randn(3, 16, 7), torch.randn(3, 10)
    assert unet(x, torch.tensor([0, 50, 99]), cond).shape == (3, 16, 7)
    assert unet(x, 5, cond).shape == (3, 16, 7)
    assert unet(x, torch.tensor(5), cond).shape == (3, 16, 7)
    flat = ConditionalUnet1D(7, 10, down_dims=(16,), step_embed_dim=16)  # one level: any horizon
    assert flat(torch.randn(2, 5, 7), 1, cond[:2]).shape == (2, 5, 7)


def test_horizon_divisibility_error():
    with pytest.raises(ValueError, match=r"horizon=10 must be a positive multiple of 4"):
        tiny_cfg(down_dims=(16, 32, 64), horizon=10, n_action_steps=4)
    tiny_cfg(down_dims=(16, 32, 64), horizon=12, n_action_steps=4)  # 12 % 4 == 0 is fine
    unet = ConditionalUnet1D(7, 4, down_dims=(16, 32, 64), step_embed_dim=16)
    with pytest.raises(ValueError, match="multiple of 4"):
        unet(torch.randn(1, 6, 7), 0, torch.zeros(1, 4))


def test_config_validation_names_choices():
    with pytest.raises(ValueError, match="unknown preset 'huge'.*base"):
        DiffusionConfig(preset="huge")
    with pytest.raises(ValueError, match="unknown scheduler 'euler'.*ddim, ddpm"):
        tiny_cfg(scheduler="euler")
    with pytest.raises(ValueError, match="n_action_steps=16"):
        tiny_cfg(n_action_steps=16)
    with pytest.raises(ValueError, match="num_inference_steps=101"):
        tiny_cfg(num_inference_steps=101)
    cfg = tiny_cfg(down_dims=[16, 32])  # lists from JSON/TOML become tuples
    assert cfg.resolved().down_dims == (16, 32) and DiffusionConfig().resolved().down_dims == (256, 512, 1024)


def test_image_encoder_groupnorm_and_keypoints():
    trunk = resnet18_trunk()  # the real torchvision ResNet-18 topology
    assert not any(isinstance(m, nn.BatchNorm2d) for m in trunk.modules())
    norms = [m for m in trunk.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and all(m.num_groups == m.num_channels // 16 for m in norms)
    enc = ResNetKeypointEncoder(feature_dim=8, num_keypoints=4, width=8)
    assert enc(torch.randn(2, 3, 28, 28)).shape == (2, 8)
    pool = KeypointPool(5, 3)
    kp = pool(torch.randn(2, 5, 4, 6))
    assert kp.shape == (2, 6) and kp.abs().max() <= 1.0
    assert sorted(n for n, _ in pool.named_parameters()) == ["keypoint_conv.bias", "keypoint_conv.weight"]


def test_compute_loss_and_data_spec():
    model = tiny_model()
    loss, info = model.compute_loss(make_batch())
    assert loss.ndim == 0 and torch.isfinite(loss) and info["loss"] == pytest.approx(loss.item())
    loss.backward()
    assert model.data_spec() == {"n_obs": 2, "horizon": 16, "goal_offset": None,
                                 "image_keys": ("image", "wrist_image")}
    with pytest.raises(ValueError, match="action must be"):
        model.compute_loss({**make_batch(), "action": torch.zeros(4, 8, 7)})
    masked = tiny_model(mask_padded_actions=True)
    batch = make_batch()
    batch["action_is_pad"][:, 10:] = True
    assert torch.isfinite(masked.compute_loss(batch)[0])


def test_action_normalization_round_trip_and_zero_range():
    stats = make_stats()
    stats["action"]["min"][6] = stats["action"]["max"][6] = -1.0  # a constant dimension must not divide by 0
    model = DiffusionModel(tiny_cfg(), stats)
    lo, hi = torch.tensor(stats["action"]["min"]), torch.tensor(stats["action"]["max"])
    a = lo + torch.rand(5, 7) * (hi - lo)
    n = model.normalize_action(a)
    assert torch.isfinite(n).all() and n.abs().max() <= 1.0 and torch.allclose(n[:, 6], torch.zeros(5))
    assert torch.allclose(model.unnormalize_action(n), a, atol=1e-6)


def test_text_encoder_not_in_state_dict_and_deepcopy():
    model = tiny_model()
    keys = list(model.state_dict())
    assert not any("text" in k or "bert" in k or "embeddings" in k for k in keys)
    assert all(k.split(".")[0] in {"action_center", "action_half_range", "state_center", "state_half_range",
                                   "front_encoder", "wrist_encoder", "lang_proj", "unet"} for k in keys)
    copy.deepcopy(model).compute_loss(make_batch())  # the EMA copies the model


# ---------------------------------------------------------------- policy


def test_policy_act_batches_slots_and_queues():
    model = tiny_model()
    policy = DiffusionPolicy(model, "cpu")
    calls = []
    orig = model.predict_action_chunk

    def spy(batch, generator=None):
        calls.append(batch)
        return orig(batch, generator=generator)

    model.predict_action_chunk = spy
    policy.reset(3)
    a = policy.act(make_obs(3))
    assert a.shape == (3, 7) and a.dtype == np.float32 and np.abs(a).max() <= 1.0
    assert len(calls) == 1 and calls[0]["image"].shape == (3, 2, 3, H, W)
    # A new episode pads its history with its first frame.
    assert torch.equal(calls[0]["image"][:, 0], calls[0]["image"][:, 1])
    for step in range(1, model.cfg.n_action_steps):  # the queued chunk is executed without sampling
        a = policy.act(make_obs(3, seed=step, is_first=[False] * 3))
        assert a.shape == (3, 7)
    assert len(calls) == 1
    # Queues are empty now: rows 0 and 2 (a subset, one of them restarting) get one batched call.
    obs = make_obs(2, seed=9, slots=[2, 0], is_first=[True, False])
    assert policy.act(obs).shape == (2, 7)
    assert len(calls) == 2 and calls[1]["image"].shape[0] == 2
    hist = calls[1]["image"]
    assert torch.equal(hist[0, 0], hist[0, 1])  # slot 2 restarted: padded again
    assert not torch.equal(hist[1, 0], hist[1, 1])  # slot 0 continues: previous and current frame


def test_policy_executes_the_right_chunk_slice():
    model = tiny_model()
    chunk = torch.linspace(-0.9, 0.9, 16)[None, :, None].expand(1, 16, 7).clone()
    model.predict_action_chunk = lambda batch, generator=None: chunk.expand(len(batch["instruction"]), 16, 7)
    policy = DiffusionPolicy(model)
    got = [policy.act(make_obs(1, is_first=[i == 0]))[0, 0] for i in range(8)]
    start = model.cfg.n_obs_steps - 1
    np.testing.assert_allclose(got, chunk[0, start:start + 8, 0].numpy(), atol=1e-6)


# ---------------------------------------------------------------- schedulers


def test_ddpm_add_noise_closed_form():
    model = tiny_model()
    sched = model.noise_scheduler
    assert isinstance(sched, DDPMScheduler) and sched.config.beta_schedule == "squaredcos_cap_v2"
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.rand(5, 16, 7, generator=g) * 2 - 1, torch.randn(5, 16, 7, generator=g)
    t = torch.tensor([0, 10, 50, 90, 99])
    abar = sched.alphas_cumprod[t].to(torch.float64)[:, None, None]
    expected = abar.sqrt() * x0.double() + (1 - abar).sqrt() * eps.double()
    torch.testing.assert_close(sched.add_noise(x0, eps, t).double(), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind,steps", [("ddim", 8), ("ddim", 16), ("ddim", 10), ("ddpm", 10)])
def test_sampler_step_count_and_trailing_start(kind, steps):
    model = tiny_model()
    seen = []
    unet_forward = model.unet.forward

    def counting(x, t, cond):
        seen.append(int(t))
        return unet_forward(x, t, cond)

    model.unet.forward = counting
    out = model.sample(torch.zeros(2, model.cond_dim), num_inference_steps=steps, scheduler=kind)
    assert out.shape == (2, 16, 7)
    assert len(seen) == steps and seen[0] == 99 and seen == sorted(seen, reverse=True)
    # The pitfall trailing spacing avoids: diffusers' default "leading" DDIM starts at t=84 for 8 of 100.
    leading = DDIMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2")
    leading.set_timesteps(8)
    assert int(leading.timesteps[0]) == 84


def test_sample_guards_step_count():
    model = tiny_model()
    with pytest.raises(ValueError, match="num_inference_steps=200"):
        model.sample(torch.zeros(1, model.cond_dim), num_inference_steps=200)


# ---------------------------------------------------------------- checkpoints


def test_save_load_round_trip_identical_samples(tmp_path):
    model = tiny_model(seed=1, down_dims=(16, 32)).eval()  # two U-Net levels: down/up paths saved too
    batch = make_batch(3)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    clone = tiny_model(seed=2, down_dims=(16, 32)).eval()
    clone.load_state_dict(load_file(str(path)))
    a = model.predict_action_chunk(batch, generator=torch.Generator().manual_seed(7))
    b = clone.predict_action_chunk(batch, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_from_checkpoint_directory(tmp_path):
    from vlabench.train.checkpoint import save_checkpoint

    model = tiny_model(seed=3)
    save_checkpoint(tmp_path / "ckpt", model, "diffusion", dataclasses.asdict(model.cfg), {}, make_stats(), {})
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["model_config"]["down_dims"] == [32]
    loaded = DiffusionPolicy.from_checkpoint(tmp_path / "ckpt", "cpu")
    ref = DiffusionPolicy(model, "cpu")
    np.testing.assert_array_equal(loaded.act(make_obs(2)), ref.act(make_obs(2)))
    assert SPEC.name == "diffusion" and SPEC.policy_cls is DiffusionPolicy


# ---------------------------------------------------------------- learning


def _eval_loss(model: DiffusionModel, batches: list[dict]) -> float:
    """Loss at fixed noise draws, timesteps and (center) crops, so before/after are comparable."""
    model.eval()
    torch.manual_seed(1234)
    with torch.no_grad():
        return float(np.mean([model.compute_loss(b)[0].item() for b in batches for _ in range(4)]))


def test_tiny_overfit_two_batches():
    model = tiny_model(seed=0)
    batches = [smooth_batch(4, seed=10), smooth_batch(4, seed=11)]
    before = _eval_loss(model, batches)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    model.train()
    for step in range(100):
        loss, _ = model.compute_loss(batches[step % 2])
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = _eval_loss(model, batches)
    assert after < 0.35 * before, (before, after)


def test_bimodal_targets_diffusion_keeps_both_modes_mse_averages():
    """Half the targets are constant +0.8, half -0.8, under one constant conditioning.

    A denoiser must sample both modes; an MSE regressor collapses onto their mean (~0), the reason
    Diffusion Policy models action *distributions* (Chi et al. 2023, Sec. 4).
    """
    horizon, batch, steps = 8, 128, 500
    torch.manual_seed(0)
    # The tiny preset's one-level U-Net: the fewest ops per step, which keeps this test short on CPU.
    model = DiffusionModel(tiny_cfg(horizon=horizon, n_action_steps=4), make_stats())
    cond = torch.zeros(batch, model.cond_dim)

    def targets() -> torch.Tensor:
        sign = torch.where(torch.rand(batch) < 0.5, -1.0, 1.0)
        return 0.8 * sign[:, None, None].expand(batch, horizon, 7)

    opt = torch.optim.AdamW(model.unet.parameters(), lr=5e-3)
    decay = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1 - i / steps)
    for _ in range(steps):
        loss = model.diffusion_loss(targets(), cond)
        opt.zero_grad()
        loss.backward()
        opt.step()
        decay.step()
    model.eval()
    samples = model.sample(torch.zeros(64, model.cond_dim), generator=torch.Generator().manual_seed(0))
    means = samples.mean(dim=(1, 2))
    plus, minus = (means - 0.8).abs() < 0.3, (means + 0.8).abs() < 0.3
    near_zero = means.abs() < 0.3
    assert plus.float().mean() >= 0.15 and minus.float().mean() >= 0.15, means
    assert near_zero.float().mean() <= 0.15, means

    # Same data, plain regression with MSE: predicts the average of the two modes.
    head = nn.Sequential(nn.Linear(model.cond_dim, 64), nn.Mish(), nn.Linear(64, horizon * 7))
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(200):
        loss = ((head(cond).view(batch, horizon, 7) - targets()) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    pred = head(cond[:1]).detach()
    assert pred.abs().mean() < 0.2, pred
