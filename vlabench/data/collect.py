"""``vlabench collect``: expert rollouts in K worker processes, stored as crash-safe HDF5 shards.

Which episodes: the suite's cells are interleaved index by index (cell order of the file), with
``seed = seed_range[0] + index``, so any N covers every cell evenly and the same N always means the
same seeds. The expert's failures are kept out of the dataset but logged in ``failures.jsonl``;
rerunning the same command skips every key already stored or already failed and resumes until the
dataset holds N successful episodes (kill -9 included: at most the episodes in flight are lost).

What can go wrong, and what collect does about it:

* bad env options (``--image-size 10000``, a bad ``[env]`` value in the suite): refused before any
  worker starts or any file is written;
* another collect already writing into ``--out``: refused at once, naming its PID (an ``flock`` on
  ``<out>/.owner.lock``, see vlabench.fileio.exclusive_folder; a killed run's lock is released by the
  kernel, so it never blocks the rerun);
* a worker process dies (kill -9, OOM, segfault) or gives no result within ``episode_timeout_s``: it
  is restarted and the episode retried. An episode that brings down its worker twice is recorded in
  failures.jsonl with an ``"error"`` and skipped. After ``MAX_WORKER_DEATHS`` deaths in one run the
  run stops with an error (something systematic is wrong);
* the env or expert raises inside a worker: the run stops handing out episodes, lets the ones in
  flight finish, and exits non-zero with one line naming the episode and the exception. That
  episode is not recorded, so the rerun after a fix tries it again;
* the parent dies (kill -9): its workers die with it (see collect_worker.die_with_parent);
* Ctrl-C: workers are stopped, and a KeyboardInterrupt says how many episodes are on disk and how to
  resume (the CLI prints it as one line and exits 130).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path

# rollout is re-exported (it used to live here)
from vlabench.data.collect_worker import WorkerHandle, read_fault, rollout  # noqa: F401
from vlabench.fileio import exclusive_folder, write_json_atomic, write_text_atomic
from vlabench.suite import (
    Episode,
    Suite,
    check_env_options,
    env_option_error,
    load_suite,
)

FAILURES = "failures.jsonl"
HOPELESS_FAILURES = 20
"""A run whose first this-many episodes all fail stops instead of working through the whole seed range."""
SUMMARY = "collect.json"
MAX_ATTEMPTS = 2
"""Worker deaths one episode may cause before it is recorded as failed and skipped."""
MAX_WORKER_DEATHS = 5
"""Worker deaths (or hangs) in one run after which the run stops."""


@dataclass
class CollectConfig:
    suite: Path = Path("envs/train.toml")
    """Suite file (kind "train") whose cells and seed range the demos come from."""
    episodes: int = 0
    """Successful episodes wanted in total (0 = as many as the suite file lists)."""
    workers: int = 1
    """Worker processes, each with its own envs and shard writer."""
    out: Path = Path("data/demos")
    """Dataset directory (created; an existing one is resumed)."""
    noise: float = 0.0
    """Std of Gaussian noise added to the expert's motion actions (action units) and recorded with them."""
    perturb: float = 0.0
    """DART: std (action units) of correlated noise added only to the executed dx, dy while the gripper is
    open; the recorded label stays the expert's clean action, so demos show recoveries from off-path states."""
    episodes_per_shard: int = 8
    """Episodes packed into each HDF5 shard."""
    image_size: int = 0
    """Front image size override (0 = the suite's [env] value)."""
    wrist_size: int = 0
    """Wrist image size override (0 = the suite's [env] value)."""
    episode_timeout_s: float = 600.0
    """A worker that gives no result for this long is killed and restarted, and its episode retried."""


def episode_stream(suite: Suite) -> Iterator[Episode]:
    """Every episode the suite's seed range allows, interleaved across cells by index."""
    cells = suite.cells()
    for index in range(suite.seed_range[1] - suite.seed_range[0]):
        for task, split in cells:
            yield Episode(task, split, index, suite.seed_range[0] + index)


def _append_failure(out: Path, ep: Episode, steps: int, error: str | None = None) -> None:
    # Rewritten whole (atomically): failures are few, and the run owns the folder (exclusive_folder).
    record = {"task": ep.task, "split": ep.split, "index": ep.index, "seed": ep.seed, "steps": steps}
    if error is not None:
        record["error"] = error
    path = out / FAILURES
    old = path.read_text() if path.exists() else ""
    if old and not old.endswith("\n"):
        old += "\n"
    write_text_atomic(path, old + json.dumps(record) + "\n")


