"""Expert for push: close the gripper, go behind the object, slide it into the region, retreat."""

from __future__ import annotations

import numpy as np

from vlabench.experts.base import CLOSE, Waypoint, WaypointExpert
from vlabench.tasks.push import REGION_GOALS

PUSH_Z = 0.018
"""Grasp-point height while pushing (fingertips just above the table)."""


class PushExpert(WaypointExpert):
    def plan(self) -> list[Waypoint]:
        target = self.env.scene.by_role("target")
        pos, _ = self.obj_pose(target)
        goal = np.array(REGION_GOALS[self.env.scene.goal["region"]])
        direction = goal - pos[:2]
        dist = np.linalg.norm(direction)
        direction = direction / max(dist, 1e-6)
        behind = pos[:2] - direction * (target.spec.radius + 0.03)
        yaw = float(np.arctan2(direction[1], direction[0])) + np.pi / 2  # fingers' flat side faces the push
        if not hasattr(self, "_start"):
            self._start = behind
        start = self._start
        # Track the object while pushing so the contact point stays behind its centre.
        push_to = pos[:2] + direction * min(dist, 0.05)
        return [
            Waypoint(np.array([start[0], start[1], 0.12]), CLOSE, yaw, tol=0.015),
            Waypoint(np.array([start[0], start[1], PUSH_Z]), CLOSE, yaw, tol=0.01),
            Waypoint(np.array([push_to[0] - direction[0] * (target.spec.radius + 0.01),
                               push_to[1] - direction[1] * (target.spec.radius + 0.01), PUSH_Z]), CLOSE, None,
                     tol=0.004 if dist > 0.01 else 1.0, hold=1000),
        ]
