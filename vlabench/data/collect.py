"""``vlabench collect``: expert rollouts in K worker processes, stored as crash-safe HDF5 shards.

Which episodes: the suite's cells are interleaved index by index (cell order of the file), with
``seed = seed_range[0] + index``, so any N covers every cell evenly and the same N always means the
same seeds. The expert's failures are kept out of the dataset but logged in ``failures.jsonl``;
rerunning the same command skips every key already stored or already failed and resumes until the
dataset holds N successful episodes (kill -9 included: at most the episodes in flight are lost).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from vlabench.suite import Episode, Suite, load_suite

FAILURES = "failures.jsonl"
SUMMARY = "collect.json"


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
    """Std of Gaussian noise added to the expert's motion actions (action units), for diverse demos."""
    episodes_per_shard: int = 8
    """Episodes packed into each HDF5 shard."""
    image_size: int = 0
    """Front image size override (0 = the suite's [env] value)."""
    wrist_size: int = 0
    """Wrist image size override (0 = the suite's [env] value)."""


def episode_stream(suite: Suite) -> Iterator[Episode]:
    """Every episode the suite's seed range allows, interleaved across cells by index."""
    cells = suite.cells()
    for index in range(suite.seed_range[1] - suite.seed_range[0]):
        for task, split in cells:
            yield Episode(task, split, index, suite.seed_range[0] + index)


def rollout(env, ep: Episode, noise: float, suite_name: str, env_kwargs: dict) -> dict:
    """Run the expert on one episode; returns the Episode record of contracts (success in attrs)."""
    obs, info = env.reset(seed=ep.seed)
    images, wrists, states, actions, poses = [], [], [], [], []
    success = False
    for _ in range(env.max_steps):
        action = env.expert_action(noise)
        images.append(obs["image"]), wrists.append(obs["wrist_image"]), states.append(obs["state"])
        poses.append(env.object_poses())
        actions.append(action)
        obs, _, terminated, truncated, info = env.step(action)
        success |= info["success"]
        if terminated or truncated:
            break
    return {
        "obs": {"image": np.stack(images), "wrist_image": np.stack(wrists), "state": np.stack(states)},
        "actions": np.stack(actions).astype(np.float32),
        "sim": {"object_poses": np.stack(poses)},
        "attrs": {"instruction": info["instruction"], "task": ep.task, "split": ep.split, "index": ep.index,
                  "seed": ep.seed, "suite": suite_name, "success": bool(success), "n_steps": len(actions),
                  "env_kwargs": json.dumps(env_kwargs, sort_keys=True), "expert_noise": float(noise)},
    }


def _worker(slot: int, n_workers: int, cfg: CollectConfig, suite_name: str, env_kwargs: dict, inbox, outbox) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from vlabench.data.shards import ShardWriter
    from vlabench.env import make_env

    envs: dict = {}
    writer = ShardWriter(cfg.out, shard_index=slot, episodes_per_shard=cfg.episodes_per_shard, index_stride=n_workers)
    try:
        while (ep := inbox.get()) is not None:
            key = (ep.task, ep.split)
            if key not in envs:
                envs[key] = make_env(ep.task, ep.split, **env_kwargs)
            record = rollout(envs[key], ep, cfg.noise, suite_name, env_kwargs)
            if record["attrs"]["success"]:
                writer.write(record)
            outbox.put((slot, ep, record["attrs"]["success"], record["attrs"]["n_steps"]))
        writer.close()
    finally:
        for env in envs.values():
            env.close()
    outbox.put((slot, None, False, 0))


