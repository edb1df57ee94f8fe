"""Scripted oracles, one per task family. ``make_expert(env)`` builds the right one for the env's task."""

from __future__ import annotations

import numpy as np

from vlabench.experts.grasping import PickExpert, PlaceExpert, StackExpert
from vlabench.experts.placing import NextToExpert, PadExpert, RegraspPickExpert
from vlabench.experts.pushing import PushExpert

EXPERTS = {"pick": PickExpert, "place": PlaceExpert, "stack": StackExpert, "push": PushExpert,
           "next_to": NextToExpert, "pad": PadExpert, "math": PadExpert,
           # The reasoning families only change which object is the target; grasping it is a pick.
           "relational": RegraspPickExpert, "category": RegraspPickExpert}


def make_expert(env, noise: float = 0.0, rng: np.random.Generator | None = None):
    """A fresh expert for the env's current episode."""
    name = env.task.name
    if name not in EXPERTS:
        raise ValueError(f"no expert for task {name!r}; experts exist for: {', '.join(EXPERTS)}")
    return EXPERTS[name](env, noise=noise, rng=rng)
