"""`vlabench data info`: what a demo dataset holds, what it costs on disk, and its statistics."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from tyro.conf import Positional

from vlabench.data.manifest import PENDING_DIR, load_manifest, manifest_episodes
from vlabench.data.stats import ensure_stats, format_stats_table


@dataclass
class DataInfoConfig:
    """Summarize a demo dataset directory."""

    data: Positional[Path]
    """Demo dataset directory (shards written by `vlabench collect`)."""
    skip_bad: bool = False
    """Skip unreadable or changed shards with a warning instead of failing on the first one."""
    verify: bool = False
    """Re-hash every shard and compare it with the checksum recorded when it was written (catches
    bytes changed in place even when size and mtime were kept; costs one read of the dataset)."""


def _mb(n: int) -> str:
    return f"{n / 2**20:.2f} MB"


def summarize(root: Path | str, skip_bad: bool = False, verify: bool = False) -> str:
    """The report text (see `run`)."""
    root = Path(root)
    t0 = time.perf_counter()
    manifest = load_manifest(root, skip_bad=skip_bad, verify=verify)
    seconds = time.perf_counter() - t0
    episodes = manifest_episodes(manifest)
    n_pending = sum(e["file"].startswith(PENDING_DIR + "/") for e in manifest["shards"])
    disk = sum(e["size"] for e in manifest["shards"])
    frames = manifest["n_frames"]
    lines = [f"dataset    {root}",
             f"hash       {manifest['hash']}",
             f"shards     {len(manifest['shards']) - n_pending} complete, {n_pending} pending single-episode files"
             + (f", {len(manifest['bad'])} unreadable or changed since written (skipped)" if manifest["bad"] else ""),
             f"episodes   {len(episodes)} ({sum(ep['success'] for ep in episodes)} successful)",
             f"frames     {frames}",
             f"disk       {_mb(disk)} in shards, {disk / max(frames, 1):,.0f} bytes/frame (both cameras)"]
    if verify:
        checked = disk + sum(b["size"] for b in manifest["bad"])
        lines.append(f"verified   {len(manifest['shards']) + len(manifest['bad'])} files, {_mb(checked)} in "
                     f"{seconds:.2f} s ({checked / 2**20 / max(seconds, 1e-9):,.0f} MB/s): "
                     + (f"{len(manifest['bad'])} bad, the rest match" if manifest["bad"]
                        else "every checksum matches the one recorded at write time"))
    if manifest["duplicates"]:
        lines.append(f"duplicates {len(manifest['duplicates'])} repeated episode keys (first copy used)")
    cells: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for ep in episodes:
        cells[(ep["task"], ep["split"])].append(ep)
    if cells:
        w = max(len(t) for t, _ in cells) + 2
        lines += ["", f"{'task':<{w}}{'split':<12}{'episodes':>9}{'frames':>9}{'mean len':>9}{'success':>9}"]
        for (task, split), eps in sorted(cells.items()):
            n, f = len(eps), sum(ep["length"] for ep in eps)
            ok = sum(ep["success"] for ep in eps)
            lines.append(f"{task:<{w}}{split:<12}{n:>9}{f:>9}{f / n:>9.1f}{ok / n:>9.0%}")
        lines += ["", format_stats_table(ensure_stats(root, manifest, skip_bad=skip_bad))]
    return "\n".join(lines)


def run(cfg: DataInfoConfig) -> str:
    """Print and return episodes per (task, split), frames, disk size, bytes/frame and stats.

    Raises CorruptShardError naming the shard when one is unreadable or changed since it was
    written (checked by size/mtime, or by re-hashing everything with cfg.verify), unless cfg.skip_bad.
    """
    text = summarize(cfg.data, skip_bad=cfg.skip_bad, verify=cfg.verify)
    print(text)
    return text
