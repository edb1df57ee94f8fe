"""Tests for the eval harness (vlabench.eval.harness / local / workers / ray_backend).

Apart from the real envs/smoke.toml run (shared by several tests), suites are tiny (64 px images,
few steps, 1-3 episodes per cell) so the whole file stays within about 3 minutes on a loaded 2-core
machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from eval_suites import write_suite
from vlabench.eval.harness import EvalConfig, run
from vlabench.eval.results import ResumeError
from vlabench.eval.workers import FAULT_ENV

REPO = Path(__file__).resolve().parents[2]
PROVENANCE = ("schema_version", "vlabench_version", "git_sha", "created", "suite", "policy", "renderer", "device",
              "torch_version", "pybullet_version", "cells", "splits", "overall")
SEED0 = 1_000_000


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def outcomes(out: Path) -> dict[tuple, tuple]:
    """Per-episode outcome by key, without timing fields."""
    return {(r["task"], r["split"], r["index"], r["seed"]):
            (r["status"], r["success"], r["success_step"], r["steps"], r["instruction"])
            for r in read_jsonl(out / "episodes.jsonl")}


@pytest.fixture(scope="module")
def expert_runs(tmp_path_factory) -> dict:
    """The expert on the real envs/smoke.toml (16 episodes) with 1 worker and with 2 workers (+ videos).

    About 90 s on a loaded 2-core machine; every test that needs a finished run shares these two.
    """
    tmp = tmp_path_factory.mktemp("expert")
    suite = REPO / "envs" / "smoke.toml"
    t0 = time.monotonic()
    r1 = run(EvalConfig(suite=suite, policy="expert", workers=1, out=tmp / "w1"))
    t1 = time.monotonic()
    r2 = run(EvalConfig(suite=suite, policy="expert", workers=2, out=tmp / "w2", videos_per_cell=1))
    print(f"smoke expert: 1 worker {t1 - t0:.1f}s, 2 workers {time.monotonic() - t1:.1f}s")
    return {"tmp": tmp, "suite": suite, "r1": r1, "r2": r2}


def test_smoke_expert_same_outcomes_with_1_and_2_workers(expert_runs) -> None:
    """Acceptance: the expert on envs/smoke.toml gives identical per-episode outcomes with 1 and 2 workers."""
    tmp = expert_runs["tmp"]
    o1, o2 = outcomes(tmp / "w1"), outcomes(tmp / "w2")
    assert len(o1) == expert_runs["r1"]["suite"]["n_episodes"] == 16 and o1 == o2
    assert all(v[0] == "ok" for v in o1.values())
    assert expert_runs["r1"]["overall"]["successes"] >= 14  # the oracle solves (nearly) every scene
    for key in ("cells", "splits", "overall"):
        assert expert_runs["r1"][key] == expert_runs["r2"][key]


def test_results_provenance_and_videos(expert_runs) -> None:
    out = expert_runs["tmp"] / "w2"
    res = json.loads((out / "results.json").read_text())
    assert res == expert_runs["r2"]
    for key in PROVENANCE:
        assert key in res, key
    assert set(res["suite"]) >= {"name", "path", "manifest_hash", "n_episodes"}
    assert res["suite"]["n_episodes"] == 16 and res["complete"] is True
    assert res["policy"] == {"name": "expert", "kind": "builtin", "checkpoint": None, "checkpoint_hash": None,
                             "options": {}}
    assert res["renderer"] == "tiny" and res["git_sha"] and res["pybullet_version"]
    cell = res["cells"][0]
    assert set(cell) == {"task", "split", "n", "successes", "errors", "rate", "ci95"}
    videos = sorted(p.name for p in (out / "videos").glob("*.mp4"))
    assert len(videos) == 8  # one per cell
    assert not (out / "videos" / ".candidates").exists()
    import imageio.v2 as imageio

    reader = imageio.get_reader(out / "videos" / videos[0])
    frames = [f for f in reader]
    assert len(frames) >= 2 and frames[0].shape[0] % 16 == 0 and frames[0].shape[1] % 16 == 0
    rec = read_jsonl(out / "episodes.jsonl")[0]
    assert set(rec) >= {"task", "split", "index", "seed", "instruction", "status", "success", "success_step",
                        "steps", "error"}


def test_rerun_skips_finished_and_refuses_other_runs(expert_runs, tmp_path) -> None:
    tmp, suite = expert_runs["tmp"], expert_runs["suite"]
    before = (tmp / "w1" / "episodes.jsonl").read_text()
    res = run(EvalConfig(suite=suite, policy="expert", workers=1, out=tmp / "w1"))
    assert (tmp / "w1" / "episodes.jsonl").read_text() == before  # nothing rerun
    assert res["cells"] == expert_runs["r1"]["cells"]
    other = write_suite(tmp_path / "other.toml", {"pick": ["seen"]}, seed0=SEED0 + 500)
    with pytest.raises(ResumeError, match="manifest"):
        run(EvalConfig(suite=other, policy="expert", out=tmp / "w1"))
    with pytest.raises(ResumeError, match="policy"):
        run(EvalConfig(suite=suite, policy="noop", out=tmp / "w1"))
    with pytest.raises(ResumeError, match="env options"):
        run(EvalConfig(suite=suite, policy="expert", out=tmp / "w1", renderer="egl"))


def test_git_sha_is_taken_at_start_and_resumes_append(tmp_path, monkeypatch) -> None:
    from vlabench.eval import harness

    calls = iter(["sha1", "sha2", "sha3"])
    monkeypatch.setattr(harness.provenance, "git_sha", lambda: next(calls))
    suite = write_suite(tmp_path / "s.toml", {"pick": ["seen"]}, per_cell=2, max_steps=3)
    res = run(EvalConfig(suite=suite, policy="noop", workers=1, out=tmp_path / "out", max_episodes=1))
    assert res["git_sha"] == "sha1" and "git_shas" not in res  # one lookup, however often results are written
    res = run(EvalConfig(suite=suite, policy="noop", workers=1, out=tmp_path / "out"))
    assert res["git_sha"] == "sha2" and res["git_shas"] == ["sha1", "sha2"] and res["complete"]
    # A complete run resumed runs nothing, so the record keeps the code, settings and time of what ran it.
    again = run(EvalConfig(suite=suite, policy="noop", workers=2, envs_per_worker=3, out=tmp_path / "out"))
    assert again == res and again["workers"] == 1


class FlakyPolicy:
    """The noop policy, except that act raises whenever a given episode seed is in the batch."""

    needs_episode_info = True

    def __init__(self, bad_seed: int) -> None:
        self.bad_seed = bad_seed

    def reset(self, n_envs: int) -> None:
        pass

    def act(self, obs_batch: dict) -> np.ndarray:
        if self.bad_seed in np.asarray(obs_batch["seed"]).tolist():
            raise RuntimeError(f"boom for seed {self.bad_seed}")
        a = np.zeros((len(obs_batch["slot"]), 7), np.float32)
        a[:, 6] = -1
        return a


def test_policy_exception_is_recorded_as_error(tmp_path, monkeypatch) -> None:
    suite = write_suite(tmp_path / "s.toml", {"pick": ["seen"]}, per_cell=3, max_steps=4)
    res = run(EvalConfig(suite=suite, workers=2, out=tmp_path / "out"), policy=FlakyPolicy(SEED0 + 1))
    assert res["policy"]["name"] == f"{FlakyPolicy.__module__}:FlakyPolicy" and res["policy"]["kind"] == "instance"
    recs = {r["seed"]: r for r in read_jsonl(tmp_path / "out" / "episodes.jsonl")}
    assert sorted(recs) == [SEED0, SEED0 + 1, SEED0 + 2]
    assert recs[SEED0 + 1]["status"] == "error" and "boom" in recs[SEED0 + 1]["error"]
    assert recs[SEED0]["status"] == recs[SEED0 + 2]["status"] == "ok"
    assert recs[SEED0]["steps"] == 4  # the innocent episode in the same batch ran to the end
    assert res["overall"]["n"] == 3 and res["overall"]["errors"] == 1


@pytest.mark.parametrize("fault,needle", [("exit", "exited with code 17"), ("hang", "hung")])
def test_crashing_or_hanging_worker_is_recorded_as_error(tmp_path, monkeypatch, fault, needle) -> None:
    monkeypatch.setenv(FAULT_ENV, f"{fault}:{SEED0 + 1}")
    suite = write_suite(tmp_path / "s.toml", {"pick": ["seen"]}, per_cell=3, max_steps=3)
    res = run(EvalConfig(suite=suite, policy="noop", workers=2, out=tmp_path / "out", step_timeout_s=3))
    recs = read_jsonl(tmp_path / "out" / "episodes.jsonl")
    by_seed = {r["seed"]: r for r in recs}
    assert len(recs) == 3 and sorted(by_seed) == [SEED0, SEED0 + 1, SEED0 + 2]
    assert by_seed[SEED0 + 1]["status"] == "error" and needle in by_seed[SEED0 + 1]["error"]
    assert by_seed[SEED0]["status"] == by_seed[SEED0 + 2]["status"] == "ok"
    assert res["overall"]["errors"] == 1 and res["overall"]["n"] == 3


def test_retry_errors_reruns_only_the_errored_episodes_and_keeps_their_records(tmp_path, monkeypatch) -> None:
    suite = write_suite(tmp_path / "s.toml", {"pick": ["seen"]}, per_cell=3, max_steps=3)
    out = tmp_path / "out"
    monkeypatch.setenv(FAULT_ENV, f"raise:{SEED0 + 1}")
    run(EvalConfig(suite=suite, policy="noop", workers=1, out=out))
    first = read_jsonl(out / "episodes.jsonl")
    assert [r["status"] for r in sorted(first, key=lambda r: r["seed"])] == ["ok", "error", "ok"]
    monkeypatch.delenv(FAULT_ENV)
    res = run(EvalConfig(suite=suite, policy="noop", workers=1, out=out))  # a plain resume: nothing to do
    assert read_jsonl(out / "episodes.jsonl") == first and res["overall"]["errors"] == 1
    res = run(EvalConfig(suite=suite, policy="noop", workers=1, out=out, retry_errors=True))
    recs = read_jsonl(out / "episodes.jsonl")
    assert sorted(r["seed"] for r in recs) == [SEED0, SEED0 + 1, SEED0 + 2]
    assert all(r["status"] == "ok" for r in recs) and res["overall"]["errors"] == 0 and res["overall"]["n"] == 3
    assert [r for r in recs if r["seed"] != SEED0 + 1] == [r for r in first if r["seed"] != SEED0 + 1]
    retried = read_jsonl(out / "errors_retried.jsonl")
    assert [(r["seed"], r["status"]) for r in retried] == [(SEED0 + 1, "error")]
    assert "injected fault" in retried[0]["error"]


def test_resume_after_kill(tmp_path) -> None:
    # 30 steps per episode (random never succeeds early): on an idle machine 8-step episodes could all finish
    # between two polls, and the kill would come too late to land part-way
    suite = write_suite(tmp_path / "s.toml", {"pick": ["seen"], "push": ["seen"]}, per_cell=3, max_steps=30)
    out = tmp_path / "out"
    code = (f"from vlabench.eval.harness import EvalConfig, run; "
            f"run(EvalConfig(suite={str(suite)!r}, policy='random', workers=1, out={str(out)!r}))")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = out / "episodes.jsonl"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if log.is_file() and len(read_jsonl(log)) >= 2:
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the run and its worker processes, mid-episode
        proc.wait()
    first = read_jsonl(log)
    assert 2 <= len(first) < 6, "the run should have been killed part-way"
    res = run(EvalConfig(suite=suite, policy="random", workers=1, out=out))
    recs = read_jsonl(log)
    keys = [(r["task"], r["split"], r["index"], r["seed"]) for r in recs]
    assert len(recs) == 6 and len(set(keys)) == 6
    assert recs[: len(first)] == first
    assert res["overall"]["n"] == 6 and res["complete"] is True


@dataclass
class EvalTinyConfig:
    hidden: int = 4
    """unused width"""


class EvalTinyPolicy:
    """A learned-policy stand-in: a linear map of the state, run in torch (exercises bf16 autocast)."""

    def __init__(self, model, device, gain: str = "1") -> None:
        self.model, self.device, self.gain = model, device, float(gain)

    def reset(self, n_envs: int) -> None:
        self.resets = n_envs

    def act(self, obs_batch: dict):
        import torch

        assert torch.is_inference_mode_enabled()
        state = torch.as_tensor(obs_batch["state"], device=self.device)
        return torch.tanh(self.gain * self.model.lin(state))  # a tensor: the harness converts it


def test_checkpoint_policy_is_loaded_and_hashed(tmp_path, monkeypatch) -> None:
    import torch
    from torch import nn

    from vlabench.models import registry
    from vlabench.models.checkpoint import checkpoint_hash
    from vlabench.train.checkpoint import save_checkpoint

    class EvalTinyModel(nn.Module):
        def __init__(self, cfg, stats) -> None:
            super().__init__()
            self.lin = nn.Linear(8, 7)

    spec = registry.ModelSpec("evaltiny", EvalTinyConfig, EvalTinyModel, EvalTinyPolicy)
    real = registry.get_spec
    monkeypatch.setattr(registry, "get_spec", lambda name: spec if name == "evaltiny" else real(name))
    stats = {k: {s: [0.0] * n for s in ("min", "max", "q01", "q99", "mean", "std")}
             for k, n in (("action", 7), ("state", 8))}
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "ckpt", EvalTinyModel(EvalTinyConfig(), stats), "evaltiny",
                           EvalTinyConfig(), {}, stats, {"manifest_hash": "test"})
    suite = write_suite(tmp_path / "s.toml", {"pick": ["seen"]}, per_cell=2, max_steps=3)
    res = run(EvalConfig(suite=suite, policy=str(ckpt), out=tmp_path / "out", bf16=True))
    assert res["policy"] == {"name": "evaltiny", "kind": "checkpoint", "checkpoint": str(ckpt.resolve()),
                             "checkpoint_hash": checkpoint_hash(ckpt), "options": {}, "inference": {}}
    recs = read_jsonl(tmp_path / "out" / "episodes.jsonl")
    assert [(r["status"], r["steps"]) for r in recs] == [("ok", 3), ("ok", 3)], recs
    # inference options reach the policy's constructor, are recorded, and pin the results directory
    res = run(EvalConfig(suite=suite, policy=str(ckpt), out=tmp_path / "opt", policy_option=["gain=0.5"]))
    assert res["policy"]["options"] == {"gain": "0.5"} and res["policy"]["inference"] == {"gain": "0.5"}
    with pytest.raises(ResumeError, match="options"):
        run(EvalConfig(suite=suite, policy=str(ckpt), out=tmp_path / "opt", policy_option=["gain=2"]))
    with pytest.raises(ValueError, match="not options of EvalTinyPolicy; valid: gain"):
        run(EvalConfig(suite=suite, policy=str(ckpt), out=tmp_path / "bad", policy_option=["decode=mean"]))
    assert not (tmp_path / "bad" / "results.json").exists()  # nothing written, so a corrected rerun just works
    with pytest.raises(ValueError, match="KEY=VALUE"):
        run(EvalConfig(suite=suite, policy=str(ckpt), out=tmp_path / "bad2", policy_option=["gain"]))


def test_bad_config_and_missing_ray_are_clear_errors(tmp_path, monkeypatch) -> None:
    suite = write_suite(tmp_path / "s.toml", {"pick": ["seen"]})
    with pytest.raises(ValueError, match="valid: local, ray"):
        run(EvalConfig(suite=suite, backend="slurm", out=tmp_path / "a"))
    with pytest.raises(ValueError, match="valid: tiny, egl"):
        run(EvalConfig(suite=suite, renderer="opengl", out=tmp_path / "a"))
    with pytest.raises(ValueError, match="unknown policy 'expret'"):
        run(EvalConfig(suite=suite, policy="expret", out=tmp_path / "a"))
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(RuntimeError, match=r"pip install 'vlabench\[ray\]'"):
        run(EvalConfig(suite=suite, backend="ray", out=tmp_path / "b"))
    assert not (tmp_path / "b").exists()


def test_ray_backend_matches_local(tmp_path) -> None:
    ray = pytest.importorskip("ray")
    suite = write_suite(tmp_path / "s.toml", {"pick": ["seen"], "push": ["seen"]}, per_cell=1, max_steps=5)
    local = run(EvalConfig(suite=suite, policy="random", workers=1, out=tmp_path / "local"))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        res = run(EvalConfig(suite=suite, policy="random", workers=2, backend="ray", out=tmp_path / "ray",
                             videos_per_cell=1))
    finally:
        ray.shutdown()
    assert outcomes(tmp_path / "ray") == outcomes(tmp_path / "local")
    assert res["cells"] == local["cells"] and res["backend"] == "ray"
    assert len(list((tmp_path / "ray" / "videos").glob("*.mp4"))) == 2
