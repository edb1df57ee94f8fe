"""Image autoencoder for the goal-image generator: a diffusers ``AutoencoderKL`` at 1/8 resolution.

A 128x128 RGB frame maps to a 4x16x16 latent (three 2x downsamples, so ``block_out_channels`` must
have four entries). The autoencoder is trained from scratch on the demo frames with a pixel
reconstruction loss plus a small-weight KL term, as in Stable Diffusion's first stage but without the
perceptual and adversarial terms (no LPIPS/discriminator weights ship offline; the scenes are simple).

Loss scaling, so ``kl_weight`` means the same thing at every resolution: the reconstruction term is the
mean over pixels and the KL term is the mean over latent elements. SD's 1e-6 on *summed* terms at
256px (196608 pixels, 4096 latents) corresponds to about 5e-5 here; the default 1e-4 is slightly
stronger, which keeps the latent space smooth for the diffusion model.

Images enter as floats in [-1, 1], shape (B, 3, H, W).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from vlabench.models.blocks.image_metrics import psnr

RECON_LOSSES = ("l1", "mse")


def build_vae(
    block_out_channels: tuple[int, ...] = (32, 64, 128, 128),
    layers_per_block: int = 1,
    norm_num_groups: int = 32,
    latent_channels: int = 4,
    image_size: int = 128,
) -> AutoencoderKL:
    """A fresh ``AutoencoderKL``; ``len(block_out_channels) - 1`` downsamples (4 entries -> 1/8)."""
    bad = [c for c in block_out_channels if c % norm_num_groups]
    if bad:
        raise ValueError(f"vae block_out_channels {tuple(block_out_channels)} must all be divisible by "
                         f"norm_num_groups={norm_num_groups}; bad: {bad}")
    n = len(block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block,
        latent_channels=latent_channels,
        norm_num_groups=norm_num_groups,
        sample_size=image_size,
    )


def load_pretrained_vae(path: str | Path) -> AutoencoderKL:
    """Load an ``AutoencoderKL`` from a local diffusers directory (``config.json`` + weights).

    Never touches a hub: ``local_files_only=True``. For an SD-style checkpoint pass the ``vae``
    subfolder itself.
    """
    p = Path(path).expanduser()
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"vae path {str(p)!r} is not a diffusers AutoencoderKL directory "
                                f"(expected {str(p / 'config.json')!r}); pass the folder holding the VAE weights")
    return AutoencoderKL.from_pretrained(str(p), local_files_only=True)


def vae_downsample_factor(vae: AutoencoderKL) -> int:
    """Spatial reduction of the encoder (8 for four blocks)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def uint8_to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 (..., 3, H, W) in [0, 255] -> float32 in [-1, 1]."""
    return images.float().div(127.5).sub(1.0)


def unit_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float (..., 3, H, W) in [-1, 1] (clamped) -> uint8 in [0, 255]."""
    return images.clamp(-1, 1).add(1.0).mul(127.5).round().to(torch.uint8)


def vae_loss(
    vae: AutoencoderKL, images: torch.Tensor, kl_weight: float = 1e-4, recon: str = "l1"
) -> tuple[torch.Tensor, dict[str, float], torch.Tensor, torch.Tensor]:
    """Autoencoder loss on images (B, 3, H, W) in [-1, 1].

    Returns (loss, logs, posterior_mean, posterior_sample); both latents (B, 4, H/8, W/8) are detached,
    for callers that also need them (the diffusion model must not backpropagate into the VAE).
    """
    if recon not in RECON_LOSSES:
        raise ValueError(f"unknown vae recon loss {recon!r}; known: {', '.join(RECON_LOSSES)}")
    posterior = vae.encode(images).latent_dist
    z = posterior.sample()
    rec = vae.decode(z).sample
    rec_loss = F.l1_loss(rec, images) if recon == "l1" else F.mse_loss(rec, images)
    # Per-element mean KL to N(0, I); diffusers' .kl() sums over (C, H, W).
    kl = 0.5 * (posterior.mean.pow(2) + posterior.var - 1.0 - posterior.logvar).mean()
    loss = rec_loss + kl_weight * kl
    logs = {"vae_rec": float(rec_loss.detach()), "vae_kl": float(kl.detach())}
    return loss, logs, posterior.mean.detach(), z.detach()


@torch.no_grad()
def encode_mean(vae: AutoencoderKL, images: torch.Tensor) -> torch.Tensor:
    """Posterior mean latents (B, 4, H/8, W/8) of images (B, 3, H, W) in [-1, 1]."""
    return vae.encode(images).latent_dist.mean


@torch.no_grad()
def reconstruction_psnr(vae: AutoencoderKL, images_uint8: torch.Tensor, batch_size: int = 32) -> float:
    """Mean PSNR (dB, 8-bit range) of encode-mean -> decode round trips of uint8 images (N, 3, H, W)."""
    device = next(vae.parameters()).device
    vals = []
    for i in range(0, images_uint8.shape[0], batch_size):
        x = images_uint8[i:i + batch_size].to(device)
        rec = unit_to_uint8(vae.decode(encode_mean(vae, uint8_to_unit(x))).sample)
        vals.append(psnr(rec, x, data_range=255.0))
    return float(torch.cat(vals).mean())
