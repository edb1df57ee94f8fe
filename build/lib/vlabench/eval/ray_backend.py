"""Ray backend: the same manifest sharded over a Ray cluster, one episode per actor call.

Running on a cluster::

    # on the head node
    ray start --head --port=6379
    # on every other node (each needs the same vlabench install and Python environment)
    ray start --address=HEAD_IP:6379
    # anywhere on the cluster (the driver), e.g. on the head node
    vlabench eval --suite envs/smoke.toml --policy CHECKPOINT_DIR --backend ray --address auto \\
        --workers 64 --device cuda --out results/run

``--workers`` is the number of Ray actors. Each actor reserves 1 CPU (and ``ray_gpus_per_actor`` of
a GPU when ``--device cuda``), builds the policy itself from its PolicySpec (a checkpoint path must be
readable on every node, e.g. a shared filesystem; an import string importable there) and runs episodes with a local
single-slot loop (``workers.run_episode_inline``). The driver hands out one episode at a time and
appends each returned record to episodes.jsonl at once, so resuming works exactly as with the local
backend. Videos are encoded inside the actor and shipped back as MP4 bytes.

Failures: an actor that dies (node lost, segfault) or exceeds ``episode_timeout_s`` is killed and
replaced; its episode is recorded as an error. An exception inside an episode (policy or env) is
recorded as an error by the actor itself.

``ray`` is an optional dependency: ``pip install 'vlabench[ray]'``. Without ``--address`` a local Ray
instance is started (and shut down at the end); if the caller already called ``ray.init`` that
instance is used.
"""

from __future__ import annotations

import os
import tempfile
import time
import traceback
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vlabench.contracts import new_record
from vlabench.fileio import write_bytes_atomic
from vlabench.agents.spec import PolicySpec
from vlabench.eval.runtime import build_policy, resolve_device

ACTOR_STARTUP_GRACE_S = 300.0
"""Extra time an actor's first episode may take: process start, imports, loading the policy."""


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RuntimeError("backend 'ray' needs the optional dependency ray: pip install 'vlabench[ray]' "
                           "(or use --backend local)") from None
    return ray


class EpisodeActor:
    """Holds one policy (built from its spec, on this node) and one EnvSlot; runs whole episodes."""

    def __init__(self, spec: PolicySpec, device: str, env_kwargs: dict, bf16: bool) -> None:
        from vlabench.eval.workers import EnvSlot

        self.policy, self.act_ctx = build_policy(spec, resolve_device(device), bf16)
        self.traits = spec.traits()
        self.slot = EnvSlot(env_kwargs)

    def run(self, episode: dict, want_video: bool, episode_timeout_s: float) -> tuple[dict, bytes | None]:
        from vlabench.eval.workers import run_episode_inline

        self.policy.reset(1)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "episode.mp4") if want_video else None
            rec = run_episode_inline(self.slot, self.policy, episode, self.traits, path,
                                     episode_timeout_s, self.act_ctx)
            video = Path(path).read_bytes() if path and os.path.isfile(path) else None
        rec.pop("video", None)
        return rec, video


def run_ray(cfg: Any, spec: PolicySpec, episodes: list[dict], env_kwargs: dict, video_path_for: Callable[[dict], str | None],
            on_record: Callable[[dict], None], deadline: float | None = None) -> None:
    """Run ``episodes`` on Ray actors; ``on_record(rec)`` for each as it returns (in completion order). After
    ``deadline`` (time.monotonic) no new episode is handed out."""
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        ray.init(address=cfg.address, log_to_driver=True)
        started = True
    gpus = cfg.ray_gpus_per_actor if str(cfg.device).startswith("cuda") else 0
    actor_cls = ray.remote(num_cpus=1, num_gpus=gpus, max_restarts=0)(EpisodeActor)

    def new_actor() -> Any:
        return actor_cls.remote(spec, cfg.device, env_kwargs, cfg.bf16)

    queue = deque(episodes)
    actors = [new_actor() for _ in range(min(max(1, cfg.workers), len(episodes)))]
    fresh = [True] * len(actors)
    inflight: dict[Any, tuple[int, dict, float]] = {}

    def submit(i: int) -> None:
        if queue and (deadline is None or time.monotonic() <= deadline):
            ep = queue.popleft()
            ref = actors[i].run.remote(ep, video_path_for(ep) is not None, cfg.episode_timeout_s)
            inflight[ref] = (i, ep, time.monotonic())

    def fail(ep: dict, error: str, t0: float) -> None:
        rec = new_record(ep)
        rec.update(status="error", error=error, wall_s=round(time.monotonic() - t0, 3))
        on_record(rec)

    try:
        for i in range(len(actors)):
            submit(i)
        while inflight:
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
            for ref in ready:
                i, ep, t0 = inflight.pop(ref)
                try:
                    rec, video = ray.get(ref)
                except Exception as e:  # RayActorError (actor died) or RayTaskError (bug outside the episode)
                    ray.kill(actors[i])
                    actors[i], fresh[i] = new_actor(), True
                    fail(ep, f"ray actor failed: {type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}", t0)
                else:
                    fresh[i] = False
                    path = video_path_for(ep)
                    if video is not None and path is not None:
                        write_bytes_atomic(path, video)
                    on_record(rec)
                submit(i)
            now = time.monotonic()
            for ref, (i, ep, t0) in list(inflight.items()):
                limit = cfg.episode_timeout_s + (ACTOR_STARTUP_GRACE_S if fresh[i] else 0.0)
                if now - t0 > limit:
                    del inflight[ref]
                    ray.kill(actors[i])
                    actors[i], fresh[i] = new_actor(), True
                    fail(ep, f"episode exceeded episode_timeout_s={cfg.episode_timeout_s:g} on a Ray actor; "
                             "actor killed and replaced", t0)
                    submit(i)
    finally:
        for a in actors:
            try:
                ray.kill(a)
            except Exception:
                pass
        if started:
            ray.shutdown()
