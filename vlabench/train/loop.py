"""The one training loop every model family uses: ``vlabench train --recipe R --data D --out O``.

A model plugs in through the registry (vlabench.models.registry): ``spec.model_cls(cfg, stats)`` is an
nn.Module with ``compute_loss(batch) -> (loss, {name: float})`` and ``data_spec() -> DemoDataset kwargs``.
The loop owns everything else: seeding, the episode-level train/val split, data order, AdamW with
linear warmup + cosine decay, gradient clipping, EMA, bf16 autocast (CUDA), DDP under torchrun,
metrics.csv / TensorBoard, validation, checkpoints (vlabench.train.checkpoint) and exact resume.

Run directory ``OUT``: ``metrics.csv``, ``latest/`` (checkpoint), optional ``step_XXXXXXXX/`` copies and
``tb/``. ``--resume`` continues from ``OUT/latest``: weights, optimizer, scheduler, EMA, step, every
RNG and the data position, so a killed run reproduces the loss curve of an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from vlabench.models import registry
from vlabench.train import checkpoint as ckpt
from vlabench.train.config import TrainConfig, load_recipe, parse_train_args
from vlabench.train.data import (EpochBatchSampler, FixedBatchSampler, SeededDataset, episode_ids, sample_seeds,
                                 seed_all, split_by_episode, to_device)
from vlabench.train.ema import EMA
from vlabench.train.hooks import periodic_eval
from vlabench.train.logger import MetricsLogger


def make_dataset(data_dir: Path, data_spec: dict) -> Dataset:
    """The demo dataset for a model; ``data_spec`` is ``model.data_spec()`` (n_obs, horizon, goal_offset)."""
    from vlabench.data.dataset import DemoDataset

    return DemoDataset(data_dir, **data_spec)


def read_dataset_meta(data_dir: Path) -> tuple[dict, str | None]:
    """(stats, manifest hash) of a demo directory, before the dataset is built (the model needs stats
    to say which samples it wants). Goes through vlabench.data so stale stats.json get recomputed."""
    from vlabench.data.manifest import load_manifest
    from vlabench.data.stats import ensure_stats

    manifest = load_manifest(data_dir)
    return ensure_stats(data_dir, manifest), manifest.get("hash")


def lr_lambda(warmup: int, total: int):
    """Multiplier of the peak lr after ``s`` scheduler steps: linear warmup, then cosine to 0 at ``total``."""
    def f(s: int) -> float:
        if s < warmup:
            return (s + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (s - warmup) / max(1, total - warmup))))
    return f


class _LossModule(nn.Module):
    """DDP only synchronizes gradients of work done inside forward(), so forward *is* compute_loss."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        return self.model.compute_loss(batch)


def _batch_size(batch: dict) -> int:
    t = batch.get("action")
    if not isinstance(t, torch.Tensor):
        t = next(v for v in batch.values() if isinstance(v, torch.Tensor))
    return int(t.shape[0])


def _pick_device(cfg: TrainConfig, local_rank: int | None) -> torch.device:
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={cfg.device!r} but CUDA is not available; use 'auto' or 'cpu'")
    if cfg.device == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    if local_rank is not None:
        return torch.device("cuda", local_rank)
    return torch.device(cfg.device if cfg.device != "auto" else "cuda")


