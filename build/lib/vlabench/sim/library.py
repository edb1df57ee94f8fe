"""The object catalogue: procedural colour/shape families, named compound objects, pybullet_data meshes
and containers. ``held_out`` names and colour/shape pairs form the unseen splits (see vlabench.language)."""

from __future__ import annotations

import dataclasses
import math

from vlabench.sim.objects import ObjectSpec, Part

SHAPE_COLORS = ("red", "green", "blue", "yellow", "orange", "purple", "pink", "white", "cyan", "brown")
"""Colours the procedural shape families come in."""

HELD_OUT_COLOR_SHAPES = {
    ("block", "purple"), ("block", "cyan"), ("cylinder", "orange"),
    ("cylinder", "pink"), ("ball", "green"), ("ball", "white"),
}
"""Colour/shape pairs that never appear in the seen split (``unseen_colors``); each colour is seen on another shape."""

HELD_OUT_OBJECTS = {"pear", "tomato", "wrench", "jenga block", "bunny", "bottle", "mammoth", "spoon"}
"""Named objects that only appear in the ``unseen_objects`` split."""


def _family(shape: str, color: str) -> ObjectSpec:
    if shape == "block":
        return ObjectSpec(f"{color} block", color, ("block", "toy", "shape"), (f"{color} cube",), "small",
                          (Part("box", (0.022, 0.022, 0.022), (0, 0, 0.022)),), height=0.044, radius=0.032,
                          family="block")
    if shape == "cylinder":
        return ObjectSpec(f"{color} cylinder", color, ("cylinder", "toy", "shape"), (f"{color} tube",), "small",
                          (Part("cylinder", (0.021, 0.05), (0, 0, 0.025)),), height=0.05, radius=0.03,
                          grasp_yaw_symmetry=0.0, family="cylinder")
    return ObjectSpec(f"{color} ball", color, ("ball", "toy", "shape", "round thing"), (f"{color} sphere",), "small",
                      (Part("sphere", (0.024,), (0, 0, 0.024)),), height=0.048, radius=0.03,
                      grasp_yaw_symmetry=0.0, family="ball")


