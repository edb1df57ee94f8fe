"""RT-1-style policy family: FiLM-EfficientNet + TokenLearner + Transformer, 256-bin action tokens."""

from vlabench.models.registry import ModelSpec
from vlabench.models.rt1.model import RT1Config, RT1Model, block_causal_mask, sincos_2d
from vlabench.models.rt1.policy import RT1Policy

SPEC = ModelSpec("rt1", RT1Config, RT1Model, RT1Policy)

__all__ = ["SPEC", "RT1Config", "RT1Model", "RT1Policy", "block_causal_mask", "sincos_2d"]
