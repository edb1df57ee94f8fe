"""One model's training in its own process: ``python -m vlabench.pipeline.trainjob SPEC.json``.

The pipeline's train stage starts one of these per model (several at once on a GPU), so each run has
its own torch threads, CUDA context and memory, and a crash stays in its process. SPEC.json holds
``{"recipe", "model", "train", "data", "out", "threads"}``; the run always resumes what ``out`` holds.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    import torch

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    from vlabench.train.config import load_recipe
    from vlabench.train.loop import train

    name, model_cfg, train_cfg = load_recipe(spec["recipe"], spec.get("model"), spec.get("train"))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="--resume: no checkpoint")
        train(name, model_cfg, train_cfg, spec["data"], spec["out"], resume=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
