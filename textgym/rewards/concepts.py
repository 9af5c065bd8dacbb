"""Concept coverage (CommonGen's metric): the share of the asked-for words a text uses; and the
same share counted only in a sentence of the text's own, the reward's form of it, which neither
a list of the concepts nor a copy of the prompt can earn."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

import numpy as np

from textgym.datasets.concepts import concepts_of, stop_words
from textgym.rewards.base import check_batch
from textgym.rewards.lexical import copy_rate

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


def sentence_form(concepts: Sequence[str], text: str) -> float:
    """``min(1, function words / concepts)``: 1 for a sentence, 0 for a bare list of words.

    Function words are those of the stop-word list the concepts are drawn apart from ("the",
    "in", "and", "I"), so a concept never counts as one. 97.5% of the task's references (the
    first 3,000 of its train split) have at least as many function words as concepts.
    """
    if not concepts:
        raise ValueError("sentence_form needs at least one concept")
    stops = stop_words()
    return min(1.0, sum(word in stops for word in _WORD.findall(text.lower())) / len(concepts))


def concept_coverage(
    prompts: Sequence[str], completions: Sequence[str], references: Sequence[Sequence[str]]
) -> np.ndarray:
    """Coverage of the concepts each prompt lists (``"Write one sentence that uses all of these
    words: a, b, c."``) by its completion, in [0, 1]."""
    check_batch(prompts, completions, references)
    return np.array([coverage(concepts_of(p), c) for p, c in zip(prompts, completions)], dtype=np.float32)


def sentence_coverage(
    prompts: Sequence[str], completions: Sequence[str], references: Sequence[Sequence[str]]
) -> np.ndarray:
    """Coverage x :func:`sentence_form` x (1 - :func:`~textgym.rewards.lexical.copy_rate` of the
    prompt), in [0, 1]: the concepts a text uses in a sentence of its own.

    GRPO trained on plain coverage learned to list the concepts ("Dogs, frisbee, park."); with
    the sentence form alone, to copy the prompt's words around the list ("This sentence uses all
    of these words: dogs, frisbee, park."). Each factor closes one of those two ways.
    """
    check_batch(prompts, completions, references)
    values = []
    for prompt, text in zip(prompts, completions):
        concepts = concepts_of(prompt)
        own = 1.0 - copy_rate(prompt, text)
        values.append(coverage(concepts, text) * sentence_form(concepts, text) * own)
    return np.array(values, dtype=np.float32)
