"""Checkpoint round trip, safe loading and atomicity."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from vlabench.models.checkpoint import checkpoint_hash, load_model, load_policy
from vlabench.train import checkpoint as ckpt
from vlabench.train.config import TrainConfig
from vlabench.train.ema import EMA


def _build(tiny, demo_dir, hidden=16):
    stats = json.loads((demo_dir / "stats.json").read_text())
    torch.manual_seed(0)
    cfg = tiny.TinyConfig(hidden=hidden)
    return tiny.TinyModel(cfg, stats), cfg, stats


def _trained(tiny, demo_dir):
    """A model after two optimizer steps, with optimizer, scheduler and EMA."""
    model, cfg, stats = _build(tiny, demo_dir)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
    ema = EMA(model, 0.9, 0.0)
    ds = tiny.SyntheticDemos(demo_dir, **model.data_spec())
    batch = torch.utils.data.default_collate([ds[i] for i in range(6)])
    for _ in range(2):
        loss, _ = model.compute_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        ema.update(model)
    return model, cfg, stats, opt, sched, ema


def _inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 255, (4, 3, 8, 8), dtype=torch.uint8, generator=g), torch.randn(4, 8, generator=g)


def _save(run, tiny, demo_dir, **kw):
    model, cfg, stats, opt, sched, ema = _trained(tiny, demo_dir)
    d = ckpt.save_checkpoint(run / "latest", model, "tiny", cfg, TrainConfig(steps=2), stats,
                             {"manifest_hash": "abc", "path": str(demo_dir)}, opt, sched, ema,
                             {"step": 2, "rng": [ckpt.capture_rng_state()]}, **kw)
    return d, model, ema


def test_round_trip_identical_outputs(tiny, demo_dir, tmp_path):
    d, model, ema = _save(tmp_path / "run", tiny, demo_dir)
    assert sorted(p.name for p in d.iterdir()) == sorted(
        ["model.safetensors", "ema.safetensors", "config.json", "stats.json", "dataset.json", "optimizer.pt",
         "trainer_state.json"])
    assert not list(d.parent.glob("latest.tmp-*")) and not list(d.parent.glob("latest.old-*"))
    model.eval()
    image, state = _inputs()
    loaded, info = load_model(tmp_path / "run", "cpu")  # run dir resolves to run/latest
    assert info.path == d and info.model_name == "tiny" and not info.used_ema
    assert info.dataset["manifest_hash"] == "abc" and info.trainer_state["step"] == 2
    assert info.model_config == model.cfg and info.train_config["steps"] == 2
    assert torch.equal(loaded.predict(image, state), model.predict(image, state))
    # tied weights stay tied after loading
    assert loaded.mid.weight.data_ptr() == loaded.mid_tied.weight.data_ptr()
    assert loaded.n_loss_calls.item() == 2


def test_load_policy_prefers_ema(tiny, demo_dir, tmp_path):
    d, model, ema = _save(tmp_path / "run", tiny, demo_dir)
    policy = load_policy(d, "cpu")
    assert isinstance(policy, tiny.TinyPolicy)
    assert torch.equal(policy.model.out.weight, ema.shadow["out.weight"])
    assert not torch.equal(policy.model.out.weight, model.out.weight)
    raw, _ = load_model(d, "cpu")
    assert torch.equal(raw.out.weight, model.out.weight)
    obs = {"image": np.zeros((2, 8, 8, 3), np.uint8), "state": np.zeros((2, 8), np.float32)}
    assert policy.act(obs).shape == (2, 7)


def test_optimizer_state_is_weights_only(tiny, demo_dir, tmp_path):
    d, _, _ = _save(tmp_path / "run", tiny, demo_dir)
    state = torch.load(d / "optimizer.pt", weights_only=True)
    assert set(state) == {"optimizer", "scheduler", "ema"}
    assert state["ema"]["num_updates"] == 2
    # and it restores into a fresh optimizer
    model, *_ = _build(tiny, demo_dir)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    opt.load_state_dict(state["optimizer"])
    assert opt.state_dict()["state"][0]["step"].item() == 2


class _Evil:
    marker = ""

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickled_object_refused(tiny, demo_dir, tmp_path):
    d, _, _ = _save(tmp_path / "run", tiny, demo_dir)
    marker = tmp_path / "pwned"
    evil = _Evil()
    evil.marker = str(marker)
    torch.save({"optimizer": evil, "scheduler": None, "ema": None}, d / "optimizer.pt")
    with pytest.raises(ValueError, match="refusing to load"):
        ckpt.load_training_state(d)
    assert not marker.exists()


def test_leftover_tmp_and_interrupted_swap(tiny, demo_dir, tmp_path):
    run = tmp_path / "run"
    d, model, _ = _save(run, tiny, demo_dir)
    h = checkpoint_hash(run)
    # a writer killed mid-save leaves a partial temp dir: loading ignores it
    junk = run / "latest.tmp-999999999"
    junk.mkdir()
    (junk / "model.safetensors").write_bytes(b"truncated")
    load_model(run, "cpu")
    # a crash between the two renames leaves only latest.old-<pid>: still loadable
    os.rename(d, run / "latest.old-4242")
    _, info = load_model(run, "cpu")
    assert info.path.name == "latest.old-4242"
    assert checkpoint_hash(run) == h
    # the next save cleans both up
    _save(run, tiny, demo_dir)
    assert sorted(p.name for p in run.iterdir()) == ["latest"]


def test_hash_is_deterministic_and_tracks_weights(tiny, demo_dir, tmp_path):
    _save(tmp_path / "a", tiny, demo_dir)
    _save(tmp_path / "b", tiny, demo_dir)
    assert checkpoint_hash(tmp_path / "a") == checkpoint_hash(tmp_path / "b")
    model, cfg, stats = _build(tiny, demo_dir)
    ckpt.save_checkpoint(tmp_path / "c", model, "tiny", cfg, TrainConfig(), stats, {})
    assert checkpoint_hash(tmp_path / "c") != checkpoint_hash(tmp_path / "a")
    assert len(checkpoint_hash(tmp_path / "c")) == 64


def test_mismatched_weights_error_lists_keys(tiny, demo_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    d, _, _ = _save(tmp_path / "run", tiny, demo_dir)
    t = load_file(str(d / "model.safetensors"))
    del t["out.bias"]
    t["extra.weight"] = torch.zeros(2)
    save_file(t, str(d / "model.safetensors"))
    with pytest.raises(ValueError, match=r"missing keys \(1\): out.bias.*unexpected keys \(1\): extra.weight"):
        load_model(d, "cpu")
    # a config that changes shapes is reported as a shape mismatch
    d2, _, _ = _save(tmp_path / "run2", tiny, demo_dir)
    conf = json.loads((d2 / "config.json").read_text())
    conf["model_config"]["hidden"] = 4
    (d2 / "config.json").write_text(json.dumps(conf))
    with pytest.raises(ValueError, match="shape mismatches"):
        load_model(d2, "cpu")


def test_missing_checkpoint_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_model(tmp_path / "nothing", "cpu")


def test_rng_state_round_trip():
    import random

    state = ckpt.capture_rng_state()
    json.dumps(state)  # plain data
    a = (torch.rand(3), np.random.rand(3), random.random())
    ckpt.restore_rng_state(json.loads(json.dumps(state)))
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
