"""manifest.json of a demo dataset directory: what is there, a hash of it, and every file's checksum.

The manifest is a cache of facts recomputed from the shard files, so the directory heals itself
after a crash: `load_manifest` deletes orphan temp files (those whose writer is dead), rescans
every shard whose size or mtime changed since the manifest was written, drops ``pending/``
single-episode files already packed into a complete shard, and rewrites the manifest atomically.
Every read-modify-write of the manifest happens under an exclusive ``flock`` of ``<root>/.lock``,
so several collection workers and readers may call it at once.

The one fact that is *not* recomputed is a file's checksum. ``checksums`` holds the sha256 of every
file, recorded once: by the writer when it publishes a shard (`record_checksums`), or, for a file
its writer never recorded (a pending single-episode file, a shard whose writer died between
publishing and recording), when the file is first indexed. A rescan compares the bytes to that
record and never replaces it: a shard whose size or mtime changed is re-hashed, and a different
hash makes it *bad* ("changed after it was written"), not a new healthy shard. A change that keeps
size and mtime is caught by ``verify=True`` (`verify_dataset`, ``vlabench data info --verify``),
which re-hashes every file. Deleting manifest.json forgets the records: the next load records the
files as they are then (the way to accept a deliberately edited shard).

Layout of manifest.json::

    {"format": "vlabench-demos-manifest", "version": 1,
     "hash": sha256 over the sorted episode keys and the (file, sha256) of every source file,
     "n_episodes": int, "n_frames": int, "stats_hash": hash stats.json was computed for (or null),
     "shards": [{"file": "shard_00000.h5" | "pending/w00000_000003.h5", "size": int, "mtime_ns": int,
                 "sha256": str, "n_episodes": int, "n_frames": int,
                 "episodes": [{"demo": "demo_0", "task", "split", "index", "seed", "length",
                               "n_steps", "success", "instruction", "suite"}]}],
     "bad": [{"file", "size", "mtime_ns", "error"}],           # unreadable or changed files, never served
     "duplicates": [{"file", "demo", "key"}],                   # repeated keys; the first copy wins
     "checksums": {file: sha256}}                               # recorded once per file (see above)

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

import h5py

# CorruptShardError, EpisodeKey, FORMAT and PENDING_DIR are re-exported: readers import them from here
from vlabench.data.layout import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_NAME,
    PENDING_DIR,
    SHARD_GLOB,
    CorruptShardError,
    EpisodeKey,
    file_sha256,
)
from vlabench.fileio import remove_orphan_temp_files, write_json_atomic

TEMP_PATTERNS = ("*.tmp", ".*.tmp*")
"""Temp names: ``.<name>.<pid>.tmp<suffix>`` from vlabench.fileio, ``<name>.tmp`` from older versions."""


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


def remove_orphan_tmps(root: Path) -> list[Path]:
    """Delete temp files under root whose writer is gone (vlabench.fileio.remove_orphan_temp_files)."""
    return remove_orphan_temp_files(p for pat in TEMP_PATTERNS
                                    for p in (*root.glob(pat), *(root / PENDING_DIR).glob(pat), *(root / ".cache").rglob(pat)))


def source_files(root: Path) -> list[Path]:
    """Complete shards (sorted), then complete pending single-episode files (sorted)."""
    return sorted(root.glob(SHARD_GLOB)) + sorted((root / PENDING_DIR).glob("*.h5"))


def _demo_order(name: str) -> int:
    return int(name.rsplit("_", 1)[1])


class ChangedAfterWriteError(ValueError):
    """A file's sha256 differs from the one recorded when it was written."""

    def __init__(self, now: str, recorded: str):
        super().__init__(f"its bytes changed after it was written (sha256 now {now[:12]}..., "
                         f"{recorded[:12]}... recorded at write time)")


def scan_source(path: Path, root: Path, recorded: str | None = None) -> dict:
    """Manifest entry of one shard file (hash + per-episode attrs; no image data is read).

    recorded: the sha256 recorded for this file; a different hash raises ValueError.
    """
    st = path.stat()
    sha = file_sha256(path)
    if recorded is not None and sha != recorded:
        raise ChangedAfterWriteError(sha, recorded)
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


def _assemble(entries: list[dict], bad: list[dict], stats_hash: str | None, checksums: dict[str, str]) -> dict:
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
            "shards": entries, "bad": bad, "duplicates": duplicates, "checksums": dict(sorted(checksums.items()))}


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # missing or torn by an older non-atomic writer: rebuild from the shards


def _recorded_checksums(old: dict) -> dict[str, str]:
    """The checksum records of a manifest (manifests older than "checksums" kept them in their entries)."""
    out = {e["file"]: e["sha256"] for e in old.get("shards", []) if "sha256" in e}
    out.update(old.get("checksums", {}))
    return out


def _same_file(entry: dict | None, st: os.stat_result) -> bool:
    return entry is not None and entry["size"] == st.st_size and entry["mtime_ns"] == st.st_mtime_ns


