"""Latent denoiser of the goal-image generator (InstructPix2Pix / SuSIE style) and its sampler.

* Network: a diffusers ``UNet2DConditionModel`` whose input is 8 channels, the noisy goal latent
  concatenated with the *current* frame's latent, cross-attending to the instruction's token states.
* Context latent: the VAE posterior mean, NOT multiplied by the latent scale, as in SuSIE
  (``scripts/train.py``) and the diffusers InstructPix2Pix pipeline. Only the diffused goal latent is
  scaled to unit variance.
* Null conditions (classifier-free guidance): no text = the token states of the empty string ""
  (what InstructPix2Pix drops the prompt to); no image = an all-zero context latent.
* Sampling: DDIM, eta = 0, "trailing" timestep spacing so the first step starts from t = T-1 (pure
  noise) even with few steps. Dual guidance (Brooks et al. 2023; SuSIE ``sampling.py``)::

      eps = eps_uncond + w_img * (eps_img - eps_uncond) + w_txt * (eps_full - eps_img)

  with eps_uncond = eps(no image, no text), eps_img = eps(image, no text), eps_full = eps(image, text);
  the three are evaluated in one batched forward pass. Against saturation at large weights the
  predicted x0 is clamped to +-``x0_clip`` (in the unit-variance latent space) at every step and the
  step's epsilon is re-derived from the clamped x0 (diffusers ``use_clipped_model_output``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DConditionModel

from vlabench.models.blocks.noise import Generators, randn

# Stable Diffusion's noise schedule; its 1000 steps work for 16x16x4 latents too.
SCHEDULE = dict(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)


def build_denoiser(
    block_out_channels: tuple[int, ...] = (64, 128, 256),
    layers_per_block: int = 1,
    cross_attention_dim: int = 384,
    attention_head_dim: int = 8,
    norm_num_groups: int = 32,
    latent_channels: int = 4,
    latent_size: int = 16,
) -> UNet2DConditionModel:
    """UNet2DConditionModel: (B, 2*latent_channels, s, s) -> eps (B, latent_channels, s, s).

    All levels but the lowest carry cross-attention (the lowest is 4x4 at s=16, too coarse to matter).
    """
    bad = [c for c in block_out_channels if c % norm_num_groups]
    if bad:
        raise ValueError(f"unet block_out_channels {tuple(block_out_channels)} must all be divisible by "
                         f"norm_num_groups={norm_num_groups}; bad: {bad}")
    n = len(block_out_channels)
    if n < 2:
        raise ValueError(f"unet needs >= 2 block_out_channels, got {tuple(block_out_channels)}")
    return UNet2DConditionModel(
        sample_size=latent_size,
        in_channels=2 * latent_channels,
        out_channels=latent_channels,
        down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
        block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=attention_head_dim,
        norm_num_groups=norm_num_groups,
    )


def train_scheduler() -> DDPMScheduler:
    """The DDPM forward process used for training (epsilon objective)."""
    return DDPMScheduler(**SCHEDULE, prediction_type="epsilon", clip_sample=False)


def sampler(x0_clip: float | None) -> DDIMScheduler:
    """DDIM sampler matching :func:`train_scheduler`; ``x0_clip=None`` disables the x0 clamp."""
    return DDIMScheduler(**SCHEDULE, prediction_type="epsilon", clip_sample=x0_clip is not None,
                         clip_sample_range=float(x0_clip) if x0_clip is not None else 1.0, set_alpha_to_one=True,
                         timestep_spacing="trailing")


def combine_guidance(eps_uncond: torch.Tensor, eps_img: torch.Tensor, eps_full: torch.Tensor,
                     w_img: float, w_txt: float) -> torch.Tensor:
    """Dual classifier-free guidance (InstructPix2Pix eq. 3); (0,0) -> uncond, (1,0) -> img, (1,1) -> full."""
    return eps_uncond + w_img * (eps_img - eps_uncond) + w_txt * (eps_full - eps_img)


def sample_condition_dropout(batch: int, p_text_only: float, p_image_only: float, p_both: float,
                             device: torch.device | str = "cpu",
                             generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample masks (drop_text (B,), drop_image (B,)) bool, from ONE uniform u per sample.

    The events are disjoint intervals of u, so each unconditional variant is trained at its own rate:
    ``u < p_both``: drop both (trains eps_uncond); next ``p_text_only``: drop text only (trains eps_img);
    next ``p_image_only``: drop image only (text-only conditioning; unused by the sampler but trained, as
    in InstructPix2Pix); otherwise keep both (eps_full).
    """
    total = p_both + p_text_only + p_image_only
    if min(p_both, p_text_only, p_image_only) < 0 or total > 1:
        raise ValueError(f"condition dropout rates must be >= 0 and sum to <= 1, got both={p_both}, "
                         f"text_only={p_text_only}, image_only={p_image_only}")
    u = torch.rand(batch, generator=generator).to(device)
    both = u < p_both
    text_only = (u >= p_both) & (u < p_both + p_text_only)
    image_only = (u >= p_both + p_text_only) & (u < total)
    return both | text_only, both | image_only


