"""What every data module shares: names in a dataset directory, format constants, the corrupt-shard
error, file checksums and the low-dimensional reader.

This module sits at the bottom of ``vlabench.data``: manifest, stats, shards, dataset and the
exporters import it, and it imports none of them, so imports flow one way
(layout <- manifest <- stats <- shards <- dataset / exporters / collect).
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from vlabench.contracts import ACTION_DIM, STATE_DIM

MANIFEST_NAME = "manifest.json"
PENDING_DIR = "pending"
SHARD_GLOB = "shard_*.h5"
FORMAT = "vlabench-demos"
FORMAT_VERSION = 1
"""Version of manifest.json's layout."""
SHARD_FORMAT_VERSION = 2
"""Version of a shard file's layout (root attr ``format_version``). 2 added the robomimic
attributes (``data`` attr ``env_args``, demo attr ``num_samples``, ``mask/train``); readers accept 1 and 2."""
EpisodeKey = tuple[str, str, int, int]

__all__ = [
    "ACTION_DIM",
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "PENDING_DIR",
    "SHARD_FORMAT_VERSION",
    "SHARD_GLOB",
    "STATE_DIM",
    "CorruptShardError",
    "EpisodeKey",
    "file_sha256",
    "read_lowdim",
    "read_obs_arrays",
    "read_lowdim_by_shard",
]


class CorruptShardError(RuntimeError):
    """A shard file that cannot be read, or whose bytes changed after it was written; `path` names it."""

    def __init__(self, path: Path | str, reason: str):
        self.path = Path(path)
        super().__init__(f"corrupt or truncated demo shard {self.path}: {reason} "
                         "(delete it and re-collect, or pass skip_bad=True / --skip-bad to ignore it)")


def file_sha256(path: Path | str) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def read_lowdim(path: Path | str, demos: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(state (T,8), actions (T,7)) float32 for each demo of one shard, without touching images."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            return [(f["data"][d]["obs/state"][()], f["data"][d]["actions"][()]) for d in demos]
    except (OSError, KeyError, ValueError) as e:
        raise CorruptShardError(path, f"{type(e).__name__}: {e}") from e


def read_obs_arrays(path: Path | str, demos: list[str], key: str) -> list[np.ndarray]:
    """``obs/<key>`` of each demo of one shard (a low-dim stream such as ``privileged``). A demo without
    the stream raises KeyError naming it (demos collected before the stream existed)."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            missing = [d for d in demos if key not in f["data"][d]["obs"]]
            if missing:
                raise KeyError(f"{path} {missing[0]} has no obs/{key} (collected before vlabench recorded it; "
                               "collect the demos again)")
            return [f["data"][d]["obs"][key][()] for d in demos]
    except (OSError, ValueError) as e:
        raise CorruptShardError(path, f"{type(e).__name__}: {e}") from e


def read_lowdim_by_shard(root: Path, episodes: list[dict], skip_bad: bool,
                         skipped: list[str]) -> Iterator[tuple[dict, np.ndarray, np.ndarray]]:
    """(episode, state, actions) for manifest ``episodes`` (each with ``file`` and ``demo``), one shard
    open at a time. A corrupt shard raises CorruptShardError, or with ``skip_bad`` is warned about, its
    file appended to ``skipped``, and its episodes left out."""
    by_file: dict[str, list[dict]] = {}
    for ep in episodes:
        by_file.setdefault(ep["file"], []).append(ep)
    for file, eps in by_file.items():
        try:
            arrays = read_lowdim(Path(root) / file, [ep["demo"] for ep in eps])
        except CorruptShardError as e:
            if not skip_bad:
                raise
            warnings.warn(f"skipping {e}", stacklevel=3)
            skipped.append(file)
            continue
        for ep, (state, actions) in zip(eps, arrays):
            yield ep, state, actions
