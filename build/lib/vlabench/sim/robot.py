"""Franka Panda from pybullet_data with delta end-effector IK control and a parallel gripper.

For rendering speed the arm is drawn with simplified collision meshes: pybullet_data's visual meshes
(~300k lines of OBJ) make a 128x128 TinyRenderer frame ~4x slower, and even the collision meshes (3,440
triangles) cost more per frame than the pixels the arm covers. Each link is drawn as the convex hull
of its collision mesh (what Bullet collides with) simplified to ``PANDA_LINK_TRIANGLES`` triangles, 424
in all (``vlabench.sim.meshes``). The collision shapes are pybullet_data's, read from files that list
only their convex hull's vertices: the same solids Bullet builds from the original files (which repeat
every vertex once per face), loaded in a third of the time.
"""

from __future__ import annotations

import os

import numpy as np
import pybullet as p

from vlabench.sim import constants as C
from vlabench.sim.meshes import lowpoly_urdf as lowpoly_render_urdf
from vlabench.sim.objects import data_path

ARM_JOINTS = list(range(7))
FINGER_JOINTS = (9, 10)
EE_LINK = 11  # panda_grasptarget: between the fingertips
HAND_LINK = 8
PANDA_LINK_TRIANGLES = 40
"""Triangles each drawn Panda link is simplified to (the fingers have 32 already)."""
HOME_EE = (0.45, 0.0, 0.30)
"""End-effector position at reset (gripper pointing down, open)."""
DOWN = (np.pi, 0.0, 0.0)
_REST = [0.0, -0.3, 0.0, -2.2, 0.0, 2.0, 0.785]
_LOW = [-2.9, -1.76, -2.9, -3.07, -2.9, -0.02, -2.9]
_HIGH = [2.9, 1.76, 2.9, -0.07, 2.9, 3.75, 2.9]
_RANGES = [h - l for l, h in zip(_LOW, _HIGH)]


def lowpoly_urdf() -> str:
    """Path of the Panda URDF whose visuals are simplified collision meshes (cached; see vlabench.sim.meshes)."""
    src = os.path.join(data_path(), "franka_panda", "panda.urdf")
    return lowpoly_render_urdf(src, PANDA_LINK_TRIANGLES, ("package://meshes/visual/", "package://meshes/collision/"),
                               hull=True)


