"""Checkpoint directories: atomic writing, safe loading, policy construction and provenance hashes.

Layout of one checkpoint directory (usually ``RUN/latest``; ``RUN/step_XXXXXXXX`` copies are optional)::

    model.safetensors   raw trained weights (model.state_dict(): trainable params + persistent buffers)
    ema.safetensors     EMA of the trainable params + buffers (only when train.ema_decay > 0)
    config.json         {"model": name, "model_config": {...}, "train_config": {...}, "vlabench_version"}
    stats.json          dataset statistics the model normalizes with
    dataset.json        {"manifest_hash", "path", ...}: which data trained it
    optimizer.pt        {"optimizer", "scheduler", "ema"} state dicts; tensors and plain containers only
    trainer_state.json  {"step", "epoch", "rng": [per-rank RNG states], ...}

Inference prefers EMA weights: ``load_policy`` and ``load_checkpoint(..., use_ema=True)`` overlay
ema.safetensors on model.safetensors when it exists; ``checkpoint_hash`` covers both files.

Atomicity: everything is written into ``DIR.tmp-<pid>`` and fsynced; an existing DIR is renamed to
``DIR.old-<pid>``, the temp dir renamed to DIR, and the old one deleted. A crash leaves either the
old or the new complete checkpoint (if it hits between the two renames, loading falls back to the
complete ``DIR.old-*``). Loading never unpickles arbitrary objects: weights come from safetensors,
configs from JSON, and optimizer.pt goes through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"


def to_jsonable(obj: Any) -> Any:
    """Dataclasses/Paths/tuples/numpy scalars -> JSON-compatible values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


# ---------------------------------------------------------------- RNG state (JSON, no pickles)

def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode("ascii")


def _unb64(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8).clone()


