"""Feed a policy the recorded observations of demos and print its actions next to the demos' own: where along
an episode a policy disagrees with the expert on the expert's own states (open loop; no simulator).
A diagnostic next to ``closed_loop_trace.py``, which follows the policy's own states.

    python benchmarks/open_loop_replay.py --policy RUN/best --data HELDOUT_DEMOS [--task pick] [--episodes 3]
        [--option KEY=VALUE ...] [--every 4]

It prints (dx, dy, dz, gripper) of both per step (the first 6 steps and every ``--every``-th) and each
episode's mean absolute action error over all 7 dimensions.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", required=True)
    ap.add_argument("--data", required=True, help="demo directory (held-out episodes, not the training data)")
    ap.add_argument("--task", default="pick")
    ap.add_argument("--episodes", type=int, default=3)
    ap.add_argument("--option", action="append", default=[], help="policy option KEY=VALUE (repeatable)")
    ap.add_argument("--every", type=int, default=4)
    args = ap.parse_args()
    if args.episodes < 1 or args.every < 1:
        ap.error("--episodes and --every must be at least 1")
    import torch

    from vlabench.agents.spec import PolicySpec
    from vlabench.data.dataset import DemoDataset

    torch.set_num_threads(1)
    policy = PolicySpec.parse(args.policy, args.option).build("cpu")
    ds = DemoDataset(args.data, image_keys=("image", "wrist_image"))
    chosen = [ep for ep in ds.episode_info() if ep["task"] == args.task][: args.episodes]
    if not chosen:
        ap.error(f"no {args.task!r} episodes in {args.data}")
    policy.reset(1)
    for ep in chosen:
        print(f"{ep['task']}/{ep['split']} seed {ep['seed']}: {ep['instruction']!r}, {ep['length']} steps")
        errors = []
        for t in range(ep["length"]):
            s = ds[ep["start"] + t]
            obs = {"image": s["image"][-1].permute(1, 2, 0).numpy()[None],
                   "wrist_image": s["wrist_image"][-1].permute(1, 2, 0).numpy()[None],
                   "state": s["state"][-1].numpy()[None], "instruction": [s["instruction"]],
                   "slot": np.array([0]), "is_first": np.array([t == 0])}
            act = np.asarray(policy.act(obs), np.float32)[0]
            demo = s["action"][0].numpy()
            errors.append(float(np.abs(act - demo).mean()))
            if t < 6 or t % args.every == 0:
                print(f"  t={t:3d}  policy {np.round(act[[0, 1, 2, 6]], 2)}  demo {np.round(demo[[0, 1, 2, 6]], 2)}")
        print(f"  mean |policy - demo| over 7 dims: {np.mean(errors):.3f}")


if __name__ == "__main__":
    main()
