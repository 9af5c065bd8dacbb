"""The value-based family on the fast path: :class:`SoftQ`, sequence-level soft Q-learning
(Guo et al. 2021) on replayed whole texts, and its :class:`TextReplayBuffer`."""

from textgym.agents.softq.softq import SoftQ, TextReplayBuffer

__all__ = ["SoftQ", "TextReplayBuffer"]
