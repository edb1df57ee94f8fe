"""manifest.json of a demo dataset directory: what is there, and a hash of it.

The manifest is a cache of facts that can always be recomputed from the shard files, so the
directory heals itself after a crash: `load_manifest` deletes orphan ``*.tmp`` files (those whose
writer is dead), rescans every shard whose size or mtime changed since the manifest was written,
drops ``pending/`` single-episode files already packed into a complete shard, and rewrites the
manifest atomically. Every read-modify-write of the manifest happens under an exclusive ``flock``
of ``<root>/.lock``, so several collection workers and readers may call it at once.

Layout of manifest.json::

    {"format": "vlabench-demos-manifest", "version": 1,
     "hash": sha256 over the sorted episode keys and the (file, sha256) of every source file,
     "n_episodes": int, "n_frames": int, "stats_hash": hash stats.json was computed for (or null),
     "shards": [{"file": "shard_00000.h5" | "pending/w00000_000003.h5", "size": int, "mtime_ns": int,
                 "sha256": str, "n_episodes": int, "n_frames": int,
                 "episodes": [{"demo": "demo_0", "task", "split", "index", "seed", "length",
                               "n_steps", "success", "instruction", "suite"}]}],
     "bad": [{"file", "size", "mtime_ns", "error"}],           # unreadable files, never served
     "duplicates": [{"file", "demo", "key"}]}                   # repeated keys; the first copy wins

An episode key is ``(task, split, index, seed)``. The dataset's global episode order (used by
`DemoDataset` and the exporters) is the sorted order of those keys, independent of sharding.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py

MANIFEST_NAME = "manifest.json"
PENDING_DIR = "pending"
SHARD_GLOB = "shard_*.h5"
FORMAT = "vlabench-demos"
FORMAT_VERSION = 1
EpisodeKey = tuple[str, str, int, int]


class CorruptShardError(RuntimeError):
    """A shard file that cannot be read; `path` names it."""

    def __init__(self, path: Path | str, reason: str):
        self.path = Path(path)
        super().__init__(f"corrupt or truncated demo shard {self.path}: {reason} "
                         "(delete it and re-collect, or pass skip_bad=True / --skip-bad to ignore it)")


@contextmanager
def dir_lock(root: Path) -> Iterator[None]:
    """Exclusive advisory lock on ``root/.lock`` (no lock on a read-only directory)."""
    try:
        fd = os.open(root / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextmanager
def locked_tmp(final: Path, no_clobber: bool = False) -> Iterator[Path]:
    """Yield ``<final>.tmp`` while holding an flock on it; publish it to `final` on success.

    The flock is what tells `remove_orphan_tmps` that a live process still owns the file; the
    kernel drops it when the writer dies, even on kill -9. Publishing is atomic (os.replace, or
    with no_clobber a hard link that fails with FileExistsError if `final` exists), so a reader
    sees either no file or the complete one.
    """
    tmp = final.with_name(final.name + ".tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FileExistsError(f"{tmp} is being written by another live process") from None
        try:
            yield tmp
            if no_clobber:
                os.link(tmp, final)
                os.unlink(tmp)
            else:
                os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    finally:
        os.close(fd)


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write JSON to a locked temp file and rename it over `path`."""
    with locked_tmp(Path(path)) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=False) + "\n")