def _append_failure(out: Path, ep: Episode, steps: int) -> None:
    with open(out / FAILURES, "a") as f:
        f.write(json.dumps({"task": ep.task, "split": ep.split, "index": ep.index, "seed": ep.seed,
                            "steps": steps}) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _failed_keys(out: Path) -> set:
    keys = set()
    if (out / FAILURES).exists():
        for line in (out / FAILURES).read_text().splitlines():
            try:
                d = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash: that episode simply runs again
            keys.add((d["task"], d["split"], d["index"], d["seed"]))
    return keys


def run(cfg: CollectConfig) -> dict:
    """Collect until the dataset holds ``cfg.episodes`` successful episodes; returns the summary."""
    from tqdm import tqdm

    from vlabench.data.manifest import atomic_write_json, completed_keys, load_manifest
    from vlabench.data.stats import ensure_stats

    suite = load_suite(cfg.suite)
    if suite.kind != "train":
        raise ValueError(f"{cfg.suite}: collect needs a suite of kind 'train' (its seeds are reserved for demos), "
                         f"got kind {suite.kind!r}")
    if cfg.workers < 1 or cfg.episodes < 0:
        raise ValueError(f"need workers >= 1 and episodes >= 0, got workers={cfg.workers}, episodes={cfg.episodes}")
    target = cfg.episodes or len(suite.episodes)
    env_kwargs = dict(suite.env_kwargs)
    env_kwargs.update({k: v for k, v in (("image_size", cfg.image_size), ("wrist_size", cfg.wrist_size)) if v})
    cfg.out.mkdir(parents=True, exist_ok=True)
    done, failed = completed_keys(cfg.out), _failed_keys(cfg.out)
    successes, failures = len(done), len(failed)
    todo = (e for e in episode_stream(suite) if e.key not in done and e.key not in failed)
    ctx = mp.get_context("spawn")
    outbox = ctx.Queue()
    inboxes = [ctx.Queue() for _ in range(cfg.workers)]
    procs = [ctx.Process(target=_worker, args=(i, cfg.workers, cfg, suite.name, env_kwargs, inboxes[i], outbox),
                         daemon=True) for i in range(cfg.workers)]
    for proc in procs:
        proc.start()
    in_flight, alive, t0, new = 0, cfg.workers, time.time(), 0
    bar = tqdm(total=target, initial=min(successes, target), desc="collect", unit="ep")
    try:
        idle = list(range(cfg.workers))
        while alive:
            while idle and successes + in_flight < target:
                ep = next(todo, None)
                if ep is None:
                    raise RuntimeError(f"{cfg.suite}: seed range exhausted after {successes} successful episodes; "
                                       f"widen seed_range or ask for fewer episodes")
                inboxes[idle.pop()].put(ep)
                in_flight += 1
            if in_flight == 0:
                for q in inboxes:
                    q.put(None)
                while alive:
                    if outbox.get()[1] is None:
                        alive -= 1
                break
            slot, ep, ok, steps = outbox.get()
            if ep is None:
                alive -= 1
                continue
            in_flight -= 1
            idle.append(slot)
            new += 1
            if ok:
                successes += 1
                bar.update(1)
            else:
                failures += 1
                _append_failure(cfg.out, ep, steps)
            rate = new / max(time.time() - t0, 1e-9)
            bar.set_postfix(eps_per_s=f"{rate:.2f}", expert_success=f"{successes / max(successes + failures, 1):.1%}")
    finally:
        bar.close()
        for proc in procs:
            proc.join(timeout=60)
            if proc.is_alive():
                proc.kill()
    manifest = load_manifest(cfg.out, skip_bad=True)
    ensure_stats(cfg.out, manifest)
    summary = {"suite": suite.name, "suite_path": str(cfg.suite), "suite_manifest_hash": suite.manifest_hash,
               "episodes": manifest["n_episodes"], "frames": manifest["n_frames"], "expert_failures": failures,
               "expert_success_rate": successes / max(successes + failures, 1), "env_kwargs": env_kwargs,
               "noise": cfg.noise, "dataset_hash": manifest["hash"]}
    atomic_write_json(cfg.out / SUMMARY, summary)
    print(f"{cfg.out}: {summary['episodes']} episodes, {summary['frames']} frames; expert success "
          f"{summary['expert_success_rate']:.1%} ({failures} failures kept out)")
    return summary
