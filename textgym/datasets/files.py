"""The user's own data: JSONL or CSV files with prompt and reference columns.

Each row needs ``prompt`` and either ``reference`` (one text) or, in JSONL, ``references`` (a
list of texts). Optional ``id`` and ``split`` (train/validation/test) columns; without ``split``
rows are assigned by a stable hash of their id (or prompt), 80/10/10.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from textgym.datasets.base import SPLITS, Example, split_of

SUFFIXES = (".jsonl", ".csv")


def _example(row: dict[str, Any], where: str) -> tuple[str, Example]:
    if None in row:  # csv.DictReader files surplus fields under the key None
        raise ValueError(f"{where}: the row has more fields than the header")
    prompt = row.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"{where}: needs a non-empty 'prompt' text; columns found: {sorted(row)}")
    if row.get("references") not in (None, ""):
        references = row["references"]
        if isinstance(references, str):
            references = [references]
    elif row.get("reference") not in (None, ""):
        references = [row["reference"]]
    else:
        raise ValueError(f"{where}: needs a 'reference' or 'references' column; columns found: {sorted(row)}")
    if (
        not isinstance(references, list)
        or not references
        or not all(isinstance(r, str) and r.strip() for r in references)
    ):
        raise ValueError(
            f"{where}: 'references' must be a non-empty list of non-empty strings, got {references!r}"
        )
    example_id = str(row.get("id") or prompt)
    split = row.get("split") or split_of(example_id)
    if split not in SPLITS:
        raise ValueError(f"{where}: unknown split {split!r}, expected one of {list(SPLITS)}")
    return split, Example(example_id, prompt, tuple(references))


def _rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            return [(f"{path}:{n + 2}", row) for n, row in enumerate(csv.DictReader(handle))]
    rows = []
    with path.open(encoding="utf-8") as handle:
        for n, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{n}: not valid JSON ({err})") from err
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{n}: each line must be a JSON object, got {type(row).__name__}")
            rows.append((f"{path}:{n}", row))
    return rows


def file_examples(path: str | Path, split: str) -> tuple[Example, ...]:
    """The examples of ``split`` in a JSONL or CSV file."""
    path = Path(path).expanduser()
    if path.suffix not in SUFFIXES:
        raise ValueError(f"data file {str(path)!r} must end in one of {list(SUFFIXES)}")
    if not path.is_file():
        raise FileNotFoundError(f"data file {str(path)!r} does not exist")
    examples = []
    for where, row in _rows(path):
        row_split, example = _example(row, where)
        if row_split == split:
            examples.append(example)
    return tuple(examples)
