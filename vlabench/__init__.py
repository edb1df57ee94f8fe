"""vlabench: a benchmark suite for vision-language-action policies."""

import os as _os
import sys as _sys

__version__ = "0.1.0"


def _import_pybullet_quietly() -> None:
    """pybullet's C module prints its build time on import; keep that banner out of command output."""
    if "pybullet" in _sys.modules:
        return
    try:
        fds = [s.fileno() for s in (_sys.stdout, _sys.stderr)]
    except (AttributeError, OSError, ValueError):
        import pybullet  # noqa: F401
        return
    _sys.stdout.flush(), _sys.stderr.flush()
    saved = [_os.dup(fd) for fd in fds]
    devnull = _os.open(_os.devnull, _os.O_WRONLY)
    for fd in fds:
        _os.dup2(devnull, fd)
    try:
        import ctypes

        import pybullet  # noqa: F401

        ctypes.CDLL(None).fflush(None)  # the banner may sit in C's stdio buffer until flushed
    finally:
        for fd, s in zip(fds, saved):
            _os.dup2(s, fd)
            _os.close(s)
        _os.close(devnull)


_import_pybullet_quietly()
