"""Policies as vlabench sees them: the built-in ones (``builtin``) and the boundary every other module
goes through to name, describe and build any policy (``spec.PolicySpec``).

Named ``agents`` so it cannot be mistaken for the top-level ``policies/`` folder, which holds training
recipes (TOML), not code.
"""

from vlabench.agents.builtin import BUILTIN_POLICIES, ExpertPolicy, NoopPolicy, RandomPolicy, ReplayPolicy
from vlabench.agents.spec import ENTRY_POINT_GROUP, PolicySpec

__all__ = ["BUILTIN_POLICIES", "ENTRY_POINT_GROUP", "ExpertPolicy", "NoopPolicy", "PolicySpec", "RandomPolicy",
           "ReplayPolicy"]
