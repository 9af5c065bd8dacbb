"""Hugging Face ``datasets`` corpora, for machines that have that library and reach the hub."""

from __future__ import annotations

from textgym.datasets.base import Example
from textgym.datasets.translation import check_language_pair, hub_translation_example

PREFIX = "hf:"


def hub_examples(
    name: str,
    split: str,
    prompt_column: str = "prompt",
    reference_column: str = "reference",
    translation: str | None = None,
) -> tuple[Example, ...]:
    """``name`` is ``hf:<path>`` or ``hf:<path>:<config>``; our split names are the hub's.

    ``translation="en-de"`` reads the layout of WMT and IWSLT, one ``{"translation": {"en": ...,
    "de": ...}}`` column, as "Translate into German: <en>" prompts with the ``de`` reference;
    the column options are then unused.
    """
    try:
        import datasets
    except ImportError as err:
        raise ImportError(f"dataset {name!r} needs the package 'datasets': pip install datasets") from err
    for option, column in (("prompt_column", prompt_column), ("reference_column", reference_column)):
        if not isinstance(column, str) or not column:
            raise TypeError(f"{option} must be a column name (a non-empty string), got {column!r}")
    pair = None if translation is None else check_language_pair(translation)
    path, _, config = name[len(PREFIX) :].partition(":")
    if not path:
        raise ValueError(f"dataset {name!r}: expected 'hf:<path>' or 'hf:<path>:<config>'")
    table = datasets.load_dataset(path, config or None, split=split)
    if pair is not None:
        return tuple(
            hub_translation_example(row, pair, f"{path}/{split}/{n}", name) for n, row in enumerate(table)
        )
    missing = {prompt_column, reference_column} - set(table.column_names)
    if missing:
        raise ValueError(
            f"dataset {name!r} has no column(s) {sorted(missing)}; columns: {table.column_names}"
        )
    examples = []
    for n, row in enumerate(table):
        reference = row[reference_column]
        references = tuple(reference) if isinstance(reference, list) else (str(reference),)
        examples.append(Example(f"{path}/{split}/{n}", str(row[prompt_column]), references))
    return tuple(examples)
