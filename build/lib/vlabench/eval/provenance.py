"""Where a result came from: the code (git sha), the packages and the device (the policy describes itself:
``vlabench.agents.spec.PolicySpec.describe``)."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

from vlabench.devices import device_name
from vlabench.fileio import portable_path

__all__ = ["device_name", "git_sha", "package_version", "portable_path"]


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
