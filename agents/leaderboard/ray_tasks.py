"""The leaderboard's runs as Ray tasks: ``textgym leaderboard --ray [ADDRESS]``.

Each (env, agent, seed) run is :func:`~textgym.agents.leaderboard.runner.run_one` in a Ray task that
asks for ``ray_cpus`` CPUs and ``ray_gpus`` GPUs, so a cluster runs as many at once as it has
room for. Only the driver (the ``textgym leaderboard`` process) appends the records, as each
task finishes: one writer, append-only, as without Ray; runs already recorded are not
submitted, so an interrupted board resumes (a trained run from its checkpoint, which its run
directory must then be visible to the driver's next tasks: a shared filesystem on a cluster).
Without ``--ray`` the runs go one at a time in child processes, as before.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from textgym.agents.leaderboard.config import LeaderboardConfig, RunSpec, ray_module

LOCAL = "local"  # ``--ray`` without an address: a local Ray instance (or the one RAY_ADDRESS names)


def run_on_ray(
    config: LeaderboardConfig,
    specs: list[RunSpec],
    results: Path,
    target: Callable[[LeaderboardConfig, RunSpec, str], dict[str, Any]],
    finished: Callable[[RunSpec, dict[str, Any]], None],
) -> None:
    """``target(config, spec, run_dir)`` for every spec as Ray tasks; ``finished(spec, record)``
    in this process as each one ends (in the order they end). A failed run raises RuntimeError
    naming it, after cancelling the runs not yet finished (those that finished are kept)."""
    ray = ray_module()
    if not ray.is_initialized():
        ray.init(address=None if config.ray == LOCAL else config.ray, include_dashboard=False)
    task = ray.remote(num_cpus=config.ray_cpus, num_gpus=config.ray_gpus, max_retries=0)(target)
    pending = {task.remote(config, spec, str(results / "runs" / spec.key(config))): spec for spec in specs}
    try:
        while pending:
            [ready], _ = ray.wait(list(pending), num_returns=1)
            spec = pending.pop(ready)
            try:
                record = ray.get(ready)
            except ray.exceptions.RayError as err:
                name = f"{spec.env} {spec.agent} seed {spec.seed}"
                raise RuntimeError(f"run {name} failed on Ray:\n{err}") from None
            finished(spec, record)
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
