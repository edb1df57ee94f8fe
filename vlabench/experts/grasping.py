"""Experts for the pick family and everything that starts with a pick (place, stack, next to, pads)."""

from __future__ import annotations

import numpy as np

from vlabench.experts.base import CLOSE, OPEN, Waypoint, WaypointExpert, grasp_yaw

APPROACH = 0.10
"""Height above the grasp point where the hand lines up before descending."""
CARRY_Z = 0.22
"""Height at which grasped objects are carried."""
MIN_GRASP_Z = 0.013
"""The fingertips reach ~11 mm below the grasp point; lower grasps drag them on the table and jam them."""


class PickExpert(WaypointExpert):
    """Approach, align yaw, descend, close, lift."""

    def grasp_plan(self) -> list[Waypoint]:
        target = self.env.scene.by_role("target")
        if not hasattr(self, "_grasp"):
            pos, yaw = self.obj_pose(target)
            hand_yaw = grasp_yaw(yaw, target.spec, self.env.world.robot.ee_yaw())
            z = max(self.env.initial_z[target.body] + target.spec.grasp_z - 0.005, MIN_GRASP_Z)
            grasp = np.array([pos[0], pos[1], z])
            self._grasp = (grasp, hand_yaw)
        grasp, hand_yaw = self._grasp
        above = grasp + [0, 0, APPROACH]
        return [
            Waypoint(above, OPEN, hand_yaw, tol=0.015),
            Waypoint(grasp, OPEN, hand_yaw, tol=0.006),
            Waypoint(grasp, CLOSE, hand_yaw, tol=1.0, hold=5),
            Waypoint(np.array([grasp[0], grasp[1], CARRY_Z]), CLOSE, hand_yaw, tol=0.02),
        ]

    def plan(self) -> list[Waypoint]:
        return self.grasp_plan()


class PlaceAtExpert(PickExpert):
    """Pick, carry above a goal point, lower to ``release_z``, open, retreat."""

    def goal(self) -> tuple[np.ndarray, float]:
        """(x, y, release height of the grasp point) and extra tolerance; subclasses define it."""
        raise NotImplementedError

    def plan(self) -> list[Waypoint]:
        plan = self.grasp_plan()
        goal, tol = self.goal()
        yaw = plan[-1].yaw
        high = np.array([goal[0], goal[1], CARRY_Z])
        return plan + [
            Waypoint(high, CLOSE, yaw, tol=0.012 + tol),
            Waypoint(goal, CLOSE, yaw, tol=0.008 + tol),
            Waypoint(goal, OPEN, yaw, tol=1.0, hold=3),
            Waypoint(high, OPEN, yaw, tol=0.02),
        ]


class PlaceExpert(PlaceAtExpert):
    def goal(self):
        target, container = self.env.scene.by_role("target"), self.env.scene.by_role("container")
        c, _ = self.obj_pose(container)
        z = c[2] + container.spec.height + target.spec.grasp_z + 0.02
        return np.array([c[0], c[1], z]), 0.0


class StackExpert(PlaceAtExpert):
    def goal(self):
        target, base = self.env.scene.by_role("target"), self.env.scene.by_role("base")
        b, _ = self.obj_pose(base)
        z = b[2] + base.spec.height + target.spec.grasp_z + 0.006
        return np.array([b[0], b[1], z]), 0.0
