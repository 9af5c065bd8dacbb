"""Rollout buffers made of whole episodes.

:class:`TokenRolloutBuffer` is TextPPO's: whole episodes, their per-token rewards and GAE, and
minibatches of episodes, in the shape of Stable-Baselines3's ``RolloutBuffer`` (``add``,
``compute_returns_and_advantage``, ``get``). :class:`EpisodeRolloutBuffer` (and
:class:`MaskableEpisodeRolloutBuffer`) are SB3's own dict buffers for stock PPO, A2C and
MaskablePPO, with minibatches of whole episodes so that the LM policies run the model once per
episode rather than once per step."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import BaseBuffer, DictRolloutBuffer
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.vec_env import VecNormalize

from textgym.agents.common import distributed
from textgym.agents.common.checks import check_choice, check_groups
from textgym.agents.common.rollout import TokenBatch

try:  # sb3-contrib is optional: only MaskablePPO needs it
    from sb3_contrib.common.maskable.buffers import MaskableDictRolloutBuffer
except ImportError:  # pragma: no cover - exercised only without sb3-contrib
    MaskableDictRolloutBuffer = None

KL_ESTIMATORS = ("k1", "k3")
REWARD_NORMALIZATIONS = ("none", "running", "batch")


def kl_penalty(log_probs: torch.Tensor, ref_log_probs: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from sampled tokens' log-probs.

    k1: log p - log q (unbiased, can be negative); k3: (q/p - 1) - log(q/p) (unbiased, >= 0).
    """
    if estimator == "k1":
        return log_probs - ref_log_probs
    if estimator == "k3":
        log_ratio = (ref_log_probs - log_probs).clamp(-20, 20)
        return torch.expm1(log_ratio) - log_ratio
    raise ValueError(f"kl_estimator must be one of {KL_ESTIMATORS}, got {estimator!r}")


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token GAE advantages and returns, (B, R) each, over the tokens ``mask`` marks in
    order; an episode's last token is terminal (its reward is the finished text's, so nothing is
    bootstrapped after it). The marked tokens need not be contiguous: in a multi-turn episode the
    partner's tokens lie between the agent's turns, and the recursion steps over them (the
    agent's next token follows its turn's last one, discounted by ``gamma`` once)."""
    mask = mask.bool()
    # Each row's marked columns first, in order (a stable sort): GAE runs on the packed rows.
    order = torch.sort((~mask).long(), dim=1, stable=True).indices  # (B, R)
    packed = [x.gather(1, order) for x in (rewards, values, mask)]
    advantages, returns = _packed_gae(*packed, gamma, lam)
    return torch.zeros_like(rewards).scatter(1, order, advantages), torch.zeros_like(rewards).scatter(
        1, order, returns
    )


def _packed_gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`gae` of rows whose marked tokens come first."""
    mask = mask.float()
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        following = mask[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(running)
        next_value = values[:, t + 1] * following if t + 1 < rewards.shape[1] else following
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * following * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of the masked entries; with several ranks (torchrun), of every rank's."""
    mask = mask.to(x.dtype)
    if distributed.active():
        totals = distributed.all_sum(torch.stack([(x * mask).sum(), mask.sum()]))
        return totals[0] / totals[1].clamp(min=1)
    return (x * mask).sum() / mask.sum().clamp(min=1)


def all_ranks_mean_std(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (unbiased) std of a 1-D batch; with several ranks, of the union of theirs."""
    if not distributed.active():
        return values.mean(), values.std()
    moments = [values.sum(), (values**2).sum(), values.new_tensor(len(values))]
    totals = distributed.all_sum(torch.stack(moments))
    n = totals[2]
    mean = totals[0] / n
    return mean, ((totals[1] - n * mean**2) / (n - 1).clamp(min=1)).clamp(min=0).sqrt()


def whiten(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance over the masked entries (others set to 0); with several ranks,
    over every rank's entries."""
    mean = masked_mean(x, mask)
    std = masked_mean((x - mean) ** 2, mask).sqrt()
    return torch.where(mask, (x - mean) / (std + 1e-8), torch.zeros_like(x))


class TokenRolloutSamples(NamedTuple):
    """A minibatch of whole episodes (the counterpart of SB3's ``RolloutBufferSamples``)."""

    episodes: TokenBatch  # b episodes: ids, masks, emitted tokens, their old log-probs and values
    advantages: torch.Tensor  # (b, R), 0 past each episode's end
    returns: torch.Tensor  # (b, R)


class TokenRolloutBuffer(BaseBuffer):
    """One batch of whole episodes, as TextPPO collects them: B left-padded token sequences
    (a :class:`TokenBatch`) and their B task rewards; per-token rewards, advantages and returns.

    Its constructor takes the arguments SB3's ``OnPolicyAlgorithm._setup_model`` passes to a
    rollout buffer, so TextPPO builds it as SB3's PPO builds its ``RolloutBuffer``; the size is
    counted in episodes, not env steps (an episode is many steps, one per token).

    :param buffer_size: episodes per batch (TextPPO's ``batch_episodes``, which is its ``n_steps``).
    :param observation_space: the env's (kept as SB3 keeps it; episodes are stored as tokens).
    :param action_space: the env's.
    :param device: where the episodes and advantages live.
    :param gae_lambda: GAE's lambda over the tokens of an episode.
    :param gamma: discount per token (1: a text's reward is not discounted).
    :param n_envs: SB3's count of envs; unused (TextPPO draws every episode from one env).
    :param kl_estimator: per-token KL(policy || reference): ``"k1"`` (log p - log q) or ``"k3"``
        ((q/p - 1) - log(q/p)).
    :param reward_normalization: ``"none"``, ``"running"`` (task rewards divided by their
        running std) or ``"batch"`` (standardised within the batch).
    :param normalize_advantage: whiten the advantages over the batch's emitted tokens.
    :param group_size: consecutive groups of this many episodes share a prompt (1: no groups).
    :param group_baseline: None, ``"mean"`` (GRPO: each text's return minus its group's mean)
        or ``"leave_one_out"`` (RLOO: minus the mean of the group's other texts). The baseline
        is a per-text shift of the last token's reward, so it applies with or without a critic.
    :param scale_group_std: divide each text's rewards by the std of its group's reward sums
        (plus 1e-4): GRPO's scaling.
    :param use_critic: per-token advantages from the value head (GAE); False: every token's
        advantage is its return to go (gamma-discounted, no value), as in REINFORCE and GRPO.
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: torch.device | str = "auto",
        gae_lambda: float = 1.0,
        gamma: float = 0.99,
        n_envs: int = 1,
        kl_estimator: str = "k1",
        reward_normalization: str = "none",
        normalize_advantage: bool = True,
        group_size: int = 1,
        group_baseline: str | None = None,
        scale_group_std: bool = False,
        use_critic: bool = True,
    ):
        super().__init__(buffer_size, observation_space, action_space, device, n_envs=n_envs)
        check_groups(buffer_size, group_size, group_baseline)
        self.group_size = group_size
        self.group_baseline = group_baseline
        self.scale_group_std = scale_group_std
        self.use_critic = use_critic
        self.gae_lambda = gae_lambda
        self.gamma = gamma
        self.kl_estimator = check_choice("kl_estimator", kl_estimator, KL_ESTIMATORS)
        self.reward_normalization = check_choice(
            "reward_normalization", reward_normalization, REWARD_NORMALIZATIONS
        )
        self.normalize_advantage = normalize_advantage
        self.episodes: TokenBatch | None = None
        self.task_rewards: torch.Tensor | None = None  # (B,) one per finished text
        self.kl: torch.Tensor | None = None  # (B, R) per-token KL estimates
        self.advantages: torch.Tensor | None = None  # (B, R)
        self.returns: torch.Tensor | None = None  # (B, R)
        self.sequence_kl = 0.0  # the batch's mean KL, nats per episode

    def reset(self) -> None:
        self.episodes = self.task_rewards = self.kl = self.advantages = self.returns = None
        self.sequence_kl = 0.0
        super().reset()

    def add(self, episodes: TokenBatch, rewards: np.ndarray | Sequence[float]) -> None:
        """Store a batch of ``buffer_size`` finished episodes and their task rewards (B,)."""
        if len(episodes.ids) != self.buffer_size or np.shape(rewards) != (self.buffer_size,):
            raise ValueError(
                f"the buffer takes {self.buffer_size} episodes and as many rewards, got "
                f"{len(episodes.ids)} episodes and rewards of shape {np.shape(rewards)}"
            )
        self.reset()
        self.episodes = episodes
        self.task_rewards = torch.as_tensor(rewards, device=self.device)
        self.pos, self.full = self.buffer_size, True

    def _episodes(self) -> TokenBatch:
        if self.episodes is None:
            raise RuntimeError("the buffer is empty: add() a batch of episodes first")
        return self.episodes

    def _chunks(self, size: int | None, order: torch.Tensor | None = None) -> Iterator[TokenBatch]:
        """Consecutive runs of ``size`` episodes of ``order`` (a permutation of whole groups, or
        of episodes): ``(indices, episodes)``, the episodes sharing each group's prompt pass when
        the run is made of whole groups."""
        order = torch.arange(self.buffer_size) if order is None else order
        size = size or self.buffer_size
        episodes = self._episodes()
        for first in range(0, self.buffer_size, size):
            index = order[first : first + size]
            yield index, episodes.select(index, self._group_size_of(index))

    def _group_size_of(self, index: torch.Tensor) -> int:
        """``group_size`` if ``index`` lists whole groups, each in order; else 1."""
        k = self.group_size
        if k == 1 or len(index) % k:
            return 1
        rows = index.reshape(-1, k)
        steps = torch.arange(k, device=rows.device)
        whole = (rows[:, 0] % k == 0).all() and (rows - rows[:, :1] == steps).all()
        return k if bool(whole) else 1

    def group_order(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """A random order of the episodes that keeps each group's episodes together, in order."""
        device = None if generator is None else generator.device
        k = self.group_size
        groups = torch.randperm(self.buffer_size // k, generator=generator, device=device)
        return (groups[:, None] * k + torch.arange(k, device=groups.device)).reshape(-1)

    @torch.no_grad()
    def compute_returns_and_advantage(
        self,
        kl_coef: float,
        reference: Callable[[TokenBatch], torch.Tensor] | None = None,
        reward_stats: RunningMeanStd | None = None,
        batch_size: int | None = None,
    ) -> None:
        """Per-token rewards (the KL penalty ``-kl_coef * KL_t``, plus the task reward on each
        episode's last token; a multi-turn episode's, each turn's on that turn's last token), then
        GAE advantages and returns over the agent's tokens.

        :param kl_coef: weight of the per-token KL penalty.
        :param reference: episodes -> (N,) log-probs of their N emitted tokens under the frozen
            reference, in the distribution the KL compares; None: no reference pass (KL 0).
        :param reward_stats: the running statistics ``reward_normalization="running"`` updates
            and divides by (kept by the algorithm, so that they are saved with it).
        :param batch_size: episodes per reference forward pass (None: all at once).
        """
        episodes = self._episodes()
        mask = episodes.response_mask  # (B, R)
        kl = torch.zeros_like(episodes.log_probs)
        if reference is not None:
            for index, part in self._chunks(batch_size):
                select = part.response_mask
                rows = torch.zeros_like(part.kl_log_probs)
                rows[select] = kl_penalty(part.kl_log_probs[select], reference(part), self.kl_estimator)
                kl[index] = rows
        scores = self.task_rewards.float()  # (B,) each episode's task reward (a game's: its turns')
        shift, divisor = 0.0, 1.0  # scores become (scores - shift) / divisor
        if self.reward_normalization == "running":
            if reward_stats is None:
                raise ValueError('reward_normalization="running" needs reward_stats (a RunningMeanStd)')
            if distributed.active():  # the moments of every rank's scores
                mean, std = all_ranks_mean_std(scores)
                count = len(scores) * distributed.world_size()
                reward_stats.update_from_moments(float(mean), float(std) ** 2 * (count - 1) / count, count)
            else:
                reward_stats.update(scores.cpu().numpy())
            divisor = float(np.sqrt(reward_stats.var + 1e-8))
        elif self.reward_normalization == "batch":
            mean, std = all_ranks_mean_std(scores)
            shift, divisor = mean, std + 1e-8
        rewards = -kl_coef * kl
        last = episodes.last
        rows = torch.arange(len(last))
        if episodes.rewards is None:  # one text: its reward on its last token
            rewards[rows, last] += (scores - shift) / divisor
        else:  # a multi-turn episode: each turn's reward on that turn's last token
            rewards += episodes.rewards.float() / divisor
            rewards[rows, last] -= shift / divisor
        if self.group_baseline is not None or self.scale_group_std:
            rewards = self._group_relative(rewards, mask, last)
        values = episodes.values if self.use_critic else torch.zeros_like(episodes.values)
        lam = self.gae_lambda if self.use_critic else 1.0
        advantages, returns = gae(rewards, values, mask, self.gamma, lam)
        if self.normalize_advantage:
            advantages = whiten(advantages, mask)
        self.kl, self.advantages, self.returns = kl, advantages, returns
        self.sequence_kl = float(kl.sum(-1).mean())
        if distributed.active():  # over every rank's texts
            totals = distributed.all_sum(torch.stack([kl.sum(), kl.new_tensor(len(kl))]))
            self.sequence_kl = float(totals[0] / totals[1])

    def _group_relative(self, rewards: torch.Tensor, mask: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """Per-token rewards (B, R) made relative to each text's group: the group baseline of
        the texts' reward sums (task reward minus KL penalties) comes off each last token's
        reward, and with ``scale_group_std`` a text's rewards are divided by its group's std."""
        k, rows = self.group_size, torch.arange(len(last))
        totals = (rewards * mask).sum(-1).reshape(-1, k)  # (G, k) each text's reward sum
        rewards = rewards.clone()
        if self.group_baseline == "mean":
            baseline = totals.mean(-1, keepdim=True).expand(-1, k)
        elif self.group_baseline == "leave_one_out":
            baseline = (totals.sum(-1, keepdim=True) - totals) / (k - 1)
        else:
            baseline = torch.zeros_like(totals)
        rewards[rows, last] -= baseline.reshape(-1)
        if self.scale_group_std:
            std = totals.std(-1, keepdim=True) if k > 1 else torch.ones_like(totals[:, :1])
            rewards = rewards / (std.expand(-1, k).reshape(-1, 1) + 1e-4)
        return rewards * mask

    def get(
        self, batch_size: int | None = None, generator: torch.Generator | None = None
    ) -> Generator[TokenRolloutSamples, None, None]:
        """Minibatches of ``batch_size`` whole episodes (None: all) in an order drawn from
        ``generator`` (None: torch's global one); each episode appears once per call."""
        if self.advantages is None:
            raise RuntimeError("get() needs advantages: call compute_returns_and_advantage() first")
        for index, part in self._chunks(batch_size, self.group_order(generator)):
            yield TokenRolloutSamples(part, self.advantages[index], self.returns[index])

    def _get_samples(
        self, batch_inds: np.ndarray | torch.Tensor, env: VecNormalize | None = None
    ) -> TokenRolloutSamples:
        index = torch.as_tensor(batch_inds)
        part = self._episodes().select(index, self._group_size_of(index))
        return TokenRolloutSamples(part, self.advantages[index], self.returns[index])


# -- the stock path: SB3's on-policy buffers, minibatches of whole episodes ---------------------


class EpisodeObservations(dict):
    """The observations of a minibatch made of whole episodes (what :class:`EpisodeRolloutBuffer`
    yields): a plain dict of tensors that tells the LM policies the rows share prefixes, so they
    do not warn that the buffer is a plain one."""


def episode_segments(episode_starts: np.ndarray, longest: int | None = None) -> list[np.ndarray]:
    """The flat indices (SB3's env-major order after ``swap_and_flatten``: ``env * n_steps + t``)
    of each run of consecutive steps of one env within one episode, from a (n_steps, n_envs)
    ``episode_starts``. A run that began before this rollout is a segment of its own; runs
    longer than ``longest`` are cut into pieces of at most ``longest`` steps."""
    n_steps, n_envs = episode_starts.shape
    segments = []
    for env in range(n_envs):
        cuts = [0, *(t for t in range(1, n_steps) if episode_starts[t, env]), n_steps]
        for first, end in zip(cuts[:-1], cuts[1:]):
            step = end - first if longest is None else max(1, longest)
            for start in range(first, end, step):
                segments.append(env * n_steps + np.arange(start, min(start + step, end)))
    return segments


def pack_segments(segments: list[np.ndarray], order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Segments taken in ``order``, each put into the first minibatch it fits in (at most
    ``batch_size`` transitions), a new one when it fits in none: whole episodes in minibatches
    filled close to ``batch_size``."""
    batches: list[list[np.ndarray]] = []
    sizes: list[int] = []
    for index in order:
        segment = segments[index]
        slot = next((b for b, size in enumerate(sizes) if size + len(segment) <= batch_size), len(batches))
        if slot == len(batches):
            batches.append([])
            sizes.append(0)
        batches[slot].append(segment)
        sizes[slot] += len(segment)
    return [np.concatenate(batch) for batch in batches]


class EpisodeBatches:
    """The part of :class:`EpisodeRolloutBuffer` that SB3's dict buffers lack: ``get`` yields
    minibatches of whole episodes (shuffled by episode), whose observations the LM policies run
    once per episode. Mixed into SB3's ``DictRolloutBuffer`` and sb3-contrib's
    ``MaskableDictRolloutBuffer`` below."""

    # The arrays SB3's get() flattens besides the observations (sb3-contrib adds action_masks).
    FLATTENED: tuple[str, ...] = ("actions", "values", "log_probs", "advantages", "returns")

    def get(self, batch_size: int | None = None) -> Generator[Any, None, None]:
        assert self.full, "the rollout buffer is read only once full"
        total = self.buffer_size * self.n_envs
        if not self.generator_ready:
            # Before flattening: episode_starts is (n_steps, n_envs) and stays so (SB3 does not flatten it).
            for key, obs in self.observations.items():
                self.observations[key] = self.swap_and_flatten(obs)
            for name in self.FLATTENED:
                setattr(self, name, self.swap_and_flatten(getattr(self, name)))
            self.generator_ready = True
        batch_size = total if batch_size is None else batch_size
        segments = episode_segments(self.episode_starts, longest=batch_size)
        order = np.random.permutation(len(segments))  # SB3's generator, seeded by set_random_seed
        for indices in pack_segments(segments, order, batch_size):
            yield self._get_samples(indices)

    def _get_samples(self, batch_inds: np.ndarray, env: VecNormalize | None = None) -> Any:
        samples = super()._get_samples(batch_inds, env)
        return samples._replace(observations=EpisodeObservations(samples.observations))


class EpisodeRolloutBuffer(EpisodeBatches, DictRolloutBuffer):
    """SB3's ``DictRolloutBuffer`` whose minibatches are whole episodes: pass it to stock PPO or
    A2C as ``rollout_buffer_class=EpisodeRolloutBuffer``. Its ``get(batch_size)`` shuffles the
    rollout's episodes and packs them into minibatches of at most ``batch_size`` transitions (an
    episode longer than that is cut into consecutive pieces; an episode cut by the rollout's
    start or end is a piece of its own). Within such a minibatch most observations are prefixes
    of a longer one, and :class:`~textgym.agents.LMActorCriticPolicy` runs the model once per
    episode instead of once per observation. Same arguments as ``DictRolloutBuffer``."""


if MaskableDictRolloutBuffer is not None:

    class MaskableEpisodeRolloutBuffer(EpisodeBatches, MaskableDictRolloutBuffer):
        """:class:`EpisodeRolloutBuffer` for ``sb3_contrib.MaskablePPO`` (which needs its buffer
        to store action masks): ``rollout_buffer_class=MaskableEpisodeRolloutBuffer``."""

        FLATTENED = (*EpisodeBatches.FLATTENED, "action_masks")
else:  # pragma: no cover - exercised only without sb3-contrib
    MaskableEpisodeRolloutBuffer = None
