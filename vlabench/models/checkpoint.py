"""The one way to read a checkpoint: find it, recover from a crash mid-swap, load config, stats and
weights (refusing damaged ones), build the model or its policy, and hash it.

Layout of one checkpoint directory (written by ``vlabench.train.checkpoint``; usually ``RUN/latest``)::

    model.safetensors   raw trained weights (model.state_dict(): trainable params + persistent buffers)
    ema.safetensors     EMA of the trainable params + buffers (only when train.ema_decay > 0)
    config.json         {"model": name, "model_config": {...}, "train_config": {...}, "vlabench_version"}
    stats.json          dataset statistics the model normalizes with
    dataset.json        {"manifest_hash", "path", ...}: which data trained it
    optimizer.pt        optimizer/scheduler/EMA state for resuming (read only by the training loop)
    trainer_state.json  {"step", "epoch", "rng", ...}

Inference prefers EMA weights: ``load_policy`` and ``load_model(..., use_ema=True)`` overlay
ema.safetensors on model.safetensors when it exists; ``checkpoint_hash`` covers both files. The
writer swaps a finished directory in with two renames; a crash between them leaves ``DIR.old-<pid>``
complete, and :func:`resolve_checkpoint_dir` falls back to it. Nothing here unpickles anything.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from vlabench.contracts import UserError, coerce_option, parse_options
from vlabench.devices import resolve_device
from vlabench.models import registry
from vlabench.models.configs import config_from_dict

MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
CONFIG_FILE = "config.json"
DATASET_FILE = "dataset.json"
STATS_FILE = "stats.json"
TRAINER_STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"


def _is_complete(d: Path) -> bool:
    return (d / CONFIG_FILE).is_file() and (d / MODEL_FILE).is_file()


def resolve_checkpoint_dir(path: str | Path) -> Path:
    """Accept a checkpoint dir or a run dir (-> RUN/latest); recover from a swap interrupted mid-way."""
    path = Path(path)
    for cand in (path, path / "latest"):
        if _is_complete(cand):
            return cand
        olds = sorted(cand.parent.glob(cand.name + ".old-*")) if not cand.exists() else []
        for old in olds:  # crash between the two renames of the writer's swap: the old copy is complete
            if _is_complete(old):
                return old
    raise FileNotFoundError(f"no checkpoint at {path}: expected {MODEL_FILE} and {CONFIG_FILE} in it or in "
                            f"{path / 'latest'}")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint file {path} is missing") from None
    except ValueError as e:
        raise ValueError(f"checkpoint file {path} is not valid JSON ({e})") from None


def read_config(path: str | Path) -> dict:
    """config.json of a checkpoint (or run) directory."""
    return read_json(resolve_checkpoint_dir(path) / CONFIG_FILE)


def read_trainer_state(path: str | Path) -> dict:
    """trainer_state.json of a checkpoint (or run) directory: step, epoch, RNG states ({} when absent)."""
    f = resolve_checkpoint_dir(path) / TRAINER_STATE_FILE
    return read_json(f) if f.is_file() else {}


def read_dataset_info(path: str | Path) -> dict:
    """dataset.json of a checkpoint (or run) directory: which demos trained it ({} when it has none)."""
    f = resolve_checkpoint_dir(path) / DATASET_FILE
    return read_json(f) if f.is_file() else {}


def load_tensors(file: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file on CPU; ValueError naming the file when it is damaged
    (truncated, empty, not safetensors) or holds a non-finite value (naming the tensor)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(file), device="cpu")
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint file {file} is missing") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"checkpoint file {file} is damaged and cannot be read ({e}); retrain or restore it") from None
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"checkpoint file {file} holds non-finite values (NaN or inf) in tensor {name!r}; "
                             "the file is damaged or training diverged")
    return tensors


def check_state_dict_keys(where: Path, model: nn.Module, tensors: dict[str, torch.Tensor], subset: bool = False) -> None:
    expected = model.state_dict()
    missing = [] if subset else sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    shapes = [f"{k}: file {tuple(t.shape)} vs model {tuple(expected[k].shape)}"
              for k, t in tensors.items() if k in expected and t.shape != expected[k].shape]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
            if items:
                more = f" ... (+{len(items) - 20} more)" if len(items) > 20 else ""
                parts.append(f"{label} ({len(items)}): {', '.join(items[:20])}{more}")
        raise ValueError(f"weights in {where} do not match the model: " + "; ".join(parts))


def load_model_weights(model: nn.Module, dir: str | Path) -> None:
    """Load DIR/model.safetensors into ``model`` strictly; ValueError lists missing/unexpected/misshapen keys."""
    f = Path(dir) / MODEL_FILE
    tensors = load_tensors(f)
    check_state_dict_keys(f, model, tensors)
    model.load_state_dict(tensors, strict=True)


def load_ema_tensors(dir: str | Path) -> dict[str, torch.Tensor] | None:
    """The EMA shadow tensors of a checkpoint, or None when it has none."""
    p = Path(dir) / EMA_FILE
    return load_tensors(p) if p.is_file() else None


@dataclass
class CheckpointInfo:
    """What a checkpoint says about itself (besides the weights)."""

    path: Path
    model_name: str
    model_config: Any
    train_config: dict
    stats: dict
    dataset: dict
    trainer_state: dict
    used_ema: bool
    vlabench_version: str | None


def load_model(dir: str | Path, device: str | torch.device = "cpu", *, use_ema: bool = False,
               expect: str | None = None) -> tuple[nn.Module, CheckpointInfo]:
    """Rebuild the model from config.json + stats.json and load its weights (strict).

    Args:
        dir: checkpoint directory, or a run directory whose ``latest`` is used.
        device: 'cpu', 'cuda', 'cuda:N' or 'auto'.
        use_ema: overlay ema.safetensors when present (inference); raw weights otherwise (resuming).
        expect: the model family the caller needs (ValueError naming the one found otherwise).
    Returns:
        (model in eval mode on ``device``, CheckpointInfo).
    """
    path = resolve_checkpoint_dir(dir)
    config = read_json(path / CONFIG_FILE)
    name = config.get("model")
    if expect is not None and name != expect:
        raise ValueError(f"checkpoint {path} holds model {name!r}, expected {expect!r}")
    spec = registry.get_spec(name)
    model_cfg = config_from_dict(spec.config_cls, config.get("model_config", {}), f"{path / CONFIG_FILE} model_config")
    stats = read_json(path / STATS_FILE)
    # Families turn off pretrained initializations the checkpoint's weights replace (configs.PresetConfig).
    model = spec.model_cls(model_cfg.for_loading() if hasattr(model_cfg, "for_loading") else model_cfg, stats)
    load_model_weights(model, path)
    ema = load_ema_tensors(path) if use_ema else None
    if ema is not None:
        check_state_dict_keys(path / EMA_FILE, model, ema, subset=True)
        model.load_state_dict(ema, strict=False)
    model.to(torch.device(resolve_device(str(device)))).eval()
    optional = {n: read_json(path / n) if (path / n).is_file() else {} for n in (TRAINER_STATE_FILE, DATASET_FILE)}
    info = CheckpointInfo(path=path, model_name=name, model_config=model_cfg,
                          train_config=config.get("train_config", {}), stats=stats,
                          dataset=optional[DATASET_FILE], trainer_state=optional[TRAINER_STATE_FILE],
                          used_ema=ema is not None, vlabench_version=config.get("vlabench_version"))
    return model, info


def policy_option_names(policy_cls: type) -> list[str]:
    """Inference options a policy class accepts (its constructor's arguments besides model and device)."""
    return [n for n in inspect.signature(policy_cls.__init__).parameters if n not in ("self", "model", "device")]


def check_policy_options(policy_cls: type, options: Mapping[str, Any] | Sequence[str]) -> dict[str, Any]:
    """``options`` (a mapping, or ``K=V`` strings) converted to the types of the policy class's constructor
    defaults (its typed inference config); UserError naming the unknown ones or a value that does not convert."""
    options = parse_options(options)
    valid = policy_option_names(policy_cls)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise UserError(f"policy options {unknown} are not options of {policy_cls.__name__}; valid: "
                        f"{', '.join(valid) or 'none'}")
    params = inspect.signature(policy_cls.__init__).parameters
    return {k: coerce_option(params[k].default, v, k) for k, v in options.items()}


def inference_defaults(path: str | Path) -> dict[str, Any]:
    """The inference settings a checkpoint was trained to be run with (``train_config.inference`` of its
    config.json: the recipe's ``[train] inference = ["decode=mean", ...]``), as {name: value string}."""
    return parse_options(read_config(path).get("train_config", {}).get("inference") or [])


def load_policy(path: str | Path, device: str | torch.device = "auto", **options: Any) -> Any:
    """A ready-to-act Policy: ``spec.policy_cls(model, device, **settings)`` with EMA weights when the
    checkpoint has them. ``settings`` are the checkpoint's inference defaults (``inference_defaults``)
    updated by ``options`` (e.g. RT-1's ``decode``); they never change the weights. String values (from
    ``--policy-option KEY=VALUE``) are converted to the type of the option's default."""
    dev = resolve_device(str(device))
    model, info = load_model(path, dev, use_ema=True)
    cls = registry.get_spec(info.model_name).policy_cls
    settings = check_policy_options(cls, {**inference_defaults(path), **options})
    return cls(model, dev, **settings)


class CheckpointPolicy:
    """Base of the learned policies: ``Cls.from_checkpoint(path, device, **options)``."""

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu", **options: Any):
        """Policy from a checkpoint (or run) directory, with its EMA weights when it has them."""
        policy = load_policy(path, device, **options)
        if not isinstance(policy, cls):
            raise ValueError(f"checkpoint {path} holds a {type(policy).__name__}, not a {cls.__name__}")
        return policy


def checkpoint_hash(dir: str | Path) -> str:
    """sha256 (hex) over config.json, model.safetensors and ema.safetensors (if present), in that order.

    Identifies exactly what a results file was produced with; the EMA file is included because
    ``load_policy`` acts with those weights when present.
    """
    path = resolve_checkpoint_dir(dir)
    h = hashlib.sha256()
    for name in (CONFIG_FILE, MODEL_FILE, EMA_FILE):
        f = path / name
        if not f.is_file():
            continue
        h.update(f"{name}\0{f.stat().st_size}\0".encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()
