"""Where a result came from: the code (git sha), the packages, the device, and the policy (a built-in
name, or a checkpoint with its hash)."""

from __future__ import annotations

import json
import subprocess
from importlib import metadata
from pathlib import Path

from vlabench.devices import device_name

__all__ = ["describe_policy", "device_name", "git_sha", "package_version", "portable_path"]


def git_sha() -> str:
    """HEAD of the repository vlabench is imported from, with "-dirty" when tracked files differ from
    it (the results then come from uncommitted code), or "unknown"."""
    here = Path(__file__).resolve().parent
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        sha = r.stdout.strip()
        if r.returncode != 0 or not sha:
            return "unknown"
        st = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                            capture_output=True, text=True, timeout=10)
        return sha + "-dirty" if st.returncode == 0 and st.stdout.strip() else sha
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def portable_path(path: str | Path) -> str:
    """``path`` relative to the working directory when it lies inside it (results then read the same
    on every machine that runs from a checkout), else absolute."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def describe_policy(spec: str, options: dict | None = None) -> dict:
    """{"name", "checkpoint", "checkpoint_hash", "options"} of a policy spec (hashing a checkpoint, not loading it)."""
    from vlabench.policy import BUILTIN_POLICIES, is_builtin

    if is_builtin(spec):
        if options:
            raise ValueError(f"policy options {sorted(options)} apply to checkpoints, not to the built-in {spec!r}")
        return {"name": spec, "checkpoint": None, "checkpoint_hash": None, "options": {}}
    if not Path(spec).exists():
        raise ValueError(f"unknown policy {spec!r}; valid: {', '.join(BUILTIN_POLICIES)} "
                         "(replay as 'replay:DATASET_DIR'), or an existing checkpoint directory")
    from vlabench.models.checkpoint import CONFIG_FILE, checkpoint_hash, resolve_checkpoint_dir

    path = resolve_checkpoint_dir(spec)
    try:
        name = json.loads((path / CONFIG_FILE).read_text()).get("model") or path.name
    except (OSError, ValueError):
        name = path.name
    return {"name": str(name), "checkpoint": portable_path(path), "checkpoint_hash": checkpoint_hash(path),
            "options": dict(options or {})}
