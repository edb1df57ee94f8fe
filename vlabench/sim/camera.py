"""Front and wrist cameras. Both return HxWx3 uint8 RGB; depth (metres) and segmentation on request."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pybullet as p

FRONT_EYE = (1.10, 0.0, 0.62)
"""Front camera position: in front of the table, looking back at the robot."""
FRONT_TARGET = (0.40, 0.0, 0.0)
FRONT_FOV = 50.0
NEAR, FAR = 0.02, 3.0
WRIST_EYE = (0.085, 0.0, 0.045)
"""Wrist camera position in the hand frame (z points along the fingers)."""
WRIST_LOOK_AT = (0.02, 0.0, 0.20)
"""Point in the hand frame the wrist camera looks at: just past the fingertips."""
WRIST_FOV = 75.0


@dataclass
class Frame:
    """One rendered view."""

    rgb: np.ndarray
    depth: np.ndarray | None = None
    segmentation: np.ndarray | None = None


def _render(client: int, size: int, view: list, fov: float, renderer: int, depth: bool, seg: bool,
            light_dir: tuple, light_color: tuple) -> Frame:
    proj = p.computeProjectionMatrixFOV(fov, 1.0, NEAR, FAR)
    flags = 0 if seg else p.ER_NO_SEGMENTATION_MASK
    _, _, rgba, zbuf, segm = p.getCameraImage(
        size, size, view, proj, renderer=renderer, flags=flags, shadow=0, lightDirection=light_dir,
        lightColor=light_color, physicsClientId=client)
    rgb = np.asarray(rgba, dtype=np.uint8).reshape(size, size, 4)[..., :3].copy()
    d = None
    if depth:
        z = np.asarray(zbuf, dtype=np.float32).reshape(size, size)
        d = (FAR * NEAR / (FAR - (FAR - NEAR) * z)).astype(np.float32)
    s = np.asarray(segm, dtype=np.int32).reshape(size, size).copy() if seg else None
    return Frame(rgb, d, s)


def front_view() -> list:
    """The fixed view matrix of the front camera."""
    return p.computeViewMatrix(FRONT_EYE, FRONT_TARGET, (0, 0, 1))


def wrist_view(hand_pos: np.ndarray, hand_orn: np.ndarray) -> list:
    """View matrix of the camera rigidly mounted on the hand, looking along the fingers."""
    rot = np.asarray(p.getMatrixFromQuaternion(hand_orn.tolist())).reshape(3, 3)
    eye = hand_pos + rot @ np.asarray(WRIST_EYE)
    target = hand_pos + rot @ np.asarray(WRIST_LOOK_AT)
    up = rot @ np.array([1.0, 0.0, 0.0])
    return p.computeViewMatrix(eye.tolist(), target.tolist(), up.tolist())


def project_to_front(points: np.ndarray, size: int, fov: float = FRONT_FOV) -> np.ndarray:
    """Pixel (u, v) coordinates of world points ``(N, 3)`` in the front image (u to the right, v down)."""
    view = np.asarray(front_view()).reshape(4, 4).T
    proj = np.asarray(p.computeProjectionMatrixFOV(fov, 1.0, NEAR, FAR)).reshape(4, 4).T
    pts = np.c_[np.asarray(points, dtype=np.float64), np.ones(len(points))]
    clip = (proj @ view @ pts.T).T
    ndc = clip[:, :2] / clip[:, 3:4]
    return np.stack([(ndc[:, 0] + 1) * 0.5 * size, (1 - ndc[:, 1]) * 0.5 * size], axis=1)


render = _render
