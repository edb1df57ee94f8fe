"""The static scenery (table slab and backdrop), drawn by ray casting instead of by the rasterizer.

Why: TinyRenderer shades every covered pixel (~150 ns each on the development machine) and the table
and backdrop cover every pixel of both cameras, under the robot and the objects too. They are two
axis-aligned boxes, so each camera ray can be intersected with them in closed form instead. The
physics client keeps the table's collision box but no visual; the rasterizer draws only the robot
and the objects, and :func:`composite` puts the scenery behind them using the depth buffer.

The colours reproduce TinyRenderer's own shading of a box: the same per-face texture atlas (a unit
cube maps each face to a quarter-by-quarter tile of the texture), nearest-texel lookup, and
``ambient * c + (diffuse * max(0, n.l) + specular * max(0, r.z) ** 2) * c * light_color`` with
TinyRenderer's coefficients (0.6, 0.35, 0.05) and no shadow. Rays sample the same pixel positions as
TinyRenderer (pixel ``i`` at NDC ``2 i / w - 1``, rows flipped) in float32, as TinyRenderer computes, so
a composited frame matches a fully rasterized one pixel for pixel on the views tests/sim checks
(samples that fall exactly on a texel boundary, like the table's centre line in the front camera,
included); a tolerance of 0.5% of the pixels is left for other CPUs' rounding.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

AMBIENT, DIFFUSE, SPECULAR = np.float32(0.6), np.float32(0.35), np.float32(0.05)

# Texture atlas of TinyRenderer's unit cube (OpenGLWindow/ShapeData.h, cube_vertices_textured): for the face
# whose outward normal is +/- axis, (u, v) = (u0 + ua * a + ub * b, v0 + va * a + vb * b), where (a, b) are the
# face's two in-plane coordinates in [-1, 1] (in x, y, z order, the normal's axis left out).
_FACE_UV = {
    (2, +1): (0.875, 0.125, 0.0, 0.125, 0.0, -0.125),
    (2, -1): (0.375, -0.125, 0.0, 0.125, 0.0, -0.125),
    (0, -1): (0.625, 0.125, 0.0, 0.125, 0.0, 0.125),   # a = y, b = z
    (0, +1): (0.125, 0.0, -0.125, 0.375, -0.125, 0.0),
    (1, -1): (0.375, 0.125, 0.0, 0.375, 0.0, -0.125),  # a = x, b = z
    (1, +1): (0.125, 0.125, 0.0, 0.125, 0.0, 0.125),
}


@dataclass(frozen=True)
class Box:
    """An axis-aligned, unrotated box of the scenery."""

    body: int
    """Body id reported in segmentation masks."""
    center: tuple[float, float, float]
    half: tuple[float, float, float]
    rgba: tuple[float, float, float, float]
    texture: np.ndarray | None = field(default=None, compare=False)
    """(H, W, 3) uint8 image, top row first (as the PNG file stores it), or None."""


def _shade(texels: np.ndarray, rgba, normal: np.ndarray, light: np.ndarray, light_color: np.ndarray) -> np.ndarray:
    """TinyRenderer's fragment colour for texels ``(..., 3)`` uint8 on a flat face, in its float32 arithmetic."""
    c = np.floor(texels.astype(np.float32) * np.asarray(rgba[:3], np.float32)).astype(np.float32)
    diffuse = np.float32(max(0.0, float(np.dot(normal, light))))
    refl = normal * (np.float32(np.dot(normal, light)) * np.float32(2.0)) - light
    refl = refl / np.float32(np.sqrt(np.dot(refl, refl)))
    specular = np.float32(max(float(refl[2]), 0.0)) ** np.float32(2.0)
    out = AMBIENT * c + (DIFFUSE * diffuse + SPECULAR * specular) * c * light_color
    return np.minimum(np.nan_to_num(out).astype(np.int32), 255).astype(np.uint8)