class Trainer:
    """One training run. ``Trainer(...).fit()`` returns the final checkpoint dir; ``train()`` wraps it."""

    def __init__(self, model_name: str, model_cfg: Any, train_cfg: TrainConfig, data_dir: str | Path,
                 out_dir: str | Path, resume: bool = False) -> None:
        self.name, self.model_cfg, self.cfg = model_name, model_cfg, train_cfg
        self.data_dir, self.out = Path(data_dir), Path(out_dir)
        cfg = train_cfg
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self._owns_group = False
        if self.world > 1:
            local = int(os.environ.get("LOCAL_RANK", "0"))
            self.device = _pick_device(cfg, local)
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            self._owns_group = not dist.is_initialized()
            if self._owns_group:
                dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
            self.rank = dist.get_rank()
        else:
            self.rank, self.device = 0, _pick_device(cfg, None)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

        seed_all(cfg.seed)  # identical init on every rank (DDP also broadcasts rank 0's weights)
        self.stats, manifest_hash = read_dataset_meta(self.data_dir)
        spec = registry.get_spec(model_name)
        self.model = spec.model_cls(model_cfg, self.stats)
        self.dataset = make_dataset(self.data_dir, dict(self.model.data_spec()))
        train_idx, val_idx, val_eps = split_by_episode(episode_ids(self.dataset), cfg.val_fraction, cfg.seed)
        keys = self.dataset.episode_keys() if hasattr(self.dataset, "episode_keys") else None
        self.dataset_info = {"manifest_hash": manifest_hash, "path": str(self.data_dir.resolve()),
                             "n_samples": len(self.dataset), "n_train_samples": len(train_idx),
                             "n_val_samples": len(val_idx), "val_episodes": val_eps,
                             "val_episode_keys": [list(keys[int(e)]) for e in val_eps] if keys else None}

        resume_dir = self._find_resume_dir(resume)
        if resume_dir is not None:
            self._check_resume_config(resume_dir)
            ckpt.load_model_weights(self.model, resume_dir)
        self.model.to(self.device).train()

        decay, no_decay = [], []
        for p in self.model.parameters():
            if p.requires_grad:
                (decay if p.ndim >= 2 else no_decay).append(p)
        if not decay and not no_decay:
            raise ValueError(f"model {model_name!r} has no trainable parameters")
        self.params = decay + no_decay
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr, betas=cfg.betas, fused=self.device.type == "cuda")
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg.warmup_steps, cfg.steps))
        self.ema = EMA(self.model, cfg.ema_decay, cfg.ema_power) if cfg.ema_decay > 0 else None

        self.step, rng_states = 0, None
        if resume_dir is not None:
            state = ckpt.load_training_state(resume_dir)
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if self.ema is not None:
                shadow = ckpt.load_ema_tensors(resume_dir)
                if shadow is not None and state.get("ema"):
                    self.ema.load_state_dict(state["ema"], shadow)
                else:
                    warnings.warn(f"{resume_dir} has no EMA state; the EMA restarts from the current weights")
            ts = json.loads((resume_dir / "trainer_state.json").read_text())
            self.step = int(ts["step"])
            if ts.get("world_size", 1) == self.world and len(ts.get("rng", [])) == self.world:
                rng_states = ts["rng"][self.rank]
            else:
                warnings.warn(f"resuming with world size {self.world} (checkpoint: {ts.get('world_size')}); "
                              f"random streams and data order will differ from an uninterrupted run")
        if self.ema is not None:
            self.ema.to(self.device)

        self.loss_module: nn.Module = _LossModule(self.model)
        if self.world > 1:
            self.loss_module = nn.parallel.DistributedDataParallel(
                self.loss_module, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=cfg.find_unused_parameters)

        pin = self.device.type == "cuda"
        seeded = SeededDataset(self.dataset)
        self.sampler = EpochBatchSampler(train_idx, cfg.batch_size, cfg.seed, self.rank, self.world)
        self.loader = DataLoader(seeded, batch_sampler=self.sampler, num_workers=cfg.num_workers, pin_memory=pin,
                                 persistent_workers=cfg.num_workers > 0,
                                 generator=torch.Generator().manual_seed(cfg.seed))  # keeps global RNG untouched
        self.val_loader = None
        if len(val_idx):
            self.val_loader = DataLoader(
                seeded, batch_sampler=FixedBatchSampler(val_idx, cfg.batch_size, cfg.seed, cfg.val_batches,
                                                        self.rank, self.world),
                num_workers=cfg.num_workers, pin_memory=pin, generator=torch.Generator().manual_seed(cfg.seed))

        if rng_states is not None:
            ckpt.restore_rng_state(rng_states)
        else:  # per-rank streams, so ranks draw different noise/dropout for their different samples
            seed_all(sample_seeds(cfg.seed, 2, self.step, [self.rank])[0])
        self.logger = MetricsLogger(self.out, self.step if resume_dir is not None else None) if self.rank == 0 else None

    # ------------------------------------------------------------------ resume helpers
    def _find_resume_dir(self, resume: bool) -> Path | None:
        latest = self.out / "latest"
        try:
            found = ckpt.resolve_checkpoint_dir(latest)
        except FileNotFoundError:
            found = None
        if not resume:
            if found is not None:
                raise FileExistsError(f"{self.out} already holds a checkpoint ({found}); pass --resume to "
                                      f"continue it or choose another --out")
            return None
        if found is None:
            warnings.warn(f"--resume: no checkpoint in {self.out}; starting from scratch", stacklevel=3)
        return found

    def _check_resume_config(self, d: Path) -> None:
        conf = json.loads((d / "config.json").read_text())
        if conf.get("model") != self.name:
            raise ValueError(f"cannot resume {d}: it trains model {conf.get('model')!r}, the recipe says {self.name!r}")
        old, new = conf.get("model_config", {}), ckpt.to_jsonable(self.model_cfg)
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if diff:
            warnings.warn(f"resuming {d} with a changed model config ({', '.join(diff)}); using the new values")
        old_t, new_t = conf.get("train_config", {}), ckpt.to_jsonable(self.cfg)
        changed = [k for k in ("seed", "batch_size", "val_fraction") if old_t.get(k) != new_t.get(k)]
        if changed:
            warnings.warn(f"resuming with changed {', '.join(changed)}: the data order will differ from the original run")

    # ------------------------------------------------------------------ pieces of the loop
    def _batches(self):
        epoch, start = divmod(self.step, self.sampler.batches_per_epoch)
        while True:
            self.sampler.set_epoch(epoch, start)
            yield from self.loader
            epoch, start = epoch + 1, 0

    def _autocast(self):
        if self.cfg.bf16 and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @torch.no_grad()
    def validate(self) -> float | None:
        """Mean validation loss over the (fixed) validation batches, averaged over all ranks."""
        if self.val_loader is None:
            return None
        rng = ckpt.capture_rng_state()
        seed_all(self.cfg.seed + 1)  # the same noise every time, so val losses are comparable
        self.model.eval()
        total = torch.zeros(2, dtype=torch.float64, device=self.device)
        try:
            for batch in self.val_loader:
                batch = to_device(batch, self.device)
                with self._autocast():
                    loss, _ = self.model.compute_loss(batch)
                n = _batch_size(batch)
                total += torch.stack([loss.detach().double() * n, torch.tensor(float(n), device=self.device, dtype=torch.float64)])
        finally:
            self.model.train()
            ckpt.restore_rng_state(rng)
        if self.world > 1:
            dist.all_reduce(total)
        return float(total[0] / total[1]) if total[1] > 0 else None

    def save(self) -> Path:
        """Checkpoint OUT/latest (rank 0 writes; every rank contributes its RNG state)."""
        rng = ckpt.capture_rng_state()
        rngs = [rng]
        if self.world > 1:
            rngs = [None] * self.world
            dist.all_gather_object(rngs, rng)
        latest = self.out / "latest"
        if self.rank == 0:
            state = {"step": self.step, "epoch": self.step // self.sampler.batches_per_epoch,
                     "batches_per_epoch": self.sampler.batches_per_epoch, "world_size": self.world,
                     "samples_seen": self.step * self.cfg.batch_size * self.world, "rng": rngs,
                     "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            ckpt.save_checkpoint(latest, self.model, self.name, self.model_cfg, self.cfg, self.stats,
                                 self.dataset_info, self.optimizer, self.scheduler, self.ema, state)
            if self.cfg.keep_every and self.step % self.cfg.keep_every == 0:
                ckpt.copy_checkpoint(latest, self.out / f"step_{self.step:08d}")
        if self.world > 1:
            dist.barrier()
        return latest

    def _out_of_time(self, t0: float) -> bool:
        if self.cfg.max_minutes <= 0:
            return False
        flag = torch.tensor([float(time.monotonic() - t0 > 60 * self.cfg.max_minutes)], device=self.device)
        if self.world > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    # ------------------------------------------------------------------ the loop
    def fit(self) -> Path:
        """Train until ``train.steps`` (or the time budget); returns the checkpoint directory."""
        cfg = self.cfg
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
        latest = self.out / "latest"
        if self.step >= cfg.steps:
            return latest
        batches = self._batches()
        bar = tqdm(total=cfg.steps, initial=self.step, disable=self.rank != 0, dynamic_ncols=True,
                   desc=f"train {self.name}", unit="step")
        t0 = time.monotonic()
        win_t, win_n, win_loss, win_metrics = time.monotonic(), 0, 0.0, {}
        saved_at = -1
        try:
            while self.step < cfg.steps:
                batch = to_device(next(batches), self.device)
                self.optimizer.zero_grad(set_to_none=True)
                with self._autocast():
                    loss, metrics = self.loss_module(batch)
                loss_v = float(loss.detach())
                if not math.isfinite(loss_v):
                    raise FloatingPointError(f"loss is {loss_v} at step {self.step + 1}; last checkpoint: {latest}")
                loss.backward()
                if cfg.grad_clip > 0:
                    gn = torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
                    metrics = {**metrics, "grad_norm": gn}
                lr = self.optimizer.param_groups[0]["lr"]
                self.optimizer.step()
                self.scheduler.step()
                if self.ema is not None:
                    self.ema.update(self.model)
                self.step += 1
                bar.update(1)
                win_n += 1
                win_loss += loss_v
                for k, v in metrics.items():
                    if isinstance(v, (int, float, torch.Tensor)):  # models may add non-scalar extras: skip them
                        win_metrics[k] = win_metrics.get(k, 0.0) + float(v)

                final = self.step >= cfg.steps
                stop = not final and self._out_of_time(t0)
                row: dict[str, float | None] = {}
                if self.step % cfg.log_every == 0 or final or stop:
                    mean = torch.tensor([win_loss / win_n], dtype=torch.float64, device=self.device)
                    if self.world > 1:
                        dist.all_reduce(mean)
                        mean /= self.world
                    dt = max(time.monotonic() - win_t, 1e-9)
                    # model metrics first, so a model's own "loss" entry cannot shadow the loop's columns
                    row.update({k: v / win_n for k, v in win_metrics.items()})
                    row.update(loss=float(mean), lr=lr, samples_per_s=win_n * cfg.batch_size * self.world / dt)
                    bar.set_postfix(loss=f"{float(mean):.4g}", lr=f"{lr:.2e}", sps=f"{row['samples_per_s']:.1f}")
                    win_t, win_n, win_loss, win_metrics = time.monotonic(), 0, 0.0, {}
                if self.val_loader is not None and ((cfg.val_every and self.step % cfg.val_every == 0) or final):
                    row["val_loss"] = self.validate()
                    if self.ema is not None:
                        with self.ema.applied(self.model):
                            row["val_loss_ema"] = self.validate()
                # Log before saving: a checkpoint at step k then always has its row (rows after k are
                # dropped on resume), so a resumed metrics.csv has no gaps.
                if row and self.logger is not None:
                    self.logger.log(self.step, row)
                eval_due = cfg.eval_every > 0 and self.step % cfg.eval_every == 0
                keep_due = cfg.keep_every > 0 and self.step % cfg.keep_every == 0
                if self.step % cfg.save_every == 0 or final or stop or eval_due or keep_due:
                    self.save()
                    saved_at = self.step
                if eval_due:
                    if self.rank == 0:
                        res = periodic_eval(latest, cfg, self.step, self.device)
                        if res and self.logger is not None:
                            self.logger.log(self.step, res)  # a second row for this step
                    if self.world > 1:
                        dist.barrier()
                if stop:
                    if self.rank == 0:
                        tqdm.write(f"time budget of {cfg.max_minutes} min reached at step {self.step}; "
                                   f"continue with --resume")
                    break
        finally:
            bar.close()
        if saved_at != self.step:
            self.save()
        return latest

    def close(self) -> None:
        if self.logger is not None:
            self.logger.close()
        if self._owns_group and dist.is_initialized():
            dist.destroy_process_group()


