"""Bar charts of success rates with Wilson 95% error bars, one PNG per split.

With several runs the bars of a split's chart are the runs (policies), each the pooled rate of
that split; with one run they are that run's tasks. Figures are built with the object-oriented
API on the Agg canvas, never through pyplot, so no global backend or figure state is touched
(safe in headless processes and tests). Functions return PNG bytes; the caller writes files.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vlabench.report.tables import split_order


def bar_chart_png(
    labels: Sequence[str],
    stats: Sequence[Mapping[str, Any]],
    title: str,
    ylabel: str = "success rate (%)",
) -> bytes:
    """One bar per label at ``100 * rate`` with asymmetric Wilson error bars from ``ci95``.

    Args:
        labels: bar names, len B.
        stats: B stats dicts (n, successes, errors, rate, ci95).
        title: chart title.
        ylabel: y-axis label.

    Returns:
        PNG file contents.
    """
    if len(labels) != len(stats):
        raise ValueError(f"bar_chart_png got {len(labels)} labels but {len(stats)} stats")
    rates = [100 * s["rate"] for s in stats]
    # yerr is distances below/above the bar, clamped at 0 against float noise at the edges
    lower = [max(0.0, r - 100 * s["ci95"][0]) for r, s in zip(rates, stats)]
    upper = [max(0.0, 100 * s["ci95"][1] - r) for r, s in zip(rates, stats)]

    fig = Figure(figsize=(max(5.0, 0.9 * len(labels) + 2.0), 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    xs = list(range(len(labels)))
    ax.bar(xs, rates, yerr=[lower, upper], capsize=4, color="#4C72B0", ecolor="black")
    for x, r, s in zip(xs, rates, stats):
        ax.annotate(f"n={s['n']}", (x, 1.0), ha="center", va="bottom", fontsize=7, color="white" if r > 8 else "black")
    ax.set_xticks(xs)
    ax.set_xticklabels(labels, rotation=30 if len(labels) > 3 else 0, ha="right" if len(labels) > 3 else "center")
    ax.set_ylim(0, 105)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def split_charts(runs: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, bytes]:
    """PNG per split for ``(name, summary)`` runs: bars = runs, or tasks when there is one run.

    Returns:
        ``{split: png_bytes}`` in ``split_order``.
    """
    if not runs:
        raise ValueError("split_charts needs at least one run")
    out: dict[str, bytes] = {}
    if len(runs) == 1:
        name, summ = runs[0]
        for split in split_order(list(summ["splits"])):
            cells = sorted((c for c in summ["cells"] if c["split"] == split), key=lambda c: c["task"])
            out[split] = bar_chart_png([c["task"] for c in cells], cells, f"{name}: split '{split}' (Wilson 95% CI)")
        return out
    for split in split_order([s for _, summ in runs for s in summ["splits"]]):
        present = [(name, summ["splits"][split]) for name, summ in runs if split in summ["splits"]]
        out[split] = bar_chart_png(
            [n for n, _ in present], [s for _, s in present], f"split '{split}' (Wilson 95% CI)"
        )
    return out
