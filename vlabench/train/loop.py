"""The one training loop every model family uses (``vlabench train``: vlabench.train.command).

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
import math
import os
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from vlabench.devices import resolve_device
from vlabench.models import registry
from vlabench.models.checkpoint import (check_policy_options, load_ema_tensors, load_model_weights, read_config,
                                         read_trainer_state, resolve_checkpoint_dir)
from vlabench.models.configs import to_jsonable
from vlabench.train import checkpoint as ckpt
from vlabench.train.config import TrainConfig
from vlabench.train.data import (EpochBatchSampler, FixedBatchSampler, SeededDataset, episode_ids, make_dataset,
                                 read_dataset_meta, sample_seeds, seed_all, split_by_episode, to_device)
from vlabench.train.ema import EMA
from vlabench.train.errors import DivergedError, RunExistsError
from vlabench.train.hooks import BEST_DIR, keep_best, periodic_eval
from vlabench.train.logger import MetricsLogger, MetricsWindow
from vlabench.train.optim import build_optimizer


class _LossModule(nn.Module):
    """DDP only synchronizes gradients of work done inside forward(), so forward *is* compute_loss."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        return self.model.compute_loss(batch)


def _batch_size(batch: dict) -> int:
    t = batch.get("action")
    return int((t if isinstance(t, torch.Tensor) else next(v for v in batch.values() if isinstance(v, torch.Tensor))).shape[0])


def _pick_device(cfg: TrainConfig, local_rank: int | None) -> torch.device:
    device = resolve_device(cfg.device)
    if device.startswith("cuda") and local_rank is not None:
        return torch.device("cuda", local_rank)
    return torch.device(device)


