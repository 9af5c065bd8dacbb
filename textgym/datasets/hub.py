"""Hugging Face ``datasets`` corpora, for machines that have that library and reach the hub."""

from __future__ import annotations

from textgym.datasets.base import Example

PREFIX = "hf:"


def hub_examples(
    name: str, split: str, prompt_column: str = "prompt", reference_column: str = "reference"
) -> tuple[Example, ...]:
    """``name`` is ``hf:<path>`` or ``hf:<path>:<config>``; our split names are the hub's."""
    try:
        import datasets
    except ImportError as err:
        raise ImportError(f"dataset {name!r} needs the package 'datasets': pip install datasets") from err
    for option, column in (("prompt_column", prompt_column), ("reference_column", reference_column)):
        if not isinstance(column, str) or not column:
            raise TypeError(f"{option} must be a column name (a non-empty string), got {column!r}")
    path, _, config = name[len(PREFIX) :].partition(":")
    if not path:
        raise ValueError(f"dataset {name!r}: expected 'hf:<path>' or 'hf:<path>:<config>'")
    table = datasets.load_dataset(path, config or None, split=split)
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
