"""Env steps per second with the 128x128 front image returned on every step, against panda-gym.

Measured side by side in one run, each in a single process (one core): vlabench with the default
observation (front 128 + wrist 84), with a 128 wrist camera, with a front camera only (wrist_size 16, the smallest),
and panda-gym's PandaPickAndPlace-v3 rendering a 128x128 ``rgb_array`` every step. panda-gym is
installed only for this benchmark: ``pip install panda-gym``.

    python benchmarks/sim_throughput.py [--steps 300] [--renderer tiny|egl] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")


def bench_vlabench(steps: int, renderer: str, wrist_size: int, size: int) -> float:
    import numpy as np

    from vlabench.env import make_env

    env = make_env("pick", image_size=size, wrist_size=wrist_size, renderer=renderer, max_steps=10**9)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    n, t0 = 0, time.perf_counter()
    while n < steps:
        obs, _, term, trunc, _ = env.step(rng.uniform(-1, 1, 7).astype(np.float32))
        assert obs["image"].shape == (size, size, 3)
        n += 1
        if term or trunc or n % 100 == 0:  # resets are part of a real workload: include them
            env.reset(seed=n)
    rate = n / (time.perf_counter() - t0)
    env.close()
    return rate


def bench_panda_gym(steps: int, size: int) -> float:
    import gymnasium as gym
    import panda_gym  # noqa: F401

    env = gym.make("PandaPickAndPlace-v3", render_mode="rgb_array", render_width=size, render_height=size)
    env.reset(seed=0)
    n, t0 = 0, time.perf_counter()
    while n < steps:
        _, _, term, trunc, _ = env.step(env.action_space.sample())
        frame = env.render()
        assert frame.shape[:2] == (size, size)
        n += 1
        if term or trunc:
            env.reset()
    rate = n / (time.perf_counter() - t0)
    env.close()
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--renderer", default="tiny")
    ap.add_argument("--out", default=None, help="also write the markdown table here")
    args = ap.parse_args()
    rows = []
    full = bench_vlabench(args.steps, args.renderer, 84, args.size)
    rows.append((f"vlabench Pick, front {args.size} + wrist 84 (default obs), {args.renderer}", full))
    both = bench_vlabench(args.steps, args.renderer, args.size, args.size)
    rows.append((f"vlabench Pick, front {args.size} + wrist {args.size}, {args.renderer}", both))
    front = bench_vlabench(args.steps, args.renderer, 16, args.size)
    rows.append((f"vlabench Pick, front {args.size} (+ wrist 16), {args.renderer}", front))
    try:
        pg = bench_panda_gym(args.steps, args.size)
        rows.append((f"panda-gym PandaPickAndPlace-v3, rgb_array {args.size}, Tiny", pg))
    except ImportError:
        pg = None
        print("panda-gym is not installed (pip install panda-gym): no reference measured", file=sys.stderr)
    lines = [f"Sim throughput, one process, {args.steps} steps each; {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} cores; git {_git_sha()}", "", "| configuration | steps/s | vs panda-gym |", "|---|---:|---:|"]
    for name, rate in rows:
        ratio = f"{rate / pg:.1f}x" if pg else "n/a"
        lines.append(f"| {name} | {rate:.1f} | {ratio} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            f.write(text + "\n")
        os.replace(tmp, args.out)


def _git_sha() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True, stderr=subprocess.DEVNULL).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


if __name__ == "__main__":
    main()
