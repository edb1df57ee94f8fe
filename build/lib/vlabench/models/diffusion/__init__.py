"""Language-conditioned Diffusion Policy baseline (Chi et al. 2023, CNN/U-Net variant)."""

from vlabench.models.diffusion.model import DiffusionConfig, DiffusionModel
from vlabench.models.diffusion.policy import DiffusionPolicy
from vlabench.models.registry import ModelSpec

SPEC = ModelSpec("diffusion", DiffusionConfig, DiffusionModel, DiffusionPolicy)

__all__ = ["SPEC", "DiffusionConfig", "DiffusionModel", "DiffusionPolicy"]
