"""Rewards computed from the words alone: ROUGE, BLEU, chrF and the degeneracy penalty."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

import numpy as np

from textgym.rewards.base import check_batch

_TOKEN = re.compile(r"\w+|[^\w\s]")
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def repetition_rate(text: str, n: int = 4) -> float:
    """seq-rep-n (Welleck et al., 2020): the fraction of the text's token n-grams that repeat an
    earlier one. 0 for ordinary prose, near 1 for a loop; texts shorter than n tokens get 0."""
    tokens = _TOKEN.findall(text.lower())
    if len(tokens) < n:
        return 0.0
    grams = list(zip(*(tokens[i:] for i in range(n))))
    return 1.0 - len(set(grams)) / len(grams)


def copy_rate(source: str, text: str, n: int = 3) -> float:
    """The share of the text's n-grams of words and punctuation (lower-cased) that ``source``
    holds, in [0, 1]; 0 for a text shorter than ``n`` tokens."""
    tokens = _TOKEN.findall(text.lower())
    if len(tokens) < n:
        return 0.0
    words = _TOKEN.findall(source.lower())
    held = set(zip(*(words[i:] for i in range(n))))
    grams = list(zip(*(tokens[i:] for i in range(n))))
    return sum(gram in held for gram in grams) / len(grams)


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """distinct-n (Li et al., 2016): unique word n-grams over all n-grams of a set of texts.

    A diversity measure of a policy's outputs (1: no n-gram repeats anywhere; near 0: the same
    phrase over and over). Returns 0 when the texts hold no n-gram at all.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    grams = []
    for text in texts:
        tokens = _TOKEN.findall(text.lower())
        grams += zip(*(tokens[i:] for i in range(n)))
    return len(set(grams)) / len(grams) if grams else 0.0


def degeneracy_penalty(
    prompts: Sequence[str], completions: Sequence[str], references: Sequence[Sequence[str]]
) -> np.ndarray:
    """-1 for an empty text, else minus its repetition rate (seq-rep-4); in [-1, 0]."""
    check_batch(prompts, completions, references)
    return np.array(
        [-1.0 if not c.strip() else 0.0 - repetition_rate(c) for c in completions], dtype=np.float32
    )


@functools.cache
def _rouge_scorer() -> object:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


class Rouge:
    """ROUGE F1 (rouge-score, Porter stemming) against the best-matching reference.

    ``kind`` is one of ``rouge1``, ``rouge2``, ``rougeL``, or ``mean`` (their average).
    """

    def __init__(self, kind: str = "mean"):
        if kind not in (*ROUGE_TYPES, "mean"):
            raise ValueError(f"unknown ROUGE kind {kind!r}: expected one of {[*ROUGE_TYPES, 'mean']}")
        self.kind = kind
        self.name = "rouge" if kind == "mean" else kind

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], references: Sequence[Sequence[str]]
    ) -> np.ndarray:
        check_batch(prompts, completions, references)
        scorer = _rouge_scorer()
        kinds = ROUGE_TYPES if self.kind == "mean" else (self.kind,)
        values = []
        for completion, refs in zip(completions, references):
            best = 0.0
            for ref in refs:
                scores = scorer.score(ref, completion)
                best = max(best, float(np.mean([scores[k].fmeasure for k in kinds])))
            values.append(best)
        return np.array(values, dtype=np.float32)


def _sentence_scores(
    metric: str, completions: Sequence[str], references: Sequence[Sequence[str]]
) -> np.ndarray:
    """A sacrebleu sentence metric (``sentence_bleu``, ``sentence_chrf``) per example, in [0, 1]."""
    import sacrebleu

    score_fn = getattr(sacrebleu, metric)
    return np.array(
        [score_fn(c, list(r)).score / 100 for c, r in zip(completions, references)], dtype=np.float32
    )


def bleu(
    prompts: Sequence[str], completions: Sequence[str], references: Sequence[Sequence[str]]
) -> np.ndarray:
    """Sentence BLEU (sacrebleu, exponential smoothing) over all references, scaled to [0, 1]."""
    check_batch(prompts, completions, references)
    return _sentence_scores("sentence_bleu", completions, references)


def chrf(
    prompts: Sequence[str], completions: Sequence[str], references: Sequence[Sequence[str]]
) -> np.ndarray:
    """Sentence chrF (sacrebleu) over all references, scaled to [0, 1]."""
    check_batch(prompts, completions, references)
    return _sentence_scores("sentence_chrf", completions, references)
