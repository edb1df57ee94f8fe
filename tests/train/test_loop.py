"""The training loop on a tiny model and synthetic demos: learning, exact resume, recipes and the CLI."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vlabench.models.checkpoint import load_policy, resolve_checkpoint_dir
from vlabench.train import command, loop
from vlabench.train import config as tconfig
from vlabench.train.command import parse_train_args
from vlabench.train.config import TrainConfig, load_recipe
from vlabench.train.data import EpochBatchSampler, split_by_episode
from vlabench.train.ema import ema_decay_at
from vlabench.train.logger import read_metrics
from vlabench.train.optim import lr_lambda


def _cfg(**kw) -> TrainConfig:
    base = dict(steps=20, batch_size=8, lr=3e-3, warmup_steps=2, num_workers=0, val_fraction=0.25, val_every=5,
                val_batches=2, log_every=1, save_every=5, device="cpu", seed=3)
    base.update(kw)
    return TrainConfig(**base)


def _losses(run: Path, key: str = "loss") -> dict[int, float]:
    return {int(r["step"]): r[key] for r in read_metrics(run / "metrics.csv") if r.get(key) is not None}


def test_loss_decreases_and_outputs(tiny, demo_dir, tmp_path):
    run = tmp_path / "run"
    out = loop.train("tiny", tiny.TinyConfig(), _cfg(steps=60, lr=3e-2, val_every=20), demo_dir, run)
    assert out == run / "latest" and (out / "model.safetensors").is_file()
    rows = read_metrics(run / "metrics.csv")
    losses = [r["loss"] for r in rows]
    assert len(losses) == 60 and np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    val = _losses(run, "val_loss")
    assert sorted(val) == [20, 40, 60] and val[60] < val[20]
    assert {"mse", "pad_frac", "grad_norm", "lr", "samples_per_s"} <= set(rows[0])
    info = json.loads((out / "dataset.json").read_text())
    assert info["manifest_hash"] == "synthetic-8x12" and len(info["val_episodes"]) == 2
    assert json.loads((out / "trainer_state.json").read_text())["step"] == 60
    # a fresh run never overwrites an existing one
    with pytest.raises(FileExistsError, match="--resume"):
        loop.train("tiny", tiny.TinyConfig(), _cfg(steps=2), demo_dir, run)


def _recipe(tmp_path: Path, train: dict, model: dict | None = None) -> Path:
    lines = ["[model]", 'name = "tiny"'] + [f"{k} = {json.dumps(v)}" for k, v in (model or {}).items()]
    lines += ["", "[train]"] + [f"{k} = {json.dumps(v)}" for k, v in train.items()]
    p = tmp_path / "tiny.toml"
    p.write_text("\n".join(lines) + "\n")
    return p


def _slow_train(name, mcfg, tcfg, data, out) -> None:
    os.environ["VLABENCH_TEST_STEP_SLEEP"] = "0.1"
    sys.stderr = open(os.devnull, "w")  # no progress bar noise from the child
    loop.train(name, mcfg, tcfg, data, out)


def test_resume_after_kill_matches_uninterrupted(tiny, demo_dir, tmp_path):
    n = 30
    train = dict(steps=n, batch_size=8, lr=3e-3, warmup_steps=2, num_workers=0, val_fraction=0.25, val_every=10,
                 val_batches=2, log_every=1, save_every=5, device="cpu", seed=3, ema_decay=0.9)
    recipe = _recipe(tmp_path, train)
    name, mcfg, tcfg = load_recipe(recipe)
    ref = tmp_path / "ref"
    loop.train(name, mcfg, tcfg, demo_dir, ref)

    killed = tmp_path / "killed"
    # A forked child (no second `import torch`) runs the same recipe slowly and is SIGKILLed mid-run.
    proc = mp.get_context("fork").Process(target=_slow_train, args=(name, mcfg, tcfg, demo_dir, killed))
    proc.start()

    def saved_step() -> int:
        try:  # the checkpoint dir may be mid-swap while we look
            return json.loads((resolve_checkpoint_dir(killed) / "trainer_state.json").read_text())["step"]
        except (OSError, ValueError, KeyError):
            return 0

    deadline = time.monotonic() + 120
    try:
        while saved_step() < 10:
            assert proc.is_alive(), f"training child exited early with {proc.exitcode}"
            assert time.monotonic() < deadline, "the child made no checkpoint in time"
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
    k = saved_step()
    assert 10 <= k < n

    loop.train(name, mcfg, tcfg, demo_dir, killed, resume=True)
    a, b = _losses(ref), _losses(killed)
    # rows the killed run logged after step k were dropped, none is missing or doubled
    assert [int(r["step"]) for r in read_metrics(killed / "metrics.csv") if r["loss"] is not None] == list(range(1, n + 1))
    for s in range(k + 1, n + 1):
        assert abs(a[s] - b[s]) < 1e-5, (s, a[s], b[s])
    for key in ("val_loss", "val_loss_ema"):
        va, vb = _losses(ref, key), _losses(killed, key)
        assert va.keys() == vb.keys() and all(abs(va[s] - vb[s]) < 1e-5 for s in va)
    for f in ("model.safetensors", "ema.safetensors"):
        wa, wb = load_file(str(ref / "latest" / f)), load_file(str(killed / "latest" / f))
        assert all(torch.allclose(wa[key], wb[key], atol=1e-6) for key in wa)


def test_workers_do_not_change_the_curve(tiny, demo_dir, tmp_path):
    cfg0, cfg2 = _cfg(steps=6, val_every=3), _cfg(steps=6, val_every=3, num_workers=2)
    loop.train("tiny", tiny.TinyConfig(), cfg0, demo_dir, tmp_path / "w0")
    loop.train("tiny", tiny.TinyConfig(), cfg2, demo_dir, tmp_path / "w2")
    for key in ("loss", "val_loss"):
        a, b = _losses(tmp_path / "w0", key), _losses(tmp_path / "w2", key)
        assert a.keys() == b.keys() and all(abs(a[s] - b[s]) < 1e-6 for s in a)


def test_time_budget_stops_and_resume_finishes(tiny, demo_dir, tmp_path, monkeypatch):
    run = tmp_path / "run"
    # The periodic rollout runs `vlabench eval` in another process, which does not know the test-only
    # model 'tiny': it fails, and training must only warn and go on.
    with pytest.warns(UserWarning, match="periodic evaluation at step 1 failed"):
        loop.train("tiny", tiny.TinyConfig(), _cfg(steps=8, max_minutes=1e-9, eval_every=1), demo_dir, run)
    assert json.loads((run / "latest" / "trainer_state.json").read_text())["step"] == 1
    loop.train("tiny", tiny.TinyConfig(), _cfg(steps=8, keep_every=4), demo_dir, run, resume=True)
    assert json.loads((run / "latest" / "trainer_state.json").read_text())["step"] == 8
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == ["latest", "step_00000004", "step_00000008"]


def test_cli_entry_with_overrides(tiny, demo_dir, tmp_path):
    recipe = _recipe(tmp_path, dict(steps=50, batch_size=4, device="cpu", num_workers=0), {"hidden": 8})
    out = tmp_path / "cli"
    argv = ["--recipe", str(recipe), "--data", str(demo_dir), "--out", str(out), "--train.steps", "3",
            "--train.log-every", "1", "--train.val_fraction", "0", "--model.preset", "small", "--train.betas", "0.9", "0.95"]
    args = parse_train_args(argv)
    mcfg, tcfg = args.model, args.train
    assert (args.recipe, args.data, args.out, args.resume, args.skip_bad) == (recipe, demo_dir, out, False, False)
    assert mcfg == tiny.TinyConfig(hidden=8, preset="small")  # recipe value kept, CLI override applied
    assert (tcfg.steps, tcfg.batch_size, tcfg.log_every, tcfg.betas, tcfg.val_fraction) == (3, 4, 1, (0.9, 0.95), 0.0)
    assert command.run(argv) == out / "latest"
    assert len(read_metrics(out / "metrics.csv")) == 3
    conf = json.loads((out / "latest" / "config.json").read_text())
    assert conf["model"] == "tiny" and conf["model_config"]["preset"] == "small" and conf["train_config"]["steps"] == 3
    # parsed-args form (no overrides)
    recipe2 = _recipe(tmp_path, dict(steps=2, batch_size=4, device="cpu", num_workers=0, val_fraction=0.0))
    assert command.run(command.TrainArgs(recipe2, demo_dir, tmp_path / "cmd")) == tmp_path / "cmd" / "latest"


def test_bad_recipe_errors(tiny, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[model]\nname = "tiny"\nhiden = 3\n')
    with pytest.raises(ValueError) as e:
        load_recipe(bad)
    msg = str(e.value)
    assert str(bad) in msg and "'hiden'" in msg and "hidden" in msg and "dropout" in msg
    bad.write_text('[model]\nname = "tiny"\n[train]\nstep = 3\n')
    with pytest.raises(ValueError, match=r"\[train\]: unknown key 'step'.*valid keys: steps, batch_size"):
        load_recipe(bad)
    bad.write_text('[model]\nname = "rt7"\n')
    with pytest.raises(ValueError, match="unknown model 'rt7'; known: .*tiny"):
        load_recipe(bad)
    bad.write_text('modle = "tiny"\n')
    with pytest.raises(ValueError, match="unknown top-level key"):
        load_recipe(bad)
    bad.write_text('model = "tiny"\n[train]\ndevice = "gpu"\n')
    with pytest.raises(ValueError, match="'gpu' is not valid"):
        load_recipe(bad)
    ok = tmp_path / "ok.toml"
    ok.write_text('model = "tiny"\n[train]\nbetas = [0.9, 0.95]\n')
    assert load_recipe(ok)[1:] == (tiny.TinyConfig(), TrainConfig(betas=(0.9, 0.95)))
    with pytest.raises(SystemExit, match="--recipe is required"):
        parse_train_args(["--data", "x"])


def test_every_train_field_has_a_docstring():
    import dataclasses
    import inspect

    src = inspect.getsource(tconfig.TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        after = src.split(f"\n    {f.name}:", 1)[1].split("\n", 2)[1].strip()
        assert after.startswith('"""'), f.name