def _named() -> list[ObjectSpec]:
    s = ObjectSpec
    return [
        # fruit and vegetables
        s("apple", "red", ("fruit", "food"), ("red apple",), "small",
          (Part("sphere", (0.027,), (0, 0, 0.027)), Part("cylinder", (0.003, 0.012), (0, 0, 0.058), "brown")),
          height=0.054, radius=0.032, grasp_yaw_symmetry=0.0),
        s("banana", "yellow", ("fruit", "food"), ("yellow banana",), "medium",
          (Part("capsule", (0.014, 0.05), (0, 0, 0.014), euler=(0, math.pi / 2, 0)),
           Part("capsule", (0.012, 0.03), (0.035, 0.015, 0.014), euler=(0, math.pi / 2, 0.6)),
           Part("capsule", (0.012, 0.03), (-0.035, 0.015, 0.014), euler=(0, math.pi / 2, -0.6))),
          height=0.028, radius=0.06, grasp_height=0.016, grasp_yaw_symmetry=math.pi, extra={"grasp_axis": math.pi / 2}),
        s("lemon", "yellow", ("fruit", "food", "citrus"), (), "small",
          (Part("capsule", (0.022, 0.02), (0, 0, 0.022), euler=(0, math.pi / 2, 0)),), height=0.044, radius=0.035,
          grasp_yaw_symmetry=math.pi, extra={"grasp_axis": math.pi / 2}),
        s("orange", "orange", ("fruit", "food", "citrus"), (), "small",
          (Part("sphere", (0.028,), (0, 0, 0.028)),), height=0.056, radius=0.032, grasp_yaw_symmetry=0.0),
        s("pear", "green", ("fruit", "food"), (), "small",
          (Part("sphere", (0.027,), (0, 0, 0.027)), Part("sphere", (0.018,), (0, 0, 0.058)),
           Part("cylinder", (0.003, 0.01), (0, 0, 0.08), "brown")), height=0.08, radius=0.032,
          grasp_height=0.03, grasp_yaw_symmetry=0.0),
        s("strawberry", "red", ("fruit", "food", "berry"), (), "small",
          (Part("sphere", (0.02,), (0, 0, 0.02)), Part("cylinder", (0.012, 0.006), (0, 0, 0.041), "green")),
          height=0.044, radius=0.025, grasp_yaw_symmetry=0.0),
        s("carrot", "orange", ("vegetable", "food"), (), "medium",
          (Part("capsule", (0.015, 0.07), (0, 0, 0.015), euler=(0, math.pi / 2, 0)),
           Part("box", (0.012, 0.008, 0.008), (0.055, 0, 0.015), "green")), height=0.03, radius=0.06,
          grasp_yaw_symmetry=math.pi, extra={"grasp_axis": math.pi / 2}),
        s("tomato", "red", ("vegetable", "food"), (), "small",
          (Part("sphere", (0.026,), (0, 0, 0.026)), Part("cylinder", (0.01, 0.006), (0, 0, 0.053), "green")),
          height=0.056, radius=0.03, grasp_yaw_symmetry=0.0),
        s("eggplant", "purple", ("vegetable", "food"), ("aubergine",), "medium",
          (Part("capsule", (0.02, 0.05), (0, 0, 0.02), euler=(0, math.pi / 2, 0)),
           Part("cylinder", (0.008, 0.02), (0.052, 0, 0.02), "green", euler=(0, math.pi / 2, 0))),
          height=0.04, radius=0.055, grasp_yaw_symmetry=math.pi, extra={"grasp_axis": math.pi / 2}),
        # animals, extinct ones included
        s("dinosaur", "green", ("animal", "extinct animal", "toy", "reptile"), ("dino", "t-rex"), "medium",
          (Part("box", (0.028, 0.014, 0.016), (0, 0, 0.03)), Part("box", (0.012, 0.01, 0.012), (0.036, 0, 0.055)),
           Part("box", (0.02, 0.006, 0.006), (-0.042, 0, 0.03)), Part("box", (0.006, 0.012, 0.008), (0.015, 0, 0.008)),
           Part("box", (0.006, 0.012, 0.008), (-0.015, 0, 0.008))), height=0.067, radius=0.055, grasp_height=0.03,
          # Long along x (~11 cm nose to tail), ~3 cm across: the fingers must close across y, never lengthwise.
          grasp_yaw_symmetry=math.pi, extra={"grasp_axis": math.pi / 2}),
        s("mammoth", "brown", ("animal", "extinct animal", "toy", "mammal"), ("woolly mammoth",), "medium",
          (Part("box", (0.03, 0.016, 0.018), (0, 0, 0.034)), Part("box", (0.012, 0.012, 0.012), (0.038, 0, 0.045)),
           Part("capsule", (0.005, 0.02), (0.05, 0, 0.025), "gray"), Part("box", (0.007, 0.014, 0.008), (0.018, 0, 0.008)),
           Part("box", (0.007, 0.014, 0.008), (-0.018, 0, 0.008))), height=0.057, radius=0.055, grasp_height=0.034,
          # Long along x (~8.5 cm tail to trunk), ~3 cm across: straddled lengthwise it wedges in the fingers.
          grasp_yaw_symmetry=math.pi, extra={"grasp_axis": math.pi / 2}),
        s("duck", "yellow", ("animal", "bird", "toy"), ("rubber duck", "duckling"), "medium",
          urdf="duck_vhacd.urdf", scale=0.6, height=0.04, radius=0.035, grasp_height=0.02, mass=0.06,
          grasp_yaw_symmetry=math.pi),
        s("teddy bear", "brown", ("animal", "toy", "stuffed animal"), ("teddy", "bear"), "medium",
          urdf="teddy_vhacd.urdf", scale=0.55, height=0.04, radius=0.035, grasp_height=0.02, mass=0.06,
          grasp_yaw_symmetry=math.pi),
        s("bunny", "white", ("animal", "toy", "mammal"), ("rabbit",), "medium",
          (Part("sphere", (0.022,), (0, 0, 0.022)), Part("sphere", (0.014,), (0.02, 0, 0.045)),
           Part("capsule", (0.004, 0.018), (0.02, 0.007, 0.068)), Part("capsule", (0.004, 0.018), (0.02, -0.007, 0.068))),
          height=0.085, radius=0.03, grasp_height=0.022, grasp_yaw_symmetry=0.0),
        # toys
        s("lego brick", "red", ("toy", "brick"), ("lego", "building block"), "small", urdf="lego/lego.urdf",
          scale=1.5, height=0.037, radius=0.035, tint=True, mass=0.04),
        s("soccer ball", "white", ("toy", "ball", "round thing"), ("football",), "small", urdf="soccerball.urdf",
          scale=0.055, height=0.055, radius=0.032, grasp_yaw_symmetry=0.0, mass=0.05),
        s("domino", "white", ("toy", "game piece"), ("domino tile",), "small", urdf="domino/domino.urdf",
          scale=1.4, height=0.07, radius=0.03, grasp_height=0.035, grasp_yaw_symmetry=math.pi, mass=0.03),
        s("jenga block", "brown", ("toy", "game piece"), ("wooden block",), "small", urdf="jenga/jenga.urdf",
          scale=0.5, height=0.015, radius=0.045, grasp_yaw_symmetry=math.pi, extra={"grasp_axis": math.pi / 2}, mass=0.03),
        # kitchenware
        s("mug", "white", ("kitchenware", "cup", "drinkware"), ("coffee mug", "cup"), "medium", urdf="objects/mug.urdf",
          scale=0.55, height=0.058, radius=0.045, grasp_height=0.035, mass=0.1, grasp_yaw_symmetry=math.pi),
        s("cup", "blue", ("kitchenware", "cup", "drinkware"), ("glass", "tumbler"), "small",
          (Part("cylinder", (0.024, 0.006), (0, 0, 0.003)),) + tuple(
              Part("box", (0.004, 0.009, 0.025), (0.022 * math.cos(a), 0.022 * math.sin(a), 0.03), euler=(0, 0, a))
              for a in [i * math.pi / 4 for i in range(8)]), height=0.055, radius=0.032, grasp_height=0.035,
          grasp_yaw_symmetry=0.0),
        s("bottle", "green", ("kitchenware", "drinkware", "container"), ("water bottle",), "medium",
          (Part("cylinder", (0.02, 0.07), (0, 0, 0.035)), Part("cylinder", (0.008, 0.025), (0, 0, 0.082), "white")),
          height=0.095, radius=0.03, grasp_height=0.04, grasp_yaw_symmetry=0.0),
        s("spoon", "gray", ("kitchenware", "utensil", "cutlery"), ("teaspoon",), "small",
          (Part("box", (0.045, 0.006, 0.009), (0, 0, 0.009)), Part("cylinder", (0.016, 0.012), (0.055, 0, 0.006))),
          height=0.018, radius=0.07, grasp_yaw_symmetry=math.pi, extra={"grasp_axis": math.pi / 2}),
        # tools
        s("hammer", "brown", ("tool",), ("mallet",), "medium",
          (Part("box", (0.05, 0.008, 0.008), (0, 0, 0.01)), Part("box", (0.01, 0.028, 0.012), (0.055, 0, 0.012), "gray")),
          height=0.024, radius=0.07, grasp_height=0.01, grasp_yaw_symmetry=math.pi, extra={"grasp_axis": math.pi / 2}),
        s("screwdriver", "red", ("tool",), (), "medium",
          (Part("box", (0.03, 0.01, 0.01), (-0.02, 0, 0.01)), Part("box", (0.03, 0.003, 0.003), (0.04, 0, 0.01), "gray")),
          height=0.02, radius=0.07, grasp_height=0.01, grasp_yaw_symmetry=math.pi, extra={"grasp_axis": math.pi / 2}),
        s("wrench", "gray", ("tool",), ("spanner",), "medium",
          (Part("box", (0.045, 0.008, 0.009), (0, 0, 0.009)), Part("box", (0.012, 0.02, 0.009), (0.05, 0, 0.009))),
          height=0.018, radius=0.07, grasp_yaw_symmetry=math.pi, extra={"grasp_axis": math.pi / 2}),
    ]


