"""Stable-Baselines3 policies whose network is a pretrained causal LM (the stock path).

``PPO(LMActorCriticPolicy, env, policy_kwargs={"model": "tiny"})`` and ``A2C`` use
:class:`LMActorCriticPolicy`; ``sb3_contrib.MaskablePPO`` needs its policy to subclass
``MaskableActorCriticPolicy`` and uses :class:`MaskableLMActorCriticPolicy`. Both delegate every
computation to one :class:`textgym.agents.network.LMActorCritic`.
"""

from __future__ import annotations

from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.distributions import CategoricalDistribution, Distribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import Schedule

from textgym.models.incremental import observation_rows, trim_padding
from textgym.models.sampling import sample_tokens

from .network import LMActorCritic, LMPolicyConfig

try:  # sb3-contrib is optional: only MaskablePPO needs it
    from sb3_contrib.common.maskable.distributions import MaskableCategoricalDistribution
    from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
except ImportError:  # pragma: no cover - exercised only without sb3-contrib
    MaskableActorCriticPolicy = MaskableCategoricalDistribution = None

# Arguments of SB3's ActorCriticPolicy that keep their meaning with an LM as the network.
PASSED_THROUGH = ("optimizer_class", "optimizer_kwargs", "normalize_images")


def lm_policy_config(
    observation_space: spaces.Space, action_space: spaces.Space, ortho_init: bool, kwargs: dict[str, Any]
) -> LMPolicyConfig:
    """Check the spaces and policy_kwargs a textgym env and user give: the network's config,
    built from the :class:`LMPolicyConfig` fields it takes out of ``kwargs``, which keeps SB3's
    own arguments (``PASSED_THROUGH``)."""
    if not isinstance(action_space, spaces.Discrete):
        raise TypeError(f"an LM policy needs a Discrete action space (token ids), got {action_space}")
    if not (
        isinstance(observation_space, spaces.Dict)
        and {"input_ids", "attention_mask"} <= set(observation_space.spaces)
    ):
        raise TypeError(
            "an LM policy needs a Dict observation space with 'input_ids' and 'attention_mask' "
            f"(a textgym env), got {observation_space}"
        )
    fields = LMPolicyConfig.field_names()
    config = LMPolicyConfig(**{name: kwargs.pop(name) for name in fields if name in kwargs})
    if ortho_init:
        raise ValueError(
            "ortho_init=True would re-initialise the pretrained LM: LM policies need ortho_init=False"
        )
    if kwargs.get("optimizer_class", torch.optim.Adam) is torch.optim.Adam and not kwargs.get(
        "optimizer_kwargs"
    ):
        # SB3's Adam eps, and the fused kernel: one pass over 135M parameters instead of many.
        kwargs["optimizer_kwargs"] = {"eps": 1e-5, "fused": True}
    unknown = sorted(set(kwargs) - set(PASSED_THROUGH))
    if unknown:
        raise TypeError(f"unknown LM policy argument(s) {unknown}; accepted: {[*fields, *PASSED_THROUGH]}")
    return config


class TokenDistribution(CategoricalDistribution):
    """SB3's categorical distribution over token ids, sampled by :func:`sample_tokens` (the same
    distribution as ``torch.multinomial``, at a thirtieth of its cost over a 49,152-id vocabulary)."""

    def sample(self) -> torch.Tensor:
        return sample_tokens(self.distribution.logits)

    def mode(self) -> torch.Tensor:
        return torch.argmax(self.distribution.logits, dim=1)


if MaskableCategoricalDistribution is not None:

    class MaskableTokenDistribution(MaskableCategoricalDistribution):
        """sb3-contrib's masked categorical distribution, sampled by :func:`sample_tokens` like
        :class:`TokenDistribution` (masked ids carry a logit of -1e8: probability exactly 0)."""

        sample = TokenDistribution.sample
        mode = TokenDistribution.mode


def set_training_mode(policy: ActorCriticPolicy, mode: bool) -> None:
    """SB3's mode switch (train before an update, eval before acting); entering training also
    frees the network's KV caches and packed weights, which the update makes stale, so that
    they do not add to the update's peak memory."""
    if mode:
        policy.net.release()
    policy.train(mode)


