"""Optional hooks the training loop calls; each degrades to a warning when its dependency is missing."""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path

import torch

from vlabench.train import checkpoint as ckpt
from vlabench.train.config import TrainConfig

_warned: set[str] = set()


def periodic_eval(checkpoint: Path, cfg: TrainConfig, step: int, device: torch.device) -> dict[str, float] | None:
    """Optional short rollout during training (``train.eval_every``).

    Calls ``vlabench.eval.harness.quick_eval(checkpoint=Path, suite=str|None, n_episodes=int, device=str)
    -> dict[str, float]`` when that function exists, and returns its numbers prefixed ``eval_`` for
    metrics.csv. A missing harness or a failing rollout only warns: evaluation must never kill training.
    The training RNG streams are saved and restored around it, so it does not change the loss curve.
    """
    try:
        fn = importlib.import_module("vlabench.eval.harness").quick_eval
    except (ImportError, AttributeError) as e:
        if "eval" not in _warned:
            _warned.add("eval")
            warnings.warn(f"train.eval_every is set but vlabench.eval.harness.quick_eval is unavailable ({e}); "
                          f"skipping periodic evaluation", stacklevel=2)
        return None
    rng = ckpt.capture_rng_state()
    try:
        res = fn(checkpoint=checkpoint, suite=cfg.eval_suite or None, n_episodes=cfg.eval_episodes, device=str(device))
    except Exception as e:
        warnings.warn(f"periodic evaluation at step {step} failed: {type(e).__name__}: {e}", stacklevel=2)
        return None
    finally:
        ckpt.restore_rng_state(rng)
    return {f"eval_{k}": float(v) for k, v in (res or {}).items() if isinstance(v, (int, float))}
