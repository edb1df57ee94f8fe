"""Collection workers: one process per slot, each with its own envs and shard writer.

Protocol (a duplex Pipe per worker; only the parent talks to it)::

    parent -> worker   ("episode", Episode)        run the expert (or the DAgger policy) on it; store it if
                                                   it succeeds (a policy-driven episode always)
                       ("close",)                  pack pending episodes into shards, reply, exit
    worker -> parent   ("done", Episode, stored: bool, steps: int, success: bool)
                       ("error", Episode, "ExcType: message")   the env or expert raised; worker lives on
                       ("fatal", None, "ExcType: message")      the worker cannot go on (then exits)
                       ("closed",)

A worker never outlives its parent: on Linux the kernel kills it when the parent dies
(``prctl(PR_SET_PDEATHSIG, SIGKILL)``); elsewhere it exits when the pipe reports EOF, at the next
message. It ignores SIGINT: Ctrl-C is the parent's to handle.

Test-only fault injection: ``VLABENCH_COLLECT_FAULT`` = ``exit:SEED`` (the worker process dies with
os._exit when it starts that episode), ``hang:SEED`` (it sleeps forever there) or ``raise:SEED`` (the
episode raises RuntimeError). The parent reads it and hands it to the worker as an argument.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from vlabench.processes import exit_reason
from vlabench.suite import Episode

FAULT_ENV = "VLABENCH_COLLECT_FAULT"
PR_SET_PDEATHSIG = 1
STARTUP_GRACE_S = 120.0
"""Extra time for a fresh worker's first episode: it imports the sim and builds its envs."""
CLOSE_TIMEOUT_S = 120.0
"""How long a worker may take to pack its pending episodes when told to close."""


def read_fault() -> tuple[str, int] | None:
    """The test-only fault spec from ``VLABENCH_COLLECT_FAULT`` (see module docstring), or None."""
    spec = os.environ.get(FAULT_ENV, "")
    if not spec:
        return None
    kind, _, seed = spec.partition(":")
    if kind not in ("exit", "hang", "raise") or not seed.isdigit():
        raise ValueError(f"{FAULT_ENV}={spec!r}; valid: exit:SEED, hang:SEED, raise:SEED")
    return kind, int(seed)


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGKILL this process when its parent dies (Linux); exit now if it already has."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # no prctl: the pipe's EOF still ends the worker between episodes
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def rollout(env, ep: Episode, noise: float, suite_name: str, env_kwargs: dict, perturb: float = 0.0,
            driver=None) -> dict:
    """Run the expert on one episode; returns the Episode record of contracts (success in attrs).

    ``noise`` is added to the expert's action and recorded with it; ``perturb`` is added only to the action
    the env executes (:class:`~vlabench.experts.base.Perturbation`, DART), while the recorded label stays
    the expert's. A ``driver`` (DAgger, vlabench.eval.dagger.PolicyDriver: ``start(ep)`` and
    ``driver(ep, obs, privileged, expert_action) -> executed action``) chooses the executed action instead,
    while the expert's is still recorded (``env.expert_action(driven=True)``: the expert follows the scene
    the policy leaves). All are reproducible per seed."""
    from vlabench.experts.base import Perturbation

    obs, info = env.reset(seed=ep.seed)
    images, wrists, states, actions, executed_actions, poses, privileged = [], [], [], [], [], [], []
    success, perturbation = False, Perturbation(perturb, ep.seed)
    if driver is not None:
        driver.start(ep)
    for _ in range(env.max_steps):
        action = env.expert_action(noise, driven=driver is not None)
        images.append(obs["image"]), wrists.append(obs["wrist_image"]), states.append(obs["state"])
        poses.append(env.object_poses())
        privileged.append(env.privileged_state())
        actions.append(action)
        executed = perturbation(action) if driver is None else driver(ep, obs, privileged[-1], action)
        executed_actions.append(executed)
        obs, _, terminated, truncated, info = env.step(executed)
        success |= info["success"]
        if terminated or truncated:
            break
    relabelled = perturb > 0 or driver is not None
    return {
        "obs": {"image": np.stack(images), "wrist_image": np.stack(wrists), "state": np.stack(states),
                "privileged": np.stack(privileged)},
        "actions": np.stack(actions).astype(np.float32),
        "sim": {"object_poses": np.stack(poses),
                **({"executed_actions": np.stack(executed_actions).astype(np.float32)} if relabelled else {})},
        "attrs": {"instruction": info["instruction"], "task": ep.task, "split": ep.split, "index": ep.index,
                  "seed": ep.seed, "suite": suite_name, "success": bool(success), "n_steps": len(actions),
                  "env_kwargs": json.dumps(env_kwargs, sort_keys=True), "expert_noise": float(noise),
                  "expert_perturb": float(perturb),
                  **({"driver": driver.name, "expert_mix": driver.expert_mix} if driver is not None else {})},
    }


