"""``vlabench dagger``: one DAgger round (Ross et al., 2011). A policy drives collection episodes and the
scripted expert labels every state it reaches.

Behaviour cloning only sees the expert's own states; a policy that drifts off them meets states no demo
covers. Here the policy chooses the executed action, the expert runs beside it (its plan tracks whatever
state the policy leaves) and its action is stored as the label, so the demos show what to do from the
policy's own mistakes. Every driven episode is stored, failed or not. ``--expert-mix`` (the paper's beta)
executes the expert's action on that fraction of steps, drawn per step from a generator seeded by the
episode, so a driven episode is reproducible. Everything else (workers, shards, resume, Ctrl-C, faults) is
``vlabench collect``'s: see vlabench.data.collect.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vlabench.data.collect import CollectConfig
from vlabench.data.collect import run as collect
from vlabench.suite import Episode


@dataclass
class DaggerConfig(CollectConfig):
    """One DAgger round: vlabench dagger --suite S --demos DEMOS --out NEW --episodes N --policy RUN."""

    policy: str = ""
    """The policy that drives (checkpoint, training run, registry name or import string, as for `vlabench
    eval --policy`). Ask for more --episodes than the demos hold: the new seeds are the driven ones."""
    demos: Path | None = None
    """The dataset this round extends: when --out does not exist yet it starts as a copy of it made of hard
    links (shards and cached features are shared, never rewritten; only the new episodes are encoded)."""
    policy_option: list[str] = field(default_factory=list)
    """KEY=VALUE options for --policy (as `vlabench eval --policy-option`)."""
    expert_mix: float = 0.0
    """The probability that a step executes the expert's action instead of the policy's (DAgger's beta)."""


class PolicyDriver:
    """Chooses each step's executed action for one worker's episodes (the ``driver`` of collect's rollout)."""

    def __init__(self, policy: str, options: tuple[str, ...], expert_mix: float) -> None:
        from vlabench.agents.spec import PolicySpec
        from vlabench.eval.runtime import build_policy

        self.name, self.expert_mix = policy, expert_mix
        self.policy, self.context = build_policy(PolicySpec.parse(policy, options), "cpu", bf16=False)
        self.first, self.rng = True, np.random.default_rng(0)

    def start(self, ep: Episode) -> None:
        self.policy.reset(1)
        self.first, self.rng = True, np.random.default_rng([ep.seed, 2])

    def __call__(self, ep: Episode, obs: dict, privileged: np.ndarray, label: np.ndarray) -> np.ndarray:
        from vlabench.contracts import single_obs_batch

        batch = single_obs_batch({**obs, "privileged": privileged}, first=self.first, seed=ep.seed, task=ep.task,
                                 split=ep.split, expert_action=label)
        self.first = False
        with self.context():
            action = np.asarray(self.policy.act(batch), np.float32).reshape(-1, 7)[0]
        if self.rng.random() < self.expert_mix:
            return label.copy()
        return np.clip(action, -1.0, 1.0)


@dataclass(frozen=True)
class DriverFactory:
    """Picklable recipe for a :class:`PolicyDriver`: each collect worker builds its own policy from it."""

    policy: str
    options: tuple[str, ...]
    expert_mix: float

    def __call__(self) -> PolicyDriver:
        return PolicyDriver(self.policy, self.options, self.expert_mix)

    def describe(self) -> dict:
        return {"policy": self.policy, "policy_option": list(self.options), "expert_mix": self.expert_mix}


LOCK_FILES = (".owner.lock", ".lock")
"""Never linked: a hard-linked lock would be the same lock in both folders."""


def link_copy(src: Path, dst: Path) -> int:
    """``dst`` as a copy of dataset ``src`` made of hard links (lock and temp files left out); returns the
    files linked. Built beside ``dst`` and renamed into place, so an interrupted copy leaves no ``dst``."""
    import fnmatch
    import shutil

    from vlabench.data.manifest import TEMP_PATTERNS

    if not (src / "manifest.json").is_file():
        raise ValueError(f"--demos {src}: not a demo dataset (no manifest.json)")
    building = dst.with_name(f".{dst.name}.linking")
    shutil.rmtree(building, ignore_errors=True)
    n = 0
    for root, _, files in os.walk(src):
        target = building / Path(root).relative_to(src)
        target.mkdir(parents=True, exist_ok=True)
        for name in files:
            if name in LOCK_FILES or any(fnmatch.fnmatch(name, pat) for pat in TEMP_PATTERNS):
                continue
            os.link(Path(root) / name, target / name)
            n += 1
    building.rename(dst)
    return n


def run(cfg: DaggerConfig) -> dict:
    """One round into ``cfg.out``; returns collect's summary plus the driver and the policy's success rate.
    Bad options stop before anything is written (ValueError, one line)."""
    from vlabench.agents.spec import PolicySpec

    if not cfg.policy:
        raise ValueError("--policy is required: the policy whose states the expert labels")
    if not 0.0 <= cfg.expert_mix <= 1.0:
        raise ValueError(f"--expert-mix is a probability and must be in [0, 1]; got {cfg.expert_mix}")
    if cfg.perturb > 0:
        raise ValueError("--perturb (DART) and dagger's --policy both choose the executed action; use one")
    PolicySpec.parse(cfg.policy, cfg.policy_option)  # UserError (a ValueError) naming what is wrong
    if cfg.demos is not None and not cfg.out.exists():
        link_copy(Path(cfg.demos), cfg.out)
    return collect(cfg, driver=DriverFactory(cfg.policy, tuple(cfg.policy_option), float(cfg.expert_mix)))
