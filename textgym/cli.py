"""The ``textgym`` command: ``envs``, ``demo``, ``train``, ``eval``, ``export`` and ``leaderboard``."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from textgym.datasets import SPLITS
from textgym.envs import ENVS
from textgym.models import DEFAULT_MODEL, load_model
from textgym.models.precision import PRECISIONS, resolve_device
from textgym.models.sampling import LMSampler, run_episode


def cmd_envs(args: argparse.Namespace, console: Console) -> int:
    table = Table(title="textgym environments")
    table.add_column("id", no_wrap=True, style="bold")
    # The task's description stays on one line; the metrics wrap first when the terminal is narrow.
    table.add_column("task", min_width=max(len(cls.defaults.description) for cls in ENVS.values()))
    table.add_column("data", no_wrap=True)
    table.add_column("reward", no_wrap=True)
    table.add_column("metrics")
    table.add_column("prompt/new tokens", no_wrap=True)
    for env_id, cls in ENVS.items():
        task = cls.defaults
        table.add_row(
            env_id,
            task.description,
            task.dataset,
            task.reward_label,
            ", ".join(task.metrics),
            task.tokens_label,
        )
    console.print(table)
    return 0


def _short(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else "..." + text[-(limit - 3) :]


def cmd_demo(args: argparse.Namespace, console: Console) -> int:
    from textgym.agents.runs.config import check_seed

    if args.episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {args.episodes}")
    check_seed(args.seed, "--seed", count=args.episodes)  # episode i is seeded seed + i
    env_ids = args.env or list(ENVS)
    start = time.perf_counter()
    model = load_model(args.model)
    console.print(f"[bold]model[/] {args.model}: loaded in {time.perf_counter() - start:.2f} s")
    summary = Table(title=f"mean reward over {args.episodes} {args.split} prompts ({args.model})")
    for column in ("env", "mean reward", "tokens", "tokens/s"):
        summary.add_column(column)
    for env_id in env_ids:
        env = gym.make(env_id, model=args.model, split=args.split)
        sampler = LMSampler(
            model,
            env.unwrapped.action_masks(),
            greedy=args.greedy,
            temperature=args.temperature,
            top_k=args.top_k,
            seed=args.seed,
        )
        table = Table(title=env_id, show_lines=True, expand=True)
        table.add_column("prompt (end)", ratio=2)
        table.add_column("generated text", ratio=3)
        table.add_column("reward", justify="right")
        table.add_column("components")
        rewards, tokens, began = [], 0, time.perf_counter()
        for episode in range(args.episodes):
            result = run_episode(env, sampler, seed=args.seed + episode)
            rewards.append(result["reward"])
            tokens += result["tokens_generated"]
            parts = ", ".join(f"{k}={v:+.3f}" for k, v in result["reward_components"].items())
            table.add_row(
                _short(result["prompt"], 160), result["text"].strip(), f"{result['reward']:+.3f}", parts
            )
        elapsed = time.perf_counter() - began
        console.print(table)
        summary.add_row(env_id, f"{np.mean(rewards):+.3f}", str(tokens), f"{tokens / elapsed:.1f}")
        env.close()
    console.print(summary)
    return 0


# The README's short flags for hyperparameters: each sets the same key as --hyperparams would.
SHORTCUTS = {"lr": "learning_rate", "kl_coef": "kl_coef", "batch_episodes": "batch_episodes"}


def cmd_train(args: argparse.Namespace, console: Console) -> int:
    from textgym.agents.common import distributed
    from textgym.agents.runs.config import TrainConfig, parse_budget, parse_env_kwargs
    from textgym.agents.runs.hyperparams import parse_overrides
    from textgym.agents.runs.training import train

    settings = dataclass_values(TrainConfig, args)
    if "env_kwargs" in settings:
        settings["env_kwargs"] = parse_env_kwargs(settings["env_kwargs"])
    if args.budget is not None:
        if {"budget_tokens", "budget_minutes"} & set(settings):
            raise ValueError("give --budget, or --budget-tokens and --budget-minutes, not both")
        tokens, minutes = parse_budget(args.budget)
        for name, value in (("budget_tokens", tokens), ("budget_minutes", minutes)):
            if value is not None:
                settings[name] = value
    pairs = [
        f"{key}={getattr(args, dest)}" for dest, key in SHORTCUTS.items() if getattr(args, dest) is not None
    ]
    pairs += ["policy_kwargs.lora=true"] if args.lora else []
    pairs += settings.pop("hyperparams", [])
    algo = settings.get("algo", TrainConfig.algo)
    config = TrainConfig(**settings, hyperparams=parse_overrides(algo, pairs))
    if args.out is None and args.resume:
        raise ValueError("--resume needs --out, the run directory to continue")
    try:
        # No --out: train() claims a new runs/<env>-<algo>-seed<seed>-<n> once the config is valid.
        train(config, args.out, resume=args.resume, console=console)
    finally:
        distributed.shutdown()  # under torchrun: leave the process group before exiting
    return 0


def cmd_eval(args: argparse.Namespace, console: Console) -> int:
    from textgym.agents.runs.checkpoints import checkpoint_path, is_run_dir, read_run
    from textgym.agents.runs.config import check_env_kwargs, check_seed, parse_env_kwargs, saved_config
    from textgym.agents.runs.evaluation import evaluate
    from textgym.agents.runs.failures import save_json
    from textgym.atomic import check_writable

    if (args.checkpoint is None) == (args.model is None):
        raise ValueError(
            "give either --checkpoint DIR (a trained agent) or --model NAME (an untrained model)"
        )
    if args.checkpoint is not None:
        checkpoint_path(args.checkpoint)  # a missing or unreadable checkpoint fails here, by name
    run = None  # the run directory's config, when --checkpoint is one
    if args.checkpoint is not None and is_run_dir(Path(args.checkpoint)):
        run = saved_config(read_run(Path(args.checkpoint))["config"])
    env_id = args.env
    if env_id is None:
        if run is None:
            raise ValueError("--env is needed unless --checkpoint is a `textgym train` run directory")
        env_id = run["env"]
    if args.env_kwargs is not None:
        env_kwargs = parse_env_kwargs(args.env_kwargs)
    else:  # a run is evaluated on the env it trained on (its reward, ...), unless --env names another
        env_kwargs = run["env_kwargs"] if run is not None and run["env"] == env_id else {}
    check_env_kwargs(env_id, env_kwargs)
    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1 (sampling seeds per prompt), got {args.seeds}")
    check_seed(args.seed, "--seed", count=args.seeds)
    if args.show < 0:
        raise ValueError(f"--show must be >= 0 (sample texts to print), got {args.show}")
    if args.json:
        check_writable(args.json, "--json")  # before the evaluation, which would be lost
    seeds = [args.seed + i for i in range(args.seeds)]
    precision = args.precision or (None if args.checkpoint else "fp32")
    result = evaluate(
        args.checkpoint or args.model,
        env_id,
        args.split,
        args.n,
        seeds=seeds,
        greedy=args.greedy,
        device=resolve_device(args.device),
        precision=precision,
        env_kwargs=env_kwargs,
    )
    console.print(result.table())
    table = Table(title="sample texts", show_lines=True, expand=True)
    table.add_column("prompt (end)", ratio=2)
    table.add_column("text", ratio=3)
    table.add_column("reward", justify="right")
    for row in result.examples[: args.show]:
        table.add_row(_short(row["prompt"], 200), row["text"].strip(), f"{row['reward']:+.3f}")
    console.print(table)
    if args.json:
        save_json(Path(args.json), result.to_dict())
        console.print(f"wrote {args.json}")
    return 0


def cmd_export(args: argparse.Namespace, console: Console) -> int:
    from textgym.agents.runs.export import export_model

    out = export_model(args.checkpoint, args.out)
    console.print(f"exported {args.checkpoint} to {out} (a transformers model directory)")
    return 0


def cmd_leaderboard(args: argparse.Namespace, console: Console) -> int:
    from textgym.agents.leaderboard.runner import LeaderboardConfig, run_leaderboard

    run_leaderboard(LeaderboardConfig(**dataclass_values(LeaderboardConfig, args)), console)
    return 0


def add_dataclass_options(parser: argparse.ArgumentParser, cls: type, **options: dict[str, Any]) -> None:
    """A ``--field-name`` option for every field of the dataclass ``cls``: typed like its default,
    a bool as ``--x/--no-x``, a dict as ``--x KEY=VALUE ...``, help from the field's metadata.
    An option left out stays out of the namespace, so :func:`dataclass_values` leaves that field
    at the dataclass's default. ``options[name]``: more ``add_argument`` arguments for a field
    (``aliases``: more option strings)."""
    for field in dataclasses.fields(cls):
        extra = dict(options.get(field.name, {}))
        flags = [f"--{field.name.replace('_', '-')}", *extra.pop("aliases", ())]
        default = field.default_factory() if field.default is dataclasses.MISSING else field.default
        text = field.metadata.get("help", "")
        if not extra.get("required"):
            text = f"{text} (default: {default!r})".strip()
        kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "help": text.replace("%", "%%")}
        if isinstance(default, bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif isinstance(default, dict):
            kwargs.update(nargs="+", metavar="KEY=VALUE")
        else:
            kwargs["type"] = type(default)
        parser.add_argument(*flags, **{**kwargs, **extra})


def dataclass_values(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The fields of ``cls`` given on the command line (see :func:`add_dataclass_options`)."""
    return {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(cls)
        if hasattr(args, field.name)
    }


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose epilog may be a callable, called only when the help is shown
    (``train``'s lists every hyperparameter of the registry)."""

    def format_help(self) -> str:
        epilog: str | Callable[[], str] | None = self.epilog
        if callable(epilog):
            self.epilog = epilog()
        try:
            return super().format_help()
        finally:
            self.epilog = epilog


def build_parser() -> argparse.ArgumentParser:
    from textgym.agents.runs.config import TrainConfig
    from textgym.agents.runs.hyperparams import ALGOS, PROFILES, describe

    parser = Parser(prog="textgym", description="Text generation as Gymnasium environments.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("envs", help="list the registered environments")
    demo = commands.add_parser(
        "demo", help="run a model on a few prompts of each env and print its texts with their rewards"
    )
    demo.add_argument("--model", default=DEFAULT_MODEL, help=f"model name or path (default {DEFAULT_MODEL})")
    demo.add_argument("--env", action="append", choices=list(ENVS), help="env id (repeatable; default: all)")
    demo.add_argument("--episodes", type=int, default=3, help="prompts per env (default 3)")
    demo.add_argument("--split", default="test", choices=SPLITS)
    demo.add_argument("--greedy", action="store_true", help="pick the most likely token instead of sampling")
    demo.add_argument("--temperature", type=float, default=0.7)
    demo.add_argument("--top-k", type=int, default=50)
    demo.add_argument("--seed", type=int, default=0)

    train = commands.add_parser(
        "train",
        help="train an agent on an env, with checkpoints and before/after texts",
        description="Train an agent on an env. The run's settings are the options below; the\n"
        "algorithm's hyperparameters come from the registry (listed at the end), with overrides\n"
        "from --hyperparams and the short flags. The run prints them and saves them in run.json.",
        epilog=describe,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_dataclass_options(
        train,
        TrainConfig,
        env=dict(required=True, choices=list(ENVS)),
        algo=dict(choices=list(ALGOS)),
        profile=dict(choices=list(PROFILES)),
        eval_every_minutes=dict(aliases=["--eval-every"]),
        device=dict(metavar="{auto,cpu,cuda[:N]}"),
        precision=dict(choices=list(PRECISIONS)),
    )
    train.add_argument(
        "--budget",
        help="training budget: minutes (10m, 90s, 1h), generated tokens (20000, 20k) or both "
        "(10m,20k); instead of --budget-tokens and --budget-minutes",
    )
    train.add_argument("--out", help="run directory (default: a new runs/<env>-<algo>-seed<seed>-<n>)")
    train.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    for dest, key in SHORTCUTS.items():
        train.add_argument(f"--{dest.replace('_', '-')}", metavar="VALUE", help=f"--hyperparams {key}=VALUE")
    train.add_argument(
        "--lora",
        action="store_true",
        help="train LoRA adapters only (peft): --hyperparams policy_kwargs.lora=true",
    )

    ev = commands.add_parser("eval", help="evaluate a checkpoint (or an untrained model): metrics and texts")
    ev.add_argument("--env", choices=list(ENVS), help="env id (default: the run's)")
    ev.add_argument("--checkpoint", help="a `textgym train` run directory or an SB3 .zip")
    ev.add_argument("--model", help="evaluate this untrained model instead of a checkpoint")
    ev.add_argument(
        "--env-kwargs",
        nargs="+",
        metavar="KEY=VALUE",
        help="env arguments, as for train (default: a run directory's own, none otherwise)",
    )
    ev.add_argument("--split", default="test", choices=SPLITS)
    ev.add_argument("-n", type=int, default=64, help="prompts (default 64)")
    ev.add_argument("--seeds", type=int, default=1, help="sampling seeds per prompt (default 1)")
    ev.add_argument("--seed", type=int, default=0, help="first sampling seed")
    ev.add_argument("--greedy", action="store_true")
    ev.add_argument("--show", type=int, default=5, help="sample texts to print (default 5)")
    ev.add_argument("--json", help="also write the full evaluation (every text) to this JSON file")
    ev.add_argument("--device", default="auto", metavar="{auto,cpu,cuda[:N]}", help="auto: CUDA if present")
    ev.add_argument(
        "--precision",
        choices=list(PRECISIONS),
        help="fp32 | bf16 (mixed) | auto (default: a checkpoint's own, fp32 for --model)",
    )

    export = commands.add_parser(
        "export", help="write a trained policy as a transformers model directory (LoRA merged)"
    )
    export.add_argument("--checkpoint", required=True, help="a `textgym train` run directory or an SB3 .zip")
    export.add_argument("--out", required=True, help="the directory to create (must not exist or be empty)")

    board = commands.add_parser(
        "leaderboard", help="run the leaderboard (every env x agent x seed) and write it"
    )
    add_leaderboard_options(board)
    return parser


def add_leaderboard_options(parser: argparse.ArgumentParser) -> None:
    """LeaderboardConfig's fields as options (``textgym leaderboard``, ``benchmarks/leaderboard.py``).
    The fields a profile sets default to None (the profile's value), so their type and the
    profiles' values in their help come from ``PROFILES``: an option given always wins."""
    from textgym.agents.leaderboard.config import PROFILES, LeaderboardConfig

    helps = {field.name: field.metadata.get("help", "") for field in dataclasses.fields(LeaderboardConfig)}
    profiled = {
        name: dict(
            type=type(value), help=f"{helps[name]} (default: {value!r}; --quick: {PROFILES['quick'][name]!r})"
        )
        for name, value in PROFILES["default"].items()
    }
    add_dataclass_options(
        parser,
        LeaderboardConfig,
        ray=dict(nargs="?", const="local", metavar="ADDRESS"),
        device=dict(metavar="{auto,cpu,cuda[:N]}"),
        precision=dict(choices=list(PRECISIONS)),
        **profiled,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Pipes and CI logs get a wide console so tables keep one line per row.
    console = Console() if sys.stdout.isatty() else Console(width=160)
    handlers = {
        "envs": cmd_envs,
        "demo": cmd_demo,
        "train": cmd_train,
        "eval": cmd_eval,
        "export": cmd_export,
        "leaderboard": cmd_leaderboard,
    }
    try:
        return handlers[args.command](args, console)
    except (ValueError, TypeError, ImportError, FileNotFoundError) as err:
        console.print(f"[red]textgym: error:[/] {escape(str(err))}")  # the message's [brackets] kept
        return 2
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        console.print(f"[red]textgym: error:[/] {escape(str(err))}")  # a full disk: train names the path
        return 1
    except KeyboardInterrupt as err:  # Ctrl-C, SIGTERM: no traceback (train said where its run stands)
        return getattr(err, "exit_code", 130)  # 143 for SIGTERM (textgym.agents.runs.failures.Terminated)


if __name__ == "__main__":
    sys.exit(main())
