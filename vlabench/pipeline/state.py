"""Stage files: what each pipeline stage ran on, its budget, how long it took, and whether it is done.

``OUT/stages/<stage>[.<item>].json``::

    {"stage": "train", "item": "rt1", "status": "done" | "partial" | "failed",
     "inputs": {name: hash}, "budget": {...}, "wall_s": seconds over every invocation,
     "invocations": [{"started", "finished", "wall_s", "git_sha", "status"}], "outputs": {...}}

A stage whose file says "done" with the same inputs is skipped. One that is done with other inputs
is refused (its outputs would no longer match what they claim to come from): the message names the
changed inputs and the folders to delete to redo it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from vlabench.fileio import write_json_atomic


def file_hash(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def value_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def now() -> str:
    """The current UTC time as the stage files record it (ISO 8601, seconds)."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class StageChanged(ValueError):
    """A finished stage's inputs changed since it ran."""


class Stage:
    """One stage (or one item of a stage, e.g. ``train.rt1``) of one pipeline directory."""

    def __init__(self, out: Path, stage: str, item: str | None = None) -> None:
        self.stage, self.item = stage, item
        self.path = Path(out) / "stages" / (f"{stage}.{item}.json" if item else f"{stage}.json")
        self.record: dict = json.loads(self.path.read_text()) if self.path.is_file() else {}

    @property
    def label(self) -> str:
        return f"{self.stage}:{self.item}" if self.item else self.stage

    @property
    def done(self) -> bool:
        return self.record.get("status") == "done"

    def is_current(self, inputs: dict[str, str], redo_hint: str) -> bool:
        """True when done with exactly these inputs; StageChanged when done with others."""
        if not self.done:
            return False
        old = self.record.get("inputs", {})
        if old == inputs:
            return True
        changed = sorted(k for k in set(old) | set(inputs) if old.get(k) != inputs.get(k))
        raise StageChanged(f"stage {self.label} finished on other inputs ({', '.join(changed)} changed since); "
                           f"its results would not match them. To redo it, delete {redo_hint} and {self.path}")

    def record_run(self, inputs: dict[str, str], budget: dict, status: str, outputs: dict, wall_s: float,
                   started: str) -> None:
        """Add one invocation to the stage file (written atomically)."""
        from vlabench.eval import provenance as prov

        rec = self.record
        rec.update(stage=self.stage, item=self.item, inputs=inputs, budget=budget, status=status)
        rec.setdefault("outputs", {}).update(outputs)
        rec.setdefault("invocations", []).append({"started": started, "finished": now(), "wall_s": round(wall_s, 1),
                                                  "git_sha": prov.git_sha(), "status": status})
        rec["wall_s"] = round(sum(i["wall_s"] for i in rec["invocations"]), 1)
        write_json_atomic(self.path, rec)

    @contextmanager
    def running(self, inputs: dict[str, str], budget: dict | None = None) -> Iterator[dict]:
        """Time one invocation; the block sets ``outputs`` and ``status`` ("done" or "partial") in the dict
        it gets. An exception records "failed" ("partial" for Ctrl-C) and is re-raised."""
        run = {"status": "partial", "outputs": {}}
        t0, started = time.monotonic(), now()
        try:
            yield run
        except BaseException as e:
            run["status"] = "partial" if isinstance(e, KeyboardInterrupt) else "failed"
            raise
        finally:
            self.record_run(inputs, budget or {}, run["status"], run["outputs"], time.monotonic() - t0, started)


def all_stages(out: Path) -> list[dict]:
    """Every stage file of a pipeline directory, sorted by file name."""
    return [json.loads(p.read_text()) for p in sorted((Path(out) / "stages").glob("*.json"))]
