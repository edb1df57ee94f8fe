import dataclasses
import json
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from vlabench.models.rt1 import SPEC, RT1Config, RT1Model, RT1Policy, block_causal_mask

STATS = {
    "action": {
        "q01": [-0.5] * 6 + [-1.0], "q99": [0.5] * 6 + [1.0], "min": [-1.0] * 7, "max": [1.0] * 7,
        "mean": [0.0] * 7, "std": [0.3] * 7,
    },
    "state": {k: [0.0] * 8 for k in ("q01", "q99", "min", "max", "mean", "std")},
}


def tiny_cfg(**kw) -> RT1Config:
    base = dict(preset="small", text_encoder="hash", n_layers=1, d_model=32, n_heads=2, image_size=64, n_frames=3)
    base.update(kw)
    return RT1Config(**base)


def make_batch(B=2, T=6, H=48, W=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randint(0, 256, (B, T, 3, H, W), dtype=torch.uint8, generator=g),
        "action": torch.rand(B, 1, 7, generator=g) * 2 - 1,
        "instruction": [f"pick up object {i}" for i in range(B)],
    }


def test_presets_and_validation():
    assert RT1Config().n_layers is None  # unresolved until the model is built: preset overrides stay live
    base = RT1Config().resolved()
    assert (base.n_layers, base.d_model, base.n_heads, base.dropout) == (8, 512, 8, 0.1)
    assert base.backbone == "lite0" and base.pretrained and base.n_frames == 6 and base.n_bins == 256
    small = RT1Config(preset="small", d_model=64).resolved()
    assert small.d_model == 64 and small.n_layers == 2 and small.backbone == "tiny"
    with pytest.raises(ValueError, match="known: base, small"):
        RT1Config(preset="huge")
    with pytest.raises(ValueError, match="known: lite0, b3, tiny"):
        RT1Config(backbone="resnet")
    with pytest.raises(ValueError, match="divisible"):
        RT1Config(d_model=100)  # base has 8 heads
    assert RT1Model(tiny_cfg(), STATS).cfg.backbone == "tiny"
    assert SPEC.name == "rt1" and SPEC.model_cls is RT1Model and SPEC.policy_cls is RT1Policy


def test_block_causal_mask():
    m = block_causal_mask(3, 2)
    assert m.shape == (6, 6)
    assert not m[5].any()  # last frame sees everything
    assert m[0, 2:].all() and not m[0, :2].any()  # first frame sees only itself (both its tokens)
    assert m[2, 4:].all() and not m[2, :4].any()


