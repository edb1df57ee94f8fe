"""Symbol pads: thin static markers lying on the table, each showing a shape, a digit or a letter.

Textures are drawn procedurally with PIL at run time (shapes from polygon math, digits and letters
with PIL's bundled font scaled up) and cached, together with a small OBJ/MTL/URDF triple per symbol,
under ``$XDG_CACHE_HOME/vlabench/pads`` (default ``~/.cache/vlabench/pads``). Every file is written
to a temporary name and renamed, so concurrent workers never read a half-written asset.

A pad is an ordinary ``ObjectSpec`` whose ``urdf`` is the absolute path of its cached URDF, so the
generic ``vlabench.sim.objects.spawn`` loads it (``os.path.join`` keeps absolute paths). The URDF has
mass 0 (static) and a box collision shape; its visual is a box mesh whose top face carries the
texture, oriented so the symbol reads upright from the front camera (texture up = world -x, texture
right = world +y, the viewer's right).
"""

from __future__ import annotations

import math
import os

import numpy as np

from vlabench.fileio import write_bytes_atomic
from vlabench.language import NUMBER_WORDS
from vlabench.sim.objects import ObjectSpec

PAD_HALF = 0.045
"""Half side of the square pad (m): pads are 9 x 9 cm."""
PAD_THICKNESS = 0.004
"""Pad thickness (m); objects set on a pad rest this much higher than on the table."""
PAD_RADIUS = PAD_HALF * math.sqrt(2) + 0.001
"""Footprint radius for collision-free placement (half diagonal: any yaw fits)."""
TEXTURE_SIZE = 256
ASSET_VERSION = 2
"""Bumped whenever the drawing or the mesh changes, so stale cached assets are never reused."""

SHAPES = ("star", "heart", "triangle", "circle", "moon", "arrow")
DIGITS = tuple(str(d) for d in range(10))
LETTERS = ("A", "B", "C", "E", "G", "H", "K", "M", "R", "S", "T", "X")
SYMBOLS = SHAPES + DIGITS + LETTERS
"""Every symbol a pad can show: shape names, digit characters and upper-case letters."""

HELD_OUT_SYMBOLS = frozenset({"moon", "arrow", "G", "R", "X"})
"""Symbols only the ``symbols`` split uses: never on a pad in a seen scene, never in a seen instruction.
Digits are all seen, because the ``math`` split asks for digit pads through arithmetic."""
SEEN_SYMBOLS = tuple(s for s in SYMBOLS if s not in HELD_OUT_SYMBOLS)

_INK = (20, 20, 24)
_FACE = (238, 238, 232)
_BORDER = (45, 45, 50)


def symbol_kind(symbol: str) -> str:
    """shape | digit | letter; raises ValueError listing the valid symbols."""
    if symbol in SHAPES:
        return "shape"
    if symbol in DIGITS:
        return "digit"
    if symbol in LETTERS:
        return "letter"
    raise ValueError(f"unknown pad symbol {symbol!r}; valid: {', '.join(SYMBOLS)}")


def symbol_phrase(symbol: str, rng: np.random.Generator | None = None) -> str:
    """How instructions name a symbol: "star", "number 3" / "number three", "letter A"."""
    kind = symbol_kind(symbol)
    if kind == "shape":
        return symbol
    if kind == "letter":
        return f"letter {symbol}"
    if rng is not None and rng.random() < 0.5:
        return f"number {NUMBER_WORDS[int(symbol)]}"
    return f"number {symbol}"


def cache_dir() -> str:
    """Where pad assets live (created on demand)."""
    root = os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
    return os.path.join(root, "vlabench", "pads")


# -- drawing --------------------------------------------------------------------------------------
def _star(c: float, r: float) -> list[tuple[float, float]]:
    # Inner radius ratio of a regular five-pointed star: sin(18 deg) / sin(54 deg).
    inner = r * math.sin(math.radians(18)) / math.sin(math.radians(54))
    return [(c + (r if k % 2 == 0 else inner) * math.cos(-math.pi / 2 + k * math.pi / 5),
             c + 0.08 * r + (r if k % 2 == 0 else inner) * math.sin(-math.pi / 2 + k * math.pi / 5)) for k in range(10)]


