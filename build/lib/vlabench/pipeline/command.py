"""``vlabench pipeline``: collect -> vqa -> train -> eval -> probe -> report (-> publish, pack) by profile.

Every stage is resumable and skips what is done (vlabench.pipeline.state); ``--stages`` and
``--models`` take a slice, so a short machine window can run one piece and a later one the next.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from vlabench.fileio import exclusive_folder

STAGES = ("collect", "vqa", "train", "eval", "probe", "report", "publish", "pack")
DEFAULT_STAGES = ("collect", "vqa", "train", "eval", "probe", "report")


@dataclass
class PipelineConfig:
    """Run the benchmark pipeline of a profile (policies/profiles/NAME.toml), stage by stage."""

    profile: str = "smoke"
    """profile name (policies/profiles/NAME.toml) or path"""
    out: Path | None = None
    """pipeline directory; rerunning into it resumes (default: runs/pipeline/PROFILE)"""
    stages: list[str] = field(default_factory=lambda: list(DEFAULT_STAGES))
    """stages to run, in pipeline order: collect vqa train eval probe report publish pack"""
    models: list[str] = field(default_factory=list)
    """only these models / baselines (default: all of the profile's)"""
    unpack: Path | None = None
    """first restore a folder written by the pack stage (results and checkpoints of an earlier window)"""
    scale: float = 1.0
    """multiply every budget (training steps and minutes, demos, VQA scenes, evaluated episodes) by this:
    a dry run of a profile, e.g. the gpu profile on a CPU with --scale 0.01"""


def run(cfg: PipelineConfig) -> Path:
    """Run the chosen stages; returns the pipeline directory."""
    from vlabench.pipeline import pack, results, stages
    from vlabench.pipeline.profile import load_profile, scaled

    profile = scaled(load_profile(cfg.profile), cfg.scale)
    unknown = [s for s in cfg.stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stages {unknown}; valid: {', '.join(STAGES)}")
    bad = [m for m in cfg.models if m not in profile.policies]
    if bad:
        raise ValueError(f"profile {profile.name!r} has no model or baseline {bad}; it has: {', '.join(profile.policies)}")
    out = Path(cfg.out) if cfg.out is not None else Path("runs/pipeline") / profile.name.replace("@", "-scale")
    t0 = time.monotonic()

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')} +{(time.monotonic() - t0) / 60:5.1f} min] {msg}", flush=True)

    ctx = stages.Context(profile, out, list(cfg.models), log)
    work = {"collect": stages.collect, "vqa": stages.vqa, "train": stages.train, "eval": stages.evaluate,
            "probe": stages.probe, "report": results.report, "publish": results.publish, "pack": pack.pack}
    with exclusive_folder(out, f"vlabench pipeline --profile {cfg.profile}"):
        if cfg.unpack is not None:
            pack.unpack(ctx, cfg.unpack)
        for name in STAGES:
            if name in cfg.stages:
                work[name](ctx)
    log(f"pipeline {profile.name}: stages {', '.join(s for s in STAGES if s in cfg.stages)} finished -> {out}")
    return out
