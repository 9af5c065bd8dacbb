"""Each task's standard metrics, per example, in the unit papers report them in.

A metric has a reward's signature, ``(prompts, completions, references) -> np.ndarray``
(one value per example). Tasks name theirs in ``TaskDefaults.metrics``; evaluation reports
their means with confidence intervals next to the task reward.

=================  ====================================================================
``rouge1/2/L``     ROUGE F1 (rouge-score, stemmed) against the best reference, in [0, 1]
``bleu``           sentence BLEU (sacrebleu, exponential smoothing), in [0, 100]
``chrf``           sentence chrF (sacrebleu), in [0, 100]
``ter``            sentence TER (sacrebleu): edits per reference word, in percent; 0 is a
                   perfect match, lower is better, and it may pass 100
``similarity``     MiniLM cosine similarity to the closest reference, in [-1, 1]
``relevance``      MiniLM similarity of a reply to the turn it answers x (1 - its 3-gram copy
                   rate from it), in [-1, 1] (:mod:`textgym.rewards.dialogue`)
``next_turn``      log-likelihood gain of the real next user turn after the reply over after
                   "Okay.", nats per token in [-1, 1]; needs the column ``next_turn``
``coverage``       the share of the prompt's concept words the text uses (Porter stems), in [0, 1]
``vader``          VADER compound score of the text, in [-1, 1]
``positive_rate``  1 when the VADER compound score is at least 0.05 (VADER's own threshold
                   for positive), else 0
``accuracy``       1 when reasoning-gym scores the stated answer 1.0 (exactly right), else 0
``format``         1 when the text states its answer after ``answer is`` or ``answer:``,
                   else 0
=================  ====================================================================
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from textgym.rewards.base import Columns, RewardFunction, call_reward, check_batch
from textgym.rewards.concepts import concept_coverage
from textgym.rewards.dialogue import ContextRelevance, NextTurnGain
from textgym.rewards.lexical import Rouge, bleu, chrf
from textgym.rewards.reasoning import accuracy, answer_format
from textgym.rewards.sentiment import VaderSentiment
from textgym.rewards.similarity import EmbeddingSimilarity

POSITIVE_THRESHOLD = 0.05  # Hutto & Gilbert (2014): compound >= 0.05 is positive


def bleu_100(
    prompts: Sequence[str], completions: Sequence[str], references: Sequence[Sequence[str]]
) -> np.ndarray:
    """Sentence BLEU in sacrebleu's usual [0, 100] scale."""
    return bleu(prompts, completions, references) * np.float32(100)


def chrf_100(
    prompts: Sequence[str], completions: Sequence[str], references: Sequence[Sequence[str]]
) -> np.ndarray:
    """Sentence chrF in sacrebleu's usual [0, 100] scale."""
    return chrf(prompts, completions, references) * np.float32(100)


def ter(
    prompts: Sequence[str], completions: Sequence[str], references: Sequence[Sequence[str]]
) -> np.ndarray:
    """Sentence TER (sacrebleu) against all references, in percent (lower is better)."""
    check_batch(prompts, completions, references)
    import sacrebleu

    return np.array(
        [sacrebleu.sentence_ter(c, list(r)).score for c, r in zip(completions, references)], dtype=np.float32
    )


def positive_rate(
    prompts: Sequence[str], completions: Sequence[str], references: Sequence[Sequence[str]]
) -> np.ndarray:
    """1.0 for texts VADER calls positive (compound >= 0.05), else 0.0."""
    compound = VaderSentiment("positive")(prompts, completions, references)
    return (compound >= POSITIVE_THRESHOLD).astype(np.float32)


METRICS: dict[str, Callable[[], RewardFunction]] = {
    "rouge1": lambda: Rouge("rouge1"),
    "rouge2": lambda: Rouge("rouge2"),
    "rougeL": lambda: Rouge("rougeL"),
    "bleu": lambda: bleu_100,
    "chrf": lambda: chrf_100,
    "ter": lambda: ter,
    "similarity": EmbeddingSimilarity,
    "relevance": ContextRelevance,
    "next_turn": NextTurnGain,
    "coverage": lambda: concept_coverage,
    "vader": lambda: VaderSentiment("positive"),
    "positive_rate": lambda: positive_rate,
    "accuracy": lambda: accuracy,
    "format": lambda: answer_format,
}


def compute_metrics(
    names: Sequence[str],
    prompts: Sequence[str],
    completions: Sequence[str],
    references: Sequence[Sequence[str]],
    columns: Columns | None = None,
) -> dict[str, np.ndarray]:
    """``{name: (N,) float32}`` for each registered metric in ``names`` (given the examples'
    ``columns`` it names, as rewards are: :func:`textgym.rewards.base.call_reward`)."""
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}: expected names from {sorted(METRICS)}")
    return {name: call_reward(METRICS[name](), prompts, completions, references, columns) for name in names}
