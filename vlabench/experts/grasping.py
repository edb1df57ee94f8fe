"""Experts for the pick family and everything that starts with a pick (place, stack, next to, pads).

Grasping is closed-loop: while the object should be in the hand, losing it restarts the plan from the
approach with the next hand-yaw offset (``REGRASP_YAWS``). Every pick-based expert, core or emergent,
shares this machinery."""

from __future__ import annotations

import math

import numpy as np
import pybullet as p

from vlabench.experts.base import CLOSE, MAX_SPAN, OPEN, Waypoint, WaypointExpert, grasp_yaw, half_turn, span

APPROACH = 0.10
"""Height above the grasp point where the hand lines up before descending."""
CARRY_Z = 0.22
"""Height at which grasped objects are carried."""
MIN_GRASP_Z = 0.013
"""The fingertips reach ~11 mm below the grasp point; lower grasps drag them on the table and jam them."""
REGRASP_YAWS = (0.0, math.pi / 2, math.pi / 4, -math.pi / 4)
"""Hand-yaw offsets tried on successive grasps. Some mesh objects (the teddy bear) squeeze out of the
fingers at a few yaws; turning the hand finds a grip that holds."""
LOST_STEPS = 3
"""Control steps without both fingers on the object, while carrying, that count as a lost grasp."""
CLOSE_STAGE = 2
"""Index of the closing waypoint in ``PickExpert.grasp_plan``: later stages carry the object."""


class PickExpert(WaypointExpert):
    """Approach, align yaw, descend, close, lift; re-grasp with a turned hand if the object slips."""

    carry_stages = 1
    """How many waypoints after closing carry the object (here: the lift)."""

    def act(self) -> np.ndarray:
        target = self.env.scene.by_role("target")
        carrying = CLOSE_STAGE < self.stage <= CLOSE_STAGE + self.carry_stages and hasattr(self, "_grasp")
        if carrying and not all(self.env.world.robot.touching(target.body)):
            self._lost = getattr(self, "_lost", 0) + 1
            if self._lost >= LOST_STEPS and getattr(self, "_attempt", 0) + 1 < len(REGRASP_YAWS):
                self._attempt = getattr(self, "_attempt", 0) + 1
                del self._grasp
                self.stage, self.held_for, self._lost = 0, 0, 0
        else:
            self._lost = 0
        return super().act()

    def sync(self) -> None:
        """Under a policy: a target already held (both fingers on it, gripper closed) skips to the lift, and a
        hand already lined up over it, between the approach height and the grasp, skips to the descent.
        Without this the labels would say "open" while the policy carries the object, or "go up" while it
        descends in line."""
        if self.stage > CLOSE_STAGE:
            return
        robot, target = self.env.world.robot, self.env.scene.by_role("target")
        if robot.gripper_closed and all(robot.touching(target.body)):
            self.stage, self.held_for = CLOSE_STAGE + 1, 0
            return
        if self.stage == 0 and hasattr(self, "_grasp"):
            grasp = self._grasp[0]
            hand = robot.target_pos
            if np.linalg.norm(hand[:2] - grasp[:2]) < 0.015 and grasp[2] <= hand[2] <= grasp[2] + APPROACH + 0.015:
                self.stage, self.held_for = 1, 0

    def choose_grasp(self) -> tuple[np.ndarray, float]:
        """Grasp point (world xyz) and hand yaw for the target's current pose and the current attempt."""
        target = self.env.scene.by_role("target")
        pos, obj_yaw = self.obj_pose(target)
        yaw = grasp_yaw(obj_yaw, target.spec, self.env.world.robot.ee_yaw())
        bottom = self.env.initial_z[target.body]
        if target.spec.urdf:
            # A mesh's base frame sits at its centre of mass, not its bottom, so base z + grasp_z closes the
            # fingers near the top (the teddy bear then squeezes out). Measure grasp_z from the real bottom.
            bottom = p.getAABB(target.body, physicsClientId=self.env.world.client)[0][2]
        grasp = np.array([pos[0], pos[1], max(bottom + target.spec.grasp_z - 0.005, MIN_GRASP_Z)])
        # Fingers close along hand yaw + pi/2. A long compound object straddled lengthwise wedges in the
        # fingers; turn to its narrow side instead (a guard for specs whose grasp axis is off).
        close = yaw + math.pi / 2 - obj_yaw
        if span(target.spec, close) > MAX_SPAN and span(target.spec, close + math.pi / 2) < span(target.spec, close):
            yaw = half_turn(yaw + math.pi / 2)
        return grasp, half_turn(yaw + REGRASP_YAWS[getattr(self, "_attempt", 0)])

    def grasp_plan(self) -> list[Waypoint]:
        if not hasattr(self, "_grasp"):
            self._grasp = self.choose_grasp()  # fixed per attempt: the hand must not chase a nudged object
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

    carry_stages = 3  # lift, move above the goal, lower to the release height

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