def _inject(fault: tuple[str, int] | None, ep: Episode) -> None:
    if fault is None or fault[1] != ep.seed:
        return
    if fault[0] == "exit":
        os._exit(17)
    if fault[0] == "hang":
        time.sleep(10**6)
    raise RuntimeError(f"injected fault ({FAULT_ENV}) for seed {ep.seed}")


def worker_main(conn: Connection, slot: int, n_workers: int, out: Path, episodes_per_shard: int, noise: float,
                perturb: float, suite_name: str, env_kwargs: dict, parent_pid: int,
                fault: tuple[str, int] | None, make_driver=None) -> None:
    """Entry point of a worker process (see the module docstring for the protocol). ``make_driver``: a
    picklable factory of the DAgger driver (see :func:`rollout`), or None for expert demos."""
    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    envs: dict = {}
    try:
        from vlabench.data.shards import ShardWriter
        from vlabench.env import make_env

        writer = ShardWriter(out, shard_index=slot, episodes_per_shard=episodes_per_shard, index_stride=n_workers)
        driver = make_driver() if make_driver is not None else None
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                return  # the parent is gone
            if msg[0] == "close":
                writer.flush()
                conn.send(("closed",))
                return
            ep = msg[1]
            try:
                _inject(fault, ep)
                if (ep.task, ep.split) not in envs:
                    envs[(ep.task, ep.split)] = make_env(ep.task, ep.split, **env_kwargs)
                record = rollout(envs[(ep.task, ep.split)], ep, noise, suite_name, env_kwargs, perturb, driver)
                success = record["attrs"]["success"]
                stored = success or driver is not None  # a driven episode's failures are what DAgger is for
                if stored:
                    writer.write(record)
            except Exception as e:  # noqa: BLE001 (any failure of one episode is reported, not fatal)
                env = envs.pop((ep.task, ep.split), None)  # never reuse an env in an unknown state
                if env is not None:
                    env.close()
                conn.send(("error", ep, one_line(e)))
                continue
            conn.send(("done", ep, stored, record["attrs"]["n_steps"], success))
    except Exception as e:  # noqa: BLE001 (the writer or the pipe failed: say why, no traceback)
        try:
            conn.send(("fatal", None, one_line(e)))
        except (OSError, ValueError):
            pass
        os._exit(1)
    finally:
        for env in envs.values():
            env.close()


def _start_ignoring_sigint(proc) -> None:
    """Start a process with SIGINT ignored, so a Ctrl-C during its start-up (imports) prints no traceback;
    Python keeps an inherited SIG_IGN, and the worker ignores SIGINT anyway once it runs."""
    if threading.current_thread() is not threading.main_thread():
        proc.start()
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        proc.start()
    finally:
        signal.signal(signal.SIGINT, old)


class WorkerHandle:
    """The parent's end of one worker process: start, send an episode, kill, close."""

    def __init__(self, ctx, slot: int, args: tuple) -> None:
        self.ctx, self.slot, self.args = ctx, slot, args
        self.episode: Episode | None = None
        self.deadline = 0.0
        self.fresh = True
        self.alive = False
        self.start()

    def start(self) -> None:
        parent, child = self.ctx.Pipe(duplex=True)
        self.proc = self.ctx.Process(target=worker_main, args=(child, self.slot, *self.args), daemon=True,
                                     name=f"vlabench-collect-{self.slot}")
        _start_ignoring_sigint(self.proc)
        child.close()  # so that the worker's death shows as EOF here
        self.conn, self.fresh, self.alive = parent, True, True

    def send(self, ep: Episode, timeout_s: float) -> bool:
        self.episode = ep
        self.deadline = time.monotonic() + timeout_s + (STARTUP_GRACE_S if self.fresh else 0.0)
        self.fresh = False
        try:
            self.conn.send(("episode", ep))
            return True
        except (OSError, ValueError):
            return False

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(10)
        self.conn.close()
        self.alive = False

    def exit_reason(self) -> str:
        return exit_reason(self.proc)

    def request_close(self) -> None:
        if self.alive and self.proc.is_alive():
            try:
                self.conn.send(("close",))
            except (OSError, ValueError):
                pass

    def finish_close(self) -> None:
        """Wait for the worker to pack its pending episodes and exit; kill it if it does not in time."""
        if self.alive:
            try:
                if self.conn.poll(CLOSE_TIMEOUT_S):
                    self.conn.recv()
            except (OSError, EOFError, ValueError):
                pass
            self.proc.join(10)
        self.kill()
