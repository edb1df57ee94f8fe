"""Does a policy act like the expert on the expert's own states? A diagnostic for closed-loop failures.

The env is driven by the scripted expert; at every step the policy is asked for its action on the same
observation (its history is the expert's trajectory), and the two are compared: mean absolute error of
each translation axis (dx, dy, dz: in the default front view x runs away from the camera, y across it),
cosine between the translations where the expert moves (|dxyz| > 0.2), and
how often the gripper commands agree in sign. A policy that agrees well here but fails in closed loop
drifts off the demonstrated states; one that disagrees here has not learned (or is fed differently
from how it was trained).

    python benchmarks/action_agreement.py --policy runs/train/rt1 --cells pick:seen,place:seen --seeds 200000,200001
        [--option decode=mean] [--device cpu]
"""

from __future__ import annotations

import argparse
import os

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")


def agreement(policy, task: str, split: str, seeds: list[int]) -> dict:
    import torch

    from vlabench.contracts import single_obs_batch
    from vlabench.env import make_env

    env = make_env(task, split=split)
    err, cos, grip = [], [], []
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        for t in range(env.max_steps):
            expert = env.unwrapped.expert_action()
            batch = single_obs_batch(obs, first=t == 0, seed=seed, task=task, split=split, expert_action=expert)
            with torch.inference_mode():
                act = np.asarray(policy.act(batch), np.float32)[0]
            err.append(np.abs(act[:3] - expert[:3]))
            if np.linalg.norm(expert[:3]) > 0.2:
                cos.append(float(act[:3] @ expert[:3] / (np.linalg.norm(act[:3]) * np.linalg.norm(expert[:3]) + 1e-9)))
            grip.append(bool(np.sign(act[6]) == np.sign(expert[6])))
            obs, _, terminated, truncated, _ = env.step(expert)
            if terminated or truncated:
                break
    env.close()
    return {"steps": len(err), "abs_err": np.mean(err, axis=0).tolist(), "xyz_cos": float(np.mean(cos)) if cos else float("nan"),
            "moving_steps": len(cos), "gripper_agree": float(np.mean(grip))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", required=True, help="checkpoint or run directory, or a built-in (random, expert)")
    ap.add_argument("--cells", default="pick:seen", help="comma-separated task:split")
    ap.add_argument("--seeds", default="200000,200001,200002", help="comma-separated episode seeds")
    ap.add_argument("--option", action="append", default=[], help="policy option KEY=VALUE (repeatable)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    import torch

    from vlabench.agents.spec import PolicySpec

    torch.set_num_threads(1)
    policy = PolicySpec.parse(args.policy, args.option).build(args.device)
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"policy {args.policy}, seeds {seeds}\n\n| cell | steps | abs error dx | dy | dz | cosine (moving steps) | "
          "gripper sign agrees |\n|---|---:|---:|---:|---:|---:|---:|")
    cells = args.cells.split(",")
    bad = [c for c in cells if c.count(":") != 1]
    if bad:
        raise SystemExit(f"--cells takes task:split pairs separated by commas (e.g. pick:seen,place:seen), got {bad}")
    for cell in cells:
        task, split = cell.split(":")
        r = agreement(policy, task, split, seeds)
        print(f"| {cell} | {r['steps']} | {' | '.join(f'{e:.3f}' for e in r['abs_err'])} | "
              f"{r['xyz_cos']:.2f} ({r['moving_steps']}) | "
              f"{r['gripper_agree']:.2f} |")


if __name__ == "__main__":
    main()
