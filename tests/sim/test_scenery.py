"""The ray-cast table and backdrop reproduce what TinyRenderer draws for the same boxes, and frames composite
correctly: same images with or without the robot in front, projected VQA pixels inside object masks."""

import numpy as np
import pybullet as p
import pytest

from vlabench.env import make_env
from vlabench.sim import camera
from vlabench.sim import constants as C
from vlabench.sim.world import BACKDROP_CENTER, BACKDROP_HALF_EXTENTS, _texture_file
from vlabench.tasks.base import SEEN_BACKGROUNDS, UNSEEN_BACKGROUNDS


def _rasterized(client: int, bg) -> None:
    """Table and backdrop as real TinyRenderer boxes (how SIM_VERSION 1 drew them)."""
    hx, hy, hz = C.TABLE_HALF_EXTENTS
    table = p.createMultiBody(0, -1, p.createVisualShape(p.GEOM_BOX, halfExtents=(hx, hy, hz), rgbaColor=bg.table_rgba,
                                                         physicsClientId=client), (C.TABLE_CENTER_X, 0, -hz),
                              physicsClientId=client)
    if bg.texture:
        tex = p.loadTexture(_texture_file(bg.texture, bg.table_rgba), physicsClientId=client)
        p.changeVisualShape(table, -1, textureUniqueId=tex, rgbaColor=(1, 1, 1, 1), physicsClientId=client)
    p.createMultiBody(0, -1, p.createVisualShape(p.GEOM_BOX, halfExtents=BACKDROP_HALF_EXTENTS, rgbaColor=bg.floor_rgba,
                                                 physicsClientId=client), BACKDROP_CENTER, physicsClientId=client)


def _views():
    rng = np.random.default_rng(0)
    # The front camera (two FOVs), a wrist camera looking straight down (the table covers its whole view:
    # Scenery's fast path) and wrist cameras in random poses (some seeing the backdrop or the void).
    down = np.array(p.getQuaternionFromEuler((np.pi, 0.0, 0.4)))
    out = [(camera.front_view(), camera.FRONT_FOV), (camera.front_view(), 50.0),
           (camera.wrist_view(np.array([0.5, 0.05, 0.25]), down), camera.WRIST_FOV)]
    for _ in range(4):
        pos = np.array([rng.uniform(0.3, 0.7), rng.uniform(-0.3, 0.3), rng.uniform(0.003, 0.5)])
        orn = p.getQuaternionFromEuler((np.pi + rng.uniform(-1.2, 1.2), rng.uniform(-1.2, 1.2), rng.uniform(-3, 3)))
        out.append((camera.wrist_view(pos, np.array(orn)), camera.WRIST_FOV))
    # Looking level, just above the table top: one row of rays runs parallel to it (inf/NaN hit coordinates,
    # which once crashed the textured lookup during a random-policy episode).
    out.append((p.computeViewMatrix((0.47, 0.24, 0.0115), (0.28, -0.37, 0.0115), (0, 0, 1)), camera.WRIST_FOV))
    return out


@pytest.mark.parametrize("bg", [SEEN_BACKGROUNDS[0], SEEN_BACKGROUNDS[1], UNSEEN_BACKGROUNDS[0], UNSEEN_BACKGROUNDS[2]],
                         ids=lambda b: b.name)
def test_scenery_matches_tinyrenderer(bg):
    env = make_env("pick", image_size=32, wrist_size=16)
    env.reset(seed=0)
    scenery = env.world._scenery(bg, 0, 1)
    env.close()
    client = p.connect(p.DIRECT)
    try:
        _rasterized(client, bg)
        for view, fov in _views():
            for size in (64, 128):
                proj = p.computeProjectionMatrixFOV(fov, 1.0, camera.NEAR, camera.FAR)
                _, _, rgba, zbuf, seg = p.getCameraImage(size, size, view, proj, renderer=p.ER_TINY_RENDERER, shadow=0,
                                                         lightDirection=bg.light_dir, lightColor=bg.light_color,
                                                         physicsClientId=client)
                rgb, z, body = scenery.image(size, view, fov)
                ours = rgb.view(np.uint8).reshape(size, size, 4)[..., :3]
                ref = np.asarray(rgba, np.uint8).reshape(size, size, 4)[..., :3]
                same = (ours == ref).all(-1)
                # Identical on this machine; a texture sample exactly on a texel boundary (the table's centre
                # line seen by the front camera) could round the other way on another CPU.
                assert same.mean() >= (0.995 if bg.texture else 1.0), (bg.name, size, fov, same.mean())
                assert np.array_equal(body, np.asarray(seg).reshape(size, size))
                np.testing.assert_allclose(z, np.asarray(zbuf).reshape(size, size), atol=2e-5)
    finally:
        p.disconnect(client)


def test_composite_keeps_bodies_in_front_and_caches_the_front_scenery():
    env = make_env("place", image_size=64, wrist_size=48, segmentation=True, depth=True)
    obs, _ = env.reset(seed=3)
    seg = obs["segmentation"]
    assert (seg == env.world.robot.body).any() and (seg == env.world.table).any()
    assert all((seg == o.body).any() for o in env.scene.objects)
    assert obs["depth"][seg == env.world.table].max() < camera.FAR
    assert len(env.world.scenery.cache) == 1
    frame = env.render()
    assert np.array_equal(frame, obs["image"]) and frame.flags["C_CONTIGUOUS"]
    env.close()


@pytest.mark.parametrize("task", ["pick", "place", "pad", "relational"])
def test_scene_info_pixels_fall_inside_object_masks(task):
    """The VQA pixel (camera.project_to_front of an object's base position) lies in the object's own
    segmentation mask, give or take a pixel, for every visible object."""
    env = make_env(task, image_size=128, wrist_size=16, segmentation=True)
    checked = 0
    for seed in range(4):
        obs, _ = env.reset(seed=seed)
        seg = obs["segmentation"]
        for obj, info in zip(env.scene.objects, env.scene_info()["objects"]):
            mask = seg == obj.body
            if not mask.any():
                continue
            u, v = (int(np.floor(x)) for x in info["pixel"])
            assert mask[max(v - 1, 0):v + 2, max(u - 1, 0):u + 2].any(), (task, seed, obj.spec.name, info["pixel"])
            checked += 1
    env.close()
    assert checked >= 8
