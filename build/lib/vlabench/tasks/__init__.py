"""Task families. ``TASKS`` maps a task name to its (stateless) Task instance.

Each family is one module of this package with a ``@register_task`` class (see ``registry``): it
declares its gym id, splits, instruction templates and expert there. Importing this package imports
every module in it, so a family added as a new module is registered (in ``TASKS``, in
``language.TEMPLATES`` and as ``vlabench/<GymId>-v0``) with no edit anywhere else.

Which family has which split is generated from the declarations: ``registry.split_table()`` (printed
by ``vlabench tasks``). The reasoning families (relational, math, category) exist only in their own
split: their scenes use seen objects, backgrounds and pad symbols, so only the reasoning asked for is new.
"""

from __future__ import annotations

import importlib
import pkgutil

from vlabench.tasks.registry import TASKS, get_task, register_task, split_table, unregister_task
from vlabench.tasks.task import Task

__all__ = ["TASKS", "Task", "get_task", "register_task", "split_table", "unregister_task", "discover"]


def discover() -> list[str]:
    """Import every module of ``vlabench.tasks`` (each family registers itself); the module names."""
    names = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
    for name in names:
        importlib.import_module(f"{__name__}.{name}")
    return names


discover()
