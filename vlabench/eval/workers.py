"""Env workers: processes that each own one or more env slots and step them when the main process asks.

Protocol (a duplex Pipe per worker; the main process is the only one that talks):

    ("run", [(local_slot, request), ...])   one message names any of the worker's slots, each at most once
    ("close",)

where ``request`` is ``("reset", episode: dict(task, split, index, seed), need_expert: bool,
video_path: str | None)`` or ``("step", action (7,) float32)``. The worker serves the requests in order
and sends back ONE list with one reply dict per request: ``{"obs", "success", "done", "steps",
"renderer", "instruction", "expert_action" (None unless asked), "video" (path written at episode end)}``
or ``{"error": traceback text}`` when that slot's env raised (the worker and its other slots survive;
that episode is an error). Messages are answered in the order they were sent, so the main process may
queue a second message (another group of slots) while the worker still steps the first.

Each slot keeps one env per (task, split) it has seen (up to MAX_ENVS per worker process, shared
out between its slots, at least one each, oldest closed first): an env rebuilds its physics on every
reset, so reuse is about skipping construction, not about state. Autoreset does not exist here: after
``done`` the slot waits for the next "reset".

Frames: given :class:`ImageBuffers`, a worker writes ``image`` and ``wrist_image`` into its slot's shared
memory and sends None for them: pickled through the pipe they cost up to ~10% of the env step at 8+ slots
per message, the buffers ~1% (results/PERFORMANCE.md, section 3c).

Test-only fault injection: the environment variable ``VLABENCH_EVAL_FAULT`` = ``exit:SEED`` (the worker
process dies with os._exit on the first step of that episode), ``hang:SEED`` (it sleeps forever there)
or ``raise:SEED`` (the env step raises). The main process reads it when starting a worker and hands it
over as an argument; nothing else in vlabench reads it.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing as mp
import os
import signal
import socket
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from multiprocessing import shared_memory
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from vlabench.contracts import (ACTION_DIM, OBSERVATION_KEYS, OPTIONAL_OBSERVATION_KEYS, Traits, new_record,
                                policy_rng_seed)
from vlabench.env import make_env
from vlabench.processes import exit_reason

FAULT_ENV = "VLABENCH_EVAL_FAULT"
MAX_ENVS = 4
OBS_KEYS = OBSERVATION_KEYS


def read_fault() -> tuple[str, int] | None:
    """The test-only fault spec from ``VLABENCH_EVAL_FAULT`` (see module docstring), or None."""
    spec = os.environ.get(FAULT_ENV, "")
    if not spec:
        return None
    kind, _, seed = spec.partition(":")
    if kind not in ("exit", "hang", "raise") or not seed.lstrip("-").isdigit():
        raise ValueError(f"{FAULT_ENV}={spec!r}; valid: exit:SEED, hang:SEED, raise:SEED")
    return kind, int(seed)


class EnvSlot:
    """The envs of one slot and the episode in flight (used by worker processes, Ray actors, benchmarks)."""

    def __init__(self, env_kwargs: dict, fault: tuple[str, int] | None = None, max_envs: int = MAX_ENVS) -> None:
        self.env_kwargs, self.fault, self.max_envs = dict(env_kwargs), fault, max_envs
        self.envs: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self.env = None
        self.episode: dict | None = None
        self.need_expert = False
        self.video_path: str | None = None
        self.frames: list[np.ndarray] = []
        self.wrists: list[np.ndarray] = []

    def _env_for(self, task: str, split: str):
        key = (task, split)
        if key in self.envs:
            self.envs.move_to_end(key)
            return self.envs[key]
        while len(self.envs) >= self.max_envs:
            _, old = self.envs.popitem(last=False)
            old.close()
        self.envs[key] = make_env(task, split, **self.env_kwargs)
        return self.envs[key]

    def drop_env(self) -> None:
        """Forget the current env (after it raised: never reuse an env in an unknown state)."""
        if self.episode is not None:
            env = self.envs.pop((self.episode["task"], self.episode["split"]), None)
            if env is not None:
                try:
                    env.close()
                except Exception:
                    pass
        self.env = None

    def _reply(self, obs: dict, info: dict, done: bool) -> dict:
        if self.video_path is not None:
            self.frames.append(obs["image"])
            self.wrists.append(obs["wrist_image"])
        return {"obs": {k: obs[k] for k in OBS_KEYS + OPTIONAL_OBSERVATION_KEYS if k in obs}, "success": bool(info["success"]), "done": done,
                "steps": int(info["steps"]), "renderer": info["renderer"], "instruction": obs["instruction"],
                "expert_action": (np.asarray(self.env.expert_action(), np.float32)
                                  if self.need_expert and not done else None),
                "video": None}

    def reset(self, episode: dict, need_expert: bool = False, video_path: str | None = None) -> dict:
        self.episode = dict(episode)
        self.need_expert, self.video_path = need_expert, video_path
        self.frames, self.wrists = [], []
        self.env = self._env_for(episode["task"], episode["split"])
        obs, info = self.env.reset(seed=int(episode["seed"]), options={"twin": True} if episode.get("twin") else None)
        return self._reply(obs, info, done=False)

    def step(self, action: np.ndarray) -> dict:
        if self.env is None:
            raise RuntimeError("step before reset")
        if self.fault is not None and self.fault[1] == int(self.episode["seed"]):
            kind = self.fault[0]
            if kind == "exit":
                os._exit(17)
            if kind == "hang":
                time.sleep(10**6)
            raise RuntimeError(f"injected fault ({FAULT_ENV}) for seed {self.fault[1]}")
        obs, _, terminated, truncated, info = self.env.step(action)
        done = bool(terminated or truncated)
        reply = self._reply(obs, info, done)
        if done and self.video_path is not None:
            reply["video"] = self.finish_video(success=bool(info["success_once"]))
        return reply

    def finish_video(self, success: bool) -> str | None:
        """Encode the frames collected for this episode; a failure to encode never fails the episode."""
        from vlabench.eval.video import write_video

        ep = self.episode
        header = f"{ep['task']}/{ep['split']} #{ep['index']} seed {ep['seed']}: {'success' if success else 'failure'}"
        try:
            return str(write_video(self.video_path, self.frames, self.wrists, self.env.scene.instruction, header))
        except Exception as e:
            return f"error: {type(e).__name__}: {e}"
        finally:
            self.frames, self.wrists = [], []

    def close(self) -> None:
        for env in self.envs.values():
            env.close()
        self.envs.clear()


class ImageBuffers:
    """Shared-memory frames of one worker's slots: per slot an ``image`` (F, F, 3) and a ``wrist_image``
    (W, W, 3) uint8 array. The main process creates them (``name=None``) and unlinks them; the worker attaches
    by ``spec()``. A slot's buffer is rewritten only while that slot serves a request, which the main process
    sends after copying the frames into an ``act`` batch. Buffers of a killed process group are removed by
    the next run's ``sweep_stale`` (named after this host and the creating PID)."""

    PREFIX = f"vlabench_eval_{hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]}_"

    def __init__(self, n_slots: int, front: int, wrist: int, name: str | None = None) -> None:
        self.n_slots, self.front, self.wrist = n_slots, front, wrist
        per = 3 * (front * front + wrist * wrist)
        new = f"{self.PREFIX}{os.getpid()}_{os.urandom(4).hex()}"
        # attaching registers the name again with the resource tracker the workers share with the main
        # process; its registry is a set, so the creator's unlink is the one unregister
        self.shm = shared_memory.SharedMemory(name=name or new, create=name is None, size=max(1, per * n_slots))
        self.views = [(np.ndarray((front, front, 3), np.uint8, self.shm.buf, i * per),
                       np.ndarray((wrist, wrist, 3), np.uint8, self.shm.buf, i * per + 3 * front * front))
                      for i in range(n_slots)]

    @classmethod
    def sweep_stale(cls, folder: str = "/dev/shm") -> list[str]:
        """Unlink the buffers of runs whose main process is gone; returns their names."""
        gone = []
        for name in os.listdir(folder) if os.path.isdir(folder) else []:
            pid = name[len(cls.PREFIX):].split("_")[0]
            if name.startswith(cls.PREFIX) and pid.isdigit() and not _alive(int(pid)):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(folder, name))
                    gone.append(name)
        return gone

    def spec(self) -> tuple[int, int, int, str]:
        return self.n_slots, self.front, self.wrist, self.shm.name

    def put(self, local: int, obs: dict) -> dict:
        """Worker side: write the frames that fit into slot ``local``'s buffer; ``obs`` with None for them."""
        out = dict(obs)
        for key, view in zip(("image", "wrist_image"), self.views[local]):
            if getattr(obs.get(key), "shape", None) == view.shape:
                view[...] = obs[key]
                out[key] = None
        return out

    def get(self, local: int, obs: dict) -> dict:
        """Main side: ``obs`` with the frames sent as None read from slot ``local``'s buffer (views, no copy)."""
        out = dict(obs)
        for key, view in zip(("image", "wrist_image"), self.views[local]):
            if out.get(key) is None:
                out[key] = view
        return out

    def close(self, unlink: bool = False) -> None:
        self.views = []
        with contextlib.suppress(Exception):
            self.shm.close()
        if unlink:
            with contextlib.suppress(FileNotFoundError):
                self.shm.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        pass
    return True


