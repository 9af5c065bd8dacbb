"""The hyperparameter registry: one YAML file per algorithm in ``hyperparams/`` (``textppo.yml``,
``ppo.yml``, ``a2c.yml``), keyed by env id, as in rl-baselines3-zoo. ``textgym train``, the
leaderboard and the benchmarks read their defaults here and nowhere else.

    hyperparams("textppo", "TextGen-Sentiment-v0")                   # every key, resolved
    hyperparams("ppo", "TextGen-Dialogue-v0", "quick", {"learning_rate": 1e-4})
    parse_overrides("textppo", ["learning_rate=1e-4", "policy_kwargs.lora=true"])

A value comes from, the last one winning: the algorithm's constructor default, the file's entry
for the env, its ``quick`` block (profile ``"quick"``), its ``lora`` block (when the resolved
``policy_kwargs`` turn LoRA on: adapters train with a larger step than the whole model), the
overrides. The keys are the
constructor's keyword arguments (``inspect.signature``) but for those textgym sets itself, plus
:data:`EXTRA` (settings textgym applies around the algorithm). Every value is checked against
the type of its default, and the resolved values go through the algorithm's own argument
checks (:func:`check_constructor`), so a bad key or value stops a run before anything is written.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm

from textgym.agents.common.network import LMPolicyConfig
from textgym.agents.common.policies import PASSED_THROUGH, LMActorCriticPolicy
from textgym.agents.dqn.policy import Q_KEYS, LMQPolicy
from textgym.agents.softq import SoftQ
from textgym.agents.textppo import GRPO, REINFORCE, RLOO, TextPPO
from textgym.envs import ENVS
from textgym.envs.multiturn import MultiTurnEnv

FOLDER = Path(__file__).parents[1] / "hyperparams"  # agents/hyperparams/<algo>.yml
# The registry's algorithms: name -> class (``textgym train --algo NAME``, hyperparams/NAME.yml).
ALGOS: dict[str, type[BaseAlgorithm]] = {
    "textppo": TextPPO, "grpo": GRPO, "rloo": RLOO, "reinforce": REINFORCE, "softq": SoftQ,
    "ppo": PPO, "a2c": A2C, "dqn": DQN,
}  # fmt: skip
PROFILES = ("default", "quick")
BLOCKS = ("quick", "lora")  # a file's entries that are not envs: the quick profile, LoRA's values
STOCK = ("ppo", "a2c", "dqn")  # SB3's own algorithms, with an LM policy on n_envs KL-wrapped envs
# Constructor arguments that are not hyperparameters: textgym passes them (policy, env, seed,
# logging, device), or they have no meaning for token actions (gSDE is for continuous actions).
NOT_HYPERPARAMETERS = (
    "self", "policy", "env", "seed", "tensorboard_log", "verbose", "device", "_init_setup_model",
    "stats_window_size", "rollout_buffer_class", "rollout_buffer_kwargs", "use_sde", "sde_sample_freq",
    "replay_buffer_class", "replay_buffer_kwargs", "optimize_memory_usage",
)  # fmt: skip


@dataclass(frozen=True)
class Param:
    """One hyperparameter: its type, whether None is allowed, and its default (None: the
    registry must set it); ``minimum`` keeps counts positive and coefficients non-negative."""

    name: str
    kind: type  # bool, int, float, str or dict
    default: Any = None
    nullable: bool = False
    minimum: float | None = None
    help: str = ""

    def describe(self) -> str:
        return self.kind.__name__ + (" or none" if self.nullable else "")

    def expected(self) -> str:
        """``"a bool"``, ``"an int or none"``, ``"a finite float"``: for error messages."""
        text = ("finite " if self.kind is float else "") + self.describe()
        return ("an " if text[0] in "aeiou" else "a ") + text


SINGLE_TURN_ONLY = ("softq",)  # replays whole single-turn texts


def supports(algo: str, env_id: str) -> bool:
    """Whether ``algo`` trains on ``env_id``: every algorithm on a single-turn env; on a
    multi-turn env all but SoftQ, whose replay holds single-turn texts."""
    env_class = ENVS.get(env_id)
    return algo not in SINGLE_TURN_ONLY or env_class is None or not issubclass(env_class, MultiTurnEnv)


def check_supported(algo: str, env_id: str) -> None:
    """ValueError naming what trains on ``env_id`` when ``algo`` does not."""
    if not supports(algo, env_id):
        raise ValueError(
            f"{algo} replays single-turn texts and {env_id} is multi-turn: train it with one of "
            f"{[a for a in ALGOS if supports(a, env_id)]}"
        )


POLICY_KWARGS = Param("policy_kwargs", dict, {}, help="LMActorCriticPolicy's arguments; the model is --model")
# Settings that are not constructor arguments: textgym applies them around the algorithm.
EXTRA: dict[str, dict[str, Param]] = {
    **{algo: {"policy_kwargs": POLICY_KWARGS} for algo in ("textppo", "grpo", "rloo", "reinforce", "softq")},
    **{
        algo: {
            "policy_kwargs": POLICY_KWARGS,
            "n_envs": Param("n_envs", int, minimum=1, help="envs stepped together"),
            "kl_coef": Param(
                "kl_coef",
                float,
                minimum=0,
                help="the KL coefficient: PPO's and A2C's ent_coef follows it unless set "
                "(see policy_kwargs.kl_to_reference)",
            ),  # fmt: skip
        }
        for algo in STOCK
    },
}


def _kind(default: Any, annotation: Any) -> type | None:
    if default is not None:  # an int default of a float argument (DQN's max_grad_norm=10) is a float
        return float if type(default) is int and "float" in str(annotation) else type(default)
    text = str(annotation)  # "float | None", "typing.Optional[float]", ...
    found = [
        (match.start(), t)
        for t in (bool, int, float, str)
        if (match := re.search(rf"\b{t.__name__}\b", text))
    ]
    return min(found, key=lambda item: item[0])[1] if found else None


def params(algo: str) -> dict[str, Param]:
    """Every hyperparameter of ``algo``: its constructor's keyword arguments, then :data:`EXTRA`."""
    if algo not in ALGOS:
        raise ValueError(f"unknown algo {algo!r}: expected one of {list(ALGOS)}")
    out: dict[str, Param] = {}
    for name, parameter in inspect.signature(ALGOS[algo].__init__).parameters.items():
        kind = _kind(parameter.default, parameter.annotation)
        if name in NOT_HYPERPARAMETERS or name in EXTRA[algo] or kind is None:
            continue
        default = parameter.default
        text = str(parameter.annotation)
        minimum = None
        if kind in (int, float) and default is not None and default >= 0:
            minimum = 1 if kind is int and default >= 1 and name != "learning_starts" else 0
        nullable = default is None or "None" in text or "Optional" in text
        out[name] = Param(name, kind, default, nullable, minimum)
    return {**out, **EXTRA[algo]}


