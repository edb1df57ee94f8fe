"""Env steps per second with the 128x128 front image returned on every step, against panda-gym.

Measured side by side in one run, each in this one process (one core), *interleaved*: every round runs
each configuration for about ``--slice`` seconds, until each has run ``--seconds``, so a change in the
machine's background load hits all of them alike. Configurations: vlabench with the default observation (front 128 + wrist 84), with a 128 wrist
camera, with a front camera only (wrist_size 16, the smallest), and panda-gym's PandaPickAndPlace-v3
rendering a 128x128 ``rgb_array`` every step. panda-gym is installed only for this benchmark:
``pip install panda-gym``. Random actions; resets are part of the workload (every 100 steps, new seed).

The floors split the default step into its parts, timed inside the same kind of loop (the env's own
physics stepping and camera calls, wrapped with timers): physics only (``World.step``), the front render
only, the wrist render only, and everything else (IK, proprioception, success predicate, Python).
Each floor is shown as the rate the step would run at if it were the only cost.

    python benchmarks/sim_throughput.py [--seconds 20] [--slice 0.5] [--renderer tiny|egl] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")


class VlabenchLoop:
    def __init__(self, size: int, wrist: int, renderer: str) -> None:
        import numpy as np

        from vlabench.env import make_env

        self.env = make_env("pick", image_size=size, wrist_size=wrist, renderer=renderer, max_steps=10**9)
        self.rng = np.random.default_rng(0)
        self.size, self.n = size, 0
        self.env.reset(seed=0)

    def run(self, k: int) -> None:
        import numpy as np

        for _ in range(k):
            obs, _, term, trunc, _ = self.env.step(self.rng.uniform(-1, 1, 7).astype(np.float32))
            assert obs["image"].shape == (self.size, self.size, 3)
            self.n += 1
            if term or trunc or self.n % 100 == 0:  # resets are part of a real workload: include them
                self.env.reset(seed=self.n)


class PandaGymLoop:
    def __init__(self, size: int) -> None:
        import gymnasium as gym
        import panda_gym  # noqa: F401

        self.env = gym.make("PandaPickAndPlace-v3", render_mode="rgb_array", render_width=size, render_height=size)
        self.env.reset(seed=0)
        self.size = size

    def run(self, k: int) -> None:
        for _ in range(k):
            _, _, term, trunc, _ = self.env.step(self.env.action_space.sample())
            frame = self.env.render()
            assert frame.shape[:2] == (self.size, self.size)
            if term or trunc:
                self.env.reset()


def instrument(parts: dict, target, front_size: int) -> None:
    """Accumulate the wall time ``target`` (a World) spends in physics stepping and in each camera (told
    apart by image size) into ``parts``; other worlds in this process are not counted."""
    from vlabench.sim import camera, world

    step, render = world.World.step, camera.render

    def timed_step(self, substeps=None):
        t = time.perf_counter()
        step(self) if substeps is None else step(self, substeps)
        if self is target and substeps is None:  # control steps only, not the settling after a reset
            parts["physics"] += time.perf_counter() - t

    def timed_render(client, size, view, *args, **kwargs):
        t = time.perf_counter()
        frame = render(client, size, view, *args, **kwargs)
        if client == target.client:
            parts["front" if size == front_size else "wrist"] += time.perf_counter() - t
        return frame

    world.World.step = timed_step
    camera.render = timed_render


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="measured seconds per configuration")
    ap.add_argument("--slice", type=float, default=0.5, help="seconds per configuration per round")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--renderer", default="tiny")
    ap.add_argument("--out", default=None, help="also write the markdown table here")
    args = ap.parse_args()
    from vlabench.sim import constants

    SIM_VERSION, SUBSTEPS = getattr(constants, "SIM_VERSION", 1), constants.SUBSTEPS  # older trees: version 1

    r = args.renderer
    loops = {f"vlabench Pick, front {args.size} + wrist 84 (default obs), {r}": VlabenchLoop(args.size, 84, r),
             f"vlabench Pick, front {args.size} + wrist {args.size}, {r}": VlabenchLoop(args.size, args.size, r),
             f"vlabench Pick, front {args.size} (+ wrist 16), {r}": VlabenchLoop(args.size, 16, r)}
    pg_name = f"panda-gym PandaPickAndPlace-v3, rgb_array {args.size}, Tiny"
    try:
        loops[pg_name] = PandaGymLoop(args.size)
    except ImportError:
        print("panda-gym is not installed (pip install panda-gym): no reference measured", file=sys.stderr)
    parts = {"physics": 0.0, "front": 0.0, "wrist": 0.0}
    instrumented = "default obs, instrumented"
    elapsed = {name: 0.0 for name in list(loops) + [instrumented]}
    done = {name: 0 for name in elapsed}
    for loop in loops.values():  # warm-up: caches (meshes, scenery), first resets
        loop.run(5)
    parts_loop = None
    # Equal time slices, round after round, until every configuration has run for --seconds: the machine's
    # background load then weighs on all of them alike, whatever their speed.
    while min(elapsed.values()) < args.seconds:
        for name in elapsed:
            if name == instrumented:
                if parts_loop is None:
                    parts_loop = VlabenchLoop(args.size, 84, r)
                    instrument(parts, parts_loop.env.world, args.size)
                    parts_loop.run(5)
                    parts.update(physics=0.0, front=0.0, wrist=0.0)
                loop = parts_loop
            else:
                loop = loops[name]
            per_step = elapsed[name] / done[name] if done[name] else 0.05
            k = max(1, round(args.slice / per_step))
            t = time.perf_counter()
            loop.run(k)
            elapsed[name] += time.perf_counter() - t
            done[name] += k
    rates = {name: done[name] / elapsed[name] for name in loops}
    pg = rates.get(pg_name)
    lines = [f"Sim throughput, one process, {args.seconds:g} s per configuration in interleaved slices of "
             f"{args.slice:g} s ({', '.join(str(done[k]) for k in loops)} steps); "
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; git {_git_sha()}; "
             f"SIM_VERSION {SIM_VERSION}", "", "| configuration | steps/s | ms/step | vs panda-gym |",
             "|---|---:|---:|---:|"]
    for name, rate in rates.items():
        lines.append(f"| {name} | {rate:.1f} | {1e3 / rate:.2f} | {f'{rate / pg:.1f}x' if pg else 'n/a'} |")
    n = done[instrumented]
    total = elapsed[instrumented] / n
    rest = total - sum(parts.values()) / n
    lines += ["", "Floors of the default observation's step (instrumented run: "
              f"{n / elapsed[instrumented]:.1f} steps/s, "
              f"{1e3 * total:.2f} ms/step; each part alone would run at):", "",
              "| part | ms/step | steps/s if alone | share |", "|---|---:|---:|---:|"]
    for name, label in (("physics", f"physics only (World.step, {SUBSTEPS} substeps)"),
                        ("front", f"front render only ({args.size})"), ("wrist", "wrist render only (84)")):
        ms = parts[name] / n
        lines.append(f"| {label} | {1e3 * ms:.2f} | {1 / ms:.0f} | {ms / total:.0%} |")
    lines.append(f"| everything else (IK, state, success, Python, resets) | {1e3 * rest:.2f} | {1 / rest:.0f} | "
                 f"{rest / total:.0%} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        from vlabench.fileio import write_text_atomic

        write_text_atomic(args.out, text + "\n")


def _git_sha() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True, stderr=subprocess.DEVNULL).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


if __name__ == "__main__":
    main()
