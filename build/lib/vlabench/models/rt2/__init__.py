"""RT-2-style vision-language-action family: actions are text tokens of a vision-language model."""

from vlabench.models.registry import ModelSpec
from vlabench.models.rt2.model import PROMPT, RT2Config, RT2Model, VQASource, action_prompt, to_chw_uint8
from vlabench.models.rt2.policy import RT2Policy

SPEC = ModelSpec("rt2", RT2Config, RT2Model, RT2Policy)

__all__ = ["PROMPT", "SPEC", "RT2Config", "RT2Model", "RT2Policy", "VQASource", "action_prompt", "to_chw_uint8"]
