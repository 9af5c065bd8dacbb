"""What a finished run prints and leaves besides its metrics: the before/after table, sample
texts (``samples.md``) and the reward curve (``curve.png``)."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from textgym.agents.runs.evaluation import Evaluation
from textgym.agents.runs.failures import writing
from textgym.atomic import write_bytes

if TYPE_CHECKING:
    from textgym.agents.runs.callbacks import Run
    from textgym.agents.runs.config import TrainConfig


def report(
    config: TrainConfig, before: dict[str, Any], after: Evaluation, run: Run, console: Console
) -> None:
    """Before/after table, sample texts (also in ``samples.md``) and the reward-curve PNG."""
    table = Table(title=f"{config.env}: {config.algo}, {run.train_seconds / 60:.1f} min of training")
    table.add_column("metric")
    table.add_column("untrained", justify="right")
    table.add_column("trained", justify="right")
    untrained = Evaluation(
        **{k: v for k, v in before.items() if k != "examples"}, examples=before["examples"]
    )
    for (name, old), (_, new) in zip(untrained.rows(), after.rows()):
        table.add_row(name, old, new)
    console.print(table)
    lines = [f"# {config.env}: {config.algo} on {config.model}, seed {config.seed}", ""]
    for old, new in list(zip(before["examples"], after.examples))[:5]:
        console.print(f"[bold]prompt[/] {old['prompt'][-300:]!r}")
        console.print(f"  untrained ({old['reward']:+.2f}) {old['text']!r}")
        console.print(f"  trained   ({new['reward']:+.2f}) {new['text']!r}")
        lines += [
            f"**prompt** {old['prompt']!r}",
            "",
            f"- untrained ({old['reward']:+.3f}): {old['text']!r}",
            f"- trained ({new['reward']:+.3f}): {new['text']!r}",
            "",
        ]
    for name, data in (
        ("samples.md", "\n".join(lines).encode()),
        ("curve.png", plot_curve(run, before["metrics"]["reward"], after.metrics["reward"])),
    ):
        with writing(run.out / name, len(data)):
            write_bytes(run.out / name, data)
    console.print(f"run directory: {run.out} (TensorBoard: tensorboard --logdir {run.out / 'tb'})")


def plot_curve(run: Run, before: float, after: float) -> bytes:
    """The run's training and validation rewards against tokens, with the test rewards before
    and after training as lines: a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(
        [p["tokens"] for p in run.curve],
        [p["reward"] for p in run.curve],
        marker=".",
        label="training batches",
    )
    if run.evals:
        ax.plot(
            [p["tokens"] for p in run.evals], [p["reward"] for p in run.evals], marker="o", label="validation"
        )
    ax.axhline(before, color="gray", linestyle="--", label=f"untrained, test ({before:+.3f})")
    ax.axhline(after, color="green", linestyle="--", label=f"trained, test ({after:+.3f})")
    ax.set_xlabel("generated tokens")
    ax.set_ylabel("task reward")
    ax.set_title(f"{run.config.env}: {run.config.algo} ({run.config.model})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=110)
    plt.close(fig)
    return png.getvalue()
