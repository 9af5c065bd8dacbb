"""Run directories and checkpoints: what ``textgym train`` writes and ``textgym eval`` reads.

A run directory holds::

    run.json                  the run's configuration, status and figures (rewritten atomically)
    checkpoints/latest.zip    the agent (SB3 ``save``), replaced atomically
    checkpoints/latest.json   what SB3 does not save: RNG states, the curve, time and tokens used
    tb/                       TensorBoard logs
    eval-before.json, eval-after.json, samples.md, curve.png

Files are written to a temporary name and renamed, so a crash never leaves a half-written
checkpoint in place of a good one.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

from stable_baselines3 import A2C, PPO
from stable_baselines3.common.base_class import BaseAlgorithm

from .ppo import TextPPO

ALGOS: dict[str, type[BaseAlgorithm]] = {"textppo": TextPPO, "ppo": PPO, "a2c": A2C}
RUN_FILE = "run.json"
CHECKPOINT = Path("checkpoints") / "latest.zip"
STATE = Path("checkpoints") / "latest.json"


class CheckpointError(ValueError):
    """A run directory or checkpoint that is missing, corrupt or not a textgym agent's."""


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON through a temporary file and a rename (never a partial file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as handle:
        json.dump(data, handle, indent=2)
    os.replace(tmp, path)


def read_json(path: Path, what: str) -> Any:
    try:
        with path.open() as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise CheckpointError(f"{what} {path} does not exist") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{what} {path} is corrupt: {err}") from err


def save_agent(agent: BaseAlgorithm, run_dir: Path, state: dict[str, Any]) -> None:
    """Replace the run's checkpoint with ``agent`` and ``state`` (each atomically)."""
    path = run_dir / CHECKPOINT
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".latest.tmp.zip")
    agent.save(tmp)
    os.replace(tmp, path)
    write_json(run_dir / STATE, state)


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
    if "batch_episodes" in data:
        return "textppo"
    return "ppo" if "clip_range" in data else "a2c"


def checkpoint_path(path: str | Path) -> tuple[Path, str]:
    """The archive and algorithm behind ``path``: a run directory or an SB3 ``.zip``."""
    path = Path(path)
    if path.is_dir():
        if not is_run_dir(path):
            raise CheckpointError(f"{path} is not a textgym run directory (it has no {RUN_FILE})")
        algo = read_run(path)["config"].get("algo")
        archive = path / CHECKPOINT
        if not archive.is_file():
            raise CheckpointError(f"run directory {path} has no checkpoint yet ({CHECKPOINT} is missing)")
    elif path.is_file():
        archive, algo = path, zip_algo(path)
    else:
        raise CheckpointError(f"no checkpoint at {path}: expected a `textgym train` run directory or a .zip")
    if algo not in ALGOS:
        raise CheckpointError(f"checkpoint {path} names an unknown algorithm {algo!r}")
    return archive, algo


def load_agent(path: str | Path, device: str = "cpu") -> BaseAlgorithm:
    """The agent saved at ``path`` (a run directory or an SB3 ``.zip`` of TextPPO, PPO or A2C)."""
    archive, algo = checkpoint_path(path)
    try:
        return ALGOS[algo].load(archive, device=device)
    except Exception as err:  # SB3 raises many kinds for a damaged archive
        raise CheckpointError(
            f"checkpoint {archive} could not be loaded ({type(err).__name__}: {err})"
        ) from err
