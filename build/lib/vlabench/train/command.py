"""``vlabench train``: the command line of the training loop.

The recipe (``--recipe policies/NAME.toml``) names the model family, so the options depend on it:
:func:`args_class` reads the recipe named on the command line and builds the dataclass the CLI
parses, whose ``model`` and ``train`` defaults are the recipe's values. Every field can then be
overridden (``--model.n-layers 4 --train.steps 100``); ``--model.preset small`` changes every model
field the recipe leaves out, because presets resolve when the model is built (vlabench.models.configs).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Sequence

import tyro

from vlabench.train.config import TrainConfig, load_recipe

RECIPES_DIR = Path("policies")


@dataclass
class TrainArgs:
    """Train a policy from a recipe: vlabench train --recipe policies/NAME.toml --data DEMOS --out RUN.
    The recipe's [model] and [train] values become the defaults of --model.* and --train.* options,
    which `vlabench train --recipe R --help` lists."""

    recipe: Path
    """Policy recipe TOML (policies/*.toml); its values are the defaults of --model.* and --train.*."""
    data: Path
    """Demo dataset directory written by `vlabench collect`."""
    out: Path
    """Run directory: metrics.csv and checkpoints (OUT/latest)."""
    resume: bool = False
    """Continue from OUT/latest (model, optimizer, RNG, data order)."""
    skip_bad: bool = False
    """Train on the readable shards when some are corrupt (they are named and left out), instead of stopping."""


def _recipe_in(argv: Sequence[str]) -> Path | None:
    argv = list(argv)
    for i, a in enumerate(argv):
        if a == "--recipe" and i + 1 < len(argv):
            return Path(argv[i + 1])
        if a.startswith("--recipe="):
            return Path(a.split("=", 1)[1])
    return None


def args_class(argv: Sequence[str]) -> type:
    """The dataclass ``vlabench train`` parses ``argv`` into: TrainArgs plus ``model`` and ``train``
    fields whose defaults come from the recipe named by ``--recipe`` (TrainArgs alone without one)."""
    recipe = _recipe_in(argv)
    if recipe is None:
        known = ", ".join(sorted(p.name for p in RECIPES_DIR.glob("*.toml"))) or "none found here"
        TrainArgs.__doc__ = (TrainArgs.__doc__ or "") + f"\n\nRecipes in {RECIPES_DIR}/: {known}."
        return TrainArgs
    name, model_cfg, train_cfg = load_recipe(recipe)

    def arg(help_: str) -> Any:
        return tyro.conf.arg(help=help_)

    return dataclasses.make_dataclass(
        "TrainArgs",
        [("model", Annotated[type(model_cfg), arg(f"config of model {name!r} (defaults: {recipe})")],
          field(default_factory=lambda: model_cfg)),
         ("train", Annotated[TrainConfig, arg(f"training loop settings (defaults: {recipe})")],
          field(default_factory=lambda: train_cfg))],
        bases=(TrainArgs,))


def parse_train_args(argv: Sequence[str]) -> Any:
    """``argv`` -> the parsed args dataclass (``.recipe .data .out .resume .skip_bad .model .train``)."""
    argv = list(argv)
    cls = args_class(argv)
    if cls is TrainArgs and not any(a in ("-h", "--help") for a in argv):
        raise SystemExit("vlabench train: --recipe is required, e.g. --recipe policies/rt1_small.toml "
                         "(then --data DIR --out DIR and optional --model.* / --train.* overrides; "
                         "`vlabench train --recipe R --help` lists them)")
    return tyro.cli(cls, args=argv, prog="vlabench train", description=cls.__doc__)


def run(args: Any) -> Path:
    """Entry of ``vlabench train`` (argv list or parsed args): train, print the checkpoint, return it."""
    from vlabench.train.loop import train

    if not dataclasses.is_dataclass(args):
        args = parse_train_args(args)
    name, recipe_model, recipe_train = load_recipe(args.recipe)
    model_cfg, train_cfg = getattr(args, "model", recipe_model), getattr(args, "train", recipe_train)
    latest = train(name, model_cfg, train_cfg, args.data, args.out, args.resume, skip_bad=args.skip_bad)
    print(f"checkpoint: {latest}")
    return latest
