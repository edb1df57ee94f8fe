"""Env steps/s of the full eval harness with learned policies, per (workers, envs_per_worker, overlap).

Each row runs the real harness (``vlabench.eval.harness.run``) on a 4-task suite whose episodes all run
``--max-steps`` steps (noop never succeeds; the random-weight policies practically never do, and their
steps are counted from episodes.jsonl either way). RT-1 and Diffusion Policy are built from their small
recipes (policies/rt1_small.toml, policies/diffusion_small.toml) with random weights -- speed does not
depend on the weights -- and saved with ``save_checkpoint``, so the harness loads them exactly as
``vlabench eval --policy DIR`` would. The reference row, measured in the same run, is a bare env loop
in this process (no harness, no IPC, no policy): the ceiling of one core.

Columns: ``slots`` = workers x envs_per_worker; ``act threads`` = EvalConfig.act_threads (auto = the cores
the workers leave free); ``frames`` = shm (shared-memory image buffers, the default) or pickled (in the
reply: ``--image-buffers off``); ``act rows`` = mean rows per ``act`` call (half the slots with overlap);
``act ms`` = mean wall time of one ``act`` call; ``act share`` = time inside ``act`` / wall;
``main CPU ms/step`` = CPU time of this (the main) process per env step, which external load inflates
far less than wall time; ``steps/s`` = env steps / wall (worker start-up and policy loading included);
``steady`` = env steps / s between the first and the last ``act`` call (start-up and the tail excluded);
``vs bare`` = steady / (bare rate x min(workers, cores)).

    python benchmarks/inference_throughput.py [--policies noop,rt1,diffusion] [--combos 1x1,2x8,2x32]
        [--overlap on,off] [--act-threads 0,-1] [--image-buffers on,off] [--repeat 3] [--device cpu]
        [--out FILE.md] [--json FILE.json]

``sleepMS`` (e.g. ``--policies sleep20``) is a stand-in for a policy on an accelerator: ``act`` sleeps
with the CPU idle. ``--repeat N`` runs every configuration N times, interleaved (A, B, A, B, ...), and
adds a table of medians: on a shared machine the load drifts between rows.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import resource
import tempfile
import time
from pathlib import Path

TASKS = ("pick", "place", "push", "stack")
RECIPES = {"rt1": "policies/rt1_small.toml", "diffusion": "policies/diffusion_small.toml"}
REPO = Path(__file__).resolve().parents[1]


def random_stats() -> dict:
    """Action/state normalization statistics of a policy that never saw data."""
    return {k: {"min": [-1.0] * d, "max": [1.0] * d, "q01": [-1.0] * d, "q99": [1.0] * d, "mean": [0.0] * d,
                "std": [1.0] * d} for k, d in (("action", 7), ("state", 8))}


def policy_checkpoint(name: str, out: Path, text_encoder: str | None = None, recipe: str | None = None) -> Path:
    """A random-weight checkpoint of ``name``'s recipe (RECIPES) in ``out/name``; returns its directory."""
    import torch

    from vlabench.models.registry import get_spec
    from vlabench.train.checkpoint import save_checkpoint
    from vlabench.train.config import load_recipe

    path = recipe or RECIPES.get(name)
    if path is None:
        raise ValueError(f"no recipe for policy {name!r}; known: {', '.join(RECIPES)}")
    overrides = {"text_encoder": text_encoder} if text_encoder else {}
    model_name, model_cfg, train_cfg = load_recipe(REPO / path, model_overrides=overrides)
    torch.manual_seed(0)
    stats = random_stats()
    model = get_spec(model_name).model_cls(model_cfg, stats)
    return save_checkpoint(out / name, model, model_name, model_cfg, train_cfg, stats,
                           {"manifest_hash": "random-weights", "path": None})


class TimedPolicy:
    """Forwards to a policy and records (start, rows, seconds) of every ``act`` call."""

    def __init__(self, inner) -> None:
        self.inner, self.calls = inner, []

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def reset(self, n_envs: int) -> None:
        self.inner.reset(n_envs)

    def act(self, obs_batch: dict):
        t0 = time.perf_counter()
        a = self.inner.act(obs_batch)
        self.calls.append((t0, len(obs_batch["slot"]), time.perf_counter() - t0))
        return a


class SleepPolicy:
    """A stand-in for inference on an accelerator: ``act`` blocks for ``ms`` with the CPU idle (as a CUDA
    synchronize does) and returns the noop action. It shows what overlap buys when ``act`` does not
    compete with the workers for cores, which a 2-core machine cannot show with a CPU policy."""

    needs_expert = False

    def __init__(self, ms: float) -> None:
        self.ms = ms

    def reset(self, n_envs: int) -> None:
        pass

    def act(self, obs_batch: dict):
        import numpy as np

        time.sleep(self.ms / 1000)
        a = np.zeros((len(obs_batch["slot"]), 7), np.float32)
        a[:, 6] = -1
        return a


