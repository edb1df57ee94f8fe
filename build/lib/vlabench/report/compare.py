"""Paired comparisons between runs: exact McNemar test per split and overall, for every pair.

Two runs are comparable only when they evaluated the same suite manifest (same
``suite.manifest_hash``), so episode (task, split, index, seed) keys mean the same initial
states; episodes are then paired by key and only the discordant pairs carry information.
p-values are two-sided and NOT adjusted for the number of pairs x splits tested.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any, NamedTuple

from vlabench.eval.metrics import discordant_counts, mcnemar_exact, paired_outcomes
from vlabench.report.tables import OVERALL, split_order


class RunEpisodes(NamedTuple):
    """What a comparison needs from a run."""

    name: str
    """display name of the run (policy)"""
    manifest_hash: str
    """suite manifest hash from results.json"""
    episodes: Sequence[Mapping[str, Any]]
    """episodes.jsonl records"""


@dataclass(frozen=True)
class Comparison:
    """McNemar test of run A vs run B on one scope (a split, or ``"overall"``)."""

    run_a: str
    """name of run A"""
    run_b: str
    """name of run B"""
    scope: str
    """split name, or "overall" for all episodes"""
    n: int
    """paired episodes in this scope"""
    successes_a: int
    """successes of A in this scope"""
    successes_b: int
    """successes of B in this scope"""
    b: int
    """A succeeded, B failed"""
    c: int
    """A failed, B succeeded"""
    p_value: float
    """two-sided exact McNemar p-value"""


def check_same_suite(runs: Sequence[RunEpisodes]) -> None:
    """Raise ValueError naming both runs and both hashes at the first manifest_hash mismatch."""
    if not runs:
        return
    ref = runs[0]
    for other in runs[1:]:
        if other.manifest_hash != ref.manifest_hash:
            raise ValueError(
                f"cannot compare run {ref.name!r} (suite manifest_hash {ref.manifest_hash!r}) with run "
                f"{other.name!r} (suite manifest_hash {other.manifest_hash!r}): they evaluated different "
                "suites, so their episodes are not paired; report them separately"
            )


def compare_pair(a: RunEpisodes, b: RunEpisodes) -> list[Comparison]:
    """McNemar tests of ``a`` vs ``b``: one per split (``split_order``), then ``"overall"``.

    Raises:
        ValueError: if the suites differ or the episode keys do not pair up one to one.
    """
    check_same_suite([a, b])
    try:
        pairs = paired_outcomes(a.episodes, b.episodes)
    except ValueError as e:
        raise ValueError(f"comparing run {a.name!r} with run {b.name!r}: {e}") from e
    scopes = split_order([key[1] for key, _, _ in pairs]) + [OVERALL]
    out = []
    for scope in scopes:
        sub = pairs if scope == OVERALL else [p for p in pairs if p[0][1] == scope]
        nb, nc = discordant_counts(sub)
        out.append(
            Comparison(
                run_a=a.name,
                run_b=b.name,
                scope=scope,
                n=len(sub),
                successes_a=sum(sa for _, sa, _ in sub),
                successes_b=sum(sb for _, _, sb in sub),
                b=nb,
                c=nc,
                p_value=mcnemar_exact(nb, nc),
            )
        )
    return out


def compare_runs(runs: Sequence[RunEpisodes]) -> list[Comparison]:
    """``compare_pair`` for every unordered pair of runs, in input order.

    Checks all manifest hashes first, so a mismatch is reported before any pairing work.
    """
    check_same_suite(runs)
    return [c for a, b in combinations(runs, 2) for c in compare_pair(a, b)]


def format_p(p: float) -> str:
    """p-value text: 4 significant digits, ``<1e-4`` style below 1e-4."""
    return f"{p:.4g}" if p >= 1e-4 else f"{p:.1e}"


def comparisons_markdown(comparisons: Sequence[Comparison]) -> str:
    """Markdown table of comparisons (one row per pair x scope)."""
    header = "| A | B | scope | n | A succ. | B succ. | A only (b) | B only (c) | McNemar p |\n"
    header += "|---|---|---|---:|---:|---:|---:|---:|---:|\n"
    rows = [
        f"| {c.run_a.replace('|', '/')} | {c.run_b.replace('|', '/')} | {c.scope} | {c.n} | {c.successes_a} | "
        f"{c.successes_b} | {c.b} | {c.c} | {format_p(c.p_value)} |\n"
        for c in comparisons
    ]
    return header + "".join(rows)
