"""The Task interface every family implements, and shared success helpers."""

from __future__ import annotations

import math

import numpy as np
import pybullet as p

from vlabench.language import Split, fill
from vlabench.tasks.base import Scene, SceneObject
from vlabench.tasks.twins import generic_twin


class Task:
    """A task family: a seeded scene sampler, instructions and a state-based success predicate.

    A family declares itself with ``@vlabench.tasks.registry.register_task`` on its subclass; the
    class attributes below are its declaration (the registry validates them).
    """

    name: str = ""
    """Key in ``TASKS`` and the env's ``task`` argument (lower_snake_case)."""
    gym_id: str = ""
    """Registered as ``vlabench/<gym_id>-v0``."""
    max_steps: int = 100
    splits: tuple[str, ...] = ()
    """The splits the family can be sampled in; other (task, split) cells do not exist."""
    example: str = ""
    templates: dict[str, tuple[str, ...]] = {}
    """Instruction phrasings: ``train`` (demos and every split but paraphrase) and ``heldout`` (only the
    ``paraphrase`` split), disjoint. Slots like ``{obj}`` are filled by ``sample``."""
    expert: str = ""
    """The scripted oracle as ``"package.module:ClassName"``, imported only when an expert is made (the
    experts sit above the tasks)."""
    order: int = 1000
    """Position in ``TASKS`` and in listings; equal orders keep registration order."""

    def instruction(self, phrasing: str, rng: np.random.Generator, **slots: str) -> str:
        """A random template of this family's ``phrasing`` set (train | heldout), filled with ``slots``."""
        if phrasing not in self.templates:
            raise ValueError(f"task {self.name!r} has no {phrasing!r} phrasing; it has: {', '.join(self.templates)}")
        return fill(self.templates[phrasing], rng, **slots)

    def sample(self, rng: np.random.Generator, split: Split) -> Scene:
        """A scene for this split, drawn only from ``rng``."""
        raise NotImplementedError

    def success(self, env, scene: Scene) -> tuple[bool, dict]:
        """(success, diagnostics) from the simulator state."""
        raise NotImplementedError

    def twin(self, scene: Scene, split: Split, rng: np.random.Generator) -> Scene:
        """The episode's paired twin: ``scene`` with only ``split``'s shift undone (``vlabench.tasks.twins``).
        A family whose split is its own (symbols, math, semantic, relational) overrides this for it."""
        return generic_twin(self, scene, split, rng)

    def goal_position(self, env, scene: Scene) -> np.ndarray | None:
        """World xyz (3,) of where the target must go, for the privileged state; None for families whose
        goal is a motion of the target alone (pick, and the reasoning families that reduce to a pick).

        The default covers every family whose goal is an object: the named pad, else the container,
        base or reference object. A family with another kind of goal overrides it (push: a region).
        """
        if "pad" in scene.goal:
            return pos(env, scene.objects[scene.goal["pad"]])
        for role in GOAL_ROLES:
            obj = next((o for o in scene.objects if o.role == role), None)
            if obj is not None:
                return pos(env, obj)
        return None


GOAL_ROLES = ("container", "base", "reference")
"""Object roles that are a family's goal, in the order ``Task.goal_position`` looks for them."""


def pos(env, obj: SceneObject) -> np.ndarray:
    """World position of an object's base."""
    return np.asarray(p.getBasePositionAndOrientation(obj.body, physicsClientId=env.world.client)[0])


def held(env, obj: SceneObject) -> bool:
    """Whether both fingers touch the object."""
    return all(env.world.robot.touching(obj.body))


def touching_gripper(env, obj: SceneObject) -> bool:
    """Whether either finger touches the object."""
    return any(env.world.robot.touching(obj.body))


def xy_dist(a: np.ndarray, b: np.ndarray) -> float:
    """Horizontal distance between two points."""
    return math.dist(a[:2], b[:2])
