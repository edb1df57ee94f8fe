"""``vlabench replay``: re-simulate a recorded episode from its seed and actions, check it, make a video.

The recorded episode stores the seed, the env options and every action. Replaying resets an env with
that seed (which rebuilds the identical initial state) and applies the actions (in DART demos, the
perturbed actions the env executed, ``sim/executed_actions``, not the expert's labels); the proprioceptive
states and object poses must match the recording to within ``tolerance``. ``--resolution`` re-renders
the same trajectory at another camera size: physics does not depend on rendering.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tyro.conf import Positional

import numpy as np


@dataclass
class ReplayConfig:
    data: Positional[Path]
    """Dataset directory."""
    episode: int = 0
    """Episode number in the dataset's global order (see ``vlabench data info``)."""
    out: Path | None = None
    """MP4 to write (front camera with the instruction; None = check only)."""
    resolution: int = 0
    """Re-render the front camera at this size (0 = as recorded)."""
    tolerance: float = 1e-4
    """Largest allowed deviation of states and object poses (m / quaternion units)."""


def replay(cfg: ReplayConfig) -> dict:
    """Replay and compare; returns {"max_state_error", "max_pose_error", "frames", "ok", ...}."""
    from vlabench.data.manifest import load_manifest, manifest_episodes
    from vlabench.data.shards import read_episode
    from vlabench.env import make_env

    episodes = manifest_episodes(load_manifest(cfg.data, skip_bad=True))
    if not 0 <= cfg.episode < len(episodes):
        raise ValueError(f"episode {cfg.episode} out of range: {cfg.data} holds {len(episodes)} episodes "
                         f"(valid: 0..{len(episodes) - 1})")
    entry = episodes[cfg.episode]
    rec = read_episode(cfg.data / entry["file"], entry["demo"])
    attrs = rec["attrs"]
    kwargs = json.loads(attrs.get("env_kwargs") or "{}")
    if cfg.resolution:
        kwargs["image_size"] = cfg.resolution
    env = make_env(attrs["task"], attrs["split"], **kwargs)
    try:
        obs, _ = env.reset(seed=int(attrs["seed"]))
        states, poses, frames = [], [], []
        for action in rec["sim"].get("executed_actions", rec["actions"]):  # DART demos label other actions
            states.append(obs["state"]), poses.append(env.object_poses())
            frames.append(obs["image"])
            obs, *_ = env.step(action)
        frames.append(obs["image"])
    finally:
        env.close()
    state_err = float(np.abs(np.stack(states) - rec["obs"]["state"]).max())
    pose_err = float(np.abs(np.stack(poses) - rec["sim"]["object_poses"]).max())
    result = {"task": attrs["task"], "split": attrs["split"], "seed": int(attrs["seed"]),
              "instruction": attrs["instruction"], "frames": len(frames), "max_state_error": state_err,
              "max_pose_error": pose_err, "ok": max(state_err, pose_err) <= cfg.tolerance}
    if cfg.out is not None:
        from vlabench.data.video import caption, write_mp4

        write_mp4(cfg.out, [caption(f, attrs["instruction"]) for f in frames])
    return result


def run(cfg: ReplayConfig) -> dict:
    result = replay(cfg)
    print(f"episode {cfg.episode}: {result['task']}/{result['split']} seed {result['seed']} "
          f"{result['instruction']!r}, {result['frames']} frames; max state error {result['max_state_error']:.2e}, "
          f"max object pose error {result['max_pose_error']:.2e}" + (f"; video {cfg.out}" if cfg.out else ""))
    if not result["ok"]:
        raise RuntimeError(f"replay diverged from the recording by more than {cfg.tolerance}")
    return result
