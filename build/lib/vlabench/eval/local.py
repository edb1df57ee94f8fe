"""Local backend: worker processes on this machine, each stepping several env slots, batched ``policy.act``.

Slots. ``workers x envs_per_worker`` env slots run side by side (fewer when the run has fewer episodes:
they are spread over the workers first). Worker process w owns the slots ``w*E .. w*E+E-1``; slots are
numbered globally, since a policy keys its per-env memory on ``obs_batch["slot"]``. A work queue of
manifest episodes refills a slot the moment its episode ends, so slots run different episodes at
different steps; the rows of an ``act`` call are the slots that wait for an action (``is_first`` marks a
fresh episode). A worker gets one message for all of its slots that have work in that round and answers
it with one list (protocol: ``workers.py``).

Overlap (double buffering). With ``overlap`` on and two slots or more, the slots split into two groups:
even and odd slot numbers (with one slot per worker, that is even and odd workers). The main process
takes group A's observations, runs ``act`` on them and sends the actions; then it takes group B's, which
its workers answered while ``act`` ran for A, and runs ``act`` for B while A's workers step; and so on.
Inference and stepping overlap, each ``act`` gets half the slots. A worker serves its messages in the
order they came, so its two groups never step at the same time in it. With ``overlap`` off (or one slot)
every waiting slot is in one ``act`` per control step and the workers idle while it runs. Overlap pays when
``act`` waits on an accelerator and loses when it computes on the workers' cores (results/PERFORMANCE.md,
section 3a), so the harness's default ``overlap="auto"`` turns it on only for a policy off the CPU.

Main-process resources: ``act`` runs with ``act_threads`` torch threads (default: the cores the workers
leave free), and frames arrive through shared memory (``workers.ImageBuffers``; ``image_buffers``).

An episode's actions depend only on its own observations and its slot's memory, never on the grouping,
the slot or the worker (the built-in random/expert policies seed per episode), so the same suite gives the
same episodes.jsonl outcomes for any workers / envs_per_worker / overlap. (A learned policy's float
arithmetic may differ in the last bits between batch sizes, as it does on any batched model.)

Failure handling, so that no episode is ever dropped:

* env raised inside the worker -> that episode is an error, the worker and its other slots live on;
* worker process died (EOF on its pipe, or a send to it fails) -> every episode in progress on that
  worker's slots is an error (their envs died with it), and the worker is restarted; a new episode's reset
  that could not be sent to a worker that died while idle is retried once on the fresh one;
* no reply to a message within ``step_timeout_s`` (plus STARTUP_GRACE_S when it holds a reset), or an
  episode in that message ran past ``episode_timeout_s`` -> the worker is killed and restarted, with
  every episode in progress on it an error, as above;
* ``policy.act`` raised -> the batch is retried row by row to find the rows that raise; those
  episodes are errors and the others go on. (A stateful policy then sees ``act`` twice for that
  step's surviving rows; it is a rare, already-broken path, and blaming every row would be worse.)
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Any

import numpy as np

from vlabench.contracts import Traits, new_record
from vlabench.eval.workers import ImageBuffers, WorkerHandle, mp_context, obs_batch, policy_actions, read_fault

STARTUP_GRACE_S = 120.0
"""Extra time a reset may take: a fresh worker process imports the sim and builds its first env."""


def act_threads(requested: int, n_workers: int) -> int | None:
    """torch intra-op threads for ``act`` in the main process: ``requested`` if > 0; 0 = the cores the
    workers leave free (at least 1); < 0 = None (leave torch's setting alone).

    Why: the workers keep their cores busy, and torch's default of one thread per core then oversubscribes
    them: on a shared 2-core machine with 2 workers, RT-1 and Diffusion Policy ran 2-4x fewer env steps/s
    with torch's default (2 threads) than with 1 (results/PERFORMANCE.md).
    """
    if requested != 0:
        return requested if requested > 0 else None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores - n_workers)


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run the block with torch's intra-op thread count at ``n`` (None, or torch never imported: untouched)."""
    torch = sys.modules.get("torch")
    if n is None or torch is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def frame_sizes(env_kwargs: dict) -> tuple[int, int]:
    """(front, wrist) image sizes the envs built from ``env_kwargs`` render (TabletopEnv's defaults if unset)."""
    import inspect

    from vlabench.env import TabletopEnv

    params = inspect.signature(TabletopEnv.__init__).parameters
    return (int(env_kwargs.get("image_size", params["image_size"].default)),
            int(env_kwargs.get("wrist_size", params["wrist_size"].default)))


def _subset(batch: dict, rows: list[int]) -> dict:
    out = {}
    for k, v in batch.items():
        out[k] = [v[i] for i in rows] if isinstance(v, list) else v[rows]
    return out


@dataclass(eq=False)  # identity: slots and workers point at each other
class _Slot:
    index: int
    """global slot number (what the policy sees)"""
    worker: _Worker
    local: int
    """the slot's number inside its worker process"""
    episode: dict | None = None
    rec: dict | None = None
    pending: str | None = None
    """request queued or awaiting a reply: "reset" or "step" """
    reply: dict | None = None
    """last reply, waiting for an action"""
    first: bool = False
    t0: float = 0.0


@dataclass(eq=False)
class _Worker:
    handle: WorkerHandle
    slots: list[_Slot] = field(default_factory=list)
    outbox: list[tuple[_Slot, tuple]] = field(default_factory=list)
    """requests not sent yet (they go out as one message)"""
    inflight: deque[list[_Slot]] = field(default_factory=deque)
    """messages sent and not answered, oldest first"""
    since: float = 0.0
    """when the worker started on the oldest in-flight message (its send, or the previous reply)"""
    images: ImageBuffers | None = None
    """shared-memory frames of its slots (outlive restarts of the process)"""


class LocalBackend:
    """Runs episodes on worker processes with several env slots each; ``run`` calls ``on_record`` as each ends."""

    image_buffers = True
    """frames through shared memory (workers.ImageBuffers) instead of pickled replies; benchmarks flip it"""

    def __init__(self, n_workers: int, env_kwargs: dict, policy: Any, traits: Traits,
                 step_timeout_s: float, episode_timeout_s: float, act_ctx: Callable[[], Any],
                 video_path_for: Callable[[dict], str | None], envs_per_worker: int = 1,
                 overlap: bool = True, act_threads: int = 0) -> None:
        if n_workers < 1 or envs_per_worker < 1:
            raise ValueError(f"workers and envs_per_worker must be >= 1, got {n_workers} and {envs_per_worker}")
        self.n_workers, self.envs_per_worker, self.overlap = n_workers, envs_per_worker, overlap
        self.act_threads = act_threads
        self.env_kwargs, self.policy = env_kwargs, policy
        self.traits, self.need_expert, self.act_ctx, self.video_path_for = traits, traits.needs_expert, act_ctx, video_path_for
        self.step_timeout_s, self.episode_timeout_s = step_timeout_s, episode_timeout_s
        self.restarts = 0

    def _build(self, n_episodes: int) -> None:
        """Workers and slots for ``n_episodes``: spread over the workers before stacking slots in one."""
        ctx, fault = mp_context(), read_fault()
        n_workers = min(self.n_workers, n_episodes)
        per = min(self.envs_per_worker, -(-n_episodes // n_workers))
        self.workers, self.slots = [], []
        front, wrist = frame_sizes(self.env_kwargs)
        if self.image_buffers:
            ImageBuffers.sweep_stale()
        for w in range(n_workers):
            images = ImageBuffers(per, front, wrist) if self.image_buffers else None
            worker = _Worker(WorkerHandle(ctx, w, self.env_kwargs, fault, per, images and images.spec()),
                             images=images)
            worker.slots = [_Slot(w * per + i, worker, i) for i in range(per)]
            self.workers.append(worker)
            self.slots += worker.slots
        n_groups = 2 if self.overlap and len(self.slots) >= 2 else 1
        self.groups = [[s for s in self.slots if s.index % n_groups == g] for g in range(n_groups)]

    def run(self, episodes: list[dict], on_record: Callable[[dict], None], deadline: float | None = None) -> None:
        """Run ``episodes``; after ``deadline`` (time.monotonic) no new episode starts and those in flight finish."""
        self.queue = deque(episodes)
        self.on_record = on_record
        self.deadline = deadline
        if not episodes:
            return
        self.workers = []
        try:
            self._build(len(episodes))
            self.policy.reset(len(self.slots))
            with torch_threads(act_threads(self.act_threads, len(self.workers))):
                for s in self.slots:
                    self._start(s)
                g = 0
                while any(s.episode is not None for s in self.slots):
                    group = self.groups[g]
                    self._gather(group)
                    ready = [s for s in group if s.reply is not None]
                    if ready:
                        self._act_and_step(ready)
                    g = (g + 1) % len(self.groups)
        finally:
            for w in self.workers:
                w.handle.close()
                self.restarts += w.handle.restarts
                if w.images is not None:
                    w.images.close(unlink=True)

    # -- episode bookkeeping -------------------------------------------------------------------
    def _start(self, s: _Slot) -> None:
        """Queue slot ``s``'s next episode (or leave it idle)."""
        s.episode = s.rec = s.reply = s.pending = None
        if not self.queue or (self.deadline is not None and time.monotonic() > self.deadline):
            return
        ep = self.queue.popleft()
        s.episode, s.rec, s.t0 = ep, new_record(ep), time.monotonic()
        s.pending = "reset"
        s.worker.outbox.append((s, ("reset", ep, self.need_expert, self.video_path_for(ep))))

    def _finish(self, s: _Slot, error: str | None = None) -> None:
        """Record slot ``s``'s episode and give the slot the next one."""
        rec = s.rec
        if error is not None:
            rec.update(status="error", success=False, error=error)
        rec["wall_s"] = round(time.monotonic() - s.t0, 3)
        self.on_record(rec)
        self._start(s)

    def _fail_worker(self, w: _Worker, why: str, culprits: list[_Slot] = (), retry: list[_Slot] = ()) -> None:
        """Restart ``w``: its episodes in progress are errors, except new ones in ``retry`` (requeued on it)."""
        w.handle.restart()
        w.inflight.clear()
        retry = [*retry, *(s for s, req in w.outbox if req[0] == "reset")]  # never sent: nothing lost
        w.outbox = []
        for s in w.slots:
            if s.episode is None:
                continue
            if s in retry:
                s.worker.outbox.append((s, ("reset", s.episode, self.need_expert, self.video_path_for(s.episode))))
                continue
            where = f"during {s.pending}" if s.pending else "while waiting for an action"
            whose = "" if s in culprits or not culprits else " (another episode's request on the same worker process)"
            s.pending = s.reply = None
            self._finish(s, f"{why}{whose}; this episode {where} after {s.rec['steps']} steps; "
                            "worker killed and restarted")

    def _flush(self) -> None:
        """Send every worker its queued requests as one message."""
        for w in self.workers:
            retried = False
            while w.outbox:
                batch, w.outbox = w.outbox, []
                try:
                    w.handle.send(("run", [(s.local, req) for s, req in batch]))
                except (OSError, ValueError):
                    resets = [] if retried else [s for s, req in batch if req[0] == "reset"]
                    why = f"could not reach the worker process: {w.handle.exit_reason()}"
                    # it died serving its oldest message, if it had one; else while idle
                    culprits = list(w.inflight[0]) if w.inflight else [s for s, _ in batch]
                    self._fail_worker(w, why, culprits, resets)
                    retried = True
                    continue
                if not w.inflight:
                    w.since = time.monotonic()
                w.inflight.append([s for s, _ in batch])

    # -- one control step ----------------------------------------------------------------------
    def _act_and_step(self, ready: list[_Slot]) -> None:
        batch = obs_batch([s.reply for s in ready], [s.episode for s in ready], [s.index for s in ready],
                          [s.first for s in ready], self.traits)
        actions: list[np.ndarray | None] = [None] * len(ready)
        errors: list[str | None] = [None] * len(ready)
        try:
            actions = list(policy_actions(self.policy, batch, self.act_ctx))
        except Exception:
            whole = traceback.format_exc(limit=8)
            for i in range(len(ready)):
                if len(ready) == 1:
                    errors[i] = whole
                    break
                try:
                    actions[i] = policy_actions(self.policy, _subset(batch, [i]), self.act_ctx)[0]
                except Exception:
                    errors[i] = traceback.format_exc(limit=8)
        for s, a, err in zip(ready, actions, errors):
            s.reply = None
            if err is not None:
                self._finish(s, f"policy.act raised:\n{err}")
                continue
            s.pending = "step"
            s.worker.outbox.append((s, ("step", a)))
        self._flush()

    def _deadline(self, w: _Worker) -> float:
        msg = w.inflight[0]
        limit = self.step_timeout_s + (STARTUP_GRACE_S if any(s.pending == "reset" for s in msg) else 0.0)
        return min([w.since + limit] + [s.t0 + self.episode_timeout_s for s in msg if s.pending == "step"])

    def _gather(self, group: list[_Slot]) -> None:
        """Take replies from every worker (refilling slots as episodes end) until no slot of ``group`` waits."""
        while True:
            self._flush()
            if not any(s.pending for s in group):
                return
            busy = {w.handle.conn: w for w in self.workers if w.inflight}
            if not busy:  # cannot happen: after a flush every pending request is in flight
                raise RuntimeError(f"slots {[s.index for s in group if s.pending]} wait with nothing in flight")
            timeout = max(0.0, min(self._deadline(w) for w in busy.values()) - time.monotonic())
            for conn in wait(list(busy), timeout):
                w = busy[conn]
                if w.handle.conn is not conn or not w.inflight:
                    continue  # restarted meanwhile
                try:
                    replies = conn.recv()
                except (EOFError, OSError):
                    self._fail_worker(w, w.handle.exit_reason(), w.inflight[0])
                    continue
                msg = w.inflight.popleft()
                w.since = time.monotonic()
                for s, reply in zip(msg, replies):
                    self._on_reply(s, reply)
            now = time.monotonic()
            for w in busy.values():
                if w.inflight and self._deadline(w) <= now:
                    self._fail_worker(w, self._hang_reason(w, now), w.inflight[0])

    def _hang_reason(self, w: _Worker, now: float) -> str:
        msg = w.inflight[0]
        if any(s.pending == "step" and now - s.t0 >= self.episode_timeout_s for s in msg):
            return f"episode exceeded episode_timeout_s={self.episode_timeout_s:g}"
        kinds = sorted({s.pending for s in msg})
        limit = self.step_timeout_s + (STARTUP_GRACE_S if "reset" in kinds else 0.0)
        return f"worker gave no reply to {'/'.join(kinds)} within {limit:g} s (hung)"

    def _on_reply(self, s: _Slot, reply: dict) -> None:
        kind, s.pending = s.pending, None
        if "error" in reply:
            self._finish(s, f"env raised during {kind} (after {s.rec['steps']} steps):\n{reply['error']}")
            return
        if s.worker.images is not None:
            reply["obs"] = s.worker.images.get(s.local, reply["obs"])
        rec = s.rec
        rec["steps"] = reply["steps"]
        rec["renderer"] = reply["renderer"]
        if kind == "reset":
            rec["instruction"] = reply["instruction"]
        elif reply["success"] and rec["success_step"] is None:
            rec["success"], rec["success_step"] = True, reply["steps"]
        s.first = kind == "reset"
        if reply["done"]:
            rec["video"] = reply["video"]
            self._finish(s)
        elif time.monotonic() - s.t0 > self.episode_timeout_s:
            self._finish(s, f"episode exceeded episode_timeout_s={self.episode_timeout_s:g} "
                            f"after {rec['steps']} steps")
        else:
            s.reply = reply
