"""How large the task's target object appears in the front camera, and whether the camera keeps the
workspace and the gripper in view. Used to choose the default front camera (issue TABLE, item 1).

For each cell, N scenes (the cell's first N seeds of ``--suite``, as ``expert_success.py`` derives
them) are reset at ``--size`` px with the segmentation mask on, and the target's (role "target")
pixel bounding box is measured: its larger side is the "size". The table also reports:
- ``cut``: scenes where the target's box touches the image border (partly out of view), and scene
  objects of any role (containers and pads included) whose box does;
- ``pixel in mask``: scene objects whose ``env.scene_info()`` pixel (the projection the VQA data uses)
  lies in the object's own segmentation mask, dilated by one pixel (occluded objects are left out);
- with ``--rollouts K``: over K expert episodes per cell, the share of steps with the gripper in view
  (fingertip point and the finger roots 5 cm above it, both at least ``--margin`` px inside the image);
- whether the object region's corners project inside the image, and the same for the region expanded
  by 4.5 cm (half the largest placement radius: how far a container can reach past the region).

The camera is the package default unless ``--fov``/``--eye``/``--target`` say otherwise, so an old or
candidate camera can be measured with the same code:

    python benchmarks/target_size.py [--n 30] [--skip 0] [--rollouts 5] [--fov 50 --eye 1.1,0,0.62 --target 0.4,0,0]
        [--out results/target_size_cpu.md [--append]]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")

CELLS = ("pick:seen", "place:seen", "push:seen", "stack:seen", "next_to:seen", "pad:seen",
         "relational:relational", "math:math", "category:semantic")
FINGER_LENGTH = 0.05
"""Metres from the fingertip point up to the finger roots at the hand: the gripper is in view when both
points are."""


def cell_seeds(suite_path: str, cells: list[str], n: int, skip: int = 0) -> dict[str, list[int]]:
    from vlabench.suite import load_suite

    suite = load_suite(suite_path)
    first: dict[str, int] = {}
    for e in suite.episodes:
        first.setdefault(f"{e.task}:{e.split}", e.seed - e.index)
    missing = [c for c in cells if c not in first]
    if missing:
        raise SystemExit(f"cells {missing} are not in {suite_path}; its cells: {', '.join(first)}")
    return {c: [first[c] + i for i in range(skip, skip + n)] for c in cells}


def bbox(mask: np.ndarray) -> tuple[int, int, bool] | None:
    """(width, height, touches the border) of a boolean mask's bounding box, None if empty."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows):
        return None
    h, w = mask.shape
    cut = rows[0] == 0 or cols[0] == 0 or rows[-1] == h - 1 or cols[-1] == w - 1
    return int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1), bool(cut)


def pixel_in_mask(seg: np.ndarray, body: int, uv) -> bool | None:
    """Whether pixel ``uv`` (u right, v down) is in ``body``'s mask dilated by one pixel; None when the
    body has no visible pixel (occluded)."""
    mask = seg == body
    if not mask.any():
        return None
    u, v = int(np.floor(uv[0])), int(np.floor(uv[1]))
    h, w = seg.shape
    window = mask[max(0, v - 1):min(h, v + 2), max(0, u - 1):min(w, u + 2)]
    return bool(window.any())


def in_view(uv: np.ndarray, size: int, margin: float) -> np.ndarray:
    return (uv[:, 0] >= margin) & (uv[:, 0] <= size - margin) & (uv[:, 1] >= margin) & (uv[:, 1] <= size - margin)


def measure_cell(cell: str, seeds: list[int], size: int, fov: float, rollouts: int, margin: float) -> dict:
    from vlabench.env import make_env
    from vlabench.sim import camera

    task, split = cell.split(":")
    env = make_env(task, split, image_size=size, wrist_size=16, segmentation=True, front_fov=fov)
    sizes, widths, heights, cut, inside, total, objects_cut = [], [], [], 0, 0, 0, 0
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        seg = obs["segmentation"]
        target = env.scene.by_role("target")
        box = bbox(seg == target.body)
        if box is None:
            sizes.append(0), widths.append(0), heights.append(0)
        else:
            sizes.append(max(box[:2])), widths.append(box[0]), heights.append(box[1])
            cut += box[2]
        for obj, info in zip(env.scene.objects, env.scene_info()["objects"]):
            other = bbox(seg == obj.body)
            objects_cut += bool(other and other[2])
            ok = pixel_in_mask(seg, obj.body, info["pixel"])
            if ok is not None:
                inside += ok
                total += 1
    steps, seen_steps = 0, 0
    for seed in seeds[:rollouts]:
        env.reset(seed=seed)
        while True:
            _, _, term, trunc, info = env.step(env.expert_action())
            ee = env.world.robot.ee_pose()[0]
            uv = camera.project_to_front(np.array([ee, ee + [0, 0, FINGER_LENGTH]]), size, fov)
            steps += 1
            seen_steps += bool(in_view(uv, size, margin).all())
            if info["success"] or term or trunc:
                break
    env.close()
    s = np.asarray(sizes, float)
    return {"cell": cell, "n": len(seeds), "median": float(np.median(s)), "p10": float(np.percentile(s, 10)),
            "min": float(s.min()), "width": float(np.median(widths)), "height": float(np.median(heights)),
            "cut": cut, "objects_cut": objects_cut, "pixel_in_mask": (inside, total),
            "gripper_in_view": (seen_steps, steps), "sizes": sizes}


