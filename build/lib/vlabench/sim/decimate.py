"""Mesh simplification on plain Python floats (bit-identical on every IEEE-754 machine, which keeps cached
meshes, and so images, the same everywhere): quadric-error edge collapse (Garland & Heckbert 1997), a
convex hull, and crease-aware vertex normals. Used by ``vlabench.sim.meshes`` for low-poly render meshes.
"""

from __future__ import annotations

import heapq
import math

CREASE_COS = math.cos(math.radians(50))
"""Normals are averaged across edges flatter than this; sharper edges stay sharp."""


# -- geometry on tuples (plain floats: bit-identical on every IEEE-754 machine) ------------------
def _sub(a, b):
    return (a[0] - b[0], a[1] - b[1], a[2] - b[2])


def _cross(a, b):
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


def _dot(a, b):
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _normal(p0, p1, p2):
    """Unnormalized face normal (its length is twice the area)."""
    return _cross(_sub(p1, p0), _sub(p2, p0))


def _plane_quadric(n, p0, weight):
    """Quadric (upper triangle of the 4x4 matrix: a2 ab ac ad b2 bc bd c2 cd d2) of the plane through
    ``p0`` with normal ``n``, scaled by ``weight``."""
    length = math.sqrt(_dot(n, n))
    if length == 0.0:
        return (0.0,) * 10
    a, b, c = n[0] / length, n[1] / length, n[2] / length
    d = -(a * p0[0] + b * p0[1] + c * p0[2])
    w = weight
    return (w * a * a, w * a * b, w * a * c, w * a * d, w * b * b, w * b * c, w * b * d,
            w * c * c, w * c * d, w * d * d)


def _qadd(q, r):
    return tuple(x + y for x, y in zip(q, r))


def _qeval(q, v):
    x, y, z = v
    return (q[0] * x * x + 2 * q[1] * x * y + 2 * q[2] * x * z + 2 * q[3] * x + q[4] * y * y + 2 * q[5] * y * z
            + 2 * q[6] * y + q[7] * z * z + 2 * q[8] * z + q[9])


def _qmin(q, p1, p2):
    """The position minimizing the quadric (Cramer's rule), or the best of the endpoints and midpoint."""
    a11, a12, a13, b1, a22, a23, b2, a33, b3 = q[0], q[1], q[2], q[3], q[4], q[5], q[6], q[7], q[8]
    det = a11 * (a22 * a33 - a23 * a23) - a12 * (a12 * a33 - a23 * a13) + a13 * (a12 * a23 - a22 * a13)
    scale = max(abs(a11), abs(a22), abs(a33), 1e-30) ** 3
    if abs(det) > 1e-9 * scale:
        r1, r2, r3 = -b1, -b2, -b3
        x = (r1 * (a22 * a33 - a23 * a23) - a12 * (r2 * a33 - a23 * r3) + a13 * (r2 * a23 - a22 * r3)) / det
        y = (a11 * (r2 * a33 - a23 * r3) - r1 * (a12 * a33 - a23 * a13) + a13 * (a12 * r3 - r2 * a13)) / det
        z = (a11 * (a22 * r3 - r2 * a23) - a12 * (a12 * r3 - r2 * a13) + r1 * (a12 * a23 - a22 * a13)) / det
        v = (x, y, z)
        # Keep the optimum near the edge: far-away optima on nearly flat patches make spikes.
        mid = ((p1[0] + p2[0]) / 2, (p1[1] + p2[1]) / 2, (p1[2] + p2[2]) / 2)
        reach = _dot(_sub(p1, p2), _sub(p1, p2))
        if _dot(_sub(v, mid), _sub(v, mid)) <= reach:
            return v, _qeval(q, v)
    mid = ((p1[0] + p2[0]) / 2, (p1[1] + p2[1]) / 2, (p1[2] + p2[2]) / 2)
    return min(((v, _qeval(q, v)) for v in (p1, p2, mid)), key=lambda vc: vc[1])


def _weld(verts: list, tris: list) -> tuple[list, dict[int, list[int]]]:
    """Positions with duplicates merged, and the non-degenerate faces (by source index) over them."""
    weld, pos, remap = {}, [], []
    for v in verts:
        key = (round(v[0], 7), round(v[1], 7), round(v[2], 7))
        if key not in weld:
            weld[key] = len(pos)
            pos.append(v)
        remap.append(weld[key])
    faces: dict[int, list[int]] = {}
    for fi, t in enumerate(tris):
        f = [remap[i] for i in t]
        if len(set(f)) == 3:
            faces[fi] = f
    return pos, faces


