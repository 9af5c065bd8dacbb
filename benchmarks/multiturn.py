"""The cost of multi-turn rollouts: the KV cache across turns against re-encoding, and the partner's share.

    python benchmarks/multiturn.py                      # the default model, 16 games of GuessNumber
    python benchmarks/multiturn.py --model tiny --games 2 --repeats 1   # smoke

Plays the same games three ways, each ``--repeats`` times alternated (the best run of each is the
figure, every run is in the record), all sampling with one seeded generator:

- ``cached``: :func:`textgym.agents.common.rollout.play_turns`, the rollout the agents use: one KV
  cache through every turn, the partner's tokens entering it in one pass per turn;
- ``reencoded``: the same games where each turn runs its whole context again (the history is
  still never re-tokenized: only the forward passes are repeated), as a rollout without a cache
  across turns would;
- ``single_turn``: single-turn episodes of the games' total length (prompt, then as many sampled
  tokens as the longest game has after its prompt, with no end token), the cost of the same
  number of positions without turns.

For each: agent tokens per second, and for the multi-turn ways the seconds the env spent ending
turns (the partner's replies and the turn rewards: ``end_turns``) as a share of the rollout.
Prints a table; writes one JSON record, never overwriting.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import torch
from common import parse_args, write_record
from rich.console import Console
from rich.table import Table

import textgym  # noqa: F401  (registers the envs)
from textgym.agents.common.network import LMActorCritic
from textgym.agents.common.rollout import generate, play_turns
from textgym.models import DEFAULT_MODEL


@dataclass
class Args:
    model: str = DEFAULT_MODEL
    env: str = "TextGen-GuessNumber-v0"
    games: int = 16  # games played together (one batch)
    repeats: int = 3
    seed: int = 0
    out: str = "benchmarks/results"

    def __post_init__(self) -> None:
        if self.games < 1 or self.repeats < 1:
            raise ValueError(f"--games and --repeats must be >= 1, got {self.games}, {self.repeats}")


class TimedTurns:
    """The env's ``end_turns``, timed: the partner's replies and the turn rewards."""

    def __init__(self, env: Any):
        self.env, self.inner, self.seconds = env, env.end_turns, 0.0

    def __call__(self, conversations, turns):
        start = time.perf_counter()
        try:
            return self.inner(conversations, turns)
        finally:
            self.seconds += time.perf_counter() - start


def reencoded(net: LMActorCritic, env: Any, examples: list, generator: torch.Generator) -> int:
    """The games with every turn run from the start of its context; returns the agent tokens."""
    conversations = [env.start_conversation(example) for example in examples]
    contexts = [list(env.encode_prompt(example)[0]) for example in examples]
    open_rows, tokens = list(range(len(examples))), 0
    while open_rows:
        batch = generate(
            net, [contexts[i] for i in open_rows], env.max_new_tokens, env.eos_token_ids, generator
        )
        turns = batch.generated()
        ended = env.end_turns([conversations[i] for i in open_rows], turns)
        for j, i in enumerate(open_rows):
            contexts[i].extend([*turns[j], *ended[j].appended])
            tokens += len(turns[j])
        open_rows = [i for j, i in enumerate(open_rows) if not ended[j].last]
    return tokens


def measure(
    args: Args, way: str, net: LMActorCritic, env: Any, examples: list, length: int
) -> dict[str, float]:
    timer = TimedTurns(env)
    env.end_turns = timer
    generator = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    try:
        if way == "cached":
            batch, _, _ = play_turns(net, env, examples, generator)
            tokens = int(batch.response_mask.sum())
        elif way == "reencoded":
            tokens = reencoded(net, env, examples, generator)
        else:
            prompts = [env.encode_prompt(example)[0] for example in examples]
            batch = generate(net, prompts, length, frozenset(), generator)
            tokens = int(batch.response_mask.sum())
    finally:
        del env.end_turns  # the class's method again
    seconds = time.perf_counter() - start
    return {
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
        "end_turns_seconds": timer.seconds,
        "end_turns_share": timer.seconds / seconds,
    }


def main() -> None:
    args = parse_args(Args, __doc__.splitlines()[0])
    console = Console(width=120)
    torch.manual_seed(args.seed)
    env = gym.make(args.env, model=args.model, split="test").unwrapped
    net = LMActorCritic(args.model, env.action_space.n)
    net.eval()
    examples = [env.examples[i] for i in range(min(args.games, len(env.examples)))]
    # The single-turn episodes' length: the longest game's positions after its prompt.
    probe, _, _ = play_turns(net, env, examples, torch.Generator().manual_seed(args.seed))
    length = int(probe.mask[:, probe.start :].sum(-1).max())
    runs: dict[str, list[dict[str, float]]] = {"cached": [], "reencoded": [], "single_turn": []}
    for repeat in range(args.repeats):
        console.print(f"repeat {repeat + 1}/{args.repeats}: {len(examples)} games of {args.env} ...")
        for way in runs:
            runs[way].append(measure(args, way, net, env, examples, length))
    best = {way: max(rows, key=lambda row: row["tokens_per_s"]) for way, rows in runs.items()}
    ratios = {
        "cached_vs_reencoded": best["cached"]["tokens_per_s"] / best["reencoded"]["tokens_per_s"],
        "cached_vs_single_turn": best["cached"]["tokens_per_s"] / best["single_turn"]["tokens_per_s"],
    }
    table = Table(
        title=f"multi-turn rollouts: {len(examples)} games, {args.model}, {torch.get_num_threads()} threads"
    )
    for column in ("rollout", "agent tokens", "seconds", "agent tokens/s", "end_turns share"):
        table.add_column(column, justify="right" if column != "rollout" else "left")
    for way, row in best.items():
        share = f"{row['end_turns_share']:.1%}" if way != "single_turn" else "-"
        table.add_row(way, f"{row['tokens']}", f"{row['seconds']:.2f}", f"{row['tokens_per_s']:.1f}", share)
    console.print(table)
    console.print(
        f"cached / re-encoded: {ratios['cached_vs_reencoded']:.2f}x; cached / single-turn of "
        f"{length} tokens: {ratios['cached_vs_single_turn']:.2f}x"
    )
    path = write_record(
        "multiturn", args, {"single_turn_length": length, **best, "ratios": ratios, "runs": runs}, args.out
    )
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
