"""Per-episode randomness: a stochastic learned policy takes the same actions in an episode whatever the
worker layout (1 worker x 1 slot, 2 workers x 4 slots with overlap, the Ray backend).

Tiny untrained Diffusion Policy (DDPM sampling, so every denoising step draws noise) and goal-image
checkpoints; actions are compared per episode, keyed by the ``rng_seed`` the harness sends. The noise is
identical; the networks' outputs may differ in the last float digits between batch sizes (CPU kernels
block a batch differently), so actions agree to 1e-4 and outcomes exactly.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from eval_suites import write_suite
from vlabench.agents.spec import PolicySpec
from vlabench.eval.harness import EvalConfig, run
from vlabench.train.checkpoint import save_checkpoint

STATS = {k: {s: ([-1.0] * d if s in ("min", "q01") else [1.0] * d if s in ("max", "q99") else [0.0] * d)
             for s in ("min", "max", "q01", "q99", "mean", "std")} for k, d in (("action", 7), ("state", 8))}


def diffusion_checkpoint(path: Path) -> Path:
    from vlabench.models.diffusion import DiffusionConfig, DiffusionModel

    torch.manual_seed(0)
    cfg = DiffusionConfig(preset="tiny", text_encoder="hash:16", scheduler="ddpm", num_inference_steps=3,
                          horizon=8, n_action_steps=2)
    return save_checkpoint(path, DiffusionModel(cfg, STATS), "diffusion", cfg, {}, STATS, {"manifest_hash": "t"})


def goal_image_checkpoint(path: Path) -> Path:
    from vlabench.models.goal_image.model import GoalImageConfig, GoalImageModel

    torch.manual_seed(0)
    cfg = GoalImageConfig(preset="tiny", image_size=32, text_encoder="hash", max_text_len=8, n_sampling_steps=2,
                          policy_inference_steps=2, goal_offset=3, replan_every=3)
    return save_checkpoint(path, GoalImageModel(cfg, STATS), "goal-diffusion", cfg, {}, STATS, {"manifest_hash": "t"})


class ActionLog:
    """Wraps a built policy and appends every action to ``dir/<rng_seed>.jsonl`` (works inside Ray actors)."""

    stochastic = True

    def __init__(self, inner, log_dir: Path) -> None:
        self.inner, self.log_dir = inner, Path(log_dir)

    def reset(self, n_envs: int) -> None:
        self.inner.reset(n_envs)

    def act(self, obs_batch: dict) -> np.ndarray:
        assert "seed" not in obs_batch and "split" not in obs_batch  # no episode metadata for this policy
        out = self.inner.act(obs_batch)
        for rng_seed, a in zip(obs_batch["rng_seed"].tolist(), out):
            with open(self.log_dir / f"{rng_seed}.jsonl", "a") as f:
                f.write(json.dumps(np.round(a.astype(np.float64), 5).tolist()) + "\n")
        return out


def same_actions(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.allclose(a[k], b[k], atol=1e-4, rtol=0) for k in a)


def logged(log_dir: Path) -> dict[str, list]:
    return {f.stem: [json.loads(line) for line in f.read_text().splitlines()] for f in sorted(log_dir.glob("*.jsonl"))}


def run_logged(ckpt: Path, suite: Path, out: Path, **kw) -> tuple[dict, dict]:
    log_dir = out.with_name(out.name + "-actions")
    log_dir.mkdir()
    policy = ActionLog(PolicySpec.parse(str(ckpt)).build("cpu"), log_dir)
    res = run(EvalConfig(suite=suite, out=out, **kw), policy=policy)
    episodes = {(r["task"], r["split"], r["index"]): (r["status"], r["steps"], r["success"])
                for r in map(json.loads, (out / "episodes.jsonl").read_text().splitlines())}
    return episodes, logged(log_dir)


@pytest.mark.parametrize("make", [diffusion_checkpoint, goal_image_checkpoint], ids=["diffusion", "goal_image"])
def test_same_actions_under_any_layout(tmp_path, make) -> None:
    ckpt = make(tmp_path / "ckpt")
    suite = write_suite(tmp_path / "s.toml", {"pick": ["seen"], "push": ["seen"]}, per_cell=3, max_steps=7)
    one, a1 = run_logged(ckpt, suite, tmp_path / "w1", workers=1, envs_per_worker=1)
    many, a8 = run_logged(ckpt, suite, tmp_path / "w2e4", workers=2, envs_per_worker=4, overlap="on")
    assert len(one) == 6 and all(st == "ok" for st, _, _ in one.values())
    assert one == many and same_actions(a1, a8) and len(a1) == 6
    assert all(len(v) == 7 for v in a1.values())
    assert len({json.dumps(v) for v in a1.values()}) == 6  # episodes draw different noise
    ray = pytest.importorskip("ray")
    # the actors unpickle ActionLog, so they need this folder on their path
    here = str(Path(__file__).resolve().parent)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": here}})
    try:
        on_ray, a_ray = run_logged(ckpt, suite, tmp_path / "ray", workers=2, backend="ray")
    finally:
        ray.shutdown()
    assert on_ray == one and same_actions(a_ray, a1)


def test_reseeding_changes_the_noise_but_not_per_episode(tmp_path) -> None:
    """The policy's own ``seed`` option changes every episode's noise; episodes stay reproducible."""
    ckpt = diffusion_checkpoint(tmp_path / "ckpt")
    suite = write_suite(tmp_path / "s.toml", {"pick": ["seen"]}, per_cell=2, max_steps=4)
    base = defaultdict(list)
    for seed in (0, 0, 1):
        log_dir = tmp_path / f"log-{len(base)}-{seed}"
        log_dir.mkdir()
        policy = ActionLog(PolicySpec.parse(str(ckpt), [f"seed={seed}"]).build("cpu"), log_dir)
        run(EvalConfig(suite=suite, out=tmp_path / f"out-{len(base)}-{seed}"), policy=policy)
        base[seed].append(logged(log_dir))
    assert base[0][0] == base[0][1] and not same_actions(base[1][0], base[0][0])
