"""Rendering the leaderboard: ``LEADERBOARD.md`` (one table per env, best first) and its plots
(reward vs. training tokens per agent; metric bars with 95% intervals)."""

from __future__ import annotations

import io
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from textgym import ENVS
from textgym.agents.leaderboard.config import TRAINED, LeaderboardConfig, RunSpec
from textgym.agents.leaderboard.store import pooled, trained_tokens
from textgym.agents.runs.hyperparams import params
from textgym.atomic import write_bytes, write_text

LABELS = {
    "sample": "untrained, sampling",
    "greedy": "untrained, greedy",
    "ppo": "SB3 PPO + LMActorCriticPolicy",
    "a2c": "SB3 A2C + LMActorCriticPolicy",
    "textppo": "TextPPO",
    "grpo": "GRPO",
    "rloo": "RLOO",
    "reinforce": "REINFORCE",
    "softq": "SoftQ",
    "dqn": "SB3 DQN + LMQPolicy",
}


def select(
    records: list[dict[str, Any]], config: LeaderboardConfig
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """This configuration's records, ``{env: {agent: [the latest per seed]}}`` (a record
    written before the hyperparameter registry counts under its earlier key). Like agents and
    seeds, envs are not limited to the ones this call ran: a run of ``--envs X`` keeps the other
    envs' rows of the same configuration on the board."""
    latest: dict[str, dict[str, Any]] = {}
    for record in records:
        spec = RunSpec(record["env"], record["agent"], record["seed"])
        if record["env"] in ENVS and record["key"] in spec.keys(config):
            latest[f"{spec.env}-{spec.agent}-s{spec.seed}"] = record
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for record in sorted(latest.values(), key=lambda r: list(ENVS).index(r["env"])):  # the catalogue's order
        out.setdefault(record["env"], {}).setdefault(record["agent"], []).append(record)
    return out


def _fmt(mean: float, half: float, digits: int = 3, sign: bool = False) -> str:
    if math.isnan(mean):
        return "-"
    text = f"{mean:+.{digits}f}" if sign else f"{mean:.{digits}f}"
    return text if math.isnan(half) else f"{text} ± {half:.{digits}f}"


def env_table(env: str, by_agent: dict[str, list[dict[str, Any]]]) -> list[str]:
    metric_names = next(iter(by_agent.values()))[0]["metric_names"]
    header = [
        "rank",
        "agent",
        "task reward",
        *metric_names,
        "perplexity",
        "distinct-2",
        "length",
        "KL (nats)",
        "seeds (reward per seed)",
        "tokens trained on",
        "train min",
        "train tokens/s",
        "peak GB",
    ]
    rows = []
    for agent, runs in by_agent.items():
        reward = pooled(runs, "reward")
        nll, nll_half = pooled(runs, "nll")
        kl = pooled(runs, "kl")
        used_tokens = np.mean([trained_tokens(r) for r in runs])
        used_min = np.mean([r["used"]["minutes"] for r in runs])
        rates = [trained_tokens(r) / (r["used"]["minutes"] * 60) for r in runs if r["used"]["minutes"]]
        cells = [
            LABELS.get(agent, agent),
            _fmt(*reward, sign=True),
            *[_fmt(*pooled(runs, m), digits=2 if m == "bleu" else 3) for m in metric_names],
            f"{math.exp(nll):.1f} ({math.exp(nll - nll_half):.1f}-{math.exp(nll + nll_half):.1f})",
            f"{np.mean([r['metrics']['distinct_2'] for r in runs]):.3f}",
            f"{np.mean([r['metrics']['mean_length'] for r in runs]):.1f}",
            "-" if agent not in TRAINED else _fmt(*kl, digits=2),
            f"{len(runs)} ("
            + ", ".join(f"{r['metrics']['reward']:+.3f}" for r in sorted(runs, key=lambda r: r["seed"]))
            + ")",
            f"{used_tokens:,.0f}" if agent in TRAINED else "-",
            f"{used_min:.1f}" if agent in TRAINED else "-",
            f"{np.mean(rates):.0f}" if rates else "-",
            f"{max(r['peak_rss_gb'] for r in runs):.2f}",
        ]
        rows.append((reward[0], cells))
    rows.sort(key=lambda row: -row[0] if not math.isnan(row[0]) else math.inf)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join([str(rank), *cells]) + " |" for rank, (_, cells) in enumerate(rows, 1)]
    return lines


def hyperparameter_lines(
    env: str, by_agent: dict[str, list[dict[str, Any]]], config: LeaderboardConfig
) -> list[str]:
    """One line per trained agent: the hyperparameters its runs used that differ from its
    algorithm's constructor defaults (seeds that ran with different values get a line each).
    Records from before the registry carry none: theirs are the registry's of today, which
    their legacy key pins (:meth:`RunSpec.legacy_key`)."""
    lines = []
    for agent, runs in by_agent.items():
        if agent not in TRAINED:
            continue
        defaults = {name: param.default for name, param in params(TRAINED[agent]).items()}
        seen: dict[str, list[int]] = {}
        for run in sorted(runs, key=lambda r: r["seed"]):
            values = run.get("hyperparams") or config.train_config(env, agent, run["seed"]).hyperparams
            changed = {k: v for k, v in values.items() if k not in defaults or v != defaults[k]}
            text = ", ".join(f"`{k}={v}`" for k, v in sorted(changed.items())) or "the defaults"
            seen.setdefault(text, []).append(run["seed"])
        for text, seeds in seen.items():
            which = "" if len(seen) == 1 else f" (seeds {', '.join(map(str, seeds))})"
            lines.append(f"- {LABELS.get(agent, agent)}{which}: {text}")
    return lines


