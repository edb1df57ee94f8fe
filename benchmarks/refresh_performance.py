"""Refresh the quoted blocks of results/PERFORMANCE.md from the result files they quote.

results/PERFORMANCE.md folds in tables that other result files own (results/sim_throughput_cpu.md,
results/eval_throughput_h100.md, results/policy_latency.md). Each such block sits between two markers::

    <!-- include results/sim_throughput_cpu.md -->
    ... the file's text, copied ...
    <!-- end include -->

Run this after regenerating one of those files, and the copy follows it; the file itself stays the source
of truth and is never edited here. ``--check`` only reports stale blocks (exit code 1 if any).

    python benchmarks/refresh_performance.py [--file results/PERFORMANCE.md] [--check]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- include (?P<path>\S+) -->\n)(?P<body>.*?)(<!-- end include -->)", re.S)


def refreshed(text: str, root: Path = REPO) -> tuple[str, list[str]]:
    """``text`` with every include block replaced by its file's current content, and the stale paths."""
    stale: list[str] = []

    def fill(m: re.Match) -> str:
        path = root / m.group("path")
        if not path.is_file():
            raise FileNotFoundError(f"PERFORMANCE.md includes {m.group('path')}, which does not exist under {root}")
        body = path.read_text()
        body = body if body.endswith("\n") else body + "\n"
        if body != m.group("body"):
            stale.append(m.group("path"))
        return m.group(1) + body + m.group(4)

    return BLOCK.sub(fill, text), stale


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--file", type=Path, default=REPO / "results" / "PERFORMANCE.md")
    ap.add_argument("--check", action="store_true", help="only say which blocks are stale")
    args = ap.parse_args(argv)
    new, stale = refreshed(args.file.read_text())
    if args.check:
        print("stale: " + ", ".join(stale) if stale else "all included blocks are current")
        return 1 if stale else 0
    if stale:
        from vlabench.fileio import write_text_atomic

        write_text_atomic(args.file, new)
    print(f"refreshed {', '.join(stale)}" if stale else "nothing to refresh")
    return 0


if __name__ == "__main__":
    sys.exit(main())
