"""SoftQ's replay buffer: whole texts (token ids, task rewards and the reference's log-probs),
sampled uniformly or by priority (Schaul et al. 2016), in the shape of SB3's ``ReplayBuffer``."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import BaseBuffer

from textgym.agents.common.rollout import TokenBatch


class TextReplaySamples(NamedTuple):
    """A minibatch of replayed texts (the counterpart of SB3's ``ReplayBufferSamples``)."""

    episodes: TokenBatch  # b texts: left-padded prompts, then the emitted tokens
    rewards: torch.Tensor  # (b, R): each text's task reward on its last token
    ref_log_probs: torch.Tensor  # (b, R): the emitted tokens' log-probs under the reference
    weights: torch.Tensor  # (b,): importance weights (1 without prioritized replay)
    indices: np.ndarray  # (b,): where the texts sit in the buffer


class TextReplayBuffer(BaseBuffer):
    """A replay buffer of whole texts: each text's prompt and emitted token ids, the reference's
    log-probs of its tokens (the reference is frozen, so they are computed once, when the text is
    stored) and its task reward; the oldest texts go first when full. Its constructor takes the
    arguments SB3's ``OffPolicyAlgorithm._setup_model`` passes to a replay buffer; the size is
    counted in texts.

    :param prioritized: draw texts with probability proportional to ``priority ** alpha``
        (their last path-consistency residual; new texts get the largest so far), corrected by
        importance weights ``(N * P) ** -beta`` normalised by their maximum (Schaul et al. 2016).
    :param priority_exponent: alpha.
    :param importance_exponent: beta.
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: torch.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        prioritized: bool = False,
        priority_exponent: float = 0.6,
        importance_exponent: float = 0.4,
        pad_id: int = 0,
    ):
        super().__init__(buffer_size, observation_space, action_space, device, n_envs=n_envs)
        self.prioritized = prioritized
        self.priority_exponent = priority_exponent
        self.importance_exponent = importance_exponent
        self.pad_id = pad_id
        self.prompts: list[np.ndarray] = [np.zeros(0, np.int64)] * buffer_size
        self.tokens: list[np.ndarray] = [np.zeros(0, np.int64)] * buffer_size
        self.ref_log_probs: list[np.ndarray] = [np.zeros(0, np.float32)] * buffer_size
        self.rewards = np.zeros(buffer_size, np.float32)
        self.priorities = np.zeros(buffer_size, np.float64)

    def add(self, episodes: TokenBatch, rewards: np.ndarray, ref_log_probs: torch.Tensor) -> None:
        """Store a batch of finished texts, their (B,) task rewards and (B, R) reference log-probs."""
        top = float(self.priorities[: self.size()].max()) if self.size() else 1.0
        prompt_mask = episodes.mask[:, : episodes.start].bool().cpu()
        ids = episodes.ids.cpu()
        for row, n in enumerate(episodes.lengths.tolist()):
            self.prompts[self.pos] = ids[row, : episodes.start][prompt_mask[row]].numpy()
            self.tokens[self.pos] = ids[row, episodes.start : episodes.start + n].numpy()
            self.ref_log_probs[self.pos] = ref_log_probs[row, :n].float().cpu().numpy()
            self.rewards[self.pos] = rewards[row]
            self.priorities[self.pos] = top
            self.pos += 1
            if self.pos == self.buffer_size:
                self.full, self.pos = True, 0

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> TextReplaySamples:  # type: ignore[override]
        n = self.size()
        if n == 0:
            raise RuntimeError("the replay buffer is empty: add() texts first")
        weights = np.ones(batch_size, np.float32)
        if self.prioritized:
            probs = torch.as_tensor(self.priorities[:n] ** self.priority_exponent)
            index = torch.multinomial(probs / probs.sum(), batch_size, replacement=True, generator=generator)
            index = index.numpy()
            chance = (probs / probs.sum()).numpy()[index]
            weights = (n * chance) ** -self.importance_exponent
            weights = (weights / weights.max()).astype(np.float32)
        else:
            index = torch.randint(n, (batch_size,), generator=generator).numpy()
        return self._get_samples(index, weights)

    def _get_samples(self, batch_inds: np.ndarray, weights: Any = None) -> TextReplaySamples:  # type: ignore[override]
        b = len(batch_inds)
        prompts = [self.prompts[i] for i in batch_inds]
        start = max(len(p) for p in prompts)
        R = max(1, max(len(self.tokens[i]) for i in batch_inds))
        ids = torch.full((b, start + R), self.pad_id, dtype=torch.long)
        mask = torch.zeros((b, start + R), dtype=torch.long)
        rewards = torch.zeros((b, R))
        reference = torch.zeros((b, R))
        for row, i in enumerate(batch_inds):
            p, tokens = prompts[row], self.tokens[i]
            ids[row, start - len(p) : start] = torch.as_tensor(p)
            mask[row, start - len(p) : start] = 1
            ids[row, start : start + len(tokens)] = torch.as_tensor(tokens)
            mask[row, start : start + len(tokens)] = 1
            reference[row, : len(tokens)] = torch.as_tensor(self.ref_log_probs[i])
            if len(tokens):
                rewards[row, len(tokens) - 1] = float(self.rewards[i])
        response = mask[:, start:].bool()
        zeros = torch.zeros((b, R))
        weights = torch.ones(b) if weights is None else torch.as_tensor(weights)
        to = self.device
        episodes = TokenBatch(
            ids.to(to), mask.to(to), start, response.to(to), zeros.to(to), zeros.to(to), zeros.to(to)
        )
        indices = np.asarray(batch_inds)
        return TextReplaySamples(episodes, rewards.to(to), reference.to(to), weights.to(to), indices)

    def update_priorities(self, indices: np.ndarray, priorities: np.ndarray) -> None:
        self.priorities[indices] = np.asarray(priorities, np.float64) + 1e-6