@contextlib.contextmanager
def timed_policies(sleep_ms: float = 0.0):
    """While active, every policy the harness builds is wrapped in a TimedPolicy (a SleepPolicy instead of
    the real one when ``sleep_ms`` > 0); yields the list of them."""
    from vlabench.eval import harness

    built, real = [], harness.build_policy

    def build(*args, **kwargs):
        policy, ctx = real(*args, **kwargs)
        built.append(TimedPolicy(SleepPolicy(sleep_ms) if sleep_ms > 0 else policy))
        return built[-1], ctx

    harness.build_policy = build
    try:
        yield built
    finally:
        harness.build_policy = real


def synthetic_batch(n: int, first: bool, image_size: int = 128, wrist_size: int = 84) -> dict:
    """An obs batch of ``n`` rows shaped like the env's default observation (random pixels)."""
    import numpy as np

    rng = np.random.default_rng(0)
    return {"image": rng.integers(0, 255, (n, image_size, image_size, 3), dtype=np.uint8),
            "wrist_image": rng.integers(0, 255, (n, wrist_size, wrist_size, 3), dtype=np.uint8),
            "state": rng.normal(size=(n, 8)).astype(np.float32), "instruction": ["pick up the red block"] * n,
            "slot": np.arange(n), "is_first": np.full(n, first), "rng_seed": np.arange(n), "seed": np.arange(n), "index": np.arange(n),
            "task": ["pick"] * n, "split": ["seen"] * n}


def act_latency(policy: str, device: str, batches: list[int], steps: int = 8, threads: int | None = 1) -> list[dict]:
    """``act`` latency of a policy spec (e.g. a checkpoint directory) as the harness builds and calls it:
    per batch size, the first call of fresh episodes (a chunked policy samples there) and the mean over
    ``steps`` calls (a full chunk), after one warm-up episode step. ``threads``: torch intra-op threads
    (1, as the harness gives act when its workers hold the other cores; None = torch's default)."""
    from vlabench.agents.spec import PolicySpec
    from vlabench.eval.local import torch_threads
    from vlabench.eval.runtime import build_policy

    pol, ctx = build_policy(PolicySpec.parse(policy), device, False)
    with torch_threads(threads):
        return _latency_rows(pol, ctx, device, batches, steps)


def _latency_rows(pol, ctx, device: str, batches: list[int], steps: int) -> list[dict]:
    import torch

    out = []
    for n in batches:
        times = []
        for t in range(steps + 1):  # call 0 warms up (allocations, text embeddings); call 1 starts episodes
            batch = synthetic_batch(n, first=t <= 1)
            if t == 1:
                pol.reset(n)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            with ctx():
                pol.act(batch)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(1000 * (time.perf_counter() - t0))
        out.append({"batch": n, "first_ms": times[1], "mean_ms": sum(times[1:]) / steps, "device": device,
                    "torch_threads": torch.get_num_threads()})
    return out


def write_suite(path: Path, episodes: int, image_size: int, wrist_size: int, max_steps: int) -> Path:
    lines = ['name = "bench"', 'kind = "eval"', "seed_range = [1500000, 1510000]",
             f"episodes_per_cell = {max(1, -(-episodes // len(TASKS)))}", "[env]", f"image_size = {image_size}",
             f"wrist_size = {wrist_size}", f"max_steps = {max_steps}"]
    for t in TASKS:
        lines += ["[[cells]]", f'task = "{t}"', 'splits = ["seen"]']
    path.write_text("\n".join(lines) + "\n")
    return path


