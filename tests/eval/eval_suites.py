"""Small eval suites written on the fly, shared by the eval tests (imported by module name: pytest puts
this folder on sys.path)."""

from __future__ import annotations

import json
from pathlib import Path


def write_suite(path: Path, cells: dict[str, list[str]], per_cell: int = 1, max_steps: int = 30,
                seed0: int = 1_000_000, name: str = "unit") -> Path:
    """An eval suite of ``cells`` ({task: [split, ...]}) with 64 px images and ``max_steps`` per episode."""
    lines = [f'name = "{name}"', 'kind = "eval"', f"seed_range = [{seed0}, {seed0 + 100}]",
             f"episodes_per_cell = {per_cell}", "[env]", "image_size = 64", "wrist_size = 64",
             f"max_steps = {max_steps}"]
    for task, splits in cells.items():
        lines += ["[[cells]]", f'task = "{task}"', f"splits = {json.dumps(splits)}"]
    path.write_text("\n".join(lines) + "\n")
    return path
