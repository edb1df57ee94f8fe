"""``vlabench report``: REPORT.md, CSV tables and bar charts from one or more results directories.

Each run directory holds ``results.json`` and ``episodes.jsonl`` (written by the eval harness).
Rates are recomputed from episodes.jsonl (the per-episode ground truth, also needed for the paired
tests) and cross-checked against the counts stored in results.json, so a stale or hand-edited
summary is caught instead of reported.

Outputs, all beside ``cfg.out`` and prefixed with its stem (default ``results/REPORT``):
``REPORT.md``, ``REPORT_headline.csv`` (rows = runs, columns = splits + overall),
``REPORT_<run>.csv`` per run (rows = tasks, columns = splits) and ``REPORT_<split>.png`` per split.
Every file is written to a temporary name and renamed; REPORT.md is written last.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tyro.conf import Positional

from vlabench.eval.metrics import summarize
from vlabench.eval.paired import twin_summary
from vlabench.fileio import write_bytes_atomic
from vlabench.report import gap, plots, tables
from vlabench.report.compare import RunEpisodes, check_same_suite, compare_runs, comparisons_markdown

RESULTS_SCHEMA_VERSION = 1
GAP_PNG = "{stem}_gap.png"


@dataclass
class ReportConfig:
    """Build a success-rate report from evaluation results directories."""

    runs: Positional[list[Path]] = field(default_factory=list)
    """results directories to report, each holding results.json and episodes.jsonl (one per policy run)"""
    out: Path = Path("results/REPORT.md")
    """markdown report path; CSVs and PNGs are written beside it, prefixed with its stem"""


@dataclass
class LoadedRun:
    """One results directory, parsed."""

    path: Path
    """the run directory"""
    name: str
    """display name: results.json policy.name, disambiguated by directory when repeated"""
    results: dict[str, Any]
    """results.json contents"""
    episodes: list[dict[str, Any]]
    """episodes.jsonl records"""
    summary: dict[str, Any]
    """``summarize(episodes)``"""
    twins: dict[str, Any] | None = None
    """``twin_summary(episodes)`` of an ``eval --twins`` run, else None"""


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e


def load_run(run_dir: Path) -> LoadedRun:
    """Load and validate one results directory (name not yet disambiguated).

    Raises:
        FileNotFoundError: if the directory, results.json or episodes.jsonl is missing.
        ValueError: on an unknown schema version, malformed lines, or counts in results.json
            that disagree with episodes.jsonl.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist; pass a directory written by `vlabench eval`")
    res_path, ep_path = run_dir / "results.json", run_dir / "episodes.jsonl"
    for p in (res_path, ep_path):
        if not p.is_file():
            raise FileNotFoundError(
                f"{p} not found: a run directory must hold results.json and episodes.jsonl "
                f"(found: {sorted(x.name for x in run_dir.iterdir())})"
            )
    results = _read_json(res_path)
    version = results.get("schema_version")
    if version != RESULTS_SCHEMA_VERSION:
        raise ValueError(f"{res_path} has schema_version {version!r}; this reporter reads {RESULTS_SCHEMA_VERSION}")
    for key in ("suite", "policy"):
        if not isinstance(results.get(key), dict):
            raise ValueError(f"{res_path} lacks the {key!r} object required by the results schema")
    if not results["suite"].get("manifest_hash"):
        raise ValueError(f"{res_path} has no suite.manifest_hash; runs cannot be matched to a suite without it")
    episodes = []
    for lineno, line in enumerate(ep_path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            episodes.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"{ep_path}:{lineno} is not valid JSON ({e}); was the run interrupted?") from e
    summary = summarize(episodes)
    n_main = sum(not e.get("twin") for e in episodes)
    if not results.get("complete", True) and n_main != int(results.get("overall", {}).get("n", -1)):
        selected = results["suite"].get("max_episodes") or results["suite"].get("n_episodes")
        raise ValueError(f"{run_dir} holds an incomplete evaluation ({len(episodes)} of {selected} episodes; it was "
                         "interrupted before results.json caught up). Rerun `vlabench eval` with the same --out "
                         "(and the same suite and policy) to finish it, then report")
    _check_consistent(res_path, results, summary)
    name = str(results["policy"].get("name") or run_dir.name)
    twins = twin_summary(episodes) if any(e.get("twin") for e in episodes) else None
    return LoadedRun(path=run_dir, name=name, results=results, episodes=episodes, summary=summary, twins=twins)


