"""Tests for vlabench.eval.paired: Newcombe (1998) method-10 paired interval, exact McNemar, paired_drop.

Reference intervals are published values, not outputs of this code. Tables are (a, b, c, d):
a = both succeed, b = arm 1 only, c = arm 2 only, d = both fail; the interval is for p1 - p2.
"""

from __future__ import annotations

import numpy as np
import pytest

from vlabench.eval.metrics import mcnemar_exact
from vlabench.eval.paired import newcombe_paired_ci, paired_drop

# Published method-10 intervals, each compared at the precision it was published with.
PUBLISHED = [
    # Newcombe RG, Statistics in Medicine 1998;17:2635-2650, method 10 for the example table
    # (20, 12, 2, 16); value as asserted against "Newcombe's method 10 result" in the R package
    # ratesci (P. Laud), tests/testthat/test3.R. The same file gives Newcombe's method-8 result
    # (0.0618, 0.3242) for this table -- what phi without the n/2 shrinkage produces.
    ((20, 12, 2, 16), (0.0562, 0.3292), 4),
    # Fagerland MW, Lydersen S, Laake P. Recommended tests and confidence intervals for paired
    # binomial proportions. Statistics in Medicine 2014;33:2850-2875: Bentur et al. (2009) airway
    # hyper-responsiveness data, Newcombe square-and-add (method 10) interval; as asserted in
    # ratesci tests/testthat/test3.R ("Fagerland use Newcombe's correlation-corrected 'method 10'").
    ((1, 1, 7, 12), (-0.507, -0.026), 3),
    # Fagerland, Lydersen & Laake, Statistical Analysis of Contingency Tables (CRC 2017), ch. 8:
    # Cavo et al. (2012) complete-response data, Newcombe square-and-add interval; as asserted
    # (printed to 4 decimals) in the R package contingencytables, tests/testthat/test-ch8.R.
    ((59, 6, 16, 80), (-0.1186, -0.0046), 4),
    # A 2010 paper by M.L. Tang (as labelled in ratesci tests/testthat/test3.R: "Tang(ML) RD 2010
    # example - MOVER-wilson matches"), reproduced there by MOVER-Wilson with Newcombe's correction.
    ((8, 3, 1, 2), (-0.1574, 0.4136), 4),
]

# Method-10 rows of Newcombe's (1998) table of examples, transcribed to 4 decimals in two
# unrelated public code bases (not checked here against the paper's PDF, so a secondary source).
# They cover the edge cases: empty margins (phi = 0), ad - bc in (0, n/2] (phi = 0 by the n/2
# shrinkage), negative correlation, and an upper limit of exactly 1.
NEWCOMBE_TABLE_M10 = [
    ((36, 12, 2, 0), (0.0569, 0.3404)),
    ((18, 12, 2, 18), (0.0562, 0.3290)),
    ((36, 14, 0, 0), (0.1528, 0.4167)),
    ((35, 14, 0, 1), (0.1461, 0.4175)),
    ((18, 14, 0, 18), (0.1441, 0.3963)),
    ((2, 97, 1, 0), (0.8721, 0.9854)),
    ((1, 97, 1, 1), (0.8736, 0.9850)),
    ((0, 29, 1, 0), (0.6666, 0.9882)),
    ((2, 98, 0, 0), (0.9178, 0.9945)),
    ((1, 98, 0, 1), (0.9171, 0.9916)),
    ((0, 30, 0, 0), (0.8395, 1.0)),
    ((54, 0, 0, 0), (-0.0664, 0.0664)),
    ((53, 0, 0, 1), (-0.0729, 0.0729)),
    ((30, 0, 0, 24), (-0.0358, 0.0358)),
    ((27, 0, 0, 27), (-0.0351, 0.0351)),
]


@pytest.mark.parametrize("table,expected,places", PUBLISHED)
def test_matches_published_intervals(table, expected, places) -> None:
    lo, hi = newcombe_paired_ci(*table)
    tol = 0.5 * 10.0**-places + 1e-9  # the published figure is the rounded value
    assert lo == pytest.approx(expected[0], abs=tol)
    assert hi == pytest.approx(expected[1], abs=tol)


@pytest.mark.parametrize("table,expected", NEWCOMBE_TABLE_M10)
def test_matches_newcombe_table_rows(table, expected) -> None:
    lo, hi = newcombe_paired_ci(*table)
    # 1e-4: one row (1, 97, 1, 1) reads 0.8736 where the exact value is 0.87367
    assert lo == pytest.approx(expected[0], abs=1e-4)
    assert hi == pytest.approx(expected[1], abs=1e-4)


def _all_tables(n: int):
    for a in range(n + 1):
        for b in range(n + 1 - a):
            for c in range(n + 1 - a - b):
                yield a, b, c, n - a - b - c


