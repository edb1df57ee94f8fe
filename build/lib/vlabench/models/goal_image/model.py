"""``goal-diffusion``: a SuSIE / UniPi-style goal-image generator driving a goal-conditioned policy.

Three parts live in one ``GoalImageModel`` (one checkpoint, one optimizer, trained jointly):

1. ``vae``: an ``AutoencoderKL`` (:mod:`vlabench.models.goal_image.vae`), 128x128 frames <-> 4x16x16 latents.
2. ``denoiser``: a ``UNet2DConditionModel`` (:mod:`vlabench.models.goal_image.unet`) that, InstructPix2Pix
   style, denoises the latent of the frame ``goal_offset`` steps ahead given the current frame's latent
   (channel concat) and the instruction's token states (cross-attention; frozen MiniLM, or an open_clip
   text tower when ``clip_weights`` is given).
3. ``policy``: the Diffusion Policy (:mod:`vlabench.models.diffusion`) with the goal image as an
   extra input, trained with hindsight goals (the dataset's ``goal_image`` at the same offset).

Joint training: ``loss = vae_weight * vae_loss + denoise_weight * denoise_loss + policy_weight *
policy_loss``. The three parts have disjoint parameters and the denoiser sees *detached* latents, so
the sum is three independent problems sharing one step counter; no gradient flows from the denoiser
into the autoencoder. While the VAE is still changing, the denoiser's target moves; the diffused latent
is therefore normalized with running (EMA) estimates of the goal latents' mean and std (buffers
``latent_shift``/``latent_scale``, SD3-style shift + scale), updated in training mode only. Early
denoiser steps on a half-trained VAE are cheap; separate stages buy nothing here.

Condition dropout (trains the three branches dual guidance needs), one uniform draw per sample:
``p_drop_both`` (default 5%) both dropped -> eps_uncond; ``p_drop_text`` (10%) text only dropped ->
eps_img; ``p_drop_image`` (5%) image only dropped; the remaining 80% full conditioning.

Deployment (``GoalDiffusionPolicy``): each env slot generates a subgoal from its current frame, acts
toward it with the low-level policy for ``replan_every`` steps, then generates the next one; slots due
for a new goal in the same ``act`` call share one batched sampling call. The default ``replan_every``
equals ``n_action_steps`` (8), so every action chunk is predicted with a goal exactly ``goal_offset``
steps ahead, the situation the low-level policy was trained on (the dataset's goal offset is fixed,
unlike SuSIE's uniformly sampled goals); a replan flushes the slot's queued actions.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from vlabench.models.blocks.noise import Generators
from vlabench.models.configs import PresetConfig
from vlabench.models.diffusion.model import DiffusionConfig
from vlabench.models.goal_image import unet as goal_unet
from vlabench.models.goal_image import vae as goal_vae
from vlabench.models.goal_image.lowlevel import GoalConditionedDiffusion

PRESETS: dict[str, dict[str, Any]] = {
    "base": dict(vae_channels=(64, 128, 256, 256), vae_layers_per_block=2, vae_norm_groups=32,
                 unet_channels=(128, 256, 512), unet_layers_per_block=2, unet_norm_groups=32, unet_heads=8,
                 policy_preset="base"),
    "small": dict(vae_channels=(32, 64, 128, 128), vae_layers_per_block=1, vae_norm_groups=32,
                  unet_channels=(64, 128, 256), unet_layers_per_block=1, unet_norm_groups=32, unet_heads=8,
                  policy_preset="small"),
    "tiny": dict(vae_channels=(16, 32, 32, 32), vae_layers_per_block=1, vae_norm_groups=8,
                 unet_channels=(16, 32), unet_layers_per_block=1, unet_norm_groups=8, unet_heads=2,
                 policy_preset="tiny"),
}


@dataclass
class GoalImageConfig(PresetConfig):
    """Hyperparameters of the goal-image generator (VAE + latent denoiser) and its low-level policy.
    Fields left unset (None) take the value of ``preset``: "base" (GPU), "small" (CPU demo), "tiny" (tests)."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = PRESETS
    TUPLE_FIELDS: ClassVar[tuple[str, ...]] = ("vae_channels", "unet_channels")
    image_size: int = 128
    """Frames are resized to this square size for the generator; must be a multiple of 8."""
    goal_offset: int = 15
    """The goal is the frame this many steps ahead (dataset goal_offset); SuSIE uses 11-14."""
    vae_channels: tuple[int, ...] | None = None
    """AutoencoderKL block_out_channels; 4 entries = 1/8 resolution (preset: base 64,128,256,256)."""
    vae_layers_per_block: int | None = None
    """ResNet layers per VAE block (preset)."""
    vae_norm_groups: int | None = None
    """GroupNorm groups in the VAE; must divide every vae_channels entry (preset)."""
    vae_path: str | None = None
    """Local diffusers AutoencoderKL directory to start the VAE from (e.g. SD's vae/ folder); its
    architecture is read from there, so it must exist wherever the checkpoint is loaded. None = train from scratch."""
    vae_kl_weight: float = 1e-4
    """Weight of the per-latent-element KL term against the per-pixel reconstruction term."""
    vae_recon: str = "l1"
    """VAE reconstruction loss: "l1" or "mse"."""
    unet_channels: tuple[int, ...] | None = None
    """UNet2DConditionModel block_out_channels (preset: base 128,256,512)."""
    unet_layers_per_block: int | None = None
    """ResNet layers per UNet block (preset)."""
    unet_norm_groups: int | None = None
    """GroupNorm groups in the UNet; must divide every unet_channels entry (preset)."""
    unet_heads: int | None = None
    """Attention heads of the UNet's (self/cross) attention (diffusers' attention_head_dim) (preset)."""
    text_encoder: str | None = None
    """Sentence encoder for token states when clip_weights is unset: None = packaged MiniLM, a local
    HF model dir, or "hash" (tests). Frozen; not saved in checkpoints."""
    clip_weights: str | None = None
    """Local open_clip weights file; when set the instruction tokens come from that text tower instead."""
    clip_model: str = "ViT-B-32"
    """open_clip architecture name matching clip_weights."""
    max_text_len: int = 24
    """Instruction tokens kept for cross-attention (padded/truncated)."""
    p_drop_text: float = 0.10
    """Probability of dropping only the instruction (to "") in training."""
    p_drop_image: float = 0.05
    """Probability of dropping only the current-frame latent (to zeros) in training."""
    p_drop_both: float = 0.05
    """Probability of dropping both conditions in training (disjoint from the two above)."""
    guidance_image: float = 1.5
    """Image guidance weight w_img of dual classifier-free guidance."""
    guidance_text: float = 3.0
    """Text guidance weight w_txt of dual classifier-free guidance."""
    n_sampling_steps: int = 30
    """DDIM steps (eta = 0) when generating a goal."""
    x0_clip: float | None = 4.0
    """Clamp the predicted clean latent to +-x0_clip (unit-variance latent space) each step; None = off."""
    replan_every: int = 8
    """Generate a new goal every this many env steps per slot (default = n_action_steps)."""
    n_obs_steps: int = 2
    """Observation steps of the low-level policy."""
    horizon: int = 16
    """Action sequence length predicted by the low-level policy."""
    n_action_steps: int = 8
    """Actions executed per low-level chunk."""
    policy_preset: str | None = None
    """DiffusionConfig preset of the low-level policy (preset: same name as `preset`)."""
    policy_inference_steps: int = 10
    """DDIM steps of the low-level policy."""
    policy_use_wrist: bool = True
    """Low-level policy also sees the wrist camera."""
    policy_language: bool = False
    """Low-level policy also sees the instruction embedding (SuSIE's policy is goal-only: off)."""
    vae_weight: float = 1.0
    """Weight of the VAE loss in the joint loss."""
    denoise_weight: float = 1.0
    """Weight of the latent denoising loss in the joint loss."""
    policy_weight: float = 1.0
    """Weight of the low-level policy loss in the joint loss."""
    latent_momentum: float = 0.99
    """EMA momentum of the running latent mean/std used to normalize diffused latents."""

    def validate(self, r: "GoalImageConfig") -> None:
        if r.image_size % 8 or r.image_size < 16:
            raise ValueError(f"image_size must be a multiple of 8 and >= 16, got {r.image_size}")
        if r.vae_path is None and len(r.vae_channels) != 4:
            raise ValueError(f"vae_channels needs 4 entries (1/8 resolution), got {r.vae_channels}")
        if r.goal_offset < 1:
            raise ValueError(f"goal_offset must be >= 1, got {r.goal_offset}")
        if r.replan_every < 1:
            raise ValueError(f"replan_every must be >= 1, got {r.replan_every}")
        if not 1 <= r.n_sampling_steps <= goal_unet.SCHEDULE["num_train_timesteps"]:
            raise ValueError(f"n_sampling_steps must be in 1..1000, got {r.n_sampling_steps}")
        if r.vae_recon not in goal_vae.RECON_LOSSES:
            raise ValueError(f"unknown vae_recon {r.vae_recon!r}; known: {', '.join(goal_vae.RECON_LOSSES)}")
        goal_unet.sample_condition_dropout(0, r.p_drop_text, r.p_drop_image, r.p_drop_both)
        r.diffusion_config()

    def diffusion_config(self) -> DiffusionConfig:
        """The low-level policy's DiffusionConfig."""
        return DiffusionConfig(preset=self.policy_preset, n_obs_steps=self.n_obs_steps, horizon=self.horizon,
                               n_action_steps=self.n_action_steps, num_inference_steps=self.policy_inference_steps,
                               use_wrist=self.policy_use_wrist, text_encoder=self.text_encoder)


