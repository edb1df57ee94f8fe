"""The training loop's expected failures: user errors (one line from the CLI) that keep the built-in
exception type callers already catch."""

from __future__ import annotations

from vlabench.contracts import UserError


class RunExistsError(UserError, FileExistsError):
    """The output folder already holds a checkpoint and --resume was not given."""


class DivergedError(UserError, FloatingPointError):
    """The training loss became NaN or inf."""
