"""Run directories and checkpoints: what ``textgym train`` writes and ``textgym eval`` reads.

A run directory holds::

    run.json                    the run's configuration, status and figures (rewritten atomically)
    train.lock                  locked (``fcntl.flock``) by the process training the run, which
                                writes its PID there; empty when no process trains it
    checkpoints/current.json    ``{"checkpoint": n}``: which folder is the checkpoint
    checkpoints/<n>/agent.zip   the agent (SB3 ``save``)
    checkpoints/<n>/state.json  what SB3 does not save: RNG states, the curve, time and tokens used
    tb/                         TensorBoard logs
    eval-before.json, eval-after.json, samples.md, curve.png

A checkpoint's archive and state are replaced as one unit: the folder ``<n>`` is filled under a
temporary name and renamed into place (:func:`textgym.atomic.staged_dir`), then the pointer
``current.json`` is replaced atomically (the commit), and only then are older folders removed.
A run killed at any instant resumes from the old checkpoint or the new one, never from a mix.
Runs written before checkpoint folders (``checkpoints/latest.zip`` and ``latest.json``) are read.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import json
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.save_util import json_to_data

from textgym.agents.common.buffers import EpisodeRolloutBuffer, TokenRolloutBuffer
from textgym.agents.common.policies import LMActorCriticPolicy
from textgym.agents.runs.failures import DiskFullError, save_json, writing
from textgym.agents.runs.hyperparams import ALGOS
from textgym.agents.textppo import TextPPO
from textgym.atomic import staged_dir, write_json  # write_json: also imported from here

RUN_FILE = "run.json"
LOCK = "train.lock"
CHECKPOINTS = Path("checkpoints")
CURRENT = CHECKPOINTS / "current.json"
ARCHIVE, STATE = "agent.zip", "state.json"  # in a checkpoint folder
REPLAY = "replay.pkl"  # in a checkpoint folder: an off-policy agent's replay buffer (SB3's pickle)
# The layout before checkpoint folders: two files, replaced one after the other.
LEGACY_ARCHIVE, LEGACY_STATE = CHECKPOINTS / "latest.zip", CHECKPOINTS / "latest.json"


class CheckpointError(ValueError):
    """A run directory or checkpoint that is missing, corrupt or not a textgym agent's."""


class RunBusyError(ValueError):
    """A run directory that another process is training."""


def read_json(path: Path, what: str) -> Any:
    try:
        with path.open() as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise CheckpointError(f"{what} {path} does not exist") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{what} {path} is corrupt: {err}") from err


@dataclass(frozen=True)
class Checkpoint:
    """A run's current checkpoint: the agent's archive, its state file and that state."""

    archive: Path
    state_file: Path
    state: dict[str, Any]


def current_files(run_dir: Path) -> tuple[Path, Path] | None:
    """The archive and state file of ``run_dir``'s current checkpoint; None before the first."""
    pointer = run_dir / CURRENT
    if pointer.exists():
        data = read_json(pointer, "checkpoint pointer")
        n = data.get("checkpoint") if isinstance(data, dict) else None
        if isinstance(n, bool) or not isinstance(n, int):
            raise CheckpointError(f"checkpoint pointer {pointer} is corrupt: expected {{'checkpoint': n}}")
        folder = run_dir / CHECKPOINTS / str(n)
        if not folder.is_dir():
            raise CheckpointError(f"checkpoint pointer {pointer} names {folder}, which does not exist")
        return folder / ARCHIVE, folder / STATE
    if (run_dir / LEGACY_ARCHIVE).is_file():
        return run_dir / LEGACY_ARCHIVE, run_dir / LEGACY_STATE
    return None


def read_checkpoint(run_dir: Path) -> Checkpoint | None:
    """``run_dir``'s current checkpoint with its state (None before the first checkpoint)."""
    files = current_files(run_dir)
    if files is None:
        return None
    state = read_json(files[1], "checkpoint state")
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint state {files[1]} is corrupt: not a JSON object")
    return Checkpoint(*files, state)


