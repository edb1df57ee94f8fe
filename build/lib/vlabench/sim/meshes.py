"""Low-poly render meshes: quadric-error edge collapse (Garland & Heckbert 1997), cached as OBJ files.

Why: TinyRenderer spends ~0.2 us on every triangle of every visual in the world for each camera, whether
or not the triangle ends up on screen. The Panda's collision meshes (3,440 triangles, already ~90x fewer
than its visual meshes) and the detailed pybullet_data meshes (a 9,048-triangle soccer ball, a
4,212-triangle duck) cost more than the pixels they cover at 128 px. Only what is drawn changes:
collision shapes, and therefore physics, keep the original meshes.

Textured meshes get one colour per face, the texture's mean over the face, stored in a small palette
texture (TinyRenderer allows one texture per shape); untextured meshes keep the shape's colour.

The decimation runs once per mesh and is cached under ``$XDG_CACHE_HOME/vlabench/meshes`` (default
``~/.cache/vlabench/meshes``), keyed by the source file's content and ``MESH_VERSION``. It uses plain
Python floats in a fixed order, so every machine derives the same mesh bit for bit.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os

from vlabench.fileio import write_bytes_atomic
from vlabench.sim.decimate import convex_hull, corner_normals, decimate

MESH_VERSION = 3
"""Bumped whenever the decimation or the written files change, so stale cached meshes are never reused."""
PALETTE_BLOCK = 4
"""Texels per side of each colour's patch in a textured mesh's palette."""


def cache_dir() -> str:
    root = os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
    return os.path.join(root, "vlabench", "meshes")


def read_obj(path: str) -> tuple[list, list, list, str | None]:
    """Positions, texture coordinates, triangles ``[((v0, v1, v2), (t0, t1, t2) | None), ...]`` (polygons
    fanned, 0-based) and the first ``map_Kd`` texture path of the OBJ's material library (or None)."""
    verts, uvs, tris, mtllib = [], [], [], None
    with open(path, errors="replace") as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "v":
                verts.append(tuple(float(x) for x in parts[1:4]))
            elif parts[0] == "vt":
                uvs.append(tuple(float(x) for x in parts[1:3]))
            elif parts[0] == "f":
                corners = []
                for c in parts[1:]:
                    idx = c.split("/")
                    v = int(idx[0])
                    t = int(idx[1]) if len(idx) > 1 and idx[1] else None
                    corners.append((v - 1 if v > 0 else len(verts) + v,
                                    None if t is None else (t - 1 if t > 0 else len(uvs) + t)))
                for k in range(1, len(corners) - 1):
                    c = (corners[0], corners[k], corners[k + 1])
                    has_uv = all(x[1] is not None for x in c)
                    tris.append((tuple(x[0] for x in c), tuple(x[1] for x in c) if has_uv else None))
            elif parts[0] == "mtllib" and mtllib is None:
                mtllib = os.path.join(os.path.dirname(path), line.split(None, 1)[1].strip())
    texture = None
    if mtllib and os.path.exists(mtllib):
        with open(mtllib, errors="replace") as f:
            for line in f:
                parts = line.split(None, 1)
                if parts and parts[0] == "map_Kd":
                    candidate = os.path.join(os.path.dirname(mtllib), parts[1].strip())
                    texture = candidate if os.path.exists(candidate) else None
                    break
    return verts, uvs, tris, texture


def _face_colors(texture: str, uvs: list, tris: list, sources: list[int]) -> list[tuple[int, int, int]]:
    """Mean texture colour of each source triangle, sampled as TinyRenderer does (nearest texel, rows
    stored bottom-up) at 10 points spread over the triangle in its texture coordinates."""
    import numpy as np
    from PIL import Image

    img = np.asarray(Image.open(texture).convert("RGB"))
    h, w = img.shape[:2]
    bary = [(1 / 3, 1 / 3, 1 / 3)] + [(a / 3, b / 3, (3 - a - b) / 3) for a in range(4) for b in range(4 - a)
                                      if (a, b) != (1, 1)][:9]
    colors = []
    for s in sources:
        t = tris[s][1]
        if t is None:
            colors.append((255, 255, 255))
            continue
        acc = np.zeros(3)
        for l0, l1, l2 in bary:
            u = l0 * uvs[t[0]][0] + l1 * uvs[t[1]][0] + l2 * uvs[t[2]][0]
            v = l0 * uvs[t[0]][1] + l1 * uvs[t[1]][1] + l2 * uvs[t[2]][1]
            col = int((u % 1.0) * w) % w
            row = h - 1 - int((v % 1.0) * h) % h
            acc += img[row, col]
        colors.append(tuple(int(round(x)) for x in acc / len(bary)))
    return colors