def plot_env(env: str, by_agent: dict[str, list[dict[str, Any]]], folder: Path) -> tuple[str, str]:
    """Two PNGs for ``env``: reward vs. training tokens, and metric bars with intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    colors = {agent: f"C{i}" for i, agent in enumerate(LABELS)}
    fig, ax = plt.subplots(figsize=(7, 4))
    for agent, runs in by_agent.items():
        if agent in TRAINED:
            for i, run in enumerate(sorted(runs, key=lambda r: r["seed"])):
                points = [p for p in run["curve"] if not math.isnan(p["reward"])]
                ax.plot(
                    [p["tokens"] for p in points],
                    [p["reward"] for p in points],
                    color=colors[agent],
                    alpha=0.8,
                    marker=".",
                    label=LABELS[agent] if i == 0 else None,
                )
        else:
            mean, _ = pooled(runs, "reward")
            ax.axhline(mean, color=colors[agent], linestyle="--", label=f"{LABELS[agent]} (test)")
    ax.set_xlabel("training tokens")
    ax.set_ylabel("task reward (training batches)")
    ax.set_title(f"{env}: reward during training")
    ax.legend(fontsize=8)
    fig.tight_layout()
    curve = folder / f"{env}-curve.png"
    _save(fig, curve)
    plt.close(fig)

    metric_names = ["reward", *next(iter(by_agent.values()))[0]["metric_names"]]
    fig, axes = plt.subplots(1, len(metric_names), figsize=(3.2 * len(metric_names), 3.6), squeeze=False)
    agents = list(by_agent)
    for ax, metric in zip(axes[0], metric_names):
        stats = [pooled(by_agent[a], metric) for a in agents]
        ax.bar(
            range(len(agents)),
            [s[0] for s in stats],
            yerr=[0 if math.isnan(s[1]) else s[1] for s in stats],
            color=[colors[a] for a in agents],
            capsize=4,
        )
        ax.set_xticks(range(len(agents)), agents, rotation=30)
        ax.set_title("task reward" if metric == "reward" else metric)
    fig.suptitle(f"{env} (test prompts, 95% intervals)")
    fig.tight_layout()
    bars = folder / f"{env}-metrics.png"
    _save(fig, bars)
    plt.close(fig)
    return curve.name, bars.name


def _save(fig: Any, path: Path) -> None:
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    write_bytes(path, png.getvalue())


def write_board(
    config: LeaderboardConfig, records: list[dict[str, Any]], command: str = "textgym leaderboard"
) -> Path:
    """Regenerate the markdown board and its plots from ``records`` (this configuration only);
    ``command`` is how the board says to reproduce it."""
    board = Path(config.board)
    folder = board.parent / "leaderboard"
    chosen = select(records, config)
    commits = sorted(
        {r["git_commit"][:12] for envs in chosen.values() for runs in envs.values() for r in runs}
    )
    reproduce = f"{command} --quick" if config.quick else command
    lines = [
        "# textgym leaderboard",
        "",
        f"Model `{config.model}`; every trained agent gets the same budget: {config.budget_tokens:,} "
        f"generated tokens or {config.budget_minutes:g} minutes of training, whichever comes first (both "
        f"used are shown). Evaluation: the same {config.eval_prompts} seeded test prompts for every agent, "
        "one sampled text per prompt and seed (greedy: one text). ± is a 95% interval over prompts of each "
        "prompt's mean over seeds; the per-seed rewards show the spread between seeds. Perplexity is that "
        "of the generated tokens under the frozen untrained model (its interval in brackets); KL is to "
        "that model, in nats per text. Best first.",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M %Z')} from `{Path(config.results) / 'runs.jsonl'}` "
        f"(commits {', '.join(commits) or '-'}). Reproduce: `{reproduce}`.",
        "",
    ]
    for env, by_agent in chosen.items():
        curve, bars = plot_env(env, by_agent, folder)
        lines += [f"## {env}", "", *env_table(env, by_agent), ""]
        settings = hyperparameter_lines(env, by_agent, config)
        if settings:
            lines += [
                "Hyperparameters of each trained row, where they differ from the algorithm's defaults "
                "(`textgym train --algo A --help` lists those):",
                "",
                *settings,
                "",
            ]
        lines += [
            f"![{env} reward during training](leaderboard/{curve}) ![{env} metrics](leaderboard/{bars})",
            "",
        ]
    missing = [
        f"{e} {a} seed {s}"
        for e in config.env_ids()
        for a in config.agent_names()
        for s in (config.seed_list()[:1] if a == "greedy" else config.seed_list())
        if not any(r["seed"] == s for r in chosen.get(e, {}).get(a, []))
    ]
    if missing:
        lines += ["## Not run yet", "", *[f"- {m}" for m in missing], ""]
    write_text(board, "\n".join(lines))
    return board
