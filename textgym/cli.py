"""The ``textgym`` command: ``envs``, ``demo``, ``train``, ``eval`` and ``leaderboard``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import gymnasium as gym
import numpy as np
from rich.console import Console
from rich.table import Table

from textgym.datasets import SPLITS
from textgym.envs import ENVS
from textgym.models import DEFAULT_MODEL, load_model
from textgym.models.sampling import LMSampler, run_episode


def cmd_envs(args: argparse.Namespace, console: Console) -> int:
    table = Table(title="textgym environments")
    table.add_column("id", no_wrap=True, style="bold")
    table.add_column("task")
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
            task.reward,
            ", ".join(task.metrics),
            f"{task.max_prompt_tokens} / {task.max_new_tokens}",
        )
    console.print(table)
    return 0


def _short(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else "..." + text[-(limit - 3) :]


def cmd_demo(args: argparse.Namespace, console: Console) -> int:
    if args.episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {args.episodes}")
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


def cmd_train(args: argparse.Namespace, console: Console) -> int:
    from agents.training import TrainConfig, parse_budget, train

    tokens, minutes = parse_budget(args.budget)
    defaults = TrainConfig()
    config = TrainConfig(
        env=args.env,
        algo=args.algo,
        model=args.model,
        seed=args.seed,
        budget_tokens=tokens or defaults.budget_tokens,
        budget_minutes=minutes or defaults.budget_minutes,
        learning_rate=args.lr,
        kl_coef=args.kl_coef,
        lora=args.lora,
        batch_episodes=args.batch_episodes,
        minibatch_episodes=min(defaults.minibatch_episodes, args.batch_episodes),
        eval_prompts=args.eval_prompts,
        eval_every_minutes=args.eval_every,
    )
    if args.out is None and args.resume:
        raise ValueError("--resume needs --out, the run directory to continue")
    train(config, args.out or _new_run_dir(args), resume=args.resume, console=console)
    return 0


def _new_run_dir(args: argparse.Namespace) -> Path:
    """The first free ``runs/<env>-<algo>-seed<seed>-<n>`` (a new run never reuses a directory)."""
    n = 1
    while (path := Path("runs") / f"{args.env}-{args.algo}-seed{args.seed}-{n}").exists():
        n += 1
    return path


def cmd_eval(args: argparse.Namespace, console: Console) -> int:
    from agents.checkpoints import checkpoint_path, is_run_dir, read_run
    from agents.evaluation import evaluate

    if (args.checkpoint is None) == (args.model is None):
        raise ValueError(
            "give either --checkpoint DIR (a trained agent) or --model NAME (an untrained model)"
        )
    if args.checkpoint is not None:
        checkpoint_path(args.checkpoint)  # a missing or unreadable checkpoint fails here, by name
    env_id = args.env
    if env_id is None:
        if args.checkpoint is None or not is_run_dir(Path(args.checkpoint)):
            raise ValueError("--env is needed unless --checkpoint is a `textgym train` run directory")
        env_id = read_run(Path(args.checkpoint))["config"]["env"]
    seeds = [args.seed + i for i in range(args.seeds)]
    result = evaluate(
        args.checkpoint or args.model, env_id, args.split, args.n, seeds=seeds, greedy=args.greedy
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
        from agents.checkpoints import write_json

        write_json(Path(args.json), result.to_dict())
        console.print(f"wrote {args.json}")
    return 0


def cmd_leaderboard(args: argparse.Namespace, console: Console) -> int:
    from agents.leaderboard import LeaderboardConfig, run_leaderboard

    given = {
        k: v for k, v in vars(args).items() if k in LeaderboardConfig.__dataclass_fields__ and v is not None
    }
    run_leaderboard(LeaderboardConfig(**given), console)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="textgym", description="Text generation as Gymnasium environments.")
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
        "train", help="train an agent on an env, with checkpoints and before/after texts"
    )
    train.add_argument("--env", required=True, choices=list(ENVS), help="env id")
    train.add_argument("--algo", default="textppo", choices=["textppo", "ppo", "a2c"])
    train.add_argument("--model", default=DEFAULT_MODEL, help=f"model name or path (default {DEFAULT_MODEL})")
    train.add_argument(
        "--budget",
        default="10m",
        help="training budget: minutes (10m, 90s, 1h), generated tokens (20000, 20k) or both "
        "(10m,20k); default 10m",
    )
    train.add_argument("--out", help="run directory (default: a new runs/<env>-<algo>-seed<seed>-<n>)")
    train.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--lr", type=float, default=2e-5, help="learning rate (default 2e-5)")
    train.add_argument(
        "--kl-coef", type=float, default=0.05, help="KL penalty to the initial model (default 0.05)"
    )
    train.add_argument("--lora", action="store_true", help="train LoRA adapters only (peft)")
    train.add_argument(
        "--batch-episodes", type=int, default=64, help="TextPPO episodes per batch (default 64)"
    )
    train.add_argument("--eval-prompts", type=int, default=64, help="test prompts before/after (default 64)")
    train.add_argument(
        "--eval-every", type=float, default=5.0, help="minutes between validation evals (0: off)"
    )

    ev = commands.add_parser("eval", help="evaluate a checkpoint (or an untrained model): metrics and texts")
    ev.add_argument("--env", choices=list(ENVS), help="env id (default: the run's)")
    ev.add_argument("--checkpoint", help="a `textgym train` run directory or an SB3 .zip")
    ev.add_argument("--model", help="evaluate this untrained model instead of a checkpoint")
    ev.add_argument("--split", default="test", choices=SPLITS)
    ev.add_argument("-n", type=int, default=64, help="prompts (default 64)")
    ev.add_argument("--seeds", type=int, default=1, help="sampling seeds per prompt (default 1)")
    ev.add_argument("--seed", type=int, default=0, help="first sampling seed")
    ev.add_argument("--greedy", action="store_true")
    ev.add_argument("--show", type=int, default=5, help="sample texts to print (default 5)")
    ev.add_argument("--json", help="also write the full evaluation (every text) to this JSON file")

    board = commands.add_parser(
        "leaderboard", help="run the leaderboard (every env x agent x seed) and write it"
    )
    board.add_argument(
        "--quick", action="store_true", default=None, help="tiny model, small budgets (minutes)"
    )
    board.add_argument("--envs", help="comma-separated env ids (default: all)")
    board.add_argument("--agents", help="comma-separated agents: sample, greedy, ppo, textppo (default: all)")
    board.add_argument("--seeds", help="comma-separated seeds (default 0,1)")
    board.add_argument("--results", help="results directory (runs.jsonl and run directories)")
    board.add_argument("--board", help="the markdown file to write (plots go next to it)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Pipes and CI logs get a wide console so tables keep one line per row.
    console = Console() if sys.stdout.isatty() else Console(width=160)
    handlers = {
        "envs": cmd_envs,
        "demo": cmd_demo,
        "train": cmd_train,
        "eval": cmd_eval,
        "leaderboard": cmd_leaderboard,
    }
    try:
        return handlers[args.command](args, console)
    except (ValueError, TypeError, ImportError, FileNotFoundError) as err:
        console.print(f"[red]textgym: error:[/] {err}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
