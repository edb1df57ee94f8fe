"""``state-mlp``: the privileged-state control ceiling (an MLP on ``obs["privileged"]``)."""

from vlabench.models.registry import ModelSpec
from vlabench.models.state_mlp.model import StateMLP, StateMLPConfig
from vlabench.models.state_mlp.policy import StateMLPPolicy

SPEC = ModelSpec("state-mlp", StateMLPConfig, StateMLP, StateMLPPolicy)

__all__ = ["SPEC", "StateMLP", "StateMLPConfig", "StateMLPPolicy"]
