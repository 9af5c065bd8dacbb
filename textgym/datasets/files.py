"""The user's own data: JSONL or CSV files with prompt and reference columns.

Each row needs ``prompt`` and either ``reference`` (one text) or, in JSONL, ``references`` (a
list of texts). Optional ``id`` and ``split`` (train/validation/test) columns; without ``split``
rows are assigned by a stable hash of their id (or prompt), 80/10/10.
"""

from __future__ import annotations

import csv
import io
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
    elif "reference" in row or "references" in row:
        column = "references" if "references" in row else "reference"
        raise ValueError(f"{where}: the {column!r} column is empty; every row needs a reference text")
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
    example_id = prompt if row.get("id") in (None, "") else str(row["id"])  # keep falsy ids such as 0
    split = row.get("split") or split_of(example_id)
    if split not in SPLITS:
        raise ValueError(f"{where}: unknown split {split!r}, expected one of {list(SPLITS)}")
    return split, Example(example_id, prompt, tuple(references))


def _text(path: Path) -> str:
    """The file's text: UTF-8, with or without the byte-order mark spreadsheet programs write."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ValueError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[err.start]:02x}); save the file as UTF-8"
        ) from None


def _csv_rows(path: Path, text: str) -> list[tuple[str, dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = []
    try:
        for row in reader:  # reader.line_num: the line the row ends on (a quoted field may span lines)
            rows.append((f"{path}:{reader.line_num}", row))
    except csv.Error as err:
        line = reader.reader.line_num  # the line being read (DictReader's own counts finished rows)
        if "field larger than field limit" in str(err):
            raise ValueError(
                f"{path}:{line}: a field is longer than {csv.field_size_limit():,} characters, the most "
                "a CSV field may hold here; shorten it, or write the data as a .jsonl file"
            ) from None
        raise ValueError(f"{path}:{line}: not valid CSV ({err})") from None
    return rows


def _jsonl_rows(path: Path, text: str) -> list[tuple[str, dict[str, Any]]]:
    rows = []
    # Not splitlines(): a JSON string may hold U+2028, which splitlines() would break on.
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as err:  # JSONDecodeError, and integers past Python's digit limit
            raise ValueError(f"{path}:{n}: not valid JSON ({err})") from None
        except RecursionError:
            raise ValueError(
                f"{path}:{n}: JSON nested too deeply to read; each line must be a flat JSON object "
                "with 'prompt' and 'reference' texts"
            ) from None
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
    rows = _csv_rows if path.suffix == ".csv" else _jsonl_rows
    for where, row in rows(path, _text(path)):
        row_split, example = _example(row, where)
        if row_split == split:
            examples.append(example)
    return tuple(examples)
