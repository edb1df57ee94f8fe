"""Periodic evaluation during training (``train.eval_every``), run as a separate ``vlabench eval`` process.

The training loop sits below evaluation (it must not import it), and a rollout in its own process
cannot disturb the training process's RNG streams, threads or memory. A failing rollout only warns:
evaluation must never kill training. The rollouts run the checkpoint with its stored inference settings
(``train.inference``), and ``keep_best`` keeps the checkpoint with the highest rollout success as ``OUT/best``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch

from vlabench.fileio import write_json_atomic
from vlabench.train.checkpoint import copy_checkpoint
from vlabench.train.config import TrainConfig

DEFAULT_SUITE = "envs/smoke.toml"


def periodic_eval(checkpoint: Path, cfg: TrainConfig, step: int, device: torch.device) -> dict[str, float] | None:
    """``vlabench eval`` of ``checkpoint`` on the first ``cfg.eval_episodes`` episodes of ``cfg.eval_suite``;
    returns ``{"eval_success_rate", "eval_episodes"}`` for metrics.csv, or None (with a warning) on failure."""
    with tempfile.TemporaryDirectory(prefix="vlabench-train-eval-") as tmp:
        cmd = [sys.executable, "-m", "vlabench.cli", "eval", "--suite", cfg.eval_suite or DEFAULT_SUITE,
               "--policy", str(checkpoint), "--max-episodes", str(cfg.eval_episodes), "--device", str(device),
               "--out", str(Path(tmp) / "run")]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}")
            overall = json.loads((Path(tmp) / "run" / "results.json").read_text())["overall"]
        except (OSError, ValueError, KeyError, RuntimeError, subprocess.SubprocessError) as e:
            warnings.warn(f"periodic evaluation at step {step} failed: {type(e).__name__}: {e}", stacklevel=2)
            return None
    return {"eval_success_rate": float(overall["rate"]), "eval_episodes": float(overall["n"])}


BEST_DIR, BEST_FILE = "best", "best.json"


def keep_best(out: Path, latest: Path, result: dict[str, float], cfg: TrainConfig, step: int) -> bool:
    """Copy ``latest`` to ``out/best`` when ``result`` is at least as good as the best so far (ties go to the
    later step), recording step, rate, suite and options in ``out/best.json``; returns whether it did."""
    record = out / BEST_FILE
    best = json.loads(record.read_text()) if record.is_file() else None
    if best is not None and result["eval_success_rate"] < best["eval_success_rate"]:
        return False
    copy_checkpoint(latest, out / BEST_DIR)
    write_json_atomic(record, {"step": step, **result, "eval_suite": cfg.eval_suite or DEFAULT_SUITE,
                               "inference": list(cfg.inference)})
    return True
