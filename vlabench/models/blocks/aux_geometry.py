"""Auxiliary scene-geometry loss: regress where the target and the goal are from a policy's image features.

Training only: the label is the demo's privileged state (``vlabench.contracts.PRIVILEGED_GEOMETRY_FIELDS``);
the policy never sees it. It asks the image features to say where things are, the part behaviour cloning
alone learns last (Levine et al. 2016 pretrain their visuomotor policy's vision layers on object pose).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vlabench.contracts import privileged_slice
from vlabench.models.blocks.normalize import minmax_limits

AUX_FIELDS = ("target_pos", "goal_pos", "target_minus_ee", "goal_minus_target")
"""Privileged-state fields an auxiliary geometry head regresses."""
AUX_INDEX = [i for f in AUX_FIELDS for i in range(privileged_slice(f).start, privileged_slice(f).stop)]


def aux_limits(stats: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Min-max centre and half range of the ``AUX_FIELDS`` entries of ``stats["privileged"]``."""
    center, half = minmax_limits(stats, "privileged")
    return center[AUX_INDEX], half[AUX_INDEX]


def aux_geometry_loss(pred: torch.Tensor, privileged: torch.Tensor, center: torch.Tensor,
                      half_range: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """MSE between ``pred`` ``(B, len(AUX_INDEX))`` (normalized) and the current frame's geometry
    (``privileged`` ``(B, T, P)``, last frame), with ``aux_cm_<field>``: the RMS error in cm over the batch
    and x, y, z of each field."""
    target = privileged[:, -1, AUX_INDEX].to(pred.device, torch.float32)
    loss = F.mse_loss(pred, (target - center) / half_range)
    err = (pred.detach() * half_range + center - target).pow(2)
    metrics, start = {"aux_loss": float(loss.detach())}, 0
    for field in AUX_FIELDS:
        n = privileged_slice(field).stop - privileged_slice(field).start
        metrics[f"aux_cm_{field}"] = 100 * float(err[:, start:start + n].mean().sqrt())
        start += n
    return loss, metrics
