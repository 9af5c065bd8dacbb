"""Stable-Baselines3's DQN with a pretrained causal LM as its Q-network (the stock value-based path).

``DQN(LMQPolicy, env, policy_kwargs={"model": "tiny", "q_scale": 0.05})``: Q-values over the
vocabulary come from the LM at the last position, SB3 keeps its own replay buffer, target network
and update. Soft Q-learning for text (Guo et al. 2021) reads an LM's logits as Q-values; logits
have an arbitrary offset per state (softmax ignores it), so here the offset is a learned state
value ``V(s)`` (the network's value head, which starts at 0):

    Q(s, a) = q_scale * log pi(a | s) + V(s)

where ``pi`` is the LM's distribution at the policy's temperature over the whole vocabulary (ids
the tokenizer cannot decode masked). So ``softmax(Q / q_scale)`` is the LM's own distribution: a
pretrained LM is already a sensible initial Q-function, acting samples from that softmax (with
the policy's top-k/top-p, which only shape sampling: a replayed token outside today's top-k keeps
a finite Q; epsilon-greedy over 49k ids would only write noise, so DQN's ``exploration_*`` should
be 0) and the greedy action is the LM's most likely token. Evaluations and exports read the same
LM. The rewards must pay ``q_scale * log pi_ref(a|s)`` (``VecKLRewardWrapper`` with ``coef`` =
``q_scale``, as ``textgym train`` does with the registry's ``kl_coef``): then, with no task
reward, the reference's policy is the fixed point of the Bellman update; without it, all
actions' targets are equal and the update flattens the LM towards a uniform distribution.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.type_aliases import Schedule
from stable_baselines3.dqn.policies import DQNPolicy
from torch import nn

from textgym.agents.common.network import LMActorCritic, LMPolicyConfig
from textgym.agents.common.policies import LMActorCriticPolicy, forward, lm_policy_config, logits_and_values
from textgym.models.sampling import sample_tokens

Q_KEYS = ("q_scale", "double_q")  # LMQPolicy's arguments besides LMPolicyConfig's


class LMQNetwork(nn.Module):
    """Q(s, .) over the vocabulary from an :class:`LMActorCritic` (SB3's ``QNetwork`` contract:
    ``forward(obs) -> (B, V)`` and ``_predict(obs, deterministic) -> (B,)`` actions).

    With ``online`` set (:class:`LMQPolicy`'s ``double_q``), this network is a target network
    that gives Double Q-learning's targets (van Hasselt et al. 2016) through SB3's DQN update,
    which takes the max of the target's Q-values: each row's only finite value is this network's
    Q at the online network's greedy action."""

    def __init__(self, config: LMPolicyConfig, action_dim: int, q_scale: float):
        super().__init__()
        self.net = LMActorCritic(config, action_dim)
        self.q_scale = q_scale
        self.online: LMQNetwork | None = None  # set with object.__setattr__: not a submodule

    def q_values(self, raw: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """(B, V) raw logits and (B, 1) values -> (B, V) Q-values; masked ids get a large
        negative finite value (probability 0, never the max, no NaN in gradients)."""
        return self.q_scale * torch.log_softmax(self.net.kl_logits(raw).clamp(min=-1e9), dim=-1) + values

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        q = self.q_values(*forward(self.net, obs, raw=True)[:2])
        if self.online is not None:
            with torch.no_grad():
                best = self.online(obs).argmax(dim=1, keepdim=True)  # (B, 1)
            q = torch.full_like(q, -math.inf).scatter(1, best, q.gather(1, best))
        return q

    def _predict(self, obs: dict[str, torch.Tensor], deterministic: bool = True) -> torch.Tensor:
        logits, _ = logits_and_values(self.net, obs)  # V(s) does not change which action is best
        return logits.argmax(dim=1) if deterministic else sample_tokens(logits)  # softmax(Q / q_scale)

    def set_training_mode(self, mode: bool) -> None:
        if mode:
            self.net.release()  # the update makes the KV cache and packed weights stale
        self.train(mode)


class LMQPolicy(DQNPolicy):
    """An SB3 DQN policy whose Q-network (and target network) is a pretrained causal LM.

    :param observation_space, action_space, lr_schedule: as in SB3 (a textgym env's spaces).
    :param q_scale: Q = q_scale * log pi(a|s) + V(s) (> 0): the scale of the LM's
        log-probabilities against the rewards; acting samples softmax(Q / q_scale).
    :param double_q: Double Q-learning targets (the online network chooses the next action, the
        target network values it) in SB3's DQN update.
    :param kwargs: the fields of :class:`LMPolicyConfig` (``model``, ``temperature``, ``top_k``,
        ``top_p``, ``lora``, ``dtype``, ``kv_cache``, ``packed_linears``, ...) and SB3's
        ``optimizer_class``, ``optimizer_kwargs`` and ``normalize_images``.
    """

    q_net: LMQNetwork
    q_net_target: LMQNetwork

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        q_scale: float = 0.05,
        double_q: bool = False,
        **kwargs: Any,
    ):
        if isinstance(q_scale, bool) or not isinstance(q_scale, (int, float)) or not 0 < q_scale < math.inf:
            raise ValueError(f"q_scale must be a positive number, got {q_scale!r}")
        if not isinstance(double_q, bool):
            raise TypeError(f"double_q must be True or False, got {double_q!r}")
        self.config = lm_policy_config(observation_space, action_space, False, kwargs)
        self.q_scale, self.double_q = float(q_scale), double_q
        super().__init__(observation_space, action_space, lr_schedule, net_arch=[], **kwargs)

    def make_q_net(self) -> LMQNetwork:
        return LMQNetwork(self.config, int(self.action_space.n), self.q_scale).to(self.device)

    def _build(self, lr_schedule: Schedule) -> None:
        self.q_net = self.make_q_net()
        self.q_net_target = self.make_q_net()
        self.q_net_target.load_state_dict(self.q_net.state_dict())
        self.q_net_target.set_training_mode(False)
        if self.double_q:
            object.__setattr__(self.q_net_target, "online", self.q_net)
        trainable = [p for p in self.q_net.parameters() if p.requires_grad]  # with LoRA: the adapters
        self.optimizer = self.optimizer_class(trainable, lr=lr_schedule(1), **self.optimizer_kwargs)

    @property
    def net(self) -> LMActorCritic:
        """The online Q-network's LM (what evaluations and exports read)."""
        return self.q_net.net

    def _get_constructor_parameters(self) -> dict[str, Any]:
        # The LM policy's (spaces, optimizer, LMPolicyConfig fields), and this policy's own.
        own = {"q_scale": self.q_scale, "double_q": self.double_q}
        return {**LMActorCriticPolicy._get_constructor_parameters(self), **own}
