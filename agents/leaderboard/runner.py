"""The leaderboard: every registered env x agent x seed, trained with the same budget, evaluated
the same way, one JSON line per run, and a markdown board with plots regenerated from them.

Agents: ``sample`` (the untrained model, sampling), ``greedy`` (the untrained model, greedy),
``ppo`` and ``a2c`` (stock SB3 PPO and A2C with ``LMActorCriticPolicy``, whose entropy term is
the KL to the initial model), ``textppo``, ``grpo``, ``rloo``, ``reinforce``, ``softq`` and
``dqn`` (stock SB3 DQN with ``LMQPolicy``): ``textgym.agents.leaderboard.config.AGENTS``.
Each run happens in its own process (so its peak memory is its own, and a crash loses one run),
which dies with the leaderboard's (so a rerun never resumes a run that an orphan still writes);
runs already in the results file are skipped, and a trained run resumes from its checkpoint.
What a run is and how its record reads live in :mod:`textgym.agents.leaderboard.config`; the board is
rendered by :mod:`textgym.agents.leaderboard.board`.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import multiprocessing
import os
import queue as queues
import resource
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

import textgym
from textgym.agents.leaderboard.board import write_board
from textgym.agents.leaderboard.config import AGENTS, TRAINED, LeaderboardConfig, RunSpec
from textgym.agents.leaderboard.ray_tasks import connect, run_on_ray
from textgym.agents.leaderboard.store import (
    append_record,
    load_records,
    pooled,
    read_records,
    skipped_lines,
    trained_tokens,
)
from textgym.agents.runs.checkpoints import LOCK, RunBusyError, RunLock
from textgym.agents.runs.evaluation import evaluate
from textgym.agents.runs.hyperparams import supports
from textgym.agents.runs.provenance import git_commit, machine, versions
from textgym.agents.runs.training import train
from textgym.models.precision import resolve_device

__all__ = [
    "AGENTS",
    "TRAINED",
    "LeaderboardConfig",
    "RunSpec",
    "pooled",
    "read_records",
    "run_leaderboard",
    "trained_tokens",
]


def env_spec(env_id: str) -> dict[str, Any]:
    defaults = dataclasses.asdict(textgym.ENVS[env_id].defaults) if env_id in textgym.ENVS else {}
    return {**json.loads(gym.spec(env_id).to_json()), "defaults": defaults}


def run_one(config: LeaderboardConfig, spec: RunSpec, out: str) -> dict[str, Any]:
    """Train (if the agent trains) and evaluate one run; its JSON-line record."""
    console = Console(width=140)
    started = time.perf_counter()
    curve: list[dict[str, float]] = []
    used_tokens, used_minutes, hyperparams = 0, 0.0, None
    if spec.agent in TRAINED:
        run_dir = Path(out)
        train_config = config.train_config(spec.env, spec.agent, spec.seed)
        hyperparams = train_config.hyperparams
        result = train(train_config, run_dir, resume=run_dir.exists(), console=console)
        evaluation, curve = result["after"], result["curve"]
        used_tokens, used_minutes = result["summary"]["train_tokens"], result["summary"]["train_minutes"]
    else:
        evaluation = evaluate(
            config.model,
            spec.env,
            "test",
            config.eval_prompts,
            seeds=[spec.seed],
            greedy=spec.agent == "greedy",
            device=resolve_device(config.device),
            precision=config.precision,
        )
    keys = ["reward", *evaluation.metric_names, "nll", "tokens", "kl"]
    return {
        "key": spec.key(config),
        "env": spec.env,
        "env_spec": env_spec(spec.env),
        "agent": spec.agent,
        "seed": spec.seed,
        "model": config.model,
        "device": resolve_device(config.device),
        "precision": config.resolved_precision(),
        "budget": {"tokens": config.budget_tokens, "minutes": config.budget_minutes}
        if spec.agent in TRAINED
        else None,
        "used": {"tokens": used_tokens, "minutes": used_minutes},
        "hyperparams": hyperparams,  # resolved, from the registry's profile (None: untrained)
        "eval_prompts": config.eval_prompts,
        "metric_names": evaluation.metric_names,
        "metrics": evaluation.metrics,
        "per_example": {
            "index": [r["index"] for r in evaluation.examples],
            **{k: [r[k] for r in evaluation.examples] for k in keys},
        },
        "samples": [
            {"prompt": r["prompt"][-300:], "text": r["text"], "reward": r["reward"]}
            for r in evaluation.examples[:3]
        ],
        "curve": curve,
        "wall_seconds": time.perf_counter() - started,
        "train_tokens_per_s": used_tokens / (used_minutes * 60) if used_minutes else None,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "git_commit": git_commit(),
        "versions": versions(),
        "machine": machine(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
WATCH_SECONDS = 0.5  # how often the fallback watchdog looks at the parent


def die_with_parent(parent: int) -> None:
    """End this process when ``parent`` (its parent's pid) ends, however it ends (``kill -9``
    included, where the parent can clean up nothing): Linux's parent-death signal, and a
    watchdog thread wherever that is missing. The signal follows the parent *thread* that
    started this process, so that thread must wait for this process (``run_in_child`` does)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)  # this process's symbols, libc's among them
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no libc or no prctl: the watchdog alone
            pass
    _watch_parent(parent)
    if os.getppid() != parent:  # the parent died before the signal was asked for
        os._exit(1)


