"""Waypoint-following machinery shared by the scripted experts.

An expert reads privileged state (object poses) and emits the same 7-D action a learned policy would:
a proportional step toward the current waypoint, saturated at the action bounds, plus a gripper
command. Optional Gaussian action noise (``noise`` in action units) diversifies demos; the expert
stays closed-loop, so noisy demos still succeed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pybullet as p

from vlabench.sim import constants as C

OPEN, CLOSE = -1.0, 1.0


class Perturbation:
    """DART (Laskey et al., 2017) for one episode: correlated Gaussian noise on the *executed* horizontal
    motion (dx, dy).

    ``perturbation(action)`` returns the action to execute; the caller records the expert's own action as
    the label, so demos show the expert correcting from states off its path. The noise is an AR(1)
    process (step-to-step correlation ``CORRELATION``, a time constant of about 5 steps) so it carries the
    hand off the path instead of averaging out, with stationary std ``sigma`` in action units. It applies
    only while the expert's gripper command is open (approaches), never to a grasp or a held object, and
    not to dz: with dz perturbed as well, the experts solved 60-70% of 20 seen pick, place, stack,
    next_to and pad episodes each at sigma 0.3; horizontal only, 70-100% (results/expert_success_dart.md).
    Seeded per episode, so a demo is reproducible."""

    CORRELATION = 0.8

    def __init__(self, sigma: float, seed: int) -> None:
        self.sigma = sigma
        self.rng = np.random.default_rng([seed, 1])
        self.offset = np.zeros(2, np.float32)

    def __call__(self, action: np.ndarray) -> np.ndarray:
        if self.sigma <= 0:
            return action
        rho = self.CORRELATION
        self.offset = rho * self.offset + math.sqrt(1 - rho**2) * self.rng.normal(0, self.sigma, 2).astype(np.float32)
        executed = action.copy()
        if action[6] < 0:
            executed[:2] = np.clip(action[:2] + self.offset, -1, 1)
        return executed


@dataclass
class Waypoint:
    """Go to ``pos`` with hand yaw ``yaw`` (None: keep) and gripper ``grip``; done within ``tol`` metres,
    then hold for ``hold`` more control steps."""

    pos: np.ndarray
    grip: float
    yaw: float | None = None
    tol: float = 0.01
    hold: int = 0


def wrap(angle: float) -> float:
    """Angle wrapped to [-pi, pi)."""
    return (angle + math.pi) % (2 * math.pi) - math.pi


def grasp_yaw(obj_yaw: float, spec, hand_yaw: float) -> float:
    """The hand yaw that closes the fingers across the object's grasp axis. Among the symmetric
    equivalents it takes the one nearest the home yaw 0, which keeps joint 7 far from its limits."""
    # With the hand pointing down at yaw y, the Panda's fingers close along world direction y + pi/2.
    axis = obj_yaw + spec.extra.get("grasp_axis", 0.0) - math.pi / 2
    sym = spec.grasp_yaw_symmetry
    if sym <= 0:
        return hand_yaw
    k = round((0.0 - axis) / sym)
    return axis + k * sym


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


class WaypointExpert:
    """Follows a list of waypoints produced by ``plan``; subclasses re-plan from privileged state."""

    def __init__(self, env, noise: float = 0.0, rng: np.random.Generator | None = None) -> None:
        self.env = env
        self.noise = noise
        self.rng = rng or np.random.default_rng(0)
        self.stage = 0
        self.held_for = 0

    def plan(self) -> list[Waypoint]:
        """Waypoints for the current state. Called every step, so targets track moving objects."""
        raise NotImplementedError

    follow_state = False
    """Set when a policy, not this expert, moves the arm (DAgger labelling, ``env.expert_action(driven=True)``):
    ``act`` then first calls :meth:`sync`, so the stage says what the scene shows rather than how far this
    expert's own moves got."""

    def sync(self) -> None:
        """Move ``stage`` to where the scene is (a subclass hook; the base trusts its own count)."""

    def finished(self) -> bool:
        """Whether the whole plan has been run: the expert then holds its last waypoint, whatever the scene."""
        return self.stage >= len(self.plan())

    def obj_pose(self, obj) -> tuple[np.ndarray, float]:
        pos, orn = p.getBasePositionAndOrientation(obj.body, physicsClientId=self.env.world.client)
        return np.asarray(pos), float(p.getEulerFromQuaternion(orn)[2])

    def act(self) -> np.ndarray:
        """The next 7-D action."""
        robot = self.env.world.robot
        if self.follow_state:
            self.sync()
        plan = self.plan()
        if self.stage >= len(plan):
            wp = plan[-1]
        else:
            wp = plan[self.stage]
        delta = wp.pos - robot.target_pos
        action = np.zeros(7, dtype=np.float32)
        action[:3] = np.clip(delta / C.MAX_POS_DELTA, -1, 1)
        if wp.yaw is not None:
            action[5] = np.clip(wrap(wp.yaw - robot.ee_yaw()) / C.MAX_ROT_DELTA, -1, 1)
        action[6] = wp.grip
        if self.stage < len(plan):
            yaw_ok = wp.yaw is None or abs(wrap(wp.yaw - robot.ee_yaw())) < 0.05
            if np.linalg.norm(delta) < wp.tol and yaw_ok:
                if self.held_for >= wp.hold:
                    self.stage += 1
                    self.held_for = 0
                else:
                    self.held_for += 1
        if self.noise > 0:
            action[:6] += self.rng.normal(0, self.noise, 6).astype(np.float32)
        return np.clip(action, -1, 1)
