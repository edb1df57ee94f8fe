"""How well a model's auxiliary geometry head locates the target, by step of the episode, on held-out demos.

    python benchmarks/geometry_by_step.py --checkpoint RUN/best --data HELDOUT_DEMOS [--field target_minus_ee]

For a checkpoint with a geometry head (``visuomotor`` with ``aux_privileged``), it prints the RMS error
(cm, per axis) of the head's estimate of ``--field`` on the first frame, the second, and frames 2-9 of every
held-out episode, next to the RMS of the true value (what predicting zero would score). The demos make
their sideways move in the first one or two steps, so the first frames are where localization matters.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")

GROUPS = (("frame 0", range(0, 1)), ("frame 1", range(1, 2)), ("frames 2-9", range(2, 10)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", required=True, help="held-out demos (recorded with the privileged state)")
    ap.add_argument("--field", default="target_minus_ee")
    args = ap.parse_args()
    import torch

    from vlabench.contracts import privileged_slice
    from vlabench.data.dataset import DemoDataset
    from vlabench.models.blocks.aux_geometry import AUX_FIELDS, AUX_INDEX
    from vlabench.models.checkpoint import load_model

    if args.field not in AUX_FIELDS:
        ap.error(f"--field must be one of {', '.join(AUX_FIELDS)}")
    torch.set_num_threads(1)
    model, _ = load_model(args.checkpoint, "cpu")
    if not getattr(model.cfg, "aux_privileged", 0):
        ap.error(f"{args.checkpoint} has no geometry head")
    model.eval()
    ds = DemoDataset(args.data, **model.data_spec())
    sl = privileged_slice(args.field)
    col = AUX_INDEX.index(sl.start)
    episodes = ds.episode_info()
    print(f"{args.checkpoint}: {args.field}, {len(episodes)} held-out episodes of {args.data}")
    for name, steps in GROUPS:
        errors, truths = [], []
        for ep in episodes:
            for t in steps:
                if t >= ep["length"]:
                    continue
                s = ds[ep["start"] + t]
                with torch.no_grad():
                    trunks = {cam: s[f"{cam}_features"][None, -1] for cam in model.cameras}
                    _, geometry = model(trunks, [s["instruction"]], s["state"][None])
                estimate = (geometry * model.aux_half_range + model.aux_center)[0, col:col + 3].numpy()
                truth = s["privileged"][-1, sl].numpy()
                errors.append(estimate - truth)
                truths.append(truth)
        rms = lambda a: np.round(100 * np.sqrt((np.asarray(a) ** 2).mean(0)), 2)  # noqa: E731
        print(f"  {name:10s} n={len(errors):4d}  RMS error x, y, z (cm) {rms(errors)}  RMS of the truth {rms(truths)}")


if __name__ == "__main__":
    main()
