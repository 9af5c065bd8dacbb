"""The policy-gradient and actor-critic family on the fast path: :class:`TextPPO` (sequence-level
PPO with a KL penalty and a value head) and, on its machinery, :class:`GRPO`, :class:`RLOO`
(group baselines over several texts per prompt) and :class:`REINFORCE`."""

from textgym.agents.textppo.group import GRPO, REINFORCE, RLOO
from textgym.agents.textppo.textppo import TextPPO

__all__ = ["GRPO", "REINFORCE", "RLOO", "TextPPO"]