def _plain(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (str, int, float, bool))


def policy_keys(algo: str = "textppo") -> list[str]:
    """The keys ``policy_kwargs`` takes here: the LM policy's fields but the model (a run
    setting), the SB3 arguments it passes through but the optimizer class (not a plain value),
    and for DQN :class:`LMQPolicy`'s own."""
    fields = [f.name for f in dataclasses.fields(LMPolicyConfig) if f.name != "model"]
    own = list(Q_KEYS) if algo == "dqn" else []
    return fields + [name for name in PASSED_THROUGH if name != "optimizer_class"] + own


def check(algo: str, name: str, value: Any, where: str = "") -> Any:
    """``value`` for the hyperparameter ``name`` of ``algo`` (ints become floats where a float is
    expected), or ValueError naming the key and what it accepts."""
    known = params(algo)
    if name not in known:
        raise ValueError(f"unknown hyperparameter {name!r} for {algo}{where}; accepted: {', '.join(known)}")
    param = known[name]
    if value is None and param.nullable:
        return None
    ok = isinstance(value, param.kind) and not (isinstance(value, bool) and param.kind is not bool)
    if param.kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if ok and param.kind is float and not math.isfinite(value):
        ok = False
    if not ok:
        raise ValueError(f"hyperparameter {name!r} of {algo}{where} takes {param.expected()}, got {value!r}")
    if param.minimum is not None and value < param.minimum:
        raise ValueError(
            f"hyperparameter {name!r} of {algo}{where} must be >= {param.minimum}, got {value!r}"
        )
    if param.kind is dict:  # policy_kwargs
        unknown = sorted(set(value) - set(policy_keys(algo)))
        if unknown or not _plain(value):
            raise ValueError(
                f"policy_kwargs{where} takes plain values (they are saved with the agent) for the keys "
                f"{policy_keys(algo)}, got {value!r}"
                + (" (the model is --model / TrainConfig.model)" if "model" in value else "")
            )
        fields = {k: v for k, v in value.items() if k not in PASSED_THROUGH and k not in Q_KEYS}
        try:
            LMPolicyConfig(**fields)  # its own checks: temperature > 0, a known dtype, ...
        except (TypeError, ValueError) as err:
            raise ValueError(f"policy_kwargs{where}: {err}") from None
    return value