def test_schedules():
    f = lr_lambda(warmup=4, total=14)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(9) == pytest.approx(0.5) and f(14) == pytest.approx(0.0)
    assert ema_decay_at(0, 0.999, 0.75) == 0.0
    assert ema_decay_at(10, 0.999, 0.75) == pytest.approx(1 - 11 ** -0.75)
    assert ema_decay_at(10**9, 0.999, 0.75) == 0.999 and ema_decay_at(0, 0.9, 0.0) == 0.9


def test_sampler_order_and_sharding():
    s = EpochBatchSampler(range(100), 8, seed=1, rank=0, world=1)
    assert s.batches_per_epoch == 12
    full = list(s.epoch_batches(3))
    assert full == list(s.epoch_batches(3)) and full != list(s.epoch_batches(4))
    s.set_epoch(3, 5)
    assert list(s) == full[5:]  # resuming mid-epoch starts exactly there
    r0, r1 = (EpochBatchSampler(range(100), 8, 1, r, 2) for r in (0, 1))
    i0 = {i for b in r0.epoch_batches(0) for i, _ in b}
    i1 = {i for b in r1.epoch_batches(0) for i, _ in b}
    assert not i0 & i1 and len(i0) == len(i1) == 48
    seeds = [sd for b in full for _, sd in b]
    assert len(set(seeds)) == len(seeds)