class Panda:
    """The arm in one physics client. Holds the commanded end-effector target between steps."""

    def __init__(self, client: int) -> None:
        self.client = client
        self.body = p.loadURDF(lowpoly_urdf(), (0, 0, 0), useFixedBase=True, physicsClientId=client,
                               flags=p.URDF_USE_SELF_COLLISION_EXCLUDE_PARENT)
        for link in range(p.getNumJoints(self.body, physicsClientId=client)):
            color = (0.2, 0.2, 0.22, 1) if link in (8, 9, 10) else (0.93, 0.93, 0.93, 1)
            p.changeVisualShape(self.body, link, rgbaColor=color, physicsClientId=client)
        for j in FINGER_JOINTS:
            p.changeDynamics(self.body, j, lateralFriction=1.5, spinningFriction=0.01, frictionAnchor=True,
                             physicsClientId=client)
        # Keep the two fingers symmetric, as the real Panda's single gripper motor does.
        c = p.createConstraint(self.body, 9, self.body, 10, p.JOINT_GEAR, (1, 0, 0), (0, 0, 0), (0, 0, 0),
                               physicsClientId=client)
        p.changeConstraint(c, gearRatio=-1, erp=0.1, maxForce=50, physicsClientId=client)
        self.target_pos = np.array(HOME_EE)
        self.target_orn = np.array(p.getQuaternionFromEuler(DOWN))
        self.gripper_closed = False
        self.reset()

    def reset(self) -> None:
        """Put the arm at home, gripper open, without simulating."""
        for j, q in zip(ARM_JOINTS, _REST):
            p.resetJointState(self.body, j, q, physicsClientId=self.client)
        self.target_pos = np.array(HOME_EE)
        self.target_orn = np.array(p.getQuaternionFromEuler(DOWN))
        q = self._ik(self.target_pos, self.target_orn, iterations=200)
        for j, qj in zip(ARM_JOINTS, q):
            p.resetJointState(self.body, j, qj, physicsClientId=self.client)
        for j in FINGER_JOINTS:
            p.resetJointState(self.body, j, C.GRIPPER_MAX_WIDTH / 2, physicsClientId=self.client)
        self.gripper_closed = False
        self._command()

    def _ik(self, pos: np.ndarray, orn: np.ndarray, iterations: int = 30) -> list[float]:
        q = p.calculateInverseKinematics(
            self.body, EE_LINK, pos.tolist(), orn.tolist(), lowerLimits=_LOW, upperLimits=_HIGH,
            jointRanges=_RANGES, restPoses=_REST, maxNumIterations=iterations, residualThreshold=1e-5,
            physicsClientId=self.client)
        return list(q[:7])

    def apply_action(self, action: np.ndarray) -> None:
        """Update the commanded target from a clipped 7-D action and send joint commands (no stepping)."""
        ee_pos, _ = self.ee_pose()
        pos = self.target_pos + action[:3] * C.MAX_POS_DELTA
        # The target may not run away from a blocked arm: keep it within 2 steps of the real hand.
        pos = ee_pos + np.clip(pos - ee_pos, -2 * C.MAX_POS_DELTA, 2 * C.MAX_POS_DELTA)
        self.target_pos = np.clip(pos, C.WORKSPACE_LOW, C.WORKSPACE_HIGH)
        if np.any(action[3:6] != 0):
            delta = p.getQuaternionFromEuler((action[3:6] * C.MAX_ROT_DELTA).tolist())
            _, orn = p.multiplyTransforms((0, 0, 0), delta, (0, 0, 0), self.target_orn.tolist())
            self.target_orn = np.array(orn)
        self.gripper_closed = bool(action[6] > 0)
        self._command()

    def _command(self) -> None:
        q = self._ik(self.target_pos, self.target_orn)
        p.setJointMotorControlArray(self.body, ARM_JOINTS, p.POSITION_CONTROL, targetPositions=q,
                                    forces=[240.0] * 7, positionGains=[0.2] * 7, physicsClientId=self.client)
        width = 0.0 if self.gripper_closed else C.GRIPPER_MAX_WIDTH / 2
        p.setJointMotorControlArray(self.body, list(FINGER_JOINTS), p.POSITION_CONTROL, targetPositions=[width] * 2,
                                    forces=[C.GRIPPER_FORCE] * 2, positionGains=[0.05] * 2, physicsClientId=self.client)

    def ee_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """World position and quaternion (xyzw) of the grasp point between the fingertips."""
        s = p.getLinkState(self.body, EE_LINK, computeForwardKinematics=True, physicsClientId=self.client)
        return np.array(s[4]), np.array(s[5])

    def gripper_width(self) -> float:
        """Distance between the fingers (0 closed .. 0.08 open)."""
        return float(sum(p.getJointState(self.body, j, physicsClientId=self.client)[0] for j in FINGER_JOINTS))

    def state(self) -> np.ndarray:
        """Proprioception ``(8,)`` float32: ee xyz, ee quaternion xyzw, gripper width."""
        pos, orn = self.ee_pose()
        return np.concatenate([pos, orn, [self.gripper_width()]]).astype(np.float32)

    def ee_yaw(self) -> float:
        """Yaw of the commanded hand orientation: the heading of the hand's x axis in the table plane
        (robust where Euler angles flip between (pi, 0, y) and (0, pi, y + pi))."""
        rot = np.asarray(p.getMatrixFromQuaternion(self.target_orn.tolist())).reshape(3, 3)
        return float(np.arctan2(rot[1, 0], rot[0, 0]))

    def touching(self, body: int) -> tuple[bool, bool]:
        """Whether the left and right finger touch ``body``."""
        return tuple(bool(p.getContactPoints(self.body, body, linkIndexA=j, physicsClientId=self.client))
                     for j in FINGER_JOINTS)
