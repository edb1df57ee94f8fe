"""The task-family registry: a family declares itself where it is defined.

A family is one module with a ``Task`` subclass decorated by ``@register_task``. The class carries
everything the rest of the suite needs to know about it::

    @register_task
    class PickTask(Task):
        name = "pick"                                   # key in TASKS, the env's ``task`` argument
        gym_id = "Pick"                                 # registers vlabench/Pick-v0
        splits = ("seen", "paraphrase", ...)            # the (task, split) cells that exist
        templates = {"train": (...), "heldout": (...)}  # disjoint phrasings (heldout: paraphrase split)
        expert = "vlabench.experts.grasping:PickExpert" # resolved lazily by experts.make_expert
        order = 10                                      # position in TASKS and in listings

Registering validates the declaration (errors name the class, the bad field and what would be valid),
adds the instance to ``TASKS``, its templates to ``language.TEMPLATES`` and ``vlabench/<gym_id>-v0`` to
Gymnasium's registry (entry point ``vlabench.env:TabletopEnv`` as a string, so registering imports
neither the env module nor the expert). ``vlabench.tasks`` imports every module of its package on
import (``discover``), so a new family in the package needs no edit anywhere else; a family defined
elsewhere (a notebook, a test, a plug-in) is registered the moment its class is decorated.
"""

from __future__ import annotations

import itertools
import re
from typing import TypeVar

import gymnasium as gym

from vlabench import language
from vlabench.tasks.task import Task

T = TypeVar("T", bound=type)

TASKS: dict[str, Task] = {}
"""Task name -> its (stateless) Task instance, sorted by ``order`` (then registration order). One live
dict: families registered later show up in every reference to it."""

GYM_NAMESPACE = "vlabench"
ENTRY_POINT = "vlabench.env:TabletopEnv"
_GYM_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_EXPERT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_sequence = itertools.count()
_registered_at: dict[str, int] = {}


def env_id(task: Task) -> str:
    """The Gymnasium id of a task: ``vlabench/<gym_id>-v0``."""
    return f"{GYM_NAMESPACE}/{task.gym_id}-v0"


def _check(cls: type) -> Task:
    """The validated instance of ``cls``; ValueError/TypeError naming the class and field otherwise."""
    where = f"{cls.__module__}.{cls.__qualname__}"
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise TypeError(f"register_task takes a subclass of vlabench.tasks.task.Task, got {cls!r}")
    for attr in ("name", "gym_id"):
        if attr not in vars(cls):
            raise ValueError(f"{where} must set its own {attr!r} (a family never inherits its parent's)")
    for method in ("sample", "success"):
        if getattr(cls, method) is getattr(Task, method):
            raise ValueError(f"{where} must implement Task.{method}")
    task = cls()
    if not isinstance(task.name, str) or not _NAME.match(task.name):
        raise ValueError(f"{where}.name must be lower_snake_case like 'next_to', got {task.name!r}")
    if not isinstance(task.gym_id, str) or not _GYM_ID.match(task.gym_id):
        raise ValueError(f"{where}.gym_id must be a CamelCase identifier like 'NextTo', got {task.gym_id!r}")
    if not isinstance(task.max_steps, int) or task.max_steps < 1:
        raise ValueError(f"{where}.max_steps must be a positive int, got {task.max_steps!r}")
    if not task.splits or not isinstance(task.splits, tuple):
        raise ValueError(f"{where}.splits must be a non-empty tuple of split names; "
                         f"valid: {', '.join(language.SPLITS)}")
    unknown = [s for s in task.splits if s not in language.SPLITS]
    if unknown:
        raise ValueError(f"{where}.splits has unknown splits {unknown}; valid: {', '.join(language.SPLITS)}")
    if "paraphrase" in task.splits and not language.check_templates(task.name, task.templates)["heldout"]:
        raise ValueError(f"{where} has the 'paraphrase' split but no 'heldout' templates for it")
    if not isinstance(task.expert, str) or not _EXPERT.match(task.expert):
        raise ValueError(f"{where}.expert must be 'package.module:ClassName' (imported only when an expert "
                         f"is made), got {task.expert!r}")
    return task


def register_task(cls: T) -> T:
    """Class decorator: validate the family ``cls`` declares and register it (see the module docstring).

    Re-registering the same class (a module reloaded) replaces the old entry; a different class under a
    taken name or gym id is refused."""
    task = _check(cls)
    for other in TASKS.values():
        same_class = (type(other).__module__, type(other).__qualname__) == (cls.__module__, cls.__qualname__)
        if other.name == task.name and not same_class:
            raise ValueError(f"task name {task.name!r} is already registered by {type(other).__module__}."
                             f"{type(other).__qualname__}; registered: {', '.join(TASKS)}")
        if other.gym_id == task.gym_id and other.name != task.name:
            raise ValueError(f"gym id {task.gym_id!r} of {cls.__qualname__} is already used by task {other.name!r}")
    language.add_templates(task.name, task.templates)
    if task.name in TASKS and TASKS[task.name].gym_id != task.gym_id:  # a reloaded module renamed its id
        gym.registry.pop(env_id(TASKS[task.name]), None)
    _registered_at.setdefault(task.name, next(_sequence))
    TASKS[task.name] = task
    _sort()
    _register_gym_id(task)
    return cls


def unregister_task(name: str) -> None:
    """Remove a family (and its templates and gym id) again: for tests and notebooks."""
    task = get_task(name)
    del TASKS[name]
    _registered_at.pop(name, None)
    language.TEMPLATES.pop(name, None)
    gym.registry.pop(env_id(task), None)


def get_task(name: str) -> Task:
    """The task registered as ``name``; raises ValueError listing the known tasks."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[name]


def _sort() -> None:
    # In place: ``from vlabench.tasks import TASKS`` elsewhere must keep seeing the same dict.
    items = sorted(TASKS.items(), key=lambda kv: (kv[1].order, _registered_at[kv[0]]))
    TASKS.clear()
    TASKS.update(items)
    templates = {name: language.TEMPLATES.pop(name) for name in TASKS if name in language.TEMPLATES}
    language.TEMPLATES.update(templates)  # same order as TASKS (templates of unregistered names stay last)


def _register_gym_id(task: Task) -> None:
    kwargs = {"task": task.name}
    spec = gym.registry.get(env_id(task))
    if spec is not None and spec.entry_point == ENTRY_POINT and spec.kwargs == kwargs:
        return
    gym.registry.pop(env_id(task), None)
    gym.register(env_id(task), entry_point=ENTRY_POINT, kwargs=kwargs, max_episode_steps=None,
                 disable_env_checker=False)


def split_table() -> str:
    """A markdown table of the registered families: gym id, max steps and which splits each has
    (generated from the declarations, for ``vlabench tasks`` and the README)."""
    used = [s for s in language.SPLITS if any(s in t.splits for t in TASKS.values())]
    head = ["family", "gym id", "max steps", *used]
    rows = [[t.name, f"`{env_id(t)}`", str(t.max_steps), *("yes" if s in t.splits else "" for s in used)]
            for t in TASKS.values()]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