def test_split_is_by_episode():
    eps = np.repeat(np.arange(10), 5)
    tr, va, val_eps = split_by_episode(eps, 0.2, seed=0)
    assert len(val_eps) == 2 and not set(eps[tr]) & set(eps[va]) and len(tr) + len(va) == 50
    assert split_by_episode(eps, 0.2, seed=0)[2] == val_eps
    assert split_by_episode(eps, 0.0, seed=0)[2] == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_train_and_resume(tiny, demo_dir, tmp_path):
    run = tmp_path / "gpu"
    loop.train("tiny", tiny.TinyConfig(), _cfg(steps=4, device="cuda", bf16=True, num_workers=2, ema_decay=0.9),
               demo_dir, run)
    loop.train("tiny", tiny.TinyConfig(), _cfg(steps=8, device="cuda", bf16=True, num_workers=2, ema_decay=0.9),
               demo_dir, run, resume=True)
    assert sorted(_losses(run)) == list(range(1, 9)) and all(np.isfinite(list(_losses(run).values())))
    policy = load_policy(run, "cpu")
    obs = {"image": np.zeros((2, 8, 8, 3), np.uint8), "state": np.zeros((2, 8), np.float32)}
    assert policy.act(obs).shape == (2, 7)


def test_real_demo_dataset(tiny, tmp_path):
    """Integration with vlabench.data: HDF5 shards -> DemoDataset -> split by episode -> train -> checkpoint."""
    from vlabench.data import ShardWriter

    rng = np.random.default_rng(0)
    root = tmp_path / "demos"
    with ShardWriter(root, episodes_per_shard=2) as w:
        for i in range(5):
            T = 6 + i
            img = rng.integers(0, 256, (T, 8, 8, 3), dtype=np.uint8)
            w.write({"obs": {"image": img, "wrist_image": img, "state": rng.standard_normal((T, 8)).astype(np.float32)},
                     "actions": rng.uniform(-1, 1, (T, 7)).astype(np.float32),
                     "sim": {"object_poses": np.zeros((T, 1, 7), np.float32)},
                     "attrs": {"instruction": f"pick the block {i}", "task": "pick", "split": "seen", "index": i,
                               "seed": i, "suite": "unit", "success": True, "n_steps": T, "env_kwargs": "{}"}})
    out = loop.train("tiny", tiny.TinyConfig(horizon=3), _cfg(steps=4, batch_size=4, val_fraction=0.2, val_every=2),
                     root, tmp_path / "run")
    info = json.loads((out / "dataset.json").read_text())
    manifest = json.loads((root / "manifest.json").read_text())
    assert info["manifest_hash"] == manifest["hash"] and info["n_samples"] == sum(6 + i for i in range(5))
    assert len(info["val_episodes"]) == 1 and info["val_episode_keys"][0][0] == "pick"
    assert json.loads((out / "stats.json").read_text()) == json.loads((root / "stats.json").read_text())
    assert sorted(_losses(tmp_path / "run", "val_loss")) == [2, 4]


