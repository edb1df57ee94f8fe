"""Language-conditioned Diffusion Policy baseline (Chi et al. 2023, CNN/U-Net variant).

Observation -> global conditioning, for each of the last ``n_obs_steps`` steps:

* front frame (and wrist frame when ``use_wrist``) -> ResNet-18/GroupNorm/spatial-softmax features
  (:mod:`vlabench.models.blocks.vision`). Each camera has its *own* encoder (the reference's
  ``share_rgb_model=False``): a wrist view and a scene view look nothing alike, and sharing buys
  little at this size. Frames of different time steps share their camera's encoder.
* proprio state (8,), min-max normalized to [-1, 1] with the dataset stats.
* the instruction's sentence embedding (frozen encoder, see below) -> a learned linear projection.

All of it is concatenated into one vector that FiLM-conditions the 1-D U-Net
(:mod:`vlabench.models.blocks.unet1d`), which denoises a ``horizon``-step action sequence.

Action space: the model predicts the 7-D *env* action sequence (delta pose, gripper), min-max
normalized to [-1, 1] per dimension. The reference reports that absolute-pose targets work better
for the conv U-Net (real-stanford/diffusion_policy#35); we did not take that option because the
benchmark's action contract is delta-based, the env exposes no absolute-target controller, and
converting absolute poses back to clipped deltas at the boundary would couple the model to the
env's IK/controller details. That is a known handicap of this baseline, not a bug.

Noise: DDPM training (100 steps, squaredcos_cap_v2, epsilon prediction, clip_sample). Sampling uses
DDIM (default, 10 steps) or DDPM, both with ``timestep_spacing="trailing"``: diffusers' default
"leading" spacing starts 8-of-100-step sampling at t=84 instead of t=99, so the sampler would never
see pure noise levels it was trained on. (For step counts not dividing 100, diffusers' DDIM rounds
the previous timestep by up to one step; 10 divides exactly.)

The frozen sentence encoder is never a submodule: ``get_sentence_encoder`` shares one per path, it
runs on CPU and caches each instruction's embedding (instructions repeat, so after the first batches
it costs nothing), so checkpoints hold only trained weights and ``copy.deepcopy(model)`` (EMA) does
not copy it. EMA itself is the training loop's job
(recipe: power 0.75, max decay 0.9999).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler
from torch import nn

from vlabench.contracts import ACTION_DIM, STATE_DIM
from vlabench.models.blocks.noise import Generators, randn
from vlabench.models.blocks.normalize import minmax_limits
from vlabench.models.blocks.unet1d import ConditionalUnet1D, check_horizon
from vlabench.models.blocks.vision import ResNetKeypointEncoder
from vlabench.models.configs import PresetConfig
SCHEDULERS = ("ddim", "ddpm")
PREDICTION_TYPES = ("epsilon", "sample")
PRESETS: dict[str, dict[str, Any]] = {
    "base": dict(down_dims=(256, 512, 1024), step_embed_dim=128, resnet_width=64, num_keypoints=32,
                 image_feature_dim=64, image_size=128, crop_size=116, lang_dim=64),
    "small": dict(down_dims=(64, 128, 256), step_embed_dim=64, resnet_width=16, num_keypoints=16,
                  image_feature_dim=32, image_size=64, crop_size=58, lang_dim=32),
    "tiny": dict(down_dims=(32,), step_embed_dim=16, resnet_width=8, num_keypoints=4,
                 image_feature_dim=8, image_size=32, crop_size=28, lang_dim=8),
}


@dataclass
class DiffusionConfig(PresetConfig):
    """Hyperparameters of the language-conditioned Diffusion Policy. Fields left unset (None) take the
    value of ``preset``: "base" (GPU), "small" (CPU demo), "tiny" (tests)."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = PRESETS
    TUPLE_FIELDS: ClassVar[tuple[str, ...]] = ("down_dims",)
    n_obs_steps: int = 2
    """Observation steps conditioning each prediction (t-n_obs_steps+1 .. t)."""
    horizon: int = 16
    """Length of the predicted action sequence; a multiple of 2**(len(down_dims)-1)."""
    n_action_steps: int = 8
    """Actions executed per predicted chunk, starting at index n_obs_steps-1 (the current step)."""
    num_train_timesteps: int = 100
    """Diffusion steps of the training noise schedule."""
    beta_schedule: str = "squaredcos_cap_v2"
    """diffusers beta schedule name."""
    prediction_type: str = "epsilon"
    """What the U-Net predicts: "epsilon" (noise) or "sample" (clean actions)."""
    clip_sample: bool = True
    """Clip the predicted clean actions to [-1, 1] at every denoising step."""
    scheduler: str = "ddim"
    """Sampler at inference: "ddim" or "ddpm" (both with trailing timestep spacing)."""
    num_inference_steps: int = 10
    """Denoising steps at inference (1..num_train_timesteps)."""
    down_dims: tuple[int, ...] | None = None
    """U-Net channel widths per level (preset: base 256,512,1024)."""
    step_embed_dim: int | None = None
    """Width of the diffusion-step embedding (preset: base 128)."""
    kernel_size: int = 5
    """Temporal convolution kernel of the U-Net."""
    n_groups: int = 8
    """GroupNorm groups in the U-Net."""
    resnet_width: int | None = None
    """ResNet-18 stem width; 64 is the standard network (preset)."""
    num_keypoints: int | None = None
    """Spatial-softmax keypoints per camera (preset: base 32)."""
    image_feature_dim: int | None = None
    """Feature size per camera and step (preset: base 64)."""
    image_size: int | None = None
    """Frames are resized to this square size first (preset: base 128 = the env default, a no-op)."""
    crop_size: int | None = None
    """Square crop fed to the ResNet: random during training, centered in eval (preset: ~90% of image_size)."""
    use_wrist: bool = True
    """Also encode the wrist camera (own ResNet)."""
    text_encoder: str | None = None
    """Sentence-encoder path for get_sentence_encoder; None = packaged MiniLM, "hash" = test embedding."""
    lang_dim: int | None = None
    """Width of the learned projection of the sentence embedding (preset: base 64)."""
    mask_padded_actions: bool = False
    """Leave padded action steps out of the loss (off: pads are edge copies, the reference keeps them)."""

    def validate(self, r: "DiffusionConfig") -> None:
        if r.scheduler not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {r.scheduler!r}; known: {', '.join(SCHEDULERS)}")
        if r.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"unknown prediction_type {r.prediction_type!r}; known: {', '.join(PREDICTION_TYPES)}")
        if r.n_obs_steps < 1:
            raise ValueError(f"n_obs_steps must be >= 1, got {r.n_obs_steps}")
        check_horizon(r.horizon, r.down_dims)
        if not 1 <= r.n_action_steps <= r.horizon - r.n_obs_steps + 1:
            raise ValueError(f"n_action_steps={r.n_action_steps} must be in 1..horizon-n_obs_steps+1 "
                             f"= {r.horizon - r.n_obs_steps + 1}")
        if not 1 <= r.num_inference_steps <= r.num_train_timesteps:
            raise ValueError(f"num_inference_steps={r.num_inference_steps} must be in 1..num_train_timesteps"
                             f"={r.num_train_timesteps}")
        if not 1 <= r.crop_size <= r.image_size:
            raise ValueError(f"crop_size={r.crop_size} must be in 1..image_size={r.image_size}")


