"""Child processes: one wording for why a worker process is gone, used by the collect and eval workers."""

from __future__ import annotations

import multiprocessing as mp
import signal


def exit_reason(proc: mp.process.BaseProcess, wait: float = 2.0) -> str:
    """``"was killed by SIGKILL"``, ``"exited with code 17"`` or ``"stopped answering"`` (still running after
    ``wait`` seconds) for ``proc``."""
    proc.join(wait)
    code = proc.exitcode
    if code is None:
        return "stopped answering"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"
