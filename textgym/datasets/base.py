"""The example type every task draws from, and the deterministic split rule."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

SPLITS = ("train", "validation", "test")
# Fractions of examples per split for corpora without an official split.
SPLIT_FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}


@dataclass(frozen=True)
class Example:
    """One episode's data.

    ``prompt`` is the text the model sees (already task-formatted). ``turns`` holds the
    conversation as ``(role, text)`` pairs when the task is a conversation, for the chat
    template; the env then formats ``turns`` instead of ``prompt``.
    """

    id: str
    prompt: str
    references: tuple[str, ...]
    turns: tuple[tuple[str, str], ...] | None = None


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
