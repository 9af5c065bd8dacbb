"""Tables of measured results, generated from the records in ``benchmarks/results/``.

Every table names the command that reproduces its records; nothing here is typed by hand.

- ``_generated/leaderboard.md``: the leaderboard (one table per env, best first), rendered by
  the leaderboard's own code (``board.select`` and ``board.env_table``) from
  ``benchmarks/results/leaderboard/runs.jsonl``; ``_generated/leaderboard-<agent>.md``: one
  agent's rows across the envs (for the algorithm pages).
- ``_generated/results-training.md``: the ``textgym train`` runs kept in
  ``benchmarks/results/train-*/`` (``run.json`` with ``eval-before.json``/``eval-after.json``).
- ``_generated/results-<family>.md``: the benchmark scripts' JSON records (throughput,
  precision, compare-trl, groups, core, and the records of scripts since replaced).

``python docs/_scripts/gen_results.py --readme`` rewrites the README's leaderboard excerpt (the
block between ``<!-- leaderboard:start -->`` and ``<!-- leaderboard:end -->``) from
:func:`readme_top_rows`; tests/test_docs.py checks the README holds exactly that.
"""

from __future__ import annotations

import ast
import dataclasses
import glob
import json
import math
import sys
from pathlib import Path
from typing import Any

from textgym.agents.leaderboard import board
from textgym.agents.leaderboard.config import AGENTS, LeaderboardConfig
from textgym.agents.leaderboard.store import read_records
from textgym.agents.runs.config import TrainConfig
from textgym.agents.runs.hyperparams import hyperparams
from textgym.envs.guess_number import binary_search_turns

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
RUNS_JSONL = RESULTS / "leaderboard" / "runs.jsonl"
BOARD_COMMAND = "python benchmarks/leaderboard.py"
README_START, README_END = "<!-- leaderboard:start -->", "<!-- leaderboard:end -->"


# --- the leaderboard -------------------------------------------------------------------------


def read_runs(path: Path = RUNS_JSONL) -> list[dict[str, Any]]:
    """The records of ``runs.jsonl``, read by the leaderboard's own reader."""
    return read_records(path)


def published_board() -> dict[str, dict[str, list[dict[str, Any]]]]:
    """``{env: {agent: [records]}}`` of the published board: the leaderboard's default
    configuration (what ``python benchmarks/leaderboard.py`` runs), as its board selects them."""
    config = LeaderboardConfig(results=str(RUNS_JSONL.parent)).resolved()
    return board.select(read_runs(), config)


def _split(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def env_rows(env: str, by_agent: dict[str, list[dict[str, Any]]]) -> tuple[list[str], list[list[str]]]:
    """The board's table for ``env`` (``board.env_table``) as a header and rows of cells."""
    lines = board.env_table(env, by_agent)
    return _split(lines[0]), [_split(line) for line in lines[2:]]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *["| " + " | ".join(row) + " |" for row in rows],
    ]


def leaderboard_markdown(
    chosen: dict[str, dict[str, list[dict[str, Any]]]], plots: Path | None = None
) -> str:
    """The board's tables; with ``plots``, each env's two plots (drawn there by the board's own
    ``plot_env``: reward during training, metrics with intervals) below its table."""
    lines = [
        f"Reproduce every row: `{BOARD_COMMAND}` (records appended to "
        "`benchmarks/results/leaderboard/runs.jsonl`; one env: `--envs ID`, some agents: "
        "`--agents a,b`, some seeds: `--seeds 0,1`).",
        "",
    ]
    for env, by_agent in chosen.items():
        lines += [f"### {env}", "", *board.env_table(env, by_agent), ""]
        if plots is not None:
            curve, bars = board.plot_env(env, by_agent, plots)
            lines += [
                f"![{env}: reward during training]({plots.name}/{curve})",
                f"![{env}: test metrics with 95% intervals]({plots.name}/{bars})",
                "",
            ]
    return "\n".join(lines)


