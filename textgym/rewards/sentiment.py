"""Sentiment reward: the VADER compound score of the completion, signed by the target."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from textgym.rewards.base import check_batch

TARGETS = ("positive", "negative")


@functools.cache
def _analyzer() -> object:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


class VaderSentiment:
    """VADER compound score in [-1, 1] of each completion; negated when the target is negative."""

    def __init__(self, target: str = "positive"):
        if target not in TARGETS:
            raise ValueError(f"unknown sentiment target {target!r}: expected one of {list(TARGETS)}")
        self.target = target
        self.name = f"vader_{target}"

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], references: Sequence[Sequence[str]]
    ) -> np.ndarray:
        check_batch(prompts, completions, references)
        sign = 1.0 if self.target == "positive" else -1.0
        analyzer = _analyzer()
        return np.array(
            [sign * analyzer.polarity_scores(c)["compound"] for c in completions], dtype=np.float32
        )