def train(model_name: str, model_cfg: Any, train_cfg: TrainConfig, data_dir: str | Path, out_dir: str | Path,
          resume: bool = False) -> Path:
    """Train ``model_name`` on the demos in ``data_dir`` into run dir ``out_dir``; returns ``out_dir/latest``."""
    trainer = Trainer(model_name, model_cfg, train_cfg, data_dir, out_dir, resume)
    try:
        return trainer.fit()
    finally:
        trainer.close()


@dataclass
class TrainCommand:
    """Train a policy from a recipe (model/train overrides: see ``vlabench train --help``)."""

    recipe: Path
    """Policy recipe, e.g. policies/rt1.toml."""
    data: Path
    """Demo dataset directory (stats.json, manifest.json, shards)."""
    out: Path
    """Run directory: metrics.csv and the checkpoint OUT/latest."""
    resume: bool = False
    """Continue from OUT/latest."""


def run(argv: Sequence[str] | TrainCommand | None = None) -> Path:
    """Entry of ``vlabench train``: argv (with --model.*/--train.* overrides) or a TrainCommand."""
    if isinstance(argv, TrainCommand):
        name, model_cfg, train_cfg = load_recipe(argv.recipe)
        return train(name, model_cfg, train_cfg, argv.data, argv.out, argv.resume)
    recipe, data, out, resume, model_cfg, train_cfg = parse_train_args(argv)
    name = load_recipe(recipe)[0]
    return train(name, model_cfg, train_cfg, data, out, resume)
