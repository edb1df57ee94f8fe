"""Markdown and CSV success-rate tables built from ``vlabench.eval.metrics.summarize`` output.

Two shapes:

* per run: rows = tasks (plus an "all tasks" row), columns = splits;
* headline: rows = runs (policies), columns = splits + overall.

Markdown cells read ``62.0% ± [51.3, 71.2] (n=100)``: the success rate, then its Wilson 95%
interval in percent (asymmetric, so it is given as bounds rather than a half-width), then the
episode count, and ``, k err`` when k episodes errored (they are already counted as failures).
CSV cells are numeric: for each split ``<split>_rate`` (fraction), ``_ci_lo``, ``_ci_hi``,
``_n``, ``_successes``, ``_errors``; a task absent from a split leaves its columns empty.
Functions here return strings; the caller writes files.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any

MISSING = "—"
ALL_TASKS = "all tasks"
OVERALL = "overall"
_CSV_FIELDS = ("rate", "ci_lo", "ci_hi", "n", "successes", "errors")


def split_order(splits: Sequence[str]) -> list[str]:
    """Column order for splits: "seen" (the training distribution, the baseline) first, then the
    rest alphabetically; duplicates removed."""
    uniq = set(splits)
    return (["seen"] if "seen" in uniq else []) + sorted(uniq - {"seen"})


def format_cell(stats: Mapping[str, Any] | None) -> str:
    """``"62.0% ± [51.3, 71.2] (n=100)"`` for a stats dict (n, successes, errors, rate, ci95)."""
    if stats is None:
        return MISSING
    lo, hi = stats["ci95"]
    extra = f", {stats['errors']} err" if stats.get("errors") else ""
    return f"{100 * stats['rate']:.1f}% ± [{100 * lo:.1f}, {100 * hi:.1f}] (n={stats['n']}{extra})"


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(_md_escape(h) for h in header) + " |"]
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
    lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _csv_values(stats: Mapping[str, Any] | None) -> list[Any]:
    if stats is None:
        return [""] * len(_CSV_FIELDS)
    lo, hi = stats["ci95"]
    return [f"{stats['rate']:.6f}", f"{lo:.6f}", f"{hi:.6f}", stats["n"], stats["successes"], stats["errors"]]


def _csv(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _grid(summary: Mapping[str, Any]) -> tuple[list[str], list[str], dict[tuple[str, str], Mapping[str, Any]]]:
    cells = {(c["task"], c["split"]): c for c in summary["cells"]}
    tasks = sorted({t for t, _ in cells})
    splits = split_order([s for _, s in cells] + list(summary["splits"]))
    return tasks, splits, cells


def run_table_markdown(summary: Mapping[str, Any]) -> str:
    """Markdown table of one run: rows = tasks + "all tasks", columns = splits."""
    tasks, splits, cells = _grid(summary)
    rows = [[t] + [format_cell(cells.get((t, s))) for s in splits] for t in tasks]
    rows.append([f"**{ALL_TASKS}**"] + [format_cell(summary["splits"].get(s)) for s in splits])
    return _markdown(["task"] + splits, rows)


def run_table_csv(summary: Mapping[str, Any]) -> str:
    """CSV of one run: rows = tasks + "all tasks", numeric columns per split (see module doc)."""
    tasks, splits, cells = _grid(summary)
    header = ["task"] + [f"{s}_{f}" for s in splits for f in _CSV_FIELDS]
    rows = [[t] + [v for s in splits for v in _csv_values(cells.get((t, s)))] for t in tasks]
    rows.append([ALL_TASKS] + [v for s in splits for v in _csv_values(summary["splits"].get(s))])
    return _csv(header, rows)


def _headline_splits(runs: Sequence[tuple[str, Mapping[str, Any]]]) -> list[str]:
    return split_order([s for _, summ in runs for s in summ["splits"]])


def headline_markdown(runs: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    """Markdown headline table: rows = runs (``(name, summary)`` pairs), columns = splits + overall."""
    splits = _headline_splits(runs)
    rows = [
        [name] + [format_cell(summ["splits"].get(s)) for s in splits] + [format_cell(summ["overall"])]
        for name, summ in runs
    ]
    return _markdown(["policy"] + splits + [OVERALL], rows)


def headline_csv(runs: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    """CSV headline table: rows = runs, numeric columns per split and for overall."""
    splits = _headline_splits(runs)
    header = ["policy"] + [f"{s}_{f}" for s in splits + [OVERALL] for f in _CSV_FIELDS]
    rows = [
        [name]
        + [v for s in splits for v in _csv_values(summ["splits"].get(s))]
        + _csv_values(summ["overall"])
        for name, summ in runs
    ]
    return _csv(header, rows)