def capture_rng_state() -> dict:
    """torch (CPU + every CUDA device), numpy and python RNG states as JSON-serializable data."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": _b64(torch.get_rng_state()),
        "cuda": [_b64(s) for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def restore_rng_state(state: dict) -> None:
    """Inverse of ``capture_rng_state``; CUDA states are restored only when the device count matches."""
    torch.set_rng_state(_unb64(state["torch"]))
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([_unb64(s) for s in cuda])
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


# ---------------------------------------------------------------- writing

def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(to_jsonable(obj), indent=2, sort_keys=True) + "\n")


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    # Clones break storage sharing (tied weights), which safetensors refuses to serialize.
    flat = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
    save_file(flat, str(path), metadata={"format": "pt"})
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)  # safetensors creates 0600 files; match the other checkpoint files


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_stale(final: Path) -> None:
    """Remove ``final.tmp-<pid>`` leftovers of dead writers."""
    for p in final.parent.glob(final.name + ".tmp-*"):
        suffix = p.name.rsplit("-", 1)[-1]
        if not suffix.isdigit() or int(suffix) == os.getpid() or not _pid_alive(int(suffix)):
            shutil.rmtree(p, ignore_errors=True)


def _commit(tmp: Path, final: Path) -> None:
    """Fsync ``tmp`` and swap it in as ``final`` (see the module docstring for crash behaviour)."""
    for f in tmp.iterdir():
        _fsync_file(f)
    _fsync_dir(tmp)
    old = final.parent / f"{final.name}.old-{os.getpid()}"
    if final.exists():
        os.rename(final, old)
    os.rename(tmp, final)
    _fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)
    for p in final.parent.glob(final.name + ".old-*"):  # from earlier crashed swaps
        shutil.rmtree(p, ignore_errors=True)


def save_checkpoint(
    dir: str | Path,
    model: nn.Module,
    model_name: str,
    model_cfg: Any,
    train_cfg: Any,
    stats: dict,
    dataset_info: dict,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    ema: Any = None,
    trainer_state: dict | None = None,
) -> Path:
    """Atomically write a checkpoint directory ``dir`` (layout in the module docstring). Returns ``dir``."""
    import vlabench

    final = Path(dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(final)
    tmp = final.parent / f"{final.name}.tmp-{os.getpid()}"
    tmp.mkdir()
    try:
        _save_tensors(model.state_dict(), tmp / MODEL_FILE)
        if ema is not None:
            _save_tensors(ema.shadow, tmp / EMA_FILE)
        _write_json(tmp / "config.json", {
            "model": model_name, "model_config": model_cfg, "train_config": train_cfg,
            "vlabench_version": vlabench.__version__,
        })
        _write_json(tmp / "stats.json", stats)
        _write_json(tmp / "dataset.json", dataset_info)
        if optimizer is not None or scheduler is not None or ema is not None:
            torch.save({
                "optimizer": optimizer.state_dict() if optimizer is not None else None,
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "ema": ema.state_dict() if ema is not None else None,
            }, tmp / "optimizer.pt")
        _write_json(tmp / "trainer_state.json", trainer_state or {})
        _commit(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def copy_checkpoint(src: str | Path, dst: str | Path) -> Path:
    """Atomically copy checkpoint directory ``src`` to ``dst`` (for permanent step_XXXXXXXX copies)."""
    src, dst = Path(src), Path(dst)
    _clean_stale(dst)
    tmp = dst.parent / f"{dst.name}.tmp-{os.getpid()}"
    shutil.copytree(src, tmp)
    _commit(tmp, dst)
    return dst


# ---------------------------------------------------------------- reading

def resolve_checkpoint_dir(path: str | Path) -> Path:
    """Accept a checkpoint dir or a run dir (-> RUN/latest); recover from a swap interrupted mid-way."""
    path = Path(path)
    for cand in (path, path / "latest"):
        if (cand / "config.json").is_file() and (cand / MODEL_FILE).is_file():
            return cand
        olds = sorted(cand.parent.glob(cand.name + ".old-*")) if not cand.exists() else []
        for old in olds:  # crash between the two renames of _commit: the old copy is complete
            if (old / "config.json").is_file() and (old / MODEL_FILE).is_file():
                return old
    raise FileNotFoundError(
        f"no checkpoint at {path}: expected {MODEL_FILE} and config.json in it or in {path / 'latest'}"
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint file {path} is missing") from None


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
    tensors = load_file(str(f), device="cpu")
    check_state_dict_keys(f, model, tensors)
    model.load_state_dict(tensors, strict=True)


def load_training_state(dir: str | Path) -> dict:
    """optimizer.pt as plain data. Refuses (ValueError) any file holding pickled arbitrary objects."""
    path = Path(dir) / "optimizer.pt"
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # UnpicklingError and friends: the file asks to build a non-tensor object
        raise ValueError(f"refusing to load {path}: it contains objects other than tensors and plain "
                         f"containers, so it was not written by vlabench ({type(e).__name__}: {e})") from e


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


def _pick_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_checkpoint(dir: str | Path, device: str | torch.device = "cpu", *,
                    use_ema: bool = False) -> tuple[nn.Module, CheckpointInfo]:
    """Rebuild the model from config.json + stats.json and load its weights (strict).

    Args:
        dir: checkpoint directory, or a run directory whose ``latest`` is used.
        device: 'cpu', 'cuda', 'cuda:N' or 'auto'.
        use_ema: overlay ema.safetensors when present (inference); raw weights otherwise (resuming).
    Returns:
        (model in eval mode on ``device``, CheckpointInfo).
    """
    from vlabench.models import registry
    from vlabench.train.config import config_from_dict

    path = resolve_checkpoint_dir(dir)
    config = _read_json(path / "config.json")
    name = config.get("model")
    spec = registry.get_spec(name)
    model_cfg = config_from_dict(spec.config_cls, config.get("model_config", {}), f"{path / 'config.json'} model_config")
    stats = _read_json(path / "stats.json")
    model = spec.model_cls(model_cfg, stats)
    load_model_weights(model, path)
    ema_path = path / EMA_FILE
    used_ema = use_ema and ema_path.is_file()
    if used_ema:
        ema = load_file(str(ema_path), device="cpu")
        check_state_dict_keys(ema_path, model, ema, subset=True)
        model.load_state_dict(ema, strict=False)
    model.to(_pick_device(device)).eval()
    trainer_state = _read_json(path / "trainer_state.json") if (path / "trainer_state.json").is_file() else {}
    dataset = _read_json(path / "dataset.json") if (path / "dataset.json").is_file() else {}
    info = CheckpointInfo(path=path, model_name=name, model_config=model_cfg,
                          train_config=config.get("train_config", {}), stats=stats, dataset=dataset,
                          trainer_state=trainer_state, used_ema=used_ema,
                          vlabench_version=config.get("vlabench_version"))
    return model, info


def load_ema_tensors(dir: str | Path) -> dict[str, torch.Tensor] | None:
    """The EMA shadow tensors of a checkpoint, or None when it has none."""
    p = Path(dir) / EMA_FILE
    return load_file(str(p), device="cpu") if p.is_file() else None


def load_policy(path: str | Path, device: str | torch.device = "auto", **options: Any) -> Any:
    """A ready-to-act Policy: ``spec.policy_cls(model, device, **options)`` with EMA weights when the
    checkpoint has them. ``options`` are inference-time settings of the policy class (e.g. RT-1's
    ``decode``); they never change the weights."""
    import inspect

    from vlabench.models import registry

    dev = _pick_device(device)
    model, info = load_checkpoint(path, dev, use_ema=True)
    cls = registry.get_spec(info.model_name).policy_cls
    valid = [n for n in inspect.signature(cls.__init__).parameters if n not in ("self", "model", "device")]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"policy options {unknown} are not options of {cls.__name__}; valid: {', '.join(valid) or 'none'}")
    return cls(model, dev, **options)


def checkpoint_hash(dir: str | Path) -> str:
    """sha256 (hex) over config.json, model.safetensors and ema.safetensors (if present), in that order.

    Identifies exactly what a results file was produced with; the EMA file is included because
    ``load_policy`` acts with those weights when present.
    """
    path = resolve_checkpoint_dir(dir)
    h = hashlib.sha256()
    for name in ("config.json", MODEL_FILE, EMA_FILE):
        f = path / name
        if not f.is_file():
            continue
        h.update(f"{name}\0{f.stat().st_size}\0".encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()