def save_agent(agent: BaseAlgorithm, run_dir: Path, state: dict[str, Any]) -> Path:
    """Make ``agent`` and ``state`` the run's checkpoint, as one unit (see the module
    docstring); returns the checkpoint's folder."""
    folder = run_dir / CHECKPOINTS
    folder.mkdir(parents=True, exist_ok=True)
    # Past any folder that a kill left before its pointer moved: a number is never reused.
    n = 1 + max((int(p.name) for p in folder.iterdir() if p.name.isdigit()), default=0)
    with writing(folder / str(n), checkpoint_bytes(agent, run_dir)), staged_dir(folder / str(n)) as staging:
        agent.save(staging / ARCHIVE)
        if isinstance(agent, OffPolicyAlgorithm) and agent.replay_buffer is not None:
            agent.save_replay_buffer(staging / REPLAY)  # SB3's save leaves it out
        write_json(staging / STATE, state)
    save_json(run_dir / CURRENT, {"checkpoint": n})  # the commit
    # Then older checkpoints, staging left by a kill and the old layout go; what fails to go
    # now goes at the next checkpoint.
    legacy = (run_dir / LEGACY_ARCHIVE, run_dir / LEGACY_STATE)
    for path in folder.iterdir():
        if (path.name.isdigit() and path.name != str(n)) or path.name.startswith(".") or path in legacy:
            with contextlib.suppress(OSError):
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
    return folder / str(n)


def checkpoint_bytes(agent: BaseAlgorithm, run_dir: Path) -> int:
    """About the bytes a new checkpoint of ``agent`` takes: the current checkpoint's size, or
    before the first, its tensors' (weights, optimiser state, replay buffer)."""
    with contextlib.suppress(CheckpointError, OSError):
        files = current_files(run_dir)
        if files is not None:
            folder = files[0].parent
            paths = list(folder.iterdir()) if folder.name.isdigit() else list(files)
            return sum(path.stat().st_size for path in paths if path.is_file())
    tensors = list(agent.policy.state_dict().values())
    optimizer = getattr(agent.policy, "optimizer", None)
    if optimizer is not None:
        tensors += [v for state in optimizer.state_dict()["state"].values() for v in state.values()]
    storages = {
        t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors if torch.is_tensor(t)
    }
    total = sum(storages.values())  # tied and shared weights are saved once
    if isinstance(agent, OffPolicyAlgorithm) and agent.replay_buffer is not None:
        total += sum(v.nbytes for v in vars(agent.replay_buffer).values() if isinstance(v, np.ndarray))
    return total


class RunLock:
    """Holds ``run_dir/train.lock`` (``fcntl.flock``, exclusive) for a ``with`` block, so that
    one process at a time trains a run; the holder's PID is in the file while it holds it. The
    OS releases the lock when the process dies, so a run left "running" by a crash is free.
    Creates ``run_dir`` if needed; :class:`RunBusyError` names the process that holds it.

    Where even ``run.json`` cannot be written (a full disk), :meth:`note` leaves the run's
    status in the lock file instead (its block is already on the disk), and the next holder
    finds it in :attr:`left`."""

    NOTE_BYTES = 4000  # within the one block the file has held since its PID was written

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self._fd: int | None = None
        self._noted = False
        self.left = ""  # what the last holder noted (see note()), "" if nothing

    def __enter__(self) -> RunLock:
        path = self.run_dir / LOCK
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise ValueError(f"--out {self.run_dir} cannot be written: {err.strerror} ({path})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise ValueError(f"cannot lock {path}: {err.strerror}") from None
            holder = f"process {text}" if text.isdigit() else "another process"
            raise RunBusyError(
                f"run {self.run_dir} is being trained by {holder} (it holds {path}): "
                "wait for it to end, or stop it, then --resume"
            ) from None
        left = os.pread(fd, self.NOTE_BYTES, 0).decode("utf-8", "replace").strip()
        self.left = "" if left.isdigit() else left  # a PID alone: its process was killed
        pid = str(os.getpid()).encode()
        try:
            os.pwrite(fd, pid, 0)  # over the old content, then cut: its block is reused
            os.ftruncate(fd, len(pid))
        except OSError as err:
            os.close(fd)  # releases the lock
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFullError(path, len(pid)) from None
            raise ValueError(f"--out {self.run_dir} cannot be written: {err.strerror} ({path})") from None
        self._fd = fd
        return self

    def note(self, text: str) -> None:
        """Leave ``text`` in the lock file after it is released (instead of nothing). OSError
        if even that fails."""
        if self._fd is None:
            raise RuntimeError("RunLock.note() outside the with block")
        data = text.encode("utf-8")[: self.NOTE_BYTES]
        os.pwrite(self._fd, data, 0)  # first over the PID, then cut: no new block is needed
        os.ftruncate(self._fd, len(data))
        self._noted = True

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            if not self._noted:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, 0)  # no PID at rest: the file says nothing stale
            os.close(self._fd)  # releases the lock
            self._fd = None


def is_run_dir(path: Path) -> bool:
    return (path / RUN_FILE).is_file()


