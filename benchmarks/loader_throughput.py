"""Demo loader and collection throughput.

1. Collects ``--episodes`` expert demos at 128x128 (front and 84x84 wrist) from a small train suite
   with 1 worker, and reports collection episodes/min per worker and disk bytes per frame.
2. Reads them through ``DemoDataset`` (n_obs=2, horizon=16) with a torch DataLoader at batch 32,
   for 0 (in-process), 1 and 4 workers, from the gzip shards and from the decoded mmap cache.

    python benchmarks/loader_throughput.py [--episodes 24] [--batches 30] [--data DIR] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

SUITE = """name = "loader-bench"
kind = "train"
seed_range = [0, 100000]
episodes_per_cell = 1
[env]
image_size = 128
wrist_size = 84
[[cells]]
task = "pick"
splits = ["seen"]
[[cells]]
task = "place"
splits = ["seen"]
"""


def collect(data: Path, episodes: int) -> tuple[float, float]:
    from vlabench.data.collect import CollectConfig, run
    from vlabench.data.manifest import load_manifest

    suite = data.parent / "loader-bench.toml"
    suite.write_text(SUITE)
    t0 = time.perf_counter()
    run(CollectConfig(suite=suite, episodes=episodes, workers=1, out=data))
    minutes = (time.perf_counter() - t0) / 60
    manifest = load_manifest(data)
    size = sum(f.stat().st_size for f in data.glob("shard_*.h5"))
    return episodes / minutes, size / manifest["n_frames"]


def read_rate(data: Path, workers: int, batches: int, cache: bool) -> float:
    import torch
    from torch.utils.data import DataLoader

    from vlabench.data.dataset import DemoDataset

    ds = DemoDataset(data, n_obs=2, horizon=16, cache=cache)
    loader = DataLoader(ds, batch_size=32, shuffle=True, num_workers=workers, persistent_workers=workers > 0,
                        generator=torch.Generator().manual_seed(0))
    it = iter(loader)
    next(it)  # start-up (worker spawn, first file opens) is not throughput
    n, t0 = 0, time.perf_counter()
    for _ in range(batches):
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        n += batch["image"].shape[0]
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=24)
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--data", type=Path, default=None,
                    help="measure reading this existing dataset instead (collection is then not measured)")
    ap.add_argument("--out", default=None, help="also write the markdown table here")
    args = ap.parse_args()
    tmp = None
    data = args.data
    if data is None:
        tmp = Path(tempfile.mkdtemp(prefix="vlabench-loader-"))
        data = tmp / "demos"
    lines = []
    try:
        lines += ["| measure | value |", "|---|---:|"]
        if args.data is None:
            eps_per_min, bytes_per_frame = collect(data, args.episodes)
            lines.append(f"| collection, episodes/min per worker (128x128 front + 84x84 wrist) | {eps_per_min:.1f} |")
        else:
            from vlabench.data.manifest import load_manifest

            size = sum(f.stat().st_size for f in data.glob("shard_*.h5"))
            bytes_per_frame = size / load_manifest(data)["n_frames"]
        lines.append(f"| disk bytes per frame (both cameras, state, action, poses) | {bytes_per_frame:,.0f} |")
        for cache in (False, True):
            for workers in (0, 1, 4):
                rate = read_rate(data, workers, args.batches, cache)
                src = "mmap cache" if cache else "gzip shards"
                lines.append(f"| loader samples/s, n_obs=2 horizon=16 batch 32, {workers} workers, {src} | {rate:,.0f} |")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    text = f"Loader throughput on {os.cpu_count()} cores\n\n" + "\n".join(lines)
    print(text)
    if args.out:
        from vlabench.fileio import write_text_atomic

        write_text_atomic(args.out, text + "\n")


if __name__ == "__main__":
    main()
