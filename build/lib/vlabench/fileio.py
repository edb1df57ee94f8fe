"""Files written whole or not at all, and exclusive ownership of output folders.

Every file vlabench writes goes through :func:`atomic_path` (or the ``write_*_atomic`` helpers on
top of it): the bytes go to a temp file beside the target, which is fsynced and then renamed over it.
A reader therefore sees the old file or the new one, never half of one, and a process killed
mid-write leaves only a ``.<name>.<pid>.tmp*`` file behind. The temp file is ``flock``-ed while it
is written, so a cleaner can tell a dead writer's leftovers (lock free) from a live writer's.

Commands that own a whole folder for their run (collect, eval) hold :func:`exclusive_folder` on it.
A second run into the same folder is refused at once, naming the holder's PID and command. The
lock is an ``flock``, which the kernel releases when its holder dies (even on ``kill -9``), so a
killed run never blocks the rerun that resumes it.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

OWNER_LOCK = ".owner.lock"
"""Name of the lock file :func:`exclusive_folder` keeps in the folder it owns."""


@contextmanager
def atomic_path(final: str | os.PathLike, suffix: str = "", no_clobber: bool = False) -> Iterator[Path]:
    """Yield a temp path beside ``final``; publish it as ``final`` when the block ends without error.

    Args:
        final: the file to (re)write.
        suffix: appended to the temp name, for writers that choose a format by extension
            (``".mp4"``, ``".npz"``, ``".png"``).
        no_clobber: publish with a hard link that fails with FileExistsError when ``final`` exists,
            instead of replacing it.
    On an exception the temp file is deleted and ``final`` is left as it was.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp{suffix}")
    fd = os.open(tmp, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        try:
            yield tmp
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
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


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int = 1, sort_keys: bool = False) -> Path:
    """JSON of ``obj`` (one trailing newline) written atomically."""
    return write_text_atomic(path, json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n")


def remove_orphan_temp_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Delete those of ``paths`` whose writer is gone (their flock can be taken); returns what was deleted.
    A file a live writer holds is left alone."""
    removed = []
    for p in sorted({Path(x) for x in paths}):
        try:
            fd = os.open(p, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # The name may have been renamed or reused between the listing and open: delete only our inode.
            if os.fstat(fd).st_ino == os.stat(p).st_ino:
                p.unlink()
                removed.append(p)
        except OSError:
            pass  # locked by a live writer, or already gone
        finally:
            os.close(fd)
    return removed


class FolderBusyError(RuntimeError):
    """Another live process owns the folder (see :func:`exclusive_folder`)."""


@contextmanager
def exclusive_folder(folder: str | os.PathLike, command: str) -> Iterator[Path]:
    """Own ``folder`` (created if missing) for the duration of the block.

    Raises FolderBusyError naming the holder's PID and command when another live process owns it.
    Child processes started with fork inherit the lock, so it also covers workers outliving a
    parent killed mid-run.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / OWNER_LOCK
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "an unknown process"
            pid, _, what = holder.partition(" ")
            raise FolderBusyError(f"{folder} is in use by `{what or '?'}` (PID {pid}); wait for it to finish, "
                                  f"or stop it (kill {pid}) and rerun to resume") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {command}\n".encode(), 0)
        yield folder
    finally:
        os.close(fd)
def portable_path(path: str | Path) -> str:
    """``path`` relative to the working directory when it lies inside it (results then read the same
    on every machine that runs from a checkout), else absolute."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


