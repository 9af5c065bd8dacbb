"""Group sampling: what running each prompt once per group saves, per env.

For every env: the same ``prompts x group_size`` episodes (one generator seed, so the same
tokens) are sampled twice, once with each prompt run once and its KV cache shared by its group
(``group_size``), once with every episode's prompt run on its own row (group size 1); then the
update's forward and backward passes (``LMActorCritic.sequence``, minibatches of
``minibatch`` episodes) run over them both ways. Records tokens/s of each and the ratios.

    python benchmarks/groups.py                        # default model, every env
    python benchmarks/groups.py --model tiny --prompts 2 --group-size 2 --minibatch 2
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import gymnasium as gym
import torch
from common import parse_args, timed, write_record
from rich.console import Console
from rich.table import Table

import textgym
from textgym.agents import TextPPO
from textgym.agents.common.rollout import TokenBatch, play
from textgym.models import DEFAULT_MODEL


@dataclass
class Args:
    model: str = DEFAULT_MODEL
    envs: str = ",".join(textgym.ENVS)  # comma-separated env ids
    prompts: int = 8  # prompts per batch
    group_size: int = 4  # texts per prompt
    minibatch: int = 8  # episodes per update pass (a multiple of group_size)
    seed: int = 0
    out: str = "benchmarks/results"


def update_pass(agent: TextPPO, batch: TokenBatch, minibatch: int, group_size: int) -> dict[str, float]:
    """Forward and backward over ``batch`` in minibatches of ``minibatch`` episodes."""
    net = agent.policy.net

    def run() -> int:
        tokens = 0
        for first in range(0, len(batch.ids), minibatch):
            part = batch.select(torch.arange(first, min(first + minibatch, len(batch.ids))), group_size)
            select = part.response_mask
            raw, values = net.sequence(part.ids, part.mask, part.start, select, part.group_size)
            (torch.log_softmax(raw, -1).mean() + values[select].mean()).backward()
            tokens += int(select.sum())
        net.zero_grad(set_to_none=True)
        return tokens

    seconds, tokens = timed(run)
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}


def measure(args: Args, env_id: str) -> dict[str, dict[str, float]]:
    env = gym.make(env_id, model=args.model)
    episodes = args.prompts * args.group_size
    agent = TextPPO(
        "LMPolicy", env, batch_episodes=episodes, minibatch_episodes=args.minibatch,
        group_size=args.group_size, seed=args.seed,
    )  # fmt: skip
    net, task = agent.policy.net, env.unwrapped
    examples = task.examples[: args.prompts]
    out: dict[str, dict[str, float]] = {}
    batch = None
    for name, k, rows in (
        ("grouped", args.group_size, examples),
        ("per_row", 1, [e for e in examples for _ in range(args.group_size)]),
    ):
        generator = torch.Generator().manual_seed(args.seed)
        seconds, played = timed(partial(play, net, task, rows, generator, group_size=k))
        batch = played[0]
        tokens = int(batch.lengths.sum())
        out[f"rollout_{name}"] = {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}
    for name, k in (("grouped", args.group_size), ("per_row", 1)):
        out[f"update_{name}"] = update_pass(agent, batch, args.minibatch, k)
    return out


def main() -> None:
    args = parse_args(Args, __doc__.splitlines()[0])
    console = Console()
    if args.minibatch % args.group_size:
        raise SystemExit(
            f"--minibatch ({args.minibatch}) must be a multiple of --group-size ({args.group_size})"
        )
    results: dict[str, dict] = {"envs": {}, "ratios": {}}
    table = Table(title=f"{args.prompts} prompts x {args.group_size} texts, {args.model}")
    for column in (
        "env",
        "rollout tok/s grouped",
        "per row",
        "ratio",
        "update tok/s grouped",
        "per row",
        "ratio",
    ):
        table.add_column(column)
    for env_id in [e for e in args.envs.split(",") if e]:
        console.print(f"{env_id}: sampling and updating both ways ...")
        figures = measure(args, env_id)
        results["envs"][env_id] = figures
        ratios = {
            stage: figures[f"{stage}_grouped"]["tokens_per_s"] / figures[f"{stage}_per_row"]["tokens_per_s"]
            for stage in ("rollout", "update")
        }
        for stage, ratio in ratios.items():
            results["ratios"][f"{stage}_grouped_vs_per_row/{env_id}"] = ratio
        table.add_row(
            env_id,
            *(
                text
                for stage in ("rollout", "update")
                for text in (
                    f"{figures[f'{stage}_grouped']['tokens_per_s']:.1f}",
                    f"{figures[f'{stage}_per_row']['tokens_per_s']:.1f}",
                    f"{ratios[stage]:.2f}x",
                )
            ),
        )
    console.print(table)
    path = write_record("groups", args, results, args.out)
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
