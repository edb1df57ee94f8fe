"""``vlabench compare A B --suite S``: run two policies on the same episodes, pair by pair, until the
anytime-valid test of :mod:`vlabench.eval.sequential` decides.

The pairs are the suite's episodes in round-robin order over its cells (``interleave_by_cell``). Both
policies run the next ``block`` pairs (``vlabench eval`` into ``RUNS/a`` and ``RUNS/b``, so every episode is
recorded, resumable and reportable as in eval), then the test reads the pairs in order and stops at the first
crossing of 1/alpha; checking after every block instead of every pair only costs the rest of the block, never
validity (the test's guarantee holds at any stopping time). It stops at a decision, at ``max_pairs``, or when
the suite has no pairs left, and writes ``RUNS/compare.json``. An episode that errored is a failure of its
policy, as in eval; the record counts such pairs. Rerunning the same command resumes: episodes already
recorded are not run again.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from vlabench.eval.harness import EvalConfig, run
from vlabench.eval.metrics import episode_key, is_success
from vlabench.eval.results import EPISODES_NAME, read_episodes
from vlabench.eval.sequential import interleave_by_cell, sequential_test
from vlabench.fileio import write_json_atomic
from vlabench.suite import load_suite

TEST = "beta-binomial mixture martingale on discordant pairs, Beta(1, 1) prior (vlabench.eval.sequential)"


def _outcomes(out: Path) -> tuple[dict[tuple, bool], set[tuple]]:
    recs = read_episodes(out / EPISODES_NAME) if (out / EPISODES_NAME).is_file() else []
    return {episode_key(r): is_success(r) for r in recs}, {episode_key(r) for r in recs if r["status"] == "error"}


def compare_live(a: str, b: str, suite: Path, runs: Path, alpha: float = 0.05, max_pairs: int = 0,
                 block: int = 10, **eval_options) -> dict:
    """Run ``a`` and ``b`` (any ``--policy`` form) block by block on ``suite``; returns the record.
    ``eval_options`` go to both policies' ``EvalConfig`` (workers, envs_per_worker, device, ...)."""
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    if a == b:
        raise ValueError(f"A and B are the same policy ({a!r}); compare two different ones")
    order = interleave_by_cell([e.key for e in load_suite(suite).episodes])
    limit = min(max_pairs, len(order)) if max_pairs else len(order)
    runs = Path(runs)
    n = 0
    while True:
        n = min(n + block, limit)
        wanted = set(order[:n])
        for side, policy in (("a", a), ("b", b)):
            run(EvalConfig(suite=suite, policy=policy, out=runs / side, **eval_options), only=wanted)
        (sa, ea), (sb, eb) = _outcomes(runs / "a"), _outcomes(runs / "b")
        keys = [k for k in order[:n] if k in sa and k in sb]
        res = sequential_test(((sa[k], sb[k]) for k in keys), alpha=alpha, max_pairs=limit, finished=n >= limit)
        used = keys[:res.pairs_used]
        record = {"a": a, "b": b, "mode": "live", "suite": str(suite), "a_dir": str(runs / "a"),
                  "b_dir": str(runs / "b"), "test": TEST, "block": block, "pairs_run": len(keys),
                  "pairs_with_errors": sum(k in ea or k in eb for k in used), **asdict(res), "summary": res.line()}
        write_json_atomic(runs / "compare.json", record)
        print(f"compare: {res.line()}")
        if res.decision != "continue":
            return record
