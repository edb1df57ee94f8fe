"""Simulated guarantees of `vlabench compare`'s sequential test (vlabench.eval.sequential): type-I error under
H0 and power / expected pairs under alternatives, against a fixed-n exact McNemar test.

    python benchmarks/sequential_power.py [--sims 10000] [--alpha 0.05] [--seed 0] [--out FILE.md] [--json FILE]

Each simulated comparison draws independent pairs (success_A, success_B) with P(A) = p_A, P(B) = p_B and runs
the test after every pair, stopping at a decision or at max-pairs. Type-I error: p_A = p_B = p over a grid of
p and max-pairs; a decision either way is an error. Power: p_B = 0.3, p_A = p_B + delta; "right" decisions
only. For each alternative the table also gives the smallest fixed n (multiple of 10) at which a two-sided
exact McNemar test at the same alpha, run once at the end, reaches the sequential test's power, and the
saving 1 - E[pairs] / n.
"""

from __future__ import annotations

import argparse
import math
from functools import lru_cache

import numpy as np

from vlabench.eval.metrics import mcnemar_exact
from vlabench.eval.sequential import log_mixture

P_GRID = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
MAX_PAIRS = (50, 100, 200, 500)
DELTAS = (0.1, 0.2, 0.3)
P_B = 0.3


@lru_cache(maxsize=4)
def log_e_table(n: int) -> np.ndarray:
    """log M for every (k, m), m <= n (k > m left at -inf)."""
    t = np.full((n + 1, n + 1), -np.inf)
    for m in range(n + 1):
        for k in range(m + 1):
            t[k, m] = log_mixture(k, m)
    return t


def simulate(p_a: float, p_b: float, n: int, sims: int, alpha: float, rng: np.random.Generator) -> dict:
    """Decisions and pairs used of ``sims`` sequential comparisons of up to ``n`` pairs."""
    a = rng.random((sims, n)) < p_a
    b = rng.random((sims, n)) < p_b
    disc = a != b
    m = np.cumsum(disc, axis=1)
    k = np.cumsum(disc & a, axis=1)
    crossed = log_e_table(n)[k, m] >= math.log(1 / alpha)
    any_cross = crossed.any(axis=1)
    first = np.where(any_cross, crossed.argmax(axis=1), n - 1)
    rows = np.arange(sims)
    a_better = any_cross & (2 * k[rows, first] > m[rows, first])
    b_better = any_cross & ~a_better
    return {"a_better": float(a_better.mean()), "b_better": float(b_better.mean()),
            "mean_pairs": float((first + 1).mean()), "final_b": (k[:, -1]), "final_c": (m[:, -1] - k[:, -1])}


def fixed_power(p_a: float, p_b: float, n: int, sims: int, alpha: float, rng: np.random.Generator) -> float:
    """Power (A declared better at the end, exact two-sided McNemar p < alpha) of a fixed-n comparison."""
    a = rng.random((sims, n)) < p_a
    b = rng.random((sims, n)) < p_b
    wins_a, wins_b = (a & ~b).sum(axis=1), (b & ~a).sum(axis=1)
    cache: dict[tuple[int, int], float] = {}
    hits = 0
    for x, y in zip(wins_a.tolist(), wins_b.tolist()):
        if x > y:
            p = cache.get((x, y))
            if p is None:
                p = cache[(x, y)] = mcnemar_exact(x, y)
            hits += p < alpha
    return hits / sims


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sims", type=int, default=10000)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    se = math.sqrt(args.alpha * (1 - args.alpha) / args.sims)
    type1 = {(p, n): simulate(p, p, n, args.sims, args.alpha, rng) for n in MAX_PAIRS for p in P_GRID}
    lines = [f"**Type-I error** (p_A = p_B = p; {args.sims:,} simulated comparisons per cell; alpha = {args.alpha}; "
             f"Monte Carlo standard error at alpha: {se:.4f})", "",
             "| max pairs | " + " | ".join(f"p={p}" for p in P_GRID) + " | worst |",
             "|---:|" + "---:|" * (len(P_GRID) + 1)]
    worst_all = 0.0
    for n in MAX_PAIRS:
        errs = [type1[(p, n)]["a_better"] + type1[(p, n)]["b_better"] for p in P_GRID]
        worst_all = max(worst_all, max(errs))
        lines.append(f"| {n} | " + " | ".join(f"{e:.4f}" for e in errs) + f" | {max(errs):.4f} |")
    lines += ["", f"Largest type-I error on the grid: {worst_all:.4f} (alpha = {args.alpha}).", "",
              f"**Power and pairs used** (p_B = {P_B}, p_A = p_B + delta; {args.sims:,} comparisons each; the fixed-n "
              "McNemar column is the smallest n, in steps of 10, whose power reaches the sequential test's)", "",
              "| delta | max pairs | power | wrong direction | E[pairs] | fixed-n McNemar n at that power | saving |",
              "|---:|---:|---:|---:|---:|---:|---:|"]
    power_rows = []
    for delta in DELTAS:
        for n in (100, 200, 500):
            r = simulate(P_B + delta, P_B, n, args.sims, args.alpha, rng)
            target, n_fixed, fp = r["a_better"], None, 0.0
            for cand in range(10, 2001, 10):
                fp = fixed_power(P_B + delta, P_B, cand, max(2000, args.sims // 5), args.alpha, rng)
                if fp >= target:
                    n_fixed = cand
                    break
            saving = 1 - r["mean_pairs"] / n_fixed if n_fixed else float("nan")
            power_rows.append({"delta": delta, "max_pairs": n, "power": target, "wrong": r["b_better"],
                               "mean_pairs": r["mean_pairs"], "fixed_n": n_fixed, "saving": saving})
            lines.append(f"| {delta} | {n} | {target:.3f} | {r['b_better']:.4f} | {r['mean_pairs']:.1f} | "
                         f"{n_fixed if n_fixed else '> 2000'} | {saving:.0%} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        from vlabench.fileio import write_text_atomic

        write_text_atomic(args.out, text + "\n")
    if args.json:
        from vlabench.fileio import write_json_atomic

        write_json_atomic(args.json, {"alpha": args.alpha, "sims": args.sims, "seed": args.seed,
                                      "type1": {f"{p}@{n}": v["a_better"] + v["b_better"] for (p, n), v in type1.items()},
                                      "power": power_rows})


if __name__ == "__main__":
    main()
