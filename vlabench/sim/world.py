"""One PyBullet physics client: table, background, lighting, the Panda, and the renderer in use.

Renderers: ``"tiny"`` (TinyRenderer, CPU, the default and the reference for published numbers) and
``"egl"`` (pybullet's eglRenderer plugin, GPU, headless). The EGL plugin is located by the package
itself (``importlib.util.find_spec("eglRenderer")``); if it cannot load, the world falls back to
TinyRenderer with a warning, and ``renderer`` reports what is actually used.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import warnings
from dataclasses import dataclass

import numpy as np
import pybullet as p

from vlabench.sim import constants as C
from vlabench.sim.robot import Panda

RENDERERS = ("tiny", "egl")


@dataclass(frozen=True)
class Background:
    """Table appearance and lighting."""

    name: str
    table_rgba: tuple[float, float, float, float]
    floor_rgba: tuple[float, float, float, float] = (0.35, 0.35, 0.38, 1.0)
    """Colour of the backdrop behind the robot."""
    texture: str | None = None
    """Procedural table texture: None | checker | stripes | dots | grain."""
    light_dir: tuple[float, float, float] = (0.6, -0.3, 1.0)
    light_color: tuple[float, float, float] = (1.0, 1.0, 1.0)


def _texture_file(kind: str, rgba: tuple) -> str:
    """Draw a procedural texture with PIL once and cache it as a PNG; returns its path."""
    from PIL import Image, ImageDraw

    cache = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache")),
                         "vlabench", "textures")
    base = tuple(int(255 * c) for c in rgba[:3])
    path = os.path.join(cache, f"{kind}_{'_'.join(map(str, base))}.png")
    if os.path.exists(path):
        return path
    dark = tuple(max(0, int(c * 0.6)) for c in base)
    img = Image.new("RGB", (128, 128), base)
    d = ImageDraw.Draw(img)
    if kind == "checker":
        for i in range(8):
            for j in range(8):
                if (i + j) % 2:
                    d.rectangle([i * 16, j * 16, i * 16 + 15, j * 16 + 15], fill=dark)
    elif kind == "stripes":
        for i in range(0, 128, 16):
            d.rectangle([i, 0, i + 7, 127], fill=dark)
    elif kind == "dots":
        for i in range(8, 128, 21):
            for j in range(8, 128, 21):
                d.ellipse([i - 4, j - 4, i + 4, j + 4], fill=dark)
    elif kind == "grain":
        for i in range(0, 128, 5):
            d.line([0, i, 127, i + (i % 3) - 1], fill=dark, width=1)
    else:
        raise ValueError(f"unknown texture {kind!r}; known: checker, stripes, dots, grain")
    os.makedirs(cache, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache, suffix=".png")
    os.close(fd)
    img.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


def _load_egl(client: int) -> bool:
    spec = importlib.util.find_spec("eglRenderer")
    if spec is None or spec.origin is None:
        warnings.warn("renderer='egl' asked for, but pybullet's eglRenderer plugin was not found; using TinyRenderer")
        return False
    plugin = p.loadPlugin(spec.origin, "_eglRendererPlugin", physicsClientId=client)
    if plugin < 0:
        warnings.warn(f"renderer='egl': loading {spec.origin} failed (no EGL device?); using TinyRenderer")
        return False
    return True


class World:
    """A physics client with the static scene and the robot; objects are added by tasks."""

    def __init__(self, renderer: str = "tiny") -> None:
        if renderer not in RENDERERS:
            raise ValueError(f"unknown renderer {renderer!r}; valid: {', '.join(RENDERERS)}")
        self.client = p.connect(p.DIRECT)
        self.renderer = "egl" if renderer == "egl" and _load_egl(self.client) else "tiny"
        self.render_flag = p.ER_BULLET_HARDWARE_OPENGL if self.renderer == "egl" else p.ER_TINY_RENDERER
        self.robot: Panda | None = None
        self.background: Background | None = None
        self._textures: dict[str, int] = {}

    def build(self, background: Background) -> None:
        """Clear everything and rebuild table, floor and robot. Rebuilding on every reset keeps resets
        bit-identical (body ids, contact ordering and solver state all start fresh)."""
        c = self.client
        p.resetSimulation(physicsClientId=c)
        self._textures.clear()  # texture ids do not survive resetSimulation
        p.setPhysicsEngineParameter(fixedTimeStep=1.0 / C.PHYSICS_HZ, numSolverIterations=60,
                                    deterministicOverlappingPairs=1, physicsClientId=c)
        p.setGravity(0, 0, -9.81, physicsClientId=c)
        hx, hy, hz = C.TABLE_HALF_EXTENTS
        table = p.createMultiBody(
            0, p.createCollisionShape(p.GEOM_BOX, halfExtents=(hx, hy, hz), physicsClientId=c),
            p.createVisualShape(p.GEOM_BOX, halfExtents=(hx, hy, hz), rgbaColor=background.table_rgba,
                                physicsClientId=c),
            (C.TABLE_CENTER_X, 0, -hz), physicsClientId=c)
        p.changeDynamics(table, -1, lateralFriction=0.8, physicsClientId=c)
        if background.texture:
            tex = p.loadTexture(_texture_file(background.texture, background.table_rgba), physicsClientId=c)
            p.changeVisualShape(table, -1, textureUniqueId=tex, rgbaColor=(1, 1, 1, 1), physicsClientId=c)
        # A backdrop behind the robot, so the camera never looks into the void. There is no floor: the
        # table hides it from both cameras, and TinyRenderer pays for every covered pixel even when it
        # is occluded (a 6 m floor cost ~23% of each observation). The backdrop is sized to the view.
        p.createMultiBody(0, -1, p.createVisualShape(p.GEOM_BOX, halfExtents=(0.01, 1.3, 0.9),
                                                     rgbaColor=background.floor_rgba, physicsClientId=c),
                          (-0.6, 0, 0.5), physicsClientId=c)
        self.table = table
        self.background = background
        self.robot = Panda(c)

    def step(self, substeps: int = C.SUBSTEPS) -> None:
        """Advance physics by ``substeps`` x 1/240 s."""
        for _ in range(substeps):
            p.stepSimulation(physicsClientId=self.client)

    def close(self) -> None:
        """Disconnect the physics client; safe to call twice."""
        if self.client is not None and self.client >= 0:
            try:
                p.disconnect(physicsClientId=self.client)
            except p.error:
                pass
            self.client = -1

    def poses(self, bodies: list[int]) -> np.ndarray:
        """``(K, 7)`` float32 xyz + quaternion xyzw of the given bodies."""
        out = np.zeros((len(bodies), 7), dtype=np.float32)
        for i, b in enumerate(bodies):
            pos, orn = p.getBasePositionAndOrientation(b, physicsClientId=self.client)
            out[i, :3], out[i, 3:] = pos, orn
        return out
