"""The one device resolver: "auto" | "cpu" | "cuda" | "cuda:N" -> a concrete torch device string.

Commands keep "auto" (or "cpu") as their default and resolve it here when they run, never at import
time, so a dataclass default does not depend on the machine that imported it.
"""

from __future__ import annotations

import platform
import re

DEVICE_PATTERN = r"auto|cpu|cuda(:\d+)?"


def check_device(spec: str) -> str:
    """``spec`` unchanged, or ValueError naming the valid forms."""
    if not re.fullmatch(DEVICE_PATTERN, str(spec)):
        raise ValueError(f"device {spec!r} is not valid; use auto, cpu, cuda or cuda:N")
    return str(spec)


def resolve_device(spec: str) -> str:
    """"auto" -> "cuda" when CUDA is available, else "cpu" (also without torch: the light install's policies
    run on the CPU); "cuda..." without CUDA -> RuntimeError."""
    spec = check_device(spec)
    if spec == "cpu":
        return spec
    try:
        import torch
    except ModuleNotFoundError:
        if spec == "auto":
            return "cpu"
        raise

    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise RuntimeError(f"device {spec!r} asked for, but CUDA is not available here; use --device cpu or auto")
    return spec


def device_name(device: str) -> str:
    """Human-readable name of a resolved device, for provenance ("NVIDIA H100 ...", "cpu: x86_64")."""
    if str(device).startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(torch.device(device))
    return f"cpu: {platform.processor() or platform.machine()}"
