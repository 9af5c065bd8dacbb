"""Agents for textgym: pretrained causal LMs as Stable-Baselines3 policies, and fast algorithms
of our own for whole texts.

The library, by layer (each imports only the layers above it):

- :mod:`textgym.agents.common`: the shared machinery. :class:`LMActorCritic` and
  :class:`LMPolicyConfig` (the network and its ``policy_kwargs``), :class:`LMActorCriticPolicy`
  (and :class:`MaskableLMActorCriticPolicy` for sb3-contrib's MaskablePPO) for any SB3 on-policy
  algorithm, :class:`EpisodeRolloutBuffer` (one forward pass per episode in updates),
  :class:`TokenRolloutBuffer`, the batched rollout and sampler, ``torch.distributed`` helpers.
- The algorithm families: :mod:`textgym.agents.textppo` (:class:`TextPPO`, and :class:`GRPO`,
  :class:`RLOO`, :class:`REINFORCE` on its machinery), :mod:`textgym.agents.softq`
  (:class:`SoftQ`, :class:`TextReplayBuffer`), :mod:`textgym.agents.dqn` (:class:`LMQPolicy`
  for SB3's DQN).

The application:

- :mod:`textgym.agents.runs`: one training run (:class:`TrainConfig`, :func:`train`, the
  ``textgym train`` command), checkpoints, :func:`evaluate`, :func:`export_model`, the
  hyperparameter registry (``agents/hyperparams/<algo>.yml``).
- :mod:`textgym.agents.leaderboard`: every env x agent x seed, recorded and rendered.
"""

import sys

from textgym.agents.common import buffers as _buffers
from textgym.agents.common import policies as _policies
from textgym.agents.common.buffers import EpisodeRolloutBuffer, TokenRolloutBuffer
from textgym.agents.common.network import LMActorCritic, LMPolicyConfig
from textgym.agents.common.policies import LMActorCriticPolicy
from textgym.agents.dqn import policy as _qpolicy
from textgym.agents.dqn.policy import LMQPolicy
from textgym.agents.runs.config import TrainConfig
from textgym.agents.runs.evaluation import Evaluation, evaluate
from textgym.agents.runs.export import export_model
from textgym.agents.runs.training import train
from textgym.agents.softq import SoftQ, TextReplayBuffer
from textgym.agents.textppo import GRPO, REINFORCE, RLOO, TextPPO

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
    from textgym.agents.common.buffers import MaskableEpisodeRolloutBuffer  # noqa: F401
    from textgym.agents.common.policies import MaskableLMActorCriticPolicy  # noqa: F401

    __all__ += ["MaskableEpisodeRolloutBuffer", "MaskableLMActorCriticPolicy"]
except ImportError:  # sb3-contrib not installed
    pass

# Agents saved before the layers existed (textgym 0.1, a flat agents/ folder) pickled their
# policy and buffer classes under these module names; SB3's ``load`` imports them by name.
# (``textgym.agents.softq`` kept its name: it is now a package that exports the same classes.)
LEGACY_MODULES = {"policies": _policies, "buffers": _buffers, "qpolicy": _qpolicy}
for _name, _module in LEGACY_MODULES.items():
    sys.modules.setdefault(f"{__name__}.{_name}", _module)
