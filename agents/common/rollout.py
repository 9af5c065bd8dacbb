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
from textgym.envs.multiturn import MultiTurnEnv
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
    # (B, R) task rewards where a multi-turn episode pays them (each turn's last agent token);
    # None: single-turn texts, whose one reward goes on the last emitted token.
    rewards: torch.Tensor | None = None

    @property
    def tokens(self) -> torch.Tensor:
        return self.ids[:, self.start :]  # (B, R)

    @property
    def lengths(self) -> torch.Tensor:
        return self.response_mask.sum(-1)  # (B,)

    @property
    def last(self) -> torch.Tensor:
        """(B,) the response column of each episode's last emitted token (0 for none)."""
        columns = torch.arange(self.response_mask.shape[1], device=self.response_mask.device)
        return (self.response_mask.long() * (columns + 1)).max(-1).values.sub(1).clamp(min=0)

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
            rewards=None if self.rewards is None else self.rewards[index],
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


@torch.no_grad()
def play_turns(
    net: LMActorCritic,
    env: MultiTurnEnv,
    examples: Sequence[Example],
    generator: torch.Generator,
    greedy: bool = False,
    group_size: int = 1,
    on_step: Callable[[int], bool] | None = None,
) -> tuple[TokenBatch, np.ndarray, list[dict[str, Any]]] | None:
    """``group_size`` multi-turn episodes of ``env`` per example (consecutive rows), all played
    together, turn by turn: every open conversation samples its turn with the KV cache, the env
    ends the batch's turns in one call (the partners reply together), and the replies' tokens
    (with each turn's last sampled token) enter the cache in one forward pass, so the history is
    never run again nor re-tokenized. Each prompt runs once, its cache shared by its group.

    Returns one :class:`TokenBatch` of the whole conversations, whose ``response_mask`` marks the
    agent's tokens only (the partner's are context: no log-prob, value or KL) and whose
    ``rewards`` hold each turn's reward on its last agent token, the (B,) undiscounted returns,
    and each episode's final ``info`` (:meth:`MultiTurnEnv.episode_info`). ``on_step(n_active)``
    runs after every sampling step; returning False abandons the batch (None)."""
    conversations = [env.start_conversation(example) for example in examples for _ in range(group_size)]
    prompts = [env.encode_prompt(example)[0] for example in examples]
    batch = len(conversations)
    # Per row: (token, emitted by the agent, log-prob, KL log-prob, value, reward) after the prompt.
    records: list[list[tuple[int, bool, float, float, float, float]]] = [[] for _ in range(batch)]
    results: list[list[Any]] = [[] for _ in range(batch)]
    with net.autocast(), net.packed:
        device = net.invalid.device
        ids, mask = left_pad(prompts, net.pad_id, device)
        actor = IncrementalForward(net.backbone, net.pad_id)
        critic = None if net.critic is None else IncrementalForward(net.critic, net.pad_id)
        hidden = actor.start(ids, mask, group_size)  # (B, H)
        critic_hidden = hidden if critic is None else critic.start(ids, mask, group_size)
        ends = torch.zeros(net.invalid.shape[0], dtype=torch.bool, device=device)
        ends[list(env.eos_token_ids)] = True
        ends |= net.invalid
        open_rows = torch.ones(batch, dtype=torch.bool, device=device)
        while True:
            active, turns = open_rows.clone(), [[] for _ in range(batch)]
            for step in range(env.max_new_tokens):
                raw = net.head(hidden)  # (B, V)
                logits = net.process(raw)
                token = logits.argmax(-1) if greedy else sample_tokens(logits, generator)
                token = torch.where(active, token, net.pad_id)
                columns = (token, token_log_probs(logits, token), token_log_probs(net.kl_logits(raw), token),
                           net.value(critic_hidden))  # fmt: skip
                t, lp, kl, value = (column.tolist() for column in columns)
                for i in active.nonzero()[:, 0].tolist():
                    records[i].append((t[i], True, lp[i], kl[i], value[i], 0.0))
                    turns[i].append(t[i])
                if on_step is not None and not on_step(int(active.sum())):
                    return None
                still = active & ~ends[token]
                if not still.any() or step + 1 == env.max_new_tokens:
                    break  # the tokens sampled at this step are not in the cache yet
                hidden = actor.extend(token[:, None], active[:, None])
                critic_hidden = hidden if critic is None else critic.extend(token[:, None], active[:, None])
                active = still
            rows = open_rows.nonzero()[:, 0].tolist()
            ended = env.end_turns([conversations[i] for i in rows], [turns[i] for i in rows])
            appended: list[list[int]] = [[] for _ in range(batch)]
            for i, result in zip(rows, ended):
                results[i].append(result)
                token_, agent, lp_, kl_, value_, _ = records[i][-1]  # the turn's last token is paid
                records[i][-1] = (token_, agent, lp_, kl_, value_, result.reward)
                records[i].extend((t, False, 0.0, 0.0, 0.0, 0.0) for t in result.appended)
                if result.last:
                    open_rows[i] = False
                else:  # the turn's last sampled token, if the cache lacks it, then the partner's
                    appended[i] = ([int(token[i])] if active[i] else []) + list(result.appended)
            if not open_rows.any():
                break
            new, new_mask = left_pad(appended, net.pad_id, device)  # each row's tokens right-aligned
            hidden = actor.extend(new, new_mask)
            critic_hidden = hidden if critic is None else critic.extend(new, new_mask)

    ids, mask = ids.repeat_interleave(group_size, 0), mask.repeat_interleave(group_size, 0)  # (B, P)
    width = max(len(rows) for rows in records)
    tokens = torch.full((batch, width), net.pad_id, dtype=torch.long)
    real = torch.zeros((batch, width), dtype=torch.long)
    agent = torch.zeros((batch, width), dtype=torch.bool)
    numbers = torch.zeros((4, batch, width))
    for i, rows in enumerate(records):
        tokens[i, : len(rows)] = torch.tensor([row[0] for row in rows])
        real[i, : len(rows)] = 1
        agent[i, : len(rows)] = torch.tensor([row[1] for row in rows])
        numbers[:, i, : len(rows)] = torch.tensor([row[2:] for row in rows]).T
    episodes = TokenBatch(
        ids=torch.cat([ids, tokens.to(device)], dim=1),
        mask=torch.cat([mask, real.to(device)], dim=1),
        start=ids.shape[1],
        response_mask=agent.to(device),
        log_probs=numbers[0].to(device),
        kl_log_probs=numbers[1].to(device),
        values=numbers[2].to(device),
        group_size=group_size,
        rewards=numbers[3].to(device),
    )
    returns = np.asarray([sum(result.reward for result in rows) for rows in results], dtype=np.float32)
    infos = [env.episode_info(conversation, rows) for conversation, rows in zip(conversations, results)]
    return episodes, returns, infos
