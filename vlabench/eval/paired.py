"""Paired difference of two success rates: Newcombe's method-10 interval and exact McNemar test.

Each pair is one benchmark episode run in two arms -- the "twin" arm (benign, the shift undone)
and the "shifted" arm (e.g. an unseen background) -- so the two success rates are correlated and
an interval for independent proportions would be too wide (or too narrow when the correlation is
negative). Cell naming of the paired 2x2 table, arm 1 vs arm 2:

* ``a``: both succeed, ``b``: arm 1 succeeds and arm 2 fails,
* ``c``: arm 1 fails and arm 2 succeeds, ``d``: both fail.

Reference: Newcombe RG. Improved confidence intervals for the difference between binomial
proportions based on paired data. Statistics in Medicine 1998;17:2635-2650 (method 10).

Pure Python (``math`` only), like :mod:`vlabench.eval.metrics`, whose Wilson interval and exact
McNemar test are reused here.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any

from vlabench.eval.metrics import Z95, mcnemar_exact, wilson_interval

METHOD = "Newcombe (1998) method 10; exact McNemar"


def newcombe_paired_ci(a: int, b: int, c: int, d: int, z: float = Z95) -> tuple[float, float]:
    """Confidence interval for p1 - p2 from a paired 2x2 table, Newcombe (1998) method 10.

    p1 = (a + b) / n, p2 = (a + c) / n, difference (b - c) / n. With (l1, u1) and (l2, u2) the
    Wilson score intervals of p1 and p2 (no continuity correction), the interval is

        (diff - delta, diff + epsilon), clipped to [-1, 1], where
        delta   = sqrt((p1 - l1)^2 - 2 phi (p1 - l1)(u2 - p2) + (u2 - p2)^2)
        epsilon = sqrt((u1 - p1)^2 - 2 phi (u1 - p1)(p2 - l2) + (p2 - l2)^2)

    and phi estimates the correlation of the two marginal proportions as
    C / sqrt((a+b)(c+d)(a+c)(b+d)) with C = ad - bc - n/2 if ad - bc > n/2, C = 0 if
    0 <= ad - bc <= n/2 and C = ad - bc if ad - bc < 0 (a positive correlation is shrunk by n/2
    towards zero, a negative one is left alone); phi = 0 when any margin is empty. This is the
    definition that reproduces the method-10 values published for Newcombe's examples, e.g.
    (a, b, c, d) = (20, 12, 2, 16) -> (0.0562, 0.3292); without the n/2 shrinkage one gets
    (0.0618, 0.3242) instead.

    Args:
        a, b, c, d: cell counts (non-negative integers, n = a + b + c + d > 0).
        z: normal quantile; the default gives a two-sided 95% interval.

    Returns:
        (lo, hi), with -1 <= lo <= (b - c) / n <= hi <= 1.
    """
    a, b, c, d = (operator.index(v) for v in (a, b, c, d))
    if min(a, b, c, d) < 0:
        raise ValueError(f"newcombe_paired_ci needs non-negative counts, got a={a}, b={b}, c={c}, d={d}")
    n = a + b + c + d
    if n == 0:
        raise ValueError("newcombe_paired_ci needs at least one pair (a + b + c + d == 0)")
    p1, p2 = (a + b) / n, (a + c) / n
    diff = (b - c) / n
    l1, u1 = wilson_interval(a + b, n, z)
    l2, u2 = wilson_interval(a + c, n, z)

    margins = (a + b) * (c + d) * (a + c) * (b + d)
    num = a * d - b * c
    if num > 0:
        num = max(num - n / 2, 0.0)
    phi = num / math.sqrt(margins) if margins > 0 else 0.0

    # |phi| <= 1 keeps both radicands >= (x - y)^2 >= 0; max() only absorbs rounding
    dl1, du1, dl2, du2 = p1 - l1, u1 - p1, p2 - l2, u2 - p2
    delta = math.sqrt(max(dl1 * dl1 - 2 * phi * dl1 * du2 + du2 * du2, 0.0))
    epsilon = math.sqrt(max(du1 * du1 - 2 * phi * du1 * dl2 + dl2 * dl2, 0.0))
    return max(-1.0, diff - delta), min(1.0, diff + epsilon)


def _outcomes(values: Sequence[Any], name: str) -> list[bool]:
    out = []
    for i, v in enumerate(values):
        if v not in (0, 1):  # True/False, 0/1 and numpy bools/ints compare equal to these
            raise ValueError(f"{name}[{i}] = {v!r} is not a success flag (bool or 0/1)")
        out.append(bool(v))
    return out


def paired_drop(twin: Sequence[Any], shifted: Sequence[Any]) -> dict[str, Any]:
    """Success-rate drop from the twin arm to the shifted arm over paired episodes.

    ``twin[i]`` and ``shifted[i]`` are the successes of pair i in the two arms. The drop is
    twin_rate - shifted_rate, with a 95% interval by Newcombe (1998) method 10 on the paired table
    with arm 1 = twin and arm 2 = shifted, and the exact McNemar p-value on the discordant pairs
    (b = twin succeeds & shifted fails, c = the reverse).

    Returns:
        {"n_pairs", "twin": {"successes", "rate"}, "shifted": {"successes", "rate"}, "drop",
        "drop_ci95": [lo, hi], "discordant": [b, c], "mcnemar_p", "method"}.
    """
    t, s = _outcomes(twin, "twin"), _outcomes(shifted, "shifted")
    if len(t) != len(s):
        raise ValueError(
            f"paired_drop needs one shifted outcome per twin outcome, got {len(t)} twin and {len(s)} shifted"
        )
    if not t:
        raise ValueError("paired_drop needs at least one pair, got empty inputs")
    n = len(t)
    a = sum(x and y for x, y in zip(t, s))
    b = sum(x and not y for x, y in zip(t, s))
    c = sum(y and not x for x, y in zip(t, s))
    d = n - a - b - c
    lo, hi = newcombe_paired_ci(a, b, c, d)
    return {
        "n_pairs": n,
        "twin": {"successes": a + b, "rate": (a + b) / n},
        "shifted": {"successes": a + c, "rate": (a + c) / n},
        "drop": (b - c) / n,
        "drop_ci95": [lo, hi],
        "discordant": [b, c],
        "mcnemar_p": mcnemar_exact(b, c),
        "method": METHOD,
    }


def twin_summary(records: Sequence[dict]) -> dict[str, Any]:
    """The paired generalization gap of an ``eval --twins`` run: per split and per cell, :func:`paired_drop`
    over the episodes whose twin has finished too (an error counts as a failure in either arm, as in
    every rate of vlabench). ``{"splits": {split: drop}, "cells": [{"task", "split", **drop}]}``; a pair
    with one arm still to run is left out until it finishes."""
    from vlabench.eval.metrics import episode_key, is_success

    twins = {episode_key(r)[:4]: is_success(r) for r in records if r.get("twin")}
    pairs: dict[tuple[str, str], list[tuple[bool, bool]]] = {}
    for r in records:
        k = episode_key(r)
        if not r.get("twin") and k in twins:
            pairs.setdefault((k[0], k[1]), []).append((twins[k], is_success(r)))
    by_split: dict[str, list[tuple[bool, bool]]] = {}
    cells = []
    for (task, split), ps in sorted(pairs.items()):
        by_split.setdefault(split, []).extend(ps)
        cells.append({"task": task, "split": split, **paired_drop(*zip(*ps))})
    return {"splits": {sp: paired_drop(*zip(*ps)) for sp, ps in sorted(by_split.items())}, "cells": cells}
