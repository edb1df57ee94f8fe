"""vlabench: a benchmark suite for vision-language-action policies.

Importing the package registers every task family's Gymnasium id, as panda-gym does, so
``import vlabench`` is all ``gym.make("vlabench/Pick-v0")`` needs (``gym.make("vlabench:vlabench/Pick-v0")``
needs not even that). Registration imports the task modules (scene samplers: numpy, pybullet's C module,
the object catalogue) and gymnasium, but neither the env module, nor torch, nor a physics client.
"""

import importlib as _importlib
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


# The task modules import pybullet (through vlabench.sim), so its banner is silenced before they load.
_import_pybullet_quietly()
_importlib.import_module("vlabench.tasks")  # each family registers itself, gym id included
