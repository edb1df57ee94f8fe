"""DemoDataset: windows of demo frames for training, read lazily from the HDF5 shards.

Sample i is frame t of some episode (every frame of every selected episode is one sample)::

    image         uint8   (n_obs, 3, H, W)  frames t-n_obs+1 .. t; before frame 0, frame 0 repeats
    wrist_image   uint8   (n_obs, 3, h, w)
    state         float32 (n_obs, 8)        same frames as the images
    action        float32 (horizon, 7)      raw actions a_t .. a_{t+horizon-1}; past the end the
                                            last action repeats and action_is_pad is True
    action_is_pad bool    (horizon,)
    instruction   str,  task  str
    goal_image    uint8   (3, H, W)         frame t+goal_offset clamped to the last frame
                                            (only when goal_offset is set)
    privileged    float32 (n_obs, P)        the privileged low-dim state (only with privileged=True)
    front_pixels  float32 (n_obs, 2, 2)     where the target and the goal position of ``privileged`` appear
                                            in the front frame, (u, v) / image size, u right, v down
                                            (only with front_pixels=True; a training label for heatmaps)
    <stream>_features  float16 (n_obs, ...)  a frozen encoder's cached output for frames t-n_obs+1 .. t
                                            (only for the streams named in ``features``; vlabench.data.features)

Normalization is the model's job (`stats`). Episodes are ordered by their sorted key
(task, split, index, seed), so `episodes=[...]` subsets are stable however the data was sharded.

Process safety: h5py handles are opened on first access in the process that uses them and
forgotten when the process id changes (a forked DataLoader worker) or the object is pickled
(spawned workers), so no HDF5 handle ever crosses a fork. States and actions are small and are
read once in __init__; only images are read per sample.

cache=True decodes each shard's image streams once into ``<root>/.cache/<shard>-<sha>/<key>.npy``
(uint8, frames of all its episodes concatenated; written through vlabench.fileio.atomic_path) and then
serves frames from np.load(mmap_mode="r"): no gzip work per sample, page-cache shared by workers.
The sha in the directory name invalidates the cache when a shard changes.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from vlabench.contracts import privileged_slice
from vlabench.data.features import FrameEncoder, build_features, feature_file
from vlabench.data.layout import CorruptShardError, EpisodeKey, read_lowdim_by_shard, read_obs_arrays
from vlabench.data.manifest import (
    dir_lock,
    episode_key,
    load_manifest,
    manifest_episodes,
)
from vlabench.data.stats import ensure_stats
from vlabench.fileio import atomic_path

IMAGE_KEYS = ("image", "wrist_image")


class DemoDataset(Dataset):
    """Torch dataset over a demo directory written by ShardWriter (see module docstring).

    root: dataset directory.  n_obs: observation frames per sample.  horizon: actions per sample.
    goal_offset: k for goal_image = frame t+k (None: no goal image).
    episodes: indices into the full dataset's sorted episode list (train/val splits); None = all.
    cache: serve images from decoded uint8 memory maps under root/.cache.
    skip_bad: skip unreadable or changed shards with a warning instead of raising CorruptShardError.
    image_keys: which camera streams to return (subset of "image", "wrist_image").
    verify: re-hash every shard against its recorded checksum first (see manifest.verify_dataset).
    privileged: also return ``obs/privileged`` (read once, like states); KeyError for demos without it.
    front_pixels: also return the front-image projection of the privileged target and goal positions
        (needs ``privileged``; the camera's field of view is the one the demos recorded).
    features: {stream: FrameEncoder}: serve ``<stream>_features`` from a cache built on first use
        (vlabench.data.features); the encoders are used only while building and are not kept.
    """

    def __init__(self, root: Path | str, n_obs: int = 1, horizon: int = 1, goal_offset: int | None = None,
                 episodes: Sequence[int] | None = None, cache: bool = False, skip_bad: bool = False,
                 image_keys: Sequence[str] = IMAGE_KEYS, verify: bool = False, privileged: bool = False,
                 features: Mapping[str, FrameEncoder] | None = None, front_pixels: bool = False):
        if n_obs < 1 or horizon < 1 or (goal_offset is not None and goal_offset < 0):
            raise ValueError(f"need n_obs >= 1, horizon >= 1, goal_offset None or >= 0; got "
                             f"{n_obs}, {horizon}, {goal_offset}")
        bad_keys = [k for k in (*image_keys, *(features or {})) if k not in IMAGE_KEYS]
        if bad_keys:
            raise ValueError(f"unknown image_keys {bad_keys}; valid: {list(IMAGE_KEYS)}")
        self.root = Path(root)
        self.n_obs, self.horizon, self.goal_offset = n_obs, horizon, goal_offset
        self.image_keys = tuple(image_keys)
        self.privileged = bool(privileged)
        if front_pixels and not privileged:
            raise ValueError("front_pixels projects the privileged positions: it needs privileged=True")
        self._read_keys = tuple(dict.fromkeys(self.image_keys + (("image",) if goal_offset is not None else ())))
        manifest = load_manifest(self.root, skip_bad=skip_bad, verify=verify)
        all_eps = manifest_episodes(manifest)
        if not all_eps:
            raise ValueError(f"demo dataset {self.root} holds no episodes")
        self.manifest_hash: str = manifest["hash"]
        self._stats = ensure_stats(self.root, manifest, skip_bad=skip_bad)
        if episodes is None:
            episodes = range(len(all_eps))
        out_of_range = [i for i in episodes if not 0 <= i < len(all_eps)]
        if out_of_range:
            raise IndexError(f"episode indices {out_of_range[:5]} out of range 0..{len(all_eps) - 1}")
        chosen = [dict(all_eps[i]) for i in episodes]
        self._shard_sha = {e["file"]: e["sha256"] for e in manifest["shards"]}
        offsets = self._frame_offsets(manifest)
        for ep in chosen:
            ep["offset"] = offsets[(ep["file"], ep["demo"])]
        self._episodes = self._load_lowdim(chosen, skip_bad)
        if not self._episodes:
            raise ValueError(f"no readable episodes selected in {self.root}")
        self._ends = np.cumsum([ep["length"] for ep in self._episodes])
        self.front_pixels = bool(front_pixels)
        if front_pixels:
            from vlabench.sim import camera  # only for this label: reading demos needs no pybullet otherwise

            fov = float(self.env_kwargs().get("front_fov", camera.FRONT_FOV))
            for ep in self._episodes:
                points = ep["privileged"][:, np.r_[privileged_slice("target_pos"), privileged_slice("goal_pos")]]
                uv = camera.project_to_front(points.reshape(-1, 3), 1, fov)
                ep["front_pixels"] = uv.reshape(-1, 2, 2).astype(np.float32)
        self.cache = cache
        if cache:
            self._build_cache()
        self._feature_files: dict[str, str] = {}
        if features:
            self._build_features(features, manifest)
        self._files: dict[str, h5py.File] = {}
        self._dsets: dict[tuple[str, str, str], h5py.Dataset] = {}
        self._mmaps: dict[tuple[str, str], np.ndarray] = {}
        self._pid = os.getpid()

    @staticmethod
    def _frame_offsets(manifest: dict) -> dict[tuple[str, str], int]:
        """Start frame of each demo within its shard's concatenated frame order (cache layout)."""
        out = {}
        for e in manifest["shards"]:
            off = 0
            for ep in e["episodes"]:
                out[(e["file"], ep["demo"])] = off
                off += ep["length"]
        return out

    def _load_lowdim(self, chosen: list[dict], skip_bad: bool) -> list[dict]:
        bad: list[str] = []
        for ep, state, actions in read_lowdim_by_shard(self.root, chosen, skip_bad, bad):
            ep["state"], ep["actions"] = state.astype(np.float32), actions.astype(np.float32)
        kept = [ep for ep in chosen if ep["file"] not in bad]
        if self.privileged:
            by_file: dict[str, list[dict]] = {}
            for ep in kept:
                by_file.setdefault(ep["file"], []).append(ep)
            for file, eps in by_file.items():
                for ep, a in zip(eps, read_obs_arrays(self.root / file, [ep["demo"] for ep in eps], "privileged")):
                    ep["privileged"] = a.astype(np.float32)
        return kept

    # ---- public API -------------------------------------------------------------------------
    @property
    def stats(self) -> dict:
        """stats.json of the whole dataset (see vlabench.data.stats)."""
        return self._stats

    @property
    def num_episodes(self) -> int:
        return len(self._episodes)

    def episode_keys(self) -> list[EpisodeKey]:
        """(task, split, index, seed) of the episodes in this dataset, in sample order."""
        return [episode_key(ep) for ep in self._episodes]

    def episode_lengths(self) -> list[int]:
        return [ep["length"] for ep in self._episodes]

    def episode_info(self) -> list[dict]:
        """task, split, index, seed, instruction, length and start (the sample index of its first frame) of
        each episode, in sample order: episode i's frame t is sample ``info[i]["start"] + t``."""
        starts = np.concatenate([[0], self._ends[:-1]]).astype(int)
        return [{**{k: ep[k] for k in ("task", "split", "index", "seed", "instruction", "length")}, "start": int(s)}
                for ep, s in zip(self._episodes, starts)]

    def env_kwargs(self) -> dict:
        """The env options the demos were recorded with (those of the first episode; a dataset comes from
        one suite), e.g. ``{"image_size": 96, "front_fov": 35.0}``; {} for demos that do not record them."""
        ep = self._episodes[0]
        with h5py.File(self.root / ep["file"], "r", locking=False) as f:
            raw = f["data"][ep["demo"]].attrs.get("env_kwargs", "{}")
        try:
            out = json.loads(raw if isinstance(raw, str) else bytes(raw).decode())
        except ValueError:
            return {}
        return out if isinstance(out, dict) else {}

    def episode_instructions(self) -> list[str]:
        """The instruction of each episode, in sample order (no frames are read)."""
        return [ep["instruction"] for ep in self._episodes]

    def __len__(self) -> int:
        return int(self._ends[-1])

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"sample index {i} out of range for {len(self)} samples")
        i = int(i) % len(self)
        e = int(np.searchsorted(self._ends, i, side="right"))
        ep = self._episodes[e]
        t = i - (int(self._ends[e - 1]) if e else 0)
        last = ep["length"] - 1
        obs_idx = np.clip(np.arange(t - self.n_obs + 1, t + 1), 0, last)
        act_idx = np.arange(t, t + self.horizon)
        sample: dict[str, Any] = {}
        for key in self.image_keys:
            sample[key] = torch.from_numpy(self._frames(ep, key, obs_idx)).permute(0, 3, 1, 2).contiguous()
        for stream in self._feature_files:
            sample[f"{stream}_features"] = torch.from_numpy(self._features(ep, stream, obs_idx))
        sample["state"] = torch.from_numpy(ep["state"][obs_idx])
        if self.privileged:
            sample["privileged"] = torch.from_numpy(ep["privileged"][obs_idx])
        if self.front_pixels:
            sample["front_pixels"] = torch.from_numpy(ep["front_pixels"][obs_idx])
        sample["action"] = torch.from_numpy(ep["actions"][np.minimum(act_idx, last)])
        sample["action_is_pad"] = torch.from_numpy(act_idx > last)
        sample["instruction"] = ep["instruction"]
        sample["task"] = ep["task"]
        if self.goal_offset is not None:
            g = self._frames(ep, "image", np.array([min(t + self.goal_offset, last)]))[0]
            sample["goal_image"] = torch.from_numpy(g).permute(2, 0, 1).contiguous()
        return sample

    # ---- reading ----------------------------------------------------------------------------
    def _check_pid(self) -> None:
        if os.getpid() != self._pid:  # forked: never touch the parent's HDF5 handles
            self._files, self._dsets, self._mmaps, self._pid = {}, {}, {}, os.getpid()

    def _frames(self, ep: dict, key: str, idx: np.ndarray) -> np.ndarray:
        """Frames idx (sorted, may repeat) of one stream: (len(idx), H, W, 3) uint8."""
        self._check_pid()
        try:
            if self.cache:
                mm = self._mmaps.get((ep["file"], key))
                if mm is None:
                    mm = np.load(self._cache_path(ep["file"], key), mmap_mode="r")
                    self._mmaps[(ep["file"], key)] = mm
                return np.ascontiguousarray(mm[ep["offset"] + idx])
            ds = self._dsets.get((ep["file"], ep["demo"], key))
            if ds is None:  # h5py group lookups cost more than a small chunk read: keep the handles
                f = self._files.get(ep["file"])
                if f is None:
                    f = self._files[ep["file"]] = h5py.File(self.root / ep["file"], "r")
                ds = self._dsets[(ep["file"], ep["demo"], key)] = f["data"][ep["demo"]]["obs"][key]
            lo, hi = int(idx[0]), int(idx[-1])  # idx is sorted
            # One contiguous read, then repeat frames in memory (h5py fancy indexing rejects repeats).
            block = ds[lo:hi + 1]
            return block[idx - lo]
        except (OSError, KeyError, ValueError) as e:
            reason = f"reading {ep['demo']}/obs/{key}: {type(e).__name__}: {e}"
            raise CorruptShardError(self.root / ep["file"], reason) from e

    def _features(self, ep: dict, stream: str, idx: np.ndarray) -> np.ndarray:
        key = (ep["file"], f"{stream}_features")
        mm = self._mmaps.get(key)
        if mm is None:
            mm = self._mmaps[key] = np.load(self._cache_dir(ep["file"]) / self._feature_files[stream], mmap_mode="r")
        return np.ascontiguousarray(mm[ep["offset"] + idx])

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_files"], state["_dsets"], state["_mmaps"] = {}, {}, {}
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._pid = os.getpid()

    # ---- decoded-image cache ----------------------------------------------------------------
    def _cache_dir(self, file: str) -> Path:
        return self.root / ".cache" / f"{file.replace('/', '_')}-{self._shard_sha[file][:16]}"

    def _cache_path(self, file: str, key: str) -> Path:
        return self._cache_dir(file) / f"{key}.npy"

    def _build_cache(self) -> None:
        cache_root = self.root / ".cache"
        cache_root.mkdir(exist_ok=True)
        live = {self._cache_dir(f).name for f in self._shard_sha}
        with dir_lock(cache_root):
            for d in cache_root.iterdir():
                if d.is_dir() and d.name not in live:  # cache of a shard that changed or vanished
                    shutil.rmtree(d, ignore_errors=True)
            for file in sorted({ep["file"] for ep in self._episodes}):
                self._cache_dir(file).mkdir(exist_ok=True)
                for key in self._read_keys:
                    if not self._cache_path(file, key).exists():
                        self._decode_to_npy(file, key)

    def _build_features(self, encoders: Mapping[str, FrameEncoder], manifest: dict) -> None:
        """Build (or verify) the cached features of every selected shard; keep only the file names."""
        shards = {e["file"]: e["episodes"] for e in manifest["shards"]}
        files = sorted({ep["file"] for ep in self._episodes})
        (self.root / ".cache").mkdir(exist_ok=True)
        for stream, encoder in encoders.items():
            # frames in the order _frame_offsets gives them: the manifest's episode order within a shard
            jobs = [(self.root / f, [e["demo"] for e in shards[f]], sum(e["length"] for e in shards[f]),
                     feature_file(self._cache_dir(f), encoder)) for f in files]
            with dir_lock(self.root / ".cache"):
                build_features(jobs, encoder)
            self._feature_files[stream] = jobs[0][3].name

    def _decode_to_npy(self, file: str, key: str) -> None:
        path = self.root / file
        try:
            with h5py.File(path, "r") as f:
                demos = sorted(f["data"].keys(), key=lambda n: int(n.rsplit("_", 1)[1]))
                streams = [f["data"][d]["obs"][key] for d in demos]
                shape = (sum(s.shape[0] for s in streams), *streams[0].shape[1:])
                final = self._cache_path(file, key)
                with atomic_path(final, suffix=".npy") as tmp:
                    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
                    off = 0
                    for s in streams:  # one episode at a time keeps memory bounded
                        out[off:off + s.shape[0]] = s[()]
                        off += s.shape[0]
                    out.flush()
                    del out
        except (OSError, KeyError, ValueError) as e:
            raise CorruptShardError(path, f"decoding obs/{key} for the cache: {type(e).__name__}: {e}") from e