def _heart(c: float, r: float) -> list[tuple[float, float]]:
    # The classic parametric heart curve, scaled so its ~32-unit width spans 2r.
    pts = []
    for t in np.linspace(0, 2 * math.pi, 120, endpoint=False):
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        pts.append((c + x * r / 16, c - 0.1 * r - y * r / 16))
    return pts


def _triangle(c: float, r: float) -> list[tuple[float, float]]:
    return [(c + r * math.cos(a), c + 0.2 * r + r * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]


def _arrow(c: float, r: float) -> list[tuple[float, float]]:
    # Pointing right (toward the viewer's right on the table); shaft then head.
    s, h = 0.28 * r, 0.75 * r
    return [(c - r, c - s), (c + 0.1 * r, c - s), (c + 0.1 * r, c - h), (c + r, c), (c + 0.1 * r, c + h),
            (c + 0.1 * r, c + s), (c - r, c + s)]


def draw_symbol(symbol: str, size: int = TEXTURE_SIZE):
    """A PIL image of the pad's top face: light face, dark border, the symbol in dark ink."""
    from PIL import Image, ImageDraw, ImageFont

    kind = symbol_kind(symbol)
    img = Image.new("RGB", (size, size), _FACE)
    d = ImageDraw.Draw(img)
    border = max(2, size // 24)
    d.rectangle([0, 0, size - 1, size - 1], outline=_BORDER, width=border)
    c, r = size / 2, size * 0.36
    if kind == "digit" or kind == "letter":
        font = ImageFont.load_default(size=int(size * 0.72))
        # Thick strokes keep the glyph legible when the pad covers ~14 pixels of a 128 px frame.
        d.text((c, c), symbol, font=font, fill=_INK, anchor="mm", stroke_width=max(1, size // 48), stroke_fill=_INK)
    elif symbol == "star":
        d.polygon(_star(c, r * 1.1), fill=_INK)
    elif symbol == "heart":
        d.polygon(_heart(c, r), fill=_INK)
    elif symbol == "triangle":
        d.polygon(_triangle(c, r * 1.05), fill=_INK)
    elif symbol == "circle":
        d.ellipse([c - r * 0.85, c - r * 0.85, c + r * 0.85, c + r * 0.85], fill=_INK)
    elif symbol == "moon":
        # A crescent: a disc with an offset disc of face colour cut out of it.
        x0, r0, r1 = c - 0.15 * r, 0.95 * r, 0.8 * r
        d.ellipse([x0 - r0, c - r0, x0 + r0, c + r0], fill=_INK)
        x1, y1 = x0 + 0.45 * r, c - 0.12 * r
        d.ellipse([x1 - r1, y1 - r1, x1 + r1, y1 + r1], fill=_FACE)
    elif symbol == "arrow":
        d.polygon(_arrow(c, r), fill=_INK)
    d.rectangle([0, 0, size - 1, size - 1], outline=_BORDER, width=border)  # symbols never cover the border
    return img


# -- assets ---------------------------------------------------------------------------------------
def _obj_text(mtl_name: str) -> str:
    """A box mesh (top and four sides; the bottom is never seen). Top-face UVs put texture-up at world -x
    (away from the front camera) and texture-right at world +y; sides sample the dark border texel."""
    h, t = PAD_HALF, PAD_THICKNESS / 2
    verts, uvs, faces = [], [], []

    def quad(vs, uv, normal):
        base = len(verts)
        verts.extend(vs)
        uvs.extend(uv)
        faces.append((base + 1, base + 2, base + 3, normal))
        faces.append((base + 1, base + 3, base + 4, normal))

    top = [(-h, -h, t), (h, -h, t), (h, h, t), (-h, h, t)]
    # TinyRenderer samples v = 1 at the image's top row.
    quad(top, [((y + h) / (2 * h), 1 - (x + h) / (2 * h)) for x, y, _ in top], 1)
    edge = [(0.004, 0.5)] * 4
    quad([(h, -h, -t), (h, h, -t), (h, h, t), (h, -h, t)], edge, 2)
    quad([(-h, h, -t), (-h, -h, -t), (-h, -h, t), (-h, h, t)], edge, 3)
    quad([(h, h, -t), (-h, h, -t), (-h, h, t), (h, h, t)], edge, 4)
    quad([(-h, -h, -t), (h, -h, -t), (h, -h, t), (-h, -h, t)], edge, 5)
    normals = [(0, 0, 1), (1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0)]
    lines = ["# vlabench symbol pad (generated)", f"mtllib {mtl_name}", "o pad"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in verts]
    lines += [f"vt {u:.6f} {v:.6f}" for u, v in uvs]
    lines += [f"vn {a} {b} {c}" for a, b, c in normals]
    lines.append("usemtl pad")
    lines += [f"f {a}/{a}/{n} {b}/{b}/{n} {c}/{c}/{n}" for a, b, c, n in faces]
    return "\n".join(lines) + "\n"


def _urdf_text(stem: str) -> str:
    h, t = PAD_HALF, PAD_THICKNESS
    return f"""<?xml version="1.0"?>
<robot name="{stem}">
  <link name="base">
    <inertial><origin xyz="0 0 0"/><mass value="0"/><inertia ixx="0" ixy="0" ixz="0" iyy="0" iyz="0" izz="0"/></inertial>
    <visual><origin xyz="0 0 0"/><geometry><mesh filename="{stem}.obj" scale="1 1 1"/></geometry></visual>
    <collision><origin xyz="0 0 0"/><geometry><box size="{2 * h} {2 * h} {t}"/></geometry></collision>
  </link>
</robot>
"""


def asset_stem(symbol: str) -> str:
    """File stem of a symbol's assets (letters and digits are case-safe on any file system)."""
    kind = symbol_kind(symbol)
    name = symbol if kind == "shape" else f"{kind}_{symbol.lower()}"
    return f"pad_v{ASSET_VERSION}_{name}"


def texture_path(symbol: str) -> str:
    """Path of the cached texture PNG of ``symbol`` (drawn on first use)."""
    ensure_assets(symbol)
    return os.path.join(cache_dir(), asset_stem(symbol) + ".png")


def ensure_assets(symbol: str) -> str:
    """Write the PNG, OBJ, MTL and URDF of ``symbol`` if missing; returns the URDF path."""
    import io

    stem = asset_stem(symbol)
    folder = cache_dir()
    urdf = os.path.join(folder, stem + ".urdf")
    if os.path.exists(urdf):
        return urdf
    os.makedirs(folder, exist_ok=True)
    buf = io.BytesIO()
    draw_symbol(symbol).save(buf, format="PNG")
    # The URDF is written last: its existence means the whole set is complete.
    write_bytes_atomic(os.path.join(folder, stem + ".png"), buf.getvalue())
    write_bytes_atomic(os.path.join(folder, stem + ".mtl"),
                  f"newmtl pad\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nmap_Kd {stem}.png\n".encode())
    write_bytes_atomic(os.path.join(folder, stem + ".obj"), _obj_text(stem + ".mtl").encode())
    write_bytes_atomic(urdf, _urdf_text(stem).encode())
    return urdf


def pad_spec(symbol: str) -> ObjectSpec:
    """The ObjectSpec of a pad showing ``symbol`` (its assets are written on first use)."""
    kind = symbol_kind(symbol)
    name = f"{symbol_phrase(symbol)} pad"
    return ObjectSpec(name, "white", ("pad", f"{kind} pad"), (), "large", urdf=ensure_assets(symbol), mass=0.0,
                      kind="pad", height=PAD_THICKNESS, radius=PAD_RADIUS, extra={"symbol": symbol})


def on_pad(xy: np.ndarray, pad_xy: np.ndarray, pad_yaw: float, inset: float = 0.0) -> bool:
    """Whether a world (x, y) lies inside the pad's square (shrunk by ``inset`` on each side)."""
    d = np.asarray(xy[:2], dtype=float) - np.asarray(pad_xy[:2], dtype=float)
    c, s = math.cos(pad_yaw), math.sin(pad_yaw)
    local = (c * d[0] + s * d[1], -s * d[0] + c * d[1])
    return bool(abs(local[0]) < PAD_HALF - inset and abs(local[1]) < PAD_HALF - inset)