def worker_main(conn: Connection, env_kwargs: dict, fault: tuple[str, int] | None, n_slots: int = 1,
                buffers: tuple[int, int, int, str] | None = None) -> None:
    """Entry point of a worker process: serve "run" messages for its ``n_slots`` slots until "close" or EOF;
    ``buffers`` is the ``ImageBuffers.spec()`` to send frames through (None: pickled in the reply)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    slots = [EnvSlot(env_kwargs, fault, max_envs=max(1, MAX_ENVS // n_slots)) for _ in range(n_slots)]
    images = ImageBuffers(*buffers[:3], name=buffers[3]) if buffers else None
    try:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                break
            if msg[0] == "close":
                break
            replies = [serve(slots[local], request) for local, request in msg[1]]
            if images is not None:
                for (local, _), reply in zip(msg[1], replies):
                    if "obs" in reply:
                        reply["obs"] = images.put(local, reply["obs"])
            conn.send(replies)
    finally:
        for slot in slots:
            slot.close()
        if images is not None:
            images.close()


def serve(slot: EnvSlot, request: tuple) -> dict:
    """The reply to one reset/step request of ``slot``; an exception becomes ``{"error": traceback}``."""
    try:
        return slot.reset(*request[1:]) if request[0] == "reset" else slot.step(request[1])
    except Exception:
        slot.drop_env()
        return {"error": traceback.format_exc(limit=8)}


def mp_context() -> mp.context.BaseContext:
    """forkserver (cheap restarts from a process that already imported the sim) where it exists, else spawn.

    Never plain fork: the main process may hold torch/CUDA state and threads that fork would copy.
    """
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["vlabench.eval.workers"])
        return ctx
    return mp.get_context("spawn")


class WorkerHandle:
    """The main process's end of one worker: start, talk, kill, restart."""

    def __init__(self, ctx: mp.context.BaseContext, index: int, env_kwargs: dict,
                 fault: tuple[str, int] | None = None, n_slots: int = 1,
                 buffers: tuple[int, int, int, str] | None = None) -> None:
        self.ctx, self.index, self.env_kwargs, self.fault, self.n_slots = ctx, index, env_kwargs, fault, n_slots
        self.buffers = buffers
        self.proc: Any = None
        self.conn: Connection | None = None
        self.restarts = 0
        self.start()

    def start(self) -> None:
        parent, child = self.ctx.Pipe(duplex=True)
        self.proc = self.ctx.Process(target=worker_main,
                                     args=(child, self.env_kwargs, self.fault, self.n_slots, self.buffers),
                                     name=f"vlabench-eval-worker-{self.index}", daemon=True)
        self.proc.start()
        child.close()
        self.conn = parent

    def send(self, msg: tuple) -> None:
        self.conn.send(msg)

    def kill(self) -> None:
        if self.proc is not None:
            if self.proc.is_alive():
                self.proc.kill()
            self.proc.join(10)
        if self.conn is not None:
            self.conn.close()

    def restart(self) -> None:
        self.kill()
        self.restarts += 1
        self.start()

    def exit_reason(self) -> str:
        return f"worker process {exit_reason(self.proc)}"

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.conn.send(("close",))
            self.proc.join(10)
        self.kill()


