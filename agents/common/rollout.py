"""Batched episodes for TextPPO: generation with the KV cache, and every token's log-probs in one
pass (the per-token advantages are :mod:`textgym.agents.common.buffers`'s)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from textgym.agents.common.network import LMActorCritic
from textgym.datasets import Example
from textgym.envs.base import TextGenEnv
from textgym.models.incremental import IncrementalForward, left_pad
from textgym.models.sampling import sample_tokens


@dataclass
class TokenBatch:
    """B episodes as padded sequences: ``ids[:, :start]`` the left-padded prompts, ``ids[:, start:]``
    the R emitted tokens (then padding), with what the rollout knew about each token."""

    ids: torch.Tensor  # (B, T) int64, T = start + R
    mask: torch.Tensor  # (B, T) int64
    start: int
    response_mask: torch.Tensor  # (B, R) bool: tokens the policy emitted
    log_probs: torch.Tensor  # (B, R) under the sampling distribution (what the PPO ratio uses)
    kl_log_probs: torch.Tensor  # (B, R) under the temperature-only distribution (what the KL uses)
    values: torch.Tensor  # (B, R)
    group_size: int = 1  # consecutive groups of this many rows share their prompt

    @property
    def tokens(self) -> torch.Tensor:
        return self.ids[:, self.start :]  # (B, R)

    @property
    def lengths(self) -> torch.Tensor:
        return self.response_mask.sum(-1)  # (B,)

    def generated(self) -> list[list[int]]:
        """Each episode's emitted token ids."""
        return [row[: int(n)].tolist() for row, n in zip(self.tokens, self.lengths)]

    def select(self, index: torch.Tensor, group_size: int = 1) -> TokenBatch:
        """The episodes at ``index``, without the prompt columns that are padding in all of them;
        ``group_size``: ``index`` takes whole groups of rows that share a prompt, in order."""
        mask = self.mask[index]
        lead = int(mask[:, : self.start].bool().any(0).long().argmax()) if self.start else 0
        return TokenBatch(
            ids=self.ids[index, lead:],
            mask=mask[:, lead:],
            start=self.start - lead,
            response_mask=self.response_mask[index],
            log_probs=self.log_probs[index],
            kl_log_probs=self.kl_log_probs[index],
            values=self.values[index],
            group_size=group_size,
        )


def token_log_probs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[token]: (..., V), (...) -> (...)."""
    return torch.log_softmax(logits, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


@torch.no_grad()
def reference_log_probs(net: LMActorCritic, episodes: TokenBatch) -> torch.Tensor:
    """(N,) log-probs of the N emitted tokens of ``episodes`` under the frozen reference, in the
    distribution KL penalties compare (:meth:`LMActorCritic.kl_logits`), from one forward pass."""
    select = episodes.response_mask
    logits = net.reference_logits(
        episodes.ids, episodes.mask, episodes.start, select, episodes.group_size
    )  # (N, V)
    return token_log_probs(net.kl_logits(logits), episodes.tokens[select])


@torch.no_grad()
def generate(
    net: LMActorCritic,
    prompts: list[list[int]],
    max_new_tokens: int,
    eos_ids: frozenset[int],
    generator: torch.Generator,
    on_step: Callable[[int], bool] | None = None,
    greedy: bool = False,
    group_size: int = 1,
) -> TokenBatch | None:
    """Sample ``group_size`` episodes per prompt (consecutive rows), all together, keeping the
    KV cache across steps (``greedy``: the most likely token of the sampling distribution
    instead of a sample). Each prompt runs once, its cache shared by its group.

    A row ends at an EOS or an id the tokenizer cannot decode (both emitted) or at the budget.
    ``on_step(n_active)`` runs after every step; returning False abandons the batch (None).
    """
    # bf16 products where the policy runs in bf16; packed float32 weights, or kept bf16 copies
    # under autocast, for the linear layers (textgym.models.packed; freed when the update starts).
    with net.autocast(), net.packed:
        device = net.invalid.device
        ids, mask = left_pad(prompts, net.pad_id, device)  # (G, P)
        actor = IncrementalForward(net.backbone, net.pad_id)
        critic = None if net.critic is None else IncrementalForward(net.critic, net.pad_id)
        hidden = actor.start(ids, mask, group_size)  # (B, H), B = G * group_size
        critic_hidden = hidden if critic is None else critic.start(ids, mask, group_size)
        ids, mask = ids.repeat_interleave(group_size, 0), mask.repeat_interleave(group_size, 0)  # (B, P)
        batch, start = ids.shape
        ends = torch.zeros(net.invalid.shape[0], dtype=torch.bool, device=device)
        ends[list(eos_ids)] = True
        ends |= net.invalid

        active = torch.ones(batch, dtype=torch.bool, device=device)
        columns: dict[str, list[torch.Tensor]] = {
            "token": [],
            "active": [],
            "logp": [],
            "kl_logp": [],
            "value": [],
        }
        for step in range(max_new_tokens):
            raw = net.head(hidden)  # (B, V)
            logits = net.process(raw)
            token = logits.argmax(-1) if greedy else sample_tokens(logits, generator)  # (B,)
            token = torch.where(active, token, net.pad_id)
            columns["token"].append(token)
            columns["active"].append(active)
            columns["logp"].append(token_log_probs(logits, token))
            columns["kl_logp"].append(token_log_probs(net.kl_logits(raw), token))
            columns["value"].append(net.value(critic_hidden))
            n_active = int(active.sum())
            if on_step is not None and not on_step(n_active):
                return None
            still = active & ~ends[token]
            if not still.any() or step + 1 == max_new_tokens:
                break
            # Emitted tokens are real context (mask 1); rows that had already ended append padding.
            hidden = actor.extend(token[:, None], active[:, None])
            critic_hidden = hidden if critic is None else critic.extend(token[:, None], active[:, None])
            active = still

        stack = {key: torch.stack(value, dim=1) for key, value in columns.items()}  # (B, R) each
        response_mask = stack["active"]
        zero = torch.zeros((), device=device)
        return TokenBatch(
            ids=torch.cat([ids, stack["token"]], dim=1),
            mask=torch.cat([mask, response_mask.long()], dim=1),
            start=start,
            response_mask=response_mask,
            log_probs=torch.where(response_mask, stack["logp"], zero),
            kl_log_probs=torch.where(response_mask, stack["kl_logp"], zero),
            values=torch.where(response_mask, stack["value"], zero),
            group_size=group_size,
        )


def play(
    net: LMActorCritic,
    env: TextGenEnv,
    examples: Sequence[Example],
    generator: torch.Generator,
    on_step: Callable[[int], bool] | None = None,
    greedy: bool = False,
    group_size: int = 1,
) -> tuple[TokenBatch, np.ndarray, list[dict[str, Any]]] | None:
    """``group_size`` episodes of ``env`` per example (consecutive), sampled together and scored
    in one reward call: the batch, the (B,) rewards and each episode's final ``info`` (None if
    ``on_step`` stopped)."""
    prompts = [env.encode_prompt(example)[0] for example in examples]
    batch = generate(
        net, prompts, env.max_new_tokens, env.eos_token_ids, generator, on_step, greedy, group_size
    )
    if batch is None:
        return None
    episodes = [example for example in examples for _ in range(group_size)]
    rewards, infos = env.score_episodes(episodes, batch.generated())
    return batch, rewards, infos
