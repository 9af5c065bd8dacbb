"""Does TextPPO learn? Train the default model on one task for a wall-clock budget, then
compare the untrained and trained policies on held-out test prompts.

    python benchmarks/agents_learn.py --env TextGen-Sentiment-v0 --minutes 20

Before and after training, the policy samples one text for each of ``eval_prompts`` test
prompts (the same prompts and seed both times); the table gives the mean task reward with its
95% interval, each reward component, and the diversity of the texts (distinct-1/2, length,
seq-rep-4). Writes a JSON record (with the reward curve and sample texts) and a PNG of the
reward curve, never overwriting earlier runs.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import gymnasium as gym
from common import parse_args, peak_rss_gb, write_record
from rich.console import Console
from rich.table import Table
from stable_baselines3.common.callbacks import BaseCallback

import textgym  # noqa: F401  (registers the envs)
from agents import TextPPO
from agents.evaluation import sample_episodes, summarize
from textgym.models import DEFAULT_MODEL


@dataclass
class Args:
    env: str = "TextGen-Sentiment-v0"
    model: str = DEFAULT_MODEL
    minutes: float = 20.0  # training wall-clock budget (evaluation not included)
    eval_prompts: int = 64  # held-out test prompts, the first ones of the test split
    eval_seed: int = 1234
    max_new_tokens: int = 0  # 0: the env's default
    batch_episodes: int = 64
    minibatch_episodes: int = 8
    n_epochs: int = 1
    learning_rate: float = 2e-5
    kl_coef: float = 0.05
    reward_normalization: str = "none"
    lora: bool = False
    seed: int = 0
    out: str = "benchmarks/results"


class Budget(BaseCallback):
    """Stops training before a batch that would end past the wall-clock budget; keeps the curve."""

    def __init__(self, seconds: float, console: Console):
        super().__init__()
        self.seconds = seconds
        self.console = console
        self.curve: list[dict[str, float]] = []
        self._iteration_s = 0.0

    def _on_training_start(self) -> None:
        self.started = self._iteration_started = time.perf_counter()

    def _on_rollout_start(self) -> None:
        now = time.perf_counter()
        if self.curve:
            self._iteration_s = now - self._iteration_started
        self._iteration_started = now
        if self.model.__dict__.get("last_update"):
            update = self.model.last_update
            self.curve[-1].update(kl=update["kl"], entropy=update["entropy"])
            point = self.curve[-1]
            self.console.print(
                f"batch {len(self.curve):3d}  {point['seconds'] / 60:5.1f} min  {point['tokens']:7d} tokens  "
                f"reward {point['reward']:+.3f}  KL {update['kl']:6.2f}  entropy {update['entropy']:.2f}"
            )

    def _on_step(self) -> bool:
        return time.perf_counter() - self.started + self._iteration_s <= self.seconds

    def _on_rollout_end(self) -> None:
        self.curve.append(
            {
                "tokens": self.model.num_timesteps,
                "seconds": time.perf_counter() - self.started,
                "reward": self.model.last_rollout["reward"],
            }
        )


def plot_curve(curve: list[dict[str, float]], before: float, after: float, title: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(
        [p["tokens"] for p in curve], [p["reward"] for p in curve], marker=".", label="training batch mean"
    )
    ax.axhline(before, color="gray", linestyle="--", label=f"untrained, test prompts ({before:+.3f})")
    ax.axhline(after, color="green", linestyle="--", label=f"trained, test prompts ({after:+.3f})")
    ax.set_xlabel("generated tokens")
    ax.set_ylabel("task reward")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    args = parse_args(Args, __doc__.splitlines()[0])
    console = Console(width=140)
    overrides = {"max_new_tokens": args.max_new_tokens} if args.max_new_tokens else {}
    env = gym.make(args.env, model=args.model, **overrides)
    test = gym.make(args.env, model=args.model, split="test", **overrides).unwrapped
    indices = list(range(min(args.eval_prompts, len(test.examples))))
    agent = TextPPO(
        "LMPolicy", env, learning_rate=args.learning_rate, batch_episodes=args.batch_episodes,
        minibatch_episodes=args.minibatch_episodes, n_epochs=args.n_epochs, kl_coef=args.kl_coef,
        reward_normalization=args.reward_normalization, seed=args.seed,
        policy_kwargs={"lora": True} if args.lora else None,
    )  # fmt: skip

    console.print(f"[{args.env}] evaluating the untrained model on {len(indices)} test prompts ...")
    before_samples = sample_episodes(agent.policy.net, test, indices, seed=args.eval_seed)
    budget = Budget(args.minutes * 60, console)
    started = time.perf_counter()
    agent.learn(10**12, callback=budget, progress_bar=False)
    train_s = time.perf_counter() - started
    console.print(
        f"trained for {train_s / 60:.1f} min, {agent.num_timesteps} tokens, {len(budget.curve)} batches"
    )
    after_samples = sample_episodes(agent.policy.net, test, indices, seed=args.eval_seed)
    before, after = summarize(before_samples), summarize(after_samples)

    table = Table(title=f"{args.env}: TextPPO, {args.model}, {train_s / 60:.1f} min of training")
    for column in ("metric", "untrained", "trained", "change"):
        table.add_column(column, justify="left" if column == "metric" else "right")

    def cell(summary: dict[str, float], key: str) -> str:
        if key == "reward":
            return f"{summary[key]:+.3f} ± {summary['reward_ci95']:.3f}"
        return f"{summary[key]:.3f}"

    for key in (k for k in before if k != "reward_ci95"):
        table.add_row(key, cell(before, key), cell(after, key), f"{after[key] - before[key]:+.3f}")
    console.print(table)
    for i in range(3):
        console.print(f"[bold]prompt:[/bold] {test.examples[indices[i]].prompt!r}")
        console.print(f"  untrained ({before_samples['rewards'][i]:+.2f}): {before_samples['texts'][i]!r}")
        console.print(f"  trained   ({after_samples['rewards'][i]:+.2f}): {after_samples['texts'][i]!r}")
    ratio = after["distinct_2"] / before["distinct_2"] if before["distinct_2"] else float("nan")
    console.print(f"reward gain {after['reward'] - before['reward']:+.3f}; distinct-2 ratio {ratio:.2f}")

    results = {
        "env": args.env,
        "train_seconds": train_s,
        "train_tokens": agent.num_timesteps,
        "batches": len(budget.curve),
        "before": before,
        "after": after,
        "reward_gain": after["reward"] - before["reward"],
        "distinct_2_ratio": ratio,
        "curve": budget.curve,
        "peak_rss_gb": peak_rss_gb(),
        "samples": {"before": before_samples, "after": after_samples},
        "agent": {k: v for k, v in asdict(args).items() if k not in ("out",)},
    }
    path = write_record(f"agents-learn-{args.env}", args, results, args.out)
    plot = str(path.with_suffix(".png"))
    plot_curve(budget.curve, before["reward"], after["reward"], f"{args.env}: TextPPO reward", plot)
    console.print(f"wrote {path} and {plot}")


if __name__ == "__main__":
    main()