def test_preset_override_resizes_every_field_the_recipe_leaves_out():
    # Presets resolve when the model is built, so --model.preset changes every unset field.
    model_cfg = parse_train_args(["--recipe", "policies/diffusion.toml", "--data", "d", "--out", "o",
                                  "--model.preset", "small"]).model
    assert model_cfg.preset == "small" and model_cfg.resolved().down_dims == (64, 128, 256)
    base_cfg = parse_train_args(["--recipe", "policies/diffusion.toml", "--data", "d", "--out", "o"]).model
    assert base_cfg.resolved().down_dims == (256, 512, 1024)
    # a field given explicitly survives a preset change
    cfg = parse_train_args(["--recipe", "policies/diffusion.toml", "--data", "d", "--out", "o",
                            "--model.preset", "small", "--model.down-dims", "32", "64"]).model
    assert cfg.resolved().down_dims == (32, 64) and cfg.resolved().step_embed_dim == 64


@pytest.mark.timeout(300)
def test_ctrl_c_saves_a_checkpoint_and_says_how_to_resume(tiny, demo_dir, tmp_path):
    import signal
    import subprocess
    import time

    recipe = _recipe(tmp_path, dict(steps=500, batch_size=4, device="cpu", num_workers=0, val_fraction=0.0,
                                    save_every=1000, log_every=1))
    out = tmp_path / "run"
    script = Path(__file__).with_name("train_script.py")
    proc = subprocess.Popen([sys.executable, str(script), "--recipe", str(recipe), "--data", str(demo_dir),
                             "--out", str(out)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env={**os.environ, "VLABENCH_TEST_STEP_SLEEP": "0.05"})
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (out / "metrics.csv").is_file():
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert "interrupted; checkpoint at step" in last and "rerun with --resume" in last and "Traceback" not in err
    step = json.loads((out / "latest" / "trainer_state.json").read_text())["step"]
    assert 0 < step < 500 and f"step {step}/500" in last


def test_resume_from_a_checkpoint_packed_without_optimizer_state(tiny, demo_dir, tmp_path):
    run, ref = tmp_path / "run", tmp_path / "ref"
    loop.train("tiny", tiny.TinyConfig(), _cfg(steps=4, save_every=4), demo_dir, run)
    (run / "latest" / "optimizer.pt").unlink()  # what vlabench.pipeline.pack brings back
    with pytest.warns(UserWarning, match="no optimizer.pt; the optimizer's moments restart"):
        loop.train("tiny", tiny.TinyConfig(), _cfg(steps=8), demo_dir, run, resume=True)
    loop.train("tiny", tiny.TinyConfig(), _cfg(steps=8), demo_dir, ref)
    lrs = {int(r["step"]): r["lr"] for r in read_metrics(run / "metrics.csv")}
    ref_lrs = {int(r["step"]): r["lr"] for r in read_metrics(ref / "metrics.csv")}
    # steps 1-4 ran under a 4-step schedule; after the resume the 8-step schedule continues at step 5
    assert {k: v for k, v in lrs.items() if k > 4} == {k: v for k, v in ref_lrs.items() if k > 4}
    assert json.loads((run / "latest" / "trainer_state.json").read_text())["step"] == 8
