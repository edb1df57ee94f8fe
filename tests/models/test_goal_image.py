"""Tests of the goal-image generator (VAE, latent denoiser, sampler), goal-diffusion policy and image metrics.

Everything runs on CPU with tiny configurations (64x64 frames except the one 128 -> 16x16 VAE check)
and the test-only "hash" text encoder.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from vlabench.models.checkpoint import load_model
from vlabench.models.goal_image import SPEC, GoalDiffusionPolicy, GoalImageConfig, GoalImageModel
from vlabench.models.goal_image import unet as goal_unet
from vlabench.models.goal_image import vae as goal_vae
from vlabench.models.blocks.image_metrics import frechet_distance, psnr, ssim

S = 64  # frame size of most tests
ROOT = Path(__file__).resolve().parents[2]


def _stats() -> dict:
    return {k: {"min": [-1.0] * d, "max": [1.0] * d, "q01": [-1.0] * d, "q99": [1.0] * d,
                "mean": [0.0] * d, "std": [1.0] * d} for k, d in (("action", 7), ("state", 8))}


def tiny_cfg(**kw) -> GoalImageConfig:
    base = dict(preset="tiny", image_size=S, text_encoder="hash", max_text_len=8, n_sampling_steps=4,
                policy_inference_steps=2, goal_offset=3)
    base.update(kw)
    return GoalImageConfig(**base)


def blocks(n: int, size: int = S, seed: int = 0) -> torch.Tensor:
    """Synthetic scenes: uint8 (n, 3, size, size) grey table with one coloured square each."""
    g = torch.Generator().manual_seed(seed)
    img = torch.full((n, 3, size, size), 90, dtype=torch.uint8)
    q = size // 4
    for i in range(n):
        y, x = torch.randint(0, size - q, (2,), generator=g).tolist()
        img[i, :, y:y + q, x:x + q] = torch.randint(0, 256, (3, 1, 1), generator=g, dtype=torch.uint8)
    return img


def make_batch(b: int = 4, size: int = S) -> dict:
    frames = blocks(3 * b, size)
    return {"image": frames[:2 * b].view(b, 2, 3, size, size), "wrist_image": frames[:2 * b].view(b, 2, 3, size, size),
            "state": torch.randn(b, 2, 8), "action": torch.rand(b, 16, 7) * 2 - 1,
            "action_is_pad": torch.zeros(b, 16, dtype=torch.bool), "goal_image": frames[2 * b:],
            "instruction": ["pick up the red block", "put the block in the bowl"] * (b // 2), "task": ["pick"] * b}


@pytest.fixture(scope="module")
def model() -> GoalImageModel:
    torch.manual_seed(0)
    return GoalImageModel(tiny_cfg(), _stats()).eval()


# ---------------------------------------------------------------- autoencoder

def test_vae_128_to_4x16x16():
    vae = goal_vae.build_vae((16, 32, 32, 32), 1, 8, image_size=128)
    x = goal_vae.uint8_to_unit(blocks(2, 128))
    z = vae.encode(x).latent_dist.mean
    assert z.shape == (2, 4, 16, 16)
    assert vae.decode(z).sample.shape == (2, 3, 128, 128)
    assert goal_vae.vae_downsample_factor(vae) == 8


def test_vae_reconstruction_improves():
    torch.manual_seed(0)
    vae = goal_vae.build_vae((8, 16, 16, 16), 1, 4, image_size=32)  # 32 px keeps this CPU test fast
    imgs = blocks(4, 32)
    x = goal_vae.uint8_to_unit(imgs)
    before = goal_vae.reconstruction_psnr(vae, imgs)
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss, logs, mean, sample = goal_vae.vae_loss(vae, x, kl_weight=1e-4)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(logs["vae_rec"])
        assert not mean.requires_grad and not sample.requires_grad
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:3])
    assert goal_vae.reconstruction_psnr(vae, imgs) > before + 3.0


def test_load_pretrained_vae_local_dir(tmp_path):
    vae = goal_vae.build_vae((16, 32, 32, 32), 1, 8, image_size=S)
    vae.save_pretrained(tmp_path / "vae")
    back = goal_vae.load_pretrained_vae(tmp_path / "vae")
    assert all(torch.equal(a, b) for a, b in zip(vae.state_dict().values(), back.state_dict().values()))
    with pytest.raises(FileNotFoundError, match="AutoencoderKL directory"):
        goal_vae.load_pretrained_vae(tmp_path / "nothing")
    m = GoalImageModel(tiny_cfg(vae_path=str(tmp_path / "vae")), _stats())  # the model can start from it
    assert all(torch.equal(a, b) for a, b in zip(vae.state_dict().values(), m.vae.state_dict().values()))


# ---------------------------------------------------------------- guidance, dropout, sampling

def test_dual_guidance_formula():
    g = torch.Generator().manual_seed(0)
    u, i, f = (torch.randn(2, 4, 8, 8, generator=g) for _ in range(3))
    def close(a, b):
        return torch.allclose(a, b, atol=1e-6)

    assert close(goal_unet.combine_guidance(u, i, f, 0.0, 0.0), u)
    assert close(goal_unet.combine_guidance(u, i, f, 1.0, 1.0), f)
    assert close(goal_unet.combine_guidance(u, i, f, 1.0, 0.0), i)
    assert close(goal_unet.combine_guidance(u, i, f, 1.5, 7.5), u + 1.5 * (i - u) + 7.5 * (f - i))


def test_condition_dropout_rates_are_disjoint_and_trained():
    g = torch.Generator().manual_seed(0)
    dt, di = goal_unet.sample_condition_dropout(40000, 0.10, 0.05, 0.05, generator=g)
    both, text_only, image_only = (dt & di).float().mean(), (dt & ~di).float().mean(), (~dt & di).float().mean()
    assert abs(both - 0.05) < 0.006 and abs(text_only - 0.10) < 0.008 and abs(image_only - 0.05) < 0.006
    with pytest.raises(ValueError, match="sum to <= 1"):
        goal_unet.sample_condition_dropout(4, 0.6, 0.3, 0.2)


def test_generate_goals_deterministic_per_seed(model):
    imgs = blocks(2)
    instr = ["pick up the red block", "push the cube"]
    a = model.generate_goals(imgs, instr, seed=3)
    b = model.generate_goals(imgs, instr, seed=3)
    c = model.generate_goals(imgs, instr, seed=4)
    assert a.shape == (2, 3, S, S) and a.dtype == torch.uint8
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # other input sizes are resized for the generator and back
    assert model.generate_goals(blocks(1, 48), instr[:1], seed=0).shape == (1, 3, 48, 48)


def test_text_encoder_kept_out_of_state_dict(model):
    keys = list(model.state_dict())
    assert not [k for k in keys if "text" in k.split(".")[0] or "bert" in k or "embeddings.word" in k]
    assert {"latent_shift", "latent_scale"} <= set(keys)
    assert model.denoiser.config.in_channels == 8 and model.denoiser.config.cross_attention_dim == 384


# ---------------------------------------------------------------- training

def test_compute_loss_trains_all_parts():
    torch.manual_seed(0)
    m = GoalImageModel(tiny_cfg(), _stats()).train()
    assert m.data_spec() == {"n_obs": 2, "horizon": 16, "goal_offset": 3}
    loss, logs = m.compute_loss(make_batch())
    assert torch.isfinite(loss)
    assert {"vae_loss", "denoise_loss", "policy_loss", "vae_rec", "vae_kl"} <= set(logs)
    loss.backward()
    for part in ("vae", "denoiser", "policy"):
        grads = [p.grad for p in getattr(m, part).parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), part
    assert int(m.latent_stats_n) == 1 and float(m.latent_scale) != 1.0


def test_denoiser_overfits_tiny_data():
    torch.manual_seed(0)
    m = GoalImageModel(tiny_cfg(p_drop_text=0.0, p_drop_image=0.0, p_drop_both=0.0), _stats()).train()
    g = torch.Generator().manual_seed(1)
    context, target = torch.randn(4, 4, 8, 8, generator=g), torch.randn(4, 4, 8, 8, generator=g)
    instr = ["pick up the red block", "push the cube", "open the drawer", "stack two blocks"]

    def eval_loss() -> float:
        torch.manual_seed(123)  # same noise and timesteps every evaluation
        with torch.no_grad():
            return float(np.mean([float(m.denoise_loss(context, target, instr)) for _ in range(4)]))

    before = eval_loss()
    opt = torch.optim.Adam(m.denoiser.parameters(), lr=3e-3)
    for _ in range(80):
        loss = m.denoise_loss(context, target, instr)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = eval_loss()
    assert after < 0.5 * before, (before, after)


# ---------------------------------------------------------------- checkpoint and policy

def test_save_load_round_trip(tmp_path, model):
    from vlabench.train.checkpoint import save_checkpoint

    model.latent_scale.fill_(0.7)
    model.latent_shift.fill_(0.1)
    save_checkpoint(tmp_path / "ckpt", model, "goal-diffusion", model.cfg, {}, _stats(), {"path": "x"})
    back, info = load_model(tmp_path / "ckpt", "cpu", use_ema=True, expect="goal-diffusion")
    assert info.model_name == "goal-diffusion" and back.cfg == model.cfg
    sd, sd2 = model.state_dict(), back.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    imgs = blocks(2)
    assert torch.equal(model.generate_goals(imgs, ["a", "b"], seed=0), back.generate_goals(imgs, ["a", "b"], seed=0))
    pol = GoalDiffusionPolicy.from_checkpoint(tmp_path / "ckpt", "cpu")
    assert isinstance(pol.model, GoalImageModel)
    assert SPEC.name == "goal-diffusion" and SPEC.policy_cls is GoalDiffusionPolicy


def _obs(n: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 255, (n, S, S, 3), dtype=np.uint8),
            "wrist_image": rng.integers(0, 255, (n, S, S, 3), dtype=np.uint8),
            "state": rng.standard_normal((n, 8)).astype(np.float32),
            "instruction": ["pick up the red block", "push the cube", "open the drawer"][:n],
            "slot": np.arange(n, dtype=np.int64), "is_first": np.ones(n, bool)}


def test_policy_act_three_slots_and_replanning():
    torch.manual_seed(0)
    m = GoalImageModel(tiny_cfg(replan_every=3, n_action_steps=2), _stats())
    pol = GoalDiffusionPolicy(m, "cpu")
    pol.reset(3)
    obs = _obs(3)
    counts = []
    for step in range(7):
        a = pol.act(obs)
        assert a.shape == (3, 7) and a.dtype == np.float32 and np.all(np.abs(a) <= 1)
        counts.append(pol.n_goals_generated)
        obs["is_first"][:] = False
    # goals at steps 0, 3, 6 for all three slots, generated in one batch each
    assert counts == [3, 3, 3, 6, 6, 6, 9]
    def goals():
        return {s: pol.memory[s].data["goal"] for s in pol.memory.slots()}

    first_goals = {s: g.copy() for s, g in goals().items()}
    # a subset of slots, one of them starting a new episode: only that slot replans
    sub = {k: (v[1:] if not isinstance(v, list) else v[1:]) for k, v in _obs(3, seed=1).items()}
    sub["is_first"] = np.array([True, False])
    a = pol.act(sub)
    assert a.shape == (2, 7) and pol.n_goals_generated == 10
    assert {s: pol.memory[s].data["since_goal"] for s in pol.memory.slots()} == {0: 1, 1: 1, 2: 2}
    assert np.array_equal(goals()[2], first_goals[2]) and goals()[1].shape == (3, S, S)


# ---------------------------------------------------------------- metrics

def test_psnr_ssim_properties():
    x = blocks(3).float()
    assert torch.allclose(ssim(x, x), torch.ones(3))
    assert torch.isinf(psnr(x, x)).all()
    g = torch.Generator().manual_seed(0)
    prev_s, prev_p = 1.0, float("inf")
    for sigma in (2.0, 10.0, 40.0):
        y = (x + sigma * torch.randn(x.shape, generator=g)).clamp(0, 255)
        s, p = float(ssim(x, y).mean()), float(psnr(x, y).mean())
        assert s < prev_s and p < prev_p
        prev_s, prev_p = s, p
    y = (x + 10 * torch.randn(x.shape, generator=g)).clamp(0, 255)
    assert torch.allclose(ssim(x, y), ssim(y, x), atol=1e-6)
    # PSNR of a known MSE: a constant offset of 1 grey level on 255 range -> 48.13 dB
    assert abs(float(psnr(x, x + 1).mean()) - 48.1308) < 1e-3
    with pytest.raises(ValueError, match="window"):
        ssim(x[..., :8, :8], x[..., :8, :8])


def test_frechet_distance_gaussians():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((4000, 8)), rng.standard_normal((4000, 8))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, b) < 0.05
    assert frechet_distance(a, b + 2.0) == pytest.approx(32.0, rel=0.05)  # |mu|^2 = 8 * 4
    # few samples in many dimensions take the (N, M) nuclear-norm route; it must equal the D x D route
    x, y = rng.standard_normal((5, 40)), rng.standard_normal((6, 40)) * 2 + 1
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    vals, vecs = np.linalg.eigh(s1)
    r1 = (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T
    direct = ((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(s1) + np.trace(s2) \
        - 2 * np.sqrt(np.clip(np.linalg.eigvalsh(r1 @ s2 @ r1), 0, None)).sum()
    assert frechet_distance(x, y) == pytest.approx(direct, rel=1e-6)


@pytest.mark.pretrained
def test_image_metrics_run_on_demo_dataset(tmp_path, model, monkeypatch):
    from vlabench.data import ShardWriter
    from vlabench.eval import image_metrics
    from vlabench.train.checkpoint import save_checkpoint

    rng = np.random.default_rng(0)
    with ShardWriter(tmp_path / "demos", episodes_per_shard=2) as w:
        for i in range(3):
            T = 6
            frames = blocks(T, seed=i).permute(0, 2, 3, 1).numpy()
            state = rng.standard_normal((T, 8)).astype(np.float32)
            w.write({"obs": {"image": frames, "wrist_image": frames, "state": state},
                     "actions": rng.uniform(-1, 1, (T, 7)).astype(np.float32),
                     "sim": {"object_poses": np.zeros((T, 1, 7), np.float32)},
                     "attrs": {"instruction": f"pick the block {i}", "task": "pick", "split": "seen", "index": i,
                               "seed": i, "suite": "unit", "success": True, "n_steps": T, "env_kwargs": "{}"}})
    save_checkpoint(tmp_path / "ckpt", model, "goal-diffusion", model.cfg, {}, _stats(),
                    {"path": str(tmp_path / "demos"), "val_episodes": [2]})
    cfg = image_metrics.ImageMetricsConfig(checkpoint=str(tmp_path / "ckpt"), data=str(tmp_path / "demos"),
                                           n_samples=4, batch_size=4, device="cpu", n_sampling_steps=2)
    res = image_metrics.run(cfg)
    assert res["episodes"] == [2] and res["frechet_features"] == "FID-EffNetLite0 (not Inception)"
    for key in ("generated_vs_true", "vae_reconstruction_vs_true", "copy_current_vs_true"):
        assert set(res[key]) == {"psnr", "ssim", "frechet"} and np.isfinite(list(res[key].values())).all()
    assert json.loads((tmp_path / "ckpt" / "image_metrics.json").read_text()) == res


# ---------------------------------------------------------------- imagine, clip, recipes

class _FakeEnv:
    """Stands in for a TabletopEnv: frame t shows a square moved t pixels right."""

    def __init__(self, image_size: int) -> None:
        self.size, self.t = image_size, 0
        self.unwrapped = self

    def _obs(self) -> dict:
        img = np.full((self.size, self.size, 3), 90, np.uint8)
        img[10:20, 5 + self.t:15 + self.t] = (200, 30, 30)
        return {"image": img, "instruction": "push the red block right"}

    def reset(self, seed=None):
        self.t = 0
        return self._obs(), {}

    def expert_action(self) -> np.ndarray:
        return np.zeros(7, np.float32)

    def step(self, action):
        self.t += 1
        return self._obs(), 0.0, False, False, {"success": False}

    def close(self) -> None:
        pass


def test_imagine_writes_labelled_grid(tmp_path, model, monkeypatch):
    from PIL import Image

    from vlabench.eval import imagine as goal_imagine
    from vlabench.train.checkpoint import save_checkpoint

    import vlabench.env as real_env

    fake = types.ModuleType("vlabench.env")
    fake.make_env = lambda task, split="seen", **kw: _FakeEnv(kw.get("image_size", 128))
    fake.narrow = real_env.narrow  # load_suite checks env options with it
    monkeypatch.setitem(sys.modules, "vlabench.env", fake)
    save_checkpoint(tmp_path / "ckpt", model, "goal-diffusion", model.cfg, {}, _stats(), {})
    out = goal_imagine.run(goal_imagine.ImagineConfig(
        checkpoint=str(tmp_path / "ckpt"), task="push", out=str(tmp_path / "g.png"), image_size=S,
        guidance_image=[1.0, 2.0], guidance_text=[1.0], n_sampling_steps=2, tile_scale=1, device="cpu"))
    im = Image.open(out)
    assert im.format == "PNG" and im.width == 4 * (S + 4) + 4  # current, 2 goals, true future
    with pytest.raises(ValueError, match="same length"):
        goal_imagine._pairs(goal_imagine.ImagineConfig(checkpoint="x", task="t", guidance_image=[1, 2],
                                                       guidance_text=[1, 2, 3]))
    # --suite builds the env from the suite's [env] options (camera zoom etc.), so frames match its data
    seen_kw = {}
    fake.make_env = lambda task, split="seen", **kw: seen_kw.update(kw) or _FakeEnv(kw["image_size"])
    suite = tmp_path / "s.toml"
    suite.write_text(f'name = "s"\nkind = "eval"\nseed_range = [1000000, 1000010]\n[env]\nimage_size = {S}\n'
                     'front_fov = 35.0\n[[cells]]\ntask = "pick"\nsplits = ["seen"]\n')
    goal_imagine.run(goal_imagine.ImagineConfig(
        checkpoint=str(tmp_path / "ckpt"), task="push", out=str(tmp_path / "h.png"), suite=str(suite),
        guidance_image=[1.0], guidance_text=[1.0], n_sampling_steps=2, tile_scale=1, device="cpu"))
    assert seen_kw == {"image_size": S, "front_fov": 35.0}


def test_open_clip_token_states_from_local_weights(tmp_path):
    import open_clip

    cfg_dir = tmp_path / "clip_cfg"
    cfg_dir.mkdir()
    (cfg_dir / "vlabench-tiny-clip.json").write_text(json.dumps({
        "embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}))
    open_clip.add_model_config(cfg_dir)
    clip = open_clip.create_model("vlabench-tiny-clip", pretrained=None)
    torch.save(clip.state_dict(), tmp_path / "tiny_clip.pt")
    m = GoalImageModel(tiny_cfg(clip_model="vlabench-tiny-clip", clip_weights=str(tmp_path / "tiny_clip.pt")), _stats())
    states, mask = m.text(["pick up the red block", ""], "cpu")
    assert states.shape == (2, 8, 32) and mask.shape == (2, 8)
    assert mask[0].sum() == 7 and mask[1].sum() == 2  # SOT + 5 words + EOT; "" is SOT + EOT
    assert m.denoiser.config.cross_attention_dim == 32
    assert not [k for k in m.state_dict() if "token_embedding" in k]
    assert m.generate_goals(blocks(1), ["pick"], seed=0).shape == (1, 3, S, S)
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        goal_unet.ClipTokenEncoder("ViT-B-32", str(tmp_path / "missing.pt"))


@pytest.mark.parametrize("recipe, preset", [("goal_image.toml", "base"), ("goal_image_small.toml", "small")])
def test_recipes_parse(recipe, preset):
    from vlabench.train.config import load_recipe

    name, mcfg, tcfg = load_recipe(ROOT / "policies" / recipe)
    assert name == "goal-diffusion" and isinstance(mcfg, GoalImageConfig) and mcfg.preset == preset
    assert tcfg.steps > 0 and tcfg.batch_size > 0
