"""A training run's configuration: :class:`TrainConfig` (what ``run.json`` saves), resolved
once (:meth:`TrainConfig.resolved`: every hyperparameter filled in from the registry) and passed
down; :func:`parse_budget` reads the command line's ``--budget``."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

import textgym
from textgym.agents.common.network import check_lora
from textgym.agents.runs.checkpoints import CheckpointError
from textgym.agents.runs.hyperparams import (
    ALGOS,
    PROFILES,
    check_supported,
    hyperparams,
    params,
    scalar_value,
    split_assignment,
)
from textgym.models import DEFAULT_MODEL, load_tokenizer
from textgym.models.precision import check_device, check_precision


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved in ``run.json``): the run's settings, and
    ``hyperparams``, the algorithm's hyperparameters over the registry's values for the env and
    ``profile`` (``agents/hyperparams/<algo>.yml``); :meth:`resolved` fills in every one."""

    env: str = field(default="TextGen-Sentiment-v0", metadata={"help": "env id"})
    algo: str = field(
        default="textppo", metadata={"help": "textppo | grpo | rloo | reinforce | softq | ppo | a2c | dqn"}
    )
    model: str = field(default=DEFAULT_MODEL, metadata={"help": "model name or path"})
    seed: int = field(default=0, metadata={"help": "seeds the env, the sampling and the evaluations"})
    budget_tokens: int = field(default=1_000_000, metadata={"help": "generated tokens (SB3 timesteps)"})
    budget_minutes: float = field(default=10.0, metadata={"help": "training wall time, evaluations excluded"})
    eval_prompts: int = field(
        default=64, metadata={"help": "test prompts evaluated before and after training"}
    )
    eval_every_minutes: float = field(
        default=5.0, metadata={"help": "training minutes between evaluations on validation prompts (0: off)"}
    )
    eval_every_prompts: int = field(
        default=16, metadata={"help": "validation prompts per periodic evaluation"}
    )
    checkpoint_minutes: float = field(default=2.0, metadata={"help": "training minutes between checkpoints"})
    profile: str = field(
        default="default", metadata={"help": "the registry's profile: default, or quick (small batches)"}
    )
    device: str = field(default="auto", metadata={"help": "auto (CUDA where present) | cpu | cuda"})
    precision: str = field(
        default="auto",
        metadata={"help": "auto (bf16 where a probe finds it faster, else fp32) | fp32 | bf16 (mixed)"},
    )
    hyperparams: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "hyperparameters over the registry's (listed below)"}
    )
    env_kwargs: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "the env's own arguments over its defaults, as gym.make's (reward=NAME ...)"},
    )

    def resolved(self) -> TrainConfig:
        """This run with every hyperparameter filled in; ValueError names a bad key or value."""
        return dataclasses.replace(
            self, hyperparams=hyperparams(self.algo, self.env, self.profile, self.hyperparams)
        )

    def validate(self) -> TrainConfig:
        """This run resolved (:meth:`resolved`), or ValueError naming the first bad field
        (before anything is written); the hyperparameters pass the algorithm's own checks."""
        if self.env not in gym.registry:
            raise ValueError(f"unknown env {self.env!r}: expected one of {list(textgym.ENVS)}")
        if self.algo not in ALGOS:
            raise ValueError(f"unknown algo {self.algo!r}: expected one of {list(ALGOS)}")
        check_supported(self.algo, self.env)
        check_seed(self.seed, "seed")
        for name in ("budget_tokens", "eval_prompts", "eval_every_prompts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("budget_minutes", "eval_every_minutes", "checkpoint_minutes"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value < 0
            ):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.budget_minutes <= 0:
            raise ValueError(f"budget_minutes must be > 0, got {self.budget_minutes!r}")
        if self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}: expected one of {list(PROFILES)}")
        check_device(self.device)
        check_precision(self.precision)
        check_env_kwargs(self.env, self.env_kwargs)
        resolved = self.resolved()  # an unknown hyperparameter or a bad value fails here
        load_tokenizer(self.model)  # an unknown model fails here, before any file is written
        if self.env_kwargs:  # the env's own checks of its arguments, before any file is written
            gym.make(self.env, model=self.model, **self.env_kwargs).close()
        check_lora(resolved.hyperparams.get("policy_kwargs", {}).get("lora"), self.model)
        return resolved


SEEDS = 2**32  # seeds are 0 .. 2**32 - 1: what NumPy's legacy seeding (SB3's set_random_seed) takes


