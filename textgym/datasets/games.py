"""Multi-turn tasks' episodes: the number-guessing game's secret numbers, and target-guided
conversations' contexts and target words."""

from __future__ import annotations

import functools
import random

import numpy as np

from textgym.datasets.base import SPLITS, Example, check_split

# Games per split; each draws its secret numbers with its own seeded RNG.
GAMES = {"train": 2000, "validation": 200, "test": 200}
SEED = 20261207


def number_prompt(high: int) -> str:
    return (
        f"Let's play a game. I am thinking of a whole number from 1 to {high}. Guess it: reply with one "
        "number, and I will tell you whether mine is higher or lower."
    )


def number_examples(split: str, high: int = 20) -> tuple[Example, ...]:
    """The secret numbers of ``split``'s games, uniform on ``1..high`` (``high`` from 2 to 10**6).

    The prompt is the same in every game (the secret is the partner's), so the splits differ only
    in their draws: each split has its own RNG (seeded with the split and ``high``), and the
    same games on every machine."""
    check_split(split)
    if isinstance(high, bool) or not isinstance(high, int) or not 2 <= high <= 10**6:
        raise ValueError(f"high must be an int from 2 to 1000000, got {high!r}")
    rng = np.random.default_rng([SEED, SPLITS.index(split), high])
    prompt = number_prompt(high)
    return tuple(
        Example(
            id=f"guess-{high}-{split}-{i}",
            prompt=prompt,
            references=(str(secret),),
            turns=(("user", prompt),),
            extra=(("secret", int(secret)), ("high", high)),
        )
        for i, secret in enumerate(rng.integers(1, high + 1, GAMES[split]))
    )


# Targets: content words (as the concepts corpus picks them) that occur in at least this many
# messages of the corpus, so that a partner can be led to them.
TARGET_MESSAGES = 300


@functools.cache
def target_vocabulary() -> tuple[str, ...]:
    """The words a target is drawn from: content words of at least four letters that occur in at
    least :data:`TARGET_MESSAGES` chat messages, sorted."""
    from textgym.datasets.concepts import _message_counts, content_words

    counts = _message_counts()
    words = {word for word, n in counts.items() if n >= TARGET_MESSAGES and len(word) >= 4}
    return tuple(sorted(w for w in words if content_words(w) == [w]))


def target_examples(split: str, context_turns: int = 2, seed: int = 0) -> tuple[Example, ...]:
    """Real chat contexts (``chitchat-dialogue``'s, ``context_turns`` turns ending with the
    partner's) each with a target word, drawn by a seeded RNG per context from
    :func:`target_vocabulary`, never one the context already uses. Column ``target``."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    from textgym.datasets.chitchat import dialogue_examples

    vocabulary, examples = target_vocabulary(), []
    for example in dialogue_examples(split, context_turns):
        used = {word.lower() for _, text in example.turns for word in text.split()}
        rng = random.Random(f"{seed}/{example.id}")
        target = rng.choice(vocabulary)
        while target in used:
            target = rng.choice(vocabulary)
        examples.append(Example(example.id, example.prompt, (target,), example.turns, (("target", target),)))
    return tuple(examples)
