"""Open-domain conversations from the ``chitchat-dataset`` package (BYU PCC lab, 7,168 chats)."""

from __future__ import annotations

import functools
import importlib.util
import itertools
import json
from pathlib import Path

from textgym.datasets.base import Example, split_of

_PACKAGE = "chitchat-dataset"


def _data_file() -> Path:
    spec = importlib.util.find_spec("chitchat_dataset")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the chitchat corpora need the package {_PACKAGE!r}: pip install {_PACKAGE}")
    return Path(next(iter(spec.submodule_search_locations))) / "dataset.json"


@functools.cache
def conversations() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Every conversation as ``(id, turns)``; a turn joins one speaker's consecutive messages."""
    with _data_file().open(encoding="utf-8") as handle:
        raw = json.load(handle)
    result = []
    for conv_id, conv in raw.items():
        utterances = [
            (u["sender"], u["text"].strip())
            for message in conv["messages"]
            for u in message
            if u["text"].strip()
        ]
        # Group by sender, not by message: dropping an empty message can leave two of one
        # speaker's messages side by side, and they form one turn.
        turns = tuple(
            " ".join(text for _, text in group)
            for _, group in itertools.groupby(utterances, key=lambda u: u[0])
        )
        result.append((conv_id, turns))
    return tuple(result)


def dialogue_examples(split: str, context_turns: int = 3) -> tuple[Example, ...]:
    """Context = up to ``context_turns`` turns of a chat; reference = the turn that followed.

    The speaker who wrote the reference is the assistant, the other one the user, so the last
    context turn is always the user's. Column ``next_turn`` (``Example.extra``) is the user's
    turn after the reference, ``""`` where the chat ended with the reference.
    """
    if isinstance(context_turns, bool) or not isinstance(context_turns, int) or context_turns < 1:
        raise ValueError(f"context_turns must be a positive int, got {context_turns!r}")
    return _dialogue_examples(split, context_turns)  # checked first: the cache needs hashable values


@functools.lru_cache(maxsize=16)
def _dialogue_examples(split: str, context_turns: int) -> tuple[Example, ...]:
    examples = []
    for conv_id, turns in conversations():
        if split_of(conv_id) != split:
            continue
        for i in range(1, len(turns)):
            context = turns[max(0, i - context_turns) : i]
            roles = ["user" if (len(context) - j) % 2 == 1 else "assistant" for j in range(len(context))]
            pairs = tuple(zip(roles, context))
            lines = [f"{role.capitalize()}: {text}" for role, text in pairs]
            prompt = "\n".join([*lines, "Assistant:"])
            extra = (("next_turn", turns[i + 1] if i + 1 < len(turns) else ""),)
            examples.append(Example(f"{conv_id}/{i}", prompt, (turns[i],), pairs, extra))
    return tuple(examples)


def opening_examples(split: str, prompt_words: int = 6, min_words: int = 12) -> tuple[Example, ...]:
    """Prompt = the first ``prompt_words`` words of a chat turn at least ``min_words`` long;
    reference = the rest of that turn, as its writer continued it."""
    if isinstance(prompt_words, bool) or not isinstance(prompt_words, int) or prompt_words < 1:
        raise ValueError(f"prompt_words must be a positive int, got {prompt_words!r}")
    if isinstance(min_words, bool) or not isinstance(min_words, int) or min_words <= prompt_words:
        raise ValueError(f"min_words must be an int above prompt_words={prompt_words}, got {min_words!r}")
    return _opening_examples(split, prompt_words, min_words)  # checked first: the cache needs hashable values


@functools.lru_cache(maxsize=16)
def _opening_examples(split: str, prompt_words: int, min_words: int) -> tuple[Example, ...]:
    examples = []
    for conv_id, turns in conversations():
        if split_of(conv_id) != split:
            continue
        for i, turn in enumerate(turns):
            words = turn.split()
            if len(words) >= min_words:
                prompt = " ".join(words[:prompt_words])
                examples.append(Example(f"{conv_id}/{i}", prompt, (" ".join(words[prompt_words:]),)))
    return tuple(examples)
