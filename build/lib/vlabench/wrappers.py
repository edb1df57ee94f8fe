"""Observation wrappers for libraries that cannot take a ``Text`` observation, such as Stable-Baselines3.

SB3's ``check_env`` and its policies accept only Box / Discrete / MultiDiscrete / MultiBinary (and Dict
of those) observations, so the env's ``instruction`` string stops them. Two ways out:

- ``InstructionEmbedding(env)`` swaps the string for its frozen sentence embedding, a
  ``Box(-1, 1, (dim,), float32)`` (all-MiniLM-L6-v2 by default, dim 384, L2-normalised; the same
  encoder the reference policies use). The instruction still conditions the policy.
- ``DropInstruction(env)`` removes it (a language-blind baseline).

::

    import gymnasium as gym
    import vlabench
    from stable_baselines3 import PPO
    from vlabench.wrappers import InstructionEmbedding

    env = InstructionEmbedding(gym.make("vlabench/Pick-v0", image_size=64, wrist_size=64))
    PPO("MultiInputPolicy", env).learn(10_000)

SB3's image extractor (NatureCNN) needs images of at least 36 x 36 pixels. The original string stays
available as ``info["instruction"]``.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

KEY = "instruction"


def _dict_space(env: gym.Env, key: str) -> dict[str, spaces.Space]:
    space = env.observation_space
    if not isinstance(space, spaces.Dict) or key not in space.spaces:
        keys = list(space.spaces) if isinstance(space, spaces.Dict) else type(space).__name__
        raise ValueError(f"the wrapped env's observations must be a Dict with the key {key!r}; it has: {keys}")
    return dict(space.spaces)


class InstructionEmbedding(gym.ObservationWrapper):
    """``obs["instruction"]`` (str) -> its sentence embedding, ``(dim,)`` float32 in [-1, 1].

    Args:
        env: an env whose observations are a Dict holding ``key``.
        encoder: ``None`` for the packaged MiniLM, a local sentence-transformers directory, or ``"hash"``
            (a deterministic test-only stand-in without semantics; see ``text_encoder``).
        device: where the encoder runs; the embedding is always returned as a numpy array.
        key: the observation key to replace.
    """

    def __init__(self, env: gym.Env, encoder: str | None = None, device: str = "cpu", key: str = KEY) -> None:
        super().__init__(env)
        obs_spaces = _dict_space(env, key)
        # Imported here: torch is only needed by whoever uses this wrapper, not by `import vlabench`.
        from vlabench.models.blocks.text_encoder import get_sentence_encoder

        self.encoder = get_sentence_encoder(encoder, device)
        self.key = key
        obs_spaces[key] = spaces.Box(-1.0, 1.0, (self.encoder.dim,), np.float32)
        self.observation_space = spaces.Dict(obs_spaces)

    def observation(self, observation: dict) -> dict:
        out = dict(observation)
        vec = self.encoder.embed([observation[self.key]])[0].detach().cpu().numpy().astype(np.float32)
        out[self.key] = np.clip(vec, -1.0, 1.0)  # unit vectors; the clip only absorbs float rounding
        return out


class DropInstruction(gym.ObservationWrapper):
    """Removes ``obs["instruction"]`` (or ``key``): a language-blind view of the env."""

    def __init__(self, env: gym.Env, key: str = KEY) -> None:
        super().__init__(env)
        obs_spaces = _dict_space(env, key)
        del obs_spaces[key]
        self.key = key
        self.observation_space = spaces.Dict(obs_spaces)

    def observation(self, observation: dict) -> dict:
        return {k: v for k, v in observation.items() if k != self.key}
