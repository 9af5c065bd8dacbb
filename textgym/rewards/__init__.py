"""Batched reward functions ``(prompts, completions, references) -> np.ndarray`` (float32).

Registered names (for the envs' ``reward=`` argument and :func:`make_reward`):

========================  ==================================================================
``dialogue``              MiniLM similarity to the reference + degeneracy penalty
``dialogue-relevance``    ``relevance`` + degeneracy penalty (a candidate of the Dialogue study)
``dialogue-next-turn``    ``next_turn`` + degeneracy penalty (a candidate of the Dialogue study)
``dialogue-mix``          ``similarity`` + ``relevance`` + ``next_turn`` + degeneracy penalty
``summarization``         mean ROUGE-1/2/L F1 + degeneracy penalty
``translation``           sentence chrF in [0, 1] + degeneracy penalty
``concepts``              concept coverage in a sentence + 0.5 x ROUGE-L F1 + degeneracy penalty
``reasoning``             reasoning-gym's score of the stated answer, x 1.1 when stated in the
                          format (``The answer is ...``) + 0.5 x degeneracy penalty
``sentiment-positive``    VADER compound score of the completion
``sentiment-negative``    minus the VADER compound score
``similarity``            MiniLM cosine similarity to the closest reference
``rouge``, ``rouge1``,    ROUGE F1 (mean of the three, or one)
``rouge2``, ``rougeL``
``bleu``, ``chrf``        sacrebleu sentence BLEU / chrF, scaled to [0, 1]
``degeneracy``            -1 for empty text, else minus the repeated 4-gram rate (seq-rep-4)
``coverage``              the share of a prompt's concept words the text uses, in [0, 1]
``sentence_coverage``     coverage x min(1, function words / concepts) x (1 - prompt 3-gram copy
                          rate): none for a list of the concepts or a copy of the prompt
``relevance``             MiniLM similarity of a reply to the turn it answers x (1 - its 3-gram
                          copy rate from that turn)
``next_turn``             mean log-likelihood gain of the real next user turn after the reply over
                          after "Okay.", under the frozen default model, in [-1, 1]
``answer``                reasoning-gym's score in [0, 1] of the answer a text states
``answer_format``         1 when the text states its answer after ``answer is``/``answer:``
``formatted_answer``      ``answer`` when the text states it in that format, else 0
========================  ==================================================================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from textgym.rewards.base import RewardFunction, WeightedSum, call_reward, reward_name, score
from textgym.rewards.concepts import concept_coverage, sentence_coverage
from textgym.rewards.dialogue import ContextRelevance, NextTurnGain
from textgym.rewards.lexical import Rouge, bleu, chrf, degeneracy_penalty, repetition_rate
from textgym.rewards.reasoning import answer_format, answer_score, formatted_answer
from textgym.rewards.sentiment import VaderSentiment
from textgym.rewards.similarity import EmbeddingSimilarity

REWARDS: dict[str, Callable[[], RewardFunction]] = {
    "similarity": EmbeddingSimilarity,
    "rouge": Rouge,
    "rouge1": lambda: Rouge("rouge1"),
    "rouge2": lambda: Rouge("rouge2"),
    "rougeL": lambda: Rouge("rougeL"),
    "bleu": lambda: bleu,
    "chrf": lambda: chrf,
    "degeneracy": lambda: degeneracy_penalty,
    "coverage": lambda: concept_coverage,
    "sentence_coverage": lambda: sentence_coverage,
    "relevance": ContextRelevance,
    "next_turn": NextTurnGain,
    "answer": lambda: answer_score,
    "answer_format": lambda: answer_format,
    "formatted_answer": lambda: formatted_answer,
    "sentiment-positive": lambda: VaderSentiment("positive"),
    "sentiment-negative": lambda: VaderSentiment("negative"),
    "dialogue": lambda: combine({"similarity": 1.0, "degeneracy": 1.0}, name="dialogue"),
    "dialogue-relevance": lambda: combine({"relevance": 1.0, "degeneracy": 1.0}, name="dialogue-relevance"),
    "dialogue-next-turn": lambda: combine({"next_turn": 1.0, "degeneracy": 1.0}, name="dialogue-next-turn"),
    "dialogue-mix": lambda: combine(
        {"similarity": 1.0, "relevance": 1.0, "next_turn": 1.0, "degeneracy": 1.0}, name="dialogue-mix"
    ),
    "summarization": lambda: combine({"rouge": 1.0, "degeneracy": 1.0}, name="summarization"),
    "translation": lambda: combine({"chrf": 1.0, "degeneracy": 1.0}, name="translation"),
    "concepts": lambda: combine(
        {"sentence_coverage": 1.0, "rougeL": 0.5, "degeneracy": 1.0}, name="concepts"
    ),
    "reasoning": lambda: combine(
        {"answer": 1.0, "formatted_answer": 0.1, "degeneracy": 0.5}, name="reasoning"
    ),
}


def make_reward(reward: str | RewardFunction) -> RewardFunction:
    """A reward function from a registered name, or ``reward`` itself if it is callable."""
    if isinstance(reward, str):
        if reward not in REWARDS:
            raise ValueError(f"unknown reward {reward!r}: expected one of {sorted(REWARDS)} or a callable")
        return REWARDS[reward]()
    if callable(reward):
        return reward
    raise TypeError(f"reward must be a registered name or a callable, got {type(reward).__name__}")


def combine(weights: Mapping[str | RewardFunction, float], name: str = "weighted_sum") -> WeightedSum:
    """Weighted sum of rewards given by name or callable, e.g. ``combine({"bleu": 1, "degeneracy": 0.5})``."""
    terms = {}
    for key, weight in weights.items():
        fn = make_reward(key)
        term = key if isinstance(key, str) else reward_name(fn)
        if term in terms:
            raise ValueError(f"two terms are named {term!r}; give each reward a distinct name")
        terms[term] = (fn, weight)
    return WeightedSum(terms, name=name)


__all__ = [
    "REWARDS",
    "EmbeddingSimilarity",
    "RewardFunction",
    "Rouge",
    "VaderSentiment",
    "ContextRelevance",
    "NextTurnGain",
    "WeightedSum",
    "bleu",
    "call_reward",
    "chrf",
    "combine",
    "concept_coverage",
    "sentence_coverage",
    "degeneracy_penalty",
    "make_reward",
    "repetition_rate",
    "score",
]
