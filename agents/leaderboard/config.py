"""What the leaderboard runs: its settings (:class:`LeaderboardConfig`) and one run
(:class:`RunSpec`, keyed by everything its result depends on). The records live in
:mod:`~textgym.agents.leaderboard.store`; ``runner`` runs and appends, ``board`` renders.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym

import textgym
from textgym.agents.runs.config import FLAT_HYPERPARAMS, TrainConfig
from textgym.agents.runs.hyperparams import hyperparams, supports
from textgym.atomic import check_writable
from textgym.models import DEFAULT_MODEL, TINY_MODEL
from textgym.models.precision import resolve_device, resolve_precision

AGENTS = ("sample", "greedy", "ppo", "a2c", "textppo", "grpo", "rloo", "reinforce", "softq", "dqn")
TRAINED = {agent: agent for agent in AGENTS[2:]}  # agent -> algorithm (the registry's name)

# The settings a profile gives the fields left at None (``quick``: minutes on a laptop), so that
# an option given explicitly always wins, even one equal to the other profile's value.
PROFILES: dict[str, dict[str, Any]] = {
    "default": dict(
        seeds="0,1", model=DEFAULT_MODEL, budget_tokens=100_000, budget_minutes=5.0, eval_prompts=64,
        results="leaderboard",
    ),
    "quick": dict(
        seeds="0", model=TINY_MODEL, budget_tokens=1_024, budget_minutes=0.5, eval_prompts=8,
        results="leaderboard-quick",
    ),
}  # fmt: skip


@dataclass
class LeaderboardConfig:
    """What the leaderboard runs; ``quick`` swaps in the tiny model, small budgets and the
    registry's quick hyperparameters. A field left None takes its profile's value
    (:data:`PROFILES`) in :meth:`resolved`."""

    quick: bool = field(
        default=False, metadata={"help": "tiny model, one seed, small budgets and batches (minutes)"}
    )
    envs: str = field(default="", metadata={"help": 'comma-separated env ids ("": every registered env)'})
    agents: str = field(default=",".join(AGENTS), metadata={"help": "comma-separated agents"})
    seeds: str | None = field(default=None, metadata={"help": "comma-separated seeds"})
    model: str | None = field(default=None, metadata={"help": "model name or path"})
    budget_tokens: int | None = field(default=None, metadata={"help": "generated tokens per trained run"})
    budget_minutes: float | None = field(
        default=None, metadata={"help": "training wall time per trained run"}
    )
    eval_prompts: int | None = field(
        default=None, metadata={"help": "test prompts per evaluation, the same for every agent"}
    )
    results: str | None = field(
        default=None, metadata={"help": "folder of runs.jsonl and the run directories"}
    )
    board: str = field(
        default="",
        metadata={"help": 'the markdown board, its plots next to it in leaderboard/ ("": in --results)'},
    )
    device: str = field(default="auto", metadata={"help": "auto (CUDA where present) | cpu | cuda"})
    precision: str = field(
        default="fp32",
        metadata={
            "help": "fp32 | bf16 (mixed) | auto (bf16 where a probe finds it faster); fp32 by default, so "
            "that every row of a board, the published ones too, compares agents at one precision"
        },
    )
    ray: str = field(
        default="",
        metadata={"help": "run as Ray tasks: --ray (a local instance) or --ray ADDRESS (a cluster)"},
    )
    ray_cpus: int = field(default=2, metadata={"help": "CPUs each Ray task asks for"})
    ray_gpus: float = field(default=0.0, metadata={"help": "GPUs each Ray task asks for"})

    def resolved(self) -> LeaderboardConfig:
        """The settings that run: the profile's values (``quick``: the tiny model, one seed,
        small budgets, a separate results folder) for the fields left None, whatever was given
        kept; the board goes in the results folder unless given."""
        profile = PROFILES["quick" if self.quick else "default"]
        config = dataclasses.replace(self, **{k: v for k, v in profile.items() if getattr(self, k) is None})
        if not config.board:
            config = dataclasses.replace(config, board=str(Path(config.results) / "LEADERBOARD.md"))
        return config

    def env_ids(self) -> list[str]:
        ids = [e.strip() for e in self.envs.split(",") if e.strip()] or list(textgym.ENVS)
        unknown = [e for e in ids if e not in gym.registry]
        if unknown:
            raise ValueError(f"unknown envs {unknown}: expected ids from {list(textgym.ENVS)}")
        return _once("envs", ids)

    def agent_names(self) -> list[str]:
        names = [a.strip() for a in self.agents.split(",") if a.strip()]
        unknown = [a for a in names if a not in AGENTS]
        if unknown or not names:
            raise ValueError(f"unknown agents {unknown or names}: expected names from {list(AGENTS)}")
        return _once("agents", names)

    def seed_list(self) -> list[int]:
        text = self.resolved().seeds
        try:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        except ValueError:
            raise ValueError(f"seeds must be comma-separated non-negative ints, got {text!r}") from None
        if not seeds or any(s < 0 for s in seeds):
            raise ValueError(f"seeds must be comma-separated non-negative ints, got {text!r}")
        return _once("seeds", seeds)

    def validate(self) -> None:
        """Raise ValueError naming the first bad setting, before any run starts or any file is
        written (a bad value found by the third run would leave two records and a traceback).
        The budgets, the evaluation size and the model are checked by the training runs' own
        :meth:`TrainConfig.validate`, for each env and trained agent that trains on it (untrained
        agents alone: as if ``textppo``, or ``ppo`` on a multi-turn env, ran, since their
        evaluations load the same model)."""
        config = self.resolved()
        envs, agents, seeds = config.env_ids(), config.agent_names(), config.seed_list()
        for env in envs:
            runnable = [a for a in agents if a in TRAINED and supports(TRAINED[a], env)]
            for agent in runnable or ["textppo" if supports("textppo", env) else "ppo"]:
                config.train_config(env, agent, seeds[0]).validate()
        if self.ray:
            ray_module()  # ImportError naming the extra, before any run
            if self.ray_cpus < 1 or not self.ray_gpus >= 0:
                got = f"{self.ray_cpus}, {self.ray_gpus}"
                raise ValueError(f"ray_cpus must be >= 1 and ray_gpus >= 0, got {got}")
        results, board = Path(config.results), Path(config.board)
        check_writable(results / "runs.jsonl", "--results")
        check_writable(results / "runs" / "run", "--results")
        check_writable(board, "--board")
        check_writable(board.parent / "leaderboard" / "plot.png", "--board")

    def train_config(self, env_id: str, agent: str, seed: int) -> TrainConfig:
        """A trained agent's run: the budgets here, the registry's hyperparameters (resolved)."""
        config = self.resolved()
        return TrainConfig(
            env=env_id,
            algo=TRAINED[agent],
            model=config.model,
            seed=seed,
            budget_tokens=config.budget_tokens,
            budget_minutes=config.budget_minutes,
            eval_prompts=config.eval_prompts,
            eval_every_minutes=0,  # the curve comes from the training batches
            profile="quick" if self.quick else "default",
            device=self.device,
            precision=self.precision,
        ).resolved()

    def resolved_precision(self) -> str:
        """``fp32`` or ``bf16``: what ``precision`` means on ``device`` on this machine."""
        return resolve_precision(self.precision, resolve_device(self.device))


# Stock PPO's fields in the flat config of the runs before the registry, per profile.
LEGACY_STOCK = {
    "default": {"n_envs": 8, "n_steps": 16, "batch_size": 8},
    "quick": {"n_envs": 4, "n_steps": 8, "batch_size": 8},
}


@dataclass(frozen=True)
class RunSpec:
    env: str
    agent: str
    seed: int

    def key(self, config: LeaderboardConfig) -> str:
        """Identifies the run and everything its result depends on (resuming skips known keys)."""
        train = None
        if self.agent in TRAINED:
            train = dataclasses.asdict(config.train_config(self.env, self.agent, self.seed))
            del train["device"], train["precision"]  # in _key: the precision alone, resolved
            if not train["env_kwargs"]:  # each env's defaults: the keys runs had before the field
                del train["env_kwargs"]
        return self._key(config, train)

    def keys(self, config: LeaderboardConfig) -> set[str]:
        """The key, and the one the same run had before the hyperparameter registry."""
        return {self.key(config), self.legacy_key(config)}

    def legacy_key(self, config: LeaderboardConfig) -> str:
        """The key of this run's records written before the hyperparameter registry, when the
        train settings were one flat dataclass (the published board's records carry such keys).
        TextPPO's Dialogue and Summarization runs used the registry's values of today, which
        tests/test_hyperparams.py pins (when they change, re-run those rows and remove this);
        stock PPO's values (64 envs, the KL in the policy) and TextPPO's on Sentiment (tuned rate
        and batch) have changed since, so their old records no longer match and those rows ran
        again."""
        if self.agent not in TRAINED:
            return self.key(config)
        train = config.train_config(self.env, self.agent, self.seed)
        both = {
            **hyperparams("ppo", self.env, train.profile),
            **hyperparams("textppo", self.env, train.profile),
            **train.hyperparams,
        }
        if train.algo == "textppo":  # the flat config held stock PPO's fields too, then at these values
            both |= LEGACY_STOCK[train.profile]
        skip = ("profile", "hyperparams", "device", "precision", "env_kwargs")  # the board sets none
        flat = {
            **{k: v for k, v in dataclasses.asdict(train).items() if k not in skip},
            **{k: both[k] for k in FLAT_HYPERPARAMS},
            "lora": bool(both["policy_kwargs"].get("lora")),
        }
        return self._key(config, flat)

    def _key(self, config: LeaderboardConfig, train: dict[str, Any] | None) -> str:
        config = config.resolved()
        settings: dict[str, Any] = {
            "model": config.model,
            "eval_prompts": config.eval_prompts,
            **dataclasses.asdict(self),
        }
        # The device does not change a result; bf16 does (fp32 runs keep the keys they had before
        # the option existed).
        precision = config.resolved_precision()
        if precision != "fp32":
            settings["precision"] = precision
        if train is not None:
            settings["train"] = train
        digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
        return f"{self.env}-{self.agent}-s{self.seed}-{digest}"


def _once(what: str, values: list[Any]) -> list[Any]:
    repeated = [v for v, n in Counter(values).items() if n > 1]
    if repeated:
        raise ValueError(f"{what} name {repeated} more than once, got {values}")
    return values


def ray_module() -> Any:
    """The ``ray`` package, or ImportError naming the extra that installs it."""
    try:
        import ray
    except ImportError as err:
        raise ImportError("--ray needs the 'ray' package: pip install 'textgym[ray]'") from err
    return ray
