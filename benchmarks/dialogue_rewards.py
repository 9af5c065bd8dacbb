"""Every Dialogue reward candidate on the test texts of training runs, before and after training.

    python benchmarks/dialogue_rewards.py --runs benchmarks/results/train-20m-grpo-dialogue-lr5e-5-ee780f8
    python benchmarks/dialogue_rewards.py --runs DIR1,DIR2 --next-turn-model tiny   # smoke

A run trained on one reward may raise it while its texts get worse; the other candidates, scored
on the same texts, show it. For each run directory (``textgym train`` on TextGen-Dialogue-v0 or
-v1, on any reward: its ``env_kwargs``), the test texts of ``eval-before.json`` and
``eval-after.json`` are scored with every candidate of :data:`CANDIDATES` (``similarity`` to
the reference, ``relevance`` to the answered turn, ``next_turn`` likelihood gain, BLEU, the
degeneracy term) and with ``copy``, the share of 3-grams copied from the answered turn, paired
by prompt: the mean before, after, and the paired difference with its 95% interval. The run's
own distinct-2, perplexity and KL come with them, and the first :data:`TEXTS` texts before and
after. Prints a table; writes one JSON record, never overwriting.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from common import parse_args, write_record
from rich.console import Console
from rich.table import Table

import textgym
from textgym.agents.runs.evaluation import mean_ci
from textgym.datasets import example_columns, load_dataset
from textgym.models import DEFAULT_MODEL
from textgym.rewards import NextTurnGain, call_reward, make_reward
from textgym.rewards.dialogue import answered_turn
from textgym.rewards.lexical import copy_rate
from textgym.rewards.metrics import compute_metrics

ENV_IDS = ("TextGen-Dialogue-v0", "TextGen-Dialogue-v1")  # the same task and texts, two rewards
CANDIDATES = ("similarity", "relevance", "next_turn", "bleu", "degeneracy")
# Not a candidate: the share of a reply's 3-grams copied from the turn it answers, the way a reward
# on relevance to that turn could be gamed (echoing the user).
DIAGNOSTICS = ("copy",)
TEXTS = 6  # before/after texts kept per run


@dataclass
class Args:
    runs: str = ""  # comma-separated run directories
    next_turn_model: str = DEFAULT_MODEL  # the reference model of the next_turn candidate
    out: str = "benchmarks/results"

    def __post_init__(self) -> None:
        if not [r for r in self.runs.split(",") if r.strip()]:
            raise ValueError("--runs takes one or more run directories, comma-separated")


def scorers(args: Args) -> dict[str, Any]:
    fns: dict[str, Any] = {name: make_reward(name) for name in ("similarity", "relevance", "degeneracy")}
    fns["next_turn"] = NextTurnGain(model=args.next_turn_model)
    return fns


def score_texts(
    fns: dict[str, Any], rows: list[dict[str, Any]], by_id: dict[str, Any]
) -> dict[str, np.ndarray]:
    """Every candidate's value of each row's text (the examples' columns looked up by id)."""
    examples = [by_id[row["example_id"]] for row in rows]
    prompts, texts = [e.prompt for e in examples], [row["text"] for row in rows]
    references, columns = [list(e.references) for e in examples], example_columns(examples)
    values = {name: call_reward(fn, prompts, texts, references, columns) for name, fn in fns.items()}
    values["bleu"] = compute_metrics(["bleu"], prompts, texts, references)["bleu"]
    turns = columns.get("turns", [None] * len(texts))
    answered = [answered_turn(prompt, turns[i]) for i, prompt in enumerate(prompts)]
    values["copy"] = np.array([copy_rate(source, text) for source, text in zip(answered, texts)])
    return {name: values[name] for name in (*CANDIDATES, *DIAGNOSTICS)}


def measure(run_dir: Path, fns: dict[str, Any], by_id: dict[str, Any]) -> dict[str, Any]:
    run = json.loads((run_dir / "run.json").read_text())
    env = run["config"]["env"]
    if env not in ENV_IDS:
        raise ValueError(f"{run_dir} is a run on {env}, not on one of {list(ENV_IDS)}")
    before, after = (json.loads((run_dir / f"eval-{name}.json").read_text()) for name in ("before", "after"))
    later = {(row["example_id"], row["seed"]): row for row in after["examples"]}
    pairs = [(row, later[(row["example_id"], row["seed"])]) for row in before["examples"]]
    scores = [score_texts(fns, [pair[i] for pair in pairs], by_id) for i in (0, 1)]
    table = {}
    for name in (*CANDIDATES, *DIAGNOSTICS):
        b, a = scores[0][name], scores[1][name]
        (mb, cb), (ma, ca), (md, cd) = mean_ci(b), mean_ci(a), mean_ci(a - b)
        table[name] = {"before": mb, "before_ci95": cb, "after": ma, "after_ci95": ca,
                       "change": md, "change_ci95": cd}  # fmt: skip
    metrics = [evaluation["metrics"] for evaluation in (before, after)]
    return {
        "run": run_dir.name,
        "env": env,
        "seed": run["config"]["seed"],
        "reward": run["config"].get("env_kwargs", {}).get("reward", textgym.ENVS[env].defaults.reward),
        "algo": run["config"]["algo"],
        "train_tokens": run.get("summary", {}).get("train_tokens"),
        "n": len(pairs),
        "scores": table,
        "own": {key: [m.get(key) for m in metrics] for key in ("reward", "distinct_2", "perplexity", "kl")},
        "texts": [
            {"prompt": b["prompt"], "reference": b["references"][0], "before": b["text"], "after": a["text"]}
            for b, a in pairs[:TEXTS]
        ],
    }


def main() -> None:
    args = parse_args(Args, __doc__.split("\n\n")[0])
    by_id = {example.id: example for example in load_dataset("chitchat-dialogue", "test")}
    fns = scorers(args)
    rows = [measure(Path(run.strip()), fns, by_id) for run in args.runs.split(",") if run.strip()]
    table = Table(title="Dialogue: every candidate on each run's test texts (after - before, paired)")
    for column in ("run", "trained on", *CANDIDATES, *DIAGNOSTICS, "distinct-2", "perplexity"):
        table.add_column(column)
    for row in rows:
        own = row["own"]
        changes = [f"{s['change']:+.3f} ± {s['change_ci95']:.3f}" for s in row["scores"].values()]
        ratios = [f"{own[k][1] / own[k][0]:.2f}x" if own[k][0] else "-" for k in ("distinct_2", "perplexity")]
        table.add_row(row["run"], row["reward"], *changes, *ratios)
    Console().print(table)
    results = {"candidates": list(CANDIDATES), "diagnostics": list(DIAGNOSTICS), "runs": rows}
    path = write_record("dialogue-rewards", args, results, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