def remove_orphan_tmps(root: Path) -> list[Path]:
    """Delete ``*.tmp`` files under root whose writer is gone (their flock can be taken)."""
    removed = []
    candidates = [*root.glob("*.tmp"), *(root / PENDING_DIR).glob("*.tmp"), *(root / ".cache").rglob("*.tmp")]
    for p in candidates:
        try:
            fd = os.open(p, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # The name may have been renamed/reused between glob and open; only delete our inode.
            if os.fstat(fd).st_ino == os.stat(p).st_ino:
                p.unlink()
                removed.append(p)
        except OSError:
            pass  # locked by a live writer, or already gone
        finally:
            os.close(fd)
    return removed


def source_files(root: Path) -> list[Path]:
    """Complete shards (sorted), then complete pending single-episode files (sorted)."""
    return sorted(root.glob(SHARD_GLOB)) + sorted((root / PENDING_DIR).glob("*.h5"))


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _demo_order(name: str) -> int:
    return int(name.rsplit("_", 1)[1])


def scan_source(path: Path, root: Path) -> dict:
    """Manifest entry of one shard file (hash + per-episode attrs; no image data is read)."""
    st = path.stat()
    sha = file_sha256(path)
    episodes = []
    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != FORMAT:
            raise ValueError(f"not a vlabench demo shard (format attr {f.attrs.get('format')!r})")
        for name in sorted(f["data"].keys(), key=_demo_order):
            g = f["data"][name]
            a = g.attrs
            lengths = {g[k].shape[0] for k in ("obs/image", "obs/wrist_image", "obs/state", "actions")}
            if len(lengths) != 1:
                raise ValueError(f"{name}: arrays disagree on the episode length: {sorted(lengths)}")
            episodes.append({
                "demo": name, "task": str(a["task"]), "split": str(a["split"]), "index": int(a["index"]),
                "seed": int(a["seed"]), "length": lengths.pop(), "n_steps": int(a["n_steps"]),
                "success": bool(a["success"]), "instruction": str(a["instruction"]), "suite": str(a["suite"]),
            })
    return {"file": path.relative_to(root).as_posix(), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "sha256": sha, "n_episodes": len(episodes), "n_frames": sum(e["length"] for e in episodes),
            "episodes": episodes}


def episode_key(ep: dict) -> EpisodeKey:
    return (ep["task"], ep["split"], int(ep["index"]), int(ep["seed"]))


def _assemble(entries: list[dict], bad: list[dict], stats_hash: str | None) -> dict:
    seen: dict[EpisodeKey, str] = {}
    duplicates = []
    for e in entries:
        for ep in e["episodes"]:
            k = episode_key(ep)
            if k in seen:
                duplicates.append({"file": e["file"], "demo": ep["demo"], "key": list(k)})
            else:
                seen[k] = e["file"]
    h = hashlib.sha256(json.dumps(sorted(seen)).encode())
    for e in sorted(entries, key=lambda e: e["file"]):
        h.update(f"{e['file']}:{e['sha256']}\n".encode())
    n_frames = sum(ep["length"] for ep in manifest_episodes({"shards": entries}))
    return {"format": FORMAT + "-manifest", "version": FORMAT_VERSION, "hash": h.hexdigest(),
            "n_episodes": len(seen), "n_frames": n_frames, "stats_hash": stats_hash,
            "shards": entries, "bad": bad, "duplicates": duplicates}


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # missing or torn by an older non-atomic writer: rebuild from the shards


def _same_file(entry: dict | None, st: os.stat_result) -> bool:
    return entry is not None and entry["size"] == st.st_size and entry["mtime_ns"] == st.st_mtime_ns


def load_manifest(root: Path | str, skip_bad: bool = False, verify: bool = False, rescan: bool = False) -> dict:
    """Return the up-to-date manifest of `root`, repairing the directory first.

    verify: re-hash every file and flag a file whose bytes changed under the same size and mtime.
    rescan: ignore the stored manifest entirely (see `rebuild_manifest`).
    Raises CorruptShardError naming the first unreadable shard unless skip_bad (then it warns).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"demo dataset directory {root} does not exist")
    if not (root / MANIFEST_NAME).exists() and not source_files(root):
        return _assemble([], [], None)  # not (yet) a demo directory: read it, write nothing into it
    with dir_lock(root):
        remove_orphan_tmps(root)
        old = {} if rescan else _read_json(root / MANIFEST_NAME)
        old_entries = {e["file"]: e for e in old.get("shards", [])}
        old_bad = {b["file"]: b for b in old.get("bad", [])}
        entries, bad = [], []
        for path in source_files(root):
            rel = path.relative_to(root).as_posix()
            try:
                st = path.stat()
            except FileNotFoundError:
                continue  # a pending file removed by its writer just now
            prev = old_entries.get(rel)
            if _same_file(prev, st) and not verify:
                entries.append(prev)
                continue
            if _same_file(old_bad.get(rel), st) and not verify:
                bad.append(old_bad[rel])
                continue
            try:
                entry = scan_source(path, root)
                if verify and _same_file(prev, st) and entry["sha256"] != prev["sha256"]:
                    raise ValueError("content changed under the same size and mtime (sha256 mismatch)")
                entries.append(entry)
            except FileNotFoundError:
                continue
            except Exception as e:  # h5py raises OSError/KeyError/ValueError for damaged files
                bad.append({"file": rel, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                            "error": f"{type(e).__name__}: {e}"})
        # A crash between publishing a shard and deleting its pending inputs leaves both copies.
        packed = {episode_key(ep) for e in entries if not e["file"].startswith(PENDING_DIR + "/")
                  for ep in e["episodes"]}
        kept = []
        for e in entries:
            if e["file"].startswith(PENDING_DIR + "/") and all(episode_key(ep) in packed for ep in e["episodes"]):
                (root / e["file"]).unlink(missing_ok=True)
            else:
                kept.append(e)
        manifest = _assemble(kept, bad, old.get("stats_hash"))
        if manifest != old:
            try:
                atomic_write_json(root / MANIFEST_NAME, manifest)
            except OSError as e:
                warnings.warn(f"could not write {root / MANIFEST_NAME}: {e}", stacklevel=2)
    for b in bad:
        if not skip_bad:
            raise CorruptShardError(root / b["file"], b["error"])
        warnings.warn(f"skipping corrupt demo shard {root / b['file']}: {b['error']}", stacklevel=2)
    if manifest["duplicates"]:
        warnings.warn(f"{len(manifest['duplicates'])} duplicate episode(s) in {root}; the first copy "
                      f"of each is used (see manifest.json 'duplicates')", stacklevel=2)
    return manifest


def rebuild_manifest(root: Path | str, skip_bad: bool = False) -> dict:
    """Rebuild manifest.json from the shard files alone (re-hashing every shard)."""
    return load_manifest(root, skip_bad=skip_bad, rescan=True)


def set_stats_hash(root: Path, dataset_hash: str) -> None:
    """Record that stats.json now describes the dataset with hash `dataset_hash`."""
    with dir_lock(root):
        m = _read_json(root / MANIFEST_NAME)
        if m.get("hash") == dataset_hash and m.get("stats_hash") != dataset_hash:
            m["stats_hash"] = dataset_hash
            atomic_write_json(root / MANIFEST_NAME, m)


def manifest_episodes(manifest: dict) -> list[dict]:
    """Unique episodes in global order (sorted keys); each dict also has "file" (its shard)."""
    out: dict[EpisodeKey, dict] = {}
    for e in manifest["shards"]:
        for ep in e["episodes"]:
            out.setdefault(episode_key(ep), {**ep, "file": e["file"]})
    return [out[k] for k in sorted(out)]


def completed_keys(root: Path | str, skip_bad: bool = True) -> set[EpisodeKey]:
    """Keys of every episode safely on disk (for resuming an interrupted collection)."""
    root = Path(root)
    if not root.is_dir():
        return set()
    return {episode_key(ep) for ep in manifest_episodes(load_manifest(root, skip_bad=skip_bad))}
