"""One camera's frames from an observation batch, checked: what every image policy's ``act`` reads first."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch


def camera_frames(obs_batch: Mapping[str, Any], cam: str, family: str) -> torch.Tensor:
    """``obs_batch[cam]`` ``(n, H, W, 3)`` uint8 as a ``(n, 3, H, W)`` tensor; KeyError when the batch lacks
    the camera, ValueError for another shape (``family`` names the model in both)."""
    if cam not in obs_batch:
        raise KeyError(f"this {family} model reads obs_batch[{cam!r}]")
    images = torch.as_tensor(np.asarray(obs_batch[cam]))
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"obs_batch[{cam!r}] must be (n, H, W, 3) uint8, got {tuple(images.shape)}")
    return images.permute(0, 3, 1, 2)
