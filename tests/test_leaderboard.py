"""The leaderboard's quick mode end to end, its resuming, and the CLI's train/eval commands."""

from __future__ import annotations

import json

import pytest

import textgym
from agents.board import select
from agents.leaderboard import AGENTS, LeaderboardConfig, RunSpec, read_records
from textgym.cli import main


def test_quick_leaderboard_runs_every_env_and_agent_then_resumes(tmp_path, capsys):
    results, board = tmp_path / "results", tmp_path / "board" / "LEADERBOARD.md"
    args = ["leaderboard", "--quick", "--results", str(results), "--board", str(board)]
    assert main(args) == 0
    records = read_records(results / "runs.jsonl")
    assert {(r["env"], r["agent"]) for r in records} == {(e, a) for e in textgym.ENVS for a in AGENTS}
    for record in records:
        assert record["model"] == "tiny" and record["git_commit"] and record["versions"]["torch"]
        assert record["env_spec"]["id"] == record["env"] and record["env_spec"]["defaults"]["metrics"]
        assert len(record["per_example"]["reward"]) == 8 and record["peak_rss_gb"] > 0
        if record["agent"] in ("ppo", "textppo"):
            assert record["used"]["tokens"] >= 1024 and record["curve"]
            assert record["budget"] == {"tokens": 1024, "minutes": 0.5}
    text = board.read_text()
    for env_id in textgym.ENVS:
        assert f"## {env_id}" in text
        assert (board.parent / "leaderboard" / f"{env_id}-curve.png").is_file()
        assert (board.parent / "leaderboard" / f"{env_id}-metrics.png").is_file()
    assert "TextPPO" in text and "SB3 PPO" in text and "Not run yet" not in text

    # A second run finds every result and only regenerates the board; results are appended to,
    # never rewritten.
    lines = (results / "runs.jsonl").read_text()
    capsys.readouterr()
    assert main(args) == 0
    assert "12 already in" in capsys.readouterr().out
    assert (results / "runs.jsonl").read_text() == lines


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
        "5m,10",
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
    assert main(train) == 2 and "already holds this run" in capsys.readouterr().out
    assert main(["eval", "--checkpoint", str(out), "-n", "2"]) == 0
    printed = capsys.readouterr().out
    assert "TextGen-Sentiment-v0" in printed and "perplexity" in printed and "sample texts" in printed
    assert main(["eval", "--checkpoint", str(tmp_path / "missing"), "--env", "TextGen-Sentiment-v0"]) == 2
    assert "no checkpoint at" in capsys.readouterr().out


def test_cli_train_without_out_never_reuses_a_run_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    train = ["train", "--env", "TextGen-Sentiment-v0", "--model", "tiny", "--budget", "5m,4",
             "--batch-episodes", "2", "--eval-prompts", "2"]  # fmt: skip
    assert main(train) == 0 and main(train) == 0
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert runs == ["TextGen-Sentiment-v0-textppo-seed0-1", "TextGen-Sentiment-v0-textppo-seed0-2"]
    assert main([*train, "--resume"]) == 2 and "--resume needs --out" in capsys.readouterr().out
