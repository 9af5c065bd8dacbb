"""The ``textgym`` command: ``textgym envs`` and ``textgym demo``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

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
    table.add_column("prompt/new tokens", no_wrap=True)
    for env_id, cls in ENVS.items():
        task = cls.defaults
        table.add_row(
            env_id,
            task.description,
            task.dataset,
            task.reward,
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Pipes and CI logs get a wide console so tables keep one line per row.
    console = Console() if sys.stdout.isatty() else Console(width=160)
    handlers = {"envs": cmd_envs, "demo": cmd_demo}
    try:
        return handlers[args.command](args, console)
    except (ValueError, TypeError, ImportError, FileNotFoundError) as err:
        console.print(f"[red]textgym: error:[/] {err}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
