"""Training configuration, recipe files and the command-line parser of ``vlabench train``.

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

On the command line every recipe field can be overridden, with the recipe supplying the defaults::

    vlabench train --recipe policies/rt1.toml --data demos/pick --out runs/rt1 \\
        --train.steps 100 --model.preset small
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Sequence


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
    num_workers: int = 4
    """DataLoader worker processes (0 = load in the training process)."""
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
    """Every this many steps, run a short rollout through vlabench.eval.harness.quick_eval if that exists
    (0 = off). Skipped with a warning when the harness is unavailable; see vlabench.train.loop.periodic_eval."""
    eval_suite: str = ""
    """Suite file for the periodic rollout ('' = the harness's default)."""
    eval_episodes: int = 10
    """Episodes per periodic rollout."""
    max_minutes: float = 0.0
    """Wall-clock budget for this invocation in minutes; on expiry a checkpoint is saved and training stops
    so that --resume continues (0 = no budget)."""

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)  # TOML/JSON give lists
        if len(self.betas) != 2:
            raise ValueError(f"train.betas must have 2 values, got {self.betas}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ValueError(f"train.device {self.device!r} is not valid; use 'auto', 'cpu', 'cuda' or 'cuda:N'")
        for name in ("steps", "batch_size", "save_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"train.val_fraction must be in [0, 1), got {self.val_fraction}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"train.ema_decay must be in [0, 1), got {self.ema_decay}")


def _field_types(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # unresolvable annotations: fall back to passing values through unchanged
        return {}


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Turn JSON/TOML values (dicts, lists, str) into what annotation ``tp`` asks for."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _coerce(typing.get_args(tp)[0], value, where)
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return config_from_dict(tp, value, where)
    if (tp is tuple or origin is tuple) and isinstance(value, list):
        return tuple(value)
    if tp is Path and isinstance(value, str):
        return Path(value)
    return value


def config_from_dict(cls: type, data: dict[str, Any], where: str = "config") -> Any:
    """Build dataclass ``cls`` from a plain dict (a TOML table or JSON object), recursively.

    Raises:
        ValueError: naming ``where`` (e.g. the recipe file and table), the unknown key and the valid keys.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    valid = [f.name for f in dataclasses.fields(cls) if f.init]
    derived = {f.name for f in dataclasses.fields(cls) if not f.init}
    data = {k: v for k, v in data.items() if k not in derived}  # init=False fields are recomputed, not read
    unknown = [k for k in data if k not in valid]
    if unknown:
        raise ValueError(
            f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
            f"for {cls.__name__}; valid keys: {', '.join(valid)}"
        )
    types = _field_types(cls)
    kwargs = {k: _coerce(types.get(k), v, f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def load_recipe(path: str | Path, preset: str | None = None) -> tuple[str, Any, TrainConfig]:
    """Read a policy recipe TOML into ``(model_name, model_cfg, train_cfg)``.

    ``model_cfg`` is an instance of ``registry.get_spec(model_name).config_cls``. ``preset`` replaces the
    recipe's ``[model] preset`` before the config is built, so fields the recipe leaves out take the
    new preset's values. Unknown tables or keys raise ValueError naming the file, the key and the valid keys.
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
    if preset is not None:
        table["preset"] = preset
    model_cfg = config_from_dict(spec.config_cls, table, f"recipe {path} [model]")
    train_table = doc.get("train", {})
    if not isinstance(train_table, dict):
        raise ValueError(f"recipe {path}: 'train' must be a table")
    train_cfg = config_from_dict(TrainConfig, train_table, f"recipe {path} [train]")
    return name, model_cfg, train_cfg


def parse_train_args(argv: Sequence[str] | None) -> tuple[Path, Path, Path, bool, Any, TrainConfig]:
    """Parse ``--recipe R --data D --out O [--resume] [--model.X v] [--train.Y v]``.

    The recipe is read first; its values become the defaults of a tyro parser over the recipe's model
    config and TrainConfig, so any field can be overridden. Returns
    ``(recipe, data, out, resume, model_cfg, train_cfg)``.
    """
    import tyro

    argv = list(argv) if argv is not None else []
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--recipe", type=Path)
    pre.add_argument("--model.preset", dest="preset")
    known, _ = pre.parse_known_args(argv)
    if known.recipe is None:
        raise SystemExit("vlabench train: --recipe is required, e.g. --recipe policies/rt1.toml "
                         "(then --data DIR --out DIR and optional --model.* / --train.* overrides)")
    # Build the defaults for the preset asked for: configs that fill preset fields at construction
    # would otherwise keep the recipe's preset values when only --model.preset changes.
    name, model_cfg, train_cfg = load_recipe(known.recipe, preset=known.preset)

    def arg(help_: str) -> Any:
        return tyro.conf.arg(help=help_)

    # Built at runtime because the type of `model` depends on the recipe.
    args_cls = dataclasses.make_dataclass(
        "TrainArgs",
        [
            ("data", Annotated[Path, arg("demo dataset directory (stats.json, manifest.json, shards)")]),
            ("out", Annotated[Path, arg("run directory: metrics.csv and checkpoints (OUT/latest)")]),
            ("recipe", Annotated[Path, arg("policy recipe TOML; its values are the defaults below")],
             field(default=known.recipe)),
            ("resume", Annotated[bool, arg("continue from OUT/latest (model, optimizer, RNG, data order)")],
             field(default=False)),
            ("model", Annotated[type(model_cfg), arg(f"config of model {name!r}")],
             field(default_factory=lambda: model_cfg)),
            ("train", Annotated[TrainConfig, arg("training loop settings")],
             field(default_factory=lambda: train_cfg)),
        ],
    )
    parsed = tyro.cli(args_cls, args=argv, prog="vlabench train",
                      description=f"Train model {name!r} from recipe {known.recipe}.")
    return parsed.recipe, parsed.data, parsed.out, parsed.resume, parsed.model, parsed.train