def region_in_view(size: int, fov: float, pad: float = 0.0) -> float:
    """Smallest distance (px) from the image border of the object region's corners at table height, the
    region expanded by ``pad`` m; negative when a corner is out of view."""
    from vlabench.sim import camera
    from vlabench.sim import constants as C

    (x0, y0), (x1, y1) = C.OBJECT_REGION_LOW, C.OBJECT_REGION_HIGH
    corners = np.array([(x, y, 0.0) for x in (x0 - pad, x1 + pad) for y in (y0 - pad, y1 + pad)])
    uv = camera.project_to_front(corners, size, fov)
    return float(np.min(np.concatenate([uv, size - uv], axis=1)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--suite", default="envs/emergent.toml")
    ap.add_argument("--cells", default=",".join(CELLS), help="comma-separated task:split cells")
    ap.add_argument("--n", type=int, default=30, help="scenes per cell")
    ap.add_argument("--skip", type=int, default=0, help="first episode index (measure other scenes)")
    ap.add_argument("--size", type=int, default=128, help="front image size")
    ap.add_argument("--rollouts", type=int, default=0, help="expert episodes per cell for the gripper check")
    ap.add_argument("--margin", type=float, default=1.0, help="pixels from the border that count as in view")
    ap.add_argument("--fov", type=float, default=None, help="front camera FOV (default: the package's)")
    ap.add_argument("--eye", default=None, help="front camera position x,y,z (default: the package's)")
    ap.add_argument("--target", default=None, help="front camera look-at point x,y,z (default: the package's)")
    ap.add_argument("--out", default="", help="also write the markdown table here (atomically)")
    ap.add_argument("--append", action="store_true", help="append to --out instead of replacing it")
    args = ap.parse_args(argv)

    from vlabench.sim import camera

    # The front camera's pose is module state that front_view() reads, so a candidate is measured by
    # setting it here (this process only); the FOV is the env's own front_fov option.
    if args.eye:
        camera.FRONT_EYE = tuple(float(x) for x in args.eye.split(","))
    if args.target:
        camera.FRONT_TARGET = tuple(float(x) for x in args.target.split(","))
    fov = camera.FRONT_FOV if args.fov is None else args.fov
    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    seeds = cell_seeds(args.suite, cells, args.n, args.skip)
    t0 = time.time()
    rows = [measure_cell(c, seeds[c], args.size, fov, args.rollouts, args.margin) for c in cells]
    allsizes = np.concatenate([r["sizes"] for r in rows]).astype(float)
    slack, slack_pad = region_in_view(args.size, fov), region_in_view(args.size, fov, 0.045)
    lines = [f"Front camera eye {tuple(camera.FRONT_EYE)}, target {tuple(camera.FRONT_TARGET)}, FOV {fov:g}; "
             f"{args.size} px; {args.n} scenes per cell (episode indices {args.skip}..{args.skip + args.n - 1} of "
             f"{args.suite}); {time.time() - t0:.0f} s.",
             "", f"Command: `python benchmarks/target_size.py {' '.join(sys.argv[1:] if argv is None else argv)}`",
             "",
             "| cell | n | target size median (px) | p10 | min | median width x height | targets cut by border | "
             "objects cut | pixel in mask | gripper in view (steps) |",
             "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        (pin, ptot), (gin, gtot) = r["pixel_in_mask"], r["gripper_in_view"]
        grip = f"{gin}/{gtot}" if gtot else "n/a"
        lines.append(f"| {r['cell']} | {r['n']} | {r['median']:.1f} | {r['p10']:.1f} | {r['min']:.0f} | "
                     f"{r['width']:.0f} x {r['height']:.0f} | {r['cut']} | {r['objects_cut']} | {pin}/{ptot} | "
                     f"{grip} |")
    gin = sum(r["gripper_in_view"][0] for r in rows)
    gtot = sum(r["gripper_in_view"][1] for r in rows)
    lines.append(f"| **all** | {len(allsizes)} | {np.median(allsizes):.1f} | {np.percentile(allsizes, 10):.1f} | "
                 f"{allsizes.min():.0f} | | {sum(r['cut'] for r in rows)} | {sum(r['objects_cut'] for r in rows)} | "
                 f"{sum(r['pixel_in_mask'][0] for r in rows)}/{sum(r['pixel_in_mask'][1] for r in rows)} | "
                 f"{f'{gin}/{gtot}' if gtot else 'n/a'} |")
    lines += ["", f"Object region corners at table height: closest {slack:.1f} px from the border; region expanded "
                  f"by 4.5 cm: {slack_pad:.1f} px (negative: out of view)."]
    text = "\n".join(lines)
    print(text)
    if args.out:
        from vlabench.fileio import write_text_atomic

        before = open(args.out).read() + "\n" if args.append and os.path.exists(args.out) else ""
        write_text_atomic(args.out, before + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
