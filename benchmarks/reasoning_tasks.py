"""The untrained model's greedy accuracy on candidate reasoning-gym tasks of TextGen-Reasoning-v0.

    python benchmarks/reasoning_tasks.py                        # every candidate, 100 test prompts
    python benchmarks/reasoning_tasks.py --candidates 0,2 --max-new-tokens 96
    python benchmarks/reasoning_tasks.py --model tiny --n 2 --max-new-tokens 4   # smoke

Each candidate (a task and its ``task_config``, :data:`CANDIDATES`) is evaluated greedily on
``--n`` seeded test prompts with ``textgym.agents.evaluate``: accuracy (reasoning-gym's score
of the stated answer is 1.0) and the answer-format rate, each with its 95% interval, the mean
length, the share of texts cut by the token budget, and the tokens each text needed to state
its answer (through the line that holds the last answer marker; the whole text where it has
none), as percentiles. TextGen-Reasoning-v0's default task is the candidate the default model
gets between 10% and 60% right; its ``max_new_tokens`` is set from the share of texts the
budget cuts (run with ``--max-new-tokens`` 64 and 96: the env's docstring has the table).
Prints a table; writes one JSON record, never overwriting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from common import parse_args, write_record
from rich.console import Console
from rich.table import Table

from textgym.agents.runs.evaluation import evaluate
from textgym.models import DEFAULT_MODEL, load_tokenizer

ENV_ID = "TextGen-Reasoning-v0"
# (task, task_config): small configs of reasoning-gym's arithmetic tasks.
CANDIDATES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("basic_arithmetic", {"min_terms": 2, "max_terms": 2, "max_digits": 1}),
    ("basic_arithmetic", {"min_terms": 2, "max_terms": 2, "max_digits": 2}),
    ("chain_sum", {"min_terms": 2, "max_terms": 2, "max_digits": 2}),
    ("leg_counting", {"min_animals": 1, "max_animals": 2, "max_instances": 3}),
    ("gcd", {"max_value": 100}),
    ("number_sorting", {"min_numbers": 3, "max_numbers": 4, "max_decimals": 0}),
    ("decimal_arithmetic", {"min_terms": 2, "max_terms": 2, "min_num_decimal_places": 1,
                            "max_num_decimal_places": 1}),
)  # fmt: skip
_LAST_MARKER_LINE = re.compile(r"(?is).*\banswer(?:\s+is\b|\s*:)[^\n]*")


@dataclass
class Args:
    model: str = DEFAULT_MODEL
    n: int = 100  # test prompts per candidate
    max_new_tokens: int = 0  # 0: the env's default
    candidates: str = ""  # comma-separated indices into CANDIDATES (default: every one)
    device: str = "cpu"
    out: str = "benchmarks/results"

    def __post_init__(self) -> None:
        if self.n < 1 or self.max_new_tokens < 0:
            raise ValueError(
                f"--n must be >= 1 and --max-new-tokens >= 0, got {self.n}, {self.max_new_tokens}"
            )


def answer_tokens(tokenizer: Any, text: str) -> int:
    """Tokens a text spends through the line of its last answer marker (all of it without one)."""
    found = _LAST_MARKER_LINE.match(text)
    return len(tokenizer(found.group(0) if found else text, add_special_tokens=False)["input_ids"])


def measure(args: Args, task: str, config: dict[str, Any]) -> dict[str, Any]:
    env_kwargs: dict[str, Any] = {"task": task, "task_config": config}
    if args.max_new_tokens:
        env_kwargs["max_new_tokens"] = args.max_new_tokens
    result = evaluate(
        args.model, ENV_ID, "test", args.n, greedy=True, env_kwargs=env_kwargs, device=args.device
    )
    m, rows = result.metrics, result.examples
    budget = args.max_new_tokens or None
    tokenizer = load_tokenizer(args.model)
    needed = [answer_tokens(tokenizer, row["text"]) for row in rows]
    limit = budget or max(row["tokens"] for row in rows)
    return {
        "task": task,
        "task_config": config,
        "n": m["n"],
        "accuracy": m["accuracy"],
        "accuracy_ci95": m["accuracy_ci95"],
        "format": m["format"],
        "format_ci95": m["format_ci95"],
        "reward": m["reward"],
        "mean_length": m["mean_length"],
        "truncated": float(np.mean([row["tokens"] >= limit for row in rows])),
        "answer_tokens_p50_p90_max": [float(np.percentile(needed, q)) for q in (50, 90, 100)],
        "seconds": result.seconds,
        "samples": [{k: row[k] for k in ("prompt", "references", "text", "accuracy")} for row in rows[:5]],
    }


def main() -> None:
    args = parse_args(Args, __doc__.split("\n\n")[0])
    keep = {int(index) for index in args.candidates.split(",") if index.strip()}
    rows = []
    for index, (task, config) in enumerate(CANDIDATES):
        if not keep or index in keep:
            rows.append(measure(args, task, config))
            row = rows[-1]
            print(f"{task} {config}: accuracy {row['accuracy']:.2f} ± {row['accuracy_ci95']:.2f}", flush=True)
    table = Table(title=f"{ENV_ID}: untrained {args.model}, greedy, test prompts")
    for column in (
        "task",
        "task_config",
        "n",
        "accuracy",
        "format",
        "length",
        "cut",
        "answer tokens p50/p90/max",
    ):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["task"], str(row["task_config"]), str(row["n"]),
            f"{row['accuracy']:.2f} ± {row['accuracy_ci95']:.2f}", f"{row['format']:.2f}",
            f"{row['mean_length']:.1f}", f"{row['truncated']:.2f}",
            "/".join(f"{v:.0f}" for v in row["answer_tokens_p50_p90_max"]),
        )  # fmt: skip
    Console().print(table)
    path = write_record("reasoning-tasks", args, {"env": ENV_ID, "candidates": rows}, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
