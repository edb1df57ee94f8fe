"""One PyBullet physics client: table, background, lighting, the Panda, and the renderer in use.

Renderers: ``"tiny"`` (TinyRenderer, CPU, the default and the reference for published numbers) and
``"egl"`` (pybullet's eglRenderer plugin, GPU, headless). The EGL plugin is located by the package
itself (``importlib.util.find_spec("eglRenderer")``); if it cannot load, the world falls back to
TinyRenderer with a warning, and ``renderer`` reports what is actually used.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from dataclasses import dataclass

import numpy as np
import pybullet as p

from vlabench.fileio import atomic_path
from vlabench.sim import constants as C
from vlabench.sim.camera import FAR, NEAR
from vlabench.sim.robot import Panda
from vlabench.sim.scenery import Box, Scenery

RENDERERS = ("tiny", "egl")
BACKDROP_CENTER = (-0.6, 0.0, 0.5)
BACKDROP_HALF_EXTENTS = (0.01, 1.3, 0.9)
"""A backdrop behind the robot, so the cameras never look into the void; sized to the front view."""


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
    with atomic_path(path, suffix=".png") as tmp:
        img.save(tmp, format="PNG")
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
        self._sceneries: dict = {}
        self.scenery: Scenery | None = None

    def build(self, background: Background) -> None:
        """Clear everything and rebuild table, floor and robot. Rebuilding on every reset keeps resets
        bit-identical (body ids, contact ordering and solver state all start fresh)."""
        c = self.client
        p.resetSimulation(physicsClientId=c)
        p.setPhysicsEngineParameter(fixedTimeStep=1.0 / C.PHYSICS_HZ, numSolverIterations=C.SOLVER_ITERATIONS,
                                    deterministicOverlappingPairs=1, physicsClientId=c)
        p.setGravity(0, 0, -9.81, physicsClientId=c)
        hx, hy, hz = C.TABLE_HALF_EXTENTS
        # The table has a collision box but no visual, and the backdrop behind the robot is an empty body
        # (it keeps its body id, 1): both are drawn by ray casting (vlabench.sim.scenery), which costs a
        # fraction of TinyRenderer shading the pixels they cover, i.e. every pixel of both cameras.
        table = p.createMultiBody(
            0, p.createCollisionShape(p.GEOM_BOX, halfExtents=(hx, hy, hz), physicsClientId=c), -1,
            (C.TABLE_CENTER_X, 0, -hz), physicsClientId=c)
        p.changeDynamics(table, -1, lateralFriction=0.8, physicsClientId=c)
        # pybullet draws a body without a visual with its collision shape; a zero alpha hides it (TinyRenderer
        # skips such shapes before any per-triangle work).
        p.changeVisualShape(table, -1, rgbaColor=(1, 1, 1, 0), physicsClientId=c)
        backdrop = p.createMultiBody(0, -1, -1, BACKDROP_CENTER, physicsClientId=c)
        self.table = table
        self.background = background
        self.scenery = self._scenery(background, table, backdrop)
        self.robot = Panda(c)

    def _scenery(self, background: Background, table: int, backdrop: int) -> Scenery:
        """The ray-cast table and backdrop for ``background``, kept across resets with their image caches."""
        key = (background, table, backdrop)
        if key not in self._sceneries:
            hx, hy, hz = C.TABLE_HALF_EXTENTS
            tex = None
            if background.texture:
                from PIL import Image

                tex = np.asarray(Image.open(_texture_file(background.texture, background.table_rgba)).convert("RGB"))
            boxes = [Box(table, (C.TABLE_CENTER_X, 0.0, -hz), (hx, hy, hz),
                         (1.0, 1.0, 1.0, 1.0) if tex is not None else background.table_rgba, tex),
                     Box(backdrop, BACKDROP_CENTER, BACKDROP_HALF_EXTENTS, background.floor_rgba)]
            self._sceneries[key] = Scenery(boxes, background.light_dir, background.light_color, NEAR, FAR)
        return self._sceneries[key]

    def settle(self, bodies: list[int]) -> None:
        """Let freshly spawned ``bodies`` come to rest (SETTLE_STEPS substeps), then put them to sleep.

        A sleeping body costs the solver nothing until something touches it: Bullet wakes it, and
        everything it touches, on contact. Objects nobody touches (distractors, mostly) then stop costing
        physics time. Sleep is otherwise reserved for bodies that stay nearly still (SLEEP_THRESHOLD) for
        Bullet's 2 s, so a rolling or sliding object is never frozen."""
        self.step(C.SETTLE_STEPS)
        for b in bodies:
            p.changeDynamics(b, -1, activationState=p.ACTIVATION_STATE_ENABLE_SLEEPING,
                             sleepThreshold=C.SLEEP_THRESHOLD, physicsClientId=self.client)
            p.changeDynamics(b, -1, activationState=p.ACTIVATION_STATE_SLEEP, physicsClientId=self.client)

    def step(self, substeps: int = C.SUBSTEPS) -> None:
        """Advance physics by ``substeps`` x 1 / PHYSICS_HZ s."""
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
