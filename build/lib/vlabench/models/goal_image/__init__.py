"""``goal-diffusion``: a SuSIE / UniPi-style goal-image generator driving a goal-conditioned policy."""

from vlabench.models.goal_image.model import GoalImageConfig, GoalImageModel
from vlabench.models.goal_image.policy import GoalDiffusionPolicy
from vlabench.models.registry import ModelSpec

SPEC = ModelSpec("goal-diffusion", GoalImageConfig, GoalImageModel, GoalDiffusionPolicy)

__all__ = ["SPEC", "GoalDiffusionPolicy", "GoalImageConfig", "GoalImageModel"]