def _check_consistent(res_path: Path, results: dict[str, Any], summary: dict[str, Any]) -> None:
    """results.json counts must match what episodes.jsonl gives."""

    def counts(s: dict[str, Any]) -> tuple[int, int, int]:
        return (int(s["n"]), int(s["successes"]), int(s["errors"]))

    stored: dict[tuple[str, str], tuple[int, int, int]] = {}
    fresh: dict[tuple[str, str], tuple[int, int, int]] = {}
    if "cells" in results:
        stored.update({(c["task"], c["split"]): counts(c) for c in results["cells"]})
        fresh.update({(c["task"], c["split"]): counts(c) for c in summary["cells"]})
    if "overall" in results:
        stored["overall", ""] = counts(results["overall"])
        fresh["overall", ""] = counts(summary["overall"])
    if stored != fresh:
        bad = sorted(k for k in stored.keys() | fresh.keys() if stored.get(k) != fresh.get(k))
        detail = "; ".join(f"{k}: results.json {stored.get(k)} vs episodes.jsonl {fresh.get(k)}" for k in bad[:3])
        raise ValueError(f"{res_path} disagrees with episodes.jsonl on (n, successes, errors): {detail}")


def assign_names(runs: list[LoadedRun]) -> None:
    """Make run names unique in place: a repeated policy name gets `` (<dir name>)``, or
    `` (<full path>)`` if the directory names repeat too."""
    base = [r.name for r in runs]
    for fmt in (lambda r, b: f"{b} ({r.path.name})", lambda r, b: f"{b} ({r.path})"):
        names = [r.name for r in runs]
        if len(set(names)) == len(names):
            return
        for r, b in zip(runs, base):
            if names.count(r.name) > 1:
                r.name = fmt(r, b)
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"the same run directory is given more than once: {[str(r.path) for r in runs]}")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_.") or "run"


def _unique_slugs(names: list[str], reserved: tuple[str, ...] = ()) -> list[str]:
    taken, out = set(reserved), []
    for name in names:
        s, k = _slug(name), 2
        while s in taken:
            s, k = f"{_slug(name)}_{k}", k + 1
        taken.add(s)
        out.append(s)
    return out


def write_atomic(path: Path, data: bytes | str) -> None:
    write_bytes_atomic(path, data.encode() if isinstance(data, str) else data)


def _provenance(runs: list[LoadedRun]) -> str:
    header = ["policy", "directory", "episodes", "checkpoint", "checkpoint hash", "suite", "manifest hash", "renderer",
              "device", "git sha", "created"]
    rows = []
    for r in runs:
        res, pol, suite = r.results, r.results["policy"], r.results["suite"]
        n = f"{len(r.episodes)}" + ("" if res.get("complete", True) else f" of {suite.get('n_episodes')} (incomplete)")
        vals = [r.name, str(r.path), n, pol.get("checkpoint"), pol.get("checkpoint_hash"), suite.get("name"),
                suite.get("manifest_hash"), res.get("renderer"), res.get("device"), res.get("git_sha"), res.get("created")]
        rows.append(["—" if v in (None, "") else str(v).replace("|", "\\|") for v in vals])
    return "| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n" + "".join(
        "| " + " | ".join(row) + " |\n" for row in rows
    )


