"""Local backend: K env worker processes in lockstep, one batched ``policy.act`` per control step.

Each slot owns one worker process (see ``workers.py``). A work queue of manifest episodes refills a
slot the moment its episode ends, so slots run different episodes at different steps; the rows of an
``act`` call are the slots that currently wait for an action (``is_first`` marks a fresh episode).

Failure handling, so that no episode is ever dropped:

* env raised inside the worker -> that episode is an error, the worker lives on;
* worker process died (EOF on its pipe) -> error, the worker is restarted;
* no reply within ``step_timeout_s`` (or the episode ran past ``episode_timeout_s``) -> the worker is
  killed and restarted, the episode is an error;
* ``policy.act`` raised -> the batch is retried row by row to find the rows that raise; those
  episodes are errors and the others go on. (A stateful policy then sees ``act`` twice for that
  step's surviving rows; it is a rare, already-broken path, and blaming every row would be worse.)
"""

from __future__ import annotations

import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any

import numpy as np

from vlabench.eval.workers import WorkerHandle, mp_context, new_record, policy_actions, read_fault

STARTUP_GRACE_S = 120.0
"""Extra time a reset may take: a fresh worker process imports the sim and builds its first env."""


def _subset(batch: dict, rows: list[int]) -> dict:
    out = {}
    for k, v in batch.items():
        out[k] = [v[i] for i in rows] if isinstance(v, list) else v[rows]
    return out


@dataclass
class _Slot:
    index: int
    handle: WorkerHandle
    episode: dict | None = None
    rec: dict | None = None
    pending: str | None = None
    """request awaiting a reply: "reset" or "step" """
    deadline: float = 0.0
    reply: dict | None = None
    """last reply, waiting for an action"""
    first: bool = False
    t0: float = 0.0


class LocalBackend:
    """Runs episodes on ``n_slots`` worker processes; ``run`` calls ``on_record`` as each one ends."""

    def __init__(self, n_slots: int, env_kwargs: dict, policy: Any, need_expert: bool,
                 step_timeout_s: float, episode_timeout_s: float, act_ctx: Callable[[], Any],
                 video_path_for: Callable[[dict], str | None]) -> None:
        self.n_slots, self.env_kwargs, self.policy = n_slots, env_kwargs, policy
        self.need_expert, self.act_ctx, self.video_path_for = need_expert, act_ctx, video_path_for
        self.step_timeout_s, self.episode_timeout_s = step_timeout_s, episode_timeout_s
        self.restarts = 0

    def run(self, episodes: list[dict], on_record: Callable[[dict], None]) -> None:
        self.queue = deque(episodes)
        self.on_record = on_record
        ctx, fault = mp_context(), read_fault()
        self.slots = [_Slot(i, WorkerHandle(ctx, i, self.env_kwargs, fault))
                      for i in range(min(self.n_slots, len(episodes)))]
        self.policy.reset(len(self.slots))
        try:
            for s in self.slots:
                self._start(s)
            while True:
                self._gather()
                ready = [s for s in self.slots if s.reply is not None]
                if not ready:
                    break
                self._act_and_step(ready)
        finally:
            for s in self.slots:
                s.handle.close()
                self.restarts += s.handle.restarts

    # -- episode bookkeeping -------------------------------------------------------------------
    def _start(self, s: _Slot) -> None:
        """Hand slot ``s`` the next queued episode (or leave it idle)."""
        s.episode = s.rec = s.reply = s.pending = None
        if not self.queue:
            return
        ep = self.queue.popleft()
        s.episode, s.rec, s.t0 = ep, new_record(ep), time.monotonic()
        msg = ("reset", ep, self.need_expert, self.video_path_for(ep))
        if not self._send(s, msg):
            s.handle.restart()  # it died while idle: a fresh one gets the episode
            if not self._send(s, msg):
                self._finish(s, f"could not reach the worker process: {s.handle.exit_reason()}")
                return
        s.pending = "reset"
        s.deadline = s.t0 + self.step_timeout_s + STARTUP_GRACE_S

    def _send(self, s: _Slot, msg: tuple) -> bool:
        try:
            s.handle.send(msg)
            return True
        except (OSError, ValueError):
            return False

    def _finish(self, s: _Slot, error: str | None = None) -> None:
        """Record slot ``s``'s episode and give the slot the next one."""
        rec = s.rec
        if error is not None:
            rec.update(status="error", success=False, error=error)
        rec["wall_s"] = round(time.monotonic() - s.t0, 3)
        self.on_record(rec)
        self._start(s)

    def _fail_worker(self, s: _Slot, error: str) -> None:
        s.handle.restart()
        self._finish(s, error)

    # -- one control step ----------------------------------------------------------------------
    def _act_and_step(self, ready: list[_Slot]) -> None:
        r = [s.reply for s in ready]
        batch = {
            "image": np.stack([x["obs"]["image"] for x in r]),
            "wrist_image": np.stack([x["obs"]["wrist_image"] for x in r]),
            "state": np.stack([x["obs"]["state"] for x in r]).astype(np.float32),
            "instruction": [x["instruction"] for x in r],
            "slot": np.array([s.index for s in ready], np.int64),
            "is_first": np.array([s.first for s in ready], bool),
            "seed": np.array([s.episode["seed"] for s in ready], np.int64),
            "index": np.array([s.episode["index"] for s in ready], np.int64),
            "task": [s.episode["task"] for s in ready],
            "split": [s.episode["split"] for s in ready],
        }
        if self.need_expert:
            batch["expert_action"] = np.stack([x["expert_action"] for x in r]).astype(np.float32)
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
            if not self._send(s, ("step", a)):
                self._fail_worker(s, f"{s.handle.exit_reason()} before step {s.rec['steps'] + 1}")
                continue
            s.pending = "step"
            s.deadline = min(time.monotonic() + self.step_timeout_s, s.t0 + self.episode_timeout_s)

    def _gather(self) -> None:
        """Wait for every outstanding reply (refilling slots as episodes end) or its deadline."""
        while True:
            waiting = {s.handle.conn: s for s in self.slots if s.pending}
            if not waiting:
                return
            timeout = max(0.0, min(s.deadline for s in waiting.values()) - time.monotonic())
            for conn in wait(list(waiting), timeout):
                s = waiting[conn]
                try:
                    reply = conn.recv()
                except (EOFError, OSError):
                    self._fail_worker(s, f"{s.handle.exit_reason()} during {s.pending} "
                                         f"(after {s.rec['steps']} steps)")
                    continue
                self._on_reply(s, reply)
            now = time.monotonic()
            for s in list(waiting.values()):
                if s.pending and s.deadline <= now:
                    if now - s.t0 >= self.episode_timeout_s:
                        why = f"episode exceeded episode_timeout_s={self.episode_timeout_s:g}"
                    else:
                        limit = self.step_timeout_s + (STARTUP_GRACE_S if s.pending == "reset" else 0)
                        why = f"worker gave no reply to {s.pending} within {limit:g} s (hung)"
                    self._fail_worker(s, f"{why} after {s.rec['steps']} steps; worker killed and restarted")

    def _on_reply(self, s: _Slot, reply: dict) -> None:
        kind, s.pending = s.pending, None
        if "error" in reply:
            self._finish(s, f"env raised during {kind} (after {s.rec['steps']} steps):\n{reply['error']}")
            return
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
