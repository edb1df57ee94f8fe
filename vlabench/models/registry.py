"""Name -> model family lookup. Families are imported lazily so that using one never pays for another.

A family is a package under ``vlabench.models`` whose ``__init__`` defines ``SPEC``: its config
dataclass, its ``nn.Module`` (built as ``model_cls(cfg, stats)``, with ``compute_loss(batch)`` and
``data_spec()`` for the training loop) and its Policy class (built as ``policy_cls(model, device,
**inference_options)``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

MODULES = {
    "rt1": "vlabench.models.rt1",
    "diffusion": "vlabench.models.diffusion",
    "rt2": "vlabench.models.rt2",
    "goal-diffusion": "vlabench.models.goal_image",
    "state-mlp": "vlabench.models.state_mlp",
    "visuomotor": "vlabench.models.visuomotor",
    "localizer": "vlabench.models.localizer",
}


@dataclass(frozen=True)
class ModelSpec:
    """What the training loop and the checkpoint loader need to know about a model family."""

    name: str
    config_cls: type
    model_cls: type
    policy_cls: type


def get_spec(name: str) -> ModelSpec:
    """The ModelSpec registered under ``name``; raises ValueError listing the known names."""
    if name not in MODULES:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(MODULES))}")
    return importlib.import_module(MODULES[name]).SPEC
