"""Tune an algorithm's hyperparameters on one env with Optuna (as rl-baselines3-zoo does).

Each trial trains with ``textgym.agents.train`` for ``--budget-minutes`` (in its own process, so
its memory is its own) from the registry's values with the sampled ones over them, then
evaluates the trained agent on ``--eval-prompts`` seeded *validation* prompts (the test prompts
stay for the final comparison). The objective is the validation task reward; a trial is
feasible only if its distinct-2 is at least ``--min-distinct`` times and its perplexity under the
initial model at most ``--max-perplexity`` times the untrained model's on the same prompts
(evaluated once per env, model, precision, prompts and seed, and kept in ``<out>`` for every
study that asks the same), which Optuna's TPE sampler takes as constraints. Trial 0 of a new
study is the registry's values (or the first trial that did not fail, if it was killed), so the
table shows whether the search beat them.

Rewards vary far more between prompts than between policies on one prompt, so the table also
compares each trial with the untrained model and with trial 0 *paired* on the same validation
prompts (the mean per-prompt difference with its 95% interval): a searched point beats the
registry's values when that interval lies above zero, and only then does the script say so.

With ``--rungs N`` (N > 1) a trial trains in N equal shares of its budget, each resuming the
last's checkpoint, and is evaluated on the validation prompts after each; Optuna's median pruner
(as rl-baselines3-zoo uses) stops a trial whose reward at a rung is below the median of the
earlier trials' at that rung, once ``--prune-after`` trials have run in full. Full-budget trials
then cost a study only for the hyperparameters that keep up.

The study lives in ``<out>/<algo>-<env>.journal`` (Optuna's JournalStorage: a text log of the
study's operations, kept out of git): an interrupted study resumes with the same command and
keeps its finished trials. One process runs a study at a time (it holds
``<out>/runs/<algo>-<env>/train.lock``; a second is refused), so a trial still "running" when a
run of the study starts was left by a killed process: it is marked failed at once, and what it
tried, the registry's values or an ``--enqueue`` point, is tried again (the registry's values
before anything else, when no other trial ran). Every setting is checked before the study is
created or anything is written. A study kept in ``<algo>-<env>.db``
(SQLite, as earlier versions did) is copied into the journal the first time it resumes. Every
trial also appends one JSON line to ``<out>/<algo>-<env>.jsonl`` (the record the docs' tuning page
reads, kept in git), and the script prints the trials as a table, best first.

    python benchmarks/tune.py --env TextGen-Summarization-v0 --algo grpo --trials 6 --budget-minutes 5
    python benchmarks/tune.py --env TextGen-Dialogue-v0 --algo grpo --budget-minutes 20 --rungs 4
    python benchmarks/tune.py --env TextGen-Summarization-v0 --algo textppo --trials 3 --enqueue kl_coef=0.002
    python benchmarks/tune.py --model tiny --trials 2 --budget-tokens 256   # a smoke run

A study keeps its settings (budget, rungs, validation prompts, precision, seed, feasibility
bounds): resuming it with others is refused, since its trials are compared with each other; give
``--out`` another folder for a study of the same algorithm and env with other settings.

``--enqueue KEY=VALUE ...`` tries that point next (the registry's values for keys not given), as
Optuna's ``enqueue_trial``: a hypothesis checked in the same study, before TPE's own points.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from common import STARTED_AT_COMMIT
from rich.console import Console
from rich.table import Table

from textgym.agents import evaluate
from textgym.agents.leaderboard.runner import run_in_child
from textgym.agents.runs.checkpoints import RunBusyError, RunLock, load_agent
from textgym.agents.runs.config import TrainConfig
from textgym.agents.runs.evaluation import mean_ci, per_example
from textgym.agents.runs.hyperparams import ALGOS, STOCK, hyperparams, parse_overrides
from textgym.agents.runs.training import train
from textgym.atomic import append_line, write_json
from textgym.cli import add_dataclass_options, dataclass_values
from textgym.envs import ENVS
from textgym.models import DEFAULT_MODEL
from textgym.models.precision import PRECISIONS

GROUPED = ("grpo", "rloo")


@dataclass
class Args:
    env: str = "TextGen-Sentiment-v0"
    algo: str = "grpo"
    trials: int = 6  # trials to add to the study (an interrupted study keeps its finished ones)
    budget_minutes: float = 5.0  # training time per trial
    budget_tokens: int = 1_000_000  # generated tokens per trial, whichever comes first
    eval_prompts: int = 32  # validation prompts per evaluation
    min_distinct: float = 0.7  # feasible: distinct-2 >= this x the untrained model's
    max_perplexity: float = 1.5  # feasible: perplexity <= this x the untrained model's
    model: str = DEFAULT_MODEL
    precision: str = "fp32"  # trials and the untrained model alike (a study's records stay comparable)
    seed: int = 0
    rungs: int = 1  # validation evaluations per trial, at equal shares of its budget (above 1: pruning)
    prune_after: int = 2  # trials that run in full before the median pruner may stop one
    out: str = "benchmarks/results/tune"
    # A point to try next (Optuna's enqueue_trial), e.g. a hypothesis, if the study has not tried it.
    enqueue: dict = field(default_factory=dict)


# Each searched hyperparameter's range, as an Optuna distribution.
SPACE = {
    "learning_rate": optuna.distributions.FloatDistribution(5e-6, 1e-4, log=True),
    "kl_coef": optuna.distributions.FloatDistribution(1e-4, 0.1, log=True),
    "group_size": optuna.distributions.CategoricalDistribution([2, 4, 8]),
    "batch_episodes": optuna.distributions.CategoricalDistribution([16, 32, 64]),
}


def suggest(trial: optuna.Trial, key: str) -> Any:
    distribution = SPACE[key]
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return trial.suggest_categorical(key, distribution.choices)
    return trial.suggest_float(key, distribution.low, distribution.high, log=distribution.log)


def within(key: str, value: Any) -> bool:
    distribution = SPACE[key]
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return value in distribution.choices
    return distribution.low <= value <= distribution.high


def searched(algo: str) -> list[str]:
    """The hyperparameters a study of ``algo`` searches (the rest are the registry's)."""
    keys = ["learning_rate", "kl_coef"]
    if algo in GROUPED:
        keys.append("group_size")
    if algo not in STOCK:
        keys.append("batch_episodes")
    return keys


def space(trial: optuna.Trial, algo: str) -> dict[str, Any]:
    """The values a trial tries; a minibatch holds whole groups."""
    values = {key: suggest(trial, key) for key in searched(algo)}
    if "group_size" in values:
        values["minibatch_episodes"] = max(8, values["group_size"])
    return values


def pruner(prune_after: int) -> optuna.pruners.BasePruner:
    """The median pruner, after ``prune_after`` full trials (it asks only between rungs)."""
    return optuna.pruners.MedianPruner(n_startup_trials=prune_after)


def registry_point(algo: str, env: str) -> dict[str, Any]:
    """The registry's values for the searched keys (``minibatch_episodes`` follows from them)."""
    values = hyperparams(algo, env)
    return {key: values[key] for key in searched(algo)}


def with_rewards(evaluation: Any) -> dict[str, Any]:
    """An evaluation's metrics and its reward on each prompt, in prompt order (for paired comparisons)."""
    return {**evaluation.metrics, "rewards": per_example(evaluation.examples, "reward").tolist()}


def enqueued(algo: str, env: str, pairs: list[str]) -> dict[str, Any]:
    """``--enqueue KEY=VALUE ...`` as a point of the search space: the values given, the
    registry's for the other searched keys. A key not searched or a value out of range fails."""
    try:
        given = parse_overrides(algo, pairs)
    except ValueError as error:
        raise SystemExit(f"--enqueue: {error}") from None
    for key, value in given.items():
        if key not in searched(algo):
            raise SystemExit(
                f"--enqueue {key}={value}: a study of {algo} searches {searched(algo)}, not {key!r}"
            )
        if not within(key, value):
            raise SystemExit(f"--enqueue {key}={value}: out of the searched range {SPACE[key]}")
    return {**registry_point(algo, env), **given}


def train_trial(config: TrainConfig, out: str, eval_prompts: int) -> dict[str, Any]:
    """One trial (in a child process): train, then the trained agent on validation prompts."""
    train(config, out, resume=Path(out, "run.json").exists())
    agent = load_agent(out)
    return with_rewards(evaluate(agent, config.env, "validation", eval_prompts, seeds=[config.seed]))


def untrained(args: Args) -> dict[str, Any]:
    return with_rewards(
        evaluate(
            args.model, args.env, "validation", args.eval_prompts, seeds=[args.seed], precision=args.precision
        )
    )


def untrained_path(args: Args) -> Path:
    """Where the untrained model's validation evaluation is kept, shared by the env's studies."""
    model = "" if args.model == DEFAULT_MODEL else f"-{Path(args.model).name}"
    return Path(
        args.out, f"untrained-{args.env}{model}-{args.precision}-n{args.eval_prompts}-seed{args.seed}.json"
    )


def paired(a: dict[str, Any], b: dict[str, Any]) -> tuple[float, float] | None:
    """Mean and 95% half-width of ``a``'s reward minus ``b``'s on the same prompts (None when
    either lacks per-prompt rewards: records from before they were kept)."""
    if "rewards" not in a or "rewards" not in b or len(a["rewards"]) != len(b["rewards"]):
        return None
    return mean_ci(np.subtract(a["rewards"], b["rewards"]))


def parse(argv: list[str] | None = None) -> Args:
    """The command line as :class:`Args`; an unknown env, algo or precision is argparse's error,
    as ``textgym train`` gives it."""
    parser = argparse.ArgumentParser(prog="tune.py", description=__doc__.splitlines()[0])
    choices = dict(env=list(ENVS), algo=list(ALGOS), precision=list(PRECISIONS))
    add_dataclass_options(parser, Args, **{name: dict(choices=values) for name, values in choices.items()})
    return Args(**dataclass_values(Args, parser.parse_args(argv)))


def check(args: Args) -> None:
    """Every setting, before a study is created or anything is written (SystemExit naming the
    first bad one): a study keeps its settings, so one stored bad would refuse the corrected
    command. A trial's run settings go through the training runs' own ``TrainConfig.validate``."""
    if args.rungs < 1 or args.prune_after < 0:
        raise SystemExit(
            f"--rungs {args.rungs} --prune-after {args.prune_after}: expected --rungs >= 1 (1: no pruning) "
            "and --prune-after >= 0"
        )
    if args.trials < 1:
        raise SystemExit(f"--trials {args.trials}: expected at least 1")
    for name, low in (("min_distinct", "0"), ("max_perplexity", "0")):
        value = getattr(args, name)
        if not (math.isfinite(value) and value >= 0):
            raise SystemExit(f"--{name.replace('_', '-')} {value}: expected a finite number >= {low}")
    point = enqueued(args.algo, args.env, args.enqueue) if args.enqueue else None  # SystemExit if bad
    try:
        point = point or registry_point(args.algo, args.env)
        for rung in {1, args.rungs}:  # each rung's budget
            config = trial_config(args, point, rung)
            dataclasses.replace(config, eval_prompts=args.eval_prompts).validate()  # the trials' evaluations
    except ValueError as error:
        raise SystemExit(f"tune.py: error: {error}") from None


def trial_config(args: Args, values: dict[str, Any], rung: int) -> TrainConfig:
    """A trial's training run up to rung ``rung`` (of ``args.rungs``) with the searched ``values``."""
    return TrainConfig(
        env=args.env, algo=args.algo, model=args.model, seed=args.seed,
        budget_tokens=math.ceil(args.budget_tokens * rung / args.rungs),
        budget_minutes=args.budget_minutes * rung / args.rungs, eval_prompts=1, eval_every_minutes=0,
        hyperparams=values, precision=args.precision,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    check(args)  # before the study is created or anything written
    console = Console()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"{args.algo}-{args.env}" + ("" if args.model == DEFAULT_MODEL else f"-{Path(args.model).name}")
    try:
        with RunLock(out / "runs" / name):  # one process per study: see fail_left_running
            run_study(args, out, name, console)
    except RunBusyError:
        pid = (out / "runs" / name / "train.lock").read_text().strip()
        raise SystemExit(
            f"study {name} in {out} is being run by {f'process {pid}' if pid else 'another process'}: "
            "wait for it to end, or stop it, then run the same command again"
        ) from None


def study_storage(out: Path, name: str) -> optuna.storages.JournalStorage:
    """The study ``name``'s storage, ``<out>/<name>.journal``; a study that earlier versions kept
    in ``<out>/<name>.db`` (SQLite) is copied into it first."""
    journal = out / f"{name}.journal"
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    database = out / f"{name}.db"
    if database.exists() and not optuna.study.get_all_study_names(storage):
        optuna.copy_study(from_study_name=name, from_storage=f"sqlite:///{database}", to_storage=storage)
    return storage


def fail_left_running(study: optuna.Study) -> None:
    """Marks failed the trials a killed process left "running". Called while this process holds
    the study's lock, so no live process is running any of them (JournalStorage has no heartbeats)."""
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)


def tried(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """The point a trial tries: its parameters, or those it was enqueued with while it waits."""
    return trial.params or trial.system_attrs.get("fixed_params", {})


def registry_first(study: optuna.Study, point: dict[str, Any]) -> None:
    """Make the registry's values the study's first trial that did not fail: the search says
    whether it beat them. A new study, or one whose first trial was killed (failed by
    :func:`fail_left_running`) before any other ran, has only waiting trials (``--enqueue``
    points) or none: the waiting ones are failed and enqueued again after the registry's values,
    which Optuna then runs first (it takes waiting trials in the order they were enqueued)."""
    trials = live(study)
    if trials and (trials[0].state != optuna.trial.TrialState.WAITING or tried(trials[0]) == point):
        return  # the registry's values ran first, or wait to run first
    for trial in trials:  # every live trial is waiting here
        study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
    study.enqueue_trial(point)
    for trial in trials:
        study.enqueue_trial(tried(trial))


def run_study(args: Args, out: Path, name: str, console: Console) -> None:
    journal = out / f"{name}.journal"
    # TPE reads each trial's constraints (set with Trial.set_constraint, Optuna >= 5).
    sampler = optuna.samplers.TPESampler(seed=args.seed, n_startup_trials=3)
    study = optuna.create_study(
        study_name=name, storage=study_storage(out, name), direction="maximize", sampler=sampler,
        pruner=pruner(args.prune_after), load_if_exists=True,
    )  # fmt: skip
    renewed = same_settings(study, args, journal)
    if renewed or "untrained" not in study.user_attrs:
        kept = untrained_path(args)
        if not kept.exists():
            console.print(f"evaluating the untrained model on {args.eval_prompts} validation prompts ...")
            write_json(kept, run_in_child(untrained, (args,), "untrained evaluation"))
        study.set_user_attr("untrained", json.loads(kept.read_text()))
    base = study.user_attrs["untrained"]
    fail_left_running(study)  # so that what a killed trial tried is tried again
    registry_first(study, registry_point(args.algo, args.env))
    if args.enqueue:
        point = enqueued(args.algo, args.env, args.enqueue)
        if all(tried(t) != point for t in live(study)):  # a resumed study does not try it twice
            study.enqueue_trial(point)

    def objective(trial: optuna.Trial) -> float:
        values = space(trial, args.algo)
        run_dir = str(out / "runs" / f"{name}-trial{trial.number}")
        console.print(f"trial {trial.number}: {values}")
        rewards = []  # the validation reward at each rung
        for rung in range(1, args.rungs + 1):  # each rung resumes the last one's checkpoint
            config = trial_config(args, values, rung)
            label = f"trial {trial.number}" + (f", rung {rung}/{args.rungs}" if args.rungs > 1 else "")
            metrics = run_in_child(train_trial, (config, run_dir, args.eval_prompts), label)
            feasible = [
                args.min_distinct * base["distinct_2"] - metrics["distinct_2"],
                metrics["perplexity"] - args.max_perplexity * base["perplexity"],
            ]
            trial.set_user_attr("constraints", feasible)  # for the table
            for key in ("reward", "reward_ci95", "distinct_2", "perplexity", "kl", "rewards"):
                trial.set_user_attr(key, metrics.get(key))
            trial.set_user_attr("rung", rung)
            rewards.append(float(metrics["reward"]))
            trial.report(rewards[-1], rung)
            pruned = rung < args.rungs and bool(trial.should_prune())  # the median pruner's is numpy's bool
            if args.rungs > 1:
                console.print(f"{label}: reward {metrics['reward']:+.3f}" + (", pruned" if pruned else ""))
            if pruned:
                break
        for key, value in zip(("distinct_2", "perplexity"), feasible):  # the last rung's (set once)
            trial.set_constraint(key, value)
        record = {
            "study": name, "trial": trial.number, "hyperparams": values, "metrics": metrics,
            "untrained": base, "feasible": all(c <= 0 for c in feasible), "run_dir": run_dir,
            "budget": {"minutes": args.budget_minutes, "tokens": args.budget_tokens},
            "rungs": {"of": args.rungs, "reached": rung, "rewards": rewards},
            "pruned": pruned, "paired": paired_figures(study, trial.number, metrics, base),
            "settings": settings(args), "enqueue": list(args.enqueue),  # the command that reproduces it
            "date": trial.datetime_start.date().isoformat(), "git_commit": STARTED_AT_COMMIT,
        }  # fmt: skip
        append_line(out / f"{name}.jsonl", json.dumps(record))
        if pruned:
            raise optuna.TrialPruned(f"reward {metrics['reward']:+.3f} at rung {rung} of {args.rungs}")
        console.print(f"trial {trial.number}: reward {metrics['reward']:+.3f}, feasible {record['feasible']}")
        return float(metrics["reward"])

    study.optimize(objective, n_trials=args.trials)
    show(study, base, console)


def settings(args: Args) -> dict[str, Any]:
    """What makes two trials comparable: the same training budget, rungs, validation prompts,
    precision and seed, and the same feasibility bounds (each trial keeps its constraints)."""
    return {
        "budget_minutes": args.budget_minutes, "budget_tokens": args.budget_tokens, "rungs": args.rungs,
        "eval_prompts": args.eval_prompts, "precision": args.precision, "seed": args.seed,
        "min_distinct": args.min_distinct, "max_perplexity": args.max_perplexity,
    }  # fmt: skip


def same_settings(study: optuna.Study, args: Args, journal: Path) -> bool:
    """A new study keeps its settings; a resumed one must be run with them, or its trials (and
    the paired comparisons with trial 0) would mix budgets or prompts. A study kept before the
    settings were (no ``settings`` attribute), or one where no trial has yet been evaluated,
    takes this run's: True when it did (what was kept for the earlier settings is stale)."""
    wanted = settings(args)
    kept = study.user_attrs.get("settings")
    evaluated = any("reward" in t.user_attrs for t in study.trials)
    if kept is None or (kept != wanted and not evaluated):
        study.set_user_attr("settings", wanted)
        return kept is not None
    both = [key for key in wanted if key in kept]  # a study kept before a setting existed lacks it
    differ = [f"{key} {kept[key]!r} (asked {wanted[key]!r})" for key in both if kept[key] != wanted[key]]
    if differ:
        flags = " ".join(f"--{key.replace('_', '-')} {kept[key]}" for key in both)
        raise SystemExit(
            f"study {study.study_name} in {journal} ran with other settings: {', '.join(differ)}. "
            f"Trials of one study are compared with each other, so they run alike: resume it with "
            f"{flags}, or give --out another folder for a new study"
        )
    return False


def live(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The study's trials that did not fail: finished, pruned, running or waiting to run."""
    return [t for t in study.trials if t.state != optuna.trial.TrialState.FAIL]


def first_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The first trial (the registry's values) once it has been evaluated, else None. A failed
    trial does not count: when the first one was killed, the study tried its values again."""
    trials = live(study)
    return trials[0] if trials and "reward" in trials[0].user_attrs else None


def versus_first(
    first: optuna.trial.FrozenTrial | None, number: int, metrics: dict[str, Any]
) -> tuple[float, float] | None:
    """Trial ``number``'s paired difference from ``first`` (None for the first trial itself)."""
    return None if first is None or first.number == number else paired(metrics, first.user_attrs)


def paired_figures(
    study: optuna.Study, number: int, metrics: dict[str, Any], base: dict[str, Any]
) -> dict[str, Any]:
    """Trial ``number``'s paired differences from the untrained model and from trial 0, for its record."""
    return {"untrained": paired(metrics, base), "trial0": versus_first(first_trial(study), number, metrics)}


def show_pair(pair: tuple[float, float] | None) -> str:
    return "-" if pair is None else f"{pair[0]:+.3f} ± {pair[1]:.3f}"


def show(study: optuna.Study, base: dict[str, Any], console: Console) -> None:
    """The finished trials, best feasible first, then the pruned ones (their last rung's reward)."""
    finished = [t for t in study.trials if t.value is not None]
    pruned = [
        t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED and "reward" in t.user_attrs
    ]
    title = (
        f"{study.study_name}: untrained reward {base['reward']:+.3f}, "
        f"distinct-2 {base['distinct_2']:.3f}, perplexity {base['perplexity']:.1f}"
    )
    table = Table(title=title)
    first = first_trial(study)
    columns = ("trial", "reward", "- untrained (paired)", "- trial 0 (paired)", "distinct-2", "perplexity",
               "feasible", "hyperparameters")  # fmt: skip
    for column in columns:
        table.add_column(column)
    ranked = sorted(finished, key=lambda t: (max(t.user_attrs["constraints"]) > 0, -t.value))
    for t in ranked + sorted(pruned, key=lambda t: -t.user_attrs["reward"]):
        feasible = max(t.user_attrs["constraints"]) <= 0
        ci = t.user_attrs.get("reward_ci95")
        reward = f"{t.user_attrs.get('reward', t.value):+.3f}" + (
            "" if ci is None or math.isnan(ci) else f" ± {ci:.3f}"
        )
        if t.state == optuna.trial.TrialState.PRUNED:
            reward += f" (pruned at rung {t.user_attrs['rung']})"
        table.add_row(
            str(t.number), reward, show_pair(paired(t.user_attrs, base)),
            show_pair(versus_first(first, t.number, t.user_attrs)),
            f"{t.user_attrs['distinct_2']:.3f}", f"{t.user_attrs['perplexity']:.1f}",
            "yes" if feasible else "no", brief(t.params),
        )  # fmt: skip
    console.print(table)
    if ranked and max(ranked[0].user_attrs["constraints"]) <= 0:
        best = ranked[0]
        console.print(f"best feasible: trial {best.number} {json.dumps(best.params)}")
        pair = versus_first(first, best.number, best.user_attrs)
        if pair is not None:
            beats = pair[0] - pair[1] > 0
            console.print(
                f"trial {best.number} - trial 0 (the registry's values), paired on the validation prompts: "
                f"{show_pair(pair)}: "
                + ("it beats them" if beats else "not distinguishable from them: keep the registry's values")
            )


def brief(values: dict[str, Any]) -> str:
    """``learning_rate=5.0e-05 kl_coef=7.2e-04 group_size=2``: short enough for a table cell."""
    return " ".join(f"{k}={v:.1e}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


if __name__ == "__main__":
    main()
