"""Watch a policy act in closed loop on one episode: every few steps, the hand position, the target
object's position, the gripper opening, and the policy's (dx, dy, dz, gripper) next to what the expert
would do from the same state. A diagnostic for how a policy fails (used for the lite track's failure notes in
the README and results/lite/DISCUSSION.md). ``--filmstrip F.png`` also saves the front camera at each printed
step as one captioned contact sheet (the policy's own view, at the suite's resolution, scaled up 2x).

    python benchmarks/closed_loop_trace.py --policy RUN/train/rt1 --task pick --split seen --seed 1100000 \
        [--option decode=mean] [--every 3] [--filmstrip rt1_pick.png]
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
    ap.add_argument("--filmstrip", default=None, help="save the front camera at the printed steps to this PNG")
    ap.add_argument("--columns", type=int, default=5, help="filmstrip frames per row")
    args = ap.parse_args()
    if args.every < 1 or args.columns < 1:
        ap.error("--every and --columns must be at least 1")
    if args.filmstrip and not args.filmstrip.endswith(".png"):
        ap.error(f"--filmstrip must name a .png file, got {args.filmstrip!r}")
    import pybullet as p
    import torch

    from vlabench.contracts import single_obs_batch
    from vlabench.data.video import caption
    from vlabench.env import make_env
    from vlabench.agents.spec import PolicySpec

    torch.set_num_threads(1)
    policy = PolicySpec.parse(args.policy, args.option).build("cpu")
    env = make_env(args.task, split=args.split)
    obs, _ = env.reset(seed=args.seed)
    u = env.unwrapped
    target = next((o for o in u.scene.objects if getattr(o, "role", None) == "target"), u.scene.objects[0])
    print(f"{obs['instruction']!r}; objects: {[o.spec.name for o in u.scene.objects]}; target: {target.spec.name}")
    frames = []
    for t in range(u.max_steps):
        expert = u.expert_action()
        batch = single_obs_batch(obs, first=t == 0, seed=args.seed, task=args.task, split=args.split,
                                 expert_action=expert)
        with torch.inference_mode():
            act = np.asarray(policy.act(batch), np.float32)[0]
        if t % args.every == 0:
            obj = p.getBasePositionAndOrientation(target.body, physicsClientId=u.world.client)[0]
            print(f"step {t:3d}  hand {np.round(obs['state'][:3], 3)}  target {np.round(obj, 3)}  "
                  f"gripper {obs['state'][7]:.3f}  policy {np.round(act[[0, 1, 2, 6]], 2)}  "
                  f"expert {np.round(expert[[0, 1, 2, 6]], 2)}")
            frames.append(caption(upscale(obs["image"]), f"t={t}: {'closing' if act[6] > 0 else 'open'}"))
        obs, _, terminated, truncated, info = env.step(act)
        if terminated or truncated:
            print(f"ended at step {t}: success {info['success']}")
            break
    if args.filmstrip:
        write_png(args.filmstrip, contact_sheet(frames, args.columns))
        print(f"wrote {args.filmstrip} ({len(frames)} frames)")


def upscale(image: np.ndarray, k: int = 2) -> np.ndarray:
    return image.repeat(k, axis=0).repeat(k, axis=1)


def contact_sheet(frames: list[np.ndarray], columns: int) -> np.ndarray:
    """Equal-sized frames tiled row by row; the last row is padded with black."""
    h, w, c = frames[0].shape
    rows = -(-len(frames) // columns)
    sheet = np.zeros((rows * h, min(columns, len(frames)) * w, c), np.uint8)
    for i, f in enumerate(frames):
        r, q = divmod(i, columns)
        sheet[r * h:(r + 1) * h, q * w:(q + 1) * w] = f
    return sheet


def write_png(path: str, image: np.ndarray) -> None:
    from PIL import Image

    from vlabench.fileio import atomic_path

    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(image).save(tmp)


if __name__ == "__main__":
    main()
