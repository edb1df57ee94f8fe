"""``vlabench eval``: run a policy on every episode of a suite and write results.json + episodes.jsonl.

This module is the orchestration: it checks the config, loads the suite, owns the output folder
(a second run into it is refused), resumes what is there (vlabench.eval.results), builds the policy
(vlabench.eval.runtime), runs the episodes on a backend -- "local" (``local.py``: worker processes on
this machine) or "ray" (``ray_backend.py``: actors on a Ray cluster) -- and prints the table.

Video selection is deterministic: the first ``2 * videos_per_cell`` indices of each cell record frames
(in the worker, only for those episodes); once a cell's candidates are all done, up to
ceil(M/2) successes and floor(M/2) failures are kept (lowest indices first, topped up from the other
kind when one runs short) and the other candidates are deleted.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlabench.eval import provenance
from vlabench.eval.metrics import episode_key
from vlabench.eval.results import RunRecord, Tally, load_previous, success_table
from vlabench.agents.spec import PolicySpec
from vlabench.eval.runtime import build_policy, observation_mismatch, resolve_device
from vlabench.eval.video import CANDIDATES_DIR, VIDEOS_DIR, finalize_videos, video_candidates, video_stem
from vlabench.fileio import exclusive_folder
from vlabench.suite import Suite, load_suite

BACKENDS = ("local", "ray")
OVERLAP = ("auto", "on", "off")


@dataclass
class EvalConfig:
    """Evaluate a policy on a benchmark suite."""

    suite: Path = Path("envs/smoke.toml")
    """benchmark suite file (envs/*.toml)"""
    policy: str = "expert"
    """built-in policy (expert, random, noop, replay:DATASET_DIR), a checkpoint directory, your own class as
    package.module:ClassName, or a name registered in the vlabench.policies entry-point group"""
    workers: int = 1
    """env worker processes (local backend) or Ray actors (ray backend)"""
    envs_per_worker: int = 1
    """env slots each worker process steps (local backend): workers x envs_per_worker episodes run at once
    and share one batched policy.act; raise it until act's batch keeps the device busy"""
    overlap: str = "auto"
    """local backend: on = split the slots into two groups and run act for one while the other's workers step
    (double buffering), off = one act for all waiting slots, auto = on when the policy runs on an
    accelerator (device not cpu), where act leaves the cores free; results are the same either way"""
    act_threads: int = 0
    """local backend: torch threads of the policy's act in this process while the workers run; 0 = the cores
    the workers leave free (at least 1), -1 = torch's own setting"""
    device: str = "cpu"
    """torch device of a learned policy: cpu, cuda, cuda:N or auto"""
    out: Path | None = None
    """results directory (results.json, episodes.jsonl, videos/); rerunning into it resumes
    (default: runs/eval/SUITE-POLICY)"""
    bf16: bool = False
    """run the policy under bfloat16 autocast (learned policies)"""
    videos_per_cell: int = 0
    """MP4s kept per (task, split) cell, successes and failures both (0 = none)"""
    renderer: str | None = None
    """camera renderer: tiny (CPU) or egl (GPU; falls back to tiny); default: the suite's [env] renderer,
    else tiny. results.json records which applied (renderer_from)"""
    episode_timeout_s: float = 300.0
    """wall-clock limit of one episode; past it the episode is an error"""
    step_timeout_s: float = 60.0
    """a worker that does not answer one step within this is killed and restarted (episode = error)"""
    backend: str = "local"
    """local (worker processes on this machine) or ray (actors on a Ray cluster)"""
    address: str | None = None
    """Ray cluster address (ray backend), e.g. auto or HEAD_IP:6379; None starts a local Ray"""
    max_episodes: int = 0
    """evaluate only the first N manifest episodes (0 = all; for quick runs)"""
    ray_gpus_per_actor: float = 0.25
    """GPU share each Ray actor reserves when device is cuda"""
    policy_option: list[str] = field(default_factory=list)
    """options as KEY=VALUE: inference options of a checkpoint's policy (e.g. decode=mean for RT-1's
    expected-value decoding) or constructor arguments of your own class; recorded in results.json, and a
    resume must use the same ones"""
    retry_errors: bool = False
    """on resume, run again the episodes that ended in an error (their records move to errors_retried.jsonl);
    without it a resume counts them as finished"""
    allow_train_suite: bool = False
    """evaluate on a train suite (demo seeds) anyway; recorded in results.json as train_suite_allowed"""
    twins: bool = False
    """also run the paired twin of every held-out episode (the same seed with only the split's shift undone,
    vlabench.tasks.twins); results.json then gives, per split and cell, the twin and shifted rates and the
    paired drop with Newcombe's interval and McNemar's p. The twins are part of the manifest"""
    max_minutes: float = 0.0
    """stop starting new episodes after this many minutes (episodes in flight finish; 0 = no limit); the
    run is left incomplete and rerunning it continues. Episodes run interleaved across cells, so a run
    stopped early has about as many episodes in every cell"""


def default_out(suite: Suite, policy: dict) -> Path:
    """runs/eval/SUITE-POLICY, POLICY being the built-in name or the checkpoint's run directory name."""
    name = policy["name"]
    if policy["checkpoint"]:
        ckpt = Path(policy["checkpoint"])
        name = (ckpt.parent.name if ckpt.name == "latest" else ckpt.name) or name
    return Path("runs/eval") / f"{suite.name}-{name.replace(':', '_').replace('/', '_')}"


def _check(cfg: EvalConfig, suite: Suite) -> None:
    from vlabench.sim.world import RENDERERS

    if cfg.backend not in BACKENDS:
        raise ValueError(f"unknown backend {cfg.backend!r}; valid: {', '.join(BACKENDS)}")
    if cfg.backend == "ray":
        from vlabench.eval.ray_backend import import_ray

        import_ray()  # fail before touching cfg.out when the optional dependency is missing
    if cfg.renderer is not None and cfg.renderer not in RENDERERS:
        raise ValueError(f"unknown renderer {cfg.renderer!r}; valid: {', '.join(RENDERERS)}")
    if cfg.overlap not in OVERLAP:
        raise ValueError(f"unknown overlap {cfg.overlap!r}; valid: {', '.join(OVERLAP)}")
    if cfg.max_minutes < 0:
        raise ValueError(f"max_minutes must be >= 0, got {cfg.max_minutes}")
    if cfg.workers < 1 or cfg.envs_per_worker < 1:
        raise ValueError(f"workers and envs_per_worker must be >= 1, got {cfg.workers} and {cfg.envs_per_worker}")
    for name in ("videos_per_cell", "max_episodes"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(cfg, name)}")
    if cfg.episode_timeout_s <= 0 or cfg.step_timeout_s <= 0:
        raise ValueError(f"timeouts must be > 0, got episode_timeout_s={cfg.episode_timeout_s}, "
                         f"step_timeout_s={cfg.step_timeout_s}")
    if suite.kind != "eval" and not cfg.allow_train_suite:
        raise ValueError(f"{suite.path} is a {suite.kind} suite: its seeds are the demo seeds a policy may have "
                         "trained on. Evaluate on an eval suite (envs/smoke.toml, envs/emergent.toml, ...), or pass "
                         "--allow-train-suite to do it anyway (recorded in results.json)")


def _renderer(cfg: EvalConfig, suite: Suite) -> tuple[str, str]:
    """(renderer, where it came from): the flag wins, then the suite's [env], then tiny."""
    if cfg.renderer is not None:
        return cfg.renderer, "flag"
    if "renderer" in suite.env_kwargs:
        return suite.env_kwargs["renderer"], "suite"
    return "tiny", "default"


def run(cfg: EvalConfig, policy: PolicySpec | Any | None = None, only: set[tuple] | None = None) -> dict:
    """Evaluate ``cfg.policy`` on ``cfg.suite``; returns the results dict (also written to out/results.json).

    ``policy`` (from Python) overrides ``cfg.policy`` and ``cfg.policy_option``: a PolicySpec, or a ready
    policy instance (recorded as its class, ``module:Class``; the Ray backend pickles it to its actors).
    Ctrl-C stops the run with a KeyboardInterrupt saying what is recorded and how to resume. Raises
    RuntimeError when every episode of the run errored (the results are written first). ``only`` (from
    Python) runs just the manifest episodes with these keys (``Episode.key``), as ``vlabench compare`` does
    block by block; the manifest, and so resuming, stays the suite's.
    """
    suite = load_suite(cfg.suite)
    if cfg.twins:
        suite = suite.with_twins()
    _check(cfg, suite)
    spec = PolicySpec.of(cfg.policy, cfg.policy_option) if policy is None else PolicySpec.of(policy)
    traits = spec.traits()
    episodes = suite.episodes[: cfg.max_episodes] if cfg.max_episodes else list(suite.episodes)
    if only is not None:
        episodes = [e for e in episodes if e.key in only]
    renderer, renderer_from = _renderer(cfg, suite)
    env_kwargs = {**suite.env_kwargs, "renderer": renderer, **traits.env_kwargs()}
    device = resolve_device(cfg.device)
    policy_info = spec.describe()
    if spec.kind == "checkpoint":
        for diff in observation_mismatch(str(cfg.policy), env_kwargs):
            print(f"warning: {cfg.policy} was trained on other observations than this suite gives ({diff})",
                  file=sys.stderr)
    out = Path(cfg.out) if cfg.out is not None else default_out(suite, policy_info)
    with exclusive_folder(out, f"vlabench eval --suite {cfg.suite} --policy {spec.target}"):
        done, old = load_previous(out, suite, policy_info, env_kwargs, cfg.retry_errors)
        todo = [e for e in episodes if e.key not in done]
        built = act_ctx = None
        if todo and cfg.backend != "ray":  # build it before writing anything: a bad option leaves no results behind
            built, act_ctx = build_policy(spec, device, cfg.bf16)
        fields = _provenance(cfg, policy_info, env_kwargs, device, renderer_from)
        if old is not None and not todo:  # nothing runs here: the record keeps the provenance of what ran it
            fields = {k: old.get(k, v) for k, v in fields.items()}
        record = RunRecord(out, suite, fields, done, old, provenance.git_sha() if todo else None,
                           cfg.max_episodes or None)
        record.write()  # provenance first: a killed run leaves a directory that can be checked and resumed
        cells = video_candidates([e for e in episodes if not e.twin], cfg.videos_per_cell)
        if todo:
            _run_episodes(cfg, record, episodes, todo, env_kwargs, spec, built, act_ctx, cells)
        if cells:
            finalize_videos(out, cells, done, cfg.videos_per_cell)
        results = record.write()
    print(f"\n{suite.name} / {policy_info['name']}: {len(done)}/{len(suite.episodes)} episodes -> {out}")
    print(success_table(results))
    left = sum(e.key not in done for e in todo)
    if left and cfg.max_minutes:
        print(f"stopped starting episodes after --max-minutes {cfg.max_minutes:g}: {left} left; rerun the same "
              "command to continue")
    ran = [done[e.key] for e in todo if e.key in done]
    if ran and all(r["status"] == "error" for r in ran):
        first = next(r["error"] for r in ran if r.get("error")).strip().splitlines()[-1]
        raise RuntimeError(f"every episode of this run ({len(ran)}) errored, e.g. {first}; see {out}/episodes.jsonl")
    return results


def _provenance(cfg: EvalConfig, policy: dict, env_kwargs: dict, device: str, renderer_from: str) -> dict:
    from vlabench.sim.constants import SIM_VERSION

    return {"policy": policy, "renderer_requested": env_kwargs["renderer"], "renderer_from": renderer_from,
            "device": provenance.device_name(device), "torch_version": provenance.package_version("torch"),
            "pybullet_version": provenance.package_version("pybullet"), "sim_version": SIM_VERSION,
            "env_kwargs": env_kwargs, "backend": cfg.backend, "workers": cfg.workers,
            "envs_per_worker": cfg.envs_per_worker,
            "train_suite_allowed": bool(cfg.allow_train_suite)}


def _overlap(cfg: EvalConfig) -> bool:
    """Measured (results/PERFORMANCE.md): overlap gains when act waits on an accelerator and loses a little
    when act computes on the same cores as the workers."""
    return cfg.overlap == "on" or (cfg.overlap == "auto" and resolve_device(cfg.device) != "cpu")


def _run_episodes(cfg: EvalConfig, record: RunRecord, episodes: list, todo: list, env_kwargs: dict,
                  spec: PolicySpec, policy, act_ctx, cells: dict) -> None:
    from tqdm import tqdm

    recorded = {e.key for eps in cells.values() for e in eps}
    cand_dir = record.out / VIDEOS_DIR / CANDIDATES_DIR

    def video_path_for(ep: dict) -> str | None:
        if episode_key(ep) not in recorded:
            return None
        cand_dir.mkdir(parents=True, exist_ok=True)
        return str(cand_dir / f"{video_stem(ep)}.mp4")

    tally = Tally()
    for e in episodes:
        if e.key in record.done:
            tally.add(record.done[e.key])
    bar = tqdm(total=len(episodes), initial=tally.n, desc=f"eval {record.provenance['policy']['name']}",
               unit="ep", dynamic_ncols=True)
    cell_rank = {c: i for i, c in enumerate(record.suite.cells())}
    todo = sorted(todo, key=lambda e: (e.index, cell_rank[(e.task, e.split)]))  # interleaved across cells
    todo_dicts = [e.as_dict() for e in todo]
    deadline = time.monotonic() + 60 * cfg.max_minutes if cfg.max_minutes else None
    try:
        with record.open_log() as log:
            def on_record(rec: dict) -> None:
                record.append(log, rec)
                tally.add(rec)
                bar.update(1)
                bar.set_postfix_str(str(tally))

            if cfg.backend == "ray":
                from vlabench.eval.ray_backend import run_ray

                run_ray(cfg, spec, todo_dicts, env_kwargs, video_path_for, on_record, deadline)
            else:
                from vlabench.eval.local import LocalBackend

                LocalBackend(cfg.workers, env_kwargs, policy, spec.traits(),
                             cfg.step_timeout_s, cfg.episode_timeout_s, act_ctx, video_path_for,
                             cfg.envs_per_worker, _overlap(cfg), cfg.act_threads).run(todo_dicts, on_record, deadline)
    except KeyboardInterrupt:
        bar.close()
        record.write()
        raise KeyboardInterrupt(f"{len(record.done)}/{len(episodes)} episodes are recorded in {record.out}; "
                                "rerun the same command to finish the rest") from None
    finally:
        bar.close()
