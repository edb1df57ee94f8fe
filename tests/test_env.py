"""Gymnasium contract of every registered env: checker, determinism, pickling, subprocesses, bad input."""

import multiprocessing as mp
import pickle

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from vlabench.env import TabletopEnv, make_env
from vlabench.tasks import TASKS

ENV_IDS = [f"vlabench/{t.gym_id}-v0" for t in TASKS.values()]
SMALL = dict(image_size=48, wrist_size=32)


def _rollout(env, seed, n=20):
    obs, _ = env.reset(seed=seed)
    frames = [obs]
    rng = np.random.default_rng(123)
    for _ in range(n):
        obs, *_ = env.step(rng.uniform(-1, 1, 7).astype(np.float32))
        frames.append(obs)
    return frames


def _same(a, b):
    return (a["instruction"] == b["instruction"] and np.array_equal(a["image"], b["image"])
            and np.array_equal(a["wrist_image"], b["wrist_image"]) and np.array_equal(a["state"], b["state"]))


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_check_env(env_id):
    env = gym.make(env_id, **SMALL)
    check_env(env.unwrapped, skip_render_check=False)
    env.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_seeded_determinism(env_id):
    a, b = gym.make(env_id, **SMALL).unwrapped, gym.make(env_id, **SMALL).unwrapped
    fa, fb = _rollout(a, 7), _rollout(b, 7)
    assert all(_same(x, y) for x, y in zip(fa, fb))
    # A second reset of the same env with the same seed reproduces the first, too.
    assert all(_same(x, y) for x, y in zip(fa, _rollout(a, 7)))
    # A different seed gives a different scene.
    assert not _same(fa[0], _rollout(a, 8, n=0)[0])
    a.close(), b.close()


@pytest.mark.parametrize("task", list(TASKS))
def test_pickle_round_trip(task):
    env = make_env(task, **SMALL)
    clone = pickle.loads(pickle.dumps(env))
    assert all(_same(x, y) for x, y in zip(_rollout(env, 3, 5), _rollout(clone, 3, 5)))
    env.close(), clone.close()


def _child(conn):
    env = make_env("pick", **SMALL)
    conn.send(_rollout(env, 11, 5))
    env.close()


def test_subprocess_env_matches_local():
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_child, args=(child,))
    proc.start()
    remote = parent.recv()
    proc.join(60)
    local = _rollout(make_env("pick", **SMALL), 11, 5)
    assert proc.exitcode == 0 and all(_same(x, y) for x, y in zip(local, remote))


def test_many_envs_in_one_process():
    envs = [make_env(t, **SMALL) for t in TASKS]
    for i, env in enumerate(envs):
        env.reset(seed=i)
    for _ in range(3):
        for env in envs:
            obs, *_ = env.step(np.zeros(7, np.float32))
            assert obs["image"].shape == (48, 48, 3)
    for env in envs:
        env.close()
        env.close()  # closing twice is harmless


def test_nan_action_raises_naming_the_action():
    env = make_env("pick", **SMALL)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="NaN") as e:
        env.step(np.array([0, np.nan, 0, 0, 0, 0, 1], np.float32))
    assert "nan" in str(e.value)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(6, np.float32))
    env.close()


def test_out_of_range_action_is_clipped_and_reported():
    env = make_env("pick", **SMALL)
    env.reset(seed=0)
    *_, info = env.step(np.array([5, 0, 0, 0, 0, 0, -1], np.float32))
    assert info["action_clipped"] is True
    *_, info = env.step(np.zeros(7, np.float32))
    assert info["action_clipped"] is False
    env.close()