def test_small_preset_shapes_loss_and_state_dict():
    torch.manual_seed(0)
    model = RT1Model(RT1Config(preset="small", text_encoder="hash"), STATS)
    batch = make_batch(B=2, T=6)
    assert model.data_spec() == {"n_obs": 6, "horizon": 1, "goal_offset": None, "image_keys": ("image",)}
    logits = model(batch["image"], batch["instruction"])
    assert logits.shape == (2, 1, 7, 256)  # (B, action_horizon, 7, n_bins)
    loss, metrics = model.compute_loss(batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert set(metrics) == {"loss", "token_acc"} and all(isinstance(v, float) for v in metrics.values())
    loss.backward()
    assert model.image_encoder.films[0].gamma.weight.grad.abs().sum() > 0  # language reaches the encoder
    # Every trainable parameter gets a gradient (DDP needs no find_unused_parameters).
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    # The frozen sentence encoder is not part of the checkpoint.
    prefixes = {k.split(".")[0] for k in model.state_dict()}
    assert prefixes == {"image_encoder", "token_learner", "pos_emb", "transformer", "norm", "head"}
    with pytest.raises(ValueError, match="n_frames=6"):
        model.compute_loss(make_batch(B=2, T=3))


def _episodes():
    """Two synthetic episodes: a square moving across a coloured background, distinct actions per step."""
    rng = np.random.default_rng(0)
    eps = []
    for e, (bg, instr) in enumerate([((30, 30, 90), "push the red block left"), ((90, 40, 20), "lift the green cube")]):
        T = 8
        frames = np.zeros((T, 3, 48, 48), np.uint8)
        frames[:] = np.array(bg, np.uint8)[:, None, None]
        for t in range(T):
            frames[t, e, 4 + 4 * t : 12 + 4 * t, 10:20] = 255
        actions = rng.uniform(-0.45, 0.45, (T, 7)).astype(np.float32)
        actions[:, 6] = np.sign(actions[:, 6])
        eps.append((frames, actions, instr))
    return eps


def _windows(eps, n_frames):
    imgs, acts, instrs = [], [], []
    for frames, actions, instr in eps:
        for t in range(len(frames)):
            idx = np.clip(np.arange(t - n_frames + 1, t + 1), 0, None)  # edge padding like DemoDataset
            imgs.append(frames[idx])
            acts.append(actions[t : t + 1])
            instrs.append(instr)
    return {"image": torch.from_numpy(np.stack(imgs)), "action": torch.from_numpy(np.stack(acts)), "instruction": instrs}


def test_tiny_rt1_overfits_two_episodes():
    torch.manual_seed(0)
    cfg = tiny_cfg(d_model=64, n_heads=4, n_layers=1, crop_scale=1.0)
    model = RT1Model(cfg, STATS).train()
    batch = _windows(_episodes(), cfg.n_frames)  # 16 samples
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    start = time.perf_counter()
    first = None
    for step in range(150):
        loss, metrics = model.compute_loss(batch)
        first = metrics["loss"] if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 9 and metrics["loss"] < 0.1 * first:
            # BatchNorm running stats lag the weights: stop only once eval mode has caught up too.
            with torch.no_grad():
                _, eval_metrics = model.eval().compute_loss(batch)
            model.train()
            if eval_metrics["loss"] < 0.1 * first:
                break
    assert metrics["loss"] < 0.1 * first and eval_metrics["loss"] < 0.1 * first, (first, metrics, eval_metrics)
    assert eval_metrics["token_acc"] > 0.95
    assert time.perf_counter() - start < 120
    # The trained policy reproduces the demo actions (to within a bin) when replayed closed-loop.
    policy = RT1Policy(model, "cpu")
    policy.reset(2)
    eps = _episodes()
    errs = []
    for t in range(8):
        obs = {
            "image": np.stack([eps[0][0][t].transpose(1, 2, 0), eps[1][0][t].transpose(1, 2, 0)]),
            "instruction": [eps[0][2], eps[1][2]], "slot": np.array([0, 1]), "is_first": np.array([t == 0] * 2),
        }
        errs.append(np.abs(policy.act(obs) - np.stack([eps[0][1][t], eps[1][1][t]])))
    assert np.mean(np.concatenate(errs) < 0.01) > 0.8


def _obs(frames, instr, slots, first):
    return {
        "image": np.stack(frames), "instruction": instr, "slot": np.array(slots),
        "is_first": np.array(first), "state": np.zeros((len(frames), 8), np.float32),
        "wrist_image": np.zeros((len(frames), 8, 8, 3), np.uint8),
    }


def _rand_frames(n, seed, size=40):
    return list(np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8))


def _perturb(model):
    # Zero-init FiLM + random init can make actions insensitive to inputs; randomise for a real test.
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def test_policy_matches_model_forward_on_padded_history():
    torch.manual_seed(0)
    model = _perturb(RT1Model(tiny_cfg(), STATS)).eval()
    policy = RT1Policy(model, "cpu")
    policy.reset(1)
    frames = _rand_frames(5, seed=3)
    history = []
    for t, f in enumerate(frames):
        act = policy.act(_obs([f], ["open the drawer"], [0], [t == 0]))
        assert act.shape == (1, 7) and act.dtype == np.float32 and np.all(np.abs(act) <= 1)
        history.append(f)
        window = [history[max(0, i)] for i in range(len(history) - 3, len(history))]
        x = torch.from_numpy(np.stack(window)).permute(0, 3, 1, 2)[None]
        with torch.no_grad():
            ref = model.tokenizer.decode(model(x, ["open the drawer"])[:, 0].argmax(-1))
        np.testing.assert_allclose(act, np.clip(ref, -1, 1), atol=1e-6)