class Trainer:
    """One training run. ``Trainer(...).fit()`` returns the final checkpoint dir; ``train()`` wraps it."""

    def __init__(self, model_name: str, model_cfg: Any, train_cfg: TrainConfig, data_dir: str | Path,
                 out_dir: str | Path, resume: bool = False, skip_bad: bool = False) -> None:
        self.name, self.model_cfg, self.cfg = model_name, model_cfg, train_cfg
        self.data_dir, self.out = Path(data_dir), Path(out_dir)
        cfg = train_cfg
        if cfg.inference:  # a misspelt inference setting fails now, not at the first load
            check_policy_options(registry.get_spec(model_name).policy_cls, cfg.inference)
        self._setup_processes()
        seed_all(cfg.seed)  # identical init on every rank (DDP also broadcasts rank 0's weights)
        self.stats, manifest_hash = read_dataset_meta(self.data_dir, skip_bad)
        spec = registry.get_spec(model_name)
        self.model = spec.model_cls(model_cfg, self.stats)
        self.dataset = make_dataset(self.data_dir, dict(self.model.data_spec()), skip_bad, cfg.data_cache)
        train_idx, val_idx, val_eps = split_by_episode(episode_ids(self.dataset), cfg.val_fraction, cfg.seed)
        keys = self.dataset.episode_keys() if hasattr(self.dataset, "episode_keys") else None
        env_kwargs = self.dataset.env_kwargs() if hasattr(self.dataset, "env_kwargs") else None
        self.dataset_info = {"manifest_hash": manifest_hash, "path": str(self.data_dir.resolve()),
                             "n_samples": len(self.dataset), "n_train_samples": len(train_idx),
                             "n_val_samples": len(val_idx), "val_episodes": val_eps,
                             "val_episode_keys": [list(keys[int(e)]) for e in val_eps] if keys else None,
                             "env_kwargs": env_kwargs}

        resume_dir = self._find_resume_dir(resume)
        if resume_dir is not None:
            self._check_resume_config(resume_dir)
            load_model_weights(self.model, resume_dir)
        self.model.to(self.device).train()

        self.params, self.optimizer, self.scheduler = build_optimizer(self.model, cfg, self.device.type == "cuda")
        self.ema = EMA(self.model, cfg.ema_decay, cfg.ema_power) if cfg.ema_decay > 0 else None

        self.step = 0
        rng_states = self._restore(resume_dir) if resume_dir is not None else None
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
        workers = cfg.loader_workers()
        self.loader = DataLoader(seeded, batch_sampler=self.sampler, num_workers=workers, pin_memory=pin,
                                 persistent_workers=workers > 0,
                                 generator=torch.Generator().manual_seed(cfg.seed))  # keeps global RNG untouched
        self.val_loader = None
        if len(val_idx):
            self.val_loader = DataLoader(
                seeded, batch_sampler=FixedBatchSampler(val_idx, cfg.batch_size, cfg.seed, cfg.val_batches,
                                                        self.rank, self.world),
                num_workers=workers, pin_memory=pin, generator=torch.Generator().manual_seed(cfg.seed))

        if rng_states is not None:
            ckpt.restore_rng_state(rng_states)
        else:  # per-rank streams, so ranks draw different noise/dropout for their different samples
            seed_all(sample_seeds(cfg.seed, 2, self.step, [self.rank])[0])
        self.logger = MetricsLogger(self.out, self.step if resume_dir is not None else None) if self.rank == 0 else None

    def _saved_model_cfg(self) -> Any:
        """The model's config with its preset resolved (what config.json records), else as given."""
        return getattr(self.model, "cfg", self.model_cfg)

    def _setup_processes(self) -> None:
        """Rank, world size and device; joins (or starts) the process group under torchrun."""
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self._owns_group = False
        if self.world > 1:
            self.device = _pick_device(self.cfg, int(os.environ.get("LOCAL_RANK", "0")))
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            self._owns_group = not dist.is_initialized()
            if self._owns_group:
                dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
            self.rank = dist.get_rank()
        else:
            self.rank, self.device = 0, _pick_device(self.cfg, None)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

    def _restore(self, resume_dir: Path) -> dict | None:
        """Optimizer, scheduler, EMA and step from ``resume_dir``; returns this rank's RNG states (None when
        the world size changed)."""
        try:
            state = ckpt.load_training_state(resume_dir)
        except FileNotFoundError:  # a checkpoint packed without it (vlabench.pipeline.pack): weights only
            warnings.warn(f"{resume_dir} has no optimizer.pt; the optimizer's moments restart")
            state = {"ema": None}
        else:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            shadow = load_ema_tensors(resume_dir)
            if shadow is not None and state.get("ema"):
                self.ema.load_state_dict(state["ema"], shadow)
            else:
                warnings.warn(f"{resume_dir} has no EMA state; the EMA restarts from the current weights")
        ts = read_trainer_state(resume_dir)
        self.step = int(ts["step"])
        if "optimizer" not in state:  # put the lr schedule where it was
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()"
                for _ in range(self.step):
                    self.scheduler.step()
        if ts.get("world_size", 1) == self.world and len(ts.get("rng", [])) == self.world:
            return ts["rng"][self.rank]
        warnings.warn(f"resuming with world size {self.world} (checkpoint: {ts.get('world_size')}); "
                      f"random streams and data order will differ from an uninterrupted run")
        return None

    # ------------------------------------------------------------------ resume helpers
    def _find_resume_dir(self, resume: bool) -> Path | None:
        latest = self.out / "latest"
        try:
            found = resolve_checkpoint_dir(latest)
        except FileNotFoundError:
            found = None
        if not resume:
            if found is not None:
                raise RunExistsError(f"{self.out} already holds a checkpoint ({found}); pass --resume to "
                                      f"continue it or choose another --out")
            return None
        if found is None:
            warnings.warn(f"--resume: no checkpoint in {self.out}; starting from scratch", stacklevel=3)
        return found

    def _check_resume_config(self, d: Path) -> None:
        conf = read_config(d)
        if conf.get("model") != self.name:
            raise ValueError(f"cannot resume {d}: it trains model {conf.get('model')!r}, the recipe says {self.name!r}")
        old, new = conf.get("model_config", {}), to_jsonable(self._saved_model_cfg())
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if diff:
            warnings.warn(f"resuming {d} with a changed model config ({', '.join(diff)}); using the new values")
        old_t, new_t = conf.get("train_config", {}), to_jsonable(self.cfg)
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
            ckpt.save_checkpoint(latest, self.model, self.name, self._saved_model_cfg(), self.cfg, self.stats,
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

    def _optimizer_step(self, batch: dict, latest: Path) -> tuple[float, dict, float]:
        """One update on ``batch``: (loss, model metrics + grad_norm, lr used)."""
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            loss, metrics = self.loss_module(batch)
        loss_v = float(loss.detach())
        if not math.isfinite(loss_v):
            raise DivergedError(f"loss is {loss_v} at step {self.step + 1}; last checkpoint: {latest} (lower the "
                                "learning rate, or turn bf16 off)")
        loss.backward()
        if self.cfg.grad_clip > 0:
            metrics = {**metrics, "grad_norm": torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)}
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        return loss_v, metrics, lr

    def _log_row(self, window: "MetricsWindow", lr: float, final: bool, stop: bool) -> dict[str, float | None]:
        """The metrics.csv row of this step (empty when nothing is due)."""
        cfg, row = self.cfg, {}
        if self.step % cfg.log_every == 0 or final or stop:
            mean = torch.tensor([window.loss / window.n], dtype=torch.float64, device=self.device)
            if self.world > 1:
                dist.all_reduce(mean)
                mean /= self.world
            # model metrics first, so a model's own "loss" entry cannot shadow the loop's columns
            row.update(window.means())
            row.update(loss=float(mean), lr=lr, samples_per_s=window.n * cfg.batch_size * self.world / window.seconds())
            window.clear()
        if self.val_loader is not None and ((cfg.val_every and self.step % cfg.val_every == 0) or final):
            row["val_loss"] = self.validate()
            if self.ema is not None:
                with self.ema.applied(self.model):
                    row["val_loss_ema"] = self.validate()
        return row

    def _evaluate(self, latest: Path) -> None:
        if self.rank == 0:
            res = periodic_eval(latest, self.cfg, self.step, self.device)
            if res and self.logger is not None:
                self.logger.log(self.step, res)  # a second row for this step
            if res and keep_best(self.out, latest, res, self.cfg, self.step):
                tqdm.write(f"step {self.step}: rollout success {res['eval_success_rate']:.0%} is the best so far; "
                           f"kept as {self.out / BEST_DIR}")
        if self.world > 1:
            dist.barrier()

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
        t0, window, saved_at = time.monotonic(), MetricsWindow(), -1
        try:
            while self.step < cfg.steps:
                loss_v, metrics, lr = self._optimizer_step(to_device(next(batches), self.device), latest)
                bar.update(1)
                window.add(loss_v, metrics)
                final = self.step >= cfg.steps
                stop = not final and self._out_of_time(t0)
                row = self._log_row(window, lr, final, stop)
                if "loss" in row:
                    bar.set_postfix(loss=f"{row['loss']:.4g}", lr=f"{lr:.2e}", sps=f"{row['samples_per_s']:.1f}")
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
                    self._evaluate(latest)
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
          resume: bool = False, skip_bad: bool = False) -> Path:
    """Train ``model_name`` on the demos in ``data_dir`` into run dir ``out_dir``; returns ``out_dir/latest``.

    Ctrl-C saves a checkpoint at the current step and raises KeyboardInterrupt saying how to resume.
    """
    trainer = Trainer(model_name, model_cfg, train_cfg, data_dir, out_dir, resume, skip_bad)
    try:
        return trainer.fit()
    except KeyboardInterrupt:
        if trainer.rank == 0 and trainer.step > 0:
            trainer.save()
            raise KeyboardInterrupt(f"checkpoint at step {trainer.step}/{train_cfg.steps} saved in "
                                    f"{Path(out_dir) / 'latest'}; rerun with --resume to continue") from None
        raise KeyboardInterrupt(f"nothing saved yet in {out_dir}") from None
    finally:
        trainer.close()