def _containers() -> list[ObjectSpec]:
    wall = [Part("box", (0.005, 0.026, 0.018), (0.068 * math.cos(a), 0.068 * math.sin(a), 0.026), euler=(0, 0, a))
            for a in [i * math.pi / 6 for i in range(12)]]
    return [
        ObjectSpec("bowl", "blue", ("container", "kitchenware", "dish"), ("dish",), "large",
                   (Part("cylinder", (0.06, 0.008), (0, 0, 0.004)),) + tuple(wall), mass=0.0, kind="container",
                   height=0.044, radius=0.08),
        ObjectSpec("plate", "white", ("container", "kitchenware", "dish"), ("dish",), "large",
                   (Part("cylinder", (0.075, 0.008), (0, 0, 0.004)),), mass=0.0, kind="container", height=0.008,
                   radius=0.08),
        ObjectSpec("tray", "gray", ("container",), ("box lid",), "large", urdf="tray/traybox.urdf", scale=0.27,
                   mass=0.0, kind="container", height=0.037, radius=0.09, tint=True),
    ]


def build_catalog() -> dict[str, ObjectSpec]:
    """All objects by name."""
    specs = [_family(shape, c) for shape in ("block", "cylinder", "ball") for c in SHAPE_COLORS]
    specs += _named() + _containers()
    return {s.name: s for s in specs}


