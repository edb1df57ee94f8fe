"""Expert for push: close the gripper, go behind the object, slide it into the region, retreat.

A cylinder pushed by a single finger edge, struck off-centre at full speed (5 cm per step), is kicked
sideways out of the workspace. So the hand pushes with both fingers side by side, at ``PUSH_SPEED``, holding
back while it re-centres; and if the object still escapes the push line, pushing on would drive the hand
through its wrong side, so the expert lifts and re-approaches from behind."""

from __future__ import annotations

import numpy as np

from vlabench.experts.base import CLOSE, Waypoint, WaypointExpert
from vlabench.tasks.push import REGION_GOALS

PUSH_Z = 0.018
"""Grasp-point height while pushing (fingertips just above the table)."""
PUSH_STAGE = 2
"""Index of the pushing waypoint in ``PushExpert.plan``."""
MAX_LATERAL = 1.0
"""Sideways offset of the hand from the push line, in object radii, beyond which the push is lost."""
REALIGN = 0.3
"""Sideways offset of the hand from the push line, in object radii, above which it stops advancing."""
PUSH_SPEED = 0.5
"""Largest horizontal action while pushing (x MAX_POS_DELTA: 2.5 cm per step)."""
LIFT_Z = 0.08
"""Height the hand rises to before re-approaching, clear of the target's top."""
MAX_REAPPROACH = 4
"""Re-approaches per episode (bounds the time lost on an object that keeps escaping)."""


class PushExpert(WaypointExpert):
    def direction(self, pos: np.ndarray) -> tuple[np.ndarray, float]:
        """Unit push direction (x, y) from ``pos`` to the region's goal point, and the distance left."""
        goal = np.array(REGION_GOALS[self.env.scene.goal["region"]])
        direction = goal - pos[:2]
        dist = float(np.linalg.norm(direction))
        return direction / max(dist, 1e-6), dist

    def offset(self, pos: np.ndarray, direction: np.ndarray) -> tuple[float, float]:
        """The hand's position relative to the object: (along the push direction, |sideways|) in metres."""
        rel = np.asarray(self.env.world.robot.target_pos[:2]) - pos[:2]
        return float(rel @ direction), abs(float(rel[0] * direction[1] - rel[1] * direction[0]))

    def lost_contact_line(self, pos: np.ndarray, radius: float) -> bool:
        """Whether the hand has left the push line behind the object (the object escaped sideways)."""
        direction, dist = self.direction(pos)
        if dist <= 0.01:
            return False
        along, lateral = self.offset(pos, direction)
        return along > 0.0 or lateral > MAX_LATERAL * radius

    def act(self) -> np.ndarray:
        target = self.env.scene.by_role("target")
        pos, _ = self.obj_pose(target)
        if (self.stage == PUSH_STAGE and getattr(self, "_reapproach", 0) < MAX_REAPPROACH
                and self.lost_contact_line(pos, target.spec.radius)):
            self._reapproach = getattr(self, "_reapproach", 0) + 1
            del self._start
            self.stage, self.held_for, self._lifting = 0, 0, True
        robot = self.env.world.robot
        if getattr(self, "_lifting", False):
            # Straight up first: heading for the new start directly would sweep the hand through the object.
            if robot.target_pos[2] < LIFT_Z:
                return np.array([0, 0, 1, 0, 0, 0, CLOSE], dtype=np.float32)
            self._lifting = False
        action = super().act()
        if self.stage == PUSH_STAGE:
            norm = float(np.linalg.norm(action[:2]))
            if norm > PUSH_SPEED:
                action[:2] *= PUSH_SPEED / norm
        return action

    def plan(self) -> list[Waypoint]:
        target = self.env.scene.by_role("target")
        pos, _ = self.obj_pose(target)
        direction, dist = self.direction(pos)
        behind = pos[:2] - direction * (target.spec.radius + 0.03)
        # Fingers close along yaw + pi/2, i.e. across the push: the two closed fingers side by side touch the
        # object at two points, which keeps a round object centred (one finger's edge kicked it sideways).
        yaw = float(np.arctan2(direction[1], direction[0]))
        if not hasattr(self, "_start"):
            self._start = behind
        start = self._start
        # Track the object while pushing so the contact point stays behind its centre. When the hand has
        # drifted off the line through the centre, hold back instead of pushing on: an off-centre push only
        # slides the object further sideways, while the lateral correction re-centres the hand first.
        lead = min(dist, 0.05) if self.offset(pos, direction)[1] < REALIGN * target.spec.radius else -0.01
        push_to = pos[:2] + direction * lead
        return [
            Waypoint(np.array([start[0], start[1], 0.12]), CLOSE, yaw, tol=0.015),
            Waypoint(np.array([start[0], start[1], PUSH_Z]), CLOSE, yaw, tol=0.01),
            Waypoint(np.array([push_to[0] - direction[0] * (target.spec.radius + 0.01),
                               push_to[1] - direction[1] * (target.spec.radius + 0.01), PUSH_Z]), CLOSE, None,
                     tol=0.004 if dist > 0.01 else 1.0, hold=1000),
        ]
