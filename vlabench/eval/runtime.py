"""What a policy runs with during evaluation: its inference options and the context of every ``act``
(inference mode, bf16 autocast on the resolved device)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from vlabench.agents.spec import PolicySpec
from vlabench.devices import resolve_device

__all__ = ["act_context", "build_policy", "resolve_device"]


def act_context(device: str, bf16: bool, use_torch: bool) -> Callable[[], Any]:
    """Factory of the context every ``policy.act`` runs in: inference mode, plus bf16 autocast on CUDA
    (``bf16`` is ignored on a CPU, as in training: CPU autocast is slower and some kernels lack bf16)."""
    if not use_torch:
        return contextlib.nullcontext

    def ctx() -> contextlib.ExitStack:
        import torch

        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        if bf16 and torch.device(device).type == "cuda":
            stack.enter_context(torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16))
        return stack

    return ctx


def build_policy(spec: PolicySpec, device: str, bf16: bool) -> tuple[Any, Callable[[], Any]]:
    """(policy, act context) for a policy spec on a resolved device."""
    return spec.build(device), act_context(device, bf16, use_torch=spec.uses_torch)


OBSERVATION_OPTIONS = ("image_size", "wrist_size", "front_fov")
"""Env options that change what a policy sees; a checkpoint evaluated with other values than its demos
had is warned about (it still runs: evaluating at another resolution can be deliberate)."""


def observation_mismatch(checkpoint: str, env_kwargs: dict) -> list[str]:
    """``["image_size: trained on 96, evaluated at 128", ...]`` for a checkpoint whose training demos were
    recorded with other observation options than ``env_kwargs``; [] when they agree or are unknown."""
    import inspect

    from vlabench.env import TabletopEnv
    from vlabench.models.checkpoint import read_dataset_info

    try:
        trained = read_dataset_info(checkpoint).get("env_kwargs")
    except (OSError, ValueError):
        return []
    if not isinstance(trained, dict):
        return []
    defaults = {k: p.default for k, p in inspect.signature(TabletopEnv.__init__).parameters.items()}
    out = []
    for key in OBSERVATION_OPTIONS:  # not privileged_state: every demo records the privileged stream anyway
        a, b = trained.get(key, defaults.get(key)), env_kwargs.get(key, defaults.get(key))
        if a != b:
            out.append(f"{key}: trained on {a}, evaluated at {b}")
    return out
