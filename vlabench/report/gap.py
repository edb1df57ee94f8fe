"""The generalization gap of ``eval --twins`` runs: per policy and held-out split, the paired drop from
the twin arm (the shift undone) to the shifted arm, as a table and one chart."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

from vlabench.report.tables import _markdown, split_order


def _cell(d: Mapping[str, Any] | None) -> str:
    if d is None:
        return "-"
    lo, hi = d["drop_ci95"]
    return (f"{100 * d['drop']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] p={d['mcnemar_p']:.2g} "
            f"({100 * d['twin']['rate']:.0f}->{100 * d['shifted']['rate']:.0f}%, n={d['n_pairs']})")


def gap_markdown(runs: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    """Rows = runs, columns = splits; ``runs`` are ``(name, twins summary)`` (results.json's ``twins``)."""
    splits = split_order(sorted({s for _, t in runs for s in t["splits"]}))
    rows = [[name, *(_cell(t["splits"].get(s)) for s in splits)] for name, t in runs]
    return _markdown(["policy", *splits], rows)


def gap_chart_png(runs: Sequence[tuple[str, Mapping[str, Any]]]) -> bytes:
    """Grouped bars: per split, each run's drop in percentage points with its 95% interval."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    splits = split_order(sorted({s for _, t in runs for s in t["splits"]}))
    fig = Figure(figsize=(max(5.0, 1.2 * len(splits) * max(1, len(runs)) ** 0.5 + 2.0), 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(runs))
    for i, (name, t) in enumerate(runs):
        xs, ys, lo, hi = [], [], [], []
        for j, s in enumerate(splits):
            d = t["splits"].get(s)
            if d is None:
                continue
            xs.append(j + (i - (len(runs) - 1) / 2) * width)
            ys.append(100 * d["drop"])
            lo.append(max(0.0, 100 * (d["drop"] - d["drop_ci95"][0])))
            hi.append(max(0.0, 100 * (d["drop_ci95"][1] - d["drop"])))
        ax.bar(xs, ys, width=width, yerr=[lo, hi], capsize=3, label=name)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(splits)))
    ax.set_xticklabels(splits, rotation=30, ha="right")
    ax.set_ylabel("drop: twin - shifted (pp)")
    ax.set_title("generalization gap on paired twins (Newcombe 95% CI)", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
