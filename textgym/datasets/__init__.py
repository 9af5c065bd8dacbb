"""Datasets: the packaged corpora, the user's JSONL/CSV files, and Hugging Face datasets.

``load_dataset(name, split)`` returns a tuple of :class:`Example`. Splits are fixed and
disjoint: the corpus' own split where it has one, else a stable hash of the conversation or row.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textgym.datasets.aclsum import summarization_examples
from textgym.datasets.base import SPLITS, Example, check_split, example_columns, split_of
from textgym.datasets.chitchat import dialogue_examples, opening_examples
from textgym.datasets.concepts import concept_examples
from textgym.datasets.files import SUFFIXES, file_examples
from textgym.datasets.games import number_examples, target_examples
from textgym.datasets.hub import PREFIX as HUB_PREFIX
from textgym.datasets.hub import hub_examples
from textgym.datasets.reasoning import reasoning_examples
from textgym.datasets.translation import translation_examples

# name -> (builder(split, **options), one-line description)
DATASETS: dict[str, tuple[Callable[..., tuple[Example, ...]], str]] = {
    "chitchat-dialogue": (dialogue_examples, "last turns of real chats (chitchat-dataset) -> next turn"),
    "chitchat-openings": (opening_examples, "opening words of real chat messages (chitchat-dataset)"),
    "chitchat-concepts": (concept_examples, "3-5 content words of a real chat message -> the message"),
    "aclsum": (summarization_examples, "ACL paper abstracts -> human summaries (aclsum)"),
    "jupyterlab-l10n": (
        translation_examples,
        "English UI strings -> French/German human translations (JupyterLab language packs)",
    ),
    "reasoning-gym": (reasoning_examples, "verifiable problems of any reasoning-gym dataset (seeded pools)"),
    "guess-number": (
        number_examples,
        "secret numbers of a guessing game, uniform on 1..high (seeded per split)",
    ),
    "chitchat-targets": (
        target_examples,
        "real chat contexts (chitchat-dataset), each with a target word for the partner to say",
    ),
}


def dataset_options(name: str) -> tuple[str, ...]:
    """The keyword options dataset ``name`` accepts (its builder's parameters after the split)."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"dataset must be a non-empty string, got {name!r}")
    if name in DATASETS:
        builder: Callable[..., Any] = DATASETS[name][0]
    elif name.startswith(HUB_PREFIX):
        builder = hub_examples
    elif Path(name).suffix in SUFFIXES:
        return ()
    else:
        raise ValueError(
            f"unknown dataset {name!r}: expected one of {sorted(DATASETS)}, a path ending in "
            f"{list(SUFFIXES)}, or '{HUB_PREFIX}<hub path>'"
        )
    parameters = list(inspect.signature(builder).parameters)
    return tuple(parameters[parameters.index("split") + 1 :])


def load_dataset(name: str, split: str = "train", **options: Any) -> tuple[Example, ...]:
    """Examples of ``split`` from a registered corpus, a ``.jsonl``/``.csv`` file or ``hf:<path>``."""
    check_split(split)
    accepted = dataset_options(name)
    unknown = [key for key in options if key not in accepted]
    if unknown:
        raise TypeError(
            f"unknown option(s) {unknown} for dataset {name!r}; accepted: {list(accepted) or 'none'}"
        )
    if name in DATASETS:
        examples = DATASETS[name][0](split, **options)
    elif name.startswith(HUB_PREFIX):
        examples = hub_examples(name, split, **options)
    else:
        examples = file_examples(name, split)
    if not examples:
        raise ValueError(f"dataset {name!r} has no examples in split {split!r}")
    return examples


__all__ = ["DATASETS", "SPLITS", "Example", "dataset_options", "example_columns", "load_dataset", "split_of"]
