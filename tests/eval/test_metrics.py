"""Tests for vlabench.eval.metrics: Wilson intervals, exact McNemar, summaries and pairing."""

from __future__ import annotations

import math

import pytest

from vlabench.eval.metrics import (
    discordant_counts,
    mcnemar_exact,
    paired_outcomes,
    summarize,
    wilson_interval,
)


# Reference values computed from the closed form
# (p + z^2/2n)/(1 + z^2/n) -+ z/(1 + z^2/n) * sqrt(p(1-p)/n + z^2/4n^2), z = 1.959964.
@pytest.mark.parametrize(
    "k,n,lo,hi",
    [
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
        (5, 10, 0.2366, 0.7634),
        (81, 263, 0.2553, 0.3662),
    ],
)
def test_wilson_known_values(k: int, n: int, lo: float, hi: float) -> None:
    got_lo, got_hi = wilson_interval(k, n)
    assert got_lo == pytest.approx(lo, abs=1e-4)
    assert got_hi == pytest.approx(hi, abs=1e-4)


@pytest.mark.parametrize("n", [1, 3, 10, 263, 10_000])
def test_wilson_edges_are_exact(n: int) -> None:
    assert wilson_interval(0, n)[0] == 0.0
    assert wilson_interval(n, n)[1] == 1.0
    lo, hi = wilson_interval(n // 2, n)
    assert 0.0 <= lo <= (n // 2) / n <= hi <= 1.0


def test_wilson_empty_and_invalid() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="successes=11"):
        wilson_interval(11, 10)
    with pytest.raises(ValueError):
        wilson_interval(-1, 10)


def test_wilson_wider_at_higher_confidence() -> None:
    lo95, hi95 = wilson_interval(30, 100)
    lo99, hi99 = wilson_interval(30, 100, z=2.5758293035489)
    assert lo99 < lo95 and hi99 > hi95


@pytest.mark.parametrize(
    "b,c,p",
    [
        (10, 2, 0.03857421875),  # 2 * (C(12,0)+C(12,1)+C(12,2)) / 2^12 = 158/4096
        (2, 10, 0.03857421875),
        (0, 3, 0.25),
        (1, 9, 0.021484375),  # 2 * 11/1024
        (0, 0, 1.0),
        (7, 7, 1.0),
        (3, 4, 1.0),  # 2 * P(X<=3) > 1 is clipped
    ],
)
def test_mcnemar_known_table(b: int, c: int, p: float) -> None:
    assert mcnemar_exact(b, c) == pytest.approx(p, rel=1e-12)


def test_mcnemar_matches_scipy_binomtest() -> None:
    stats = pytest.importorskip("scipy.stats")
    for b, c in [(10, 2), (25, 40), (0, 17), (120, 95)]:
        ref = stats.binomtest(min(b, c), b + c, 0.5, alternative="two-sided").pvalue
        assert mcnemar_exact(b, c) == pytest.approx(ref, rel=1e-9)


def test_mcnemar_large_counts_do_not_underflow() -> None:
    p = mcnemar_exact(3000, 2000)
    assert 0.0 < p < 1e-40 and math.isfinite(p)
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 3)


def _ep(task: str, split: str, index: int, success: bool, status: str = "ok", seed: int | None = None) -> dict:
    return {
        "task": task,
        "split": split,
        "index": index,
        "seed": 1000 + index if seed is None else seed,
        "instruction": "do it",
        "status": status,
        "success": success,
        "success_step": 3 if success else None,
        "steps": 10,
        "error": "boom" if status == "error" else None,
    }


def test_summarize_counts_errors_as_failures() -> None:
    eps = [
        _ep("pick", "seen", 0, True),
        _ep("pick", "seen", 1, True),
        _ep("pick", "seen", 2, False),
        # an error episode that somehow claims success must still count as a failure
        _ep("pick", "seen", 3, True, status="error"),
        _ep("place", "unseen_object", 0, True),
        _ep("place", "unseen_object", 1, False, status="error"),
        _ep("place", "seen", 0, False),
    ]
    s = summarize(eps)
    assert [(c["task"], c["split"]) for c in s["cells"]] == [
        ("pick", "seen"),
        ("place", "seen"),
        ("place", "unseen_object"),
    ]
    cells = {(c["task"], c["split"]): c for c in s["cells"]}
    pick = cells["pick", "seen"]
    assert (pick["n"], pick["successes"], pick["errors"]) == (4, 2, 1)
    assert pick["rate"] == 0.5
    assert pick["ci95"] == pytest.approx(list(wilson_interval(2, 4)))
    assert list(s["splits"]) == ["seen", "unseen_object"]
    assert (s["splits"]["seen"]["n"], s["splits"]["seen"]["successes"], s["splits"]["seen"]["errors"]) == (5, 2, 1)
    uo = s["splits"]["unseen_object"]
    assert (uo["n"], uo["successes"], uo["errors"], uo["rate"]) == (2, 1, 1, 0.5)
    o = s["overall"]
    assert (o["n"], o["successes"], o["errors"]) == (7, 3, 2)
    assert o["rate"] == pytest.approx(3 / 7)
    assert set(o) == {"n", "successes", "errors", "rate", "ci95"}
    assert set(pick) == {"task", "split", "n", "successes", "errors", "rate", "ci95"}


def test_summarize_cells_sorted_and_empty() -> None:
    eps = [_ep("b", "seen", 0, True), _ep("a", "unseen", 0, False), _ep("a", "seen", 0, True)]
    keys = [(c["task"], c["split"]) for c in summarize(eps)["cells"]]
    assert keys == [("a", "seen"), ("a", "unseen"), ("b", "seen")]
    empty = summarize([])
    assert empty["cells"] == [] and empty["splits"] == {}
    assert empty["overall"] == {"n": 0, "successes": 0, "errors": 0, "rate": 0.0, "ci95": [0.0, 1.0]}


def test_summarize_rejects_bad_records() -> None:
    with pytest.raises(ValueError, match="status"):
        summarize([_ep("pick", "seen", 0, True, status="crashed")])
    bad = _ep("pick", "seen", 0, True)
    del bad["seed"]
    with pytest.raises(ValueError, match="seed"):
        summarize([bad])


def test_paired_outcomes_matches_by_key_not_order() -> None:
    a = [_ep("pick", "seen", 0, True), _ep("pick", "seen", 1, False), _ep("pick", "unseen", 0, True)]
    b = [_ep("pick", "unseen", 0, False), _ep("pick", "seen", 1, True), _ep("pick", "seen", 0, True, status="error")]
    pairs = paired_outcomes(a, b)
    assert pairs == [
        (("pick", "seen", 0, 1000), True, False),
        (("pick", "seen", 1, 1001), False, True),
        (("pick", "unseen", 0, 1000), True, False),
    ]
    assert discordant_counts(pairs) == (2, 1)


def test_paired_outcomes_rejects_mismatched_keys() -> None:
    a = [_ep("pick", "seen", 0, True), _ep("pick", "seen", 1, False)]
    with pytest.raises(ValueError, match="1 only in A"):
        paired_outcomes(a, a[:1])
    # same index, different seed: not the same episode
    with pytest.raises(ValueError, match="differ"):
        paired_outcomes(a, [a[0], _ep("pick", "seen", 1, False, seed=7)])
    with pytest.raises(ValueError, match="duplicate"):
        paired_outcomes(a + a[:1], a)