def agent_markdown(agent: str, chosen: dict[str, dict[str, list[dict[str, Any]]]]) -> str:
    """One agent's rows across the envs, with its rank on each env's board."""
    keep = ["rank", "task reward", "perplexity", "distinct-2", "KL (nats)", "seeds (reward per seed)",
            "tokens trained on", "train min"]  # fmt: skip
    label = board.LABELS.get(agent, agent)
    rows = []
    for env, by_agent in chosen.items():
        if agent not in by_agent:
            continue
        header, cells = env_rows(env, by_agent)
        row = next(r for r in cells if r[header.index("agent")] == label)
        rank = f"{row[0]} of {len(cells)}"
        rows.append([env, rank, *[row[header.index(name)] for name in keep[1:]]])
    if not rows:
        return f"No leaderboard records for {label} yet (`{BOARD_COMMAND} --agents {agent}`).\n"
    text = _table(["env", *keep], rows)
    return (
        "\n".join(
            [
                *text,
                "",
                f"Reproduce: `{BOARD_COMMAND} --agents {agent}` (5 minutes or 100,000 tokens a run, "
                "seeds 0 and 1, the 64 test prompts; the whole board: {doc}`/leaderboard`).",
            ]  # fmt: skip
        )
        + "\n"
    )


def readme_top_rows(chosen: dict[str, dict[str, list[dict[str, Any]]]] | None = None) -> str:
    """The README's excerpt of the board: per env the three best agents and untrained sampling."""
    chosen = published_board() if chosen is None else chosen
    sampling = board.LABELS["sample"]
    rows = []
    for env, by_agent in chosen.items():
        header, cells = env_rows(env, by_agent)
        agent, reward = header.index("agent"), header.index("task reward")
        top = [f"{row[agent]} {row[reward]}" for row in cells[:3]]
        base = next((row[reward] for row in cells if row[agent] == sampling), "-")
        rows.append([env, *top, *[""] * (3 - len(top)), base])
    lines = _table(["env", "1st", "2nd", "3rd", "untrained, sampling"], rows)
    return "\n".join(
        [
            *lines,
            "",
            "Test reward, mean ± 95% interval over 64 test prompts, two seeds, 5 minutes of "
            f"training each on 2 CPU cores; `{BOARD_COMMAND}` reproduces it.",
        ]  # fmt: skip
    )


def rewrite_readme(readme: Path = ROOT / "README.md") -> bool:
    """Replace the README's block between the markers with :func:`readme_top_rows`; returns
    whether the file changed. Raises ValueError when the markers are missing."""
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        raise ValueError(f"{readme} has no {README_START} ... {README_END} block")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    new = f"{head}{README_START}\n{readme_top_rows()}\n{README_END}{tail}"
    if new != text:
        readme.write_text(new)
    return new != text


# --- commands from records -------------------------------------------------------------------


def _option(name: str, value: Any) -> str:
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return flag if value else "--no-" + name.replace("_", "-")
    if isinstance(value, dict):
        value = [f"{k}={v}" for k, v in value.items()]
    if isinstance(value, list):
        return " ".join([flag, *map(str, value)])
    text = str(value)
    return f"{flag} {text!r}" if (" " in text or not text) else f"{flag} {text}"


def script_defaults(script: Path) -> dict[str, Any] | None:
    """The defaults of the arguments dataclass of a benchmark script, read from its source
    (without importing it); None when the script is gone."""
    if not script.exists():
        return None
    from textgym.models import DEFAULT_MODEL

    names = {"DEFAULT_MODEL": DEFAULT_MODEL}
    defaults: dict[str, Any] = {}
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.ClassDef) and any("dataclass" in ast.unparse(d) for d in node.decorator_list):
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name) and item.value:
                    defaults[item.target.id] = _default(item.value, names)
    return defaults


