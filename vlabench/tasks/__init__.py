"""Task families. ``TASKS`` maps a task name to its (stateless) Task instance."""

from __future__ import annotations

from vlabench.tasks.pick import PickTask
from vlabench.tasks.place import PlaceTask
from vlabench.tasks.push import PushTask
from vlabench.tasks.stack import StackTask
from vlabench.tasks.task import Task

TASKS: dict[str, Task] = {t.name: t for t in (PickTask(), PlaceTask(), PushTask(), StackTask())}


def get_task(name: str) -> Task:
    """The task registered as ``name``; raises ValueError listing the known tasks."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[name]
