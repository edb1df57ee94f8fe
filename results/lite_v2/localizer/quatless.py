"""Diagnostic policy: a state-MLP checkpoint with the target's orientation replaced by the identity quaternion.

    PYTHONPATH=results/lite_v2/localizer vlabench eval --suite envs/emergent_seen.toml --policy quatless:QuatlessMLP \
        --policy-option checkpoint=RUN_MLP --workers 1 --envs-per-worker 8
"""
import numpy as np
from vlabench.models.checkpoint import load_policy
from vlabench.contracts import privileged_slice


class QuatlessMLP:
    obs_keys = ("privileged",)

    def __init__(self, checkpoint: str = "runs/state_mlp"):
        self.inner = load_policy(checkpoint, "cpu")

    def reset(self, n_envs):
        self.inner.reset(n_envs)

    def act(self, obs_batch):
        priv = np.array(obs_batch["privileged"], np.float32)
        priv[:, privileged_slice("target_quat")] = [0, 0, 0, 1]
        return self.inner.act({**obs_batch, "privileged": priv})