def _index_files(root: Path, old: dict, verify: bool, rescan: bool) -> tuple[list, list, dict]:
    """(entries, bad, checksums) of the files now in `root`, reusing `old` entries of unchanged files."""
    checksums = _recorded_checksums(old)
    old_entries = {} if rescan else {e["file"]: e for e in old.get("shards", [])}
    old_bad = {} if rescan else {b["file"]: b for b in old.get("bad", [])}
    entries, bad, present = [], [], set()
    for path in source_files(root):
        rel = path.relative_to(root).as_posix()
        try:
            st = path.stat()
        except FileNotFoundError:
            continue  # a pending file removed by its writer just now
        present.add(rel)
        prev = old_entries.get(rel)
        if not verify and _same_file(prev, st) and prev["sha256"] == checksums.get(rel, prev["sha256"]):
            entries.append(prev)
            continue
        if not verify and _same_file(old_bad.get(rel), st):
            bad.append(old_bad[rel])
            continue
        try:
            entry = scan_source(path, root, checksums.get(rel))
        except FileNotFoundError:
            present.discard(rel)
            continue
        except Exception as e:  # h5py raises OSError/KeyError/ValueError for damaged files
            bad.append({"file": rel, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                        "error": str(e) if isinstance(e, ChangedAfterWriteError) else f"{type(e).__name__}: {e}"})
            continue
        checksums.setdefault(rel, entry["sha256"])  # first sight of a file its writer did not record
        entries.append(entry)
    return entries, bad, {k: v for k, v in checksums.items() if k in present}


def load_manifest(root: Path | str, skip_bad: bool = False, verify: bool = False, rescan: bool = False) -> dict:
    """Return the up-to-date manifest of `root`, repairing the directory first.

    verify: re-hash every file and compare it with its recorded checksum (catches changes that kept
        the size and mtime); see `verify_dataset`.
    rescan: re-read every file instead of trusting unchanged entries (see `rebuild_manifest`);
        recorded checksums are still enforced.
    Raises CorruptShardError naming the first bad shard unless skip_bad (then it warns).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"demo dataset directory {root} does not exist")
    if not (root / MANIFEST_NAME).exists() and not source_files(root):
        return _assemble([], [], None, {})  # not (yet) a demo directory: read it, write nothing into it
    with dir_lock(root):
        remove_orphan_tmps(root)
        old = _read_json(root / MANIFEST_NAME)
        entries, bad, checksums = _index_files(root, old, verify, rescan)
        # A crash between publishing a shard and deleting its pending inputs leaves both copies.
        packed = {episode_key(ep) for e in entries if not e["file"].startswith(PENDING_DIR + "/")
                  for ep in e["episodes"]}
        kept = []
        for e in entries:
            if e["file"].startswith(PENDING_DIR + "/") and all(episode_key(ep) in packed for ep in e["episodes"]):
                (root / e["file"]).unlink(missing_ok=True)
                checksums.pop(e["file"], None)
            else:
                kept.append(e)
        manifest = _assemble(kept, bad, old.get("stats_hash"), checksums)
        if manifest != old:
            try:
                write_json_atomic(root / MANIFEST_NAME, manifest)
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


def verify_dataset(root: Path | str, skip_bad: bool = False) -> dict:
    """Re-hash every shard of `root` against the checksum recorded when it was written; returns the manifest.

    Call it before long work on a dataset (training, export). Raises CorruptShardError naming the
    first shard that is unreadable or whose bytes changed since it was written, unless skip_bad
    (then each bad shard is left out with a warning, and the returned manifest lists only good ones).
    Cost: one sequential read of every shard (sha256 runs at several hundred MB/s).
    """
    return load_manifest(root, skip_bad=skip_bad, verify=True)


def rebuild_manifest(root: Path | str, skip_bad: bool = False) -> dict:
    """Rebuild manifest.json from the shard files (re-reading and re-hashing every shard).

    Recorded checksums still apply: a shard changed since it was written stays bad.
    """
    return load_manifest(root, skip_bad=skip_bad, rescan=True)


def record_checksums(root: Path, add: dict[str, str], drop: list[str] = ()) -> None:
    """Record the sha256 of files just written (paths relative to root) and forget deleted ones."""
    with dir_lock(root):
        m = _read_json(root / MANIFEST_NAME)
        checksums = _recorded_checksums(m)
        checksums.update(add)
        for rel in drop:
            checksums.pop(rel, None)
        m["checksums"] = dict(sorted(checksums.items()))
        write_json_atomic(root / MANIFEST_NAME, m)


def set_stats_hash(root: Path, dataset_hash: str) -> None:
    """Record that stats.json now describes the dataset with hash `dataset_hash`."""
    with dir_lock(root):
        m = _read_json(root / MANIFEST_NAME)
        if m.get("hash") == dataset_hash and m.get("stats_hash") != dataset_hash:
            m["stats_hash"] = dataset_hash
            write_json_atomic(root / MANIFEST_NAME, m)


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
