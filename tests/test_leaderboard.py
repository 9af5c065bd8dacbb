"""The leaderboard's quick mode end to end, its resuming, and the CLI's train/eval commands."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

import textgym
from textgym.agents.board import select
from textgym.agents.hyperparams import hyperparams
from textgym.agents.records import AGENTS, LeaderboardConfig, RunSpec, read_records
from textgym.cli import main

AGENTS_DIR = Path(__file__).resolve().parent.parent / "agents"


def snapshot(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_quick_leaderboard_runs_every_env_and_agent_then_resumes(tmp_path, capsys):
    results, board = tmp_path / "results", tmp_path / "board" / "LEADERBOARD.md"
    # Trained runs stop on their 1,024 tokens: a time budget that cannot bind keeps the test
    # independent of this machine's speed.
    args = [
        "leaderboard",
        "--quick",
        "--results",
        str(results),
        "--board",
        str(board),
        "--budget-minutes",
        "1e4",
    ]
    assert main(args) == 0
    records = read_records(results / "runs.jsonl")
    assert {(r["env"], r["agent"]) for r in records} == {(e, a) for e in textgym.ENVS for a in AGENTS}
    for record in records:
        assert record["model"] == "tiny" and record["git_commit"] and record["versions"]["torch"]
        assert record["env_spec"]["id"] == record["env"] and record["env_spec"]["defaults"]["metrics"]
        assert len(record["per_example"]["reward"]) == 8 and record["peak_rss_gb"] > 0
        if record["agent"] in ("ppo", "textppo"):
            assert record["used"]["tokens"] >= 1024 and record["curve"]
            assert record["budget"] == {"tokens": 1024, "minutes": 1e4}
            assert record["hyperparams"] == hyperparams(record["agent"], record["env"], "quick")
        else:
            assert record["hyperparams"] is None
    text = board.read_text()
    for env_id in textgym.ENVS:
        assert f"## {env_id}" in text
        assert (board.parent / "leaderboard" / f"{env_id}-curve.png").is_file()
        assert (board.parent / "leaderboard" / f"{env_id}-metrics.png").is_file()
    assert "TextPPO" in text and "SB3 PPO" in text and "Not run yet" not in text
    assert "Reproduce: `textgym leaderboard --quick`" in text

    # A second run finds every result and only regenerates the board; results are appended to,
    # never rewritten.
    lines = (results / "runs.jsonl").read_text()
    capsys.readouterr()
    assert main(args) == 0
    assert "12 already in" in capsys.readouterr().out
    assert (results / "runs.jsonl").read_text() == lines


def test_quick_and_full_settings():
    quick = LeaderboardConfig(quick=True).resolved()
    assert (quick.model, quick.seeds, quick.budget_tokens, quick.budget_minutes, quick.eval_prompts) == (
        "tiny", "0", 1024, 0.5, 8,
    )  # fmt: skip
    assert (quick.results, quick.board) == (
        "leaderboard-quick",
        str(Path("leaderboard-quick/LEADERBOARD.md")),
    )
    full = LeaderboardConfig().resolved()
    assert (full.model, full.seeds, full.budget_tokens, full.budget_minutes, full.eval_prompts) == (
        "smollm2-135m-instruct", "0,1", 100_000, 5.0, 64,
    )  # fmt: skip
    assert (full.results, full.board) == ("leaderboard", str(Path("leaderboard/LEADERBOARD.md")))
    given = LeaderboardConfig(quick=True, results="r", budget_tokens=99).resolved()
    assert (given.results, given.board, given.budget_tokens, given.model) == (
        "r",
        "r/LEADERBOARD.md",
        99,
        "tiny",
    )
    for config, profile in ((quick, "quick"), (full, "default")):
        for agent in ("ppo", "textppo"):
            train = config.train_config("TextGen-Dialogue-v0", agent, 1)
            assert train.hyperparams == hyperparams(agent, "TextGen-Dialogue-v0", profile)
            assert (train.model, train.budget_tokens, train.eval_every_minutes) == (
                config.model,
                config.budget_tokens,
                0,
            )


def test_records_from_before_the_registry_keep_their_keys():
    """Keys that trained runs had before the hyperparameter registry (computed then): their
    records still count, so the published board need not be re-run."""
    before = {
        (False, "ppo", 0): "TextGen-Sentiment-v0-ppo-s0-b59ce19a75",
        (False, "textppo", 0): "TextGen-Sentiment-v0-textppo-s0-2298d65a1d",
        (True, "ppo", 0): "TextGen-Sentiment-v0-ppo-s0-d748a75d1e",
        (True, "textppo", 0): "TextGen-Sentiment-v0-textppo-s0-45d170d9cf",
        (False, "sample", 0): "TextGen-Sentiment-v0-sample-s0-87f7d74bbe",
        (True, "sample", 0): "TextGen-Sentiment-v0-sample-s0-9b79700ccd",
    }
    for (quick, agent, seed), key in before.items():
        config = LeaderboardConfig(quick=quick).resolved()
        spec = RunSpec("TextGen-Sentiment-v0", agent, seed)
        assert spec.legacy_key(config) == key and key in spec.keys(config)
        record = {"key": key, "env": spec.env, "agent": agent, "seed": seed}
        newer = {**record, "key": spec.key(config), "note": "re-run"}
        assert select([record], config) == {spec.env: {agent: [record]}}
        assert select([record, newer], config) == {spec.env: {agent: [newer]}}  # the latest counts


def test_board_keeps_only_this_configuration(tmp_path):
    config = LeaderboardConfig(quick=True, results=str(tmp_path)).resolved()
    spec = RunSpec("TextGen-Sentiment-v0", "sample", 0)
    mine = {"key": spec.key(config), "env": spec.env, "agent": "sample", "seed": 0}
    other = {**mine, "key": spec.key(LeaderboardConfig(quick=True, eval_prompts=99).resolved())}
    assert select([mine, other], config) == {spec.env: {"sample": [mine]}}


def test_torn_last_line_is_skipped(tmp_path):
    path = tmp_path / "runs.jsonl"
    path.write_text(json.dumps({"key": "a"}) + "\n" + '{"key": "b", "tru')
    assert read_records(path) == [{"key": "a"}]


def test_agents_modules_import_one_way():
    """No import cycle among textgym.agents' modules, lazy imports inside functions included:
    the board reads records, the leaderboard runs and renders, neither imports back."""
    graph: dict[str, set[str]] = {}
    for path in AGENTS_DIR.glob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                imported |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("textgym.agents."):
                imported.add(node.module.split(".")[2])
        graph[path.stem] = imported - {"__init__"}
    assert graph["board"] == {"records"} and "leaderboard" not in graph["records"]

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import cycle: {' -> '.join((*path, module))}"
        for imported in sorted(graph.get(module, ())):
            visit(imported, (*path, module))

    for module in graph:
        if module != "__init__":
            visit(module, ())


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("envs", "TextGen-Nope-v0", "unknown envs"),
        ("agents", "dqn", "unknown agents"),
        ("seeds", "a,b", "seeds"),
    ],
)
def test_bad_leaderboard_arguments(tmp_path, field, value, match, capsys):
    assert main(["leaderboard", "--quick", "--results", str(tmp_path / "r"), f"--{field}", value]) == 2
    assert match in capsys.readouterr().out
    assert not (tmp_path / "r").exists()


def test_cli_train_then_eval(tmp_path, capsys):
    out = tmp_path / "run"
    train = [
        "train",
        "--env",
        "TextGen-Sentiment-v0",
        "--model",
        "tiny",
        "--budget",
        "1000h,10",  # 10 tokens; the time cannot bind
        "--batch-episodes",
        "4",
        "--eval-prompts",
        "3",
        "--out",
        str(out),
    ]
    assert main(train) == 0
    printed = capsys.readouterr().out
    assert "untrained" in printed and "trained" in printed and "task reward" in printed
    run = json.loads((out / "run.json").read_text())["config"]
    assert (run["budget_tokens"], run["budget_minutes"], run["eval_prompts"]) == (10, 60_000.0, 3)
    assert run["hyperparams"]["batch_episodes"] == run["hyperparams"]["minibatch_episodes"] == 4
    assert run["hyperparams"]["learning_rate"] == 2e-5
    before = snapshot(out)
    assert main(train) == 2 and "already holds this run" in capsys.readouterr().out
    assert main([*train, "--resume", "--hyperparams", "gama=1"]) == 2
    assert "unknown hyperparameter 'gama'" in capsys.readouterr().out
    assert main([*train, "--resume", "--lr", "1e-3"]) == 2
    assert "learning_rate=2e-05 (asked 0.001)" in capsys.readouterr().out
    assert snapshot(out) == before
    assert main(["eval", "--checkpoint", str(out), "-n", "2"]) == 0
    printed = capsys.readouterr().out
    assert "TextGen-Sentiment-v0" in printed and "perplexity" in printed and "sample texts" in printed
    assert main(["eval", "--checkpoint", str(tmp_path / "missing"), "--env", "TextGen-Sentiment-v0"]) == 2
    assert "no checkpoint at" in capsys.readouterr().out


def test_cli_train_without_out_never_reuses_a_run_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    train = ["train", "--env", "TextGen-Sentiment-v0", "--model", "tiny", "--budget-tokens", "4",
             "--budget-minutes", "1e4", "--hyperparams", "batch_episodes=2",
             "--eval-prompts", "2"]  # fmt: skip
    assert main(train) == 0 and main(train) == 0
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert runs == ["TextGen-Sentiment-v0-textppo-seed0-1", "TextGen-Sentiment-v0-textppo-seed0-2"]
    assert main([*train, "--resume"]) == 2 and "--resume needs --out" in capsys.readouterr().out