def test_policy_history_resets_on_is_first_per_slot():
    torch.manual_seed(0)
    model = _perturb(RT1Model(tiny_cfg(), STATS))
    policy = RT1Policy(model, "cpu")
    policy.reset(3)
    instr = ["stack the cups"] * 2
    for t, (fa, fb) in enumerate(zip(_rand_frames(4, 1), _rand_frames(4, 2))):
        policy.act(_obs([fa, fb], instr, [0, 2], [t == 0, t == 0]))
    def hist(slot):
        return torch.stack(list(policy.memory[slot].history))

    hist_slot2 = hist(2).clone()
    new = _rand_frames(1, 9)[0]
    # Only slot 0 starts a new episode; slot 2 is not in this batch and must keep its history.
    a = policy.act(_obs([new], instr[:1], [0], [True]))
    assert torch.equal(hist(2), hist_slot2)
    h0 = hist(0)
    assert all(torch.equal(h0[i], h0[-1]) for i in range(h0.shape[0]))  # history = the new frame only
    fresh = RT1Policy(model, "cpu")
    fresh.reset(1)
    np.testing.assert_array_equal(a, fresh.act(_obs([new], instr[:1], [0], [True])))
    # A slot's first call starts its history even without is_first.
    policy.act(_obs([fb], instr[:1], [1], [False]))
    assert policy.memory.slots() == [0, 1, 2]
    assert all(torch.equal(hist(1)[i], hist(1)[-1]) for i in range(3))
    policy.reset(3)
    assert policy.memory.slots() == []


def test_save_load_round_trip_gives_identical_actions(tmp_path):
    torch.manual_seed(0)
    model = _perturb(RT1Model(tiny_cfg(), STATS))
    save_file(model.state_dict(), str(tmp_path / "model.safetensors"))
    torch.manual_seed(123)
    other = RT1Model(tiny_cfg(), STATS)
    other.load_state_dict(load_file(str(tmp_path / "model.safetensors")), strict=True)
    (tmp_path / "config.json").write_text(json.dumps({"model": "rt1", "model_config": dataclasses.asdict(tiny_cfg())}))
    (tmp_path / "stats.json").write_text(json.dumps(STATS))
    policies = [RT1Policy(model, "cpu"), RT1Policy(other, "cpu"), RT1Policy.from_checkpoint(tmp_path, "cpu")]
    for p in policies:
        p.reset(2)
    for t, frames in enumerate(zip(_rand_frames(4, 5), _rand_frames(4, 6))):
        obs = _obs(list(frames), ["put the apple in the bowl", "push the button"], [0, 1], [t == 0] * 2)
        acts = [p.act(obs) for p in policies]
        np.testing.assert_array_equal(acts[0], acts[1])
        np.testing.assert_array_equal(acts[0], acts[2])


def test_spatial_position_codes_tell_every_cell_apart():
    from vlabench.models.rt1 import sincos_2d

    codes = sincos_2d(16, 3, 4)
    assert codes.shape == (16, 3, 4)
    flat = codes.flatten(1).T  # (12 cells, 16)
    dists = torch.cdist(flat, flat) + torch.eye(12) * 1e3
    assert dists.min() > 0.1  # no two cells share a code


def test_expected_value_decoding_is_an_inference_option():
    torch.manual_seed(0)
    model = _perturb(RT1Model(tiny_cfg(), STATS)).eval()
    argmax, mean = RT1Policy(model, "cpu"), RT1Policy(model, "cpu", decode="mean")
    frames = _rand_frames(2, 1)
    obs = _obs(frames, ["pick up the apple", "push the button"], [0, 1], [True, True])
    a, b = argmax.act(obs), mean.act(obs)
    assert b.shape == (2, 7) and np.all(np.abs(b) <= 1.0)
    assert not np.allclose(a, b)  # the expectation lands between bins, argmax on a bin centre
    with pytest.raises(ValueError, match="valid: argmax, mean"):
        RT1Policy(model, "cpu", decode="sample")


def test_frozen_trunk_has_no_gradients_keeps_bn_statistics_and_matches_its_cache():
    torch.manual_seed(0)
    full = RT1Model(tiny_cfg(), STATS)
    n_blocks = full.image_encoder.n_blocks
    model = _perturb(RT1Model(tiny_cfg(frozen_blocks=n_blocks - 1), STATS)).train()
    enc = model.image_encoder
    assert len(enc.films) == 1 and len(full.image_encoder.films) == n_blocks
    frozen = [p for m in enc._frozen_modules() for p in m.parameters()]
    assert frozen and not any(p.requires_grad for p in frozen)
    assert not any(m.training for m in enc._frozen_modules()) and enc.films.training
    with pytest.raises(ValueError, match=f"frozen_blocks must be in 0..{n_blocks}"):
        RT1Model(tiny_cfg(frozen_blocks=n_blocks + 1), STATS)
    batch = make_batch(B=2, T=3, H=40, W=40)
    trunk_before = {k: v.clone() for k, v in enc.trunk_state().items()}
    fp = model.trunk_encoder().fingerprint()
    loss, _ = model.compute_loss(batch)
    loss.backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1).step()
    assert all(torch.equal(v, trunk_before[k]) for k, v in enc.trunk_state().items())  # BN stats untouched too
    assert model.trunk_encoder().fingerprint() == fp  # training the rest keeps the cache valid
    with torch.no_grad():
        next(iter(enc._frozen_modules()[2].parameters())).add_(1.0)
    assert model.trunk_encoder().fingerprint() != fp  # other trunk weights: another cache
    # Cached features (what training reads) and live frames (what the policy sees) give the same logits.
    model.eval()
    frames = batch["image"]
    cached = model.trunk_encoder().encode(frames.flatten(0, 1).permute(0, 2, 3, 1).numpy())
    trunk = torch.from_numpy(cached).view(2, 3, *cached.shape[1:])
    with torch.no_grad():
        live = model(frames, batch["instruction"])
        from_cache = model(None, batch["instruction"], trunk=trunk)
    torch.testing.assert_close(live, from_cache)
    with pytest.raises(ValueError, match="frozen_blocks > 0"):
        full(None, batch["instruction"], trunk=trunk)


