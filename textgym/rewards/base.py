"""The batched reward signature, its checks, and the weighted combinator.

A reward function maps a batch to one float per text::

    fn(prompts: Sequence[str], completions: Sequence[str],
       references: Sequence[Sequence[str]]) -> np.ndarray  # (B,) float32

It may also take keyword arguments named after the examples' extra columns (a conversation's
``turns``, its ``next_turn``: :func:`textgym.datasets.example_columns`), one value per text, as
TRL passes a dataset's other columns to its reward functions; :func:`call_reward` passes each
function the columns it names (all of them to a ``**kwargs``).
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

RewardFunction = Callable[..., np.ndarray]
Columns = Mapping[str, Sequence[Any]]
_POSITIONAL = ("prompts", "completions", "references")


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


def _named_columns(fn: RewardFunction, columns: Columns) -> dict[str, Sequence[Any]]:
    """The columns ``fn`` takes as keyword arguments: those it names, or all for ``**kwargs``."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a callable without a signature takes none
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return dict(columns)
    named = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return {name: values for name, values in columns.items() if name in named}


def check_columns(columns: Columns | None, batch_size: int) -> Columns:
    """``columns`` (or ``{}``) once each holds one value per text and none shadows an argument."""
    if columns is None:
        return {}
    for name, values in columns.items():
        if name in _POSITIONAL:
            raise ValueError(f"column {name!r} has the name of a reward argument: rename it")
        if isinstance(values, str) or not isinstance(values, Sequence) or len(values) != batch_size:
            shown = repr(values) if len(repr(values)) <= 80 else repr(values)[:77] + "..."
            raise ValueError(f"column {name!r} must be a list of one value per text ({batch_size}): {shown}")
    return columns


def call_reward(
    fn: RewardFunction,
    prompts: Sequence[str],
    completions: Sequence[str],
    references: Sequence[Sequence[str]],
    columns: Columns | None = None,
) -> np.ndarray:
    """``fn``'s checked (B,) float32 values, given the ``columns`` it names as keyword arguments."""
    kwargs = _named_columns(fn, check_columns(columns, len(completions))) if columns else {}
    return check_output(fn, fn(prompts, completions, references, **kwargs), len(completions))


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
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        references: Sequence[Sequence[str]],
        **columns: Sequence[Any],
    ) -> dict[str, np.ndarray]:
        check_batch(prompts, completions, references)
        return {
            key: call_reward(fn, prompts, completions, references, columns)
            for key, (fn, _) in self.terms.items()
        }

    def combine(self, components: Mapping[str, np.ndarray]) -> np.ndarray:
        total = sum(weight * components[key] for key, (_, weight) in self.terms.items())
        return np.asarray(total, dtype=np.float32)

    def __call__(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        references: Sequence[Sequence[str]],
        **columns: Sequence[Any],
    ) -> np.ndarray:
        return self.combine(self.components(prompts, completions, references, **columns))

    def __repr__(self) -> str:
        parts = ", ".join(f"{key}={weight:g}" for key, (_, weight) in self.terms.items())
        return f"WeightedSum({parts})"


def score(
    fn: RewardFunction,
    prompts: Sequence[str],
    completions: Sequence[str],
    references: Sequence[Sequence[str]],
    columns: Columns | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Total reward and its components for a batch, from any reward function (given the
    ``columns`` it names, see :func:`call_reward`)."""
    check_batch(prompts, completions, references)
    if isinstance(fn, WeightedSum):
        columns = check_columns(columns, len(completions))
        components = fn.components(prompts, completions, references, **columns)
        return fn.combine(components), components
    total = call_reward(fn, prompts, completions, references, columns)
    return total, {reward_name(fn): total}
