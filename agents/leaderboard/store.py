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


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records in ``runs.jsonl``; a torn line (a writer killed mid-line) is skipped."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


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
