"""End-to-end tests of vlabench.report: fake results directories -> REPORT.md, CSVs, PNGs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from vlabench.eval.metrics import summarize
from vlabench.report.report import ReportConfig, run
from vlabench.report.tables import format_cell

# Per (task, split): counts of (both succeed, only A, only B, neither), 10 episodes each.
# A: 8, 6, 5, 3 successes -> seen 14/20, unseen_object 8/20, overall 22/40.
# B: 5, 4, 2, 3 successes -> seen  9/20, unseen_object 5/20, overall 14/40.
# Discordant pairs: seen b=6 c=1 (p=0.125), unseen_object b=4 c=1 (p=0.375), overall b=10 c=2 (p=0.03857).
CELLS = {
    ("pick", "seen"): (4, 4, 1, 1),
    ("place", "seen"): (4, 2, 0, 4),
    ("pick", "unseen_object"): (2, 3, 0, 5),
    ("place", "unseen_object"): (2, 1, 1, 6),
}
HASH = "sha256:aaaa1111"


def _episodes(which: str, error_first_neither: bool = False) -> list[dict]:
    eps = []
    for (task, split), (both, a_only, b_only, neither) in CELLS.items():
        outcomes = [(True, True)] * both + [(True, False)] * a_only + [(False, True)] * b_only
        outcomes += [(False, False)] * neither
        for i, (sa, sb) in enumerate(outcomes):
            ok = sa if which == "a" else sb
            # A's first "neither" episode in (pick, seen) crashed: a failure that is also an error
            err = error_first_neither and (task, split) == ("pick", "seen") and i == both + a_only + b_only
            eps.append({
                "task": task, "split": split, "index": i, "seed": 5000 + 17 * i + len(split),
                "instruction": f"{task} the block", "status": "error" if err else "ok",
                "success": bool(ok) and not err, "success_step": 12 if ok and not err else None,
                "steps": 40, "error": "RuntimeError: boom" if err else None,
            })
    return eps


def _write_run(root: Path, dirname: str, policy: str, episodes: list[dict], manifest_hash: str = HASH) -> Path:
    d = root / dirname
    d.mkdir(parents=True)
    summ = summarize(episodes)
    results = {
        "schema_version": 1, "vlabench_version": "0.1.0", "git_sha": "deadbeef", "created": "2025-01-01T00:00:00Z",
        "suite": {"name": "toy", "path": "envs/toy.toml", "manifest_hash": manifest_hash, "n_episodes": len(episodes)},
        "policy": {"name": policy, "checkpoint": None, "checkpoint_hash": None},
        "renderer": "tiny", "device": "cpu", "torch_version": "2.14.1", "pybullet_version": "3.2.7",
        **summ,
    }
    (d / "results.json").write_text(json.dumps(results))
    (d / "episodes.jsonl").write_text("".join(json.dumps(e) + "\n" for e in episodes))
    return d


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[Path, Path]:
    a = _write_run(tmp_path / "results", "rt1_run", "rt1", _episodes("a", error_first_neither=True))
    b = _write_run(tmp_path / "results", "diffusion_run", "diffusion", _episodes("b"))
    return a, b


def test_report_two_runs(tmp_path: Path, two_runs: tuple[Path, Path]) -> None:
    out = tmp_path / "out" / "REPORT.md"
    assert run(ReportConfig(runs=list(two_runs), out=out)) == out
    files = sorted(p.name for p in out.parent.iterdir())
    assert files == sorted([
        "REPORT.md", "REPORT_headline.csv", "REPORT_rt1.csv", "REPORT_diffusion.csv",
        "REPORT_seen.png", "REPORT_unseen_object.png",
    ])  # and no leftover temp files
    for png in ("REPORT_seen.png", "REPORT_unseen_object.png"):
        assert (out.parent / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    md = out.read_text()
    # headline rates with Wilson 95% bounds (closed-form values), n, and A's error episode
    assert "55.0% ± [39.8, 69.3] (n=40, 1 err)" in md  # A overall 22/40
    assert "35.0% ± [22.1, 50.5] (n=40)" in md  # B overall 14/40
    assert "70.0% ± [48.1, 85.5] (n=20, 1 err)" in md  # A seen 14/20
    assert "25.0% ± [11.2, 46.9] (n=20)" in md  # B unseen_object 5/20
    assert "80.0% ± [49.0, 94.3] (n=10, 1 err)" in md  # A pick/seen 8/10
    # McNemar rows: overall b=10, c=2 -> p = 0.03857; seen 6 vs 1 -> 0.125; unseen_object 4 vs 1 -> 0.375
    assert "| rt1 | diffusion | overall | 40 | 22 | 14 | 10 | 2 | 0.03857 |" in md
    assert "| rt1 | diffusion | seen | 20 | 14 | 9 | 6 | 1 | 0.125 |" in md
    assert "| rt1 | diffusion | unseen_object | 20 | 8 | 5 | 4 | 1 | 0.375 |" in md
    assert HASH in md and "![split seen](REPORT_seen.png)" in md

    with open(out.parent / "REPORT_headline.csv", newline="") as f:
        rows = {r["policy"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"rt1", "diffusion"}
    assert float(rows["rt1"]["overall_rate"]) == pytest.approx(0.55)
    assert (rows["rt1"]["overall_n"], rows["rt1"]["overall_errors"]) == ("40", "1")
    assert float(rows["diffusion"]["unseen_object_rate"]) == pytest.approx(0.25)
    assert float(rows["diffusion"]["seen_ci_lo"]) == pytest.approx(0.258, abs=1e-3)  # 9/20

    with open(out.parent / "REPORT_rt1.csv", newline="") as f:
        per_task = {r["task"]: r for r in csv.DictReader(f)}
    assert set(per_task) == {"pick", "place", "all tasks"}
    assert float(per_task["place"]["unseen_object_rate"]) == pytest.approx(0.3)
    assert per_task["pick"]["seen_successes"] == "8"


def test_report_refuses_different_manifest(tmp_path: Path, two_runs: tuple[Path, Path]) -> None:
    other = _write_run(tmp_path / "results", "rt2_run", "rt2", _episodes("b"), manifest_hash="sha256:bbbb2222")
    out = tmp_path / "out" / "REPORT.md"
    with pytest.raises(ValueError) as exc:
        run(ReportConfig(runs=[*two_runs, other], out=out))
    msg = str(exc.value)
    for needle in ("'rt1'", "'rt2'", HASH, "sha256:bbbb2222"):
        assert needle in msg
    assert not out.parent.exists()  # refused before writing anything


def test_single_run_and_duplicate_names(tmp_path: Path) -> None:
    a = _write_run(tmp_path, "seed0", "rt1", _episodes("a"))
    out = run(ReportConfig(runs=[a], out=tmp_path / "one" / "R.md"))
    md = out.read_text()
    assert "McNemar" not in md and format_cell(summarize(_episodes("a"))["overall"]) in md
    assert (out.parent / "R_unseen_object.png").is_file()

    b = _write_run(tmp_path, "seed1", "rt1", _episodes("b"))
    md = run(ReportConfig(runs=[a, b], out=tmp_path / "two" / "R.md")).read_text()
    assert "| rt1 (seed0) | rt1 (seed1) | overall | 40 | 22 | 14 | 10 | 2 | 0.03857 |" in md
    assert (tmp_path / "two" / "R_rt1_seed0.csv").is_file()


def test_clear_errors_for_bad_run_dirs(tmp_path: Path) -> None:
    empty = tmp_path / "empty_run"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="results.json"):
        run(ReportConfig(runs=[empty], out=tmp_path / "R.md"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run(ReportConfig(runs=[tmp_path / "nope"], out=tmp_path / "R.md"))
    with pytest.raises(ValueError, match="at least one"):
        run(ReportConfig(runs=[], out=tmp_path / "R.md"))

    # results.json whose counts disagree with episodes.jsonl is caught, not reported
    d = _write_run(tmp_path, "stale", "rt1", _episodes("a"))
    res = json.loads((d / "results.json").read_text())
    res["overall"]["successes"] += 1
    (d / "results.json").write_text(json.dumps(res))
    with pytest.raises(ValueError, match="disagrees with episodes.jsonl"):
        run(ReportConfig(runs=[d], out=tmp_path / "R.md"))

    # mismatched episode sets under the same manifest cannot be paired
    full = _write_run(tmp_path, "full", "rt1", _episodes("a"))
    part = _write_run(tmp_path, "part", "rt2", _episodes("b")[:-1])
    with pytest.raises(ValueError, match="'rt1' with run 'rt2'.*1 only in A"):
        run(ReportConfig(runs=[full, part], out=tmp_path / "R2.md"))


def test_interrupted_run_is_named_incomplete_with_how_to_finish(tmp_path: Path, capsys) -> None:
    eps = _episodes("a")
    d = _write_run(tmp_path / "results", "cut", "rt1", eps[:-3])
    res = json.loads((d / "results.json").read_text())
    res.update(complete=False, **summarize(eps[:-5]))  # results.json last written before the final episodes
    (d / "results.json").write_text(json.dumps(res))
    with pytest.raises(ValueError, match=r"incomplete evaluation .*Rerun `vlabench eval` with the same --out"):
        run(ReportConfig(runs=[d], out=tmp_path / "o" / "REPORT.md"))
    # caught up but still short of the suite: reported, marked, and said so
    res.update(summarize(eps[:-3]))
    res["suite"]["n_episodes"] = len(eps)
    (d / "results.json").write_text(json.dumps(res))
    out = run(ReportConfig(runs=[d], out=tmp_path / "o" / "REPORT.md"))
    assert f"{len(eps) - 3} of {len(eps)} (incomplete)" in out.read_text()
    printed = capsys.readouterr().out
    assert "is incomplete" in printed and f"wrote {out}" in printed
    assert out.stat().st_mode & 0o044 == 0o044  # readable by others, not mkstemp's 0600
