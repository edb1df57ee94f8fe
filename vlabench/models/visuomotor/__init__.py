"""``visuomotor``: feature points (spatial softmax) on frozen cached Lite0 maps + an MLP controller."""

from vlabench.models.registry import ModelSpec
from vlabench.models.visuomotor.model import VisuomotorConfig, VisuomotorModel
from vlabench.models.visuomotor.policy import VisuomotorPolicy

SPEC = ModelSpec("visuomotor", VisuomotorConfig, VisuomotorModel, VisuomotorPolicy)

__all__ = ["SPEC", "VisuomotorConfig", "VisuomotorModel", "VisuomotorPolicy"]