def _default(node: ast.expr, names: dict[str, Any]) -> Any:
    if isinstance(node, ast.Name):
        return names.get(node.id, node.id)
    if isinstance(node, ast.Call):  # field(default=...) or field(default_factory=dict/list)
        for keyword in node.keywords:
            if keyword.arg == "default":
                return _default(keyword.value, names)
            if keyword.arg == "default_factory" and isinstance(keyword.value, ast.Name):
                return {"dict": {}, "list": []}.get(keyword.value.id)
        return None
    try:
        return ast.literal_eval(node)
    except ValueError:
        return ast.unparse(node)


SCRIPTS = {  # a record's family -> the script that writes it (the rest: <family>.py)
    "agents-learn": "agents_learn.py",
    "agents-perf": "agents_perf.py",
    "compare-trl": "compare_trl.py",
    "dialogue-rewards": "dialogue_rewards.py",
}


def record_command(record: dict[str, Any]) -> str:
    """The command line that wrote a benchmark record: its script with the arguments it was
    given that differ from the script's defaults of today (all of them for a removed script)."""
    family = family_of(record)
    script = Path("benchmarks") / SCRIPTS.get(family, f"{family}.py")
    defaults = script_defaults(ROOT / script)
    args = {k: v for k, v in record.get("args", {}).items() if k != "out"}
    if defaults is not None:
        args = {k: v for k, v in args.items() if k not in defaults or _differs(v, defaults[k])}
    command = " ".join(["python", str(script), *(_option(k, v) for k, v in args.items())])
    return command if defaults is not None else f"{command} (a script since removed)"


def _differs(value: Any, default: Any) -> bool:
    if isinstance(default, (dict, list)) and not default:
        return bool(value)
    return value != default


def family_of(record: dict[str, Any]) -> str:
    name = record.get("benchmark", "")
    return "agents-learn" if name.startswith("agents-learn") else name


def machine_text(record: dict[str, Any]) -> str:
    machine = record.get("machine", {})
    return f"{machine.get('threads', '?')} threads, {str(record.get('time', ''))[:10]}"


def _f(value: Any, digits: int = 2, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}{suffix}"


def _ci(metrics: dict[str, Any], key: str = "reward") -> str:
    if key not in metrics:
        return "-"
    half = metrics.get(f"{key}_ci95")
    return f"{metrics[key]:+.3f}" + ("" if half is None else f" ± {half:.3f}")


# --- training runs ---------------------------------------------------------------------------


def train_command(run: dict[str, Any]) -> str:
    """``textgym train`` with the run's settings; hyperparameters that differ from today's
    registry values for its env and algorithm are given as ``--hyperparams`` overrides."""
    config, summary = run["config"], run.get("summary", {})
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    minutes, tokens = config["budget_minutes"], config["budget_tokens"]
    budget = f"{minutes:g}m" + ("" if tokens == defaults["budget_tokens"] else f",{tokens}")
    parts = ["textgym train", f"--env {config['env']}", f"--algo {config['algo']}", f"--budget {budget}"]
    precision = summary.get("precision") or config.get("precision") or "fp32"  # runs before the option: fp32
    parts.append(f"--precision {precision}")
    for name in ("model", "seed", "eval_prompts", "profile"):
        if config.get(name, defaults[name]) != defaults[name]:
            parts.append(_option(name, config[name]))
    if config.get("env_kwargs"):
        parts.append("--env-kwargs " + " ".join(f"{k}={v}" for k, v in config["env_kwargs"].items()))
    overrides = _overrides(config)
    if overrides:
        parts.append("--hyperparams " + " ".join(overrides))
    return " ".join(parts)


def _overrides(config: dict[str, Any]) -> list[str]:
    try:
        today = hyperparams(config["algo"], config["env"], config.get("profile", "default"))
    except ValueError:  # an env or algorithm the registry no longer has
        return []
    out = []
    for key, value in sorted(config.get("hyperparams", {}).items()):
        if key == "policy_kwargs":
            current = today.get("policy_kwargs", {})
            out += [f"policy_kwargs.{k}={v}" for k, v in sorted(value.items()) if current.get(k) != v]
        elif key in today and today[key] != value:
            out.append(f"{key}={value}")
    return out


