"""Agents for textgym: pretrained causal LMs as Stable-Baselines3 policies, and TextPPO.

- :class:`LMActorCriticPolicy` (and :class:`MaskableLMActorCriticPolicy` for sb3-contrib's
  MaskablePPO): the stock path, any SB3 on-policy algorithm on a textgym env.
- :class:`TextPPO`: the fast path, sequence-level PPO with batched generation and a KL penalty.
- :func:`evaluate`: a policy or checkpoint on fixed prompts (reward, task metrics, fluency,
  diversity, KL); :func:`train`: one budgeted, checkpointed run (``textgym train``).
"""

from agents.evaluation import Evaluation, evaluate
from agents.network import LMActorCritic
from agents.policies import LMActorCriticPolicy
from agents.ppo import TextPPO
from agents.training import TrainConfig, train

__all__ = [
    "Evaluation",
    "LMActorCritic",
    "LMActorCriticPolicy",
    "TextPPO",
    "TrainConfig",
    "evaluate",
    "train",
]

try:
    from agents.policies import MaskableLMActorCriticPolicy  # noqa: F401

    __all__.append("MaskableLMActorCriticPolicy")
except ImportError:  # sb3-contrib not installed
    pass
