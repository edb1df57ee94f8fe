"""Wrappers that make the env usable by libraries without Text spaces (Stable-Baselines3)."""

import gymnasium as gym
import numpy as np
import pytest

import vlabench  # noqa: F401  registers the gym ids
from vlabench.wrappers import DropInstruction, InstructionEmbedding

SB3_SIZE = dict(image_size=36, wrist_size=36)  # SB3's NatureCNN needs at least 36 x 36 images


def test_instruction_embedding_replaces_the_string_by_its_unit_vector():
    env = InstructionEmbedding(gym.make("vlabench/Pick-v0", image_size=16, wrist_size=16), encoder="hash")
    space = env.observation_space["instruction"]
    assert isinstance(space, gym.spaces.Box) and space.shape == (env.encoder.dim,) == (384,)
    obs, info = env.reset(seed=0)
    vec = obs["instruction"]
    assert obs in env.observation_space and vec.dtype == np.float32
    assert abs(float(np.linalg.norm(vec)) - 1.0) < 1e-5
    assert np.allclose(vec, env.encoder.embed([info["instruction"]])[0].numpy())  # the string stays in info
    assert np.array_equal(env.step(np.zeros(7, np.float32))[0]["instruction"], vec)  # fixed for the episode
    other, other_info = env.reset(seed=1)
    assert other_info["instruction"] != info["instruction"] and not np.allclose(other["instruction"], vec)
    env.close()


def test_drop_instruction_removes_the_key_and_bad_keys_are_named():
    env = DropInstruction(gym.make("vlabench/Pick-v0", image_size=16, wrist_size=16))
    obs, _ = env.reset(seed=0)
    assert set(obs) == set(env.observation_space.spaces) == {"image", "wrist_image", "state"}
    with pytest.raises(ValueError, match="with the key 'goal'; it has: .*'instruction'"):
        DropInstruction(env.env, key="goal")
    env.close()


def test_stable_baselines3_checks_and_trains_on_the_wrapped_env():
    sb3 = pytest.importorskip("stable_baselines3")
    from stable_baselines3.common.env_checker import check_env

    with pytest.raises(AssertionError, match="key=instruction"):
        check_env(gym.make("vlabench/Pick-v0", **SB3_SIZE))  # why the wrappers exist
    env = InstructionEmbedding(gym.make("vlabench/Pick-v0", **SB3_SIZE), encoder="hash")
    check_env(env)
    check_env(DropInstruction(gym.make("vlabench/Pick-v0", **SB3_SIZE)))
    model = sb3.PPO("MultiInputPolicy", env, n_steps=8, batch_size=8, n_epochs=1, device="cpu", seed=0)
    model.learn(total_timesteps=16)
    assert model.num_timesteps == 16
    action, _ = model.predict(env.reset(seed=3)[0], deterministic=True)
    assert action.shape == (7,) and env.action_space.contains(action.astype(np.float32))
    env.close()