def test_feature_shift_moves_the_map_by_whole_cells_per_sample():
    from vlabench.models.blocks.trunk_features import random_shift

    x = torch.arange(2 * 2 * 1 * 5 * 5, dtype=torch.float32).view(2, 2, 1, 5, 5)
    torch.manual_seed(0)
    outs = [random_shift(x, 1) for _ in range(20)]
    for out in outs:
        assert out.shape == x.shape
        for b in range(2):
            assert torch.equal(out[b, 0] - x[b, 0, :, 2, 2], out[b, 1] - x[b, 1, :, 2, 2])  # one shift per sample
    centres = {float(out[0, 0, 0, 2, 2] - x[0, 0, 0, 2, 2]) for out in outs}
    assert centres <= {-6.0, -5.0, -4.0, -1.0, 0.0, 1.0, 4.0, 5.0, 6.0} and len(centres) > 3


def test_action_chunks_skip_padded_steps_and_ensemble_in_the_policy():
    torch.manual_seed(0)
    model = _perturb(RT1Model(tiny_cfg(action_horizon=3, n_frames=1), STATS))
    batch = make_batch(B=2, T=1)
    batch["action"] = torch.rand(2, 3, 7) * 2 - 1
    batch["action_is_pad"] = torch.tensor([[False, False, False], [False, True, True]])
    assert model.data_spec()["horizon"] == 3
    model.eval()
    with torch.no_grad():
        loss, _ = model.compute_loss(batch)
        changed = dict(batch, action=batch["action"].clone())
        changed["action"][1, 1:] = -changed["action"][1, 1:]  # only padded steps differ
        assert float(model.compute_loss(changed)[0]) == pytest.approx(float(loss))
    policy = RT1Policy(model, "cpu", decode="mean", ensemble_decay=0.0)
    frames = _rand_frames(3, seed=4)
    chunks, acts = [], []
    for t, f in enumerate(frames):
        acts.append(policy.act(_obs([f], ["pick up the cup"], [0], [t == 0]))[0])
        x = torch.from_numpy(f).permute(2, 0, 1)[None, None]
        with torch.no_grad():
            chunks.append(model.tokenizer.decode_expected(model(x, ["pick up the cup"]).softmax(-1))[0])
    np.testing.assert_allclose(acts[0], np.clip(chunks[0][0], -1, 1), atol=1e-6)
    np.testing.assert_allclose(acts[2], np.clip((chunks[0][2] + chunks[1][1] + chunks[2][0]) / 3, -1, 1), atol=1e-6)


def test_state_embedding_is_required_once_trained_with():
    stats = dict(STATS, state={"min": [-1.0] * 8, "max": [1.0] * 8})
    torch.manual_seed(0)
    model = _perturb(RT1Model(tiny_cfg(use_state=True, n_frames=1), stats)).eval()
    batch = make_batch(B=2, T=1)
    with pytest.raises(ValueError, match="use_state=True"):
        model(batch["image"], batch["instruction"])
    with torch.no_grad():
        a = model(batch["image"], batch["instruction"], torch.zeros(2, 1, 8))
        b = model(batch["image"], batch["instruction"], torch.ones(2, 1, 8))
    assert not torch.allclose(a, b)
    policy = RT1Policy(model, "cpu")
    obs = _obs(_rand_frames(1, seed=2), ["push the box"], [0], [True])
    del obs["state"]
    with pytest.raises(KeyError, match="needs 'state'"):
        policy.act(obs)


