"""Argument checks shared by the algorithms: each raises ValueError naming the argument, the
value it got and what it accepts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

GROUP_BASELINES = ("mean", "leave_one_out")


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def check_number(name: str, value: Any, low: float, high: float, *, open_low: bool = False) -> float:
    """``value`` as a float, or ValueError naming ``name`` and its interval ``(low, high]``
    (``open_low``) or ``[low, high]``."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and (low < value if open_low else low <= value) and value <= high
    if not ok:
        bound = "(" if open_low else "["
        raise ValueError(f"{name} must be a number in {bound}{low}, {high}], got {value!r}")
    return float(value)


def check_groups(batch_episodes: int, group_size: Any, group_baseline: Any) -> None:
    """ValueError unless ``group_size`` is a positive int dividing ``batch_episodes`` and
    ``group_baseline`` is None or one of :data:`GROUP_BASELINES` with groups of 2 or more."""
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be a positive int, got {group_size!r}")
    if batch_episodes % group_size:
        raise ValueError(
            f"group_size ({group_size}) must divide the batch's episodes ({batch_episodes}): "
            "each prompt's texts are sampled together"
        )
    if group_baseline is not None:
        check_choice("group_baseline", group_baseline, GROUP_BASELINES)
        if group_size < 2:
            raise ValueError(f"group_baseline={group_baseline!r} needs group_size >= 2, got {group_size}")
