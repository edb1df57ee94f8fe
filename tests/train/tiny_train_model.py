"""A tiny model + synthetic demo dataset implementing the learned-model interface, for training-loop tests.

Registered in tests by pointing vlabench.models.registry.MODULES["tiny"] at this module.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from vlabench.models.registry import ModelSpec


@dataclass
class TinyConfig:
    hidden: int = 16
    """Hidden width."""
    horizon: int = 2
    """Predicted actions per sample."""
    n_obs: int = 1
    """Observation frames per sample."""
    dropout: float = 0.1
    """Dropout (draws from the torch RNG, so resume must restore it)."""
    noise: float = 0.01
    """Input noise std drawn in compute_loss (like diffusion noise)."""
    preset: str = "tiny"
    """Unused label, to test --model.preset overrides."""


class TinyModel(nn.Module):
    """state (B, n_obs, 8) + mean image colour -> actions (B, horizon, 7), normalized by dataset stats."""

    def __init__(self, cfg: TinyConfig, stats: dict) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("a_mean", torch.tensor(stats["action"]["mean"], dtype=torch.float32))
        self.register_buffer("a_std", torch.tensor(stats["action"]["std"], dtype=torch.float32).clamp_min(1e-3))
        self.register_buffer("n_loss_calls", torch.zeros((), dtype=torch.int64))
        self.inp = nn.Linear(8 + 3, cfg.hidden)
        self.mid = nn.Linear(cfg.hidden, cfg.hidden, bias=False)
        self.mid_tied = nn.Linear(cfg.hidden, cfg.hidden, bias=False)
        self.mid_tied.weight = self.mid.weight  # shared storage: safetensors must cope
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.hidden, cfg.horizon * 7)

    def features(self, image: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """image (B, 3, H, W) uint8, state (B, 8) -> (B, 11)."""
        return torch.cat([state, image.float().mean(dim=(2, 3)) / 255.0], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.inp(x))
        h = self.drop(torch.relu(self.mid(h)) + 0.1 * self.mid_tied(h))
        return self.out(h).view(-1, self.cfg.horizon, 7)

    def compute_loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        delay = float(os.environ.get("VLABENCH_TEST_STEP_SLEEP", "0"))
        if delay:
            time.sleep(delay)  # lets a test kill a subprocess mid-run
        self.n_loss_calls += 1
        x = self.features(batch["image"][:, -1], batch["state"][:, -1])
        x = x + self.cfg.noise * torch.randn_like(x)
        pred = self(x)
        target = (batch["action"] - self.a_mean) / self.a_std
        mask = (~batch["action_is_pad"]).float()[..., None]
        loss = (((pred - target) ** 2) * mask).sum() / (mask.sum() * 7).clamp_min(1.0)
        return loss, {"loss": float(loss.detach()), "mse": float(loss.detach()), "pad_frac": float(1 - mask.mean())}

    def data_spec(self) -> dict:
        return {"n_obs": self.cfg.n_obs, "horizon": self.cfg.horizon, "goal_offset": None}

    @torch.no_grad()
    def predict(self, image: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """image (B, 3, H, W) uint8, state (B, 8) -> env actions (B, 7) of the first step."""
        return (self(self.features(image, state)) * self.a_std + self.a_mean)[:, 0]


class TinyPolicy:
    def __init__(self, model: TinyModel, device) -> None:
        self.model, self.device = model, torch.device(device)

    def reset(self, n_envs: int) -> None:
        pass

    def act(self, obs: dict) -> np.ndarray:
        img = torch.as_tensor(obs["image"]).permute(0, 3, 1, 2).to(self.device)
        state = torch.as_tensor(obs["state"]).to(self.device)
        return self.model.predict(img, state).clamp(-1, 1).cpu().numpy().astype(np.float32)


SPEC = ModelSpec("tiny", TinyConfig, TinyModel, TinyPolicy)


# ---------------------------------------------------------------- synthetic demos

_W = np.random.default_rng(123).normal(0, 0.3, size=(8, 7)).astype(np.float32)


def _episode(ep: int, T: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1000 + ep)
    state = rng.normal(0, 1, size=(T, 8)).astype(np.float32)
    action = np.clip(state @ _W + 0.05 * rng.normal(size=(T, 7)), -1, 1).astype(np.float32)
    image = rng.integers(0, 255, size=(T, 3, 8, 8), dtype=np.uint8)
    return state, action, image


def write_synthetic_data(root: Path, n_episodes: int = 8, T: int = 12) -> Path:
    """A directory the patched make_dataset reads: synthetic.json, stats.json, manifest.json."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "synthetic.json").write_text(json.dumps({"n_episodes": n_episodes, "T": T}))
    eps = [_episode(e, T) for e in range(n_episodes)]
    stats = {}
    for key, arr in (("state", np.concatenate([e[0] for e in eps])), ("action", np.concatenate([e[1] for e in eps]))):
        stats[key] = {"min": arr.min(0).tolist(), "max": arr.max(0).tolist(), "mean": arr.mean(0).tolist(),
                      "std": arr.std(0).tolist(), "q01": np.quantile(arr, 0.01, axis=0).tolist(),
                      "q99": np.quantile(arr, 0.99, axis=0).tolist()}
    (root / "stats.json").write_text(json.dumps(stats))
    (root / "manifest.json").write_text(json.dumps({"hash": f"synthetic-{n_episodes}x{T}"}))
    return root


def read_synthetic_meta(root: Path) -> tuple[dict, str]:
    """Stand-in for vlabench.train.loop.read_dataset_meta on a synthetic directory."""
    root = Path(root)
    return json.loads((root / "stats.json").read_text()), json.loads((root / "manifest.json").read_text())["hash"]


class SyntheticDemos(Dataset):
    """Same sample layout as vlabench.data.dataset.DemoDataset, with random 'augmentation' on the state."""

    def __init__(self, root, n_obs: int, horizon: int, goal_offset=None) -> None:
        meta = json.loads((Path(root) / "synthetic.json").read_text())
        self.n_obs, self.horizon, self.T = n_obs, horizon, meta["T"]
        self.eps = [_episode(e, self.T) for e in range(meta["n_episodes"])]
        self.episode_index = np.repeat(np.arange(meta["n_episodes"]), self.T)

    def __len__(self) -> int:
        return len(self.episode_index)

    def __getitem__(self, i: int) -> dict:
        ep, t = divmod(int(i), self.T)
        state, action, image = self.eps[ep]
        obs_t = np.clip(np.arange(t - self.n_obs + 1, t + 1), 0, None)
        act_t = np.arange(t, t + self.horizon)
        pad = act_t >= self.T
        act_t = np.minimum(act_t, self.T - 1)
        s = torch.from_numpy(state[obs_t].copy())
        s = s + 0.01 * torch.randn_like(s)  # dataset-side randomness: must be seeded per sample
        return {"image": torch.from_numpy(image[obs_t]), "wrist_image": torch.from_numpy(image[obs_t]),
                "state": s, "action": torch.from_numpy(action[act_t]), "action_is_pad": torch.from_numpy(pad),
                "instruction": "do the thing", "task": "synthetic"}
