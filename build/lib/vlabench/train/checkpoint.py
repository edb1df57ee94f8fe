"""Writing checkpoint directories (reading them is vlabench.models.checkpoint's job), and the RNG and
optimizer state that resuming needs.

Layout of one checkpoint directory (usually ``RUN/latest``; ``RUN/step_XXXXXXXX`` copies are optional)::

    model.safetensors   raw trained weights (model.state_dict(): trainable params + persistent buffers)
    ema.safetensors     EMA of the trainable params + buffers (only when train.ema_decay > 0)
    config.json         {"model": name, "model_config": {...}, "train_config": {...}, "vlabench_version"}
    stats.json          dataset statistics the model normalizes with
    dataset.json        {"manifest_hash", "path", ...}: which data trained it
    optimizer.pt        {"optimizer", "scheduler", "ema"} state dicts; tensors and plain containers only
    trainer_state.json  {"step", "epoch", "rng": [per-rank RNG states], ...}

Atomicity: everything is written into ``DIR.tmp-<pid>`` and fsynced; an existing DIR is renamed to
``DIR.old-<pid>``, the temp dir renamed to DIR, and the old one deleted. A crash leaves either the
old or the new complete checkpoint (if it hits between the two renames, loading falls back to the
complete ``DIR.old-*``). Loading never unpickles arbitrary objects: weights come from safetensors,
configs from JSON, and optimizer.pt goes through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from vlabench.models.checkpoint import (CONFIG_FILE, DATASET_FILE, EMA_FILE, MODEL_FILE, OPTIMIZER_FILE, STATS_FILE,
                                         TRAINER_STATE_FILE)
from vlabench.models.configs import to_jsonable


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
        _write_json(tmp / CONFIG_FILE, {
            "model": model_name, "model_config": model_cfg, "train_config": train_cfg,
            "vlabench_version": vlabench.__version__,
        })
        _write_json(tmp / STATS_FILE, stats)
        _write_json(tmp / DATASET_FILE, dataset_info)
        if optimizer is not None or scheduler is not None or ema is not None:
            torch.save({
                "optimizer": optimizer.state_dict() if optimizer is not None else None,
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "ema": ema.state_dict() if ema is not None else None,
            }, tmp / OPTIMIZER_FILE)
        _write_json(tmp / TRAINER_STATE_FILE, trainer_state or {})
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


def load_training_state(dir: str | Path) -> dict:
    """optimizer.pt as plain data. Refuses (ValueError) any file holding pickled arbitrary objects."""
    path = Path(dir) / OPTIMIZER_FILE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # UnpicklingError and friends: the file asks to build a non-tensor object
        raise ValueError(f"refusing to load {path}: it contains objects other than tensors and plain "
                         f"containers, so it was not written by vlabench ({type(e).__name__}: {e})") from e
