"""Agents for textgym: pretrained causal LMs as Stable-Baselines3 policies, and TextPPO.

- :class:`LMActorCriticPolicy` (and :class:`MaskableLMActorCriticPolicy` for sb3-contrib's
  MaskablePPO): the stock path, any SB3 on-policy algorithm on a textgym env.
- :class:`TextPPO`: the fast path, sequence-level PPO with batched generation and a KL penalty.
"""

from agents.network import LMActorCritic
from agents.policies import LMActorCriticPolicy
from agents.ppo import TextPPO

__all__ = ["LMActorCritic", "LMActorCriticPolicy", "TextPPO"]

try:
    from agents.policies import MaskableLMActorCriticPolicy  # noqa: F401

    __all__.append("MaskableLMActorCriticPolicy")
except ImportError:  # sb3-contrib not installed
    pass
