"""Scripted-expert success rate per (task, split) cell of a suite, with Wilson 95% intervals.

Each cell runs its expert on N seeds, ``seed = start + index`` for index 0..N-1, where ``start`` is the
cell's first manifest seed (the suite's own derivation, extended past the cell's episode count when N
is larger). Episodes run in worker processes; the markdown table goes to stdout and, atomically, to
``--out``. The target (issue ENV-SUITE) is >= 95% on every cell; cells below ``--min-rate`` are flagged
and make the exit status 1.

The expert reads privileged state, so the camera images do not change what it does: they are rendered
small (``--image-size``) to spend the CPU on physics.

    python benchmarks/expert_success.py [--suite envs/emergent.toml] [--n 100] [--skip 0] [--workers 2]
        [--cells pad:seen,math] [--out results/expert_success.md] [--failures] [--perturb 0.3]

``--perturb`` runs the experts as DART demo collection does (``vlabench collect --perturb``), to see
how often they still succeed.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from collections import defaultdict

os.environ.setdefault("OMP_NUM_THREADS", "1")

_ENVS: dict = {}


def run_episode(job: tuple[str, str, int, int, int, float]) -> dict:
    """One expert episode: (task, split, seed, image_size, wrist_size, perturb) -> outcome dict."""
    task, split, seed, size, wrist, perturb = job
    from vlabench.env import make_env
    from vlabench.experts.base import Perturbation

    try:
        env = _ENVS.get((task, split))
        if env is None:
            env = _ENVS[(task, split)] = make_env(task, split, image_size=size, wrist_size=wrist)
        obs, info = env.reset(seed=seed)
        success, steps, perturbation = False, 0, Perturbation(perturb, seed)
        while True:
            obs, _, term, trunc, info = env.step(perturbation(env.expert_action()))
            steps += 1
            if info["success"]:
                success = True
            if term or trunc or success:
                break
        return {"task": task, "split": split, "seed": seed, "success": success, "steps": steps, "error": None,
                "instruction": info["instruction"], "diagnostics": {k: v for k, v in info["diagnostics"].items()
                                                                     if isinstance(v, (bool, int, float))}}
    except Exception as e:  # an error is a failure of the cell, reported with its seed
        return {"task": task, "split": split, "seed": seed, "success": False, "steps": 0,
                "error": f"{type(e).__name__}: {e}", "instruction": "", "diagnostics": {}}


def cell_seeds(suite, n: int, only: set[str] | None, skip: int = 0) -> list[tuple[str, str, list[int]]]:
    """(task, split, seeds of indices skip..skip+n-1) per cell of ``suite`` in file order, filtered by
    ``only`` ("task" or "task:split")."""
    first: dict[tuple[str, str], int] = {}
    for e in suite.episodes:
        if (e.task, e.split) not in first or e.index == 0:
            first[(e.task, e.split)] = e.seed - e.index
    out = []
    for (task, split), start in first.items():
        if only and task not in only and f"{task}:{split}" not in only:
            continue
        out.append((task, split, [start + i for i in range(skip, skip + n)]))
    return out


def table(results: list[dict], min_rate: float) -> tuple[str, bool]:
    """Markdown table of the outcomes and whether every cell meets ``min_rate``."""
    from vlabench.eval.metrics import wilson_interval

    cells: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in results:
        cells[(r["task"], r["split"])].append(r)
    lines = ["| task | split | n | successes | rate | 95% CI (Wilson) | mean steps | failed seeds |",
             "|---|---|---:|---:|---:|---|---:|---|"]
    ok = True
    for (task, split), rs in cells.items():
        k, n = sum(r["success"] for r in rs), len(rs)
        lo, hi = wilson_interval(k, n)
        steps = sum(r["steps"] for r in rs) / max(n, 1)
        failed = sorted(r["seed"] for r in rs if not r["success"])
        flag = "" if k / n >= min_rate else " **below target**"
        ok &= not flag
        shown = ", ".join(map(str, failed[:6])) + (" ..." if len(failed) > 6 else "")
        lines.append(f"| {task} | {split} | {n} | {k} | {k / n:.3f}{flag} | [{lo:.3f}, {hi:.3f}] | {steps:.1f} | {shown} |")
    total = len(results)
    wins = sum(r["success"] for r in results)
    lo, hi = wilson_interval(wins, total)
    lines.append(f"| **all** | | {total} | {wins} | {wins / max(total, 1):.3f} | [{lo:.3f}, {hi:.3f}] | | |")
    return "\n".join(lines), ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--suite", default="envs/emergent.toml", help="suite file whose cells are measured")
    ap.add_argument("--n", type=int, default=100, help="seeds per cell")
    ap.add_argument("--skip", type=int, default=0, help="first episode index (split a long run into parts)")
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1), help="worker processes")
    ap.add_argument("--cells", default="", help="comma-separated filter: task or task:split (default: all)")
    ap.add_argument("--image-size", type=int, default=32, help="front image size (does not affect the expert)")
    ap.add_argument("--wrist-size", type=int, default=16, help="wrist image size (does not affect the expert)")
    ap.add_argument("--min-rate", type=float, default=0.95, help="flag cells below this success rate")
    ap.add_argument("--out", default="", help="also write the markdown table here (atomically)")
    ap.add_argument("--failures", action="store_true", help="print every failed episode's diagnostics")
    ap.add_argument("--perturb", type=float, default=0.0, help="DART perturbation as in `vlabench collect --perturb`")
    args = ap.parse_args(argv)
    if args.n < 1 or args.skip < 0 or args.perturb < 0:
        ap.error(f"--n must be >= 1, --skip and --perturb >= 0, got --n {args.n} --skip {args.skip} "
                 f"--perturb {args.perturb}")

    from tqdm import tqdm

    from vlabench.suite import load_suite

    suite = load_suite(args.suite)
    only = {c.strip() for c in args.cells.split(",") if c.strip()} or None
    cells = cell_seeds(suite, args.n, only, args.skip)
    if not cells:
        ap.error(f"--cells {args.cells!r} matches no cell of {args.suite}; cells: "
                 + ", ".join(f"{t}:{s}" for t, s in suite.cells()))
    jobs = [(t, s, seed, args.image_size, args.wrist_size, args.perturb) for t, s, seeds in cells for seed in seeds]
    t0 = time.time()
    if args.workers > 1:
        # Spawned workers: a fresh interpreter per worker, no pybullet state crosses a fork.
        with mp.get_context("spawn").Pool(args.workers) as pool:
            results = list(tqdm(pool.imap(run_episode, jobs, chunksize=4), total=len(jobs), desc="episodes"))
    else:
        results = [run_episode(j) for j in tqdm(jobs, desc="episodes")]
    text, ok = table(results, args.min_rate)
    header = (f"Expert success on {args.suite} ({suite.manifest_hash[:12]}), {args.n} seeds per cell "
              f"(episode indices {args.skip}..{args.skip + args.n - 1}), "
              f"{len(jobs)} episodes in {time.time() - t0:.0f} s with {args.workers} worker(s).\n\n"
              f"Command: `python benchmarks/expert_success.py {' '.join(argv if argv is not None else sys.argv[1:])}`\n\n")
    print(header + text)
    if args.failures:
        for r in results:
            if not r["success"]:
                print(f"FAIL {r['task']}:{r['split']} seed {r['seed']} {r['instruction']!r} "
                      f"{r['error'] or r['diagnostics']}")
    if args.out:
        from vlabench.fileio import write_text_atomic

        write_text_atomic(args.out, header + text + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
