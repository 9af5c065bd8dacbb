"""The batched reward signature, its checks, and the weighted combinator.

A reward function maps a batch to one float per text::

    fn(prompts: Sequence[str], completions: Sequence[str],
       references: Sequence[Sequence[str]]) -> np.ndarray  # (B,) float32
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence

import numpy as np

RewardFunction = Callable[[Sequence[str], Sequence[str], Sequence[Sequence[str]]], np.ndarray]


def check_batch(
    prompts: Sequence[str], completions: Sequence[str], references: Sequence[Sequence[str]]
) -> None:
    """Raise if the three batch arguments disagree in length or type."""
    if isinstance(completions, str) or isinstance(prompts, str):
        raise TypeError("prompts and completions must be sequences of strings, not a single string")
    if not len(prompts) == len(completions) == len(references):
        raise ValueError(
            f"batch sizes differ: {len(prompts)} prompts, {len(completions)} completions, "
            f"{len(references)} reference lists"
        )
    for refs in references:
        if isinstance(refs, str):
            raise TypeError("references must hold one sequence of reference texts per example, got a string")


def reward_name(fn: RewardFunction) -> str:
    return getattr(fn, "name", None) or getattr(fn, "__name__", None) or type(fn).__name__


def check_output(fn: RewardFunction, values: object, batch_size: int) -> np.ndarray:
    """The reward values as a (B,) float32 array; a clear error if the function misbehaved.

    Only numbers are accepted: numpy would turn the string "0.5" into 0.5 without a word."""
    try:
        raw = np.asarray(values)
    except ValueError:  # ragged nested sequences
        raw = np.asarray(values, dtype=object)
    if raw.dtype.kind not in "biuf":
        shown = repr(values)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise TypeError(
            f"reward function {reward_name(fn)!r} returned {type(values).__name__} {shown}: "
            "expected a sequence of numbers (one float per completion)"
        )
    array = raw.astype(np.float32)
    if array.shape != (batch_size,):
        raise ValueError(
            f"reward function {reward_name(fn)!r} returned shape {array.shape}, expected ({batch_size},)"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"reward function {reward_name(fn)!r} returned non-finite values {array}")
    return array


class WeightedSum:
    """``sum_k weight_k * term_k``; :meth:`components` gives each unweighted term."""

    def __init__(self, terms: Mapping[str, tuple[RewardFunction, float]], name: str = "weighted_sum"):
        if not terms:
            raise ValueError("WeightedSum needs at least one term")
        for key, (fn, weight) in terms.items():
            if not callable(fn):
                raise TypeError(f"term {key!r} is not callable: {fn!r}")
            if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not np.isfinite(weight):
                raise TypeError(f"weight of term {key!r} must be a finite number, got {weight!r}")
        self.terms = dict(terms)
        self.name = name

    def components(
        self, prompts: Sequence[str], completions: Sequence[str], references: Sequence[Sequence[str]]
    ) -> dict[str, np.ndarray]:
        check_batch(prompts, completions, references)
        return {
            key: check_output(fn, fn(prompts, completions, references), len(completions))
            for key, (fn, _) in self.terms.items()
        }

    def combine(self, components: Mapping[str, np.ndarray]) -> np.ndarray:
        total = sum(weight * components[key] for key, (_, weight) in self.terms.items())
        return np.asarray(total, dtype=np.float32)

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], references: Sequence[Sequence[str]]
    ) -> np.ndarray:
        return self.combine(self.components(prompts, completions, references))

    def __repr__(self) -> str:
        parts = ", ".join(f"{key}={weight:g}" for key, (_, weight) in self.terms.items())
        return f"WeightedSum({parts})"


def score(
    fn: RewardFunction,
    prompts: Sequence[str],
    completions: Sequence[str],
    references: Sequence[Sequence[str]],
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Total reward and its components for a batch, from any reward function."""
    check_batch(prompts, completions, references)
    if isinstance(fn, WeightedSum):
        components = fn.components(prompts, completions, references)
        return fn.combine(components), components
    total = check_output(fn, fn(prompts, completions, references), len(completions))
    return total, {reward_name(fn): total}
