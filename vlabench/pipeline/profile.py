"""Pipeline profiles: ``policies/profiles/NAME.toml`` -> a validated :class:`Profile`.

A profile names everything one run of the pipeline needs -- the suites, the collection size, each
model's recipe and budget, the inference options -- so that a table is one command anyone can rerun::

    name = "lite"
    description = "CPU track: every cell of the benchmark at 50 episodes"
    train_suite = "envs/lite_train.toml"     # demos the models train on (kind "train")
    probe_suite = "envs/lite_probe.toml"     # held-out demos for the offline language probe (kind "train")
    eval_suite = "envs/lite_eval.toml"       # the benchmark episodes (kind "eval")
    device = "auto"                          # training and inference
    baselines = ["expert", "random"]         # built-in policies evaluated on the same manifest
    publish = "results/lite"                 # where `--stages publish` copies the results (optional)
    comparisons = [["rt1", "diffusion"], ["rt2_cotrain", "rt2_robot_only"]]   # paired tests in RESULTS.md
    discussion = "results/lite/DISCUSSION.md" # hand-written analysis RESULTS.md includes (optional)

    [collect]      # workers = 2, episodes = 0 (0 = as the suite lists), perturb = 0.0 (DART, train demos)
    [vqa]          # tasks, n_scenes, questions_per_scene: co-training data for models with vqa = true
    [train]        # parallel = 1: models trained at once (each in its own process)
    [eval]         # workers, envs_per_worker, max_episodes, bf16
    [probe]        # max_episodes_per_cell

    [[models]]
    name = "rt1"                              # run name: OUT/train/rt1, OUT/eval/rt1, ...
    recipe = "policies/rt1_small.toml"
    train = { steps = 3000, batch_size = 32, max_minutes = 40 }   # overrides of the recipe's [train]
    model = { image_size = 64 }              # overrides of the recipe's [model]
    options = ["decode=mean"]                # inference options (vlabench eval --policy-option)
    threads = 1                              # torch threads of its training process
    vqa = false                              # co-train on the profile's VQA data (RT-2)

    [[models]]
    name = "localizer"
    recipe = "policies/localizer.toml"
    uses = { controller = "state_mlp" }      # model.controller = the finished run of the earlier model "state_mlp"

Errors name the file, the table and the key.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROFILES_DIR = Path("policies/profiles")


@dataclass
class CollectSettings:
    workers: int = 2
    """Collection worker processes."""
    episodes: int = 0
    """Successful demos wanted from the train suite (0 = as many as it lists)."""
    probe_episodes: int = 0
    """Demos wanted from the probe suite (0 = as many as it lists)."""
    perturb: float = 0.0
    """DART perturbation of the train demos (``vlabench collect --perturb``); the probe demos stay clean."""


@dataclass
class VQASettings:
    tasks: list[str] = field(default_factory=lambda: ["pad:symbols", "math:math", "category:semantic"])
    """Scenes the VQA questions are about (``task`` or ``task:split``)."""
    n_scenes: int = 200
    questions_per_scene: int = 8
    seed_start: int = 900_000


@dataclass
class TrainSettings:
    parallel: int = 1
    """Models trained at the same time, each in its own process."""


@dataclass
class EvalSettings:
    workers: int = 2
    envs_per_worker: int = 1
    """Env slots per worker process: workers x envs_per_worker episodes run at once, one batched act."""
    max_episodes: int = 0
    """Evaluate only the first N manifest episodes (0 = all)."""
    bf16: bool = False
    """bf16 autocast for learned policies (CUDA)."""
    max_minutes: float = 0.0
    """Per policy: stop starting episodes after this many minutes (0 = no limit); a rerun continues."""


@dataclass
class ProbeSettings:
    max_episodes_per_cell: int | None = None
    """Held-out demos scored per (task, split) cell (None = all)."""
    batch_size: int = 32


@dataclass
class ModelRun:
    name: str
    recipe: str
    train: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    options: list[str] = field(default_factory=list)
    threads: int = 0
    """torch threads of the training process (0 = torch's default)."""
    vqa: bool = False
    uses: dict[str, str] = field(default_factory=dict)
    """``{model field: name of an earlier model of the profile}``: the field is set to that model's finished
    training run (its rollout-chosen ``best/`` when it has one), so this model trains after it and retrains
    when it changes (the localizer's frozen ``controller``)."""


@dataclass
class Profile:
    name: str
    path: Path
    train_suite: str
    probe_suite: str
    eval_suite: str
    description: str = ""
    device: str = "auto"
    baselines: list[str] = field(default_factory=lambda: ["expert", "random"])
    publish: str | None = None
    comparisons: list[list[str]] = field(default_factory=list)
    """Pairs of policies compared with McNemar tests in RESULTS.md (every model is also compared with random)."""
    discussion: str | None = None
    """A hand-written markdown file (what generalizes, how each policy fails) that RESULTS.md includes."""
    collect: CollectSettings = field(default_factory=CollectSettings)
    vqa: VQASettings = field(default_factory=VQASettings)
    train_settings: TrainSettings = field(default_factory=TrainSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    models: list[ModelRun] = field(default_factory=list)

    def model(self, name: str) -> ModelRun:
        for m in self.models:
            if m.name == name:
                return m
        raise ValueError(f"profile {self.name!r} has no model {name!r}; its models: {', '.join(m.name for m in self.models)}")

    @property
    def policies(self) -> list[str]:
        """Everything the eval stage evaluates: the models, then the baselines."""
        return [m.name for m in self.models] + list(self.baselines)


def resolve_profile_path(name_or_path: str | Path) -> Path:
    """``smoke`` -> policies/profiles/smoke.toml; a path is taken as it is."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        return p
    cand = PROFILES_DIR / f"{p}.toml"
    if cand.is_file():
        return cand
    known = ", ".join(sorted(q.stem for q in PROFILES_DIR.glob("*.toml"))) or "none"
    raise FileNotFoundError(f"no profile {str(name_or_path)!r}: not a file, and {cand} does not exist; known: {known}")


def _table(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a table")
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; valid: {', '.join(valid)}")
    try:
        return cls(**data)
    except TypeError as e:
        raise ValueError(f"{where}: {e}") from None


def load_profile(name_or_path: str | Path) -> Profile:
    """Read and check a profile (see the module docstring)."""
    path = resolve_profile_path(name_or_path)
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"profile {path} is not valid TOML: {e}") from None
    sections = {"collect": CollectSettings, "vqa": VQASettings, "train": TrainSettings, "eval": EvalSettings,
                "probe": ProbeSettings}
    top = {f.name for f in dataclasses.fields(Profile)} - {"path", "train_settings"} | {"train"}
    unknown = sorted(set(doc) - top)
    if unknown:
        raise ValueError(f"profile {path}: unknown key(s) {unknown}; valid: {', '.join(sorted(top))}")
    for key in ("name", "train_suite", "probe_suite", "eval_suite"):
        if not isinstance(doc.get(key), str):
            raise ValueError(f"profile {path}: {key} = \"...\" is required")
    kw = {k: v for k, v in doc.items() if k not in sections and k != "models"}
    for key, cls in sections.items():
        kw["train_settings" if key == "train" else key] = _table(cls, doc.get(key, {}), f"profile {path} [{key}]")
    models = [_table(ModelRun, m, f"profile {path} [[models]] #{i + 1}") for i, m in enumerate(doc.get("models", []))]
    names = [m.name for m in models]
    if len(set(names)) != len(names) or set(names) & set(kw.get("baselines", [])):
        raise ValueError(f"profile {path}: model names must be unique and differ from the baselines, got {names}")
    for i, m in enumerate(models):
        if not isinstance(m.uses, dict) or not all(isinstance(d, str) for d in m.uses.values()):
            raise ValueError(f"profile {path}: model {m.name!r}: uses must be a table of model names, e.g. "
                             f'uses = {{ controller = "state_mlp" }}, got {m.uses!r}')
        bad = {f: d for f, d in m.uses.items() if d not in names[:i]}
        if bad:
            raise ValueError(f"profile {path}: model {m.name!r} uses {bad}, which must name models listed before it "
                             f"({', '.join(names[:i]) or 'none'})")
        both = sorted(set(m.uses) & set(m.model))
        if both:
            raise ValueError(f"profile {path}: model {m.name!r} sets {both} both in model and in uses")
    pairs = kw.get("comparisons", [])
    if not all(isinstance(c, list) and len(c) == 2 for c in pairs):
        raise ValueError(f"profile {path}: comparisons must be pairs of policy names, got {pairs}")
    profile = Profile(path=path, models=models, **kw)
    bad = sorted({n for c in pairs for n in c} - set(profile.policies))
    if bad:
        raise ValueError(f"profile {path}: comparisons name {bad}, which are neither models nor baselines")
    _check_files(profile)
    return profile


def _check_files(p: Profile) -> None:
    for key in ("train_suite", "probe_suite", "eval_suite"):
        if not Path(getattr(p, key)).is_file():
            raise FileNotFoundError(f"profile {p.path}: {key} {getattr(p, key)} does not exist")
    for m in p.models:
        if not Path(m.recipe).is_file():
            raise FileNotFoundError(f"profile {p.path}: model {m.name!r} recipe {m.recipe} does not exist")
    from vlabench.agents.builtin import BUILTIN_POLICIES

    bad = [b for b in p.baselines if b not in BUILTIN_POLICIES]
    if bad:
        raise ValueError(f"profile {p.path}: unknown baselines {bad}; valid: {', '.join(BUILTIN_POLICIES)}")


def scaled(profile: Profile, factor: float) -> Profile:
    """A copy of ``profile`` with its budgets multiplied by ``factor`` (< 1: a dry run, e.g. of the gpu
    profile on a CPU): training steps, demos collected, VQA scenes and evaluated episodes. Wall-clock
    caps (max_minutes) stay as they are, and worker counts are capped at this machine's cores."""
    if not 0 < factor <= 1:
        raise ValueError(f"scale must be in (0, 1], got {factor}")
    if factor == 1:
        return profile
    from vlabench.suite import load_suite

    def n(x: float, lo: int = 1) -> int:
        return max(lo, int(round(x * factor)))

    import os

    cores = os.cpu_count() or 1
    p = dataclasses.replace(profile, name=f"{profile.name}@{factor:g}")
    p.collect = dataclasses.replace(profile.collect, workers=min(profile.collect.workers, cores),
                                    episodes=n(profile.collect.episodes or len(load_suite(profile.train_suite).episodes)),
                                    probe_episodes=n(profile.collect.probe_episodes
                                                     or len(load_suite(profile.probe_suite).episodes)))
    p.vqa = dataclasses.replace(profile.vqa, n_scenes=n(profile.vqa.n_scenes))
    p.eval = dataclasses.replace(profile.eval, workers=min(profile.eval.workers, cores), max_episodes=n(profile.eval.max_episodes
                                                              or len(load_suite(profile.eval_suite).episodes)))
    p.probe = dataclasses.replace(profile.probe, max_episodes_per_cell=1)
    p.models = []
    for m in profile.models:
        train = dict(m.train)
        for key in ("steps", "save_every", "val_every", "warmup_steps"):
            if key in train:
                train[key] = n(train[key])
        p.models.append(dataclasses.replace(m, train=train))
    return p