def registry(algo: str) -> dict[str, dict[str, Any]]:
    """The file of ``algo``, checked: ``{env id, "quick" or "lora": {key: value}}``."""
    path = FOLDER / f"{algo}.yml"
    params(algo)  # an unknown algo fails here
    with path.open() as handle:
        entries = yaml.safe_load(handle) or {}
    required = [p.name for p in params(algo).values() if p.default is None and not p.nullable]
    for env_id, entry in entries.items():
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: {env_id} must map hyperparameters to values, got {entry!r}")
        for name, value in entry.items():
            check(algo, name, value, f" ({path}, {env_id})")
        missing = [name for name in required if name not in entry and env_id not in BLOCKS]
        if missing:
            raise ValueError(f"{path}: {env_id} must set {missing}")
        if env_id == "lora" and "policy_kwargs" in entry:
            raise ValueError(f"{path}: lora applies when policy_kwargs turn LoRA on, so it cannot set them")
    return entries


def hyperparams(
    algo: str, env_id: str, profile: str = "default", overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Every hyperparameter of ``algo`` on ``env_id``: constructor defaults, the registry's entry
    for the env, the profile's block, then ``overrides`` (``policy_kwargs`` merge key by key)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown hyperparameter profile {profile!r}: expected one of {list(PROFILES)}")
    entries = registry(algo)
    if env_id not in entries:
        check_supported(algo, env_id)  # a multi-turn env names the algorithms that train on it
        known = [e for e in entries if e not in BLOCKS]
        raise ValueError(
            f"no {algo} hyperparameters for {env_id!r} in {FOLDER / f'{algo}.yml'}: it has {known}"
        )
    overrides = {name: check(algo, name, value) for name, value in (overrides or {}).items()}
    layers = [entries[env_id], entries.get("quick", {}) if profile == "quick" else {}, overrides]
    lora = [layer["policy_kwargs"]["lora"] for layer in layers if "lora" in layer.get("policy_kwargs", {})]
    if lora and lora[-1] not in (None, False):  # the last word on LoRA turns it on
        layers.insert(2, entries.get("lora", {}))
    values = {name: copy.deepcopy(param.default) for name, param in params(algo).items()}
    for layer in layers:
        for name, value in layer.items():
            values[name] = {**values[name], **value} if name == "policy_kwargs" else value
    given = {name for layer in layers for name in layer}
    # Defaults that follow another value: the stock path's objective is reward - kl_coef * KL only
    # with ent_coef = kl_coef; a minibatch never exceeds its batch.
    if algo in STOCK and "ent_coef" in values and "ent_coef" not in given:
        values["ent_coef"] = values["kl_coef"]
    if "minibatch_episodes" in values and "minibatch_episodes" not in overrides:
        values["minibatch_episodes"] = min(values["minibatch_episodes"], values["batch_episodes"])
    if values.get("minibatch_episodes", 0) > values.get("batch_episodes", math.inf):
        raise ValueError(
            f"minibatch_episodes ({values['minibatch_episodes']}) exceeds "
            f"batch_episodes ({values['batch_episodes']})"
        )
    check_constructor(algo, values)
    return values


def check_constructor(algo: str, values: dict[str, Any]) -> None:
    """Run ``algo``'s own checks of its arguments (``kl_estimator`` one of its estimators,
    ``gamma`` in [0, 1], ...) on the resolved ``values`` without building it: no env and no
    model, as SB3's ``load`` constructs an algorithm. ValueError names what it rejects."""
    policy = {"dqn": LMQPolicy, "ppo": LMActorCriticPolicy, "a2c": LMActorCriticPolicy}.get(algo, "LMPolicy")
    try:
        ALGOS[algo](policy, None, device="cpu", _init_setup_model=False, **constructor_kwargs(algo, values))
    except (AssertionError, TypeError, ValueError) as err:  # SB3 asserts some of its arguments
        raise ValueError(f"hyperparameters of {algo}: {err}") from None


def constructor_kwargs(algo: str, values: dict[str, Any]) -> dict[str, Any]:
    """The resolved ``values`` that ``algo``'s constructor takes (not the :data:`EXTRA` ones)."""
    return {name: value for name, value in values.items() if name not in EXTRA[algo]}


def scalar_value(text: str) -> Any:
    """A command-line value: a bool, None, an int, a float, a YAML list or dict, else the text."""
    lowered = text.strip().lower()
    words = {"true": True, "false": False, "yes": True, "no": False, "none": None, "null": None}
    if lowered in words:
        return words[lowered]
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    if text.strip().startswith(("{", "[")):
        return yaml.safe_load(text)
    return text


def parse_value(algo: str, name: str, text: str) -> Any:
    """``text`` (from the command line) as the type of ``name``'s default."""
    param = params(algo).get(name)
    if param is None:
        return check(algo, name, text)  # the unknown-key error
    lowered = text.strip().lower()
    if param.nullable and lowered in ("none", "null"):
        return None
    try:
        if param.kind is bool:
            value: Any = {"true": True, "false": False, "yes": True, "no": False, "1": True, "0": False}[
                lowered
            ]
        elif param.kind is dict:
            value = yaml.safe_load(text)
        else:
            value = param.kind(text)
    except (KeyError, ValueError, yaml.YAMLError):
        raise ValueError(
            f"hyperparameter {name!r} of {algo} takes {param.expected()}, got {text!r}"
        ) from None
    return check(algo, name, value)


def split_assignment(pair: str, usage: str) -> tuple[str, str]:
    """``"key=value"`` as ``(key, value)``; ValueError ``"<usage>, got <pair>"`` without a key."""
    name, sep, text = pair.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ValueError(f"{usage}, got {pair!r}")
    return name, text


def parse_overrides(algo: str, pairs: Sequence[str]) -> dict[str, Any]:
    """``["key=value", "policy_kwargs.lora=true", ...]`` as typed overrides for ``algo``."""
    out: dict[str, Any] = {}
    for pair in pairs:
        name, text = split_assignment(pair, "hyperparameter overrides take key=value")
        if name.startswith("policy_kwargs."):
            key = name.removeprefix("policy_kwargs.")
            kwargs = out.setdefault("policy_kwargs", {})
            if key in kwargs:
                raise ValueError(f"hyperparameter {name!r} is given twice")
            kwargs[key] = scalar_value(text)
            continue
        if name in out:
            raise ValueError(f"hyperparameter {name!r} is given twice")
        out[name] = parse_value(algo, name, text)
    if "policy_kwargs" in out:
        check(algo, "policy_kwargs", out["policy_kwargs"])
    return out


def describe(algos: Sequence[str] = tuple(ALGOS)) -> str:
    """Every hyperparameter of ``algos`` with its type and value (``textgym train --help``)."""
    lines = [
        "hyperparameters (--hyperparams KEY=VALUE ...; policy_kwargs.NAME=VALUE for the policy's):",
        "values from the registry, agents/hyperparams/<algo>.yml, else the constructor's default;",
        "[quick: ...] is the quick profile (--profile quick), {env: ...} an env's own value,",
        "<lora: ...> the value with --lora (policy_kwargs.lora=true).",
    ]
    for algo in algos:
        entries = registry(algo)
        envs = [e for e in entries if e not in BLOCKS]
        resolved = {env: hyperparams(algo, env) for env in envs}
        quick = hyperparams(algo, envs[0], "quick")
        lora = hyperparams(algo, envs[0], overrides={"policy_kwargs": {"lora": True}})
        lines += ["", f"{algo}:"]
        for name, param in params(algo).items():
            value = resolved[envs[0]][name]
            text = f"  {name:22s} {param.describe():14s} {value!r}"
            text += "".join(
                f" {{{env}: {resolved[env][name]!r}}}" for env in envs[1:] if resolved[env][name] != value
            )
            if quick[name] != value:
                text += f" [quick: {quick[name]!r}]"
            if name != "policy_kwargs" and lora[name] != value:
                text += f" <lora: {lora[name]!r}>"
            lines.append(text + (f"  ({param.help})" if param.help else ""))
        lines.append(f"  policy_kwargs keys: {', '.join(policy_keys(algo))}")
    return "\n".join(lines)
