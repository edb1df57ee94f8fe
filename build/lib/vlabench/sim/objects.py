"""Object specifications and how they are spawned into a PyBullet world.

An object is either a compound of primitive parts (boxes, cylinders, spheres, capsules), built at run
time, or a mesh URDF that ships in ``pybullet_data``. Every object carries the metadata language and
task code need: name, synonyms, dominant colour, size class and categories. Geometry is described in
the object's *base frame*: origin at the centre of its footprint, on the table (z = 0 is its bottom).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import pybullet as p
import pybullet_data

from vlabench.sim.colors import rgba
from vlabench.sim.meshes import lowpoly_urdf

OBJECT_TRIANGLES = 300
"""Most triangles a mesh object's visual is drawn with (see vlabench.sim.meshes)."""
_SHAPES = {"box": p.GEOM_BOX, "cylinder": p.GEOM_CYLINDER, "sphere": p.GEOM_SPHERE, "capsule": p.GEOM_CAPSULE}


@dataclass(frozen=True)
class Part:
    """One primitive of a compound object."""

    shape: str
    """box | cylinder | sphere | capsule."""
    size: tuple[float, ...]
    """box: half extents (x, y, z); cylinder/capsule: (radius, length); sphere: (radius,)."""
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Centre of the part in the object's base frame."""
    color: str | None = None
    """Colour name; None uses the object's colour."""
    euler: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Orientation of the part in the base frame."""


@dataclass(frozen=True)
class ObjectSpec:
    """A kind of object that can appear in a scene."""

    name: str
    """Canonical name used in instructions ("banana", "red block")."""
    color: str
    """Dominant colour name."""
    categories: tuple[str, ...]
    """Semantic categories ("fruit", "food", "toy", "animal", ...)."""
    synonyms: tuple[str, ...] = ()
    """Other names a person might use."""
    size: str = "medium"
    """Size class: small | medium | large."""
    parts: tuple[Part, ...] = ()
    """Primitive parts (compound objects)."""
    urdf: str | None = None
    """A pybullet_data-relative URDF (mesh objects)."""
    scale: float = 1.0
    """globalScaling for ``urdf`` objects."""
    mass: float = 0.08
    """Mass in kg; 0 makes the object static (containers)."""
    kind: str = "object"
    """object | container."""
    height: float = 0.04
    """Height of the object above the table when resting."""
    radius: float = 0.03
    """Footprint radius used for collision-free placement."""
    grasp_height: float | None = None
    """Height above the table where the expert closes the gripper (None: half the height)."""
    grasp_yaw_symmetry: float = math.pi / 2
    """Angle after which the grasp repeats (pi/2 for boxes, 0 for round objects: any yaw)."""
    tint: bool = False
    """Recolour a mesh object's visual with ``color`` (mesh objects keep their texture otherwise)."""
    family: str = ""
    """Shape family for colour/shape combinations ("block", "cylinder", "ball"); empty for named objects."""
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def grasp_z(self) -> float:
        """Height above the table where the gripper closes on this object."""
        return self.grasp_height if self.grasp_height is not None else 0.5 * self.height

    @property
    def phrase(self) -> str:
        """The noun phrase for this object in instructions."""
        return self.name


def _part_arrays(spec: ObjectSpec) -> dict:
    types, half, radii, lengths, pos, orn, colors = [], [], [], [], [], [], []
    for part in spec.parts:
        if part.shape not in _SHAPES:
            raise ValueError(f"object {spec.name!r}: unknown part shape {part.shape!r}; known: {', '.join(_SHAPES)}")
        types.append(_SHAPES[part.shape])
        s = part.size
        half.append(list(s) if part.shape == "box" else [0.0, 0.0, 0.0])
        radii.append(s[0] if part.shape != "box" else 0.0)
        lengths.append(s[1] if part.shape in ("cylinder", "capsule") else 0.0)
        pos.append(list(part.offset))
        orn.append(list(p.getQuaternionFromEuler(part.euler)))
        colors.append(list(rgba(part.color or spec.color)))
    return dict(types=types, half=half, radii=radii, lengths=lengths, pos=pos, orn=orn, colors=colors)


def spawn(spec: ObjectSpec, xy: tuple[float, float], yaw: float, client: int, z: float = 0.0) -> int:
    """Create ``spec`` with its footprint centre at ``xy`` resting at height ``z``; returns the body id."""
    orn = p.getQuaternionFromEuler((0.0, 0.0, yaw))
    if spec.urdf is not None:
        # Drawn with visual meshes simplified to OBJECT_TRIANGLES (pybullet_data's soccer ball has 9,048);
        # the collision shapes, and so physics, are the URDF's own.
        urdf = lowpoly_urdf(os.path.join(data_path(), spec.urdf), OBJECT_TRIANGLES)
        body = p.loadURDF(urdf, (0, 0, 2.0), orn, globalScaling=spec.scale, physicsClientId=client)
        lo, hi = p.getAABB(body, physicsClientId=client)
        base, _ = p.getBasePositionAndOrientation(body, physicsClientId=client)
        # Put the AABB's bottom on the table and its centre on xy.
        pos = (xy[0] + base[0] - 0.5 * (lo[0] + hi[0]), xy[1] + base[1] - 0.5 * (lo[1] + hi[1]), z + base[2] - lo[2] + 1e-3)
        p.resetBasePositionAndOrientation(body, pos, orn, physicsClientId=client)
        if spec.mass > 0:
            p.changeDynamics(body, -1, mass=spec.mass, physicsClientId=client)
        if spec.tint:
            p.changeVisualShape(body, -1, rgbaColor=rgba(spec.color), physicsClientId=client)
    else:
        a = _part_arrays(spec)
        col = p.createCollisionShapeArray(
            shapeTypes=a["types"], halfExtents=a["half"], radii=a["radii"], lengths=a["lengths"],
            collisionFramePositions=a["pos"], collisionFrameOrientations=a["orn"], physicsClientId=client)
        vis = p.createVisualShapeArray(
            shapeTypes=a["types"], halfExtents=a["half"], radii=a["radii"], lengths=a["lengths"],
            visualFramePositions=a["pos"], visualFrameOrientations=a["orn"], rgbaColors=a["colors"],
            physicsClientId=client)
        body = p.createMultiBody(spec.mass, col, vis, (xy[0], xy[1], z + 1e-3), orn, physicsClientId=client)
    p.changeDynamics(body, -1, lateralFriction=1.0, spinningFriction=0.002, rollingFriction=0.0005,
                     physicsClientId=client)
    return body


def data_path() -> str:
    """The pybullet_data directory (mesh URDFs are relative to it)."""
    return pybullet_data.getDataPath()
