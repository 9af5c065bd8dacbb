"""The leaderboard's runs as Ray tasks: ``textgym leaderboard --ray [ADDRESS]``.

Each (env, agent, seed) run is :func:`~textgym.agents.leaderboard.runner.run_one` in a Ray task that
asks for ``ray_cpus`` CPUs and ``ray_gpus`` GPUs, so a cluster runs as many at once as it has
room for. Only the driver (the ``textgym leaderboard`` process) appends the records, as each
task finishes: one writer, append-only, as without Ray; runs already recorded are not
submitted, so an interrupted board resumes (a trained run from its checkpoint, which its run
directory must then be visible to the driver's next tasks: a shared filesystem on a cluster).
Before any run, :func:`connect` checks that a node of the cluster has the CPUs and GPUs a task
asks for (Ray would leave it pending for ever), and every wait on Ray has a timeout.
Without ``--ray`` the runs go one at a time in child processes, as before.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from textgym.agents.leaderboard.config import LeaderboardConfig, RunSpec, ray_module

LOCAL = "local"  # ``--ray`` without an address: a local Ray instance (or the one RAY_ADDRESS names)
WAIT_SECONDS = 10.0  # each wait for a task; between waits the cluster is checked again
GET_SECONDS = 60.0  # fetching a finished task's record (small: one JSON line's worth)


def connect(config: LeaderboardConfig) -> None:
    """Join (or start) the Ray instance ``config.ray`` names, and check that one of its nodes
    can run a task of ``ray_cpus`` CPUs and ``ray_gpus`` GPUs: Ray would otherwise leave such a
    task pending for ever (``--ray-cpus 8`` on a 2-core machine). ValueError with the numbers."""
    ray = ray_module()
    if not ray.is_initialized():
        ray.init(address=None if config.ray == LOCAL else config.ray, include_dashboard=False)
    check_fits(config)


def check_fits(config: LeaderboardConfig) -> None:
    """ValueError unless a live node of the cluster has ``ray_cpus`` CPUs and ``ray_gpus`` GPUs
    (a task runs on one node: the cluster's total is not enough)."""
    ray = ray_module()
    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    if any(n.get("CPU", 0) >= config.ray_cpus and n.get("GPU", 0) >= config.ray_gpus for n in nodes):
        return
    total = ray.cluster_resources()
    largest = max(nodes, key=lambda n: (n.get("CPU", 0), n.get("GPU", 0)), default={})
    raise ValueError(
        f"each leaderboard run asks Ray for {config.ray_cpus} CPUs and {config.ray_gpus:g} GPUs "
        f"(--ray-cpus, --ray-gpus), but no node of the Ray cluster has that many, so no run would "
        f"ever start: its largest node has {largest.get('CPU', 0):g} CPUs and {largest.get('GPU', 0):g} "
        f"GPUs ({len(nodes)} nodes, {total.get('CPU', 0):g} CPUs and {total.get('GPU', 0):g} GPUs in all); "
        f"ask for at most that"
    )


def run_on_ray(
    config: LeaderboardConfig,
    specs: list[RunSpec],
    results: Path,
    target: Callable[[LeaderboardConfig, RunSpec, str], dict[str, Any]],
    finished: Callable[[RunSpec, dict[str, Any]], None],
) -> None:
    """``target(config, spec, run_dir)`` for every spec as Ray tasks; ``finished(spec, record)``
    in this process as each one ends (in the order they end). A failed run raises RuntimeError
    naming it, after cancelling the runs not yet finished (those that finished are kept). Every
    wait has a timeout, after which the cluster is checked again: a node lost on the way that
    leaves no room for the runs still pending is a ValueError, not a wait for ever."""
    ray = ray_module()
    connect(config)
    task = ray.remote(num_cpus=config.ray_cpus, num_gpus=config.ray_gpus, max_retries=0)(target)
    pending = {task.remote(config, spec, str(results / "runs" / spec.key(config))): spec for spec in specs}
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_SECONDS)
            if not ready:
                check_fits(config)
                continue
            spec = pending.pop(ready[0])
            try:
                record = ray.get(ready[0], timeout=GET_SECONDS)
            except ray.exceptions.RayError as err:
                name = f"{spec.env} {spec.agent} seed {spec.seed}"
                raise RuntimeError(f"run {name} failed on Ray:\n{err}") from None
            finished(spec, record)
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