def check_seed(value: object, what: str = "seed", count: int = 1) -> None:
    """ValueError naming ``what`` unless ``value`` and the ``count`` seeds after it (``value``,
    ``value + 1``, ...) are ints in ``0 .. 2**32 - 1``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= SEEDS - count:
        in_range = isinstance(value, int) and not isinstance(value, bool) and 0 <= value < SEEDS
        last = f" (with {count} seeds, at most {SEEDS - count})" if in_range else ""
        raise ValueError(f"{what} must be an int from 0 to {SEEDS - 1}{last}, got {value!r}")


def parse_budget(text: str) -> tuple[int | None, float | None]:
    """``"10m"``, ``"90s"``, ``"1.5h"``, ``"20000"``/``"20k"`` tokens, or one of each joined by a
    comma: (tokens or None, minutes or None)."""
    found: dict[str, float] = {}
    for part in (p.strip().lower() for p in str(text).split(",")):
        try:
            if part.endswith(("h", "m", "s")) and part[:-1]:
                kind, value = "a time", float(part[:-1]) * {"h": 60.0, "m": 1.0, "s": 1 / 60}[part[-1]]
            elif part.endswith("k"):
                kind, value = "tokens", int(float(part[:-1]) * 1000)
            else:
                kind, value = "tokens", int(part)
        except ValueError:
            raise ValueError(
                f"bad budget {text!r}: use minutes (10m, 90s, 1h), tokens (20000, 20k) or both (10m,20k)"
            ) from None
        if kind in found:
            raise ValueError(f"bad budget {text!r}: it gives {kind} twice; give at most one of each")
        found[kind] = value
    tokens, minutes = found.get("tokens"), found.get("a time")
    if (tokens is not None and tokens < 1) or (minutes is not None and not minutes > 0):
        raise ValueError(f"bad budget {text!r}: it must be positive")
    return None if tokens is None else int(tokens), minutes


IDENTITY = ("env", "env_kwargs", "algo", "model", "seed")  # with the resolved hyperparameters: what a run is
# The env arguments a run sets itself: its model, the split of each phase, the render mode.
RUN_ENV_ARGUMENTS = ("model", "split", "render_mode")


def parse_env_kwargs(pairs: list[str]) -> dict[str, Any]:
    """``["reward=dialogue-relevance", "max_new_tokens=48"]`` (``--env-kwargs``) as a dict."""
    out: dict[str, Any] = {}
    for pair in pairs:
        name, text = split_assignment(pair, "--env-kwargs takes KEY=VALUE")
        if name in out:
            raise ValueError(f"env argument {name!r} is given twice")
        out[name] = scalar_value(text)
    return out


def check_env_kwargs(env: str, env_kwargs: Any) -> None:
    """ValueError unless ``env_kwargs`` is a dict of ``env``'s own arguments (not those the run
    sets) with values run.json can hold (JSON: a registered reward's name, not a function)."""
    if not isinstance(env_kwargs, dict):
        raise ValueError(f"env_kwargs must be a dict of {env}'s arguments, got {type(env_kwargs).__name__}")
    task = textgym.ENVS.get(env)
    accepted = [n for n in (task.accepted_arguments() if task else []) if n not in RUN_ENV_ARGUMENTS]
    unknown = [key for key in env_kwargs if key not in accepted]
    if task is not None and unknown:
        raise ValueError(f"env_kwargs has unknown key(s) {unknown} for {env}; accepted keys: {accepted}")
    try:
        json.dumps(env_kwargs, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"env_kwargs must hold JSON values (run.json saves them: a registered reward's name, not a "
            f"function), got {env_kwargs!r}: {err}"
        ) from None


# The run's settings its evaluations depend on: fixed for its life, so that the evaluations before
# training, during (validation) and after compare the same prompts. Budgets may grow on --resume.
COMPARED = ("eval_prompts", "eval_every_prompts")
# What run.json held before the hyperparameter registry, besides the run's settings.
FLAT_HYPERPARAMS = ("learning_rate", "kl_coef", "batch_episodes", "minibatch_episodes", "n_envs", "n_steps",
                    "batch_size")  # fmt: skip


def saved_config(saved: dict[str, Any]) -> dict[str, Any]:
    """A ``run.json`` config; one written before the registry (flat ``learning_rate``,
    ``kl_coef``, ``lora``, ...) reads as the registry's default values with the ones it saved,
    which is what those runs used."""
    saved = {**saved, "env_kwargs": saved.get("env_kwargs", {})}  # runs before env_kwargs used none
    if "hyperparams" in saved:
        return saved
    try:
        known = params(saved["algo"])
        flat = {k: v for k, v in saved.items() if k in FLAT_HYPERPARAMS and k in known}
        flat["policy_kwargs"] = {"lora": True} if saved.get("lora") else {}
        resolved = hyperparams(saved["algo"], saved["env"], "default", flat)
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"run.json holds a config this version cannot read ({err})") from None
    return {**saved, "hyperparams": resolved}


DATA_PARALLEL = ("textppo", "grpo", "rloo", "reinforce")  # the algorithms torchrun can run on several ranks
