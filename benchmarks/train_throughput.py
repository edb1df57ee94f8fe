"""Training samples/s and peak memory per policy: short real ``vlabench train`` runs on collected demos.

    python benchmarks/train_throughput.py [--recipes rt1_small,diffusion_small] [--steps 40] [--episodes 10]
        [--suite envs/cpu_pick_train.toml] [--data DIR] [--device cpu] [--threads N] [--recipe-arg RECIPE:ARG ...]
        [--out FILE.md] [--json FILE.json]

Collects ``--episodes`` expert demos with ``vlabench collect`` (unless ``--data`` names a dataset), then
runs ``vlabench train --recipe policies/RECIPE.toml`` for ``--steps`` optimizer steps under
``/usr/bin/time -v``. samples/s is the loop's own ``samples_per_s`` column of metrics.csv (one row per
``--log-every`` steps), the median of the rows after the first (the first windows hold the loader's warm-up;
every window is listed too); peak memory is the
training process's maximum resident set size (``/usr/bin/time``; falls back to getrusage of the
children when /usr/bin/time is missing, which is the largest child so far). ``--threads N`` sets
OMP_NUM_THREADS / MKL_NUM_THREADS for the training processes (1 = the per-core rate). The wall time includes
start-up and any one-time dataset work (decoding the image cache; a frozen encoder's feature cache), which
samples/s leaves out; ``--vs REF`` adds a column with each recipe's samples/s over REF's, measured in the
same run.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _vlabench() -> list[str]:
    return [sys.executable, "-m", "vlabench.cli"]


def collect(suite: str, episodes: int, out: Path) -> float:
    """Collect ``episodes`` demos into ``out``; returns the wall seconds."""
    t0 = time.perf_counter()
    subprocess.run(_vlabench() + ["collect", "--suite", suite, "--episodes", str(episodes), "--out", str(out)],
                   cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def train_row(recipe: str, data: Path, run_dir: Path, steps: int, device: str, log_every: int,
              threads: int = 0, extra: list[str] = ()) -> dict:
    cmd = _vlabench() + ["train", "--recipe", f"policies/{recipe}.toml", "--data", str(data), "--out", str(run_dir),
                         f"--train.steps={steps}", f"--train.log-every={log_every}", f"--train.save-every={steps}",
                         f"--train.device={device}", "--train.eval-every=0", *extra]
    timer = shutil.which("time") or ("/usr/bin/time" if os.path.exists("/usr/bin/time") else None)
    if timer:
        cmd = [timer, "-v"] + cmd
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"vlabench train --recipe {recipe} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    peak_kb = int(m.group(1)) if m else resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    with open(run_dir / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("samples_per_s")]
    rates = [float(r["samples_per_s"]) for r in rows]
    steady = sorted(rates[1:] or rates)
    median = steady[len(steady) // 2] if steady else float("nan")
    import tomllib

    with open(REPO / "policies" / f"{recipe}.toml", "rb") as f:
        batch = tomllib.load(f)["train"]["batch_size"]
    return {"recipe": recipe, "steps": steps, "batch_size": batch, "device": device, "wall_s": wall,
            "samples_per_s": median, "steps_per_s": median / batch, "samples_per_s_windows": rates,
            "peak_rss_mib": peak_kb / 1024, "peak_source": "/usr/bin/time -v" if m else "getrusage(children)"}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipes", default="rt1_small,diffusion_small")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--suite", default="envs/cpu_pick_train.toml")
    ap.add_argument("--data", type=Path, default=None, help="an existing demo dataset (skips collection)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="OMP/MKL threads per training process (0 = unset)")
    ap.add_argument("--vs", default=None, help="a recipe of --recipes to give the others' samples/s ratio against")
    ap.add_argument("--recipe-arg", action="append", default=[], metavar="RECIPE:ARG",
                    help="an extra `vlabench train` argument for one recipe, e.g. localizer:--model.controller=RUN_MLP")
    ap.add_argument("--out", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    extra: dict[str, list[str]] = {}
    for item in args.recipe_arg:
        recipe, sep, arg = item.partition(":")
        if not sep or not arg:
            ap.error(f"--recipe-arg wants RECIPE:ARG, got {item!r}")
        extra.setdefault(recipe, []).append(arg)
    from vlabench.fileio import write_json_atomic, write_text_atomic

    rows = []
    with tempfile.TemporaryDirectory(prefix="vlabench-train-bench-") as tmp:
        data, collect_s = args.data, None
        if data is None:
            data = Path(tmp) / "demos"
            collect_s = collect(args.suite, args.episodes, data)
            print(f"collected {args.episodes} demos from {args.suite} in {collect_s:.1f}s", flush=True)
        for recipe in args.recipes.split(","):
            rows.append(train_row(recipe, data, Path(tmp) / f"run-{recipe}", args.steps, args.device, args.log_every,
                                  args.threads, extra.get(recipe, [])))
            print(rows[-1], flush=True)
    demos = args.data or f"{args.episodes} episodes of {args.suite}"
    ref = next((r["samples_per_s"] for r in rows if r["recipe"] == args.vs), None)
    threads = f"{args.threads} thread(s) per run" if args.threads else "default threads"
    lines = [f"## training throughput ({args.device}, {os.cpu_count()} cores, {threads}, {args.steps} steps per recipe, "
             f"demos: {demos}, load avg {os.getloadavg()[0]:.1f} at the end)",
             "", "| recipe | batch | samples/s per window | median after the first | "
             + (f"vs {args.vs} | " if ref else "") + "optimizer steps/s | peak RSS (MiB) | wall s (incl. start-up) |",
             "|---|---:|---|---:|" + ("---:|" if ref else "") + "---:|---:|---:|"]
    for r in rows:
        windows = ", ".join(f"{x:.1f}" for x in r["samples_per_s_windows"])
        ratio = f"{r['samples_per_s'] / ref:.1f}x | " if ref else ""
        r["vs_ref"] = r["samples_per_s"] / ref if ref else None
        lines.append(f"| {r['recipe']} | {r['batch_size']} | {windows} | {r['samples_per_s']:.1f} | {ratio}"
                     f"{r['steps_per_s']:.2f} | {r['peak_rss_mib']:.0f} | {r['wall_s']:.1f} |")
    text = "\n".join(lines)
    print("\n" + text)
    if args.out:
        write_text_atomic(args.out, text + "\n")
    if args.json:
        write_json_atomic(args.json, {"rows": rows, "collect_s": collect_s})


if __name__ == "__main__":
    main()
