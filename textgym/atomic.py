"""Writing files so that a crash, a kill or a full disk never leaves a partial one in place.

Every write goes to a temporary name in the target's folder, is flushed to disk, and is renamed
over the target (``os.replace``: atomic on POSIX), so readers see the old file or the new one,
never a mix. Folders (a converted model, an exported model, a checkpoint) are staged the same
way and renamed into place. Files and folders get the process's normal mode (``0o666`` /
``0o777`` less the umask), not the owner-only mode of ``tempfile``, so that a cache can be
shared by the users of a machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_path(path: str | Path) -> None:
    """Flush a file or folder to disk (a folder: the names in it)."""
    with contextlib.suppress(OSError):  # not every file system lets a folder be opened
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` in one step (the folder is created if needed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_path(path.parent)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    write_text(path, json.dumps(data, indent=2) + "\n")


def append_line(path: str | Path, line: str) -> None:
    """Append one line to a JSON-lines style file, starting on a fresh line: if a writer was
    killed mid-line, the torn line stays on its own and the new record is readable."""
    if "\n" in line:
        raise ValueError("append_line writes exactly one line: the text holds a newline")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as handle:
        handle.seek(0, os.SEEK_END)
        prefix = b""
        if handle.tell() > 0:
            handle.seek(-1, os.SEEK_END)
            prefix = b"" if handle.read(1) == b"\n" else b"\n"
        handle.seek(0, os.SEEK_END)
        handle.write(prefix + line.encode("utf-8") + b"\n")
        handle.flush()
        os.fsync(handle.fileno())


@contextlib.contextmanager
def staged_dir(target: str | Path) -> Iterator[Path]:
    """A temporary folder beside ``target`` to fill; its files flushed to disk and the folder
    renamed to ``target`` when the block ends without an error, removed when it raises.
    ``target`` must not exist (``FileExistsError`` if another process created it meanwhile; the
    staged copy is then removed)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield staging
        mode_dirs, mode_files = 0o777 & ~_umask(), 0o666 & ~_umask()
        for root, dirs, files in os.walk(staging):
            for name in dirs:
                os.chmod(os.path.join(root, name), mode_dirs)
            for name in files:
                os.chmod(os.path.join(root, name), mode_files)
                _fsync_path(os.path.join(root, name))
            _fsync_path(root)
        os.chmod(staging, mode_dirs)
        try:
            os.rename(staging, target)
        except OSError as err:
            if target.exists():
                raise FileExistsError(f"{target} was created by another process meanwhile") from err
            raise
        _fsync_path(target.parent)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def check_writable(path: str | Path, what: str, *, folder: bool = False) -> None:
    """Raise one ValueError naming ``what`` (the option that gave the path) and why, unless a
    file (``folder=True``: a folder) can be written at ``path``, its missing parent folders
    created. Creates nothing: it runs before a long job whose result would otherwise be lost."""
    problem = why_unwritable(path, folder=folder)
    if problem is not None:
        raise ValueError(f"{what} {path} {problem}")


def why_unwritable(path: str | Path, *, folder: bool = False) -> str | None:
    """Why no file (``folder=True``: no folder) can be written at ``path``, as the end of a
    sentence about the path ("cannot be created: /x is a file, not a folder"), or None."""
    path = Path(path)
    try:
        if path.exists():
            if path.is_dir() != folder:
                kinds = ("a folder", "a file") if folder else ("a file", "a folder")
                return f"is {kinds[1]}, not {kinds[0]}"
            existing, action = (path if folder else path.parent), "cannot be written"
        else:
            existing, action = path.parent, "cannot be created"
            while not existing.exists():  # also False for a path under a file (ENOTDIR)
                existing = existing.parent
            if not existing.is_dir():
                return f"{action}: {existing} is a file, not a folder"
        if not os.access(existing, os.W_OK | os.X_OK):  # False on a read-only file system too
            return f"{action}: {existing} is not writable (a read-only folder or file system)"
    except OSError as err:
        return f"cannot be used: {err}"
    return None