def observation_batch(obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """SB3's observation tensors (float in rollout buffers) -> int64 (B, T) ids and mask,
    without the columns that are padding in every row."""
    return trim_padding(obs["input_ids"].long(), obs["attention_mask"].long())


def logits_and_values(net: LMActorCritic, obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, V) processed logits and (B, 1) values: cached stepping without grad, one pass with it."""
    if torch.is_grad_enabled():
        logits, values = net.last(*observation_batch(obs))
    else:
        logits, values = net.step(observation_rows(obs))
    return logits, values.unsqueeze(-1)


class LMActorCriticPolicy(ActorCriticPolicy):
    """An SB3 actor-critic policy whose actor is a pretrained causal LM.

    Action logits are the LM's at the last position; the value is a linear head on the last
    hidden state (shared trunk) or on a second trunk (``separate_critic=True``).

    :param observation_space, action_space, lr_schedule: as in SB3 (a textgym env's spaces).
    :param ortho_init: must stay False: SB3's orthogonal initialisation would overwrite the
        pretrained weights.
    :param use_sde: must stay False (gSDE is for continuous actions).
    :param kwargs: the policy_kwargs: the fields of :class:`LMPolicyConfig` (``model``,
        ``temperature``, ``top_k``, ``top_p``, ``lora``, ``separate_critic``, ``dtype``,
        ``kv_cache``, ``packed_linears``) and SB3's ``optimizer_class``, ``optimizer_kwargs`` and
        ``normalize_images``.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        ortho_init: bool = False,
        use_sde: bool = False,
        **kwargs: Any,
    ):
        if use_sde:
            raise ValueError("use_sde=True is for continuous actions; LM policies act on token ids")
        self.config = lm_policy_config(observation_space, action_space, ortho_init, kwargs)
        super().__init__(
            observation_space, action_space, lr_schedule, net_arch=[], ortho_init=False, **kwargs
        )

    def _build(self, lr_schedule: Schedule) -> None:
        self.net = LMActorCritic(self.config, int(self.action_space.n))
        if isinstance(self.action_dist, CategoricalDistribution):
            self.action_dist = TokenDistribution(int(self.action_space.n))
        elif MaskableCategoricalDistribution is not None and isinstance(
            self.action_dist, MaskableCategoricalDistribution
        ):
            self.action_dist = MaskableTokenDistribution(int(self.action_space.n))
        trainable = [p for p in self.parameters() if p.requires_grad]
        self.optimizer = self.optimizer_class(trainable, lr=lr_schedule(1), **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {
            "observation_space": self.observation_space,
            "action_space": self.action_space,
            "lr_schedule": self._dummy_schedule,
            "normalize_images": self.normalize_images,
            "optimizer_class": self.optimizer_class,
            "optimizer_kwargs": self.optimizer_kwargs,
            **self.config.kwargs(),
        }

    set_training_mode = set_training_mode

    def forward(self, obs: dict[str, torch.Tensor], deterministic: bool = False):
        logits, values = logits_and_values(self.net, obs)
        distribution = self.action_dist.proba_distribution(action_logits=logits)
        actions = distribution.get_actions(deterministic=deterministic)
        return actions, values, distribution.log_prob(actions)

    def evaluate_actions(self, obs: dict[str, torch.Tensor], actions: torch.Tensor):
        logits, values = logits_and_values(self.net, obs)
        distribution = self.action_dist.proba_distribution(action_logits=logits)
        return values, distribution.log_prob(actions), distribution.entropy()

    def get_distribution(self, obs: dict[str, torch.Tensor]) -> Distribution:
        return self.action_dist.proba_distribution(action_logits=logits_and_values(self.net, obs)[0])

    def predict_values(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return logits_and_values(self.net, obs)[1]


if MaskableActorCriticPolicy is not None:

    class MaskableLMActorCriticPolicy(MaskableActorCriticPolicy):
        """:class:`LMActorCriticPolicy` for ``sb3_contrib.MaskablePPO`` (same arguments): the
        env's ``action_masks()`` further restrict the LM's distribution."""

        def __init__(
            self,
            observation_space: spaces.Space,
            action_space: spaces.Space,
            lr_schedule: Schedule,
            ortho_init: bool = False,
            **kwargs: Any,
        ):
            self.config = lm_policy_config(observation_space, action_space, ortho_init, kwargs)
            super().__init__(
                observation_space, action_space, lr_schedule, net_arch=[], ortho_init=False, **kwargs
            )

        _build = LMActorCriticPolicy._build
        _get_constructor_parameters = LMActorCriticPolicy._get_constructor_parameters
        set_training_mode = set_training_mode

        def _distribution(self, logits: torch.Tensor, action_masks: Any):
            distribution = self.action_dist.proba_distribution(action_logits=logits)
            if action_masks is not None:
                distribution.apply_masking(action_masks)
            return distribution

        def forward(
            self, obs: dict[str, torch.Tensor], deterministic: bool = False, action_masks: Any = None
        ):
            logits, values = logits_and_values(self.net, obs)
            distribution = self._distribution(logits, action_masks)
            actions = distribution.get_actions(deterministic=deterministic)
            return actions, values, distribution.log_prob(actions)

        def evaluate_actions(
            self, obs: dict[str, torch.Tensor], actions: torch.Tensor, action_masks: Any = None
        ):
            logits, values = logits_and_values(self.net, obs)
            distribution = self._distribution(logits, action_masks)
            return values, distribution.log_prob(actions), distribution.entropy()

        def get_distribution(self, obs: dict[str, torch.Tensor], action_masks: Any = None):
            return self._distribution(logits_and_values(self.net, obs)[0], action_masks)

        def predict_values(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
            return logits_and_values(self.net, obs)[1]
