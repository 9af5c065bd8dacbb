"""Rewards for a reply in a conversation that do not compare it with the one reply a person wrote.

Two candidates for the Dialogue task's reward (the study on the rewards guide compares them
with ``similarity`` to the reference):

- :class:`ContextRelevance` (``relevance``): MiniLM cosine similarity of the reply to the turn it
  answers (the last user turn), times one minus the share of the reply's 3-grams copied from that
  turn, so repeating the user's words earns nothing. all-MiniLM-L6-v2 was trained on pairs that
  include comments and their replies, so a reply on the topic scores above a generic one.
- :class:`NextTurnGain` (``next_turn``): how much more likely the frozen reference model finds
  the conversation's real next user turn after the reply than after a neutral reply ("Okay."):
  the difference of the two mean per-token log-likelihoods (nats), clipped to [-1, 1]. A reply
  the person could answer the way they did scores above zero. It needs the examples' column
  ``next_turn`` (dataset ``chitchat-dialogue`` has it), and scores 0 where the chat ended.

Both read the answered turn from the column ``turns`` (the conversation's ``(role, text)``
pairs) where the examples have it, else from the prompt's last ``User:`` line.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from textgym.rewards.base import check_batch
from textgym.rewards.lexical import copy_rate

NEUTRAL_REPLY = "Okay."
# Characters kept of each part the reference model reads: the answered turn's last, the
# reply's and the next turn's first (chitchat turns are shorter than this nearly always).
CONTEXT_CHARS, REPLY_CHARS, NEXT_CHARS = 500, 300, 300
_SLOT = "\x00next turn\x00"  # stands for the next turn while the chat template is applied


def answered_turn(prompt: str, turns: Sequence[tuple[str, str]] | None) -> str:
    """The last user turn: from ``turns`` if given, else the prompt's text after its last
    ``User:`` (and before a final ``Assistant:``), else the whole prompt."""
    if turns:
        for role, text in reversed(turns):
            if role == "user":
                return text
    body = prompt.strip().removesuffix("Assistant:").rstrip()
    at = body.rfind("User: ")
    return body[at + len("User: ") :].strip() if at >= 0 else body


def _answered_turns(prompts: Sequence[str], turns: Sequence[Any] | None) -> list[str]:
    return [answered_turn(p, turns[i] if turns is not None else None) for i, p in enumerate(prompts)]


class ContextRelevance:
    """MiniLM cosine similarity of each reply to the turn it answers x (1 - its 3-gram copy rate
    from that turn), in [-1, 1]; 0 for an empty reply."""

    name = "relevance"

    def __call__(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        references: Sequence[Sequence[str]],
        turns: Sequence[Any] | None = None,
    ) -> np.ndarray:
        from textgym.rewards.similarity import embed

        check_batch(prompts, completions, references)
        answered = _answered_turns(prompts, turns)
        vectors = embed(list(completions) + answered)
        n = len(completions)
        cosine = (vectors[:n] * vectors[n:]).sum(-1).numpy()
        own = np.array([1.0 - copy_rate(a, c) for a, c in zip(answered, completions)])
        empty = np.array([not c.strip() for c in completions])
        return np.where(empty, 0.0, cosine * own).astype(np.float32)


@functools.cache
def _reference(model: str) -> tuple[Any, torch.nn.Module]:
    from textgym.models import load_model, load_tokenizer

    return load_tokenizer(model), load_model(model)


class NextTurnGain:
    """Mean log-likelihood (nats per token) of the real next user turn after each reply minus
    after ``neutral``, under the frozen ``model``, clipped to [-``clip``, ``clip``]; 0 where the
    chat ended (an empty ``next_turn``). The neutral reply's score is computed once per answered
    turn and next turn, and kept.

    :param model: the reference model's name (the default model: the policy's starting point).
    :param neutral: the reply the reply is compared with.
    :param clip: the bound of the difference.
    :param batch_size: sequences per forward pass.
    """

    name = "next_turn"

    def __init__(
        self, model: str | None = None, neutral: str = NEUTRAL_REPLY, clip: float = 1.0, batch_size: int = 16
    ):
        from textgym.models import DEFAULT_MODEL, check_model_name

        self.model = check_model_name(DEFAULT_MODEL if model is None else model)
        if not isinstance(neutral, str) or not neutral.strip():
            raise ValueError(f"neutral must be a non-empty reply, got {neutral!r}")
        if isinstance(clip, bool) or not isinstance(clip, (int, float)) or not clip > 0:
            raise ValueError(f"clip must be a positive number, got {clip!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.neutral, self.clip, self.batch_size = neutral, float(clip), batch_size
        self._neutral_scores: dict[tuple[str, str], float] = {}

    def __call__(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        references: Sequence[Sequence[str]],
        turns: Sequence[Any] | None = None,
        next_turn: Sequence[str | None] | None = None,
    ) -> np.ndarray:
        check_batch(prompts, completions, references)
        if next_turn is None:
            raise ValueError(
                "reward 'next_turn' needs the examples' column 'next_turn' (the user's turn after the "
                "reply): dataset 'chitchat-dialogue' has it"
            )
        answered = _answered_turns(prompts, turns)
        scored = [i for i, nxt in enumerate(next_turn) if nxt]
        keys = list(dict.fromkeys((answered[i], next_turn[i]) for i in scored))
        missing = [key for key in keys if key not in self._neutral_scores]
        if missing:
            for key, value in zip(missing, self.log_likelihoods([(a, self.neutral, n) for a, n in missing])):
                self._neutral_scores[key] = value
        values = np.zeros(len(completions), dtype=np.float32)
        replies = self.log_likelihoods([(answered[i], completions[i], next_turn[i]) for i in scored])
        for i, value in zip(scored, replies):
            gain = value - self._neutral_scores[(answered[i], next_turn[i])]
            values[i] = np.clip(gain, -self.clip, self.clip)
        return values

    def _encode(
        self, tokenizer: Any, answered: str, reply: str, next_turn: str
    ) -> tuple[list[int], list[int]]:
        """Token ids of the conversation up to the next turn, and of the next turn."""
        answered, reply = answered[-CONTEXT_CHARS:], reply[:REPLY_CHARS]
        if tokenizer.chat_template is not None:
            messages = [
                {"role": "user", "content": answered},
                {"role": "assistant", "content": reply},
                {"role": "user", "content": _SLOT},
            ]
            text = tokenizer.apply_chat_template(messages, tokenize=False)
            prefix = text[: text.rindex(_SLOT)]
        else:
            prefix = f"User: {answered}\nAssistant: {reply}\nUser: "
        prefix_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
        target_ids = tokenizer(next_turn[:NEXT_CHARS], add_special_tokens=False)["input_ids"]
        return list(prefix_ids), list(target_ids)

    @torch.inference_mode()
    def log_likelihoods(self, triples: Sequence[tuple[str, str, str]]) -> list[float]:
        """Mean log-likelihood per token of each ``next_turn`` after ``(answered, reply)``."""
        tokenizer, model = _reference(self.model)
        encoded = [self._encode(tokenizer, *triple) for triple in triples]
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        results: list[float] = []
        for start in range(0, len(encoded), self.batch_size):
            chunk = encoded[start : start + self.batch_size]
            width = max(len(p) + len(t) for p, t in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            target = torch.zeros((len(chunk), width), dtype=torch.bool)
            for row, (prefix, tokens) in enumerate(chunk):
                sequence = prefix + tokens
                ids[row, : len(sequence)] = torch.tensor(sequence)
                mask[row, : len(sequence)] = 1
                target[row, len(prefix) : len(sequence)] = True
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
            log_probs = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
            scored = target[:, 1:].float()
            means = (log_probs * scored).sum(-1) / scored.sum(-1).clamp(min=1)
            results += means.tolist()
        return results