def _quadrics(pos: list, faces: dict[int, list[int]]) -> tuple[list, dict[tuple[int, int], list[int]]]:
    """Each vertex's error quadric (its faces' planes, area-weighted), and the faces on each edge."""
    quad = [(0.0,) * 10 for _ in pos]
    for f in faces.values():
        n = _normal(pos[f[0]], pos[f[1]], pos[f[2]])
        q = _plane_quadric(n, pos[f[0]], math.sqrt(_dot(n, n)) / 2)
        for v in f:
            quad[v] = _qadd(quad[v], q)
    # Open boundaries (an edge with one face) are held in place by a plane through the edge, perpendicular
    # to its face, weighted heavily.
    edge_faces: dict[tuple[int, int], list[int]] = {}
    for fi, f in faces.items():
        for k in range(3):
            e = (min(f[k], f[(k + 1) % 3]), max(f[k], f[(k + 1) % 3]))
            edge_faces.setdefault(e, []).append(fi)
    for (a, b), fl in sorted(edge_faces.items()):
        if len(fl) == 1:
            f = faces[fl[0]]
            n = _normal(pos[f[0]], pos[f[1]], pos[f[2]])
            side = _cross(_sub(pos[b], pos[a]), n)
            q = _plane_quadric(side, pos[a], 1e3 * _dot(_sub(pos[b], pos[a]), _sub(pos[b], pos[a])))
            quad[a], quad[b] = _qadd(quad[a], q), _qadd(quad[b], q)
    return quad, edge_faces


def _collapse_ok(a: int, b: int, v, pos: list, faces: dict, vfaces: list[set[int]]) -> bool:
    """Whether moving ``a`` and ``b`` to ``v`` keeps the surface a manifold with no flipped faces."""
    shared = vfaces[a] & vfaces[b]
    if not shared:
        return False
    ring_a = {u for fi in vfaces[a] for u in faces[fi]} - {a}
    ring_b = {u for fi in vfaces[b] for u in faces[fi]} - {b}
    # Link condition: collapsing an edge whose endpoints share more neighbours than its two opposite
    # vertices would pinch the surface.
    if len(ring_a & ring_b) > len(shared):
        return False
    moved = (vfaces[a] | vfaces[b]) - shared
    seen = set()
    for fi in sorted(moved):
        f = [a if u == b else u for u in faces[fi]]
        old = _normal(pos[faces[fi][0]], pos[faces[fi][1]], pos[faces[fi][2]])
        new = _normal(*(v if u == a else pos[u] for u in f))
        key = tuple(sorted(f))
        if _dot(old, new) <= 0.0 or _dot(new, new) == 0.0 or key in seen:
            return False
        seen.add(key)
    return len(moved) >= 3


def decimate(verts: list, tris: list, target: int) -> tuple[list, list[int]]:
    """Collapse edges of the triangle mesh (``verts`` positions, ``tris`` vertex-index triples) until at
    most ``target`` triangles remain or no collapse is safe. Vertices are welded by position first.
    Returns the new positions and, for each surviving triangle, ``(i, j, k, source triangle index)``."""
    pos, faces = _weld(verts, tris)
    vfaces: list[set[int]] = [set() for _ in pos]
    for fi, f in faces.items():
        for v in f:
            vfaces[v].add(fi)
    quad, edge_faces = _quadrics(pos, faces)
    stamp = [0] * len(pos)
    heap: list = []

    def push(a: int, b: int) -> None:
        a, b = min(a, b), max(a, b)
        v, cost = _qmin(_qadd(quad[a], quad[b]), pos[a], pos[b])
        heapq.heappush(heap, (cost, a, b, stamp[a], stamp[b], v))

    for a, b in sorted(edge_faces):
        push(a, b)
    alive = len(faces)
    while alive > target and heap:
        cost, a, b, sa, sb, v = heapq.heappop(heap)
        if stamp[a] != sa or stamp[b] != sb or not vfaces[a] or not vfaces[b]:
            continue
        if not _collapse_ok(a, b, v, pos, faces, vfaces):
            continue
        for fi in vfaces[a] & vfaces[b]:
            for u in faces[fi]:
                vfaces[u].discard(fi)
            del faces[fi]
            alive -= 1
        for fi in vfaces[b]:
            faces[fi] = [a if u == b else u for u in faces[fi]]
            vfaces[a].add(fi)
        vfaces[b] = set()
        pos[a] = v
        quad[a] = _qadd(quad[a], quad[b])
        stamp[a] += 1
        stamp[b] += 1
        for u in sorted({u for fi in vfaces[a] for u in faces[fi]} - {a}):
            push(a, u)
    used = sorted({u for f in faces.values() for u in f})
    index = {u: i for i, u in enumerate(used)}
    return [pos[u] for u in used], [(index[f[0]], index[f[1]], index[f[2]], fi) for fi, f in sorted(faces.items())]


