"""A language-model partner: a frozen causal LM prompted as the other person of a chat."""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from typing import Any

import torch

from textgym.envs.multiturn import Conversation, Partner
from textgym.models import DEFAULT_MODEL, check_model_name, eos_token_ids
from textgym.models.incremental import left_pad

PARTNER_SYSTEM_PROMPT = "You are chatting with a friend. Reply with one or two short sentences."


@functools.cache
def _partner_model(name: str) -> tuple[Any, torch.nn.Module]:
    """The partner's tokenizer and frozen model, loaded once per process (every env shares them)."""
    from textgym.models import load_model, load_tokenizer

    return load_tokenizer(name), load_model(name).requires_grad_(False)


class LMPartner(Partner):
    """A frozen causal LM as the other person: it reads the conversation with the roles swapped
    (the agent's turns are its user's, its own are its assistant's) under ``system_prompt`` and
    answers greedily, at most ``max_new_tokens`` tokens, so that a seeded episode repeats. A reply
    repeats no ``no_repeat_ngram_size`` tokens in a row of what it reads (0: no such rule): a small
    model answering greedily otherwise tends to say its previous message again, whatever the agent
    said. The model loads once per process and serves every env in it; a batch of conversations
    (a batched rollout's) is answered in one ``generate`` call. ``seconds``, ``replies`` and
    ``tokens`` count what it has cost so far."""

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        system_prompt: str = PARTNER_SYSTEM_PROMPT,
        max_new_tokens: int = 24,
        no_repeat_ngram_size: int = 4,
    ):
        self.model = check_model_name(model)
        if not isinstance(system_prompt, str):
            raise TypeError(f"system_prompt must be a string, got {type(system_prompt).__name__}")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
        size = no_repeat_ngram_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"no_repeat_ngram_size must be an int >= 0 (0: off), got {size!r}")
        self.system_prompt = system_prompt
        self.max_new_tokens = max_new_tokens
        self.no_repeat_ngram_size = size
        self.seconds, self.replies, self.tokens = 0.0, 0, 0

    def prompt(self, conversation: Conversation) -> str:
        """The chat the partner model reads: the system prompt, then every message, roles swapped."""
        swap = {"user": "assistant", "assistant": "user"}
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        messages += [{"role": swap[role], "content": text} for role, text in conversation.messages]
        tokenizer, _ = _partner_model(self.model)
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    @torch.no_grad()
    def reply(self, conversations: Sequence[Conversation]) -> list[str]:
        started = time.perf_counter()
        tokenizer, model = _partner_model(self.model)
        rows = [tokenizer(self.prompt(c), add_special_tokens=False)["input_ids"] for c in conversations]
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos_token_ids(self.model))
        ids, mask = left_pad(rows, pad)
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            no_repeat_ngram_size=self.no_repeat_ngram_size,
            pad_token_id=pad,
            eos_token_id=sorted(eos_token_ids(self.model)),
        )[:, ids.shape[1] :]  # (B, new)
        replies = [tokenizer.decode(row, skip_special_tokens=True).strip() for row in out]
        self.seconds += time.perf_counter() - started
        self.replies += len(replies)
        self.tokens += int((out != pad).sum())
        return replies


@functools.cache
def shared_partner(model: str = DEFAULT_MODEL) -> LMPartner:
    """The one default :class:`LMPartner` of ``model`` in this process: every env that takes its
    task's default partner shares it, so a vector env answers all its envs in one batch (see
    :class:`~textgym.wrappers.VecPartnerBatcher`) and its counters add up the whole process's cost."""
    return LMPartner(model)