def _read_failures(out: Path) -> tuple[set, int]:
    """(keys of every episode in failures.jsonl, how many of them are expert failures rather than
    episodes skipped after killing their worker)."""
    keys, expert = set(), 0
    if (out / FAILURES).exists():
        for line in (out / FAILURES).read_text().splitlines():
            try:
                d = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash: that episode simply runs again
            keys.add((d["task"], d["split"], d["index"], d["seed"]))
            expert += "error" not in d
    return keys, expert


def _where(ep: Episode | None) -> str:
    return "start-up" if ep is None else f"episode {ep.task}/{ep.split} #{ep.index} (seed {ep.seed})"


class _Collection:
    """One run: hands episodes to the workers and reacts to results, exceptions, deaths and hangs."""

    def __init__(self, cfg: CollectConfig, suite: Suite, env_kwargs: dict, target: int, driver=None) -> None:
        from vlabench.data.manifest import completed_keys

        self.cfg, self.suite, self.env_kwargs, self.target, self.driver = cfg, suite, env_kwargs, target, driver
        done, (failed, self.failures) = completed_keys(cfg.out), _read_failures(cfg.out)
        self.successes = len(done)  # episodes stored (only successful ones unless a policy drives)
        self.driven, self.driven_successes = 0, 0
        self.skipped = len(failed) - self.failures
        self.todo = (e for e in episode_stream(suite) if e.key not in done and e.key not in failed)
        self.retry: deque[Episode] = deque()
        self.attempts: dict[tuple, int] = {}
        self.deaths = 0
        self.error: str | None = None
        self.workers: list[WorkerHandle] = []
        self.bar = None

    def start(self) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=self.target, initial=min(self.successes, self.target), desc="collect", unit="ep")
        args = (self.cfg.workers, self.cfg.out, self.cfg.episodes_per_shard, self.cfg.noise, self.cfg.perturb,
                self.suite.name, self.env_kwargs, os.getpid(), read_fault(), self.driver)
        ctx = mp.get_context("spawn")  # never fork: the parent may hold threads and HDF5 handles
        for i in range(self.cfg.workers):
            self.workers.append(WorkerHandle(ctx, i, args))

    def run(self) -> None:
        """Hand out episodes until the target is reached (or the run must stop); then close the workers."""
        while True:
            self._dispatch()
            busy = [w for w in self.workers if w.episode is not None]
            if not busy:
                break
            timeout = max(0.0, min(w.deadline for w in busy) - time.monotonic())
            for conn in wait([w.conn for w in busy], timeout):
                w = next(w for w in busy if w.conn is conn)
                try:
                    msg = conn.recv()
                except (EOFError, OSError):
                    self._on_death(w, w.exit_reason())
                    continue
                self._on_message(w, msg)
            now = time.monotonic()
            for w in busy:
                if w.episode is not None and w.deadline <= now:
                    w.kill()
                    self._on_death(w, f"gave no result within episode_timeout_s={self.cfg.episode_timeout_s:g} s "
                                      "and was killed")
        for w in self.workers:
            w.request_close()
        for w in self.workers:
            w.finish_close()

    def _dispatch(self) -> None:
        for w in self.workers:
            if self.error is not None:
                return
            in_flight = sum(x.episode is not None for x in self.workers)
            if self.successes + in_flight >= self.target:
                return
            if w.episode is not None or not w.alive:
                continue
            ep = self.retry.popleft() if self.retry else next(self.todo, None)
            if ep is None:
                if in_flight == 0:
                    self.error = (f"{self.cfg.suite}: seed range exhausted after {self.successes} successful "
                                  "episodes; widen seed_range or ask for fewer episodes")
                return
            if not w.send(ep, self.cfg.episode_timeout_s):
                self._on_death(w, w.exit_reason())

    def _on_message(self, w: WorkerHandle, msg: tuple) -> None:
        kind, ep = msg[0], w.episode
        w.episode = None
        if kind == "done":
            _, _, ok, steps, success = msg
            if self.driver is not None:
                self.driven += 1
                self.driven_successes += success
            if ok:
                self.successes += 1
                self.bar.update(1)
            else:
                self.failures += 1
                _append_failure(self.cfg.out, ep, steps)
                if self.successes == 0 and self.failures >= HOPELESS_FAILURES:
                    self.error = self.error or (
                        f"the expert failed all of the first {self.failures} episodes (the last: {_where(ep)}); "
                        f"with noise={self.cfg.noise} and perturb={self.cfg.perturb} it cannot solve these "
                        "tasks, so collection stopped (lower --noise / --perturb)")
            if self.driver is not None:
                self.bar.set_postfix(policy_success=f"{self.driven_successes / self.driven:.1%}")
            else:
                self.bar.set_postfix(expert_success=f"{self.successes / max(self.successes + self.failures, 1):.1%}")
        elif kind == "error":
            self.error = self.error or f"{_where(ep)} raised in worker {w.slot}: {msg[2]}"
        else:  # "fatal": the worker could not go on (its shard writer failed, say)
            self.error = self.error or f"collect worker {w.slot} failed during {_where(ep)}: {msg[2]}"
            w.kill()

    def _on_death(self, w: WorkerHandle, reason: str) -> None:
        from tqdm import tqdm

        ep, w.episode = w.episode, None
        pid = w.proc.pid
        w.kill()
        self.deaths += 1
        what = f"collect worker {w.slot} (PID {pid}) {reason} during {_where(ep)}"
        if self.deaths > MAX_WORKER_DEATHS:
            self.error = self.error or f"{what}; that is {self.deaths} worker deaths in this run, stopping"
            return
        self.attempts[ep.key] = n = self.attempts.get(ep.key, 0) + 1
        if n >= MAX_ATTEMPTS:
            self.skipped += 1
            _append_failure(self.cfg.out, ep, 0, error=f"worker {reason} ({n} times)")
            note = f"that is {n} times on this episode: recorded in {FAILURES} and skipped"
        else:
            self.retry.appendleft(ep)
            note = "retrying the episode"
        if self.error is None:
            w.start()
            note = f"restarted it, {note}"
        tqdm.write(f"{what}; {note}", file=sys.stderr)

    def kill_all(self) -> None:
        for w in self.workers:
            if w.alive:
                w.kill()
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _interrupted(out: Path, target: int) -> KeyboardInterrupt:
    """Ctrl-C: a KeyboardInterrupt saying what is on disk and how to resume (the CLI prints it as one
    line and exits 130; a caller such as the pipeline sees an interruption, not an error)."""
    from vlabench.data.manifest import completed_keys

    main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None  # a second Ctrl-C must not cut it short
    try:
        n = len(completed_keys(out))
    finally:
        if main:
            signal.signal(signal.SIGINT, old)
    return KeyboardInterrupt(f"{n} of {target} episodes are on disk in {out}; rerun the same command to resume")


