"""The value-based family on the stock path: SB3's own ``DQN`` with :class:`LMQPolicy`, a
pretrained causal LM as its Q-network."""

from textgym.agents.dqn.policy import LMQPolicy

__all__ = ["LMQPolicy"]