@pytest.mark.parametrize("kwargs, match", [
    (dict(task="pik"), "unknown task 'pik'; known: pick, place"),
    (dict(task="pick", split="sen"), "unknown split 'sen'; valid: seen"),
    (dict(task="push", split="unseen_objects"), "task 'push' has no split 'unseen_objects'; its splits: seen"),
    (dict(task="pick", renderer="opengl"), "unknown renderer 'opengl'; valid: tiny, egl"),
    (dict(task="pick", image_size=4), "image_size must be an int in"),
    (dict(task="pick", max_steps=-3), "max_steps must be a positive int or None"),
    (dict(task="pick", max_steps=0), "max_steps must be a positive int or None"),
    (dict(task="pick", max_steps=2.5), "max_steps must be a positive int or None"),
])
def test_bad_options_list_valid_ones(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TabletopEnv(**kwargs)


def test_observation_contract_and_extras():
    env = make_env("place", image_size=256, wrist_size=64, depth=True, segmentation=True)
    obs, info = env.reset(seed=1)
    assert obs["image"].shape == (256, 256, 3) and obs["image"].dtype == np.uint8
    assert obs["wrist_image"].shape == (64, 64, 3)
    assert obs["state"].shape == (8,) and obs["state"].dtype == np.float32
    assert obs["depth"].shape == (256, 256) and 0.1 < float(obs["depth"].min()) < float(obs["depth"].max()) < 3.0
    assert len(np.unique(obs["segmentation"])) >= 4  # table, backdrop, robot, objects
    assert info["renderer"] == "tiny" and isinstance(info["success"], bool)
    assert 0.07 < obs["state"][7] <= 0.081  # gripper starts open
    env.close()


def test_objects_rest_before_first_observation():
    env = make_env("pick", **SMALL)
    env.reset(seed=5)
    before = env.object_poses()
    env.step(np.zeros(7, np.float32) + np.array([0, 0, 0, 0, 0, 0, -1], np.float32))
    assert np.abs(env.object_poses()[:, :3] - before[:, :3]).max() < 2e-3
    env.close()


@pytest.mark.parametrize("task", list(TASKS))
def test_expert_solves_a_few_seeds(task):
    env = make_env(task, **SMALL)
    wins = 0
    for seed in range(3):
        env.reset(seed=seed)
        for _ in range(env.max_steps):
            _, _, term, trunc, info = env.step(env.expert_action())
            if term or trunc:
                break
        wins += info["success"]
    env.close()
    assert wins == 3


def test_objects_and_distractors_options_narrow_the_cell():
    names = ["red ball", "blue cylinder"]
    env = TabletopEnv("pick", objects=names, distractors=(0, 0), image_size=32, wrist_size=16)
    seen = set()
    for seed in range(12):
        env.reset(seed=seed)
        assert len(env.scene.objects) == 1  # no distractors
        seen.add(env.scene.objects[0].spec.name)
    assert seen == set(names)
    env.close()
    # the options survive pickling (eval workers rebuild envs from their constructor arguments)
    clone = pickle.loads(pickle.dumps(TabletopEnv("pick", objects=names, distractors=(2, 2), image_size=32,
                                                  wrist_size=16)))
    clone.reset(seed=0)
    assert len(clone.scene.objects) == 3
    clone.close()


@pytest.mark.parametrize("kwargs, match", [
    (dict(task="pick", objects=["zebra"]), "not targets of split 'seen'; valid: apple"),
    (dict(task="push", objects=["red ball"]), "finds no target"),
    (dict(task="category", split="semantic", objects=["apple"]), "does not draw its target"),
    (dict(task="pick", distractors=(3, 1)), "0 <= lo <= hi"),
])
def test_objects_and_distractors_options_refuse_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TabletopEnv(**kwargs)


def test_front_fov_zooms_the_front_camera():
    from vlabench.sim import camera

    point = np.array([[0.5, 0.15, 0.0]])
    wide, narrow = camera.project_to_front(point, 96, fov=50.0)[0], camera.project_to_front(point, 96, fov=35.0)[0]
    assert abs(narrow[0] - 48) > 1.3 * abs(wide[0] - 48)  # the same point lands further from the centre
    env = TabletopEnv("pick", front_fov=35.0, image_size=96, wrist_size=16, objects=["red ball"], distractors=(0, 0))
    env.reset(seed=0)
    u, v = (int(c) for c in env.scene_info()["objects"][0]["pixel"])
    seg = env._front(seg=True).segmentation & ((1 << 24) - 1)
    assert env.scene.objects[0].body in seg[v - 1:v + 2, u - 1:u + 2]  # the projection agrees with the zoomed render
    env.close()
    with pytest.raises(ValueError, match="front_fov"):
        TabletopEnv("pick", front_fov=5.0)


TINY = dict(image_size=16, wrist_size=16)


def test_import_vlabench_registers_every_task():
    for task in TASKS.values():
        assert gym.spec(f"vlabench/{task.gym_id}-v0").entry_point == "vlabench.env:TabletopEnv"


def test_async_vector_env_returns_the_same_instructions_and_images_as_sync():
    # Gymnasium's shared memory reads a Text space once, at construction (every instruction was 256 x "a").
    single = [make_env("pick", **TINY).reset(seed=s)[0]["instruction"] for s in (3, 4, 5, 6)]
    assert single[:2] != single[2:]
    runs = {}
    for mode in ("async", "sync"):
        env = gym.make_vec("vlabench/Pick-v0", num_envs=2, vectorization_mode=mode, **TINY)
        first, _ = env.reset(seed=[3, 4])
        stepped, *_ = env.step(np.zeros((2, 7), np.float32))
        second, _ = env.reset(seed=[5, 6])
        runs[mode] = (first, stepped, second)
        env.close()
    for a, s, want in zip(runs["async"], runs["sync"], (single[:2], single[:2], single[2:])):
        assert a["instruction"] == s["instruction"] == tuple(want)  # the first batch did not change afterwards
        assert np.array_equal(a["image"], s["image"]) and np.array_equal(a["state"], s["state"])


def test_async_vector_env_without_copy_gives_a_live_view_that_copies_to_a_tuple():
    import copy

    env = gym.make_vec("vlabench/Pick-v0", num_envs=2, vectorization_mode="async", vector_kwargs={"copy": False},
                       **TINY)
    view = env.reset(seed=[3, 4])[0]["instruction"]
    frozen = copy.deepcopy(view)
    env.reset(seed=[5, 6])
    single = [make_env("pick", **TINY).reset(seed=s)[0]["instruction"] for s in (3, 4, 5, 6)]
    assert type(frozen) is tuple and frozen == tuple(single[:2])
    assert list(view) == single[2:] and len(view) == 2 and view[1] == single[3]
    assert pickle.loads(pickle.dumps(view)) == tuple(single[2:])
    env.close()


def test_a_driven_expert_follows_the_scene_and_restarts_when_its_plan_runs_out():
    env = make_env("pick", terminate_on_success=False, **SMALL)
    env.reset(seed=3)
    first = env.expert_action(driven=True)
    assert first[6] < 0 and np.abs(first[:2]).max() > 0.1  # approach, open, moving over to the target
    target = env.scene.by_role("target").body
    for _ in range(40):  # a "policy" that goes straight down where it starts, closes, and lifts
        a = np.zeros(7, np.float32)
        a[2], a[6] = -1.0, -1.0
        env.step(a)
    label = env.expert_action(driven=True)
    assert label[6] < 0, "low and off the target: the label is still the approach, gripper open"
    # Now let the expert do it all, as a policy would that copies it, and count the plan to its end.
    env.reset(seed=3)
    for _ in range(env.max_steps):
        env.step(env.expert_action(driven=True))
        if all(env.world.robot.touching(target := env.scene.by_role("target").body)):
            break
    assert env.world.robot.gripper_closed and all(env.world.robot.touching(target))
    for _ in range(env.max_steps):  # ...and on to the end of its plan, where it holds still
        env.step(env.expert_action(driven=True))
        if env._expert.finished():
            break
    assert np.abs(env.expert_action()[:3]).max() < 0.2
    drop = np.zeros(7, np.float32)
    drop[6] = -1.0
    for _ in range(15):  # the "policy" opens the hand: the target falls back to the table
        env.step(drop)
    env._succeeded = False  # ...and the task counts as undone: the plan starts over, back to the target
    again = env.expert_action(driven=True)
    assert np.abs(again[:3]).max() > 0.5 and again[6] < 0 and not env._expert.finished()
    env.close()


def test_a_driven_expert_skips_to_the_lift_when_the_policy_already_holds_the_target():
    env = make_env("pick", terminate_on_success=False, **SMALL)
    env.reset(seed=3)
    for _ in range(env.max_steps):  # the expert, undriven, up to the moment it holds the target
        a = env.expert_action()
        env.step(a)
        if env.world.robot.gripper_closed and all(env.world.robot.touching(env.scene.by_role("target").body)):
            break
    assert env.world.robot.gripper_closed
    undriven = env.expert_action()  # its own count: still holding still while the grip settles
    env._expert = None  # the same scene, labelled for a policy that closed the gripper itself
    driven = env.expert_action(driven=True)
    assert abs(undriven[2]) < 0.2 and driven[2] > 0.5 and driven[6] > 0  # driven: lift, gripper closed
    env.close()