def _validated_env_kwargs(cfg: CollectConfig, suite: Suite) -> dict:
    env_kwargs = dict(suite.env_kwargs)
    for flag, key in (("--image-size", "image_size"), ("--wrist-size", "wrist_size")):
        value = getattr(cfg, key)
        if value:
            why = env_option_error(key, value)
            if why is not None:
                raise ValueError(f"{flag} {value}: {why} (0 keeps the suite's value)")
            env_kwargs[key] = value
    check_env_options(env_kwargs, source=f"{cfg.suite} [env]")
    return env_kwargs


def run(cfg: CollectConfig, driver=None) -> dict:
    """Collect until the dataset holds ``cfg.episodes`` successful episodes; returns the summary.

    ``driver``: a picklable factory of a DAgger driver (vlabench.eval.dagger, `vlabench dagger`): it then
    chooses the executed actions, every driven episode is stored, and the summary adds ``driver.describe()``
    and the policy's success rate.

    Raises ValueError for bad options (before anything starts), vlabench.fileio.FolderBusyError when
    another run owns ``cfg.out``, RuntimeError when the run had to stop (one line, naming the
    episode), and on Ctrl-C KeyboardInterrupt("N of M episodes are on disk in OUT; rerun the same
    command to resume"), which the CLI prints as one line with exit status 130.
    """
    suite = load_suite(cfg.suite)
    if suite.kind != "train":
        raise ValueError(f"{cfg.suite}: collect needs a suite of kind 'train' (its seeds are reserved for demos), "
                         f"got kind {suite.kind!r}")
    if cfg.workers < 1 or cfg.episodes < 0 or cfg.episodes_per_shard < 1 or not cfg.episode_timeout_s > 0:
        raise ValueError(f"need workers >= 1, episodes >= 0, episodes_per_shard >= 1 and episode_timeout_s > 0; got "
                         f"workers={cfg.workers}, episodes={cfg.episodes}, episodes_per_shard={cfg.episodes_per_shard}, "
                         f"episode_timeout_s={cfg.episode_timeout_s}")
    if cfg.noise < 0 or cfg.perturb < 0:
        raise ValueError(f"--noise and --perturb are standard deviations and must be >= 0; got noise={cfg.noise}, "
                         f"perturb={cfg.perturb}")
    _check_same_noise(cfg)
    env_kwargs = _validated_env_kwargs(cfg, suite)
    target = cfg.episodes or len(suite.episodes)
    with exclusive_folder(cfg.out, f"vlabench collect --suite {cfg.suite} --out {cfg.out}"):
        return _collect(cfg, suite, env_kwargs, target, driver)


