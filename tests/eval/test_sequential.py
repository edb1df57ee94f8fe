"""The anytime-valid paired test (vlabench.eval.sequential) and `vlabench compare` on finished runs."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from vlabench.eval.sequential import interleave_by_cell, log_mixture, sequential_test


def test_mixture_values_by_hand():
    assert log_mixture(0, 0) == 0.0
    assert log_mixture(1, 1) == pytest.approx(0.0)  # 2 * B(2, 1) / B(1, 1) = 2 * 1/2
    for m in range(1, 12):  # all discordant pairs won by A: 2^m / (m + 1)
        assert math.exp(log_mixture(m, m)) == pytest.approx(2 ** m / (m + 1))
    assert log_mixture(3, 6) < 0  # an even split is evidence for H0
    with pytest.raises(ValueError):
        log_mixture(4, 3)


def test_decisions_directions_and_limits():
    wins = [(True, False)] * 8  # 2^8 / 9 = 28.4 >= 20 at the 8th pair, not before (2^7 / 8 = 16)
    r = sequential_test(wins + [(False, True)] * 5)
    assert (r.decision, r.pairs_used, r.discordant, r.a_wins) == ("A better", 8, 8, 8)
    r = sequential_test([(True, True), (False, False)] + [(False, True)] * 8)
    assert (r.decision, r.pairs_used) == ("B better", 10)  # concordant pairs count as pairs, not evidence
    assert sequential_test(wins[:7]).decision == "no decision"
    assert sequential_test(wins[:7], finished=False).decision == "continue"
    assert sequential_test(wins, max_pairs=5).decision == "no decision"
    assert sequential_test(wins, max_pairs=5).pairs_used == 5
    assert sequential_test(wins, alpha=0.01).decision == "no decision"  # 28.4 < 100
    with pytest.raises(ValueError, match="alpha"):
        sequential_test(wins, alpha=1.5)


def test_type_one_error_stays_below_alpha_when_peeking_after_every_pair():
    rng = np.random.default_rng(0)
    errors = 0
    sims = 2000
    for _ in range(sims):
        a, b = rng.random(200) < 0.4, rng.random(200) < 0.4
        errors += sequential_test(zip(a.tolist(), b.tolist())).decision != "no decision"
    assert errors / sims <= 0.05  # measured 0.02-0.04; benchmarks/sequential_power.py has the full grid


def test_interleave_by_cell_round_robins():
    keys = [("pick", "seen", i, 10 + i) for i in range(3)] + [("push", "seen", i, 20 + i) for i in range(2)]
    order = interleave_by_cell(list(reversed(keys)))
    assert [(k[0], k[2]) for k in order] == [("pick", 0), ("push", 0), ("pick", 1), ("push", 1), ("pick", 2)]


def test_compare_offline_on_two_finished_runs(tmp_path):
    sys.path.insert(0, str(Path(__file__).parents[1] / "report"))
    from test_report import _episodes, _write_run

    from vlabench.cli import main

    a = _write_run(tmp_path, "a", "rt1", _episodes("a"))
    b = _write_run(tmp_path, "b", "diffusion", _episodes("b"))
    out = tmp_path / "cmp.json"
    assert main(["compare", str(a), str(b), "--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert rec["a"] == "rt1" and rec["b"] == "diffusion" and rec["pairs_available"] == 40
    assert rec["fixed_n"] == {"pairs": 40, "a_only": 10, "b_only": 2, "mcnemar_p": pytest.approx(0.03857, abs=1e-4)}
    assert rec["decision"] == "no decision" and rec["discordant"] == 12  # 10 of 12: e = 2^12 B(11,3) = 4.5 < 20
    assert math.exp(rec["log_e"]) == pytest.approx(2 ** 12 * math.gamma(11) * math.gamma(3) / math.gamma(14))
    other = _write_run(tmp_path, "c", "random", _episodes("b"), manifest_hash="sha256:other")
    assert main(["compare", str(a), str(other)]) == 1  # a different suite: one line, exit 1
