"""``vlabench image-metrics``: score a goal-diffusion checkpoint's generated goals on held-out demos.

Goals generated for (current frame, true future frame) pairs of held-out episodes are compared with
the true goal (PSNR, SSIM, Frechet distance: vlabench.models.blocks.image_metrics) against two
references: the VAE reconstruction of the true goal (the ceiling the generator can reach) and the
current frame copied as the "goal" (the floor a useful generator must beat).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vlabench.fileio import write_json_atomic
from vlabench.models.blocks.image_metrics import feature_extractor, frechet_distance, psnr, ssim


@dataclass
class ImageMetricsConfig:
    """Score a goal-diffusion checkpoint's generated goals on held-out demo episodes."""

    checkpoint: str
    """Checkpoint directory of a ``goal-diffusion`` model."""
    data: str
    """Demo dataset root (the shards directory given to ``vlabench train``)."""
    episodes: list[int] | None = None
    """Episode indices (into the dataset's sorted episode list) to score; default: the checkpoint's
    validation episodes (dataset.json val_episodes), else the last ``holdout_fraction`` of the dataset."""
    holdout_fraction: float = 0.1
    """Fraction of episodes (taken from the end) used when neither ``episodes`` nor val_episodes exist."""
    n_samples: int = 256
    """Number of (current frame, true goal) pairs, spread evenly over the chosen episodes' frames."""
    guidance_image: float | None = None
    """Image guidance weight; default: the checkpoint config's."""
    guidance_text: float | None = None
    """Text guidance weight; default: the checkpoint config's."""
    n_sampling_steps: int | None = None
    """DDIM steps; default: the checkpoint config's."""
    extractor: str = "effnet-lite0"
    """Frechet-distance features: 'effnet-lite0' (packaged) or 'inception' (needs inception_weights)."""
    inception_weights: str | None = None
    """Path to a torchvision inception_v3 state dict, for extractor='inception'."""
    batch_size: int = 32
    """Images generated per forward pass."""
    seed: int = 0
    """Seed for sample selection and diffusion noise."""
    device: str = "auto"
    """Torch device: auto (CUDA when available), cpu, cuda or cuda:N."""
    out: str | None = None
    """Write the metrics JSON here (default: <checkpoint>/image_metrics.json)."""


def _summary(gen: torch.Tensor, ref: torch.Tensor, feats_gen: np.ndarray, feats_ref: np.ndarray) -> dict:
    return {"psnr": float(psnr(gen, ref).clamp(max=100).mean()), "ssim": float(ssim(gen, ref).mean()),
            "frechet": frechet_distance(feats_gen, feats_ref)}


def run(cfg: ImageMetricsConfig) -> dict:
    """Generate goals for held-out pairs and report PSNR / SSIM / Frechet distance; returns the dict written."""
    from tqdm import tqdm

    from vlabench.data.dataset import DemoDataset
    from vlabench.devices import resolve_device
    from vlabench.models.checkpoint import load_model

    device = resolve_device(cfg.device)
    model, info = load_model(cfg.checkpoint, device, use_ema=True, expect="goal-diffusion")
    mcfg = model.cfg
    if cfg.episodes is not None:
        eps, source = [int(e) for e in cfg.episodes], "given"
    elif info.dataset.get("val_episodes"):
        # The training run's own validation episodes: never trained on.
        eps, source = [int(e) for e in info.dataset["val_episodes"]], "checkpoint val_episodes"
    else:
        n_all = DemoDataset(cfg.data, n_obs=1, horizon=1).num_episodes
        n_hold = max(1, int(round(n_all * cfg.holdout_fraction)))
        eps, source = list(range(n_all - n_hold, n_all)), f"last {n_hold} of {n_all} episodes"
    ds = DemoDataset(cfg.data, n_obs=1, horizon=1, goal_offset=mcfg.goal_offset, episodes=eps, image_keys=("image",))
    n = min(cfg.n_samples, len(ds))
    if n < 2:
        raise ValueError(f"need at least 2 held-out samples, dataset {cfg.data!r} episodes {eps} give {len(ds)}")
    idx = np.linspace(0, len(ds) - 1, n).round().astype(int)
    feat_fn, label = feature_extractor(cfg.extractor, cfg.inception_weights, device)
    cur_all, goal_all, gen_all, rec_all = [], [], [], []
    gen = torch.Generator().manual_seed(cfg.seed)
    for i in tqdm(range(0, n, cfg.batch_size), desc="goal images", unit="batch"):
        items = [ds[int(j)] for j in idx[i:i + cfg.batch_size]]
        cur = torch.stack([it["image"][-1] for it in items])
        goal = torch.stack([it["goal_image"] for it in items])
        out = model.generate_goals(cur.to(device), [it["instruction"] for it in items],
                                   guidance_image=cfg.guidance_image, guidance_text=cfg.guidance_text,
                                   n_steps=cfg.n_sampling_steps, generator=gen)
        cur_all.append(cur)
        goal_all.append(goal)
        gen_all.append(out.cpu())
        rec_all.append(model.reconstruct(goal.to(device)).cpu())
    cur, goal, out, rec = (torch.cat(t) for t in (cur_all, goal_all, gen_all, rec_all))
    f_goal = torch.cat([feat_fn(goal[i:i + 64]) for i in range(0, n, 64)]).numpy()
    f_out = torch.cat([feat_fn(out[i:i + 64]) for i in range(0, n, 64)]).numpy()
    f_cur = torch.cat([feat_fn(cur[i:i + 64]) for i in range(0, n, 64)]).numpy()
    f_rec = torch.cat([feat_fn(rec[i:i + 64]) for i in range(0, n, 64)]).numpy()
    result = {
        "checkpoint": str(info.path), "data": str(cfg.data), "episodes": eps, "episode_source": source,
        "n_samples": int(n), "goal_offset": mcfg.goal_offset, "frechet_features": label,
        "frechet_note": "biased upward at small n (feature dim > n); compare only runs with equal n_samples",
        "guidance_image": cfg.guidance_image if cfg.guidance_image is not None else mcfg.guidance_image,
        "guidance_text": cfg.guidance_text if cfg.guidance_text is not None else mcfg.guidance_text,
        "n_sampling_steps": cfg.n_sampling_steps or mcfg.n_sampling_steps,
        "generated_vs_true": _summary(out, goal, f_out, f_goal),
        "vae_reconstruction_vs_true": _summary(rec, goal, f_rec, f_goal),
        "copy_current_vs_true": _summary(cur, goal, f_cur, f_goal),
    }
    write_json_atomic(Path(cfg.out) if cfg.out else Path(info.path) / "image_metrics.json", result, indent=2)
    return result
