"""The example type every task draws from, and the deterministic split rule."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SPLITS = ("train", "validation", "test")
# Fractions of examples per split for corpora without an official split.
SPLIT_FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}


@dataclass(frozen=True)
class Example:
    """One episode's data.

    ``prompt`` is the text the model sees (already task-formatted). ``turns`` holds the
    conversation as ``(role, text)`` pairs when the task is a conversation, for the chat
    template; the env then formats ``turns`` instead of ``prompt``. ``extra`` holds further
    columns as ``(name, value)`` pairs (a conversation's next turn, for one); reward functions
    that name a column as a keyword argument receive it (:func:`example_columns`).
    """

    id: str
    prompt: str
    references: tuple[str, ...]
    turns: tuple[tuple[str, str], ...] | None = None
    extra: tuple[tuple[str, Any], ...] = ()


def example_columns(examples: Sequence[Example]) -> dict[str, list[Any]]:
    """The examples' extra columns as ``{name: [value per example]}`` (None where an example
    lacks one), plus ``turns`` where any example is a conversation; the keyword arguments a
    reward function may take, as TRL passes a dataset's other columns to its reward functions."""
    names = list(dict.fromkeys(name for example in examples for name, _ in example.extra))
    columns = {name: [dict(example.extra).get(name) for example in examples] for name in names}
    if any(example.turns is not None for example in examples):
        columns["turns"] = [example.turns for example in examples]
    return columns


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {list(SPLITS)}")
    return split


def split_of(key: str) -> str:
    """The split a group of examples belongs to, from a stable hash of its key.

    Whole groups (a conversation, a paper) go to one split, so no text leaks across splits.
    """
    bucket = int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big") / 2**64
    if bucket < SPLIT_FRACTIONS["train"]:
        return "train"
    if bucket < SPLIT_FRACTIONS["train"] + SPLIT_FRACTIONS["validation"]:
        return "validation"
    return "test"


def check_options(argument: str, owner: str, value: Any, accepted: Sequence[str]) -> Mapping[str, Any]:
    """``value`` if it is a dict whose keys ``owner`` accepts, else one error naming ``argument``,
    ``owner`` (as "dataset 'x'") and the accepted keys."""
    keys = list(accepted) or "none"
    if not isinstance(value, Mapping):
        raise TypeError(
            f"{argument} must be a dict of options for {owner} (accepted keys: {keys}) or None, "
            f"got {type(value).__name__} {value!r}"
        )
    unknown = [key for key in value if key not in accepted]
    if unknown:
        raise TypeError(f"{argument} has unknown key(s) {unknown} for {owner}; accepted keys: {keys}")
    return value
