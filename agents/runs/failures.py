"""How a run stops other than by finishing, besides an error of its own: SIGTERM, which stops
it as Ctrl-C does (:class:`Terminated`), and a full disk, one error that names the path, the
space it needed and the space free (:class:`DiskFullError`)."""

from __future__ import annotations

import contextlib
import errno
import gc
import json
import shutil
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from textgym.atomic import write_json

FULL = (errno.ENOSPC, errno.EDQUOT)  # a full disk, or the user's quota spent


class Terminated(KeyboardInterrupt):
    """SIGTERM (Slurm, Kubernetes and systemd send it before a kill), raised where the process
    is, as Ctrl-C raises KeyboardInterrupt: everything that handles Ctrl-C handles it too."""

    exit_code = 128 + signal.SIGTERM  # 143, what a shell reports for a process ended by SIGTERM


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """For the block, SIGTERM raises :class:`Terminated` (once: a second SIGTERM while the run
    records that it stopped is ignored, and SIGKILL remains). Only the main thread receives
    signals, so elsewhere the block changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated("SIGTERM")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class DiskFullError(OSError):
    """No space left on the device (or the disk quota spent) while writing ``path``; ``needed``:
    the bytes it tried to write, None where unknown. The message names both and the free space."""

    def __init__(self, path: Path, needed: int | None, message: str | None = None):
        super().__init__(errno.ENOSPC, message or describe(path, needed))
        self.path, self.needed = Path(path), needed

    def __str__(self) -> str:
        return str(self.strerror)


def describe(path: Path, needed: int | None) -> str:
    free = free_bytes(path)
    parts = [f"{size(needed)} needed"] if needed is not None else []
    parts += [f"{size(free)} free"] if free is not None else []
    return f"no space left on device writing {path}" + (f" ({', '.join(parts)})" if parts else "")


def disk_full(err: BaseException) -> OSError | None:
    """The full-disk error in ``err``'s chain (it may come wrapped: torch's writer raises a
    RuntimeError while handling it), or None."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, DiskFullError) or (isinstance(err, OSError) and err.errno in FULL):
            return err
        err = err.__cause__ or err.__context__
    return None


@contextlib.contextmanager
def writing(path: Path, needed: int | None = None) -> Iterator[None]:
    """A full disk inside the block becomes :class:`DiskFullError` for ``path`` and ``needed``."""
    try:
        yield
    except Exception as err:
        full = disk_full(err)
        if full is None or isinstance(full, DiskFullError):
            raise
        raise DiskFullError(path, needed) from err


def save_json(path: Path, data: Any) -> None:
    """:func:`textgym.atomic.write_json`, a full disk named by :class:`DiskFullError`."""
    with writing(path, len(json.dumps(data, indent=2).encode()) + 1):  # write_json's bytes
        write_json(path, data)


def release(err: BaseException) -> None:
    """Close what the finished frames of ``err``'s chain hold open: a file a failed write was
    writing keeps its disk space while it is open, even once deleted."""
    seen: set[int] = set()
    unraisable = sys.unraisablehook
    sys.unraisablehook = lambda hook_args: None  # a half-written file failing again as it closes
    try:
        while err is not None and id(err) not in seen:
            seen.add(id(err))
            traceback.clear_frames(err.__traceback__)
            err = err.__cause__ or err.__context__
        gc.collect()
    finally:
        sys.unraisablehook = unraisable


def free_bytes(path: Path) -> int | None:
    """The bytes free to this user on the file system of ``path`` (or its nearest folder)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def size(n: int | None) -> str:
    if n is None:
        return "?"
    if n < 1024:
        return f"{n} B"
    value, unit = n / 1024, "KiB"
    for larger in ("MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, larger
    return f"{value:.1f} {unit}"