@functools.lru_cache(maxsize=4)
def _token_cache(clip_model: str | None, clip_weights: str | None, text_encoder: str | None,
                 max_len: int) -> goal_unet.TokenCache:
    if clip_weights:
        enc = goal_unet.ClipTokenEncoder(clip_model, clip_weights, "cpu")
    else:
        from vlabench.models.blocks.text_encoder import get_sentence_encoder

        enc = get_sentence_encoder(text_encoder, "cpu")
    return goal_unet.TokenCache(enc, max_len)


class GoalImageModel(nn.Module):
    """VAE + latent denoiser + goal-conditioned Diffusion Policy; see the module docstring."""

    def __init__(self, cfg: GoalImageConfig, stats: Mapping) -> None:
        super().__init__()
        self.cfg = cfg = cfg.resolved()
        if cfg.vae_path is not None:
            self.vae = goal_vae.load_pretrained_vae(cfg.vae_path)
        else:
            self.vae = goal_vae.build_vae(cfg.vae_channels, cfg.vae_layers_per_block, cfg.vae_norm_groups,
                                          image_size=cfg.image_size)
        down = goal_vae.vae_downsample_factor(self.vae)
        if cfg.image_size % down:
            raise ValueError(f"image_size {cfg.image_size} must be divisible by the VAE's downsampling {down}")
        self.latent_channels = int(self.vae.config.latent_channels)
        self.denoiser = goal_unet.build_denoiser(
            cfg.unet_channels, cfg.unet_layers_per_block, self.text.dim, cfg.unet_heads, cfg.unet_norm_groups,
            self.latent_channels, cfg.image_size // down)
        self.noise_scheduler = goal_unet.train_scheduler()
        self.policy = GoalConditionedDiffusion(cfg.diffusion_config(), stats, use_language=cfg.policy_language)
        self.register_buffer("latent_shift", torch.zeros(()))
        self.register_buffer("latent_scale", torch.ones(()))
        self.register_buffer("latent_stats_n", torch.zeros((), dtype=torch.long))

    @property
    def text(self) -> goal_unet.TokenCache:
        """Frozen instruction-token encoder (module-level cache: never in state_dict, never deep-copied)."""
        c = self.cfg
        return _token_cache(c.clip_model if c.clip_weights else None, c.clip_weights, c.text_encoder, c.max_text_len)

    @property
    def device(self) -> torch.device:
        return self.latent_shift.device

    def data_spec(self) -> dict:
        """DemoDataset kwargs: two observation frames, 16 actions and the goal frame goal_offset ahead."""
        return {"n_obs": self.cfg.n_obs_steps, "horizon": self.cfg.horizon, "goal_offset": self.cfg.goal_offset}

    # -- pieces -------------------------------------------------------------------------------
    def _to_unit(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> (B, 3, S, S) float in [-1, 1] at the generator's resolution S."""
        x = goal_vae.uint8_to_unit(images.to(self.device))
        s = self.cfg.image_size
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", antialias=True, align_corners=False)
        return x

    def _from_unit(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = x.float()  # the VAE decodes in bf16 under autocast; antialiased resizing wants float32
        if x.shape[-2:] != size:
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        return goal_vae.unit_to_uint8(x)

    def _text(self, instructions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.text(list(instructions), self.device)

    @torch.no_grad()
    def _update_latent_stats(self, z: torch.Tensor) -> None:
        mean, std = z.float().mean(), z.float().std().clamp_min(1e-4)
        if int(self.latent_stats_n) == 0:
            self.latent_shift.copy_(mean)
            self.latent_scale.copy_(1.0 / std)
        else:
            m = self.cfg.latent_momentum
            self.latent_shift.mul_(m).add_((1 - m) * mean)
            self.latent_scale.copy_(1.0 / (m / self.latent_scale + (1 - m) * std))
        self.latent_stats_n.add_(1)

    def denoise_loss(self, context: torch.Tensor, target: torch.Tensor, instructions: list[str]) -> torch.Tensor:
        """Epsilon MSE. context: raw (unscaled) current latents (B, 4, s, s); target: normalized goal latents."""
        b = target.shape[0]
        text, mask = self._text(instructions)
        null, null_mask = self._text([""])
        drop_text, drop_image = goal_unet.sample_condition_dropout(
            b, self.cfg.p_drop_text, self.cfg.p_drop_image, self.cfg.p_drop_both, self.device)
        text = torch.where(drop_text[:, None, None], null.expand_as(text), text)
        mask = torch.where(drop_text[:, None], null_mask.expand_as(mask), mask)
        context = context * (~drop_image).to(context.dtype)[:, None, None, None]
        noise = torch.randn_like(target)
        t = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (b,), device=self.device)
        noisy = self.noise_scheduler.add_noise(target, noise, t)
        pred = self.denoiser(torch.cat([noisy, context], dim=1), t, encoder_hidden_states=text,
                             encoder_attention_mask=mask.to(text.dtype)).sample
        return F.mse_loss(pred.float(), noise.float())

    def compute_loss(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Joint loss on a collated batch: image (B, n_obs, 3, H, W) uint8, goal_image (B, 3, H, W), ..."""
        if "goal_image" not in batch:
            raise ValueError("goal-diffusion needs batch['goal_image']; build the dataset with data_spec() "
                             f"(goal_offset={self.cfg.goal_offset})")
        current = self._to_unit(torch.as_tensor(batch["image"])[:, -1])
        goal = self._to_unit(torch.as_tensor(batch["goal_image"]))
        b = current.shape[0]
        vae_l, logs, z_mean, z_sample = goal_vae.vae_loss(self.vae, torch.cat([current, goal]),
                                                          self.cfg.vae_kl_weight, self.cfg.vae_recon)
        context, z_goal = z_mean[:b], z_sample[b:]
        if self.training:
            self._update_latent_stats(z_goal)
        target = (z_goal - self.latent_shift) * self.latent_scale
        instr = batch["instruction"]
        instr = [instr] * b if isinstance(instr, str) else list(instr)
        den_l = self.denoise_loss(context, target, instr)
        pol_l, _ = self.policy.compute_loss(batch)
        c = self.cfg
        loss = c.vae_weight * vae_l + c.denoise_weight * den_l + c.policy_weight * pol_l
        logs.update(loss=float(loss.detach()), vae_loss=float(vae_l.detach()),
                    denoise_loss=float(den_l.detach()), policy_loss=float(pol_l.detach()),
                    latent_scale=float(self.latent_scale))
        return loss, logs

    # -- inference ------------------------------------------------------------------------------
    @torch.no_grad()
    def generate_goals(self, images: torch.Tensor, instructions: list[str], guidance_image: float | None = None,
                       guidance_text: float | None = None, n_steps: int | None = None,
                       generator: Generators = None, seed: int | None = None) -> torch.Tensor:
        """Current frames uint8 (B, 3, H, W) + instructions -> goal frames uint8 (B, 3, H, W).

        Deterministic given ``seed`` (or a CPU ``generator``); weights/steps default to the config.
        """
        c = self.cfg
        if generator is None and seed is not None:
            generator = torch.Generator().manual_seed(seed)
        x = self._to_unit(images)
        context = self.vae.encode(x).latent_dist.mean
        text, mask = self._text(instructions)
        null, null_mask = self._text([""])
        z = goal_unet.ddim_sample(
            self.denoiser, context, text, mask, null, null_mask, n_steps or c.n_sampling_steps,
            c.guidance_image if guidance_image is None else guidance_image,
            c.guidance_text if guidance_text is None else guidance_text, c.x0_clip, generator)
        out = self.vae.decode(z / self.latent_scale + self.latent_shift).sample
        return self._from_unit(out, tuple(images.shape[-2:]))

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """VAE round trip (posterior mean) of uint8 (B, 3, H, W) -> uint8 (B, 3, H, W)."""
        rec = self.vae.decode(self.vae.encode(self._to_unit(images)).latent_dist.mean).sample
        return self._from_unit(rec, tuple(images.shape[-2:]))