def lowpoly_obj(src: str, target: int, hull: bool = False) -> str:
    """Path of a cached OBJ with at most ~``target`` triangles approximating ``src`` (its colours as
    described in the module docstring). ``hull``: simplify the convex hull of the vertices instead, which
    is what Bullet collides with for a mesh on a moving link (and is clean where the mesh is not)."""
    with open(src, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    folder = cache_dir()
    stem = f"{os.path.splitext(os.path.basename(src))[0]}_{digest}_t{target}{'h' if hull else ''}_v{MESH_VERSION}"
    path = os.path.join(folder, stem + ".obj")
    if os.path.exists(path):
        return path
    os.makedirs(folder, exist_ok=True)
    verts, uvs, tris, texture = read_obj(src)
    if hull:
        if texture is not None:
            raise ValueError(f"{src}: a convex hull has no texture coordinates; use hull=False for textured meshes")
        tris = [(t, None) for t in convex_hull(verts)]
    pos, out = decimate(verts, [t[0] for t in tris], target)
    normals = corner_normals(pos, out)
    lines = [f"# vlabench low-poly render mesh of {os.path.basename(src)} ({len(tris)} -> {len(out)} triangles)"]
    if texture is not None:
        import io

        import numpy as np
        from PIL import Image

        colors = _face_colors(texture, uvs, tris, [t[3] for t in out])
        # The palette holds each distinct colour once, as a BLOCK x BLOCK patch, sorted by brightness, in a
        # power-of-two texture: GPU renderers (EGL) filter and mipmap textures, so neighbouring patches
        # must not bleed into each other, and OpenGL's default 4-byte row alignment must fit RGB rows.
        unique = sorted(set(colors), key=lambda c: (sum(c), c))
        per_row = math.ceil(math.sqrt(len(unique)))
        side = 1 << max(2, math.ceil(math.log2(per_row * PALETTE_BLOCK)))
        palette = np.zeros((side, side, 3), np.uint8)
        slot = {}
        for k, c in enumerate(unique):
            r, q = (k // per_row) * PALETTE_BLOCK, (k % per_row) * PALETTE_BLOCK
            palette[r:r + PALETTE_BLOCK, q:q + PALETTE_BLOCK] = c
            # TinyRenderer reads texture rows bottom-up: v counts from the image's last row.
            slot[c] = ((q + PALETTE_BLOCK / 2) / side, (side - r - PALETTE_BLOCK / 2) / side)
        buf = io.BytesIO()
        Image.fromarray(palette).save(buf, format="PNG")
        write_bytes_atomic(os.path.join(folder, stem + ".png"), buf.getvalue())
        write_bytes_atomic(os.path.join(folder, stem + ".mtl"),
                      f"newmtl palette\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nmap_Kd {stem}.png\n".encode())
        lines += [f"mtllib {stem}.mtl", "usemtl palette"]
        lines += [f"vt {slot[c][0]:.6f} {slot[c][1]:.6f}" for c in colors]
    lines += [f"v {x:.7f} {y:.7f} {z:.7f}" for x, y, z in pos]
    lines += [f"vn {x:.5f} {y:.5f} {z:.5f}" for corners in normals for x, y, z in corners]
    for k, t in enumerate(out):
        n0 = 3 * k + 1
        if texture is not None:
            lines.append(f"f {t[0] + 1}/{k + 1}/{n0} {t[1] + 1}/{k + 1}/{n0 + 1} {t[2] + 1}/{k + 1}/{n0 + 2}")
        else:
            lines.append(f"f {t[0] + 1}//{n0} {t[1] + 1}//{n0 + 1} {t[2] + 1}//{n0 + 2}")
    write_bytes_atomic(path, ("\n".join(lines) + "\n").encode())  # written last: its existence means complete
    return path


def hull_obj(src: str) -> str:
    """Path of a cached OBJ holding only the convex hull of ``src``'s vertices. For a collision mesh on a
    moving link Bullet builds exactly this hull anyway (one per OBJ shape; single-shape files only), but
    from every face corner of the file: pybullet_data's Panda meshes repeat each vertex per face, and
    reading them is most of the time ``loadURDF`` takes."""
    with open(src, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    path = os.path.join(cache_dir(), f"{os.path.splitext(os.path.basename(src))[0]}_{digest}_hull_v{MESH_VERSION}.obj")
    if os.path.exists(path):
        return path
    verts, _, tris, _ = read_obj(src)
    hull = convex_hull(verts)
    used = sorted({i for t in hull for i in t})
    index = {u: k + 1 for k, u in enumerate(used)}
    lines = [f"# vlabench: convex hull of {os.path.basename(src)}"]
    lines += [f"v {verts[u][0]!r} {verts[u][1]!r} {verts[u][2]!r}" for u in used]
    lines += [f"f {index[a]} {index[b]} {index[c]}" for a, b, c in hull]
    os.makedirs(cache_dir(), exist_ok=True)
    write_bytes_atomic(path, ("\n".join(lines) + "\n").encode())
    return path


def obj_triangles(path: str) -> int:
    """Triangles in an OBJ file (polygons fanned)."""
    with open(path, errors="replace") as f:
        return sum(len(line.split()) - 3 for line in f if line.startswith("f "))


@functools.lru_cache(maxsize=256)
def lowpoly_urdf(src: str, target: int, visual_subst: tuple[str, str] | None = None, hull: bool = False) -> str:
    """Path of a cached copy of the URDF ``src`` whose visual OBJ meshes with more than ``target`` triangles
    are replaced by :func:`lowpoly_obj` versions; every other file it names is made absolute, so the
    copy loads from the cache. ``visual_subst`` = (old, new) rewrites visual mesh paths first (the Panda
    draws its collision meshes: ``("meshes/visual/", "meshes/collision/")``); ``hull``: visuals as in
    :func:`lowpoly_obj`, and collision OBJ meshes replaced by :func:`hull_obj` (the same collision shape)."""
    import re

    with open(src, "rb") as f:
        digest = hashlib.sha256(f.read() + repr((visual_subst, hull)).encode()).hexdigest()[:16]
    folder = cache_dir()
    stem = os.path.splitext(os.path.basename(src))[0]
    dst = os.path.join(folder, f"{stem}_{digest}_t{target}_v{MESH_VERSION}.urdf")
    if os.path.exists(dst):
        return dst
    base = os.path.dirname(src)

    def resolve(name: str) -> str:
        name = name[len("package://"):] if name.startswith("package://") else name
        return name if os.path.isabs(name) else os.path.join(base, name)

    def visual(block: re.Match) -> str:
        text = block.group(0)
        if visual_subst:
            text = text.replace(*visual_subst)

        def mesh(m: re.Match) -> str:
            path = resolve(m.group(1))
            if path.lower().endswith(".obj") and obj_triangles(path) > target:
                path = lowpoly_obj(path, target, hull)
            return f'filename="{path}"'

        return re.sub(r'filename="([^"]+)"', mesh, text)

    with open(src) as f:
        text = f.read()
    text = re.sub(r"<visual>.*?</visual>", visual, text, flags=re.S)
    if hull:
        def collision(block: re.Match) -> str:
            return re.sub(r'filename="([^"]+\.obj)"', lambda m: f'filename="{hull_obj(resolve(m.group(1)))}"',
                          block.group(0))

        text = re.sub(r"<collision>.*?</collision>", collision, text, flags=re.S)
    text = re.sub(r'filename="([^"]+)"', lambda m: f'filename="{resolve(m.group(1))}"', text)
    os.makedirs(folder, exist_ok=True)
    write_bytes_atomic(dst, text.encode())
    return dst