def policy_actions(policy: Any, batch: dict, ctx: Callable[[], Any]) -> np.ndarray:
    """``policy.act`` under ``ctx()`` (inference mode / autocast), checked to be (n, 7) float32."""
    n = len(batch["slot"])
    with ctx():
        a = policy.act(batch)
    if hasattr(a, "detach"):  # a torch tensor slipped through the numpy boundary
        a = a.detach().float().cpu().numpy()
    a = np.asarray(a, dtype=np.float32)
    if a.shape != (n, ACTION_DIM):
        raise ValueError(f"policy.act returned shape {a.shape}, expected ({n}, {ACTION_DIM})")
    return a


def obs_batch(replies: list[dict], episodes: list[dict], slots: list[int], first: list[bool],
              traits: Traits) -> dict:
    """The ``obs_batch`` (vlabench.contracts.ObsBatch) for rows whose last worker replies are ``replies``:
    the observation, ``slot``, ``is_first`` and ``rng_seed`` for every policy; the optional observation
    keys, the episode metadata and the expert's action only for a policy whose ``traits`` ask for them."""
    batch = {
        "image": np.stack([r["obs"]["image"] for r in replies]),
        "wrist_image": np.stack([r["obs"]["wrist_image"] for r in replies]),
        "state": np.stack([r["obs"]["state"] for r in replies]).astype(np.float32),
        "instruction": [r["instruction"] for r in replies],
        "slot": np.asarray(slots, np.int64),
        "is_first": np.asarray(first, bool),
        "rng_seed": np.array([policy_rng_seed(e["task"], e["split"], e["index"], e["seed"]) for e in episodes], np.int64),
    }
    for key in OPTIONAL_OBSERVATION_KEYS:
        if key in traits.obs_keys:
            batch[key] = np.stack([r["obs"][key] for r in replies]).astype(np.float32)
    if traits.needs_episode_info:
        batch.update(seed=np.array([e["seed"] for e in episodes], np.int64),
                     index=np.array([e["index"] for e in episodes], np.int64),
                     task=[e["task"] for e in episodes], split=[e["split"] for e in episodes])
    if traits.needs_expert:
        batch["expert_action"] = np.stack([r["expert_action"] for r in replies]).astype(np.float32)
    return batch


