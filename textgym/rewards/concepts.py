"""Concept coverage (CommonGen's metric): the share of the asked-for words a text uses."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

import numpy as np

from textgym.datasets.concepts import concepts_of
from textgym.rewards.base import check_batch

_WORD = re.compile(r"[a-z]+")


@functools.cache
def _stem(word: str) -> str:
    return _porter().stem(word)


@functools.cache
def _porter() -> object:
    # The Porter stemmer that rouge-score stems with (nltk comes with rouge-score).
    from nltk.stem.porter import PorterStemmer

    return PorterStemmer()


def stems(text: str) -> frozenset[str]:
    """The Porter stems of a text's words, lower-cased."""
    return frozenset(_stem(word) for word in _WORD.findall(text.lower()))


def coverage(concepts: Sequence[str], text: str) -> float:
    """The share of ``concepts`` that ``text`` uses, in [0, 1].

    A concept counts in any inflection that shares its Porter stem ("dogs" for "dog",
    "writing" for "write"); irregular forms ("wrote" for "write") do not count.
    """
    if not concepts:
        raise ValueError("coverage needs at least one concept")
    found = stems(text)
    return sum(_stem(concept.lower()) in found for concept in concepts) / len(concepts)


def concept_coverage(
    prompts: Sequence[str], completions: Sequence[str], references: Sequence[Sequence[str]]
) -> np.ndarray:
    """Coverage of the concepts each prompt lists (``"Write one sentence that uses all of these
    words: a, b, c."``) by its completion, in [0, 1]."""
    check_batch(prompts, completions, references)
    return np.array([coverage(concepts_of(p), c) for p, c in zip(prompts, completions)], dtype=np.float32)