def _watch_parent(parent: int) -> None:
    """A daemon thread that ends this process once its parent is no longer ``parent`` (an
    orphan is adopted by another process, so ``os.getppid()`` changes)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(WATCH_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def _child(target: Callable[..., Any], args: tuple[Any, ...], parent: int, queue: Any) -> None:
    die_with_parent(parent)
    try:
        queue.put(("ok", target(*args)))
    except BaseException:  # reported to the parent, which records nothing for this run
        queue.put(("error", traceback.format_exc()))


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name} (exit code {exitcode})"
        except ValueError:
            pass
    return f"exit code {exitcode}"


def run_in_child(target: Callable[..., Any], args: tuple[Any, ...], name: str) -> Any:
    """``target(*args)`` in a fresh (spawned) process that dies with this one; its result, or a
    RuntimeError naming ``name`` when it raises or dies without a result (a segfault, the OOM
    killer, ``kill -9``: its exit code says which)."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(target, args, os.getpid(), queue), name=name)
    process.start()
    try:
        while True:
            alive = process.is_alive()  # before the wait: what it put before it died is read first
            try:
                status, payload = queue.get(timeout=WATCH_SECONDS)
                break
            except queues.Empty:
                if not alive:
                    process.join()
                    raise RuntimeError(
                        f"run {name} died without a result: {_death(process.exitcode)}"
                    ) from None
    except BaseException:  # interrupted (or dead): no run process outlives this wait
        process.kill()
        raise
    finally:
        process.join()
        queue.close()
    if status != "ok":
        raise RuntimeError(f"run {name} failed:\n{payload}")
    return payload


def run_isolated(config: LeaderboardConfig, spec: RunSpec, out: str) -> dict[str, Any]:
    """:func:`run_one` in its own process (see :func:`run_in_child`)."""
    return run_in_child(run_one, (config, spec, out), f"{spec.env} {spec.agent} seed {spec.seed}")


def run_leaderboard(
    config: LeaderboardConfig, console: Console | None = None, *, command: str = "textgym leaderboard"
) -> Path:
    """Run every missing env x agent x seed, then regenerate the board; returns its path.
    ``command`` is how the board says to reproduce it."""
    console = console or Console()
    config = config.resolved()
    config.validate()  # every argument, before the first run writes anything
    # Probed once here: every run (each in its own process) and every key get the same answer.
    config = dataclasses.replace(config, precision=config.resolved_precision())
    envs, agents, seeds = config.env_ids(), config.agent_names(), config.seed_list()
    if config.ray:
        connect(config)  # a request no node of the cluster can meet fails here, not as a wait forever
    results = Path(config.results)
    records_path = results / "runs.jsonl"
    with results_lock(results):  # one leaderboard at a time on these results
        records, skipped = load_records(records_path)
        if skipped:
            console.print(skipped_lines(records_path, skipped))
        done = {record["key"] for record in records}
        specs = [
            RunSpec(e, a, s)
            for e in envs
            for a in agents
            if a not in TRAINED or supports(TRAINED[a], e)
            for s in (seeds[:1] if a == "greedy" else seeds)
        ]
        unsupported = [
            f"{a} on {e}" for e in envs for a in agents if a in TRAINED and not supports(TRAINED[a], e)
        ]
        if unsupported:
            console.print(f"skipped (single-turn agents on multi-turn envs): {', '.join(unsupported)}")
        todo = [spec for spec in specs if not spec.keys(config) & done]
        console.print(
            f"leaderboard: {len(specs)} runs ({len(envs)} envs x {len(agents)} agents x seeds {seeds}), "
            f"{len(specs) - len(todo)} already in {records_path}; model {config.model}, budget "
            f"{config.budget_tokens} tokens / {config.budget_minutes} min per trained run; "
            f"{resolve_device(config.device)}, {config.precision}"
        )
        run_missing(config, specs, todo, results, console)
        board = write_board(config, load_records(records_path)[0], command)
    console.print(f"wrote {board} and its plots")
    return board


@contextlib.contextmanager
def results_lock(results: Path) -> Iterator[None]:
    """Hold ``<results>/train.lock`` (:class:`RunLock`'s ``fcntl.flock``) while a leaderboard
    runs, so that two on one results folder do not run the same runs twice (two records, two
    processes training one run directory): the second is refused, naming the first's PID. The
    OS releases the lock when its holder dies, so a killed leaderboard's rerun proceeds."""
    lock = RunLock(results)
    try:
        lock.__enter__()
    except RunBusyError:
        pid = (results / LOCK).read_text().strip()
        raise RunBusyError(
            f"leaderboard results {results} are being written by "
            f"{f'process {pid}' if pid.isdigit() else 'another process'} (it holds {results / LOCK}): "
            "wait for it to end, or stop it, then run the same command again"
        ) from None
    try:
        yield
    finally:
        lock.__exit__()


def run_missing(
    config: LeaderboardConfig, specs: list[RunSpec], todo: list[RunSpec], results: Path, console: Console
) -> None:
    """Run ``todo`` (of ``specs``) with a progress bar, appending each record as it ends."""
    records_path = results / "runs.jsonl"
    columns = (
        TextColumn("[bold]leaderboard"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("", total=len(specs), completed=len(specs) - len(todo))

        def finished(spec: RunSpec, record: dict[str, Any]) -> None:
            append_record(records_path, record)  # this process alone writes the results
            m = record["metrics"]
            progress.console.print(
                f"{spec.env:26s} {spec.agent:8s} seed {spec.seed}: "
                f"reward {m['reward']:+.3f} ± {m['reward_ci95']:.3f}, "
                f"{trained_tokens(record)} tokens trained on, {record['wall_seconds'] / 60:.1f} min"
            )
            progress.advance(task)

        if config.ray:
            progress.update(task, description=f"{len(todo)} runs on Ray")
            run_on_ray(config, todo, results, run_one, finished)
        else:
            for spec in todo:
                progress.update(task, description=f"{spec.env} {spec.agent} seed {spec.seed}")
                finished(spec, run_isolated(config, spec, str(results / "runs" / spec.key(config))))