def _pack(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 colours -> (...) uint32 holding R, G, B, 255 in memory order (the layout of
    pybullet's RGBA buffer viewed as uint32), so compositing moves one word per pixel."""
    rgba = np.concatenate([rgb, np.full(rgb.shape[:-1] + (1,), 255, np.uint8)], axis=-1)
    return np.ascontiguousarray(rgba).view(np.uint32)[..., 0]


_CLEAR = int(_pack(np.full((1, 3), 255, np.uint8))[0])
"""TinyRenderer's clear colour (white), packed."""


class Scenery:
    """Boxes plus a light; casts rays into them. Front-camera results are cached per camera."""

    def __init__(self, boxes: list[Box], light_dir, light_color, near: float, far: float) -> None:
        self.boxes = boxes
        self.near, self.far = near, far
        d = np.asarray(light_dir, dtype=np.float64)
        light = (d / np.linalg.norm(d)).astype(np.float32)
        lc = np.asarray(light_color, dtype=np.float32)
        self.lo = [tuple(np.subtract(b.center, b.half)) for b in boxes]
        self.hi = [tuple(np.add(b.center, b.half)) for b in boxes]
        # Per box and face: the shaded texture, packed (h, w) uint32, so a hit costs one lookup.
        self.faces: list[dict] = []
        for b in boxes:
            tex = b.texture if b.texture is not None else np.full((1, 1, 3), 255, np.uint8)
            shaded = {}
            for (axis, sign) in _FACE_UV:
                n = np.zeros(3, np.float32)
                n[axis] = sign
                shaded[(axis, sign)] = _pack(_shade(tex, b.rgba, n, light, lc))
            self.faces.append(shaded)
        self.cache: dict = {}

    def image(self, size: int, view, fov: float, pixel_center: bool = False, cache: bool = False
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The scenery seen by a camera: packed colour ``(size, size)`` uint32 (see ``_pack``), normalized
        depth-buffer value ``(size, size)`` float32 (1 where nothing is hit) and body id ``(size, size)``
        int32 (-1 there). ``cache`` keeps the result for this camera (a fixed camera's scenery is fixed)."""
        key = (size, tuple(view), float(fov), pixel_center)
        if cache and key in self.cache:
            return self.cache[key]
        m = np.asarray(view, dtype=np.float64).reshape(4, 4).T
        rot = m[:3, :3]
        xs, ys = _ndc(size, float(fov), pixel_center)
        rgb, t, body = self.cast(tuple(-rot.T @ m[:3, 3]), rot, xs, ys)
        # Eye depth -> the depth-buffer value pybullet returns (the inverse of camera.render's conversion).
        # A miss (t = inf) gives far / (far - near) > 1 here: clipped to 1, the value of a cleared pixel.
        z = np.minimum(self.far / (self.far - self.near) * (1.0 - self.near / t), 1.0).astype(np.float32)
        out = (rgb, z, body)
        if cache:
            if len(self.cache) >= 16:
                self.cache.pop(next(iter(self.cache)))
            self.cache[key] = out
        return out

    def cast(self, eye: tuple, rot: np.ndarray, xs: np.ndarray, ys: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rays from ``eye`` through every pixel of an image whose columns have eye-space slopes ``xs`` and rows
        ``ys`` (``rot``: the view rotation, world -> eye) -> packed colour (H, W) uint32, eye depth ``t`` of
        the nearest hit (inf where nothing is hit; the colour is then TinyRenderer's white clear colour)
        and body id (H, W) int32.

        A ray enters a box through a face that faces the eye (at most three of them; TinyRenderer culls the
        others), so each such face is intersected as a plane and its rectangle tested, and only for the
        pixels inside the face's projected bounding box: the wrist camera, cast on every step, mostly
        sees one face of the table."""
        shape = (len(ys), len(xs))
        # Ray direction components: linear in the pixel's slopes, so each is an outer sum of two vectors.
        dirs = [np.add.outer((ys * rot[1, i] - rot[2, i]).astype(np.float32), (xs * rot[0, i]).astype(np.float32))
                for i in range(3)]
        rgb = np.full(shape, _CLEAR, np.uint32)
        t_best = np.full(shape, np.inf, np.float32)
        body = np.full(shape, -1, np.int32)
        first = True  # nothing hit yet: t_best is inf everywhere
        for k, b in enumerate(self.boxes):
            lo, hi = self.lo[k], self.hi[k]
            for axis in range(3):
                if lo[axis] <= eye[axis] <= hi[axis]:
                    continue
                sign = 1 if eye[axis] > hi[axis] else -1
                plane = hi[axis] if sign > 0 else lo[axis]
                a, c = [i for i in range(3) if i != axis]
                corners = np.empty((4, 3))
                corners[:, axis] = plane
                corners[:, a] = (lo[a], hi[a], hi[a], lo[a])
                corners[:, c] = (lo[c], lo[c], hi[c], hi[c])
                rect = _pixel_rect(corners, eye, rot, xs, ys)
                if rect is None:
                    continue
                r, q = slice(rect[0], rect[1]), slice(rect[2], rect[3])
                d = [component[r, q] for component in dirs]
                shaded = self.faces[k][(axis, sign)]
                with np.errstate(divide="ignore", invalid="ignore"):
                    t = np.float32(plane - eye[axis]) / d[axis]
                    # A face that covers the whole rectangle (the wrist camera looking at the table) needs no
                    # per-pixel tests, and an untextured one not even the hit coordinates.
                    covered = first and self._covers(eye, rot, xs, ys, rect, axis, plane, lo, hi)
                    pa = pc = None
                    if not covered or shaded.size > 1:
                        pa = np.float32(eye[a]) + t * d[a]
                        pc = np.float32(eye[c]) + t * d[c]
                    if not covered:
                        # TinyRenderer clips at the near plane and discards fragments past the far plane.
                        hit = ((t >= self.near) & (t <= self.far) & (t < t_best[r, q]) & (pa >= lo[a])
                               & (pa <= hi[a]) & (pc >= lo[c]) & (pc <= hi[c]))
                        if not hit.any():
                            continue
                first = False
                if shaded.size == 1:
                    colour = shaded.flat[0]
                else:
                    colour = shaded.ravel().take(_texel_index(
                        shaded.shape, _FACE_UV[(axis, sign)], (pa - np.float32(b.center[a])) / np.float32(b.half[a]),
                        (pc - np.float32(b.center[c])) / np.float32(b.half[c])))
                if covered:
                    rgb[r, q], t_best[r, q], body[r, q] = colour, t, b.body
                else:
                    np.copyto(rgb[r, q], colour, where=hit)
                    np.copyto(t_best[r, q], t, where=hit)
                    np.putmask(body[r, q], hit, b.body)
        return rgb, t_best, body

    def _covers(self, eye, rot, xs, ys, rect, axis, plane, lo, hi, margin=1e-5) -> bool:
        """Whether the rays through the four corner pixels of ``rect`` all hit the face (the plane ``plane``
        across ``axis``) inside its rectangle, ``margin`` m clear of its edges, between the near and far
        planes. Ray-plane hits map the pixel rectangle onto a convex quadrilateral, and t is monotone
        between the corners, so then every ray in the rectangle does."""
        a, c = [i for i in range(3) if i != axis]
        for i in (rect[0], rect[1] - 1):
            for j in (rect[2], rect[3] - 1):
                d = [float(ys[i]) * rot[1, k] - rot[2, k] + float(xs[j]) * rot[0, k] for k in range(3)]
                if d[axis] == 0.0:
                    return False
                t = (plane - eye[axis]) / d[axis]
                if not self.near * 1.001 <= t <= self.far * 0.999:
                    return False
                for m in (a, c):
                    if not lo[m] + margin <= eye[m] + t * d[m] <= hi[m] - margin:
                        return False
        return True


def _texel_index(shape: tuple[int, int], uv: tuple, la: np.ndarray, lc: np.ndarray) -> np.ndarray:
    """Flat index into a face's (h, w) shaded texture of the texel TinyRenderer samples at in-plane
    coordinates ``la``, ``lc`` (float32, [-1, 1]): u, v from the face's atlas tile, their fractional
    part (u - floor(u): the same as C's modf for the non-negative u, v of a face, and ten times faster
    than np.mod), truncated to a texel; rows count from the bottom. Zero atlas terms are skipped, which
    leaves the float32 result unchanged."""
    h, w = shape
    out = []
    for c0, ca, cc, size in ((uv[0], uv[1], uv[2], w), (uv[3], uv[4], uv[5], h)):
        x = np.full(la.shape, np.float32(c0), np.float32)
        if ca:
            x = x + np.float32(ca) * la
        if cc:
            x = x + np.float32(cc) * lc
        # Rays that miss the face (masked out by the caller) can carry inf or NaN coordinates, e.g. a ray
        # parallel to the table top; clipping keeps their throwaway index in range (valid ones are unchanged).
        with np.errstate(invalid="ignore"):
            x -= np.floor(x)
            out.append(np.clip((x * np.float32(size)).astype(np.int32), 0, size - 1))
    col, row = out
    return (h - 1 - row) * w + col


def _pixel_rect(corners: np.ndarray, eye: tuple, rot: np.ndarray, xs: np.ndarray, ys: np.ndarray
                ) -> tuple[int, int, int, int] | None:
    """Rows [r0, r1) and columns [c0, c1) of the pixels a convex polygon (``corners`` (4, 3), world) can
    cover, one pixel of slack on each side, or None when it is entirely outside the view. The polygon is
    first clipped to the half-space in front of the camera (eye-space z <= -1 mm; rays are only tested
    beyond the near plane anyway), so a face that reaches behind the camera is bounded correctly.
    Plain Python floats: for four points they are several times faster than numpy calls."""
    (r00, r01, r02), (r10, r11, r12), (r20, r21, r22) = rot.tolist()
    ex, ey, ez = eye
    pts = []
    for x, y, z in corners.tolist():
        x, y, z = x - ex, y - ey, z - ez
        pts.append((r00 * x + r01 * y + r02 * z, r10 * x + r11 * y + r12 * z, r20 * x + r21 * y + r22 * z))
    limit = -1e-3
    sx, sy = [], []
    for i, p in enumerate(pts):
        q = pts[i - 1]
        if (p[2] <= limit) != (q[2] <= limit):  # the edge q-p crosses the plane: keep the crossing point
            f = (limit - q[2]) / (p[2] - q[2])
            sx.append((q[0] + (p[0] - q[0]) * f) / -limit)
            sy.append((q[1] + (p[1] - q[1]) * f) / -limit)
        if p[2] <= limit:
            sx.append(p[0] / -p[2])
            sy.append(p[1] / -p[2])
    if not sx:
        return None
    h, w = len(ys), len(xs)
    c0 = max(int(np.searchsorted(xs, min(sx))) - 1, 0)
    c1 = min(int(np.searchsorted(xs, max(sx), side="right")) + 1, w)
    r0 = max(int(np.searchsorted(-ys, -max(sy))) - 1, 0)  # ys decreases down the rows
    r1 = min(int(np.searchsorted(-ys, -min(sy), side="right")) + 1, h)
    return (r0, r1, c0, c1) if r0 < r1 and c0 < c1 else None


@functools.lru_cache(maxsize=16)
def _ndc(size: int, fov: float, pixel_center: bool) -> tuple[np.ndarray, np.ndarray]:
    """Eye-space ray slopes of the columns (left to right) and rows (top to bottom) through the pixel
    sample positions: TinyRenderer samples pixel ``i`` at NDC ``2 i / size - 1``, OpenGL
    (``pixel_center``) at ``2 (i + 0.5) / size - 1``; rows are flipped (image row 0 is the top)."""
    f = 1.0 / np.tan(np.radians(fov) / 2)
    ndc = 2.0 * (np.arange(size) + (0.5 if pixel_center else 0.0)) / size - 1.0
    xs, ys = ndc / f, ndc[::-1] / f
    xs.flags.writeable = ys.flags.writeable = False
    return xs, ys


def composite(rgba: np.ndarray, zbuf: np.ndarray, seg: np.ndarray | None, bg_rgb: np.ndarray, bg_z: np.ndarray,
              bg_seg: np.ndarray | None, depth: bool = True) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Rasterized pixels in front of the scenery win; the scenery fills the rest. ``rgba`` (H, W, 4) uint8
    as pybullet returns it, ``bg_rgb`` packed (H, W) uint32; ``zbuf`` and ``bg_z`` are both normalized
    depth-buffer values (1 = nothing). Returns a contiguous (H, W, 3) uint8 image, the depth-buffer values
    (None unless ``depth``) and the segmentation (None unless ``seg`` is given)."""
    front = zbuf < bg_z
    packed = np.where(front, np.ascontiguousarray(rgba).view(np.uint32)[..., 0], bg_rgb)
    px = packed.view(np.uint8).reshape(packed.shape + (4,))
    out = np.empty(packed.shape + (3,), np.uint8)
    # Three single-channel copies: numpy copies an (H, W, 3) slice of (H, W, 4) several times slower.
    out[..., 0], out[..., 1], out[..., 2] = px[..., 0], px[..., 1], px[..., 2]
    z = np.where(front, zbuf, bg_z) if depth else None
    s = None if seg is None else np.where(front, seg, bg_seg)
    return out, z, s