class ClipTokenEncoder:
    """Per-token states of an open_clip text tower, loaded from a local weights file (never downloaded).

    ``token_states(texts, max_len)`` -> ((B, L, width) after ``ln_final``, mask (B, L) bool); ``dim`` =
    width. Uses the model's own tokenizer (the bundled BPE for OpenAI-style models).
    """

    def __init__(self, model_name: str, weights: str, device: str | torch.device = "cpu") -> None:
        import open_clip

        p = Path(weights).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"open_clip weights {str(p)!r} not found; pass a local file "
                                    "(nothing is downloaded)")
        model = open_clip.create_model(model_name, pretrained=str(p), device=device)
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.device = torch.device(device)
        text = getattr(model, "text", None)
        self.dim = int(text.width if text is not None else model.transformer.width)

    @torch.no_grad()
    def token_states(self, texts: list[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        tok = self.tokenizer(list(texts)).to(self.device)
        m = self.model
        if getattr(m, "text", None) is not None:  # CustomTextCLIP
            m.text.output_tokens = True
            _, x = m.text(tok)
        else:
            x = m.token_embedding(tok) + m.positional_embedding
            x = m.ln_final(m.transformer(x, attn_mask=m.attn_mask))
        # BPE pads with id 0; SOT/EOT are nonzero so the mask keeps them.
        return x[:, :max_len].float(), (tok != 0)[:, :max_len]


class TokenCache:
    """Memoizes a frozen encoder's token states per string (instructions repeat across a dataset)."""

    def __init__(self, encoder, max_len: int, max_entries: int = 8192) -> None:
        self.encoder, self.max_len, self.max_entries = encoder, max_len, max_entries
        self.dim = int(encoder.dim)
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, texts: list[str], device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, max_len, dim) float states and (B, max_len) bool mask for ``texts`` on ``device``."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            if len(self._cache) + len(missing) > self.max_entries:
                self._cache.clear()
            states, mask = self.encoder.token_states(missing, self.max_len)
            states, mask = states.float(), mask.bool()
            if states.shape[1] < self.max_len:  # some encoders pad only to the longest string
                pad = self.max_len - states.shape[1]
                states = torch.nn.functional.pad(states, (0, 0, 0, pad))
                mask = torch.nn.functional.pad(mask, (0, pad))
            for t, s, k in zip(missing, states.detach().cpu(), mask.cpu()):
                self._cache[t] = (s, k)
        s = torch.stack([self._cache[t][0] for t in texts]).to(device)
        k = torch.stack([self._cache[t][1] for t in texts]).to(device)
        return s, k


@torch.no_grad()
def ddim_sample(unet: UNet2DConditionModel, context: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor,
                null_text: torch.Tensor, null_mask: torch.Tensor, n_steps: int = 30, w_img: float = 1.5,
                w_txt: float = 7.5, x0_clip: float | None = 4.0,
                generator: Generators = None) -> torch.Tensor:
    """Sample unit-variance goal latents (B, C, s, s) given context latents (B, C, s, s) (unscaled).

    text/text_mask: (B, L, D) / (B, L) instruction token states; null_text/null_mask: (1, L, D) / (1, L)
    states of "". ``generator`` (a CPU generator, or a list of B, one per row) makes the result a function
    of its seed only.
    """
    if not 1 <= n_steps <= SCHEDULE["num_train_timesteps"]:
        raise ValueError(f"n_steps must be in [1, {SCHEDULE['num_train_timesteps']}], got {n_steps}")
    b = context.shape[0]
    sched = sampler(x0_clip)
    sched.set_timesteps(n_steps)
    # Noise is drawn on the CPU so a seed gives the same goal on any device.
    x = randn(context.shape, generator, "cpu").to(context.device, context.dtype)
    null = null_text.expand(b, -1, -1)
    nmask = null_mask.expand(b, -1)
    ctx3 = torch.cat([torch.zeros_like(context), context, context])
    txt3 = torch.cat([null, null, text])
    mask3 = torch.cat([nmask, nmask, text_mask]).to(text.dtype)
    for t in sched.timesteps:
        inp = torch.cat([x.repeat(3, 1, 1, 1), ctx3], dim=1)
        eps = unet(inp, t.to(context.device), encoder_hidden_states=txt3, encoder_attention_mask=mask3).sample
        e_u, e_i, e_f = eps.chunk(3)
        eps = combine_guidance(e_u, e_i, e_f, w_img, w_txt)
        x = sched.step(eps, t, x, eta=0.0, use_clipped_model_output=True).prev_sample
    return x
