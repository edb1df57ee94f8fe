"""Watch a policy act in closed loop on one episode: every few steps, the hand position, the target
object's position, the gripper opening, and the policy's (dx, dy, dz, gripper) next to what the expert
would do from the same state. A diagnostic for how a policy fails (used for the lite track's failure notes in the README).

    python benchmarks/closed_loop_trace.py --policy RUN/train/rt1 --task pick --split seen --seed 1100000 \
        [--option decode=mean] [--every 3]
"""

from __future__ import annotations

import argparse
import os

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", required=True)
    ap.add_argument("--task", default="pick")
    ap.add_argument("--split", default="seen")
    ap.add_argument("--seed", type=int, default=1100000)
    ap.add_argument("--option", action="append", default=[], help="policy option KEY=VALUE (repeatable)")
    ap.add_argument("--every", type=int, default=3, help="print every N-th step")
    args = ap.parse_args()
    import pybullet as p
    import torch

    from vlabench.env import make_env
    from vlabench.policy import make_policy

    torch.set_num_threads(1)
    policy = make_policy(args.policy, "cpu", **dict(o.split("=", 1) for o in args.option))
    env = make_env(args.task, split=args.split)
    obs, _ = env.reset(seed=args.seed)
    u = env.unwrapped
    target = next((o for o in u.scene.objects if getattr(o, "role", None) == "target"), u.scene.objects[0])
    print(f"{obs['instruction']!r}; objects: {[o.spec.name for o in u.scene.objects]}; target: {target.spec.name}")
    for t in range(u.max_steps):
        expert = u.expert_action()
        batch = {"image": obs["image"][None], "wrist_image": obs["wrist_image"][None], "state": obs["state"][None],
                 "instruction": [obs["instruction"]], "slot": np.array([0]), "is_first": np.array([t == 0]),
                 "seed": np.array([args.seed]), "index": np.array([0]), "task": [args.task], "split": [args.split],
                 "expert_action": expert[None]}
        with torch.inference_mode():
            act = np.asarray(policy.act(batch), np.float32)[0]
        if t % args.every == 0:
            obj = p.getBasePositionAndOrientation(target.body, physicsClientId=u.world.client)[0]
            print(f"step {t:3d}  hand {np.round(obs['state'][:3], 3)}  target {np.round(obj, 3)}  "
                  f"gripper {obs['state'][7]:.3f}  policy {np.round(act[[0, 1, 2, 6]], 2)}  "
                  f"expert {np.round(expert[[0, 1, 2, 6]], 2)}")
        obs, _, terminated, truncated, info = env.step(act)
        if terminated or truncated:
            print(f"ended at step {t}: success {info['success']}")
            break


if __name__ == "__main__":
    main()
