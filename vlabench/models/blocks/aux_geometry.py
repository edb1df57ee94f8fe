"""Auxiliary scene-geometry loss: regress where the target and the goal are from a policy's image features.

Training only: the label is the demo's privileged state (``vlabench.contracts.PRIVILEGED_GEOMETRY_FIELDS``);
the policy never sees it. It asks the image features to say where things are, the part behaviour cloning
alone learns last (Levine et al. 2016 pretrain their visuomotor policy's vision layers on object pose).
"""

from __future__ import annotations

import torch

from vlabench.contracts import privileged_slice
from vlabench.models.blocks.normalize import minmax_limits

AUX_FIELDS = ("target_pos", "goal_pos", "target_minus_ee", "goal_minus_target")
"""Privileged-state fields an auxiliary geometry head regresses."""
AUX_INDEX = [i for f in AUX_FIELDS for i in range(privileged_slice(f).start, privileged_slice(f).stop)]
AUX_FIELD_COLUMNS: dict[str, slice] = {}
"""Where each field sits in a head's ``len(AUX_INDEX)`` outputs."""
_start = 0
for _f in AUX_FIELDS:
    _n = privileged_slice(_f).stop - privileged_slice(_f).start
    AUX_FIELD_COLUMNS[_f], _start = slice(_start, _start + _n), _start + _n


def aux_limits(stats: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Min-max centre and half range of the ``AUX_FIELDS`` entries of ``stats["privileged"]``."""
    center, half = minmax_limits(stats, "privileged")
    return center[AUX_INDEX], half[AUX_INDEX]


def aux_geometry_loss(pred: torch.Tensor, privileged: torch.Tensor, center: torch.Tensor,
                      half_range: torch.Tensor, offset_weight: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """MSE between ``pred`` ``(B, len(AUX_INDEX))`` (normalized) and the current frame's geometry
    (``privileged`` ``(B, T, P)``, last frame), with ``aux_cm_<field>``: the RMS error in cm over the batch
    and x, y, z of each field. ``offset_weight`` > 0 weights each frame by ``1 + offset_weight * d`` with d
    the target's horizontal distance from the hand in units of 10 cm (weights normalized to mean 1)."""
    target = privileged[:, -1, AUX_INDEX].to(pred.device, torch.float32)
    per_frame = (pred - (target - center) / half_range).pow(2).mean(1)
    if offset_weight:
        d = target[:, AUX_FIELD_COLUMNS["target_minus_ee"]][:, :2].norm(dim=1) / 0.1
        w = 1.0 + offset_weight * d
        per_frame = per_frame * w / w.mean()
    loss = per_frame.mean()
    err = (pred.detach() * half_range + center - target).pow(2)
    metrics = {"aux_loss": float(loss.detach())}
    for field, cols in AUX_FIELD_COLUMNS.items():
        metrics[f"aux_cm_{field}"] = 100 * float(err[:, cols].mean().sqrt())
    return loss, metrics
