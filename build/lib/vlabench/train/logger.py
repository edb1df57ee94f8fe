"""metrics.csv (always) and TensorBoard (when the `tensorboard` package is installed)."""

from __future__ import annotations

import csv
import math
import os
import time
from pathlib import Path
from typing import Any

BASE_COLUMNS = ["step", "loss", "lr", "samples_per_s", "val_loss"]


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def _write_rows(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, restval="")
        w.writeheader()
        w.writerows(rows)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class MetricsLogger:
    """Appends one row per logged step to ``run/metrics.csv``.

    Columns: step, loss, lr, samples_per_s, val_loss, then any other scalar (model metrics, val_*)
    in order of first appearance; a new column rewrites the file once with the wider header.
    Empty cells mean "not measured at this step".
    """

    def __init__(self, run_dir: Path, resume_step: int | None, enable_tensorboard: bool = True) -> None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        self.path = Path(run_dir) / "metrics.csv"
        self.columns = list(BASE_COLUMNS)
        if self.path.exists() and resume_step is not None:
            cols, rows = _read_rows(self.path)
            # Rows logged after the checkpoint we resume from belong to the killed run's lost future.
            kept = [r for r in rows if r.get("step", "").isdigit() and int(r["step"]) <= resume_step]
            self.columns = cols or self.columns
            _write_rows(self.path, self.columns, kept)
        else:
            _write_rows(self.path, self.columns, [])
        self.tb = None
        if enable_tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(log_dir=str(Path(run_dir) / "tb"), purge_step=resume_step)
            except Exception:  # tensorboard is optional
                self.tb = None

    def log(self, step: int, values: dict[str, float]) -> None:
        row = {"step": step, **{k: v for k, v in values.items() if v is not None}}
        new = [k for k in row if k not in self.columns]
        if new:
            self.columns += new
            _, rows = _read_rows(self.path)
            _write_rows(self.path, self.columns, rows)
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.columns, restval="").writerow(
                {k: (repr(float(v)) if isinstance(v, float) else v) for k, v in row.items()})
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_metrics(path: str | Path) -> list[dict[str, float | None]]:
    """metrics.csv rows with numbers parsed (empty cells -> None)."""
    _, rows = _read_rows(Path(path))
    return [{k: (float(v) if v not in ("", None) else None) for k, v in r.items()} for r in rows]


class MetricsWindow:
    """Losses and model metrics summed since the last metrics.csv row."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.t0, self.n, self.loss, self.metrics = time.monotonic(), 0, 0.0, {}

    def add(self, loss: float, metrics: dict) -> None:
        self.n += 1
        self.loss += loss
        for k, v in metrics.items():
            if isinstance(v, (int, float)) or hasattr(v, "detach"):  # numbers and tensors; other extras are skipped
                self.metrics[k] = self.metrics.get(k, 0.0) + float(v)

    def means(self) -> dict[str, float]:
        return {k: v / self.n for k, v in self.metrics.items()}

    def seconds(self) -> float:
        return max(time.monotonic() - self.t0, 1e-9)
