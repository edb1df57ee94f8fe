"""The Task interface every family implements, and shared success helpers."""

from __future__ import annotations

import math

import numpy as np
import pybullet as p

from vlabench.language import Split
from vlabench.tasks.base import Scene, SceneObject


class Task:
    """A task family: a seeded scene sampler, instructions and a state-based success predicate.

    ``splits`` lists the splits the family can be sampled in; other (task, split) cells do not exist.
    """

    name: str = ""
    gym_id: str = ""
    max_steps: int = 100
    splits: tuple[str, ...] = ()
    example: str = ""

    def sample(self, rng: np.random.Generator, split: Split) -> Scene:
        """A scene for this split, drawn only from ``rng``."""
        raise NotImplementedError

    def success(self, env, scene: Scene) -> tuple[bool, dict]:
        """(success, diagnostics) from the simulator state."""
        raise NotImplementedError


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