def _eval_metrics(folder: Path, name: str, summary: dict[str, Any]) -> dict[str, Any]:
    path = folder / f"eval-{name}.json"
    if path.exists():
        return json.loads(path.read_text())["metrics"]
    return summary.get(name, {})


def _ratio(after: dict[str, Any], before: dict[str, Any], key: str) -> str:
    if key not in after or not before.get(key):
        return "-"
    return f"{after[key] / before[key]:.2f}x"


def training_markdown() -> str:
    rows = []
    for run_json in sorted(RESULTS.glob("train-*/run.json")):
        run = json.loads(run_json.read_text())
        if run.get("status") != "finished":
            continue
        config, summary = run["config"], run.get("summary", {})
        before = _eval_metrics(run_json.parent, "before", summary)
        after = _eval_metrics(run_json.parent, "after", summary)
        precision = summary.get("precision") or config.get("precision") or "fp32"
        rows.append([
            config["env"].removeprefix("TextGen-").removesuffix("-v0"),
            config["algo"],
            precision,
            f"{summary.get('train_tokens', 0):,}",
            _f(summary.get("train_minutes"), 1),
            f"{_ci(before)} → {_ci(after)}",
            _f(after.get("kl"), 1),
            _ratio(after, before, "distinct_2"),
            _ratio(after, before, "perplexity"),
            f"`{run_json.parent.name}`",
            f"`{train_command(run)}`",
        ])  # fmt: skip
    rows.sort(key=lambda r: (r[0], r[1], r[9]))
    header = ["env", "algo", "precision", "tokens", "minutes", "test reward before → after", "KL (nats)",
              "distinct-2 after/before", "perplexity after/before", "record", "command"]  # fmt: skip
    return "\n".join([
        *_table(header, rows), "",
        "Test reward: mean ± 95% interval over the 64 test prompts, one sampled text each, before and "
        "after training (the run directory's `eval-before.json` and `eval-after.json`). Perplexity is "
        "that of the generated texts under the untrained model; KL is to that model, nats per text. "
        "Runs recorded before `--precision` existed ran in fp32. The command gives as `--hyperparams` "
        "the run's values that differ from today's registry.",
    ]) + "\n"  # fmt: skip


TEXTS_SHOWN = 3  # before/after texts per task: the first test prompts both evaluations drew


def _metric_cell(metrics: dict[str, Any], key: str) -> str:
    if key not in metrics:
        return "-"
    digits = 3 if abs(metrics[key]) < 10 else 1
    interval = metrics.get(f"{key}_ci95")
    return f"{metrics[key]:.{digits}f}" + (f" ± {interval:.{digits}f}" if interval is not None else "")


