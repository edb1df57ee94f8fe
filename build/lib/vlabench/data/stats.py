"""Per-dimension action and state statistics of a demo dataset (stats.json beside the shards).

Format (the contract every model and checkpoint relies on)::

    {"action": {"min": [7], "max": [7], "q01": [7], "q99": [7], "mean": [7], "std": [7]},
     "state":  {same keys, 8 values each},
     "privileged": {same keys, P values each}}   only when every demo records obs/privileged

Computed over every frame of every (unique, readable) episode. Quantiles use numpy's default
linear interpolation; std is the population std (ddof=0). Frames are accumulated per episode and
concatenated once at the end: demo datasets here hold at most a few hundred thousand frames of
15 floats, so exact quantiles cost megabytes, not a streaming sketch. The stats describe the
whole dataset, not a train/val subset of it (the usual practice; leakage of action ranges from
validation episodes into normalization is harmless).

stats.json is recomputed whenever the dataset's manifest hash changes: manifest.json records
under "stats_hash" the dataset hash that stats.json was computed for.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vlabench.data.layout import ACTION_DIM, STATE_DIM, read_lowdim_by_shard, read_obs_arrays
from vlabench.data.manifest import dir_lock, manifest_episodes, set_stats_hash
from vlabench.fileio import write_json_atomic

STATS_NAME = "stats.json"
STAT_KEYS = ("min", "max", "q01", "q99", "mean", "std")
ACTION_NAMES = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")
STATE_NAMES = ("x", "y", "z", "qx", "qy", "qz", "qw", "gripper")


def array_stats(x: np.ndarray) -> dict[str, list[float]]:
    """Per-column statistics of x (N, D) as JSON-ready lists of D floats."""
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"need a non-empty (N, D) array for statistics, got shape {x.shape}")
    x = x.astype(np.float64)
    q01, q99 = np.quantile(x, [0.01, 0.99], axis=0)
    vals = {"min": x.min(0), "max": x.max(0), "q01": q01, "q99": q99, "mean": x.mean(0), "std": x.std(0)}
    return {k: [float(v) for v in vals[k]] for k in STAT_KEYS}


class StatsAccumulator:
    """Collects (actions (T,7), states (T,8)) per episode; `result()` gives the stats dict."""

    def __init__(self) -> None:
        self._actions: list[np.ndarray] = []
        self._states: list[np.ndarray] = []
        self._privileged: list[np.ndarray] | None = []
        """None once a demo without the privileged stream was seen."""

    def update(self, actions: np.ndarray, states: np.ndarray, privileged: np.ndarray | None = None) -> None:
        actions, states = np.asarray(actions), np.asarray(states)
        if actions.ndim != 2 or actions.shape[1] != ACTION_DIM or states.ndim != 2 or states.shape[1] != STATE_DIM:
            raise ValueError(f"expected actions (T,{ACTION_DIM}) and states (T,{STATE_DIM}), "
                             f"got {actions.shape} and {states.shape}")
        self._actions.append(actions)
        self._states.append(states)
        if privileged is None or self._privileged is None:
            self._privileged = None
        else:
            self._privileged.append(np.asarray(privileged))

    @property
    def n_frames(self) -> int:
        return sum(len(a) for a in self._actions)

    def result(self) -> dict:
        if not self._actions:
            raise ValueError("no frames to compute statistics over (empty dataset?)")
        out = {"action": array_stats(np.concatenate(self._actions)),
               "state": array_stats(np.concatenate(self._states))}
        if self._privileged and len({p.shape[1:] for p in self._privileged}) == 1:
            out["privileged"] = array_stats(np.concatenate(self._privileged))
        return out


def compute_stats(root: Path | str, manifest: dict, skip_bad: bool = False) -> dict:
    """Statistics of the dataset described by `manifest` (reads only states and actions).

    A shard whose states/actions cannot be read raises CorruptShardError, or with skip_bad is left
    out with a warning.
    """
    return _compute(Path(root), manifest, skip_bad)[0]


def _compute(root: Path, manifest: dict, skip_bad: bool) -> tuple[dict, list[str]]:
    """(stats, files left out because unreadable)."""
    acc, skipped = StatsAccumulator(), []
    privileged: dict[tuple[str, str], np.ndarray | None] = {}
    read: set[str] = set()
    for ep, state, actions in read_lowdim_by_shard(root, manifest_episodes(manifest), skip_bad, skipped):
        if ep["file"] not in read:
            read.add(ep["file"])
            privileged.update(_privileged_of_shard(root, ep["file"], manifest))
        acc.update(actions, state, privileged.get((ep["file"], ep["demo"])))
    return acc.result(), skipped


def _privileged_of_shard(root: Path, file: str, manifest: dict) -> dict[tuple[str, str], np.ndarray | None]:
    """obs/privileged of every demo of one shard (None for all of them when a demo lacks it)."""
    demos = [ep["demo"] for e in manifest["shards"] if e["file"] == file for ep in e["episodes"]]
    try:
        arrays = read_obs_arrays(root / file, demos, "privileged")
    except KeyError:
        return {(file, d): None for d in demos}
    return dict(zip(((file, d) for d in demos), arrays))


def load_stats(root: Path | str) -> dict:
    """Read stats.json of a dataset directory."""
    path = Path(root) / STATS_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; open the dataset with DemoDataset (or run "
                                "`vlabench data info`) to compute it")
    return json.loads(path.read_text())


def ensure_stats(root: Path | str, manifest: dict, skip_bad: bool = False) -> dict:
    """stats.json if it matches `manifest`'s hash, else recompute, write (atomically) and record it.

    skip_bad: leave out shards whose states/actions cannot be read (see `compute_stats`); stats
    computed without them are returned but not cached, since they do not describe the manifest.
    """
    root = Path(root)
    path = root / STATS_NAME
    if manifest.get("stats_hash") == manifest["hash"] and path.exists():
        try:
            return json.loads(path.read_text())
        except ValueError:
            pass  # torn by a non-atomic copy: recompute
    if not manifest_episodes(manifest):
        raise ValueError(f"{root} holds no demos (expected HDF5 shards written by `vlabench collect`)")
    stats, skipped = _compute(root, manifest, skip_bad)
    if skipped:
        return stats
    try:
        with dir_lock(root):
            write_json_atomic(path, stats)
        set_stats_hash(root, manifest["hash"])
    except OSError:
        pass  # read-only dataset: serve the computed stats without caching them
    return stats


def format_stats_table(stats: dict) -> str:
    """Plain-text table: one row per dimension, columns min max q01 q99 mean std."""
    lines = []
    for group, names in (("action", ACTION_NAMES), ("state", STATE_NAMES)):
        lines.append(f"{group:<16}" + "".join(f"{k:>10}" for k in STAT_KEYS))
        for i, name in enumerate(names):
            row = "".join(f"{stats[group][k][i]:>10.4f}" for k in STAT_KEYS)
            lines.append(f"  {i} {name:<12}{row}")
    return "\n".join(lines)
