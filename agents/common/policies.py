"""Stable-Baselines3 policies whose network is a pretrained causal LM (the stock path).

``PPO(LMActorCriticPolicy, env, policy_kwargs={"model": "tiny"})`` and ``A2C`` use
:class:`LMActorCriticPolicy`; ``sb3_contrib.MaskablePPO`` needs its policy to subclass
``MaskableActorCriticPolicy`` and uses :class:`MaskableLMActorCriticPolicy`. Both delegate every
computation to one :class:`textgym.agents.common.network.LMActorCritic`.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.distributions import CategoricalDistribution, Distribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import Schedule

from textgym.agents.common.buffers import EpisodeObservations
from textgym.agents.common.network import LMActorCritic, LMPolicyConfig
from textgym.models.incremental import left_pad, observation_rows, prefix_groups
from textgym.models.sampling import sample_tokens

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


def prefix_batch(net: LMActorCritic, rows: list[np.ndarray]) -> tuple[torch.Tensor, ...]:
    """One left-padded row per group of observations that are prefixes of one another (in a
    minibatch of whole episodes: one row per episode, its real tokens only), and where each
    observation's last token sits in it: ``(ids, mask, rows, columns)``."""
    roots, owner = prefix_groups(rows)
    device = net.invalid.device
    ids, mask = left_pad([rows[root] for root in roots], net.pad_id, device)
    # A root of length n sits in columns T-n..T-1; its prefix of length m ends at column T-n+m-1.
    root_lengths = np.array([len(rows[root]) for root in roots])
    columns = ids.shape[1] - root_lengths[owner] + np.array([len(row) for row in rows]) - 1
    return ids, mask, torch.as_tensor(owner, device=device), torch.as_tensor(columns, device=device)


def forward(
    net: LMActorCritic, obs: dict[str, torch.Tensor], reference: bool = False, raw: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(B, V) processed logits (``raw``: the LM head's), (B, 1) values and, with ``reference``,
    the reference model's logits at the same observations (else None). Cached stepping without
    grad (acting); one pass per episode (:func:`prefix_batch`) with grad (updates) or when the
    reference is wanted."""
    rows = observation_rows(obs)
    if torch.is_grad_enabled() or reference:
        batch = prefix_batch(net, rows)
        reference_logits = net.reference_at_positions(*batch) if reference else None
        logits, values = net.at_positions(*batch, raw=raw)
    else:
        (logits, values), reference_logits = net.step(rows, raw=raw), None
    return logits, values.unsqueeze(-1), reference_logits


def logits_and_values(net: LMActorCritic, obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, V) processed logits and (B, 1) values (:func:`forward` without the reference)."""
    return forward(net, obs)[:2]


def evaluated(
    policy: ActorCriticPolicy, obs: dict[str, torch.Tensor], action_masks: Any = None
) -> tuple[torch.Tensor, torch.Tensor, Distribution, torch.Tensor | None]:
    """What ``evaluate_actions`` needs: processed logits, (B, 1) values, the distribution and,
    with ``kl_to_reference``, the (B,) KL to the reference at each observation (else None)."""
    net: LMActorCritic = policy.net
    logits, values, reference = forward(net, obs, reference=net.config.kl_to_reference)
    distribution = policy.action_dist.proba_distribution(action_logits=logits)
    if action_masks is not None:
        distribution.apply_masking(action_masks)
        logits = distribution.distribution.logits  # the masked logits the distribution samples from
    kl = None if reference is None else net.kl_to_reference(logits, reference)
    return logits, values, distribution, kl


PLAIN_BUFFER_WARNING = (
    "{policy} is training from minibatches that are not whole episodes (a plain rollout buffer): "
    "each observation then costs a forward pass over its whole context. Pass "
    "rollout_buffer_class=textgym.agents.{buffer} to {algo} for one pass per episode."
)


def warn_if_plain(policy: ActorCriticPolicy, obs: dict[str, torch.Tensor], buffer: str, algo: str) -> None:
    """Warn once per policy when an update's observations are not whole episodes: most of them
    share no prefix with another, so each costs its own forward pass. A minibatch from an episode
    buffer never warns; neither does A2C's whole rollout from SB3's plain buffer, whose episodes
    are all there (one pass per episode either way)."""
    if not torch.is_grad_enabled() or isinstance(obs, EpisodeObservations) or policy.warned_plain:
        return
    rows = observation_rows(obs)
    if len(prefix_groups(rows)[0]) * 2 > len(rows):  # more than half the rows are passes of their own
        policy.warned_plain = True
        warnings.warn(
            PLAIN_BUFFER_WARNING.format(policy=type(policy).__name__, buffer=buffer, algo=algo), stacklevel=3
        )


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
        self.warned_plain = False  # warn_if_plain's flag
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
        """Values, log-probs and entropies of ``actions`` (SB3's contract); with
        ``kl_to_reference``, minus the KL to the reference in place of the entropy (so that SB3's
        ``ent_coef`` term penalises the KL). With grad, the model runs once per group of
        observations that are prefixes of one another (one pass per episode, from
        :class:`EpisodeRolloutBuffer`'s minibatches)."""
        warn_if_plain(self, obs, "EpisodeRolloutBuffer", "PPO")
        _, values, distribution, kl = evaluated(self, obs)
        return values, distribution.log_prob(actions), distribution.entropy() if kl is None else -kl

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
            self.warned_plain = False  # warn_if_plain's flag
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
            warn_if_plain(self, obs, "MaskableEpisodeRolloutBuffer", "MaskablePPO")
            _, values, distribution, kl = evaluated(self, obs, action_masks)
            return values, distribution.log_prob(actions), distribution.entropy() if kl is None else -kl

        def get_distribution(self, obs: dict[str, torch.Tensor], action_masks: Any = None):
            return self._distribution(logits_and_values(self.net, obs)[0], action_masks)

        def predict_values(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
            return logits_and_values(self.net, obs)[1]
