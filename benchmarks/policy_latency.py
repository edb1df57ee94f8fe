"""act() latency per policy at batch 1, 16 and 64, against RT-1's published 3 Hz control budget (333 ms).

Each policy is built from its config with random weights (latency does not depend on the weights)
and the packaged pretrained parts, and called on synthetic observations shaped like the env's
(128x128 front, 84x84 wrist). For chunked policies the table gives both the step that samples a
new chunk (diffusion: a DDIM or DDPM solve; goal-diffusion: a subgoal plus a chunk) and the mean
over a full chunk of steps, since queued steps cost almost nothing.

    python benchmarks/policy_latency.py [--preset small|base] [--device cpu|cuda] [--batches 1,16,64]
        [--only RT-1,DDIM] [--out FILE.md]

OMP_NUM_THREADS defaults to 1 here (set it before running to change that): one core per policy, as in
the eval harness, whose workers hold the other cores (EvalConfig.act_threads).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

BUDGET_MS = 1000 / 3
STATS = {k: {"min": [-1.0] * d, "max": [1.0] * d, "q01": [-1.0] * d, "q99": [1.0] * d, "mean": [0.0] * d,
             "std": [1.0] * d} for k, d in (("action", 7), ("state", 8))}


def obs_batch(n: int, first: bool) -> dict:
    rng = np.random.default_rng(0)
    return {"image": rng.integers(0, 255, (n, 128, 128, 3), dtype=np.uint8),
            "wrist_image": rng.integers(0, 255, (n, 84, 84, 3), dtype=np.uint8),
            "state": rng.normal(size=(n, 8)).astype(np.float32), "instruction": ["pick up the red block"] * n,
            "slot": np.arange(n), "is_first": np.full(n, first), "seed": np.arange(n)}


def build(name: str, preset: str, device: str, **overrides):
    from vlabench.models.registry import get_spec

    spec = get_spec("diffusion" if name.startswith("diffusion") else name)
    model = spec.model_cls(spec.config_cls(preset=preset, **overrides), STATS).to(device).eval()
    return spec.policy_cls(model, device)


def time_steps(policy, n: int, steps: int, device: str) -> list[float]:
    policy.reset(n)
    out = []
    for t in range(steps):
        batch = obs_batch(n, first=t == 0)
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        policy.act(batch)
        if device == "cuda":
            torch.cuda.synchronize()
        out.append(1000 * (time.perf_counter() - t0))
    return out


CASES = [  # (label, registry name, config overrides, steps timed: 1 = every step samples)
    ("RT-1", "rt1", {}, 4),
    ("Diffusion Policy, DDIM-10", "diffusion", {"scheduler": "ddim", "num_inference_steps": 10}, 8),
    ("Diffusion Policy, DDPM-100", "diffusion", {"scheduler": "ddpm", "num_inference_steps": 100}, 8),
    ("RT-2 (MiniLM PaLI-style)", "rt2", {}, 4),
    ("goal-diffusion (subgoal + chunk)", "goal-diffusion", {}, 8),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda")
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument("--only", default="", help="comma-separated case labels substrings to run")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from vlabench.devices import resolve_device

    args.device = resolve_device(args.device)
    torch.set_grad_enabled(False)
    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    lines = [f"act() latency, preset {args.preset}, {device_name}; budget {BUDGET_MS:.0f} ms (RT-1 at 3 Hz)", "",
             "| policy | batch | first step (ms) | mean per step (ms) | within 3 Hz |", "|---|---:|---:|---:|---|"]
    for label, name, overrides, steps in CASES:
        if args.only and not any(k in label for k in args.only.split(",")):
            continue
        policy = build(name, args.preset, args.device, **overrides)
        for n in map(int, args.batches.split(",")):
            time_steps(policy, n, 1, args.device)  # warm-up: allocations, caches, text embeddings
            ms = time_steps(policy, n, steps, args.device)
            mean = float(np.mean(ms))
            lines.append(f"| {label} | {n} | {ms[0]:.1f} | {mean:.1f} | {'yes' if mean <= BUDGET_MS else 'no'} |")
            print(lines[-1], flush=True)
    text = "\n".join(lines)
    print(text)
    if args.out:
        from vlabench.fileio import write_text_atomic

        write_text_atomic(args.out, text + "\n")


if __name__ == "__main__":
    main()
