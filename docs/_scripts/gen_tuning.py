"""The hyperparameter tables of the algorithm pages and the tuning page: writes, under
``docs/_generated/``,

- ``hyperparams-<algo>.md``: the registry's values for each env (``agents/hyperparams/<algo>.yml``
  read through the registry reader, so a page shows what ``textgym train`` uses);
- ``confirm-<algo>-<task>.md``: the 20-minute runs of that algorithm and env
  (``benchmarks/results/train-20m-*/run.json``), each with the ``textgym train`` command that
  repeats it (rendered by ``gen_results.train_command``, as on the results page);
- ``tuning-<study>.md``: one table per Optuna study, from its record
  ``benchmarks/results/tune/[<folder>/]<algo>-<env>.jsonl`` (one JSON line per trial), headed by
  the ``benchmarks/tune.py`` command that reproduces it. ``<study>`` is ``<algo>-<task>``
  (``grpo-sentiment``), with ``-<folder>`` for a study kept in a subfolder (``textppo-summarization-10min``).
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import json
import math
import re
from pathlib import Path
from typing import Any

from textgym.agents.runs.hyperparams import ALGOS, hyperparams, registry
from textgym.envs import ENVS

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
TUNE = RESULTS / "tune"
# tune.py's flags in the order a command gives them, from the keys of a record's "settings".
FLAGS = ("budget_minutes", "budget_tokens", "eval_prompts", "precision", "seed", "rungs", "min_distinct",
         "max_perplexity")  # fmt: skip


def tuning_labels() -> set[str]:
    """The sections of docs/tuning.md (``(grpo-sentiment)=``): an env's column links to its
    algorithm's section where one exists (an env not yet studied has none)."""
    return set(re.findall(r"^\((\S+)\)=$", (ROOT / "docs" / "tuning.md").read_text(), re.M))


def task(env_id: str) -> str:
    """``TextGen-Sentiment-v0`` -> ``sentiment``; a later version keeps its suffix
    (``TextGen-Dialogue-v1`` -> ``dialogue-v1``), so that two versions' studies and runs never
    write the same fragment."""
    _, name, version = env_id.split("-")
    return name.lower() if version == "v0" else f"{name.lower()}-{version}"


