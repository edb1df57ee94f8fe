"""Low-poly render meshes: budgets, closed hulls, determinism, and physics left alone."""

import os
import re

import numpy as np
import pybullet as p
import pybullet_data
import pytest

from vlabench.sim import meshes
from vlabench.sim.decimate import convex_hull, decimate
from vlabench.sim.objects import OBJECT_TRIANGLES
from vlabench.sim.robot import PANDA_LINK_TRIANGLES, lowpoly_urdf

DATA = pybullet_data.getDataPath()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    meshes.lowpoly_urdf.cache_clear()
    yield tmp_path
    meshes.lowpoly_urdf.cache_clear()


def _closed(tris) -> bool:
    edges = {}
    for t in tris:
        for k in range(3):
            e = (t[k], t[(k + 1) % 3])
            edges[e] = edges.get(e, 0) + 1
    return all(edges.get((b, a)) == 1 for (a, b), n in edges.items() if n == 1) and max(edges.values()) == 1


def test_convex_hull_of_a_cube_with_inner_points():
    rng = np.random.default_rng(0)
    corners = [(x, y, z) for x in (0.0, 1.0) for y in (0.0, 1.0) for z in (0.0, 1.0)]
    pts = corners + [tuple(v) for v in rng.uniform(0.1, 0.9, (50, 3))]
    hull = convex_hull(pts)
    assert len(hull) == 12 and _closed(hull)
    assert {i for t in hull for i in t} == set(range(8))


def test_decimate_respects_budget_and_keeps_a_closed_mesh():
    verts, _, tris, _ = meshes.read_obj(os.path.join(DATA, "franka_panda", "meshes", "collision", "link4.obj"))
    pos, out = decimate(verts, [t[0] for t in tris], 60)
    assert len(out) <= 60 and _closed([t[:3] for t in out])
    lo, hi = np.min(verts, 0), np.max(verts, 0)
    assert np.all(np.min(pos, 0) > lo - 0.01) and np.all(np.max(pos, 0) < hi + 0.01)  # no spikes


def test_lowpoly_files_are_deterministic_and_cached(cache):
    src = os.path.join(DATA, "duck.obj")
    path = meshes.lowpoly_obj(src, 120)
    first = open(path, "rb").read()
    os.remove(path)
    assert open(meshes.lowpoly_obj(src, 120), "rb").read() == first
    assert meshes.obj_triangles(path) <= 120 and os.path.exists(path[:-4] + ".png")  # textured: palette


def test_panda_and_objects_are_drawn_low_poly_and_collide_as_before(cache):
    urdf = lowpoly_urdf()
    text = open(urdf).read()
    visual_meshes = [m for block in re.findall(r"<visual>.*?</visual>", text, flags=re.S)
                     for m in re.findall(r'filename="([^"]+)"', block)]
    assert len(visual_meshes) == 11
    assert sum(meshes.obj_triangles(m) for m in visual_meshes) <= 11 * PANDA_LINK_TRIANGLES
    client = p.connect(p.DIRECT)
    try:
        ours = p.loadURDF(urdf, useFixedBase=True, physicsClientId=client)
        theirs = p.loadURDF(os.path.join(DATA, "franka_panda", "panda.urdf"), (0, 3, 0), useFixedBase=True,
                            physicsClientId=client)
        # The collision shapes (hull-only OBJs) are the same solids: rays hit both arms at the same distance.
        rng = np.random.default_rng(0)
        hits = 0
        for link in range(-1, p.getNumJoints(ours, physicsClientId=client)):
            lo, hi = (np.array(v) for v in p.getAABB(ours, link, physicsClientId=client))
            dirs = rng.normal(size=(60, 3))
            dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
            starts, ends = (lo + hi) / 2 + dirs * np.linalg.norm(hi - lo), (lo + hi) / 2 - dirs * 0.01
            a = p.rayTestBatch(starts.tolist(), ends.tolist(), physicsClientId=client)
            b = p.rayTestBatch((starts + [0, 3, 0]).tolist(), (ends + [0, 3, 0]).tolist(), physicsClientId=client)
            for x, y in zip(a, b):
                assert (x[0] == ours) == (y[0] == theirs) and x[1] == y[1]
                if x[0] == ours:
                    hits += 1
                    assert abs(x[2] - y[2]) < 1e-9
        assert hits > 300
        soccer = p.loadURDF(meshes.lowpoly_urdf(os.path.join(DATA, "soccerball.urdf"), OBJECT_TRIANGLES),
                            physicsClientId=client)
        shapes = p.getVisualShapeData(soccer, physicsClientId=client)
        assert meshes.obj_triangles(shapes[0][4].decode()) <= OBJECT_TRIANGLES
    finally:
        p.disconnect(client)
