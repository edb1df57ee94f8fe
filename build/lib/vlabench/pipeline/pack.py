"""Packing a pipeline directory into a few files small enough to travel back from a GPU window, and
unpacking them into a pipeline directory so that a later window (or this machine) resumes from them.

``pack`` writes ``OUT/pack/``:

* ``results.tar.gz``: stage files, eval runs (results.json, episodes.jsonl), probe JSONs, the report,
  training metrics -- everything but data and checkpoints;
* ``checkpoints.tar.partNN``: the trained models' ``latest/`` checkpoints without the optimizer state
  (what evaluation and the probe need; a training run continued in a later window restarts its
  optimizer), split into parts of at most ``part_mib``; models whose checkpoint would not fit in
  ``max_mib`` in all are left out and listed in ``pack.json``;
* ``pack.json``: what is in which file.

Data is never packed: collection is seeded, so a later window recollects the same demos.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from vlabench.fileio import atomic_path, write_json_atomic
from vlabench.pipeline.stages import Context

PART_MIB = 15
MAX_MIB = 60


def _results_members(ctx: Context) -> list[Path]:
    out = ctx.out
    files = [*(out / "stages").glob("*.json"), *(out / "probe").glob("*.json"), *(out / "report").glob("*"),
             *(out / "eval").glob("*/results.json"), *(out / "eval").glob("*/episodes.jsonl"),
             *(out / "train").glob("*/metrics.csv"), *(out / "train").glob("*.spec.json")]
    return sorted(f for f in files if f.is_file())


def _checkpoint_files(ctx: Context, model: str) -> list[Path]:
    from vlabench.models.checkpoint import OPTIMIZER_FILE, resolve_checkpoint_dir

    try:
        return sorted(f for f in resolve_checkpoint_dir(ctx.train_dir(model)).iterdir()
                      if f.is_file() and f.name != OPTIMIZER_FILE)
    except FileNotFoundError:
        return []


def pack(ctx: Context, part_mib: int = PART_MIB, max_mib: int = MAX_MIB) -> Path:
    dest = ctx.out / "pack"
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("checkpoints.tar.part*"):
        old.unlink()
    with atomic_path(dest / "results.tar.gz", suffix=".tar.gz") as tmp, tarfile.open(tmp, "w:gz") as tar:
        for f in _results_members(ctx):
            tar.add(f, arcname=str(f.relative_to(ctx.out)))
    budget = max_mib * 2**20 - (dest / "results.tar.gz").stat().st_size
    packed, left_out, buf = [], [], io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for m in ctx.profile.models:
            files = _checkpoint_files(ctx, m.name)
            size = sum(f.stat().st_size for f in files)
            if not files:
                continue
            if size + 2**16 > budget - buf.tell():
                left_out.append({"model": m.name, "mib": round(size / 2**20, 1)})
                continue
            for f in files:
                tar.add(f, arcname=f"train/{m.name}/latest/{f.name}")
            packed.append(m.name)
    data, part = buf.getvalue(), part_mib * 2**20
    parts = []
    for i in range(0, len(data), part) if packed else ():
        name = f"checkpoints.tar.part{i // part:02d}"
        with atomic_path(dest / name) as tmp:
            tmp.write_bytes(data[i:i + part])
        parts.append(name)
    write_json_atomic(dest / "pack.json", {"results": "results.tar.gz", "checkpoint_parts": parts,
                                           "checkpoints": packed, "left_out": left_out, "part_mib": part_mib})
    ctx.log(f"pack: {dest} (results + {len(packed)} checkpoints in {len(parts)} parts"
            + (f"; left out: {left_out}" if left_out else "") + ")")
    return dest


def unpack(ctx: Context, src: Path) -> None:
    """Restore what ``pack`` wrote (a folder holding pack.json) into ``ctx.out``."""
    src = Path(src)
    index = src / "pack.json"
    if not index.is_file():
        raise FileNotFoundError(f"{src} holds no pack.json; give the folder `--stages pack` wrote (OUT/pack)")
    meta = json.loads(index.read_text())
    with tarfile.open(src / meta["results"], "r:gz") as tar:
        tar.extractall(ctx.out, filter="data")
    if meta["checkpoint_parts"]:
        data = b"".join((src / p).read_bytes() for p in meta["checkpoint_parts"])
        with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
            tar.extractall(ctx.out, filter="data")
    ctx.log(f"unpack: {src} -> {ctx.out} ({len(meta['checkpoints'])} checkpoints)")
