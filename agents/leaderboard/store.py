"""The leaderboard's records: one JSON line per run in ``runs.jsonl`` (reading, appending,
pooling per-prompt values over seeds). Append-only: earlier results are never rewritten."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from textgym.agents.runs.evaluation import mean_ci
from textgym.atomic import append_line


def load_records(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The records in ``runs.jsonl``, and how many of its lines were skipped: a torn line (a
    writer killed mid-line) or a line that is not a record (no string ``key``, ``env`` and
    ``agent`` and int ``seed``: edited by hand, or another program's). A skipped line's run has
    no record, so the next leaderboard runs it again; blank lines are not counted."""
    if not path.exists():
        return [], 0
    records, skipped = [], 0
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError):  # torn, or nested past the parser's depth
            record = None
        if is_record(record):
            records.append(record)
        else:
            skipped += 1
    return records, skipped


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records in ``runs.jsonl`` (see :func:`load_records`: torn and malformed lines skipped)."""
    return load_records(path)[0]


def is_record(record: Any) -> bool:
    """Whether ``record`` has what identifies a run: the fields every reader keys on."""
    return (
        isinstance(record, dict)
        and all(isinstance(record.get(name), str) for name in ("key", "env", "agent"))
        and type(record.get("seed")) is int
    )


def skipped_lines(path: Path, skipped: int) -> str:
    """The line that says ``skipped`` lines of ``path`` were not records (empty when none)."""
    if not skipped:
        return ""
    lines = "line" if skipped == 1 else "lines"
    return (
        f"skipped {skipped} {lines} of {path} that {'is' if skipped == 1 else 'are'} not a whole record "
        "(torn by a killed writer, or edited): a run without a record runs again"
    )


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append ``record`` as one line (earlier results are never rewritten), on a fresh line
    even after a torn one, so that it stays readable."""
    append_line(path, json.dumps(record))


def trained_tokens(record: dict[str, Any]) -> int:
    """Tokens of the batches that were trained on: the curve's last point (a batch abandoned
    when the budget ran out counts in the SB3 timesteps, but not here)."""
    return int(record["curve"][-1]["tokens"]) if record["curve"] else 0


def pooled(runs: list[dict[str, Any]], key: str) -> tuple[float, float]:
    """Mean and 95% half-width over examples of each example's mean over the runs (seeds)."""
    by_index: dict[int, list[float]] = {}
    for run in runs:
        for index, value in zip(run["per_example"]["index"], run["per_example"][key]):
            by_index.setdefault(index, []).append(value)
    values = [float(np.mean(v)) for _, v in sorted(by_index.items())]
    if all(math.isnan(v) for v in values):
        return float("nan"), float("nan")
    return mean_ci(values)
