"""Training configuration and recipe files (``policies/*.toml``).

A recipe (``policies/*.toml``) names a model family and fills two dataclasses::

    [model]
    name = "rt1"          # registry name (vlabench.models.registry.MODULES)
    preset = "small"      # any field of that model's config dataclass

    [train]               # any field of TrainConfig
    steps = 20000
    lr = 3e-4

TOML cannot hold both a top-level ``model = "rt1"`` string and a ``[model]`` table (the key would be
defined twice), so the name lives inside the table. A recipe with only ``model = "rt1"`` (no table)
is also accepted and uses that model's default config.

On the command line (vlabench.train.command) every recipe field can be overridden, with the recipe
supplying the defaults::

    vlabench train --recipe policies/rt1.toml --data demos/pick --out runs/rt1 \\
        --train.steps 100 --model.preset small
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlabench.devices import check_device
from vlabench.models.configs import config_from_dict


@dataclass
class TrainConfig:
    """Optimization, logging and checkpointing settings shared by every model family."""

    steps: int = 20000
    """Total optimizer updates (resuming continues up to this number)."""
    batch_size: int = 64
    """Samples per optimizer step PER PROCESS (the global batch is batch_size x world size)."""
    lr: float = 1e-4
    """Peak learning rate of AdamW, reached after the warmup."""
    weight_decay: float = 1e-6
    """AdamW decoupled weight decay; applied only to parameters with >= 2 dims (not biases or norm gains)."""
    betas: tuple[float, float] = (0.95, 0.999)
    """AdamW (beta1, beta2)."""
    warmup_steps: int = 500
    """Linear learning-rate warmup from lr/warmup_steps to lr; afterwards cosine decay to 0 at `steps`."""
    grad_clip: float = 1.0
    """Clip the global gradient L2 norm to this value (0 = no clipping)."""
    ema_decay: float = 0.0
    """Maximum decay of an exponential moving average of the weights (0 = no EMA). Saved as ema.safetensors."""
    ema_power: float = 0.75
    """EMA warmup as in Diffusion Policy: decay = min(ema_decay, 1 - (1 + step)^-power); 0 = constant decay."""
    seed: int = 0
    """Seeds model init, the train/val split, the data order and every random draw in training."""
    num_workers: int = -1
    """DataLoader worker processes (0 = load in the training process; -1 = one per spare core, at most 4:
    a 2-core machine gets 1)."""
    data_cache: bool = False
    """Decode the demos' images once into uint8 memory maps under DATA/.cache (uncompressed: about
    50 kB per 128 px frame on disk) and train from those: no gzip work per sample after the first pass."""
    val_fraction: float = 0.05
    """Fraction of EPISODES held out for the validation loss (0 = no validation)."""
    val_every: int = 1000
    """Compute the validation loss every this many steps (0 = never; always at the end if val_fraction > 0)."""
    val_batches: int = 20
    """Upper bound on validation batches per evaluation (0 = the whole validation split)."""
    log_every: int = 50
    """Write a metrics.csv row (loss averaged over the steps since the previous row) every this many steps."""
    save_every: int = 1000
    """Write the `latest` checkpoint every this many steps (and always at the end)."""
    keep_every: int = 0
    """Also keep a permanent copy `step_XXXXXXXX` of the checkpoint every this many steps (0 = only `latest`)."""
    device: str = "auto"
    """'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'. Under torchrun each rank uses cuda:LOCAL_RANK."""
    bf16: bool = True
    """Run the forward pass under bfloat16 autocast. Only on CUDA; ignored on CPU."""
    find_unused_parameters: bool = False
    """DDP only: set when some trainable parameters get no gradient in a step (slower)."""
    eval_every: int = 0
    """Every this many steps, evaluate the checkpoint with a short ``vlabench eval`` run in a separate
    process (0 = off); its success rate goes to metrics.csv. A failing rollout only warns."""
    eval_suite: str = ""
    """Suite file for the periodic rollout ('' = envs/smoke.toml)."""
    eval_episodes: int = 10
    """Episodes per periodic rollout. With ``eval_every``, the checkpoint with the highest rollout success so
    far is kept as ``OUT/best`` (ties go to the later step; ``OUT/best.json`` says which step, rate and suite):
    checkpoint selection by rollouts, not by validation loss."""
    inference: list[str] = field(default_factory=list)
    """``K=V`` inference settings of the policy (its constructor's options, typed by their defaults), e.g.
    ``decode=mean``: stored in every checkpoint's config.json and used whenever it is loaded (periodic
    rollouts, ``vlabench eval``, the pipeline); ``--policy-option`` overrides them and results.json records
    the effective ones (``policy.inference``). Checked against the policy class when training starts."""
    max_minutes: float = 0.0
    """Wall-clock budget for this invocation in minutes; on expiry a checkpoint is saved and training stops
    so that --resume continues (0 = no budget)."""

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)  # TOML/JSON give lists
        if len(self.betas) != 2:
            raise ValueError(f"train.betas must have 2 values, got {self.betas}")
        try:
            check_device(self.device)
        except ValueError as e:
            raise ValueError(f"train.{e}") from None
        for name in ("steps", "batch_size", "save_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"train.val_fraction must be in [0, 1), got {self.val_fraction}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"train.ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.num_workers < -1:
            raise ValueError(f"train.num_workers must be >= 0, or -1 for automatic, got {self.num_workers}")

    def loader_workers(self) -> int:
        """DataLoader workers to start (resolves num_workers = -1 from this machine's core count)."""
        if self.num_workers >= 0:
            return self.num_workers
        return max(0, min(4, (os.cpu_count() or 1) - 1))


def load_recipe(path: str | Path, model_overrides: dict | None = None,
                train_overrides: dict | None = None) -> tuple[str, Any, TrainConfig]:
    """Read a policy recipe TOML into ``(model_name, model_cfg, train_cfg)``.

    ``model_cfg`` is an instance of ``registry.get_spec(model_name).config_cls`` (fields the recipe
    leaves out stay unset and take the preset's values when the model is built). The overrides
    replace keys of the recipe's [model] / [train] tables (a pipeline profile's budgets). Unknown
    tables or keys raise ValueError naming the file, the key and the valid keys.
    """
    from vlabench.models import registry

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recipe {path} does not exist (recipes live in policies/*.toml)")
    with open(path, "rb") as f:
        try:
            doc = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"recipe {path} is not valid TOML: {e}") from e
    unknown = [k for k in doc if k not in ("model", "train")]
    if unknown:
        raise ValueError(f"recipe {path}: unknown top-level key(s) {unknown}; valid: 'model' (table with "
                         f"'name' and model-config fields, or a model name string), 'train' (table)")
    model = doc.get("model")
    if isinstance(model, str):
        name, table = model, {}
    elif isinstance(model, dict):
        table = dict(model)
        name = table.pop("name", None)
        if not isinstance(name, str):
            raise ValueError(f"recipe {path}: [model] needs name = \"<model>\"; known: {', '.join(sorted(registry.MODULES))}")
    else:
        raise ValueError(f"recipe {path}: missing [model] table with name = \"<model>\"; "
                         f"known models: {', '.join(sorted(registry.MODULES))}")
    try:
        spec = registry.get_spec(name)
    except ValueError as e:
        raise ValueError(f"recipe {path}: {e}") from e
    table.update(model_overrides or {})
    model_cfg = config_from_dict(spec.config_cls, table, f"recipe {path} [model]")
    train_table = doc.get("train", {})
    if not isinstance(train_table, dict):
        raise ValueError(f"recipe {path}: 'train' must be a table")
    train_cfg = config_from_dict(TrainConfig, {**train_table, **(train_overrides or {})}, f"recipe {path} [train]")
    return name, model_cfg, train_cfg