def _cell_text(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|") or "*(empty)*"


def _text_cell(row: dict[str, Any]) -> str:
    """A row's text, or for a multi-turn game its turns, each with the partner's reply."""
    if "conversation" not in row:
        return _cell_text(row["text"])
    return " ".join(
        f"**A:** {_cell_text(t['text'])} **P:** {_cell_text(t['reply'])}" for t in row["conversation"]
    )


def _won_turns(evaluation: dict[str, Any]) -> str:
    """The mean turns of the games won, and how many were won."""
    won = [row["turns"] for row in evaluation["examples"] if row.get("success") == 1.0]
    return (
        f"{sum(won) / len(won):.2f} turns ({len(won)} of {len(evaluation['examples'])} won)"
        if won
        else "no game won"
    )


def task_markdown(run_dir: Path) -> list[str]:
    """One ``textgym train`` run's task metrics before and after, and the texts of the first
    test prompts that both evaluations drew, side by side."""
    run = json.loads((run_dir / "run.json").read_text())
    before, after = (json.loads((run_dir / f"eval-{n}.json").read_text()) for n in ("before", "after"))
    config, summary = run["config"], run.get("summary", {})
    keys = ["reward", *before["metric_names"], "distinct_2", "perplexity", "kl", "mean_length"]
    keys = [key for key in keys if key in before["metrics"] or key in after["metrics"]]
    first = before["examples"][0] if before["examples"] else {"components": {}}
    terms = ", ".join(f"`{term}`" for term in first["components"]) or "-"
    study = run_dir.name.startswith("study-")
    then = ", the task's reward when this run was made; the command now trains on today's."
    lines = [
        f"### {config['env']}: {config['algo']}, {summary.get('train_minutes', 0):.0f} minutes"
        + (" (a study: an earlier reward)" if study else ""),
        "",
        f"`{train_command(run)}` (record `{run_dir.name}`, {summary.get('train_tokens', 0):,} tokens, "
        f"{summary.get('precision', config.get('precision', 'fp32'))}). Reward terms: {terms}"
        + (then if study else "."),
        "",
        *_table(
            ["test metric", "before", "after"],
            [[key, *(_metric_cell(e["metrics"], key) for e in (before, after))] for key in keys],
        ),
        "",
    ]
    if config["env"].startswith("TextGen-GuessNumber-"):
        high = int(config.get("env_kwargs", {}).get("high", 20))
        lines += [
            f"Against bisection, the known optimum, which wins every game in {binary_search_turns(high):.2f} "
            f"turns on average over the secrets 1 to {high} (`binary_search_turns({high})`): the mean "
            "turns of all games (a lost game counts all its turns) went from "
            f"{_metric_cell(before['metrics'], 'turns')} to {_metric_cell(after['metrics'], 'turns')}; "
            f"the games won took {_won_turns(before)} before "
            f"and {_won_turns(after)} after.",
            "",
        ]
    later = {(row["example_id"], row["seed"]): row for row in after["examples"]}
    pairs = [(row, later.get((row["example_id"], row["seed"]))) for row in before["examples"]]
    pairs = [pair for pair in pairs if pair[1] is not None][:TEXTS_SHOWN]
    rows = [
        [_cell_text(b["prompt"]), _cell_text(b["references"][0]),
         *(f"{_text_cell(row)} ({row['reward']:+.2f})" for row in (b, a))]
        for b, a in pairs
    ]  # fmt: skip
    return [*lines, *_table(["prompt", "reference", "before (reward)", "after (reward)"], rows), ""]


def tasks_markdown(envs: tuple[str, ...] = ("Translation", "Concepts", "Reasoning")) -> str:
    """Every finished run of the tasks in ``envs``, each with its task metrics and texts."""
    runs = []  # (env, run directory) of every finished run, each run.json read once
    for path in sorted([*RESULTS.glob("study-*/run.json"), *RESULTS.glob("train-*/run.json")]):
        run = json.loads(path.read_text())
        if run.get("status") == "finished" and (path.parent / "eval-after.json").exists():
            runs.append((run["config"]["env"], path.parent))
    sections = []
    for env in envs:
        for run_env, run_dir in runs:
            if run_env == f"TextGen-{env}-v0":
                sections += task_markdown(run_dir)
    return "\n".join(sections) + "\n"


# --- benchmark records -----------------------------------------------------------------------


def records(family: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(glob.glob(str(RESULTS / "*.json"))):
        record = json.loads(Path(path).read_text())
        if family_of(record) == family:
            out.append((Path(path).name, record))
    return sorted(out, key=lambda item: item[1].get("time", ""))


def _ratio_label(key: str) -> str:
    return key.replace("TextGen-", "").replace("-v0", "").replace("_", " ")


def ratios_markdown(family: str) -> list[str]:
    """Per record: its command and machine, then its ``ratios`` (each a measurement against its
    baseline within the same run, the figures to compare across machines)."""
    lines = []
    for name, record in records(family):
        ratios = record.get("ratios", {})
        lines += [f"**`{name}`**: `{record_command(record)}` ({machine_text(record)})", ""]
        if ratios:
            rows = [[_ratio_label(k), f"{v:.2f}x"] for k, v in ratios.items()]
            lines += [*_table(["ratio (measured against baseline, same run)", "value"], rows), ""]
        lines += [*_family_extra(family, record), ""]
    return lines


def _family_extra(family: str, record: dict[str, Any]) -> list[str]:
    args = record.get("args", {})
    if family == "multiturn":
        rows = [
            [way, args.get("env", "-").removeprefix("TextGen-"), f"{record[way]['tokens']}",
             _f(record[way]["tokens_per_s"], 1),
             f"{record[way]['end_turns_share']:.1%}" if way != "single_turn" else "-"]
            for way in ("cached", "reencoded", "single_turn")
        ]  # fmt: skip
        return _table(
            ["rollout", "env", "agent tokens", "agent tokens/s", "ending turns (partner, rewards)"], rows
        )
    if family == "partner_batching":
        rows = [
            [way, _f(record[way]["seconds"], 1), _f(record[way]["partner_seconds"], 1),
             f"{record[way]['partner_share']:.1%}", f"{record[way]['replies']}", f"{record[way]['calls']}",
             _f(record[way]["seconds_per_reply"], 3)]
            for way in ("alone", "batched")
        ]  # fmt: skip
        header = [
            "partners",
            "step seconds",
            "partner seconds",
            "partner share",
            "replies",
            "calls",
            "s/reply",
        ]
        return _table(header, rows)
    if family == "precision" and record.get("settings"):
        rows = [
            [
                name,
                f"{s.get('trainable_fraction', 1):.2%}",
                _f(s["rollout"]["tokens_per_s"], 1),
                _f(s["update"]["tokens_per_s"], 1),
            ]  # fmt: skip
            for name, s in record["settings"].items()
        ]
        return _table(["setting", "trainable", "rollout tokens/s", "update tokens/s"], rows)
    if family == "throughput" and (record.get("stock_training") or record.get("value_training")):
        rows = []
        for env, agents in {**record.get("stock_training", {}), **record.get("value_training", {})}.items():
            for agent, values in agents.items():
                rollout, update = values["rollout"]["tokens_per_s"], values["update"]["tokens_per_s"]
                rows.append([env, agent, _f(rollout, 1), _f(update, 1), _f(values.get("peak_rss_gb"), 1)])
        return _table(["env", "agent", "rollout tokens/s", "update tokens/s", "peak GB"], rows)
    if family == "core":
        rows = [
            [
                env,
                _f(v["make_s"], 2),
                _f(v["random_steps_per_s"], 0),
                _f(v["model_tokens_per_s"], 1),
                f"{v['model_mean_reward']:+.3f}",
            ]  # fmt: skip
            for env, v in record.get("envs", {}).items()
        ]
        loading = record.get("loading", {})
        return [
            f"Loading the packaged GGUF: {_f(loading.get('gguf_load_s'))} s; the cached safetensors copy: "
            f"{_f(loading.get('cached_load_s'), 3)} s.",
            "",
            *_table(
                [
                    "env",
                    "gym.make s",
                    "random-policy steps/s",
                    "model tokens/s (one episode at a time)",
                    "untrained mean reward",
                ],
                rows,
            ),  # fmt: skip
        ]
    return []


def compare_trl_markdown() -> list[str]:
    rows = []
    for name, r in records("compare-trl"):
        before, after = r.get("before", {}), r.get("after", {})
        rows.append([
            f"`{name}`", f"`{record_command(r)}`", r.get("textgym", {}).get("precision", "-"),
            r.get("trl", {}).get("precision", "-"), _f(r["tokens_per_s"]["textgym"], 1),
            _f(r["tokens_per_s"]["trl"], 1), f"{r['ratio']:.2f}x", _ci(before),
            f"{_ci(after.get('textgym', {}))} ({r['gain']['textgym']:+.3f})",
            f"{_ci(after.get('trl', {}))} ({r['gain']['trl']:+.3f})",
            _f(after.get("textgym", {}).get("kl"), 1), _f(after.get("trl", {}).get("kl"), 1),
        ])  # fmt: skip
    header = ["record", "command", "textgym precision", "TRL precision", "textgym tokens/s", "TRL tokens/s",
              "ratio", "untrained reward", "textgym reward (gain)", "TRL reward (gain)", "textgym KL",
              "TRL KL"]  # fmt: skip
    return _table(header, rows)


# a Dialogue reward's name -> its candidate in the study of docs/results/dialogue-reward.md
STUDY_NAMES = {
    "dialogue": "(a) similarity",
    "dialogue-relevance": "(b) relevance",
    "dialogue-next-turn": "(c) next turn",
    "dialogue-mix": "(d) mix",
}


def _prompt_tail(prompt: str, chars: int = 160) -> str:
    text = _cell_text(prompt.removesuffix("Assistant:"))
    return text if len(text) <= chars else "…" + text[-chars:]


def _study_label(run: dict[str, Any]) -> str:
    label = STUDY_NAMES.get(run["reward"], run["reward"])
    if run.get("env", "").endswith("-v1"):
        label += ", v1"
    return label + (f", seed {run['seed']}" if run.get("seed") else "")


def dialogue_rewards_markdown() -> list[str]:
    """The newest ``benchmarks/dialogue_rewards.py`` record: every candidate's paired change on
    each run's test texts, the runs' distinct-2, perplexity and KL, and the first test texts of
    every run side by side."""
    found = records("dialogue-rewards")
    if not found:
        return ["No record yet: `python benchmarks/dialogue_rewards.py --runs RUN_DIR,...` writes one."]
    name, record = found[-1]
    runs, candidates = record["runs"], [*record["candidates"], *record.get("diagnostics", [])]
    label = {run["run"]: _study_label(run) for run in runs}
    lines = [f"Record `{name}`: `{record_command(record)}` ({machine_text(record)}).", ""]
    rows = []
    for run in runs:
        scores = run["scores"]
        rows.append([
            label[run["run"]], f"`{run['run']}`", f"{run['train_tokens'] or 0:,}",
            *(f"{scores[c]['change']:+.3f} ± {scores[c]['change_ci95']:.3f}" for c in candidates),
        ])  # fmt: skip
    lines += [*_table(["trained on", "run", "tokens", *candidates], rows), ""]
    lines += [
        "Each cell: the candidate's mean on the run's test texts after training minus before, paired by "
        f"prompt ({runs[0]['n']} prompts, one sampled text each), ± its 95% interval. BLEU is "
        "sentence BLEU (0-100); the degeneracy term is 0 for a clean text and negative otherwise; `copy` "
        "(not a candidate) is the share of the reply's 3-grams copied from the turn it answers.",
        "",
    ]
    rows = []
    studied = ("similarity", "relevance", "next_turn")
    for run in runs:
        scores, own = run["scores"], run["own"]
        ratios = [f"{own[k][1] / own[k][0]:.2f}x" if own[k][0] else "-" for k in ("distinct_2", "perplexity")]
        rows.append([
            label[run["run"]],
            *(f"{scores[c]['before']:.3f} → {scores[c]['after']:.3f}" for c in studied),
            *ratios, _f(own["kl"][1], 1),
        ])  # fmt: skip
    header = ["trained on", "similarity", "relevance", "next turn", "distinct-2 after/before",
              "perplexity after/before", "KL after (nats)"]  # fmt: skip
    lines += [*_table(header, rows), ""]
    # The untrained texts are shown once for the runs that drew the same ones as the first run
    # (same seed and prompts); a run that drew others shows its own, before -> after.
    base = [text["before"] for text in runs[0]["texts"]]
    drew_others = [[text["before"] for text in run["texts"]] != base for run in runs]
    header = ["context (end)", "reference", "untrained", *(label[run["run"]] for run in runs)]
    rows = []
    for i, first in enumerate(runs[0]["texts"]):
        cells = [_prompt_tail(first["prompt"]), _cell_text(first["reference"]), _cell_text(base[i])]
        for run, others in zip(runs, drew_others):
            text = run["texts"][i]
            after = _cell_text(text["after"])
            cells.append(f"{_cell_text(text['before'])} → {after}" if others else after)
        rows.append(cells)
    return [*lines, *_table(header, rows)]


def agents_learn_markdown() -> list[str]:
    rows = []
    for name, r in records("agents-learn"):
        args = r.get("args", {})
        rows.append([
            r["env"], str(args.get("batch_episodes", "-")), _f(r["train_seconds"] / 60, 1),
            f"{r['train_tokens']:,}", f"{_ci(r['before'])} → {_ci(r['after'])}",
            f"{r['distinct_2_ratio']:.2f}x", f"`{name}`", f"`{record_command(r)}`",
        ])  # fmt: skip
    header = ["env", "batch", "minutes", "tokens", "test reward before → after", "distinct-2 ratio", "record",
              "command"]  # fmt: skip
    return _table(header, rows)


FAMILIES = {
    "throughput": "`benchmarks/throughput.py`: the stock path's KV cache, TextPPO's rollout and update "
    "against bare transformers loops, the KL wrapper, stock PPO against TextPPO.",
    "agents-perf": "The throughput script's predecessor (same measurements, earlier code).",
    "precision": "`benchmarks/precision.py`: TextPPO's rollout and update tokens/s per precision, full "
    "fine-tuning and LoRA.",
    "groups": "`benchmarks/groups.py`: a group's prompt run once per group against once per row.",
    "core": "`benchmarks/core.py`: model loading, env overhead, the default model acting through the env.",
    "multiturn": "`benchmarks/multiturn.py`: a batch of games with one KV cache through every turn, against "
    "re-running each turn's context and against single-turn episodes of the same length; the share of "
    "the rollout spent ending turns (the partner's replies and the turn rewards).",
    "partner_batching": "`benchmarks/partner_batching.py`: a vector env's partners replying one at a time "
    "against in one batch per step (`VecPartnerBatcher`).",
}


def benchmarks_markdown(family: str) -> str:
    lines = [FAMILIES[family], ""]
    lines += ratios_markdown(family)
    return "\n".join(lines) + "\n"


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def generate(docs: Path) -> None:
    out = docs / "_generated"
    chosen = published_board()
    write(out / "leaderboard.md", leaderboard_markdown(chosen, plots=out / "leaderboard"))
    for agent in AGENTS:
        write(out / f"leaderboard-{agent}.md", agent_markdown(agent, chosen))
    write(out / "leaderboard-top.md", readme_top_rows(chosen) + "\n")
    write(out / "results-training.md", training_markdown())
    write(out / "results-tasks.md", tasks_markdown())
    write(out / "results-multiturn-runs.md", tasks_markdown(("GuessNumber", "TargetChat")))
    write(out / "results-compare-trl.md", "\n".join(compare_trl_markdown()) + "\n")
    write(out / "results-agents-learn.md", "\n".join(agents_learn_markdown()) + "\n")
    write(out / "results-dialogue-rewards.md", "\n".join(dialogue_rewards_markdown()) + "\n")
    for family in FAMILIES:
        write(out / f"results-{family}.md", benchmarks_markdown(family))


if __name__ == "__main__":
    if sys.argv[1:] == ["--readme"]:
        changed = rewrite_readme()
        print("README.md: leaderboard block " + ("rewritten" if changed else "already up to date"))
    elif not sys.argv[1:]:
        generate(Path(__file__).resolve().parents[1])
    else:
        sys.exit("usage: python docs/_scripts/gen_results.py [--readme]")