def corner_normals(pos: list, tris: list) -> list:
    """Per-corner unit normals: area-weighted averages over the faces around each vertex whose normals
    are within the crease angle of the corner's own face (smooth surfaces, sharp edges)."""
    fn = []
    around: list[list[int]] = [[] for _ in pos]
    for k, t in enumerate(tris):
        fn.append(_normal(pos[t[0]], pos[t[1]], pos[t[2]]))
        for v in t[:3]:
            around[v].append(k)
    out = []
    for k, t in enumerate(tris):
        own = fn[k]
        own_len = math.sqrt(_dot(own, own)) or 1.0
        corners = []
        for v in t[:3]:
            s = (0.0, 0.0, 0.0)
            for j in around[v]:
                n = fn[j]
                ln = math.sqrt(_dot(n, n)) or 1.0
                if _dot(own, n) >= CREASE_COS * own_len * ln:
                    s = (s[0] + n[0], s[1] + n[1], s[2] + n[2])
            ls = math.sqrt(_dot(s, s)) or 1.0
            corners.append((s[0] / ls, s[1] / ls, s[2] / ls))
        out.append(corners)
    return out


def convex_hull(points: list) -> list[tuple[int, int, int]]:
    """Outward-oriented triangles (indices into ``points``) of the convex hull, by incremental insertion.
    Points within a relative 1e-9 of a face's plane count as inside, so coplanar sets give no slivers."""
    n = len(points)
    if n < 4:
        raise ValueError(f"a convex hull needs at least 4 points, got {n}")
    span = max(max(p[k] for p in points) - min(p[k] for p in points) for k in range(3))
    eps = 1e-9 * max(span, 1e-12)
    i0 = min(range(n), key=lambda i: points[i])
    i1 = max(range(n), key=lambda i: _dot(_sub(points[i], points[i0]), _sub(points[i], points[i0])))
    d01 = _sub(points[i1], points[i0])
    def off_line(i: int) -> float:
        c = _cross(d01, _sub(points[i], points[i0]))
        return _dot(c, c)

    i2 = max(range(n), key=off_line)
    n012 = _normal(points[i0], points[i1], points[i2])
    i3 = max(range(n), key=lambda i: abs(_dot(n012, _sub(points[i], points[i0]))))
    if abs(_dot(n012, _sub(points[i3], points[i0]))) <= eps * math.sqrt(_dot(n012, n012)):
        raise ValueError("the points are coplanar: no 3-D convex hull")
    inner = tuple(sum(points[i][k] for i in (i0, i1, i2, i3)) / 4 for k in range(3))
    faces: set[tuple[int, int, int]] = set()
    for f in ((i0, i1, i2), (i0, i1, i3), (i0, i2, i3), (i1, i2, i3)):
        if _dot(_normal(*(points[i] for i in f)), _sub(inner, points[f[0]])) > 0:
            f = (f[0], f[2], f[1])
        faces.add(f)

    def above(f, q) -> bool:
        nrm = _normal(points[f[0]], points[f[1]], points[f[2]])
        return _dot(nrm, _sub(q, points[f[0]])) > eps * math.sqrt(_dot(nrm, nrm))

    for i in range(n):
        if i in (i0, i1, i2, i3):
            continue
        visible = [f for f in sorted(faces) if above(f, points[i])]
        if not visible:
            continue
        edges = {(f[k], f[(k + 1) % 3]) for f in visible for k in range(3)}
        horizon = sorted(e for e in edges if (e[1], e[0]) not in edges)
        faces.difference_update(visible)
        faces.update((a, b, i) for a, b in horizon)
    return sorted(faces)
