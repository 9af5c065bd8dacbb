"""A vector env's partners replying one at a time against in one batch (``VecPartnerBatcher``).

    python benchmarks/partner_batching.py                 # the default model, 8 envs of TargetChat
    python benchmarks/partner_batching.py --model tiny --envs 2 --steps 20 --repeats 1   # smoke

Steps the same ``--envs`` TargetChat envs (an SB3 ``DummyVecEnv``, as stock PPO and A2C train on)
through the same ``--steps`` actions twice per repeat, alternated: ``alone``, each env asking its
partner when its turn ends (the language-model partner then generates one reply at a time), and
``batched``, wrapped in :class:`textgym.wrappers.VecPartnerBatcher` (the envs whose turns end on
a step are answered in one ``generate``). The agent's turns are real chitchat messages (other
examples' context turns, cut by the turn budget), so the envs end their turns on different
steps as a policy's would. For each way: the seconds of the steps, the partner's seconds, its
replies and calls, seconds per reply; the best repeat of each is the figure, every run is in the
record. Prints a table; writes one JSON record, never overwriting.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from common import parse_args, write_record
from rich.console import Console
from rich.table import Table
from stable_baselines3.common.env_util import make_vec_env

import textgym  # noqa: F401  (registers the envs)
from textgym.models import DEFAULT_MODEL
from textgym.wrappers import VecPartnerBatcher


@dataclass
class Args:
    model: str = DEFAULT_MODEL
    env: str = "TextGen-TargetChat-v0"
    envs: int = 8
    steps: int = 200
    repeats: int = 2
    seed: int = 0
    out: str = "benchmarks/results"

    def __post_init__(self) -> None:
        if self.envs < 1 or self.steps < 1 or self.repeats < 1:
            raise ValueError(
                f"--envs, --steps and --repeats must be >= 1, got {self.envs}, {self.steps}, {self.repeats}"
            )


def actions(core: Any, n_envs: int, steps: int) -> np.ndarray:
    """(steps, n_envs) token ids: env ``i`` says the context turns of examples ``i, i + n, ...``
    one after another, each ending with the end-of-turn token (or cut by the turn budget)."""
    end = min(core.eos_token_ids)
    streams = []
    for i in range(n_envs):
        stream: list[int] = []
        index = i
        while len(stream) < steps:
            for _, text in core.examples[index % len(core.examples)].turns:
                ids = core.tokenizer(text, add_special_tokens=False)["input_ids"][: core.max_new_tokens - 1]
                stream.extend([*ids, end])
            index += n_envs
        streams.append(stream[:steps])
    return np.array(streams).T


def measure(args: Args, batched: bool, plan: np.ndarray) -> dict[str, float]:
    kwargs = {"model": args.model, "split": "test", "render_mode": "ansi"}
    venv = make_vec_env(args.env, n_envs=args.envs, seed=args.seed, env_kwargs=kwargs)
    venv = VecPartnerBatcher(venv) if batched else venv
    partner = venv.unwrapped.envs[0].unwrapped.partner
    seconds0, replies0 = partner.seconds, partner.replies
    venv.reset()
    start = time.perf_counter()
    for step in plan:
        venv.step(step)
    seconds = time.perf_counter() - start
    replies = partner.replies - replies0
    calls = venv.batches if batched else replies
    partner_seconds = partner.seconds - seconds0
    venv.close()
    return {
        "seconds": seconds,
        "partner_seconds": partner_seconds,
        "partner_share": partner_seconds / seconds,
        "replies": replies,
        "calls": calls,
        "seconds_per_reply": partner_seconds / max(replies, 1),
    }


def main() -> None:
    args = parse_args(Args, __doc__.splitlines()[0])
    console = Console(width=120)
    probe = make_vec_env(args.env, n_envs=1, env_kwargs={"model": args.model, "split": "test"})
    plan = actions(probe.envs[0].unwrapped, args.envs, args.steps)
    probe.close()
    runs: dict[str, list[dict[str, float]]] = {"alone": [], "batched": []}
    for repeat in range(args.repeats):
        console.print(
            f"repeat {repeat + 1}/{args.repeats}: {args.envs} envs x {args.steps} steps of {args.env} ..."
        )
        for way in runs:
            runs[way].append(measure(args, way == "batched", plan))
    best = {way: min(rows, key=lambda row: row["seconds"]) for way, rows in runs.items()}
    ratios = {
        "partner_alone_vs_batched": best["alone"]["partner_seconds"] / best["batched"]["partner_seconds"],
        "steps_alone_vs_batched": best["alone"]["seconds"] / best["batched"]["seconds"],
    }
    table = Table(
        title=f"partner replies in a vector env: {args.envs} envs, {args.steps} steps, {args.model}"
    )
    for column in ("partners", "step seconds", "partner seconds", "share", "replies", "calls", "s/reply"):
        table.add_column(column, justify="left" if column == "partners" else "right")
    for way, row in best.items():
        table.add_row(
            way, f"{row['seconds']:.2f}", f"{row['partner_seconds']:.2f}", f"{row['partner_share']:.1%}",
            f"{row['replies']}", f"{row['calls']}", f"{row['seconds_per_reply']:.3f}",
        )  # fmt: skip
    console.print(table)
    console.print(
        f"partner seconds alone / batched: {ratios['partner_alone_vs_batched']:.2f}x; "
        f"step seconds: {ratios['steps_alone_vs_batched']:.2f}x"
    )
    path = write_record("partner_batching", args, {**best, "ratios": ratios, "runs": runs}, args.out)
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
