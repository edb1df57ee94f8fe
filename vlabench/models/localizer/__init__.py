"""``localizer``: a from-scratch CNN estimates the privileged state from the front frame; a frozen state-MLP acts on it."""

from vlabench.models.localizer.model import LocalizerConfig, LocalizerModel
from vlabench.models.localizer.policy import LocalizerPolicy
from vlabench.models.registry import ModelSpec

SPEC = ModelSpec("localizer", LocalizerConfig, LocalizerModel, LocalizerPolicy)

__all__ = ["SPEC", "LocalizerConfig", "LocalizerModel", "LocalizerPolicy"]