def _sentence_encoder(path: str | None) -> Any:
    """Frozen sentence encoder on CPU; get_sentence_encoder shares one per path, outside any module tree."""
    from vlabench.models.blocks.text_encoder import get_sentence_encoder

    return get_sentence_encoder(path, "cpu")


class DiffusionModel(nn.Module):
    """Observation encoders + conditional U-Net denoiser; see the module docstring."""

    def __init__(self, cfg: DiffusionConfig, stats: Mapping) -> None:
        super().__init__()
        self.cfg = cfg = cfg.resolved()
        for key, dim in (("action", ACTION_DIM), ("state", STATE_DIM)):
            center, half = minmax_limits(stats, key, dim)
            self.register_buffer(f"{key}_center", center)
            self.register_buffer(f"{key}_half_range", half)
        enc = dict(feature_dim=cfg.image_feature_dim, num_keypoints=cfg.num_keypoints, width=cfg.resnet_width)
        self.front_encoder = ResNetKeypointEncoder(**enc)
        self.wrist_encoder = ResNetKeypointEncoder(**enc) if cfg.use_wrist else None
        self.lang_proj = nn.Linear(_sentence_encoder(cfg.text_encoder).dim, cfg.lang_dim)
        n_cams = 2 if cfg.use_wrist else 1
        self.cond_dim = cfg.n_obs_steps * (n_cams * cfg.image_feature_dim + STATE_DIM) + cfg.lang_dim
        self.unet = ConditionalUnet1D(ACTION_DIM, self.cond_dim, cfg.down_dims, cfg.step_embed_dim,
                                      cfg.kernel_size, cfg.n_groups)
        self.noise_scheduler = self.make_scheduler("ddpm", sampling=False)

    # -- normalization -------------------------------------------------------------------------
    def normalize_action(self, action: torch.Tensor) -> torch.Tensor:
        """Env actions ``(..., 7)`` -> [-1, 1] (clamped against stats drift)."""
        return ((action.float() - self.action_center) / self.action_half_range).clamp(-1.0, 1.0)

    def unnormalize_action(self, action: torch.Tensor) -> torch.Tensor:
        """Normalized actions ``(..., 7)`` -> env actions, clipped to the env's [-1, 1] box."""
        return (action * self.action_half_range + self.action_center).clamp(-1.0, 1.0)

    # -- conditioning -------------------------------------------------------------------------
    def embed_instructions(self, instructions: list[str]) -> torch.Tensor:
        """Frozen sentence embeddings ``(B, D)`` on the model's device (the encoder caches per string)."""
        with torch.no_grad():
            emb = _sentence_encoder(self.cfg.text_encoder).embed(list(instructions))
        return emb.detach().float().to(self.action_center.device)

    def _prepare_images(self, frames: torch.Tensor, name: str, steps: int | None = None) -> torch.Tensor:
        """``(B, T, 3, H, W)`` uint8 -> ``(B*T, 3, crop, crop)`` float in [-1, 1], resized and cropped
        (one random crop per sample in training, shared by its T frames). T must be ``steps``
        (default n_obs_steps)."""
        steps = self.cfg.n_obs_steps if steps is None else steps
        if frames.ndim != 5 or frames.shape[1] != steps or frames.shape[2] != 3:
            raise ValueError(f"{name} must be (B, {steps}, 3, H, W), got {tuple(frames.shape)}")
        b, t = frames.shape[:2]
        x = frames.flatten(0, 1).to(self.action_center.device).float()
        if frames.dtype == torch.uint8:
            x = x / 255.0
        s, c = self.cfg.image_size, self.cfg.crop_size
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", antialias=True, align_corners=False)
        if c < s:
            if self.training:
                # One random crop per sample, the same for all its time steps (keeps inter-frame motion).
                x = x.view(b, t, 3, s, s)
                offs = torch.randint(0, s - c + 1, (b, 2)).tolist()
                x = torch.stack([x[i, ..., oy:oy + c, ox:ox + c] for i, (oy, ox) in enumerate(offs)]).flatten(0, 1)
            else:
                o = (s - c) // 2
                x = x[..., o:o + c, o:o + c]
        return x * 2.0 - 1.0

    def encode_obs(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """Batch with image/wrist_image ``(B, n_obs, 3, H, W)``, state ``(B, n_obs, 8)``, instruction
        list[str] -> global conditioning ``(B, cond_dim)``."""
        b = batch["image"].shape[0]
        feats = [self.front_encoder(self._prepare_images(batch["image"], "image")).view(b, -1)]
        if self.wrist_encoder is not None:
            feats.append(self.wrist_encoder(self._prepare_images(batch["wrist_image"], "wrist_image")).view(b, -1))
        state = torch.as_tensor(batch["state"], device=self.action_center.device).float()
        if state.shape != (b, self.cfg.n_obs_steps, STATE_DIM):
            raise ValueError(f"state must be (B={b}, n_obs_steps={self.cfg.n_obs_steps}, {STATE_DIM}), "
                             f"got {tuple(state.shape)}")
        feats.append(((state - self.state_center) / self.state_half_range).view(b, -1))
        instructions = batch["instruction"]
        instructions = [instructions] * b if isinstance(instructions, str) else list(instructions)
        if len(instructions) != b:
            raise ValueError(f"got {len(instructions)} instructions for a batch of {b}")
        feats.append(self.lang_proj(self.embed_instructions(instructions)))
        return torch.cat(feats, dim=-1)

    # -- diffusion ------------------------------------------------------------------------------
    def make_scheduler(self, kind: str, sampling: bool = True) -> DDPMScheduler | DDIMScheduler:
        """A fresh diffusers scheduler; sampling ones use trailing spacing so they start at t=T-1."""
        if kind not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {kind!r}; known: {', '.join(SCHEDULERS)}")
        cfg = self.cfg
        common = dict(num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
                      clip_sample=cfg.clip_sample, prediction_type=cfg.prediction_type)
        if sampling:
            common["timestep_spacing"] = "trailing"
        if kind == "ddim":
            return DDIMScheduler(**common, set_alpha_to_one=True, steps_offset=0)
        return DDPMScheduler(**common, variance_type="fixed_small")

    def diffusion_loss(self, x0: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Denoising MSE: normalized actions x0 ``(B, horizon, 7)``, cond ``(B, cond_dim)``, mask ``(B, horizon)``
        (True = counts; None = all steps)."""
        noise = torch.randn_like(x0)
        t = torch.randint(0, self.cfg.num_train_timesteps, (x0.shape[0],), device=x0.device)
        noisy = self.noise_scheduler.add_noise(x0, noise, t)
        pred = self.unet(noisy, t, cond)
        err = (pred - (noise if self.cfg.prediction_type == "epsilon" else x0)) ** 2
        if mask is None:
            return err.mean()
        weight = mask.to(err.dtype).unsqueeze(-1).expand_as(err)
        return (err * weight).sum() / weight.sum().clamp(min=1.0)

    def compute_loss(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss on a collated batch (vlabench.contracts keys); action ``(B, horizon, 7)`` raw env actions."""
        action = torch.as_tensor(batch["action"], device=self.action_center.device)
        if action.ndim != 3 or action.shape[1:] != (self.cfg.horizon, ACTION_DIM):
            raise ValueError(f"action must be (B, horizon={self.cfg.horizon}, {ACTION_DIM}), got {tuple(action.shape)}")
        mask = None
        if self.cfg.mask_padded_actions and "action_is_pad" in batch:
            mask = ~torch.as_tensor(batch["action_is_pad"], device=action.device).bool()
        loss = self.diffusion_loss(self.normalize_action(action), self.encode_obs(batch), mask)
        return loss, {"loss": float(loss.detach())}

    @torch.no_grad()
    def sample(self, cond: torch.Tensor, generator: Generators = None,
               num_inference_steps: int | None = None, scheduler: str | None = None) -> torch.Tensor:
        """Denoise from Gaussian noise: cond ``(B, cond_dim)`` -> normalized actions ``(B, horizon, 7)``.

        ``generator`` (any device; one for the batch or a list of B, one per row) makes the noise
        reproducible; steps and sampler default to the config.
        """
        steps = self.cfg.num_inference_steps if num_inference_steps is None else num_inference_steps
        if not 1 <= steps <= self.cfg.num_train_timesteps:
            raise ValueError(f"num_inference_steps={steps} must be in 1..{self.cfg.num_train_timesteps}")
        sched = self.make_scheduler(scheduler or self.cfg.scheduler)
        sched.set_timesteps(steps, device=cond.device)
        shape = (cond.shape[0], self.cfg.horizon, ACTION_DIM)
        x = randn(shape, generator, cond.device, cond.dtype)
        step_generator = list(generator) if isinstance(generator, (list, tuple)) else generator
        for t in sched.timesteps:
            x = sched.step(self.unet(x, t, cond), t, x, generator=step_generator).prev_sample
        return x

    @torch.no_grad()
    def predict_action_chunk(self, batch: Mapping[str, Any], generator: Generators = None,
                             num_inference_steps: int | None = None) -> torch.Tensor:
        """Observation batch (as in :meth:`encode_obs`) -> env actions ``(B, horizon, 7)`` in [-1, 1]."""
        return self.unnormalize_action(self.sample(self.encode_obs(batch), generator=generator,
                                                   num_inference_steps=num_inference_steps))

    def data_spec(self) -> dict:
        """DemoDataset kwargs for this model."""
        cams = ("image", "wrist_image") if self.cfg.use_wrist else ("image",)
        return {"n_obs": self.cfg.n_obs_steps, "horizon": self.cfg.horizon, "goal_offset": None, "image_keys": cams}