def _check_same_noise(cfg: CollectConfig) -> None:
    """A dataset resumed with other noise settings would mix two kinds of demos: refuse. A finished one says
    its settings in collect.json; an interrupted one in the attrs of the episodes it already stored."""
    path = cfg.out / SUMMARY
    if path.is_file():
        old = json.loads(path.read_text())
        recorded = {k: float(old.get(k, 0.0)) for k in ("noise", "perturb")}
    else:
        recorded, path = _stored_noise(cfg.out)
    for key, value in recorded.items():
        if value != float(getattr(cfg, key)):
            raise ValueError(f"{cfg.out} was collected with {key}={value} ({path}); rerun with "
                             f"--{key} {value} to extend it, or collect into another --out")


def _stored_noise(out: Path) -> tuple[dict[str, float], Path | None]:
    """noise and perturb of the first readable episode stored under out ({} when there is none)."""
    import h5py

    from vlabench.data.manifest import source_files

    for f in source_files(out) if out.is_dir() else []:
        try:
            with h5py.File(f, "r") as h5:
                demos = sorted(h5["data"].keys())
                if demos:
                    a = h5["data"][demos[0]].attrs
                    return {"noise": float(a.get("expert_noise", 0.0)),
                            "perturb": float(a.get("expert_perturb", 0.0))}, f
        except (OSError, KeyError):  # a damaged file: resuming skips it, and so does this check
            continue
    return {}, None


def _collect(cfg: CollectConfig, suite: Suite, env_kwargs: dict, target: int, driver) -> dict:
    from vlabench.data.manifest import load_manifest
    from vlabench.data.stats import ensure_stats

    col = None
    try:
        col = _Collection(cfg, suite, env_kwargs, target, driver)
        col.start()
        col.run()
        col.kill_all()
        manifest = load_manifest(cfg.out, skip_bad=True)
        if col.error is not None:
            raise RuntimeError(f"{col.error}; {manifest['n_episodes']} episodes are on disk in {cfg.out}; "
                               "fix the cause and rerun the same command to resume")
        ensure_stats(cfg.out, manifest, skip_bad=True)
    except KeyboardInterrupt:
        if col is not None:
            col.kill_all()
        raise _interrupted(cfg.out, target) from None
    finally:
        if col is not None:
            col.kill_all()
    summary = {"suite": suite.name, "suite_path": str(cfg.suite), "suite_manifest_hash": suite.manifest_hash,
               "episodes": manifest["n_episodes"], "frames": manifest["n_frames"], "expert_failures": col.failures,
               "expert_success_rate": col.successes / max(col.successes + col.failures, 1),
               "env_kwargs": env_kwargs, "noise": cfg.noise, "perturb": cfg.perturb, "worker_deaths": col.deaths,
               **({**driver.describe(), "policy_episodes": col.driven,
                   "policy_success_rate": col.driven_successes / max(col.driven, 1)} if driver is not None else {}),
               "skipped_after_worker_deaths": col.skipped,
               "dataset_hash": manifest["hash"]}
    write_json_atomic(cfg.out / SUMMARY, summary)
    rate = (f"{col.driven} episodes driven by {summary['policy']}, which succeeded in "
            f"{summary['policy_success_rate']:.1%}" if driver is not None else f"expert success {summary['expert_success_rate']:.1%} ({col.failures} failures kept out)")
    print(f"{cfg.out}: {summary['episodes']} episodes, {summary['frames']} frames; {rate}"
          + (f"; {col.skipped} episodes skipped after killing their worker (see {FAILURES})" if col.skipped else ""))
    return summary
