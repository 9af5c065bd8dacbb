"""Rewards of verifiable reasoning tasks: the answer a completion states, graded by reasoning-gym.

A completion states its answer as ``The answer is <answer>.`` (the phrase a small instruct
model uses by itself). :func:`extract_answer` takes the text after the last marker, ``answer
is`` or ``answer:`` (case-insensitive), up to the end of its line and then up to the first
period followed by a space; without a marker, the last number in the text (``-12``, ``3.5``,
``1,024``, ``2/3``); without a number, the last non-empty line. The answer is then stripped of
spaces, of markdown bold (``**``) and of one final period. The prompt (the question) finds the
reasoning-gym entry among the pools generated in this process
(:func:`textgym.datasets.reasoning.find_entry`), and the dataset's own
``score_answer(answer, entry)`` grades it; an unknown prompt is graded by exact comparison with
the first reference.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from textgym.rewards.base import check_batch

_MARKER = re.compile(r"\banswer(?:\s+is\b\s*:?|\s*:)", re.IGNORECASE)
_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?(?:/\d+)?|[-+]?\.\d+")


def extract_answer(text: str) -> tuple[str, bool]:
    """The answer ``text`` states, and whether it used the answer format (see the module)."""
    markers = list(_MARKER.finditer(text))
    if markers:
        line = text[markers[-1].end() :].split("\n", 1)[0]
        answer, formatted = re.split(r"\.\s", line, maxsplit=1)[0], True
    else:
        numbers = _NUMBER.findall(text)
        lines = [line for line in text.splitlines() if line.strip()]
        answer = numbers[-1] if numbers else (lines[-1] if lines else "")
        formatted = False
    answer = answer.strip()
    if answer.endswith("."):
        answer = answer[:-1].rstrip()
    if answer.startswith("**") and answer.endswith("**") and len(answer) >= 4:
        answer = answer[2:-2].strip()
    return answer, formatted


def _grade(prompt: str, answer: str, references: Sequence[str]) -> float:
    from textgym.datasets.reasoning import find_entry

    found = find_entry(prompt)
    if found is None:
        return float(bool(references) and answer == str(references[0]).strip())
    pool, entry = found
    try:
        value = float(pool.score_answer(answer, entry))
    except Exception:  # noqa: BLE001  (a scorer that chokes on malformed text gives it nothing)
        return 0.0
    return value if np.isfinite(value) else 0.0


def answer_score(
    prompts: Sequence[str], completions: Sequence[str], references: Sequence[Sequence[str]]
) -> np.ndarray:
    """The reasoning-gym score in [0, 1] of each completion's extracted answer."""
    check_batch(prompts, completions, references)
    return np.array(
        [_grade(p, extract_answer(c)[0], r) for p, c, r in zip(prompts, completions, references)],
        dtype=np.float32,
    )


def answer_format(
    prompts: Sequence[str], completions: Sequence[str], references: Sequence[Sequence[str]]
) -> np.ndarray:
    """1 when the completion states a non-empty answer after an answer marker, else 0."""
    check_batch(prompts, completions, references)
    values = []
    for completion in completions:
        answer, formatted = extract_answer(completion)
        values.append(float(formatted and bool(answer)))
    return np.array(values, dtype=np.float32)


def formatted_answer(
    prompts: Sequence[str], completions: Sequence[str], references: Sequence[Sequence[str]]
) -> np.ndarray:
    """The answer's score when the completion states it in the format, else 0.

    The format term of the ``reasoning`` reward: the format earns only what the answer earns.
    A bonus for the format alone was a sure reward that GRPO took in place of the answer (a
    20-minute run learned ``The answer is 5.`` for every question, and its accuracy fell).
    """
    return answer_score(prompts, completions, references) * answer_format(prompts, completions, references)


def accuracy(
    prompts: Sequence[str], completions: Sequence[str], references: Sequence[Sequence[str]]
) -> np.ndarray:
    """1 when the extracted answer scores 1.0 (exactly right), else 0."""
    return (answer_score(prompts, completions, references) >= 1.0).astype(np.float32)