def test_wrist_camera_adds_its_tokens_and_its_cache():
    torch.manual_seed(0)
    full = RT1Model(tiny_cfg(), STATS)
    model = _perturb(RT1Model(tiny_cfg(use_wrist=True, frozen_blocks=full.image_encoder.n_blocks - 1), STATS)).eval()
    spec = model.data_spec()
    assert spec["image_keys"] == () and sorted(spec["features"]) == ["image", "wrist_image"]
    assert spec["features"]["wrist_image"].stream == "wrist_image"
    batch = make_batch(B=2, T=3, H=40, W=40)
    wrist = torch.randint(0, 256, (2, 3, 3, 32, 32), dtype=torch.uint8)
    with pytest.raises(ValueError, match="use_wrist=True"):
        model(batch["image"], batch["instruction"])
    enc = model.trunk_encoder("wrist_image")

    def cached(x):
        f = enc.encode(x.flatten(0, 1).permute(0, 2, 3, 1).numpy())
        return torch.from_numpy(f).view(2, 3, *f.shape[1:])

    with torch.no_grad():
        live = model(batch["image"], batch["instruction"], wrist=wrist)
        from_cache = model(None, batch["instruction"], trunk=cached(batch["image"]), wrist_trunk=cached(wrist))
        other = model(batch["image"], batch["instruction"], wrist=255 - wrist)
    torch.testing.assert_close(live, from_cache)
    assert not torch.allclose(live, other)  # the wrist view matters
    policy = RT1Policy(model, "cpu")
    obs = _obs(_rand_frames(2, seed=1), ["pick up the cup"] * 2, [0, 1], [True, True])
    obs["wrist_image"] = np.stack(_rand_frames(2, seed=2, size=32))
    assert policy.act(obs).shape == (2, 7)
    assert policy.memory[0].history[0].shape == (2 * model.cfg.tokens_per_frame, model.cfg.d_model)


def test_privileged_auxiliary_loss_trains_only_and_needs_the_stream():
    from vlabench.contracts import privileged_slice
    from vlabench.env import PRIVILEGED_DIM, PRIVILEGED_FIELDS
    from vlabench.models.blocks.aux_geometry import AUX_INDEX

    # The contract's field table is the env's layout (the env appends the task one-hot).
    assert privileged_slice("goal_minus_target") == slice(22, 25) and PRIVILEGED_FIELDS[-1][0] == "task_onehot"
    assert len(AUX_INDEX) == 12 and max(AUX_INDEX) < PRIVILEGED_DIM
    with pytest.raises(ValueError, match="'privileged'"):
        RT1Model(tiny_cfg(aux_privileged=1.0), STATS)
    stats = dict(STATS, privileged={"min": [-1.0] * PRIVILEGED_DIM, "max": [1.0] * PRIVILEGED_DIM})
    torch.manual_seed(0)
    model = RT1Model(tiny_cfg(aux_privileged=0.5, n_frames=2, crop_scale=1.0), stats)
    assert model.data_spec()["privileged"] is True
    assert "privileged" not in RT1Model(tiny_cfg(n_frames=2), STATS).data_spec()
    batch = make_batch(B=4, T=2)
    batch["privileged"] = torch.rand(4, 2, PRIVILEGED_DIM) * 2 - 1
    loss, metrics = model.compute_loss(batch)
    assert metrics["loss"] == pytest.approx(metrics["action_loss"] + 0.5 * metrics["aux_loss"], rel=1e-5)
    with torch.no_grad():
        pred = model.aux_head(model.pooled(batch["image"], batch["instruction"]))
    assert metrics["aux_loss"] == pytest.approx(float(((pred - batch["privileged"][:, -1, AUX_INDEX]) ** 2).mean()), rel=1e-5)
    loss.backward()
    assert model.token_learner.parameters().__next__().grad is not None
    # Training on the summed loss fits the geometry too: the pooled tokens can carry it.
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = metrics["aux_loss"]
    for _ in range(30):
        opt.zero_grad()
        loss, m = model.compute_loss(batch)
        loss.backward()
        opt.step()
    assert m["aux_loss"] < 0.5 * first
    # Inference never reads the privileged state.
    from vlabench.contracts import Traits

    policy = RT1Policy(model.eval(), "cpu")
    assert "privileged" not in Traits.of(policy).obs_keys
    assert policy.act(_obs(_rand_frames(2, seed=3), ["pick up the cup"] * 2, [0, 1], [True, True])).shape == (2, 7)
