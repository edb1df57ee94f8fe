"""Scripted oracles, one per task family. ``make_expert(env)`` builds the right one for the env's task.

A family names its expert in its own declaration (``Task.expert = "package.module:ClassName"``, see
``vlabench.tasks.registry``); the class is imported here, only when an expert is made. An expert class
takes ``(env, noise=..., rng=...)`` and has ``act() -> (7,) float32 action``.
"""

from __future__ import annotations

import importlib

import numpy as np


def expert_class(task) -> type:
    """The expert class a task declares (``task.expert``), imported now; ValueError naming the task and
    the path if it cannot be found."""
    path = getattr(task, "expert", "")
    module, _, attr = path.partition(":")
    if not module or not attr:
        raise ValueError(f"task {task.name!r} declares no expert; set its expert = 'package.module:ClassName'")
    try:
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"expert {path!r} of task {task.name!r} cannot be imported: {e}") from e
    if not callable(obj):
        raise ValueError(f"expert {path!r} of task {task.name!r} is not a class: {obj!r}")
    return obj


def make_expert(env, noise: float = 0.0, rng: np.random.Generator | None = None):
    """A fresh expert for the env's current episode."""
    return expert_class(env.task)(env, noise=noise, rng=rng)