def harness_row(label: str, policy: str, workers: int, epw: int, overlap: bool, episodes: int, tmp: Path, *,
                image_size: int = 128, wrist_size: int = 84, max_steps: int = 40, renderer: str = "tiny",
                device: str = "cpu", act_threads: int = 0, sleep_ms: float = 0.0, image_buffers: bool = True) -> dict:
    """One harness run; returns the row of the table (see the module docstring for the columns)."""
    from vlabench.eval.harness import EvalConfig, run

    tag = f"{label}-{workers}x{epw}-{'ov' if overlap else 'lock'}-{renderer}".replace(" ", "_")
    row_dir = Path(tempfile.mkdtemp(prefix=tag + "-", dir=tmp))  # a fresh results folder: never a resume
    suite = write_suite(row_dir / "suite.toml", episodes, image_size, wrist_size, max_steps)
    out = row_dir / "out"
    from vlabench.eval.local import LocalBackend

    LocalBackend.image_buffers = image_buffers
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    with timed_policies(sleep_ms) as built, contextlib.redirect_stdout(io.StringIO()):
        t0 = time.perf_counter()
        res = run(EvalConfig(suite=suite, policy=policy, workers=workers, envs_per_worker=epw,
                             overlap="on" if overlap else "off",
                             out=out, renderer=renderer, device=device, max_episodes=episodes,
                             act_threads=act_threads))
        wall = time.perf_counter() - t0
    LocalBackend.image_buffers = True
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    main_cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    recs = [json.loads(x) for x in (out / "episodes.jsonl").read_text().splitlines()]
    calls = built[-1].calls
    steady = float("nan")
    if len(calls) > 2:
        span = calls[-1][0] - calls[0][0]
        steady = sum(c[1] for c in calls[:-1]) / span if span > 0 else float("nan")
    return {"config": label, "policy": policy if label == "noop" else label, "workers": workers,
            "envs_per_worker": epw, "slots": workers * epw, "overlap": overlap, "act_threads": act_threads,
            "image_buffers": image_buffers,
            "renderer": res["renderer"],
            "device": device, "episodes": len(recs), "steps": sum(r["steps"] for r in recs), "wall_s": wall,
            "steps_per_s": sum(r["steps"] for r in recs) / wall, "steady_steps_per_s": steady,
            "act_calls": len(calls), "act_rows": sum(c[1] for c in calls) / max(1, len(calls)),
            "act_ms": 1000 * sum(c[2] for c in calls) / max(1, len(calls)),
            "act_share": sum(c[2] for c in calls) / wall, "errors": res["overall"]["errors"],
            "main_cpu_ms_per_step": 1000 * main_cpu / max(1, sum(r["steps"] for r in recs))}


def bare_rate(image_size: int = 128, wrist_size: int = 84, max_steps: int = 40, steps: int = 400,
              renderer: str = "tiny") -> dict:
    """Reference: env steps/s of a bare noop loop in this process, over about ``steps`` steps."""
    import numpy as np

    from vlabench.env import make_env

    env = make_env("pick", "seen", image_size=image_size, wrist_size=wrist_size, max_steps=max_steps,
                   renderer=renderer)
    a = np.zeros(7, np.float32)
    a[6] = -1
    done_steps, t0, i, used = 0, time.perf_counter(), 0, renderer
    while done_steps < steps:
        _, info = env.reset(seed=1_500_000 + i)
        used = info.get("renderer", renderer)
        i += 1
        done = False
        while not done:
            _, _, term, trunc, _ = env.step(a)
            done_steps += 1
            done = term or trunc
    env.close()
    wall = time.perf_counter() - t0
    return {"steps": done_steps, "wall_s": wall, "steps_per_s": done_steps / wall, "renderer": used}


