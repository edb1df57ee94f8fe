"""Experts of the emergent families: pick-based ones that re-grasp when the object slips, and set-down
experts that carry the target beside a reference (next_to) or onto a pad (pad, math). All reuse the
pick-carry-release waypoints of ``PickExpert`` / ``PlaceAtExpert``; the core families' experts are
untouched."""

from __future__ import annotations

import math

import numpy as np
import pybullet as p

from vlabench.experts.base import wrap
from vlabench.experts.grasping import MIN_GRASP_Z, PickExpert, PlaceAtExpert
from vlabench.sim.pads import PAD_THICKNESS
from vlabench.tasks.next_to import free_spot
from vlabench.tasks.pad import goal_pad

RELEASE_GAP = 0.01
"""Height (m) of the object's bottom above the surface when the gripper opens: low enough that nothing
bounces or rolls away, high enough that the object never scrapes the surface on the way in."""
REGRASP_YAWS = (0.0, math.pi / 2, math.pi / 4, -math.pi / 4)
"""Hand-yaw offsets tried on successive grasps. Some mesh objects (the teddy bear) squeeze out of the
fingers at a few yaws; turning the hand finds a grip that holds."""
LOST_STEPS = 3
"""Control steps without both fingers on the object, while carrying, that count as a lost grasp."""
CLOSE_STAGE = 2
"""Index of the closing waypoint in ``PickExpert.grasp_plan``: later stages carry the object."""


MAX_SPAN = 0.072
"""Widest object extent (m) the open fingers (8 cm) can straddle with a little room to spare."""


def span(spec, angle: float) -> float:
    """Extent (m) of a compound object along direction ``angle`` of its base frame (0 for meshes:
    unknown). Parts are sampled on their surfaces, which is exact enough for the catalogue's shapes."""
    pts = []
    for part in spec.parts:
        rot = np.asarray(p.getMatrixFromQuaternion(p.getQuaternionFromEuler(part.euler))).reshape(3, 3)
        if part.shape == "box":
            hx, hy, hz = part.size
            local = [(sx * hx, sy * hy, sz * hz) for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]
        else:
            r = part.size[0]
            half = 0.0 if part.shape == "sphere" else part.size[1] / 2 + (r if part.shape == "capsule" else 0.0)
            ring = [(r * math.cos(t), r * math.sin(t)) for t in np.linspace(0, 2 * math.pi, 16, endpoint=False)]
            local = [(x, y, z) for x, y in ring for z in (-half, 0.0, half)]
        pts += [rot @ np.asarray(q) + np.asarray(part.offset) for q in local]
    if not pts:
        return 0.0
    proj = np.asarray(pts)[:, :2] @ np.array([math.cos(angle), math.sin(angle)])
    return float(proj.max() - proj.min())


def half_turn(yaw: float) -> float:
    """The equivalent hand yaw in [-pi/2, pi/2] (the hand is symmetric under a half turn), far from joint limits."""
    yaw = wrap(yaw)
    return yaw - math.pi if yaw > math.pi / 2 else yaw + math.pi if yaw < -math.pi / 2 else yaw


class RegraspMixin:
    """Closed-loop grasping: while the object should be in the hand (after closing, before the release
    stage), losing it restarts the plan from the approach with the next hand-yaw offset."""

    carry_stages = 1
    """How many waypoints after closing carry the object (PickExpert: 1, the lift)."""

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

    def grasp_plan(self):
        fresh = not hasattr(self, "_grasp")
        plan = super().grasp_plan()
        if not fresh:
            return plan
        grasp, yaw = self._grasp
        target = self.env.scene.by_role("target")
        _, obj_yaw = self.obj_pose(target)
        if target.spec.urdf:
            # A mesh's base frame sits at its centre of mass, not its bottom, so base z + grasp_z closes the
            # fingers near the top (the teddy bear then squeezes out). Measure grasp_z from the real bottom.
            bottom = p.getAABB(target.body, physicsClientId=self.env.world.client)[0][2]
            grasp = np.array([grasp[0], grasp[1], max(bottom + target.spec.grasp_z - 0.005, MIN_GRASP_Z)])
        # Fingers close along hand yaw + pi/2. A long compound object (dinosaur, mammoth) whose spec allows
        # a quarter-turn symmetric grasp may be straddled lengthwise; turn to its narrow side instead.
        close = yaw + math.pi / 2 - obj_yaw
        if span(target.spec, close) > MAX_SPAN and span(target.spec, close + math.pi / 2) < span(target.spec, close):
            yaw = half_turn(yaw + math.pi / 2)
        yaw = half_turn(yaw + REGRASP_YAWS[getattr(self, "_attempt", 0)])
        self._grasp = (grasp, yaw)
        return super().grasp_plan()


class RegraspPickExpert(RegraspMixin, PickExpert):
    """Pick (relational and category families)."""


class SetDownExpert(RegraspMixin, PlaceAtExpert):
    """Release so the object's bottom is ``RELEASE_GAP`` above a surface at height ``surface``."""

    carry_stages = 3  # lift, move above the goal, lower to the release height

    def release_z(self, surface: float) -> float:
        # The grasp point was closed grasp_z above the object's bottom, with the object on the table.
        return surface + self._grasp[0][2] + RELEASE_GAP


class NextToExpert(SetDownExpert):
    def goal(self):
        scene = self.env.scene
        target, ref = scene.by_role("target"), scene.by_role("reference")
        r, _ = self.obj_pose(ref)
        if not hasattr(self, "_offset"):
            # Choose the spot once, from the scene at the first call; then follow the reference if it moves.
            others = [(self.obj_pose(o)[0][:2], o.spec.radius) for o in scene.objects if o is not target and o is not ref]
            t, _ = self.obj_pose(target)
            spot = free_spot(r[:2], ref.spec, target.spec, others, t[:2])
            if spot is None:  # the sampler guarantees a spot at reset; this only guards odd physics
                spot = r[:2] + np.array([0.0, ref.spec.radius + target.spec.radius + 0.012])
            self._offset = spot - r[:2]
        xy = r[:2] + self._offset
        return np.array([xy[0], xy[1], self.release_z(0.0)]), 0.0


class PadExpert(SetDownExpert):
    def goal(self):
        pad = goal_pad(self.env.scene)
        c, _ = self.obj_pose(pad)
        return np.array([c[0], c[1], self.release_z(c[2] + PAD_THICKNESS / 2)]), 0.0
