"""Subprocess entry for the tests: `python train_script.py [--dump-weights] <vlabench train args>`.

Registers the tiny test model and the synthetic dataset, then runs the real CLI path. With
--dump-weights (used under torchrun) every rank writes its final weights to OUT/rank<R>.safetensors.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tiny_train_model  # noqa: E402
from vlabench.models import registry  # noqa: E402
from vlabench.train import command, loop  # noqa: E402

registry.MODULES["tiny"] = "tiny_train_model"
loop.make_dataset = lambda d, spec, skip_bad=False, cache=False: tiny_train_model.SyntheticDemos(d, **spec)
loop.read_dataset_meta = lambda d, skip_bad=False: tiny_train_model.read_synthetic_meta(d)


def main(argv: list[str]) -> None:
    if "--dump-weights" not in argv:
        from vlabench.cli import main as cli_main

        sys.exit(cli_main(["train", *argv]))
    argv = [a for a in argv if a != "--dump-weights"]
    from safetensors.torch import save_file

    args = command.parse_train_args(argv)
    out = args.out
    trainer = loop.Trainer("tiny", args.model, args.train, args.data, out, args.resume)
    try:
        trainer.fit()
        state = {k: v.detach().clone().contiguous() for k, v in trainer.model.state_dict().items()}
        save_file(state, str(Path(out) / f"rank{trainer.rank}.safetensors"))
        (Path(out) / f"rank{trainer.rank}.samples").write_text(
            " ".join(str(i) for b in trainer.sampler.epoch_batches(0) for i, _ in b))
    finally:
        trainer.close()


if __name__ == "__main__":
    main(sys.argv[1:])
