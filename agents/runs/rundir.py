"""A run's directory before it trains: a new one claimed atomically (:func:`new_run_dir`), an
existing one checked against the run (:func:`prepare_out`), one whose run stopped before its
first checkpoint started over (:func:`stopped_early`), and the line that says where an
interrupted run stands (:func:`interrupted`)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from rich.console import Console

from textgym.agents.runs.checkpoints import (
    LOCK,
    RUN_FILE,
    Checkpoint,
    CheckpointError,
    is_run_dir,
    read_checkpoint,
    read_run,
)
from textgym.agents.runs.config import COMPARED, IDENTITY, TrainConfig, saved_config
from textgym.agents.runs.failures import Terminated
from textgym.atomic import check_writable


def prepare_out(config: TrainConfig, out: Path, resume: bool) -> Checkpoint | None:
    """Check ``out`` before anything is written (ValueError or CheckpointError naming the
    problem); the checkpoint to resume from, None to train from the start."""
    check_writable(out, "--out", folder=True)
    if not out.exists():
        if resume:
            raise CheckpointError(f"nothing to resume: {out} does not exist")
        return None
    if not (out / RUN_FILE).exists():
        if any(path.name != LOCK for path in out.iterdir()):  # a lock alone: a start that failed
            raise ValueError(f"--out {out} is not empty and holds no textgym run: choose another directory")
        if resume:
            raise CheckpointError(f"nothing to resume: {out} is empty")
        return None
    saved = saved_config(read_run(out)["config"])
    mine = json.loads(json.dumps(dataclasses.asdict(config)))  # as it reads back from run.json
    differ = [f"{k}={saved.get(k)!r} (asked {mine[k]!r})" for k in IDENTITY if saved.get(k) != mine[k]]
    if not differ:  # the same env and algo: name the hyperparameters that differ
        old, new = saved["hyperparams"], mine["hyperparams"]
        differ = [
            f"{k}={old.get(k)!r} (asked {new.get(k)!r})" for k in {**old, **new} if old.get(k) != new.get(k)
        ]
    if differ:
        raise ValueError(f"--out {out} holds another run ({', '.join(differ)}): choose another directory")
    # A key missing from an earlier version's run.json had the value it has today.
    changed = [
        f"{k}={saved[k]!r} (asked {mine[k]!r})" for k in COMPARED if k in saved and saved[k] != mine[k]
    ]
    if changed:
        raise ValueError(
            f"--out {out} holds this run with other evaluation settings ({', '.join(changed)}): its "
            "evaluations before, during and after training must use the same prompts; give the same "
            "values (only the budgets may change), or choose another --out"
        )
    if not resume:
        raise ValueError(
            f"--out {out} already holds this run: pass --resume to continue it, or choose another --out"
        )
    # None: stopped before its first checkpoint; training starts again, the first evaluation is kept
    return read_checkpoint(out)


def new_run_dir(config: TrainConfig, root: Path = Path("runs")) -> Path:
    """A new run directory ``root/<env>-<algo>-seed<seed>-<n>``, the first free ``n``, claimed by
    creating it (``mkdir`` is atomic: two runs started together get two directories)."""
    check_writable(root, "the runs folder", folder=True)
    n = 1
    while True:
        path = root / f"{config.env}-{config.algo}-seed{config.seed}-{n}"
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:  # another run's (or a file): the next number
            n += 1
        except OSError as err:
            raise ValueError(f"the run directory {path} cannot be created: {err.strerror}") from None


# What a run directory holds (besides files the user added): what start_over() may remove.
RUN_FILES = (RUN_FILE, LOCK, "eval-before.json", "eval-after.json", "samples.md", "curve.png", "tb",
             "checkpoints")  # fmt: skip


def stopped_early(out: Path) -> str | None:
    """The status of the run in ``out`` if it stopped before its first checkpoint (``failed``,
    ``interrupted``, or ``running`` with the lock free: killed) and ``out`` holds nothing but its
    files: a run that may be started over, by the same command or a corrected one, since there
    is nothing to resume. None otherwise. Called holding the lock."""
    try:
        if not is_run_dir(out) or read_checkpoint(out) is not None:
            return None
        status = read_run(out).get("status")
    except CheckpointError:  # a damaged run: prepare_out says what is wrong
        return None
    if status not in ("failed", "interrupted", "running"):
        return None
    return status if all(path.name in RUN_FILES for path in out.iterdir()) else None


def start_over(out: Path, status: str, console: Console) -> None:
    """Remove the files of the run in ``out`` (see :func:`stopped_early`), ``run.json`` last: a
    kill halfway leaves a run that still stopped early."""
    console.print(f"{out} holds a run that stopped before its first checkpoint ({status}): starting over")
    for name in sorted(RUN_FILES, key=lambda name: name == RUN_FILE):
        path = out / name
        if name == LOCK or not path.exists():
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def checkpoint_tokens(out: Path) -> int | None:
    """The tokens of the run's checkpoint, None if there is none (or it cannot be read)."""
    try:
        checkpoint = read_checkpoint(out)
    except CheckpointError:
        return None
    return None if checkpoint is None else checkpoint.state.get("tokens")


def interrupted(out: Path, by: BaseException | None = None) -> str:
    """The line for Ctrl-C (``by`` a KeyboardInterrupt) or SIGTERM (:class:`Terminated`):
    whether there is a checkpoint, and how to continue."""
    what = "interrupted by SIGTERM" if isinstance(by, Terminated) else "interrupted"
    again = f"`textgym train ... --resume --out {out}`"
    tokens = checkpoint_tokens(out)
    if tokens is None:
        return f"{what} before the first checkpoint: {again} starts the training again"
    return f"{what}: the checkpoint at {tokens} tokens in {out} is intact; {again} continues from it"
