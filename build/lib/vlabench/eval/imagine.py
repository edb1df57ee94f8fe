"""``vlabench imagine``: look at what a goal-diffusion checkpoint imagines for one env episode.

Renders the env's frame for (task, seed) (optionally after ``start_steps`` expert steps), generates a
goal from it at several (image, text) guidance-weight pairs with the SAME noise seed (so the tiles
differ only by guidance), rolls the scripted expert ``goal_offset`` steps forward for the true future
frame, and writes one labelled PNG row::

    current | goal @ (w_img, w_txt) ... | true future (t + k)

Each generated tile is annotated with its PSNR against the true future frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from vlabench.fileio import atomic_path
from vlabench.models.blocks.image_metrics import psnr


@dataclass
class ImagineConfig:
    """Generate goal images for one env episode and save them next to the true future frame."""

    checkpoint: str
    """Checkpoint directory of a ``goal-diffusion`` model."""
    task: str
    """Task id as given to vlabench.env.make_env."""
    seed: int = 0
    """Episode seed (initial state and instruction)."""
    out: str = "imagine.png"
    """Output PNG path."""
    split: str = "seen"
    """Task split passed to make_env."""
    start_steps: int = 0
    """Expert steps to take before the "current" frame (0 = the first frame)."""
    guidance_image: list[float] = field(default_factory=lambda: [1.0, 1.5, 2.5])
    """Image guidance weights, one per tile (a single value is repeated to match guidance_text)."""
    guidance_text: list[float] = field(default_factory=lambda: [1.0, 3.0, 7.5])
    """Text guidance weights, one per tile (a single value is repeated to match guidance_image)."""
    n_sampling_steps: int | None = None
    """DDIM steps; default: the checkpoint config's."""
    sample_seed: int = 0
    """Diffusion-noise seed, shared by every tile."""
    image_size: int = 128
    """Env camera size (should match the training data)."""
    suite: str | None = None
    """Optional suite file whose [env] options (camera size, zoom, objects, ...) build the env, so the
    frames match data collected from it; overrides image_size."""
    tile_scale: int = 2
    """Nearest-neighbour upscaling of each tile in the PNG."""
    device: str = "auto"
    """Torch device: auto (CUDA when available), cpu, cuda or cuda:N."""


def _pairs(cfg: ImagineConfig) -> list[tuple[float, float]]:
    gi, gt = list(cfg.guidance_image), list(cfg.guidance_text)
    if len(gi) == 1:
        gi = gi * len(gt)
    if len(gt) == 1:
        gt = gt * len(gi)
    if len(gi) != len(gt) or not gi:
        raise ValueError(f"guidance_image {cfg.guidance_image} and guidance_text {cfg.guidance_text} must have "
                         "the same length (or one of them a single value)")
    return list(zip(gi, gt))


def grid_image(tiles: list[np.ndarray], labels: list[str], title: str = "", scale: int = 2) -> Image.Image:
    """Uint8 (H, W, 3) tiles in one row, a text label above each and a title line on top."""
    font = ImageFont.load_default()
    ims = [Image.fromarray(t).resize((t.shape[1] * scale, t.shape[0] * scale), Image.NEAREST) for t in tiles]
    w, h = ims[0].size
    pad, line = 4, 14
    n_lines = max(len(lbl.split("\n")) for lbl in labels)
    top = (line + pad if title else 0) + n_lines * line + pad
    canvas = Image.new("RGB", (len(ims) * (w + pad) + pad, top + h + pad), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, pad), title, fill="black", font=font)
    for i, (im, lbl) in enumerate(zip(ims, labels)):
        x = pad + i * (w + pad)
        draw.text((x, top - n_lines * line - pad // 2), lbl, fill="black", font=font)
        canvas.paste(im, (x, top))
    return canvas


def run(cfg: ImagineConfig) -> Path:
    """Write the PNG described in the module docstring; returns its path."""
    from vlabench.devices import resolve_device
    from vlabench.env import make_env
    from vlabench.models.checkpoint import load_model
    from vlabench.suite import env_kwargs_of

    pairs = _pairs(cfg)
    device = resolve_device(cfg.device)
    model, _ = load_model(cfg.checkpoint, device, use_ema=True, expect="goal-diffusion")
    k = model.cfg.goal_offset
    env = make_env(cfg.task, cfg.split, **env_kwargs_of(cfg.suite, cfg.image_size))
    try:
        obs, _ = env.reset(seed=cfg.seed)
        done = False
        for _ in range(cfg.start_steps):
            obs, _, term, trunc, _ = env.step(env.unwrapped.expert_action())
            if term or trunc:
                raise ValueError(f"episode {cfg.task!r} seed {cfg.seed} ended within start_steps={cfg.start_steps}")
        current, instruction = np.array(obs["image"], copy=True), str(obs["instruction"])
        reached = 0
        for _ in range(k):
            obs, _, term, trunc, _ = env.step(env.unwrapped.expert_action())
            reached += 1
            if term or trunc:
                done = True
                break
        future = np.array(obs["image"], copy=True)
    finally:
        env.close()
    cur_t = torch.from_numpy(current).permute(2, 0, 1)[None].to(device)
    fut_t = torch.from_numpy(future).permute(2, 0, 1)[None]
    tiles, labels = [current], ["current (t)"]
    for w_img, w_txt in pairs:
        goal = model.generate_goals(cur_t, [instruction], guidance_image=w_img, guidance_text=w_txt,
                                    n_steps=cfg.n_sampling_steps, seed=cfg.sample_seed).cpu()
        tiles.append(goal[0].permute(1, 2, 0).numpy())
        labels.append(f"w_img={w_img:g} w_txt={w_txt:g}\nPSNR {float(psnr(goal, fut_t)):.1f} dB")
    tiles.append(future)
    labels.append(f"true t+{reached}" + (" (episode ended)" if done else ""))
    title = f"{cfg.task} seed {cfg.seed}: \"{instruction}\"  (goal_offset {k}, "
    title += f"{cfg.n_sampling_steps or model.cfg.n_sampling_steps} DDIM steps)"
    img = grid_image(tiles, labels, title, cfg.tile_scale)
    with atomic_path(cfg.out, suffix=".png") as tmp:
        img.save(tmp, format="PNG")
    return Path(cfg.out)
