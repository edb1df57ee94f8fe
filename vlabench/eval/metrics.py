"""Success-rate statistics: Wilson intervals, exact McNemar tests and per-cell summaries.

Everything here is pure Python (``math`` only) so that results files can be summarized and
compared without numpy/scipy.

Conventions (shared with the results-file contract):

* An episode counts as a success only if ``status == "ok"`` and ``success`` is true. An error
  episode (``status == "error"``) counts in ``n`` as a failure -- the conservative choice, so a
  policy that crashes cannot look better than one that fails -- and is also counted in ``errors``.
* ``rate`` of an empty group is 0.0 with the uninformative interval (0, 1).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

#: two-sided 95% normal quantile, Phi^-1(0.975)
Z95 = 1.959963984540054

#: (task, split, index, seed): identifies an evaluation episode across runs of the same suite
EpisodeKey = tuple[str, str, int, int]

_REQUIRED_KEYS = ("task", "split", "index", "seed", "status", "success")
_STATUSES = ("ok", "error")


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion.

    Args:
        successes: number of successes k, 0 <= k <= n.
        n: number of trials.
        z: normal quantile; the default gives a two-sided 95% interval.

    Returns:
        (lo, hi) in [0, 1]. ``n == 0`` gives (0.0, 1.0). At the edges the bounds are exact:
        ``lo == 0.0`` when k == 0 and ``hi == 1.0`` when k == n (the closed form is off by
        rounding there, e.g. 0.9999999999999999).
    """
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"wilson_interval needs 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = (z / denom) * math.sqrt(p * (1.0 - p) / n + z2 / (4 * n * n))
    lo = 0.0 if successes == 0 else max(0.0, center - half)
    hi = 1.0 if successes == n else min(1.0, center + half)
    return lo, hi


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar test (binomial test on the discordant pairs).

    Args:
        b: pairs where A succeeded and B failed.
        c: pairs where A failed and B succeeded.

    Returns:
        p = min(1, 2 * P(X <= min(b, c))) with X ~ Bin(b + c, 1/2); 1.0 when b + c == 0.
    """
    if b < 0 or c < 0:
        raise ValueError(f"mcnemar_exact needs non-negative counts, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    # exact integer tail and one int/int division (correctly rounded by Python): no float
    # overflow of comb() or 2**n for large n
    tail = sum(math.comb(n, i) for i in range(k + 1))
    return min(1.0, (2 * tail) / 2**n)


def _validate(ep: Mapping[str, Any], where: str) -> None:
    missing = [k for k in _REQUIRED_KEYS if k not in ep]
    if missing:
        raise ValueError(f"episode {where} lacks key(s) {missing}; required: {list(_REQUIRED_KEYS)}")
    if ep["status"] not in _STATUSES:
        raise ValueError(f"episode {where} has status {ep['status']!r}; valid: {list(_STATUSES)}")


def is_success(ep: Mapping[str, Any]) -> bool:
    """Whether an episode record counts as a success (errors never do)."""
    return ep["status"] == "ok" and bool(ep["success"])


def episode_key(ep: Mapping[str, Any]) -> EpisodeKey:
    """The (task, split, index, seed) key of an episode record; a paired twin's (``"twin": true``, from
    ``eval --twins``) has ``"twin"`` appended."""
    key = (str(ep["task"]), str(ep["split"]), int(ep["index"]), int(ep["seed"]))
    return (*key, "twin") if ep.get("twin") else key


def _stats(n: int, successes: int, errors: int) -> dict[str, Any]:
    lo, hi = wilson_interval(successes, n)
    return {
        "n": n,
        "successes": successes,
        "errors": errors,
        "rate": successes / n if n else 0.0,
        "ci95": [lo, hi],
    }


def summarize(episodes: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Aggregate episode records into the results-file summary.

    Args:
        episodes: records as in episodes.jsonl (task, split, index, seed, status, success, ...); paired
            twins (``"twin": true``) are left out.

    Returns:
        ``{"cells": [...], "splits": {...}, "overall": {...}}`` where each cell is
        ``{"task", "split", "n", "successes", "errors", "rate", "ci95": [lo, hi]}`` sorted by
        (task, split), ``splits`` maps each split (sorted) to the same stats without task/split,
        and ``overall`` pools every episode.
    """
    counts: dict[tuple[str, str], list[int]] = {}
    for i, ep in enumerate(episodes):
        _validate(ep, f"#{i}")
        if ep.get("twin"):  # the benign arm of ``eval --twins``: summarized by vlabench.eval.paired
            continue
        c = counts.setdefault((str(ep["task"]), str(ep["split"])), [0, 0, 0])
        c[0] += 1
        c[1] += int(is_success(ep))
        c[2] += int(ep["status"] == "error")

    cells = []
    split_counts: dict[str, list[int]] = {}
    total = [0, 0, 0]
    for (task, split), (n, s, e) in sorted(counts.items()):
        cells.append({"task": task, "split": split, **_stats(n, s, e)})
        sc = split_counts.setdefault(split, [0, 0, 0])
        for acc in (sc, total):
            acc[0] += n
            acc[1] += s
            acc[2] += e
    return {
        "cells": cells,
        "splits": {sp: _stats(*split_counts[sp]) for sp in sorted(split_counts)},
        "overall": _stats(*total),
    }


def _index(episodes: Iterable[Mapping[str, Any]], label: str) -> dict[EpisodeKey, bool]:
    out: dict[EpisodeKey, bool] = {}
    for i, ep in enumerate(episodes):
        _validate(ep, f"#{i} of {label}")
        if ep.get("twin"):
            continue
        key = episode_key(ep)
        if key in out:
            raise ValueError(f"duplicate episode {key} (task, split, index, seed) in {label}")
        out[key] = is_success(ep)
    return out


def paired_outcomes(
    episodes_a: Iterable[Mapping[str, Any]],
    episodes_b: Iterable[Mapping[str, Any]],
) -> list[tuple[EpisodeKey, bool, bool]]:
    """Pair two runs' episodes by (task, split, index, seed).

    Returns:
        ``[(key, success_a, success_b), ...]`` sorted by key.

    Raises:
        ValueError: if either run repeats a key, or the two key sets differ (the message gives
            how many keys each side lacks and a few examples).
    """
    a = _index(episodes_a, "run A")
    b = _index(episodes_b, "run B")
    if a.keys() != b.keys():
        only_a = sorted(a.keys() - b.keys())
        only_b = sorted(b.keys() - a.keys())
        raise ValueError(
            "cannot pair runs: episode keys (task, split, index, seed) differ; "
            f"{len(only_a)} only in A (e.g. {only_a[:3]}), {len(only_b)} only in B (e.g. {only_b[:3]})"
        )
    return [(k, a[k], b[k]) for k in sorted(a)]


def discordant_counts(pairs: Iterable[tuple[EpisodeKey, bool, bool]]) -> tuple[int, int]:
    """(b, c) for McNemar: b = A success & B fail, c = A fail & B success."""
    b = c = 0
    for _, sa, sb in pairs:
        b += int(sa and not sb)
        c += int(sb and not sa)
    return b, c
