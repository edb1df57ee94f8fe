"""Image encoder for the Diffusion Policy: ResNet-18 + GroupNorm + spatial-softmax keypoints.

This follows the robomimic / Diffusion Policy observation encoder (Chi et al. 2023):

* ResNet-18 trained from scratch, every BatchNorm replaced by GroupNorm with ``channels // 16``
  groups. BatchNorm misbehaves with EMA weights and small per-GPU batches
  (real-stanford/diffusion_policy#103, #151), GroupNorm has no running statistics to go stale.
* The global average pool and classifier are dropped; a :class:`KeypointPool` turns the last
  feature map into ``K`` keypoints (expected x, y of a softmax heat map each), which keeps *where*
  things are, the information a manipulation policy needs and average pooling throws away.
* A linear layer maps the ``2K`` keypoint coordinates to ``feature_dim``.

``width`` scales every stage (64 is the real ResNet-18, built by torchvision); smaller widths give
the same topology with fewer channels for CPU demos and tests (``width=8`` is "tiny").
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock

from vlabench.models.blocks.spatial_softmax import SpatialSoftmax

RESNET18_WIDTH = 64


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with about ``channels // 16`` groups (at least 1, always a divisor of ``channels``)."""
    groups = max(1, channels // 16)
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels)


def _scaled_resnet18_trunk(width: int) -> nn.Sequential:
    """ResNet-18 conv trunk with stage widths ``width * (1, 2, 4, 8)``; same module names as torchvision's."""
    layers: list[tuple[str, nn.Module]] = [
        ("conv1", nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)),
        ("bn1", group_norm(width)),
        ("relu", nn.ReLU(inplace=True)),
        ("maxpool", nn.MaxPool2d(kernel_size=3, stride=2, padding=1)),
    ]
    in_ch = width
    for i, mult in enumerate((1, 2, 4, 8)):
        out_ch, stride = width * mult, (1 if i == 0 else 2)
        down = None
        if stride != 1 or in_ch != out_ch:
            down = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), group_norm(out_ch))
        blocks = [
            BasicBlock(in_ch, out_ch, stride, down, norm_layer=group_norm),
            BasicBlock(out_ch, out_ch, norm_layer=group_norm),
        ]
        layers.append((f"layer{i + 1}", nn.Sequential(*blocks)))
        in_ch = out_ch
    return nn.Sequential(OrderedDict(layers))


def resnet18_trunk(width: int = RESNET18_WIDTH) -> nn.Sequential:
    """ResNet-18 without avgpool/fc, GroupNorm everywhere; ``(B,3,H,W) -> (B, 8*width, H/32, W/32)``."""
    if width < 1:
        raise ValueError(f"resnet width must be >= 1, got {width}")
    if width != RESNET18_WIDTH:
        return _scaled_resnet18_trunk(width)
    # norm_layer builds GroupNorm in place of every BatchNorm (stem, blocks and downsample paths).
    net = torchvision.models.resnet18(weights=None, norm_layer=group_norm)
    return nn.Sequential(OrderedDict((name, m) for name, m in net.named_children() if name not in ("avgpool", "fc")))


class KeypointPool(nn.Module):
    """Feature map ``(B, C, h, w)`` -> keypoints ``(B, 2K)`` (x0, y0, x1, y1, ...; coordinates in [-1, 1]).

    A learned 1x1 conv makes ``K`` heat maps and a :class:`SpatialSoftmax` turns each into the expected
    (x, y) under its softmax (Levine et al. 2016; robomimic).
    """

    def __init__(self, in_channels: int, num_keypoints: int) -> None:
        super().__init__()
        if num_keypoints < 1:
            raise ValueError(f"num_keypoints must be >= 1, got {num_keypoints}")
        self.num_keypoints = num_keypoints
        self.keypoint_conv = nn.Conv2d(in_channels, num_keypoints, kernel_size=1)
        self.softmax = SpatialSoftmax(learn_temperature=False)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.softmax(self.keypoint_conv(feat)).flatten(1)


class ResNetKeypointEncoder(nn.Module):
    """Normalized image ``(B, 3, H, W)`` (float, roughly [-1, 1]) -> feature ``(B, feature_dim)``."""

    def __init__(self, feature_dim: int = 64, num_keypoints: int = 32, width: int = RESNET18_WIDTH) -> None:
        super().__init__()
        self.trunk = resnet18_trunk(width)
        self.pool = KeypointPool(8 * width, num_keypoints)
        self.proj = nn.Linear(2 * num_keypoints, feature_dim)
        self.feature_dim = feature_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        return self.proj(self.pool(self.trunk(images)))
