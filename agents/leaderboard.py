"""The leaderboard: every registered env x agent x seed, trained with the same budget, evaluated
the same way, one JSON line per run, and a markdown board with plots regenerated from them.

Agents: ``sample`` (the untrained model, sampling), ``greedy`` (the untrained model, greedy),
``ppo`` (stock SB3 PPO with ``LMActorCriticPolicy`` and the KL reward wrapper) and ``textppo``.
Each run happens in its own process (so its peak memory is its own, and a crash loses one run);
runs already in the results file are skipped, and a trained run resumes from its checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import multiprocessing
import resource
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

import textgym
from agents.evaluation import mean_ci
from agents.provenance import git_commit, machine, versions
from textgym.models import DEFAULT_MODEL, TINY_MODEL

AGENTS = ("sample", "greedy", "ppo", "textppo")
TRAINED = {"ppo": "ppo", "textppo": "textppo"}


@dataclass
class LeaderboardConfig:
    """What the leaderboard runs; ``quick`` swaps in the tiny model and small budgets."""

    quick: bool = False
    envs: str = ""  # comma-separated env ids ("": every registered env)
    agents: str = ",".join(AGENTS)
    seeds: str = "0,1"
    model: str = DEFAULT_MODEL
    budget_tokens: int = 100_000  # per trained run, generated tokens
    budget_minutes: float = 5.0  # per trained run, training wall time
    eval_prompts: int = 64  # test prompts per evaluation (the same for every agent)
    results: str = "benchmarks/results/leaderboard"  # runs.jsonl and run directories
    board: str = "benchmarks/LEADERBOARD.md"  # its plots go next to it, in leaderboard/

    def resolved(self) -> LeaderboardConfig:
        """The settings that run: ``quick`` swaps in its own values for the fields left at
        their defaults (the tiny model, one seed, small budgets, a separate results folder)."""
        if not self.quick:
            return self
        results = "benchmarks/results/leaderboard-quick"
        if self.results != LeaderboardConfig.results:
            results = self.results
        quick = dict(
            model=TINY_MODEL,
            seeds="0",
            budget_tokens=1_024,
            budget_minutes=0.5,
            eval_prompts=8,
            results=results,
            board=str(Path(results) / "LEADERBOARD.md"),
        )
        defaults = LeaderboardConfig()
        keep = {k: v for k, v in quick.items() if getattr(self, k) == getattr(defaults, k)}
        return dataclasses.replace(self, **keep)

    def env_ids(self) -> list[str]:
        ids = [e for e in self.envs.split(",") if e] or list(textgym.ENVS)
        unknown = [e for e in ids if e not in gym.registry]
        if unknown:
            raise ValueError(f"unknown envs {unknown}: expected ids from {list(textgym.ENVS)}")
        return ids

    def agent_names(self) -> list[str]:
        names = [a for a in self.agents.split(",") if a]
        unknown = [a for a in names if a not in AGENTS]
        if unknown or not names:
            raise ValueError(f"unknown agents {unknown or names}: expected names from {list(AGENTS)}")
        return names

    def seed_list(self) -> list[int]:
        try:
            seeds = [int(s) for s in self.seeds.split(",") if s]
        except ValueError:
            raise ValueError(f"seeds must be comma-separated ints, got {self.seeds!r}") from None
        if not seeds:
            raise ValueError("seeds must name at least one seed")
        return seeds

    def train_config(self, env_id: str, agent: str, seed: int) -> Any:
        from agents.training import TrainConfig

        quick = dict(batch_episodes=16, minibatch_episodes=8, n_envs=4, n_steps=8)
        return TrainConfig(
            env=env_id,
            algo=TRAINED[agent],
            model=self.model,
            seed=seed,
            budget_tokens=self.budget_tokens,
            budget_minutes=self.budget_minutes,
            eval_prompts=self.eval_prompts,
            eval_every_minutes=0,  # the curve comes from the training batches
            **(quick if self.quick else {}),
        )


@dataclass(frozen=True)
class RunSpec:
    env: str
    agent: str
    seed: int

    def key(self, config: LeaderboardConfig) -> str:
        """Identifies the run and everything its result depends on (resuming skips known keys)."""
        settings: dict[str, Any] = {
            "model": config.model,
            "eval_prompts": config.eval_prompts,
            **dataclasses.asdict(self),
        }
        if self.agent in TRAINED:
            settings["train"] = dataclasses.asdict(config.train_config(self.env, self.agent, self.seed))
        digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
        return f"{self.env}-{self.agent}-s{self.seed}-{digest}"


def env_spec(env_id: str) -> dict[str, Any]:
    defaults = dataclasses.asdict(textgym.ENVS[env_id].defaults) if env_id in textgym.ENVS else {}
    return {**json.loads(gym.spec(env_id).to_json()), "defaults": defaults}


def run_one(config: LeaderboardConfig, spec: RunSpec, out: str) -> dict[str, Any]:
    """Train (if the agent trains) and evaluate one run; its JSON-line record."""
    from agents.evaluation import evaluate
    from agents.training import train

    console = Console(width=140)
    started = time.perf_counter()
    curve: list[dict[str, float]] = []
    used_tokens, used_minutes = 0, 0.0
    if spec.agent in TRAINED:
        run_dir = Path(out)
        result = train(
            config.train_config(spec.env, spec.agent, spec.seed),
            run_dir,
            resume=run_dir.exists(),
            console=console,
        )
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
        )
    keys = ["reward", *evaluation.metric_names, "nll", "tokens", "kl"]
    return {
        "key": spec.key(config),
        "env": spec.env,
        "env_spec": env_spec(spec.env),
        "agent": spec.agent,
        "seed": spec.seed,
        "model": config.model,
        "budget": {"tokens": config.budget_tokens, "minutes": config.budget_minutes}
        if spec.agent in TRAINED
        else None,
        "used": {"tokens": used_tokens, "minutes": used_minutes},
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


def _child(config: LeaderboardConfig, spec: RunSpec, out: str, queue: Any) -> None:
    try:
        queue.put(("ok", run_one(config, spec, out)))
    except BaseException:  # reported to the parent, which records nothing for this run
        queue.put(("error", traceback.format_exc()))


def run_isolated(config: LeaderboardConfig, spec: RunSpec, out: str) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(config, spec, out, queue))
    process.start()
    try:
        status, payload = queue.get()
    finally:
        process.join()
    if status != "ok":
        raise RuntimeError(f"run {spec} failed:\n{payload}")
    return payload


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records in ``runs.jsonl``; a torn last line (a crash while writing) is skipped."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def append_record(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:  # append only: earlier results are never rewritten
        handle.write(json.dumps(record) + "\n")


def run_leaderboard(config: LeaderboardConfig, console: Console | None = None) -> Path:
    """Run every missing env x agent x seed, then regenerate the board; returns its path."""
    console = console or Console()
    config = config.resolved()
    envs, agents, seeds = config.env_ids(), config.agent_names(), config.seed_list()
    results = Path(config.results)
    records_path = results / "runs.jsonl"
    done = {record["key"] for record in read_records(records_path)}
    specs = [RunSpec(e, a, s) for e in envs for a in agents for s in (seeds[:1] if a == "greedy" else seeds)]
    todo = [spec for spec in specs if spec.key(config) not in done]
    console.print(
        f"leaderboard: {len(specs)} runs ({len(envs)} envs x {len(agents)} agents x seeds {seeds}), "
        f"{len(specs) - len(todo)} already in {records_path}; model {config.model}, budget "
        f"{config.budget_tokens} tokens / {config.budget_minutes} min per trained run"
    )
    columns = (
        TextColumn("[bold]leaderboard"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("", total=len(specs), completed=len(specs) - len(todo))
        for spec in todo:
            progress.update(task, description=f"{spec.env} {spec.agent} seed {spec.seed}")
            record = run_isolated(config, spec, str(results / "runs" / spec.key(config)))
            append_record(records_path, record)
            m = record["metrics"]
            progress.console.print(
                f"{spec.env:26s} {spec.agent:8s} seed {spec.seed}: "
                f"reward {m['reward']:+.3f} ± {m['reward_ci95']:.3f}, "
                f"{trained_tokens(record)} tokens trained on, {record['wall_seconds'] / 60:.1f} min"
            )
            progress.advance(task)
    from agents.board import write_board

    board = write_board(config, read_records(records_path))
    console.print(f"wrote {board} and its plots")
    return board


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
