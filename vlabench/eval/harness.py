"""``vlabench eval``: run a policy on every episode of a suite and write results.json + episodes.jsonl.

Output directory ``cfg.out``::

    results.json      summary + provenance (schema in notes/contracts.md), rewritten atomically while
                      running and at the end; ``complete`` says whether every manifest episode is done
    episodes.jsonl    one record per finished episode, appended (flush + fsync) the moment it ends:
                      task, split, index, seed, instruction, status ok|error, success (at any step),
                      success_step, steps, error, plus renderer and wall_s
    videos/           with videos_per_cell > 0: <task>__<split>__<index>_<success|failure>.mp4

Resuming: rerunning with the same ``out`` skips the episodes already in episodes.jsonl (matched by
(task, split, index, seed)); error episodes count as finished (rerun into a fresh directory to retry
them). A directory written for another suite manifest, policy, checkpoint or env options is refused.

Video selection is deterministic: the first ``2 * videos_per_cell`` indices of each cell record frames
(in the worker, only for those episodes); once a cell's candidates are all done, up to
ceil(M/2) successes and floor(M/2) failures are kept (lowest indices first, topped up from the other
kind when one runs short) and the other candidates are deleted.

Backends: "local" (``local.py``: worker processes on this machine) and "ray" (``ray_backend.py``:
actors on a Ray cluster; its docstring says how to start one).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from vlabench.eval.metrics import episode_key, is_success, summarize
from vlabench.eval.video import CANDIDATES_DIR, VIDEOS_DIR, finalize_videos, video_candidates, video_stem
from vlabench.suite import Suite, load_suite

SCHEMA_VERSION = 1
RESULTS_NAME, EPISODES_NAME = "results.json", "episodes.jsonl"
BACKENDS = ("local", "ray")
RESULTS_EVERY_S = 15.0
"""How often results.json is refreshed while running (it is always rewritten at the end)."""


@dataclass
class EvalConfig:
    """Evaluate a policy on a benchmark suite."""

    suite: Path = Path("envs/smoke.toml")
    """benchmark suite file (envs/*.toml)"""
    policy: str = "expert"
    """built-in policy (expert, random, noop, replay:DATASET_DIR) or a checkpoint directory"""
    workers: int = 1
    """env worker processes (local backend) or Ray actors (ray backend)"""
    device: str = "cpu"
    """torch device of a learned policy: cpu, cuda, cuda:N or auto"""
    out: Path = Path("runs/eval/smoke-expert")
    """results directory (results.json, episodes.jsonl, videos/); rerunning into it resumes"""
    bf16: bool = False
    """run the policy under bfloat16 autocast (learned policies)"""
    videos_per_cell: int = 0
    """MP4s kept per (task, split) cell, successes and failures both (0 = none)"""
    renderer: str = "tiny"
    """camera renderer, overriding the suite's: tiny (CPU) or egl (GPU; falls back to tiny)"""
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
    """inference options of a learned policy as KEY=VALUE, e.g. decode=mean for RT-1's expected-value
    decoding; recorded in results.json, and a resume must use the same ones"""


class ResumeError(ValueError):
    """``out`` holds results that cannot be continued by this run."""


# ---------------------------------------------------------------- provenance

def git_sha() -> str:
    """HEAD of the repository vlabench is imported from, with "-dirty" when tracked files differ from
    it (the results then come from uncommitted code), or "unknown"."""
    here = Path(__file__).resolve().parent
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        sha = r.stdout.strip()
        if r.returncode != 0 or not sha:
            return "unknown"
        st = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                            capture_output=True, text=True, timeout=10)
        return sha + "-dirty" if st.returncode == 0 and st.stdout.strip() else sha
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(torch.device(device))
    return f"cpu: {platform.processor() or platform.machine()}"


def policy_options(items: list[str]) -> dict[str, str]:
    """["decode=mean", ...] -> {"decode": "mean"}; raises ValueError on an item without "="."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"policy option {item!r} must look like KEY=VALUE, e.g. decode=mean")
        out[key] = value
    return out


def describe_policy(spec: str, options: dict | None = None) -> dict:
    """{"name", "checkpoint", "checkpoint_hash", "options"} of a policy spec (hashing a checkpoint, not loading it)."""
    from vlabench.policy import BUILTIN_POLICIES, is_builtin

    if is_builtin(spec):
        if options:
            raise ValueError(f"policy options {sorted(options)} apply to checkpoints, not to the built-in {spec!r}")
        return {"name": spec, "checkpoint": None, "checkpoint_hash": None, "options": {}}
    if not Path(spec).exists():
        raise ValueError(f"unknown policy {spec!r}; valid: {', '.join(BUILTIN_POLICIES)} "
                         "(replay as 'replay:DATASET_DIR'), or an existing checkpoint directory")
    from vlabench.train.checkpoint import checkpoint_hash, resolve_checkpoint_dir

    path = resolve_checkpoint_dir(spec)
    try:
        name = json.loads((path / "config.json").read_text()).get("model") or path.name
    except (OSError, ValueError):
        name = path.name
    return {"name": str(name), "checkpoint": str(path.resolve()), "checkpoint_hash": checkpoint_hash(path),
            "options": dict(options or {})}


def act_context(device: str, bf16: bool, use_torch: bool) -> Callable[[], Any]:
    """Factory of the context every ``policy.act`` runs in: inference mode (+ bf16 autocast)."""
    if not use_torch:
        return contextlib.nullcontext

    def ctx() -> contextlib.ExitStack:
        import torch

        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        if bf16:
            stack.enter_context(torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16))
        return stack

    return ctx


# ---------------------------------------------------------------- files

def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_episodes(path: Path) -> list[dict]:
    """Records of episodes.jsonl; a torn last line (killed mid-write) is cut off the file."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
        with open(path, "r+b") as f:
            f.truncate(len(data))
    out = []
    for i, line in enumerate(data.decode().splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError as e:
                raise ResumeError(f"{path}:{i} is not valid JSON ({e}); fix or delete the line") from None
    return out


def load_previous(cfg: EvalConfig, suite: Suite, policy: dict, env_kwargs: dict) -> tuple[dict, dict | None]:
    """Finished records by key, and the old results.json; ResumeError if ``out`` belongs to another run."""
    out = Path(cfg.out)
    res_path, ep_path = out / RESULTS_NAME, out / EPISODES_NAME
    old = None
    if res_path.is_file():
        try:
            old = json.loads(res_path.read_text())
        except ValueError as e:
            raise ResumeError(f"{res_path} is not valid JSON ({e}); use a new --out") from None
        theirs = (old.get("suite", {}).get("manifest_hash"), old.get("suite", {}).get("path"))
        if theirs[0] != suite.manifest_hash:
            raise ResumeError(f"refusing to resume into {out}: its results come from suite manifest "
                              f"{str(theirs[0])[:12]} ({theirs[1]}), this run's is {suite.manifest_hash[:12]} "
                              f"({suite.path}); use another --out or delete {out}")
        op = old.get("policy", {})
        if (op.get("name"), op.get("checkpoint_hash"), op.get("options", {})) != (
                policy["name"], policy["checkpoint_hash"], policy["options"]):
            raise ResumeError(f"refusing to resume into {out}: its results come from policy {op.get('name')!r} "
                              f"(checkpoint hash {str(op.get('checkpoint_hash'))[:12]}, options {op.get('options', {})}), "
                              f"this run's is {policy['name']!r} (checkpoint hash "
                              f"{str(policy['checkpoint_hash'])[:12]}, options {policy['options']}); "
                              "use another --out")
        if "env_kwargs" in old and old["env_kwargs"] != env_kwargs:
            raise ResumeError(f"refusing to resume into {out}: its episodes ran with env options "
                              f"{old['env_kwargs']}, this run uses {env_kwargs}; use another --out")
    records = read_episodes(ep_path)
    if records and old is None:
        raise ResumeError(f"refusing to resume into {out}: {ep_path} exists without {RESULTS_NAME}, so its "
                          "suite and policy are unknown; use another --out")
    keys = {e.key for e in suite.episodes}
    done: dict[tuple, dict] = {}
    for rec in records:
        k = episode_key(rec)
        if k not in keys:
            raise ResumeError(f"refusing to resume into {out}: episode {k} in {ep_path} is not in the manifest "
                              f"of {suite.path}; use another --out")
        done.setdefault(k, rec)
    return done, old


def build_results(cfg: EvalConfig, suite: Suite, policy: dict, env_kwargs: dict, records: list[dict],
                  created: str, device: str, renderer_fallback: str, shas: list[str]) -> dict:
    """``shas``: the git sha of every invocation on this directory (a resume under other code appends),
    each taken when it started, so edits made while a run is in flight do not rewrite its provenance."""
    renderers = sorted({r["renderer"] for r in records if r.get("renderer")})
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return {
        "schema_version": SCHEMA_VERSION,
        "vlabench_version": _vlabench_version(),
        "git_sha": shas[-1],
        **({"git_shas": shas} if len(shas) > 1 else {}),
        "created": created,
        "updated": now,
        "suite": {"name": suite.name, "path": str(suite.path), "manifest_hash": suite.manifest_hash,
                  "n_episodes": len(suite.episodes), "max_episodes": cfg.max_episodes or None},
        "policy": policy,
        "renderer": "+".join(renderers) or renderer_fallback,
        "device": device_name(device),
        "torch_version": _version("torch"),
        "pybullet_version": _version("pybullet"),
        "env_kwargs": env_kwargs,
        "backend": cfg.backend,
        "workers": cfg.workers,
        "complete": len(records) == len(suite.episodes),
        **summarize(records),
    }


def _vlabench_version() -> str:
    from vlabench import __version__

    return __version__


# ---------------------------------------------------------------- table

def success_table(summary: dict) -> str:
    """Rows = tasks, columns = splits, entries "rate (succ/n)"; then the overall line."""
    cells = {(c["task"], c["split"]): c for c in summary["cells"]}
    tasks = sorted({t for t, _ in cells})
    splits = sorted({s for _, s in cells})

    def fmt(c: dict | None) -> str:
        if c is None:
            return "-"
        err = f" {c['errors']}err" if c["errors"] else ""
        return f"{100 * c['rate']:.0f}% ({c['successes']}/{c['n']}){err}"

    w0 = max([4, *(len(t) for t in tasks)])
    cols = [max(len(s), *(len(fmt(cells.get((t, s)))) for t in tasks)) for s in splits]
    lines = ["  ".join([f"{'task':<{w0}}", *(f"{s:>{w}}" for s, w in zip(splits, cols))])]
    lines += ["  ".join([f"{t:<{w0}}", *(f"{fmt(cells.get((t, s))):>{w}}" for s, w in zip(splits, cols))])
              for t in tasks]
    o = summary["overall"]
    lines.append(f"overall: {fmt(o)}, 95% CI [{o['ci95'][0]:.2f}, {o['ci95'][1]:.2f}]")
    return "\n".join(lines)


# ---------------------------------------------------------------- run

def _check(cfg: EvalConfig) -> None:
    from vlabench.sim.world import RENDERERS

    if cfg.backend not in BACKENDS:
        raise ValueError(f"unknown backend {cfg.backend!r}; valid: {', '.join(BACKENDS)}")
    if cfg.backend == "ray":
        from vlabench.eval.ray_backend import import_ray

        import_ray()  # fail before touching cfg.out when the optional dependency is missing
    if cfg.renderer not in RENDERERS:
        raise ValueError(f"unknown renderer {cfg.renderer!r}; valid: {', '.join(RENDERERS)}")
    for name in ("workers",):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    for name in ("videos_per_cell", "max_episodes"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(cfg, name)}")
    if cfg.episode_timeout_s <= 0 or cfg.step_timeout_s <= 0:
        raise ValueError(f"timeouts must be > 0, got episode_timeout_s={cfg.episode_timeout_s}, "
                         f"step_timeout_s={cfg.step_timeout_s}")


def run(cfg: EvalConfig) -> dict:
    """Evaluate ``cfg.policy`` on ``cfg.suite``; returns the results dict (also written to out/results.json)."""
    from tqdm import tqdm

    from vlabench.policy import is_builtin, make_policy

    _check(cfg)
    out = Path(cfg.out)
    suite = load_suite(cfg.suite)
    episodes = suite.episodes[: cfg.max_episodes] if cfg.max_episodes else list(suite.episodes)
    env_kwargs = {**suite.env_kwargs, "renderer": cfg.renderer}
    device = resolve_device(cfg.device)
    options = policy_options(cfg.policy_option)
    policy_info = describe_policy(str(cfg.policy), options)
    out.mkdir(parents=True, exist_ok=True)
    done, old = load_previous(cfg, suite, policy_info, env_kwargs)
    created = (old or {}).get("created") or dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    fallback = (old or {}).get("renderer") or cfg.renderer
    sha = git_sha()  # taken now: edits made while the run is in flight must not rewrite its provenance
    shas = list(old.get("git_shas") or [old["git_sha"]]) if old and old.get("git_sha") else []
    if not shas or shas[-1] != sha:
        shas.append(sha)

    def write_results() -> dict:
        res = build_results(cfg, suite, policy_info, env_kwargs, list(done.values()), created, device, fallback,
                            shas)
        write_json_atomic(out / RESULTS_NAME, res)
        return res

    todo = [e for e in episodes if e.key not in done]
    policy = None
    if todo and cfg.backend != "ray":  # build it before writing anything: a bad option leaves no results behind
        policy = make_policy(str(cfg.policy), device, **options)
    write_results()  # provenance first: a killed run leaves a directory that can be checked and resumed
    cells = video_candidates(episodes, cfg.videos_per_cell)
    recorded = {e.key for eps in cells.values() for e in eps}
    cand_dir = out / VIDEOS_DIR / CANDIDATES_DIR

    def video_path_for(ep: dict) -> str | None:
        key = (ep["task"], ep["split"], ep["index"], ep["seed"])
        if key not in recorded:
            return None
        cand_dir.mkdir(parents=True, exist_ok=True)
        return str(cand_dir / f"{video_stem(ep)}.mp4")

    if todo:
        n_sel = sum(1 for e in episodes if e.key in done)
        bar = tqdm(total=len(episodes), initial=n_sel, desc=f"eval {policy_info['name']}", unit="ep",
                   dynamic_ncols=True)
        last_write = [time.monotonic()]
        fin = [done[e.key] for e in episodes if e.key in done]
        tally = [len(fin), sum(is_success(r) for r in fin), sum(r["status"] == "error" for r in fin)]
        with open(out / EPISODES_NAME, "a") as log:

            def on_record(rec: dict) -> None:
                rec.pop("video", None)
                log.write(json.dumps(rec) + "\n")
                log.flush()
                os.fsync(log.fileno())
                done[episode_key(rec)] = rec
                bar.update(1)
                tally[0] += 1
                tally[1] += is_success(rec)
                tally[2] += rec["status"] == "error"
                n, n_ok, n_err = tally
                bar.set_postfix_str(f"success {n_ok}/{n} ({100 * n_ok / max(1, n):.0f}%)"
                                    + (f", errors {n_err}" if n_err else ""))
                if time.monotonic() - last_write[0] > RESULTS_EVERY_S:
                    write_results()
                    last_write[0] = time.monotonic()

            todo_dicts = [{"task": e.task, "split": e.split, "index": e.index, "seed": e.seed} for e in todo]
            try:
                if cfg.backend == "ray":
                    from vlabench.eval.ray_backend import run_ray

                    run_ray(cfg, todo_dicts, env_kwargs, video_path_for, on_record)
                else:
                    from vlabench.eval.local import LocalBackend

                    backend = LocalBackend(cfg.workers, env_kwargs, policy,
                                           bool(getattr(policy, "needs_expert", False)), cfg.step_timeout_s,
                                           cfg.episode_timeout_s,
                                           act_context(device, cfg.bf16, not is_builtin(str(cfg.policy))),
                                           video_path_for)
                    backend.run(todo_dicts, on_record)
            finally:
                bar.close()
                write_results()
    if cells:
        finalize_videos(out, cells, done, cfg.videos_per_cell)
    results = write_results()
    print(f"\n{suite.name} / {policy_info['name']}: {len(done)}/{len(suite.episodes)} episodes -> {out}")
    print(success_table(results))
    return results


def quick_eval(checkpoint: Path, suite: str | None = None, n_episodes: int = 8, device: str = "cpu") -> dict:
    """A short rollout evaluation of a checkpoint (the training loop's ``eval_every`` hook).

    Runs the first ``n_episodes`` of ``suite`` (default envs/smoke.toml) into a throwaway directory and
    returns {"success_rate", "episodes"}. Not a benchmark number: use ``vlabench eval`` for those."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="vlabench-quick-eval-") as tmp:
        cfg = EvalConfig(suite=Path(suite or "envs/smoke.toml"), policy=str(checkpoint), device=device,
                         out=Path(tmp) / "run", max_episodes=n_episodes)
        results = run(cfg)
    return {"success_rate": results["overall"]["rate"], "episodes": results["overall"]["n"]}
