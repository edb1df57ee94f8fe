"""``vlabench eval --twins``: every held-out episode runs with its paired twin, results.json gives the paired
drop, and the manifest covers the twins."""

from __future__ import annotations

import json

import pytest
from eval_suites import write_suite

from vlabench.eval.harness import EvalConfig, run
from vlabench.eval.results import ResumeError, read_episodes
from vlabench.suite import load_suite


def test_eval_twins_records_both_arms_and_the_paired_drop(tmp_path):
    suite = write_suite(tmp_path / "s.toml", {"pick": ["seen", "unseen_backgrounds", "paraphrase"]}, per_cell=2,
                        max_steps=60)
    plain, twinned = load_suite(suite), load_suite(suite).with_twins()
    assert len(twinned.episodes) == 2 + 2 * 4 and twinned.manifest_hash != plain.manifest_hash
    assert [e.twin for e in twinned.episodes[2:6]] == [False, True, False, True]
    res = run(EvalConfig(suite=suite, policy="expert", twins=True, out=tmp_path / "t", workers=2, envs_per_worker=2))
    recs = read_episodes(tmp_path / "t" / "episodes.jsonl")
    assert len(recs) == 10 and sum(bool(r.get("twin")) for r in recs) == 4
    assert res["overall"]["n"] == 6 and all(c["n"] == 2 for c in res["cells"])  # the twins are not in the rates
    by = {(r["split"], r["index"], bool(r.get("twin"))): r for r in recs}
    for i in range(2):
        assert by["paraphrase", i, True]["instruction"] != by["paraphrase", i, False]["instruction"]
        assert by["unseen_backgrounds", i, True]["instruction"] == by["unseen_backgrounds", i, False]["instruction"]
    gap = res["twins"]["splits"]
    assert sorted(gap) == ["paraphrase", "unseen_backgrounds"]
    for split, g in gap.items():
        t = sum(by[split, i, True]["success"] for i in range(2))
        s = sum(by[split, i, False]["success"] for i in range(2))
        assert g["n_pairs"] == 2 and (g["twin"]["successes"], g["shifted"]["successes"]) == (t, s)
        assert g["drop"] == pytest.approx((t - s) / 2) and g["drop_ci95"][0] <= g["drop"] <= g["drop_ci95"][1]
    # The expert reads the state, not the words: a paraphrase twin changes nothing it acts on.
    assert gap["paraphrase"]["discordant"] == [0, 0] and res["overall"]["successes"] >= 4
    assert [c["split"] for c in res["twins"]["cells"]] == ["paraphrase", "unseen_backgrounds"]
    # Same outcomes with one worker; resume finds everything done; a plain run cannot resume into it.
    one = run(EvalConfig(suite=suite, policy="expert", twins=True, out=tmp_path / "one"))
    strip = lambda rs: sorted((r["split"], r["index"], bool(r.get("twin")), r["success"], r["steps"]) for r in rs)  # noqa: E731
    assert strip(read_episodes(tmp_path / "one" / "episodes.jsonl")) == strip(recs)
    assert one["twins"] == res["twins"]
    before = (tmp_path / "t" / "episodes.jsonl").read_text()
    again = run(EvalConfig(suite=suite, policy="expert", twins=True, out=tmp_path / "t"))
    assert (tmp_path / "t" / "episodes.jsonl").read_text() == before and again["twins"] == res["twins"]
    with pytest.raises(ResumeError, match="suite manifest"):
        run(EvalConfig(suite=suite, policy="expert", out=tmp_path / "t"))
    assert json.loads((tmp_path / "t" / "results.json").read_text())["complete"] is True


def test_report_shows_the_generalization_gap(tmp_path):
    from vlabench.report.report import ReportConfig
    from vlabench.report.report import run as report

    suite = write_suite(tmp_path / "s.toml", {"place": ["seen", "distractors", "unseen_colors"]}, per_cell=2,
                        max_steps=8)
    for policy in ("noop", "random"):
        run(EvalConfig(suite=suite, policy=policy, twins=True, out=tmp_path / policy))
    out = report(ReportConfig(runs=[str(tmp_path / "noop"), str(tmp_path / "random")],
                              out=str(tmp_path / "r" / "REPORT.md")))
    text = out.read_text()
    section = text.split("## Generalization gap (paired twins)")[1].split("## Per-task")[0]
    rows = [line for line in section.splitlines() if line.startswith("| noop") or line.startswith("| random")]
    assert len(rows) == 2 and all("n=2" in r for r in rows) and "distractors" in section
    assert "+0.0 [" in rows[0]  # noop fails both arms of every pair: no drop
    assert (tmp_path / "r" / "REPORT_gap.png").stat().st_size > 1000


def test_smoke_suite_with_twins(tmp_path):
    from pathlib import Path

    smoke = Path(__file__).resolve().parents[2] / "envs" / "smoke.toml"
    res = run(EvalConfig(suite=smoke, policy="expert", twins=True, out=tmp_path / "e", workers=2))
    gap = res["twins"]["splits"]
    assert sorted(gap) == ["distractors", "paraphrase", "unseen_backgrounds", "unseen_colors"]
    assert all(g["n_pairs"] == 2 for g in gap.values()) and res["overall"]["n"] == 16
    # The scripted expert reads the state: undoing a visual or verbal shift changes nothing it does.
    assert all(g["discordant"] == [0, 0] for g in gap.values())
