"""`vlabench offline-eval`: a checkpoint's training losses on held-out expert demos, per cell.

Closed-loop success is the benchmark's measure, but a small model that has not learned to act scores
0 everywhere, which hides any difference between two such models. The teacher-forced losses on
held-out demos (the quantities the training loop logs, e.g. RT-1/RT-2 ``action_loss`` = action-token
negative log-likelihood and ``action_token_acc``) still separate them, cell by cell: does a model
predict the expert's action on held-out symbols as well as on seen ones? Every cell records ``loss``, the
objective the model trains on, next to whatever terms it logs.

The demos must come from seeds the checkpoint never trained on: episodes whose (task, split, seed)
also appear in the checkpoint's training data (its ``dataset.json`` path, when that still exists) are
refused. Every sample of every episode is scored once, in order, with the RNG seeded, so a rerun
gives the same numbers; losses that draw noise (Diffusion Policy's) are averaged over that noise.

``--swap-instructions`` is a language probe: each episode is scored with the instruction of the next
episode of its cell (same family and split, another target or pad). A model that reads the
instruction does worse with the wrong one; equal losses mean the actions ignore the language.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vlabench.fileio import write_json_atomic


@dataclass
class OfflineEvalConfig:
    """Per-cell teacher-forced losses of a checkpoint on held-out demos."""

    checkpoint: str
    """Checkpoint directory (or a run directory; its ``latest`` is used)."""
    data: str
    """Demo directory from `vlabench collect`, on seeds the checkpoint did not train on."""
    max_episodes_per_cell: int | None = None
    """Score at most this many episodes of each (task, split) cell (None = all)."""
    batch_size: int = 32
    """Samples per forward pass."""
    swap_instructions: bool = False
    """Score each episode with the instruction of the next episode of its cell (a language probe)."""
    seed: int = 0
    """Seed for any noise the loss draws."""
    device: str = "cpu"
    """Torch device."""
    out: str | None = None
    """Optional JSON file for the results."""


def training_keys(dataset_info: dict) -> set[tuple]:
    """(task, split, seed) of every episode in the checkpoint's training data, if that data is still there."""
    path = dataset_info.get("path")
    if not path or not Path(path).is_dir():
        return set()
    from vlabench.data.manifest import load_manifest, manifest_episodes

    return {(ep["task"], ep["split"], int(ep["seed"])) for ep in manifest_episodes(load_manifest(path))}


def cell_samples(keys: list[tuple], lengths: list[int], max_episodes: int | None) -> tuple[dict, dict]:
    """(``"task/split"`` -> sample indices of its first ``max_episodes`` episodes in dataset order,
    ``"task/split"`` -> number of those episodes)."""
    ends = np.cumsum(lengths)
    cells: dict[str, list[int]] = defaultdict(list)
    episodes: dict[str, int] = defaultdict(int)
    for e, (task, split, *_rest) in enumerate(keys):
        name = f"{task}/{split}"
        if max_episodes is not None and episodes[name] >= max_episodes:
            continue
        episodes[name] += 1
        cells[name].extend(range(int(ends[e]) - lengths[e], int(ends[e])))
    return dict(cells), dict(episodes)


def swapped_instructions(keys: list[tuple], instructions: list[str]) -> list[str]:
    """Episode e gets the instruction of the next episode of its (task, split) cell (cyclically)."""
    by_cell: dict[tuple, list[int]] = defaultdict(list)
    for e, (task, split, *_rest) in enumerate(keys):
        by_cell[(task, split)].append(e)
    out = list(instructions)
    for eps in by_cell.values():
        for j, e in enumerate(eps):
            out[e] = instructions[eps[(j + 1) % len(eps)]]
    return out


class _Instructions:
    """A dataset view whose samples carry ``instructions[episode]`` instead of their own."""

    def __init__(self, inner, lengths: list[int], instructions: list[str]) -> None:
        self.inner, self.instructions = inner, instructions
        self.episode_of = np.repeat(np.arange(len(lengths)), lengths)

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i: int) -> dict:
        return {**self.inner[i], "instruction": self.instructions[self.episode_of[i]]}


def run(cfg: OfflineEvalConfig) -> dict:
    """Score every cell; returns (and optionally writes) ``{"cells": {cell: {metric: mean}}, ...}``."""
    import torch
    from torch.utils.data import DataLoader, Subset
    from tqdm import tqdm

    from vlabench.devices import resolve_device
    from vlabench.models.checkpoint import load_model
    from vlabench.train.data import make_dataset, read_dataset_meta, seed_all, to_device

    if cfg.batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {cfg.batch_size}")
    if cfg.max_episodes_per_cell is not None and cfg.max_episodes_per_cell < 1:
        raise ValueError(f"max_episodes_per_cell must be >= 1 (or unset for all), got {cfg.max_episodes_per_cell}")
    device = resolve_device(cfg.device)
    model, info = load_model(cfg.checkpoint, device, use_ema=True)
    _, manifest_hash = read_dataset_meta(Path(cfg.data))
    dataset = make_dataset(Path(cfg.data), dict(model.data_spec()))
    keys = dataset.episode_keys()
    leaked = sorted({(t, s, int(seed)) for t, s, _i, seed in keys} & training_keys(info.dataset))
    if leaked:
        raise ValueError(f"{len(leaked)} episodes of {cfg.data} (e.g. {leaked[:3]}) are in the checkpoint's training "
                         f"data {info.dataset.get('path')}; collect held-out demos on other seeds")
    lengths = dataset.episode_lengths()
    cells, n_episodes = cell_samples(keys, lengths, cfg.max_episodes_per_cell)
    changed = None
    if cfg.swap_instructions:
        own = dataset.episode_instructions()
        swapped = swapped_instructions(keys, own)
        changed = sum(a != b for a, b in zip(own, swapped)) / max(len(own), 1)
        dataset = _Instructions(dataset, lengths, swapped)
    seed_all(cfg.seed)
    results: dict[str, dict] = {}
    bar = tqdm(total=sum(len(i) for i in cells.values()), desc="offline-eval", unit="sample")
    with torch.no_grad(), bar:
        for name, indices in sorted(cells.items()):
            totals: dict[str, float] = defaultdict(float)
            loader = DataLoader(Subset(dataset, indices), batch_size=cfg.batch_size, shuffle=False)
            for batch in loader:
                n = len(batch["instruction"])
                loss, metrics = model.compute_loss(to_device(batch, torch.device(device)))
                for k, v in {**metrics, "loss": loss}.items():  # "loss": the model's objective, whatever it logs
                    totals[k] += float(v) * n
                bar.update(n)
            results[name] = {"n_samples": len(indices), "n_episodes": n_episodes[name],
                             **{k: v / len(indices) for k, v in sorted(totals.items())}}
    out = {"checkpoint": str(info.path), "model": info.model_name, "step": info.trainer_state.get("step"),
           "data": str(Path(cfg.data).resolve()), "manifest_hash": manifest_hash, "seed": cfg.seed,
           "swap_instructions": cfg.swap_instructions, "changed_instruction_fraction": changed, "cells": results}
    if cfg.out:
        write_json_atomic(cfg.out, out)
    for name, row in results.items():
        shown = ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k not in ("n_samples", "n_episodes"))
        print(f"{name:<22} {row['n_episodes']:>4} eps {row['n_samples']:>6} samples  {shown}")
    return out
