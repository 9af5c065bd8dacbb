"""Games a scripted partner plays: the number-guessing game's secret numbers."""

from __future__ import annotations

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