@pytest.mark.parametrize("n", [1, 2, 7, 12])
def test_swapping_arms_negates_and_mirrors(n: int) -> None:
    for a, b, c, d in _all_tables(n):
        lo, hi = newcombe_paired_ci(a, b, c, d)
        lo_s, hi_s = newcombe_paired_ci(a, c, b, d)
        assert lo_s == pytest.approx(-hi, abs=1e-12)
        assert hi_s == pytest.approx(-lo, abs=1e-12)


@pytest.mark.parametrize("n", [1, 2, 7, 12])
def test_interval_contains_estimate_and_lies_in_range(n: int) -> None:
    for a, b, c, d in _all_tables(n):
        lo, hi = newcombe_paired_ci(a, b, c, d)
        diff = (b - c) / n
        assert -1.0 <= lo <= diff <= hi <= 1.0, (a, b, c, d, lo, hi)


# Cell probabilities (a, b, c, d); exact coverages, from enumerating every table during development,
# are 0.9547, 0.9540 and 0.9536: the simulated 2,000-table coverage must be near nominal.
@pytest.mark.parametrize(
    "n,probs",
    [(50, (0.55, 0.25, 0.05, 0.15)), (100, (0.3, 0.1, 0.1, 0.5)), (40, (0.6, 0.2, 0.1, 0.1))],
)
def test_coverage_by_simulation(n: int, probs) -> None:
    theta = probs[1] - probs[2]
    tables = np.random.default_rng(1998).multinomial(n, probs, size=2000)
    hits = 0
    for t in tables:
        lo, hi = newcombe_paired_ci(*(int(v) for v in t))
        hits += lo <= theta <= hi
    assert 0.93 <= hits / len(tables) <= 0.97


def test_mcnemar_matches_scipy_binomtest() -> None:
    stats = pytest.importorskip("scipy.stats")
    for b in range(0, 25):
        for c in range(0, 25):
            expected = 1.0 if b + c == 0 else stats.binomtest(min(b, c), b + c, 0.5).pvalue
            assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(3, 3) == 1.0


def test_paired_drop_report() -> None:
    # twin/shifted per pair: 3 x (1, 1), 4 x (1, 0), 1 x (0, 1), 2 x (0, 0)
    twin = [True] * 3 + [True] * 4 + [False] + [False] * 2
    shifted = [True] * 3 + [False] * 4 + [True] + [False] * 2
    r = paired_drop(twin, shifted)
    assert r["n_pairs"] == 10
    assert r["twin"] == {"successes": 7, "rate": 0.7}
    assert r["shifted"] == {"successes": 4, "rate": 0.4}
    assert r["drop"] == pytest.approx(0.3)
    assert r["discordant"] == [4, 1]
    assert r["drop_ci95"] == list(newcombe_paired_ci(3, 4, 1, 2))
    assert r["mcnemar_p"] == pytest.approx(0.375)  # 2 * (1 + 5) / 2**5
    assert r["method"] == "Newcombe (1998) method 10; exact McNemar"
    # arms swapped: the drop, its interval and the discordant pairs mirror
    s = paired_drop(shifted, twin)
    assert s["drop"] == pytest.approx(-0.3)
    assert s["drop_ci95"] == pytest.approx([-r["drop_ci95"][1], -r["drop_ci95"][0]])
    assert s["discordant"] == [1, 4]


def test_paired_drop_accepts_numpy_and_ints() -> None:
    r = paired_drop(np.array([1, 1, 0, 1], dtype=bool), [1, 0, 0, 1])
    assert r["discordant"] == [1, 0] and r["twin"]["successes"] == 3


@pytest.mark.parametrize(
    "twin,shifted,match",
    [
        ([True, False], [True], "2 twin and 1 shifted"),
        ([], [], "at least one pair"),
        ([True, 2], [True, False], r"twin\[1\]"),
        ([True], [None], r"shifted\[0\]"),
    ],
)
def test_paired_drop_rejects_bad_input(twin, shifted, match) -> None:
    with pytest.raises(ValueError, match=match):
        paired_drop(twin, shifted)


@pytest.mark.parametrize("cells", [(-1, 2, 3, 4), (1, -2, 3, 4), (1, 2, -3, 4), (1, 2, 3, -4)])
def test_ci_rejects_negative_counts(cells) -> None:
    with pytest.raises(ValueError, match="non-negative"):
        newcombe_paired_ci(*cells)


def test_ci_rejects_empty_table() -> None:
    with pytest.raises(ValueError, match="at least one pair"):
        newcombe_paired_ci(0, 0, 0, 0)


def test_mcnemar_rejects_negative_counts() -> None:
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 3)