def read_run(run_dir: Path) -> dict[str, Any]:
    run = read_json(run_dir / RUN_FILE, "run file")
    if not isinstance(run, dict) or not isinstance(run.get("config"), dict):
        raise CheckpointError(f"run file {run_dir / RUN_FILE} has no 'config': not a textgym run")
    return run


def zip_algo(path: Path) -> str:
    """Which algorithm saved the SB3 archive ``path`` (from the parameters it stored)."""
    try:
        with zipfile.ZipFile(path) as archive:
            data = json.loads(archive.read("data"))
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"checkpoint {path} is corrupt or not an SB3 archive: {err}") from err
    if "regularization" in data:
        return "softq"
    if "batch_episodes" in data:
        return "textppo"
    if "exploration_fraction" in data:
        return "dqn"
    return "ppo" if "clip_range" in data else "a2c"


def checkpoint_path(path: str | Path) -> tuple[Path, str]:
    """The archive and algorithm behind ``path``: a run directory (its current checkpoint) or
    an SB3 ``.zip``."""
    path = Path(path)
    if path.is_dir():
        if not is_run_dir(path):
            raise CheckpointError(f"{path} is not a textgym run directory (it has no {RUN_FILE})")
        algo = read_run(path)["config"].get("algo")
        files = current_files(path)
        if files is None:
            raise CheckpointError(f"run directory {path} has no checkpoint yet ({CURRENT} is missing)")
        archive = files[0]
        if not archive.is_file():
            raise CheckpointError(f"run directory {path}: its checkpoint {archive} is missing")
    elif path.is_file():
        archive, algo = path, zip_algo(path)
    else:
        raise CheckpointError(f"no checkpoint at {path}: expected a `textgym train` run directory or a .zip")
    if algo not in ALGOS:
        raise CheckpointError(f"checkpoint {path} names an unknown algorithm {algo!r}")
    return archive, algo


def load_archive(archive: Path, algo: str, precision: str | None = None, **kwargs: Any) -> BaseAlgorithm:
    """SB3's ``load`` of ``archive``, for agents saved by this version or by the one before it.

    Before 0.2 the agents were the top-level package ``agents``: their archives pickled the policy
    class under that name, and TextPPO had no rollout buffer (``n_steps=1``) and called its
    adaptive-KL arguments ``kl_target``/``kl_horizon``. Such archives load with today's classes
    and settings (SB3's ``custom_objects``), so a user's earlier runs stay usable. Stock PPO and
    A2C continue with :class:`EpisodeRolloutBuffer` (one forward pass per episode in updates),
    whatever buffer they were saved with. ``precision`` (``auto``, ``fp32``, ``bf16``) replaces
    the one the policy was saved with (weights are float32 either way)."""
    with zipfile.ZipFile(archive) as handle:
        raw_data = handle.read("data").decode()
    data = json.loads(raw_data)
    pickled = data.get("policy_class", {})
    raw = base64.b64decode(pickled.get(":serialized:", "")) if isinstance(pickled, dict) else b""
    sequence = issubclass(ALGOS[algo], TextPPO)
    objects: dict[str, Any] = {"rollout_buffer_class": EpisodeRolloutBuffer} if algo in ("ppo", "a2c") else {}
    if b"agents.policies" in raw and b"textgym.agents" not in raw:
        objects["policy_class"] = LMActorCriticPolicy
        if sequence:
            objects["n_steps"] = data["batch_episodes"]
            objects["rollout_buffer_class"] = TokenRolloutBuffer
            objects["rollout_buffer_kwargs"] = {
                name: data[name] for name in ("kl_estimator", "reward_normalization", "normalize_advantage")
            }
            renamed = {"kl_target": "adaptive_kl_target", "kl_horizon": "adaptive_kl_horizon"}
            kwargs = {new: data[old] for old, new in renamed.items() if old in data} | kwargs
    if precision is not None:
        saved = json_to_data(raw_data).get("policy_kwargs") or {}
        objects["policy_kwargs"] = {**saved, "precision": precision}
    return ALGOS[algo].load(archive, custom_objects=objects, **kwargs)


def load_agent(path: str | Path, device: str = "cpu", precision: str | None = None) -> BaseAlgorithm:
    """The agent saved at ``path`` (a run directory's current checkpoint, or an SB3 ``.zip`` of
    TextPPO, PPO or A2C), on ``device``, in ``precision`` (None: the one it was saved with)."""
    archive, algo = checkpoint_path(path)
    try:
        return load_archive(archive, algo, precision, device=device)
    except Exception as err:  # SB3 raises many kinds for a damaged archive
        raise CheckpointError(
            f"checkpoint {archive} could not be loaded ({type(err).__name__}: {err})"
        ) from err