CATALOG: dict[str, ObjectSpec] = build_catalog()


def get(name: str) -> ObjectSpec:
    """An object by name; raises ValueError listing near matches."""
    try:
        return CATALOG[name]
    except KeyError:
        raise ValueError(f"unknown object {name!r}; known: {', '.join(sorted(CATALOG))}") from None


def volume(spec: ObjectSpec) -> float:
    """Approximate volume (m^3) of a compound object: the sum of its parts (overlaps counted twice,
    which is negligible for the catalogue's shapes). Mesh objects have no parts and raise ValueError."""
    if not spec.parts:
        raise ValueError(f"object {spec.name!r} is a mesh; volume() needs a compound of primitive parts")
    total = 0.0
    for part in spec.parts:
        s = part.size
        if part.shape == "box":
            total += 8 * s[0] * s[1] * s[2]
        elif part.shape == "sphere":
            total += 4 / 3 * math.pi * s[0] ** 3
        elif part.shape == "cylinder":
            total += math.pi * s[0] ** 2 * s[1]
        else:  # capsule: cylinder plus two half spheres
            total += math.pi * s[0] ** 2 * s[1] + 4 / 3 * math.pi * s[0] ** 3
    return total


def colorfast(spec: ObjectSpec) -> bool:
    """Whether the rendered object really shows its ``color`` (compound objects and tinted meshes);
    textured meshes (duck, mug, ...) look like their texture, so colour relations skip them."""
    return not spec.urdf or spec.tint


def scaled(spec: ObjectSpec, factor: float, prefix: str = "big") -> ObjectSpec:
    """A uniformly scaled copy of a compound object, named ``"{prefix} {name}"``. Not in CATALOG: the
    relational family's "biggest" scenes create it on demand, so core tasks never sample it."""
    if not spec.parts:
        raise ValueError(f"object {spec.name!r} is a mesh; only compound objects can be scaled")
    parts = tuple(dataclasses.replace(pt, size=tuple(v * factor for v in pt.size),
                                      offset=tuple(v * factor for v in pt.offset)) for pt in spec.parts)
    return dataclasses.replace(
        spec, name=f"{prefix} {spec.name}", synonyms=tuple(f"{prefix} {x}" for x in spec.synonyms), size="large",
        parts=parts, height=spec.height * factor, radius=spec.radius * factor, mass=spec.mass * 1.25,
        grasp_height=None if spec.grasp_height is None else spec.grasp_height * factor, extra=dict(spec.extra))