def render_markdown(runs: list[LoadedRun], png_names: dict[str, str], csv_names: list[str], headline_csv: str,
                    stem: str = "REPORT") -> str:
    """REPORT.md text for loaded runs (png_names: split -> file name, relative to the report)."""
    pairs = [(r.name, r.summary) for r in runs]
    parts = [
        "# vlabench results\n",
        "Success = the task predicate held at any step of the episode. Cells give the success rate, its "
        "Wilson 95% interval (in %) and the number of episodes; episodes that errored count as failures "
        "and are listed as `err`.\n",
        "## Runs\n",
        _provenance(runs),
        "## Headline\n",
        f"CSV: [{headline_csv}]({headline_csv})\n",
        tables.headline_markdown(pairs),
    ]
    if len(runs) > 1:
        parts += [
            "## Paired comparisons (exact McNemar)\n",
            "Episodes are paired by (task, split, index, seed). b = episodes only A solved, c = only B "
            "solved; p is the two-sided exact binomial test on b vs c, unadjusted for multiple comparisons.\n",
            comparisons_markdown(
                compare_runs([RunEpisodes(r.name, r.results["suite"]["manifest_hash"], r.episodes) for r in runs])
            ),
        ]
    gaps = [(r.name, r.twins) for r in runs if r.twins]
    if gaps:
        parts += [
            "## Generalization gap (paired twins)\n",
            "Each held-out episode ran beside its twin: the same seed with only the split's shift undone "
            "(`vlabench eval --twins`). Drop = twin rate - shifted rate in percentage points, with Newcombe's "
            "(1998, method 10) 95% interval for paired proportions and the exact McNemar p; the rates in "
            "brackets are twin -> shifted.\n",
            gap.gap_markdown(gaps),
            f"![generalization gap]({GAP_PNG.format(stem=stem)})\n",
        ]
    parts.append("## Per-task results\n")
    for r, csv_name in zip(runs, csv_names):
        parts += [f"### {r.name}\n", f"CSV: [{csv_name}]({csv_name})\n", tables.run_table_markdown(r.summary)]
    if png_names:
        parts.append("## Plots\n")
        parts += [f"![split {split}]({name})\n" for split, name in png_names.items()]
    return "\n".join(parts)


def run(cfg: ReportConfig) -> Path:
    """Load every run, check they are comparable, and write the report files.

    Returns:
        the path of the written REPORT.md.

    Raises:
        ValueError: no runs given, inconsistent run files, or runs over different suite manifests.
        FileNotFoundError: a run directory or one of its files is missing.
    """
    if not cfg.runs:
        raise ValueError("ReportConfig.runs is empty; give at least one results directory")
    runs = [load_run(Path(p)) for p in cfg.runs]
    assign_names(runs)
    # compare_runs also checks this, but only when there are 2+ runs; fail before writing anything
    if len(runs) > 1:
        check_same_suite([RunEpisodes(r.name, r.results["suite"]["manifest_hash"], ()) for r in runs])

    out = Path(cfg.out)
    stem = out.stem
    pairs = [(r.name, r.summary) for r in runs]
    csv_names = [f"{stem}_{s}.csv" for s in _unique_slugs([r.name for r in runs], reserved=("headline",))]
    headline_name = f"{stem}_headline.csv"
    charts = plots.split_charts(pairs)
    split_slugs = _unique_slugs(list(charts))
    png_names = {split: f"{stem}_{slug}.png" for split, slug in zip(charts, split_slugs)}
    markdown = render_markdown(runs, png_names, csv_names, headline_name, stem)

    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out.parent / headline_name, tables.headline_csv(pairs))
    for r, name in zip(runs, csv_names):
        write_atomic(out.parent / name, tables.run_table_csv(r.summary))
    for split, png in charts.items():
        write_atomic(out.parent / png_names[split], png)
    gaps = [(r.name, r.twins) for r in runs if r.twins]
    if gaps:
        write_atomic(out.parent / GAP_PNG.format(stem=stem), gap.gap_chart_png(gaps))
    write_atomic(out, markdown)
    for r in runs:
        if not r.results.get("complete", True):
            print(f"note: {r.path} is incomplete ({len(r.episodes)} of {r.results['suite'].get('n_episodes')} "
                  "episodes); rerun `vlabench eval` with the same --out to finish it")
    print(f"wrote {out} (+ {len(csv_names) + 1} CSV, {len(png_names)} PNG)")
    return out