def run_episode_inline(slot: EnvSlot, policy: Any, episode: dict, traits: Traits,
                       video_path: str | None = None, episode_timeout_s: float = float("inf"),
                       act_ctx: Callable[[], Any] = contextlib.nullcontext) -> dict:
    """Run one episode in this process with slot 0 of ``policy`` (Ray actors, the soak benchmark).

    Returns the episode record (vlabench.contracts.EpisodeRecord); any exception becomes status "error".
    """
    rec = new_record(episode)
    t0 = time.monotonic()
    first = True
    try:
        r = slot.reset(episode, traits.needs_expert, video_path)
        rec["instruction"], rec["renderer"] = r["instruction"], r["renderer"]
        while True:
            action = policy_actions(policy, obs_batch([r], [episode], [0], [first], traits), act_ctx)[0]
            first = False
            r = slot.step(action)
            rec["steps"] = r["steps"]
            if r["success"] and rec["success_step"] is None:
                rec["success"], rec["success_step"] = True, r["steps"]
            if r["done"]:
                rec["video"] = r["video"]
                break
            if time.monotonic() - t0 > episode_timeout_s:
                raise TimeoutError(f"episode exceeded episode_timeout_s={episode_timeout_s:g}")
    except Exception:
        slot.drop_env()
        rec.update(status="error", success=False, error=traceback.format_exc(limit=8))
    rec["wall_s"] = round(time.monotonic() - t0, 3)
    return rec