def show(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower() if value is not None else "none"
    if isinstance(value, float):
        return f"{value:g}".replace("e-0", "e-").replace("e+0", "e")
    return str(value)


def flat(entry: dict[str, Any]) -> dict[str, Any]:
    """``{"policy_kwargs": {"q_scale": 0.05}}`` -> ``{"policy_kwargs.q_scale": 0.05}`` (the CLI's keys)."""
    out = {}
    for key, value in entry.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def hyperparams_markdown(algo: str) -> str:
    """The keys ``<algo>.yml`` sets for any env, with each env's resolved value."""
    entries = registry(algo)
    envs = [env for env in ENVS if env in entries]
    resolved = {env: flat(hyperparams(algo, env)) for env in envs}
    keys = list(dict.fromkeys(key for env in envs for key in flat(entries[env])))
    labels = tuning_labels()
    head = " | ".join(
        f"`{env}` ({{ref}}`tuning <{algo}-{task(env)}>`)" if f"{algo}-{task(env)}" in labels else f"`{env}`"
        for env in envs
    )
    lines = [f"| key | {head} |", "|---" * (len(envs) + 1) + "|"]
    for key in keys:
        lines.append(f"| `{key}` | " + " | ".join(show(resolved[env].get(key)) for env in envs) + " |")
    lines.append("")
    lines.append(
        f"From `agents/hyperparams/{algo}.yml`; keys it does not set keep {ALGOS[algo].__name__}'s "
        f"defaults (`textgym train --algo {algo} --help` lists every key with the value a run uses)."
    )
    for block, meaning in (("quick", "The `quick` profile (tests, `textgym leaderboard --quick`)"),
                           ("lora", "With LoRA adapters (`--lora`), the `lora` block")):  # fmt: skip
        if block in entries:
            values = ", ".join(f"`{k}={show(v)}`" for k, v in flat(entries[block]).items())
            lines += ["", f"{meaning} sets {values}."]
    return "\n".join(lines) + "\n"


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def tune_defaults() -> dict[str, Any]:
    """The defaults of ``benchmarks/tune.py``'s ``Args`` (read from its source: the script
    imports the whole library, and a command need not repeat them)."""
    tree = ast.parse((ROOT / "benchmarks" / "tune.py").read_text())
    [args] = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Args"]
    defaults = {}
    for node in args.body:
        if isinstance(node, ast.AnnAssign) and node.value is not None:
            with contextlib.suppress(ValueError):  # not a literal: the model's name, a default factory
                defaults[node.target.id] = ast.literal_eval(node.value)
    return defaults


def command(algo: str, env: str, trials: list[dict[str, Any]], folder: str) -> str:
    """The ``benchmarks/tune.py`` command that runs this study again, from its records' settings
    (those at the script's defaults left out)."""
    settings, defaults = trials[0].get("settings", {}), tune_defaults()
    parts = ["python benchmarks/tune.py", f"--env {env}", f"--algo {algo}", f"--trials {len(trials)}"]
    parts += [
        f"--{key.replace('_', '-')} {show(settings[key])}"
        for key in FLAGS
        if key in settings and settings[key] != defaults.get(key)
    ]
    if trials[0].get("enqueue"):
        parts.append("--enqueue " + " ".join(trials[0]["enqueue"]))
    if folder:
        parts.append(f"--out benchmarks/results/tune/{folder}")
    return " ".join(parts)


def brief(value: Any) -> str:
    """A searched value to two significant digits (TPE samples ``2.58817e-05``)."""
    return show(float(f"{value:.2g}")) if isinstance(value, float) else show(value)


def reward(metrics: dict[str, Any]) -> str:
    ci = metrics.get("reward_ci95")
    return f"{metrics['reward']:+.3f}" + ("" if ci is None or math.isnan(ci) else f" ± {ci:.3f}")


def pair(value: list[float] | None, bold: bool = True) -> str:
    """A paired difference ``[mean, half-width]``, bold when its interval excludes zero."""
    if not value:
        return "-"
    text = f"{value[0]:+.3f} ± {value[1]:.3f}"
    return f"**{text}**" if bold and abs(value[0]) > value[1] else text


def role(index: int, trial: dict[str, Any], enqueue: list[str]) -> str:
    """Which point a trial tried: the registry's (a study's first), the ``--enqueue`` hypothesis, or TPE's."""
    if index == 0:
        return "registry"
    given = dict(item.split("=", 1) for item in enqueue)
    values = {k: show(v) for k, v in trial["hyperparams"].items()}
    if given and all(values.get(k) == show(float(v)) or values.get(k) == v for k, v in given.items()):
        return "hypothesis"
    return "TPE"


def tuning_markdown(algo: str, env: str, trials: list[dict[str, Any]], folder: str) -> str:
    trials = sorted(trials, key=lambda t: t["trial"])
    base = trials[0]["untrained"]
    settings = trials[0].get("settings", {})
    dates = sorted({t["date"] for t in trials if "date" in t})
    keys = list(dict.fromkeys(k for t in trials for k in t["hyperparams"] if k != "minibatch_episodes"))
    lines = ["```console", command(algo, env, trials, folder), "```", ""]
    lines.append(
        f"Record `benchmarks/results/tune/{folder + '/' if folder else ''}{algo}-{env}.jsonl`"
        + (f", {' to '.join(dict.fromkeys([dates[0], dates[-1]]))}" if dates else "")
        + (f", {settings['precision']}" if "precision" in settings else "")
        + f". Validation reward on {base['n']} prompts; untrained {reward(base)}, distinct-2 "
        f"{base['distinct_2']:.3f}, perplexity {base['perplexity']:.1f}. A trial is feasible with "
        f"distinct-2 ≥ {show(settings.get('min_distinct', 0.7))}x and perplexity ≤ "
        f"{show(settings.get('max_perplexity', 1.5))}x the untrained model's. The paired columns are "
        "the mean per-prompt difference on the same prompts with its 95% interval (bold: it excludes zero)."
    )
    lines.append("")
    rungs = settings.get("rungs", 1)
    head = ["trial", "point", *[f"`{k}`" for k in keys], "validation reward", "- untrained (paired)",
            "- trial 0 (paired)", "distinct-2", "perplexity", "feasible"]  # fmt: skip
    if rungs > 1:
        head.insert(len(keys) + 2, "reward at each rung")
    lines += ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for index, t in enumerate(trials):
        m, paired = t["metrics"], t.get("paired") or {}
        row = [str(t["trial"]), role(index, t, t.get("enqueue", [])),
               *[brief(t["hyperparams"].get(k, "-")) for k in keys], reward(m),
               pair(paired.get("untrained")), pair(paired.get("trial0")), f"{m['distinct_2']:.3f}",
               f"{m['perplexity']:.1f}", "yes" if t["feasible"] else "**no**"]  # fmt: skip
        if rungs > 1:
            at = " / ".join(f"{r:+.3f}" for r in t.get("rungs", {}).get("rewards", []))
            row.insert(len(keys) + 2, at + (" (pruned)" if t.get("pruned") else ""))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def results_generator() -> Any:
    """docs-infra's ``gen_results.py`` beside this script: its ``train_command`` is the one
    rendering of a run's command (the results page's training table uses it too)."""
    spec = importlib.util.spec_from_file_location(
        "_docs_gen_results", Path(__file__).with_name("gen_results.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def confirm_markdown(runs: list[tuple[Path, dict[str, Any]]]) -> str:
    train_command = results_generator().train_command
    head = ("command", "tokens", "test reward before -> after", "distinct-2 after / before",
            "perplexity after / before", "KL (nats per text)", "record")  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for path, run in runs:
        summary = run["summary"]
        before, after = summary["before"], summary["after"]
        lines.append(
            f"| `{train_command(run)}` | {summary['train_tokens']:,} | {reward(before)} -> "
            f"{reward(after)} | {after['distinct_2'] / before['distinct_2']:.2f}x | "
            f"{after['perplexity'] / before['perplexity']:.2f}x | {after['kl']:.1f} | `{path.name}/` |"
        )
    lines += ["", f"On the {registry_env_prompts(runs)} test prompts; `--hyperparams` gives the values "
              "that differ from today's registry (none: the registry's values)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def registry_env_prompts(runs: list[tuple[Path, dict[str, Any]]]) -> str:
    return "/".join(sorted({str(run["summary"]["after"]["n"]) for _, run in runs}))


def confirmations() -> dict[tuple[str, str], list[tuple[Path, dict[str, Any]]]]:
    """The finished 20-minute runs, by (algo, env)."""
    found: dict[tuple[str, str], list[tuple[Path, dict[str, Any]]]] = {}
    for path in sorted(RESULTS.glob("train-20m-*/run.json")):
        run = json.loads(path.read_text())
        if run.get("status") == "finished" and "after" in run.get("summary", {}):
            found.setdefault((run["config"]["algo"], run["config"]["env"]), []).append((path.parent, run))
    return found


def studies() -> list[tuple[str, str, str, Path]]:
    """``(algo, env, folder, path)`` of every study record, the main folder's first."""
    found = []
    for path in sorted(TUNE.glob("*.jsonl")) + sorted(TUNE.glob("*/*.jsonl")):
        folder = "" if path.parent == TUNE else path.parent.name
        algo, _, env = path.stem.partition("-")
        if algo in ALGOS and env in ENVS:
            found.append((algo, env, folder, path))
    return found


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def generate(docs: Path) -> None:
    out = docs / "_generated"
    for algo in ALGOS:
        write(out / f"hyperparams-{algo}.md", hyperparams_markdown(algo))
    for algo, env, folder, path in studies():
        name = f"{algo}-{task(env)}" + (f"-{folder}" if folder else "")
        write(out / f"tuning-{name}.md", tuning_markdown(algo, env, records(path), folder))
    for (algo, env), runs in confirmations().items():
        write(out / f"confirm-{algo}-{task(env)}.md", confirm_markdown(runs))


if __name__ == "__main__":
    generate(Path(__file__).resolve().parents[1])
