"""``vlabench compare A B --suite S``: both policies run block by block on the same episodes until the
anytime-valid test decides; the evaluations are ordinary, resumable eval runs."""

from __future__ import annotations

import json

import pytest
from eval_suites import write_suite

from vlabench.eval.compare_live import compare_live
from vlabench.eval.results import read_episodes
from vlabench.eval.sequential import interleave_by_cell
from vlabench.report.sequential import CompareConfig
from vlabench.report.sequential import run as compare
from vlabench.suite import load_suite


def test_live_compare_stops_at_the_decision_and_resumes(tmp_path):
    suite = write_suite(tmp_path / "s.toml", {"pick": ["seen"], "place": ["seen"]}, per_cell=10, max_steps=60)
    rec = compare(CompareConfig("expert", "noop", suite=suite, block=4, runs=tmp_path / "c",
                                out=tmp_path / "rec.json"))
    # The expert solves what noop never does: 8 straight wins of A cross 1/alpha (2^8 / 9 > 20), 7 do not.
    assert rec["decision"] == "A better" and rec["pairs_used"] == 8 and rec["a_wins"] == rec["discordant"] == 8
    assert rec["pairs_run"] == 8 and rec["pairs_with_errors"] == 0
    order = interleave_by_cell([e.key for e in load_suite(suite).episodes])
    for side in ("a", "b"):
        keys = [(r["task"], r["split"], r["index"], r["seed"]) for r in read_episodes(tmp_path / "c" / side / "episodes.jsonl")]
        assert sorted(keys) == sorted(order[:8])  # two blocks of 4 pairs, round-robin over the two cells
    assert json.loads((tmp_path / "rec.json").read_text())["summary"] == rec["summary"]
    before = (tmp_path / "c" / "a" / "episodes.jsonl").read_text()
    again = compare_live("expert", "noop", suite, tmp_path / "c", block=4)
    assert (tmp_path / "c" / "a" / "episodes.jsonl").read_text() == before and again["decision"] == "A better"
    # The offline mode on the two runs it left agrees.
    off = compare(CompareConfig(str(tmp_path / "c" / "a"), str(tmp_path / "c" / "b")))
    assert (off["decision"], off["pairs_used"]) == ("A better", 8)


def test_live_compare_without_a_decision_and_bad_input(tmp_path):
    suite = write_suite(tmp_path / "s.toml", {"pick": ["seen"]}, per_cell=3, max_steps=5)
    rec = compare_live("noop", "random", suite, tmp_path / "c", block=2)
    assert rec["decision"] == "no decision" and rec["pairs_used"] == 3 == rec["pairs_run"]
    with pytest.raises(ValueError, match="same policy"):
        compare_live("noop", "noop", suite, tmp_path / "d")
    with pytest.raises(ValueError, match="block must be >= 1"):
        compare_live("noop", "random", suite, tmp_path / "d", block=0)
