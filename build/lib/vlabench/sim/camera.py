"""Front and wrist cameras. Both return HxWx3 uint8 RGB; depth (metres) and segmentation on request."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pybullet as p

from vlabench.sim.scenery import Scenery, composite

FRONT_EYE = (1.05, 0.0, 0.75)
"""Front camera position: in front of the table, looking back at the robot from 51 degrees above."""
FRONT_TARGET = (0.44, 0.0, 0.0)
"""Point on the table the front camera looks at."""
FRONT_FOV = 32.0
"""Front camera vertical (= horizontal) field of view, degrees.

SIM_VERSION 2 chose pose and FOV together (benchmarks/target_size.py, results/target_size_cpu.md): at
128 px the task's target is 16 px at the median and 11 px at the 10th percentile (SIM_VERSION 1's
(1.10, 0, 0.62) -> (0.40, 0, 0) at 50 degrees: 10 and 7), while the object region's corners stay >= 5 px
inside the image and the fingers stay in view on 98.9% of expert steps. A larger target is not available
without losing the region's edges: the square image must span the region's 0.44 m (plus what a container
reaches past it) at its near edge."""
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
            light_dir: tuple, light_color: tuple, scenery: Scenery | None = None, cache: bool = False) -> Frame:
    """Rasterize the bodies with visuals and, when ``scenery`` is given, composite the table and backdrop
    behind them (see ``vlabench.sim.scenery``); ``cache`` keeps the scenery image for this fixed camera."""
    proj = p.computeProjectionMatrixFOV(fov, 1.0, NEAR, FAR)
    flags = 0 if seg else p.ER_NO_SEGMENTATION_MASK
    _, _, rgba, zbuf, segm = p.getCameraImage(
        size, size, view, proj, renderer=renderer, flags=flags, shadow=0, lightDirection=light_dir,
        lightColor=light_color, physicsClientId=client)
    rgba = np.asarray(rgba, dtype=np.uint8).reshape(size, size, 4)
    z = np.asarray(zbuf, dtype=np.float32).reshape(size, size)
    s = np.asarray(segm, dtype=np.int32).reshape(size, size) if seg else None
    if scenery is not None:
        bg_rgb, bg_z, bg_seg = scenery.image(size, view, fov, pixel_center=renderer != p.ER_TINY_RENDERER, cache=cache)
        rgb, z, s = composite(rgba, z, s, bg_rgb, bg_z, bg_seg, depth)
    else:
        rgb = rgba[..., :3].copy()
        s = None if s is None else s.copy()
    d = (FAR * NEAR / (FAR - (FAR - NEAR) * z)).astype(np.float32) if depth else None
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