def table(rows: list[dict], bare: float, cores: int) -> str:
    cols = ["policy", "workers x envs", "slots", "overlap", "act threads", "frames", "act rows", "act ms", "act share",
            "episodes", "env steps", "wall s", "steps/s", "steady steps/s", "vs bare", "main CPU ms/step", "errors"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        ideal = bare * min(r["workers"], cores)
        lines.append(
            f"| {r['config']} | {r['workers']} x {r['envs_per_worker']} | {r['slots']} | "
            f"{'on' if r['overlap'] else 'off'} | {_threads(r['act_threads'])} | "
            f"{'shm' if r.get('image_buffers', True) else 'pickled'} | {r['act_rows']:.1f} | "
            f"{r['act_ms']:.1f} | "
            f"{100 * r['act_share']:.0f}% | {r['episodes']} | {r['steps']} | {r['wall_s']:.1f} | "
            f"{r['steps_per_s']:.1f} | {r['steady_steps_per_s']:.1f} | {r['steady_steps_per_s'] / ideal:.2f} | "
            f"{r.get('main_cpu_ms_per_step', float('nan')):.2f} | "
            f"{r['errors']} |")
    return "\n".join(lines)


def _threads(n: int) -> str:
    return {0: "auto", -1: "torch default"}.get(n, str(n))


def parse_combos(text: str) -> list[tuple[int, int]]:
    out = []
    for item in text.split(","):
        w, sep, e = item.strip().partition("x")
        if not sep or not w.isdigit() or not e.isdigit() or int(w) < 1 or int(e) < 1:
            raise ValueError(f"combo {item!r} must look like WORKERSxENVS_PER_WORKER, e.g. 2x8")
        out.append((int(w), int(e)))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--policies", default="noop,rt1,diffusion",
                    help=f"noop, sleepMS (act sleeps MS ms: an accelerator stand-in) and/or {', '.join(RECIPES)}")
    ap.add_argument("--combos", default="1x1,2x8,2x32", help="WORKERSxENVS_PER_WORKER list")
    ap.add_argument("--overlap", default="on,off", help="on, off or both (on,off)")
    ap.add_argument("--episodes-per-slot", type=float, default=2.0, help="episodes per row = this x slots")
    ap.add_argument("--min-episodes", type=int, default=8)
    ap.add_argument("--max-steps", type=int, default=40)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--wrist-size", type=int, default=84)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--act-threads", default="0", help="EvalConfig.act_threads values to compare, e.g. 0,-1 "
                    "(0 = cores the workers leave free, -1 = torch's default)")
    ap.add_argument("--text-encoder", default=None, help="sentence encoder of the learned policies "
                    "(default: the packaged MiniLM; 'hash' needs no weights)")
    ap.add_argument("--image-buffers", default="on", help="frames through shared memory: on, off or on,off")
    ap.add_argument("--repeat", type=int, default=1, help="run each configuration this often, interleaved")
    ap.add_argument("--out", default=None, help="also write the markdown here")
    ap.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    from vlabench.fileio import write_json_atomic, write_text_atomic

    policies = [p for p in args.policies.split(",") if p]
    for p in policies:
        if p != "noop" and p not in RECIPES and not (p.startswith("sleep") and p[5:].replace(".", "", 1).isdigit()):
            raise ValueError(f"unknown policy {p!r}; valid: noop, sleepMS (e.g. sleep20), {', '.join(RECIPES)}")
    overlaps = [{"on": True, "off": False}[o] for o in args.overlap.split(",")]
    threads = [int(t) for t in args.act_threads.split(",")]
    buffers = [{"on": True, "off": False}[b] for b in args.image_buffers.split(",")]
    cores = os.cpu_count() or 1
    kw = dict(image_size=args.image_size, wrist_size=args.wrist_size, max_steps=args.max_steps, device=args.device)
    bare = [bare_rate(args.image_size, args.wrist_size, args.max_steps)]
    print(f"reference: bare env loop {bare[0]['steps_per_s']:.1f} steps/s", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="vlabench-infer-") as tmp:
        for p in policies:
            sleep_ms = float(p[5:]) if p.startswith("sleep") else 0.0
            learned = p in RECIPES
            spec = str(policy_checkpoint(p, Path(tmp) / "ckpt", args.text_encoder)) if learned else "noop"
            for w, e in parse_combos(args.combos):
                for rep in range(args.repeat):  # interleaved A/B/A/B: the machine's load drifts
                    for ov, thr, shm in [(o, t, b) for o in (overlaps if w * e > 1 else [True]) for t in threads
                                         for b in buffers]:
                        n = max(args.min_episodes, math.ceil(args.episodes_per_slot * w * e))
                        row = harness_row(p, spec, w, e, ov, n, Path(tmp), act_threads=thr, sleep_ms=sleep_ms,
                                          image_buffers=shm, **kw)
                        rows.append({**row, "rep": rep})
                        print(table(rows[-1:], bare[0]["steps_per_s"], cores).splitlines()[-1], flush=True)
    bare.append(bare_rate(args.image_size, args.wrist_size, args.max_steps))
    ref = sum(b["steps_per_s"] for b in bare) / len(bare)
    head = (f"## eval harness throughput by policy ({args.image_size}px front, {args.wrist_size}px wrist, "
            f"max_steps {args.max_steps}, device {args.device}, {cores} cores, load avg {os.getloadavg()[0]:.1f} "
            f"at the end)\n\nreference: bare env loop, one process, measured before and after the rows: "
            f"{' and '.join(format(b['steps_per_s'], '.1f') for b in bare)} env steps/s "
            f"('vs bare' uses their mean, {ref:.1f})\n")
    text = head + "\n" + table(rows, ref, cores)
    if args.repeat > 1:
        text += "\n\nmedians over the repeats:\n\n" + table(medians(rows), ref, cores)
    print("\n" + text)
    if args.out:
        write_text_atomic(args.out, text + "\n")
    if args.json:
        write_json_atomic(args.json, {"bare": bare, "rows": rows, "cores": cores})


def medians(rows: list[dict]) -> list[dict]:
    """One row per configuration with the median of every number over its repeats."""
    import statistics

    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        key = (r["config"], r["workers"], r["envs_per_worker"], r["overlap"], r["act_threads"], r["image_buffers"])
        groups.setdefault(key, []).append(r)
    out = []
    for rs in groups.values():
        m = dict(rs[0])
        for k, v in rs[0].items():
            if isinstance(v, float):
                m[k] = statistics.median(r[k] for r in rs)
        m["config"] = f"{rs[0]['config']} (median of {len(rs)})"
        out.append(m)
    return out


if __name__ == "__main__":
    main()
