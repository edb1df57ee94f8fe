"""Eval harness throughput: env steps/s and expert episodes/hour, plus a memory soak.

Usage::

    python benchmarks/eval_throughput.py                     # noop at 1, 2 and all cores + expert
    python benchmarks/eval_throughput.py --gpu               # also 16 workers with renderer egl and tiny (CUDA)
    python benchmarks/eval_throughput.py --soak 2000         # RSS of one process over 2000 episodes
    python benchmarks/eval_throughput.py --workers 1,2 --envs-per-worker 1,4,8 --no-expert   # slots per worker

Throughput rows run the real harness (``vlabench.eval.harness.run``) with the noop policy, which never
succeeds, so every episode runs exactly ``--max-steps`` steps: steps/s = total env steps / wall time,
worker start-up included. The reference row, measured in the same run, is a bare env loop in this
process (no harness, no IPC), so the harness overhead and the scaling with workers read off directly.
The expert row gives episodes/hour on a smoke-like suite (all four tasks, seen split, each task's own
max_steps) at all cores. ``--envs-per-worker`` adds rows with several env slots per worker process
(``EvalConfig.envs_per_worker``; each row runs at least 2 episodes per slot); ``--overlap on|off|auto`` is
passed on as ``EvalConfig.overlap``. benchmarks/inference_throughput.py does the same with learned policies.

``--soak N`` runs N expert episodes in ONE process through the same ``EnvSlot`` the workers use (envs
cached per (task, split), resets cycling over the tasks) and prints the resident set size every
``--soak-every`` episodes; growth is reported from the end of the warm-up (``--soak-warmup``) on.

Prints a markdown table. Do not run the big variants on a shared machine.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

TASKS = ("pick", "place", "push", "stack")


def write_suite(path: Path, per_cell: int, image_size: int, max_steps: int | None) -> Path:
    lines = ['name = "bench"', 'kind = "eval"', "seed_range = [1500000, 1501000]", f"episodes_per_cell = {per_cell}",
             "[env]", f"image_size = {image_size}", f"wrist_size = {image_size}"]
    if max_steps:  # None: each task's own limit (what the expert needs)
        lines.append(f"max_steps = {max_steps}")
    for t in TASKS:
        lines += ["[[cells]]", f'task = "{t}"', 'splits = ["seen"]']
    path.write_text("\n".join(lines) + "\n")
    return path


def harness_row(label: str, policy: str, workers: int, episodes: int, renderer: str, args, tmp: Path,
                envs_per_worker: int = 1) -> dict:
    from vlabench.eval.harness import EvalConfig, run

    per_cell = max(1, -(-episodes // len(TASKS)))
    max_steps = None if policy == "expert" else args.max_steps
    tag = f"{label}-{workers}x{envs_per_worker}-{renderer}".replace(" ", "_")
    suite = write_suite(tmp / f"{tag}.toml", per_cell, args.image_size, max_steps)
    out = tmp / f"out-{tag}"
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # keep stdout for the table; tqdm shows on stderr
        res = run(EvalConfig(suite=suite, policy=policy, workers=workers, out=out, renderer=renderer,
                             envs_per_worker=envs_per_worker, overlap=args.overlap))
    wall = time.perf_counter() - t0
    recs = [json.loads(x) for x in (out / "episodes.jsonl").read_text().splitlines()]
    steps = sum(r["steps"] for r in recs)
    return {"config": label, "workers": workers, "envs_per_worker": envs_per_worker, "renderer": res["renderer"],
            "episodes": len(recs), "steps": steps, "wall_s": wall, "success": res["overall"]["rate"],
            "errors": res["overall"]["errors"]}


def reference_row(args) -> dict:
    """A bare env loop in this process: the ceiling one core reaches without the harness."""
    import numpy as np

    from vlabench.env import make_env

    env = make_env("pick", "seen", image_size=args.image_size, wrist_size=args.image_size, max_steps=args.max_steps)
    a = np.zeros(7, np.float32)
    a[6] = -1
    steps, t0, n_eps = 0, time.perf_counter(), max(2, args.episodes // 4)
    for i in range(n_eps):
        env.reset(seed=1_500_000 + i)
        done = False
        while not done:
            _, _, term, trunc, _ = env.step(a)
            steps += 1
            done = term or trunc
    env.close()
    return {"config": "reference: bare env loop", "workers": 1, "renderer": "tiny", "episodes": n_eps, "steps": steps,
            "wall_s": time.perf_counter() - t0, "success": 0.0, "errors": 0}


def table(rows: list[dict]) -> str:
    cols = ["config", "workers", "envs/worker", "renderer", "episodes", "env steps", "wall s", "env steps/s",
            "episodes/h", "success", "errors"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append(f"| {r['config']} | {r['workers']} | {r.get('envs_per_worker', 1)} | {r['renderer']} | "
                     f"{r['episodes']} | {r['steps']} | "
                     f"{r['wall_s']:.1f} | {r['steps'] / r['wall_s']:.1f} | {3600 * r['episodes'] / r['wall_s']:.0f} | "
                     f"{100 * r['success']:.0f}% | {r['errors']} |")
    return "\n".join(lines)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def soak(args) -> None:
    from vlabench.agents.builtin import ExpertPolicy
    from vlabench.contracts import Traits
    from vlabench.eval.workers import EnvSlot, run_episode_inline

    slot = EnvSlot({"image_size": args.image_size, "wrist_size": args.image_size, "max_steps": args.max_steps})
    policy = ExpertPolicy()
    policy.reset(1)
    rows, base, t0, succ, errors = [], None, time.perf_counter(), 0, 0
    print(f"soak: {args.soak} expert episodes in one process (pid {os.getpid()}), "
          f"{args.image_size}px, max_steps {args.max_steps}; warm-up {args.soak_warmup} episodes")
    for i in range(args.soak):
        ep = {"task": TASKS[i % len(TASKS)], "split": "seen", "index": i, "seed": 1_500_000 + i}
        rec = run_episode_inline(slot, policy, ep, Traits.of(policy))
        succ += rec["success"]
        errors += rec["status"] == "error"
        n = i + 1
        if n == args.soak_warmup:
            base = rss_mb()
        if n % args.soak_every == 0 or n == args.soak or n == args.soak_warmup:
            rss = rss_mb()
            rows.append((n, rss, time.perf_counter() - t0))
            print(f"  episode {n:6d}  RSS {rss:8.1f} MiB  ({time.perf_counter() - t0:.0f} s)", flush=True)
    slot.close()
    print("\n| episodes | RSS MiB | elapsed s |\n|---|---|---|")
    for n, rss, el in rows:
        print(f"| {n} | {rss:.1f} | {el:.0f} |")
    if base is not None and args.soak > args.soak_warmup:
        growth = rows[-1][1] - base
        per = growth / (args.soak - args.soak_warmup)
        print(f"\nRSS growth after warm-up: {growth:+.1f} MiB over {args.soak - args.soak_warmup} episodes "
              f"({1024 * per:+.1f} KiB/episode); success {succ}/{args.soak}, errors {errors}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--episodes", type=int, default=8, help="episodes per throughput row (at least 2 per worker)")
    ap.add_argument("--max-steps", type=int, default=40, help="env max_steps (noop episodes run exactly this)")
    ap.add_argument("--image-size", type=int, default=128, help="front and wrist camera size")
    ap.add_argument("--workers", type=str, default="", help="comma list; default 1,2,<cpu count>")
    ap.add_argument("--envs-per-worker", type=str, default="1", help="comma list of env slots per worker")
    ap.add_argument("--overlap", default="auto", help="EvalConfig.overlap: auto, on (double buffering) or off")
    ap.add_argument("--gpu", action="store_true", help="also 16 workers with renderer egl and tiny (needs CUDA)")
    ap.add_argument("--no-expert", action="store_true", help="skip the expert episodes/hour row")
    ap.add_argument("--soak", type=int, default=0, help="run N episodes in one process, report RSS (skips the rest)")
    ap.add_argument("--soak-every", type=int, default=50)
    ap.add_argument("--soak-warmup", type=int, default=20)
    args = ap.parse_args(argv)
    if args.soak:
        soak(args)
        return
    cores = os.cpu_count() or 1
    workers = sorted({int(w) for w in args.workers.split(",") if w} or {1, 2, cores})
    rows = [reference_row(args)]
    with tempfile.TemporaryDirectory(prefix="vlabench-bench-") as tmp:
        for w in workers:
            for e in sorted({int(x) for x in args.envs_per_worker.split(",") if x}):
                rows.append(harness_row("noop", "noop", w, max(args.episodes, 2 * w * e), "tiny", args, Path(tmp), e))
        if not args.no_expert:
            rows.append(harness_row("expert", "expert", cores, max(args.episodes, 2 * cores), "tiny", args, Path(tmp)))
        if args.gpu:
            import torch

            if not torch.cuda.is_available():
                print("--gpu: no CUDA device here; skipping the egl rows", file=sys.stderr)
            else:
                for renderer in ("egl", "tiny"):
                    rows.append(harness_row(f"noop {renderer}", "noop", 16, max(args.episodes, 32), renderer, args,
                                            Path(tmp)))
    print(f"\n## eval throughput ({args.image_size}px, max_steps {args.max_steps}, {cores} cores, "
          f"load avg {os.getloadavg()[0]:.1f} at the end)\n")
    print(table(rows))


if __name__ == "__main__":
    main()
