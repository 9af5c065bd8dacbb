"""Agents for textgym: pretrained causal LMs as Stable-Baselines3 policies, and TextPPO.

- :class:`LMActorCriticPolicy` (and :class:`MaskableLMActorCriticPolicy` for sb3-contrib's
  MaskablePPO): the stock path, any SB3 on-policy algorithm on a textgym env, with
  :class:`EpisodeRolloutBuffer` (:class:`MaskableEpisodeRolloutBuffer`) as its
  ``rollout_buffer_class`` for one forward pass per episode in updates.
- :class:`LMPolicyConfig`: the LM policies' ``policy_kwargs`` (model, sampling knobs, LoRA, ...).
- :class:`TextPPO`: the fast path, sequence-level PPO with batched generation and a KL penalty,
  and its :class:`TokenRolloutBuffer` of whole episodes; :class:`GRPO`, :class:`RLOO` (group
  baselines over several texts per prompt) and :class:`REINFORCE` are named configurations of it.
- :class:`LMQPolicy`: the LM as the Q-network of SB3's ``DQN`` (the stock value-based path);
  :class:`SoftQ`: the fast one, sequence-level soft Q-learning on replayed whole texts.
- :func:`evaluate`: a policy or checkpoint on fixed prompts (reward, task metrics, fluency,
  diversity, KL); :func:`train`: one budgeted, checkpointed run (``textgym train``);
  :func:`export_model`: a trained policy as a transformers model directory (``textgym export``).
"""

from .buffers import EpisodeRolloutBuffer, TokenRolloutBuffer
from .evaluation import Evaluation, evaluate
from .export import export_model
from .network import LMActorCritic, LMPolicyConfig
from .policies import LMActorCriticPolicy
from .ppo import GRPO, REINFORCE, RLOO, TextPPO
from .qpolicy import LMQPolicy
from .softq import SoftQ, TextReplayBuffer
from .training import TrainConfig, train

__all__ = [
    "GRPO",
    "REINFORCE",
    "RLOO",
    "EpisodeRolloutBuffer",
    "Evaluation",
    "LMActorCritic",
    "LMActorCriticPolicy",
    "LMPolicyConfig",
    "LMQPolicy",
    "SoftQ",
    "TextPPO",
    "TextReplayBuffer",
    "TokenRolloutBuffer",
    "TrainConfig",
    "evaluate",
    "export_model",
    "train",
]

try:
    from .buffers import MaskableEpisodeRolloutBuffer  # noqa: F401
    from .policies import MaskableLMActorCriticPolicy  # noqa: F401

    __all__ += ["MaskableEpisodeRolloutBuffer", "MaskableLMActorCriticPolicy"]
except ImportError:  # sb3-contrib not installed
    pass
