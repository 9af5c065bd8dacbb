"""Training runs, checkpoints and resuming (``agents.training``), with the tiny model."""

from __future__ import annotations

import dataclasses
import json

import pytest
from rich.console import Console

from agents.checkpoints import CHECKPOINT, RUN_FILE, STATE, CheckpointError, load_agent
from agents.ppo import TextPPO
from agents.training import TrainConfig, parse_budget, train

QUIET = Console(quiet=True)


def tiny_config(**overrides) -> TrainConfig:
    settings = dict(
        env="TextGen-Sentiment-v0",
        model="tiny",
        budget_tokens=1,
        budget_minutes=5.0,
        batch_episodes=4,
        minibatch_episodes=2,
        eval_prompts=4,
        eval_every_minutes=0,
        n_envs=2,
        n_steps=4,
        batch_size=4,
    )
    return TrainConfig(**{**settings, **overrides})


def snapshot(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10m", (None, 10.0)),
        ("90s", (None, 1.5)),
        ("1.5h", (None, 90.0)),
        ("20000", (20000, None)),
        ("20k", (20000, None)),
        ("5m,3k", (3000, 5.0)),
    ],
)
def test_parse_budget(text, expected):
    assert parse_budget(text) == expected


@pytest.mark.parametrize("text", ["", "5x", "m", "-3m", "0", "ten minutes"])
def test_parse_budget_rejects_bad_text(text):
    with pytest.raises(ValueError, match="budget"):
        parse_budget(text)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("env", "TextGen-Nope-v0", "unknown env"),
        ("algo", "dqn", "unknown algo"),
        ("model", "no/such-model", "unknown model"),
        ("budget_minutes", 0, "budget_minutes"),
        ("batch_episodes", 0, "batch_episodes"),
        ("learning_rate", float("nan"), "learning_rate"),
    ],
)
def test_bad_config_stops_before_writing(tmp_path, field, value, match):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=match):
        train(dataclasses.replace(tiny_config(), **{field: value}), out, console=QUIET)
    assert not out.exists()


def test_textppo_run_leaves_a_complete_run_directory(tmp_path):
    out = tmp_path / "run"
    result = train(tiny_config(budget_tokens=40), out, console=QUIET)
    run = json.loads((out / RUN_FILE).read_text())
    assert run["status"] == "finished" and run["config"]["algo"] == "textppo"
    assert run["summary"]["train_tokens"] >= 40 and run["summary"]["batches"] == len(result["curve"]) >= 1
    for name in (
        "eval-before.json",
        "eval-after.json",
        "samples.md",
        "curve.png",
        str(CHECKPOINT),
        str(STATE),
    ):
        assert (out / name).is_file(), name
    assert any((out / "tb").rglob("events.out.tfevents*"))
    before = json.loads((out / "eval-before.json").read_text())
    assert len(before["examples"]) == 4 and "vader" in before["metrics"]
    agent = load_agent(out)
    assert isinstance(agent, TextPPO) and agent.num_timesteps == run["summary"]["train_tokens"]


def test_out_dir_holding_a_run_is_never_touched(tmp_path):
    out = tmp_path / "run"
    train(tiny_config(), out, console=QUIET)
    before = snapshot(out)
    with pytest.raises(ValueError, match="already holds this run"):
        train(tiny_config(), out, console=QUIET)
    with pytest.raises(ValueError, match="holds another run"):
        train(tiny_config(env="TextGen-Dialogue-v0"), out, console=QUIET)
    assert snapshot(out) == before

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        train(tiny_config(), tmp_path / "other", console=QUIET)
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train(tiny_config(), tmp_path / "absent", resume=True, console=QUIET)


def test_corrupt_checkpoint_fails_clearly_and_changes_nothing(tmp_path):
    out = tmp_path / "run"
    train(tiny_config(), out, console=QUIET)
    (out / CHECKPOINT).write_bytes(b"PK\x03\x04 not really a zip")
    before = snapshot(out)
    with pytest.raises(CheckpointError, match="could not be resumed"):
        train(tiny_config(budget_tokens=500), out, resume=True, console=QUIET)
    with pytest.raises(CheckpointError, match="could not be loaded"):
        load_agent(out)
    assert snapshot(out) == before


def test_resuming_continues_exactly_where_the_run_stopped(tmp_path):
    """One batch, stop, resume for a second: the same texts as two batches in one go (the
    sampler's RNG state is saved with the checkpoint, so no prompt is replayed)."""
    first = train(tiny_config(learning_rate=1e-3), tmp_path / "a", console=QUIET)
    tokens = first["summary"]["train_tokens"]
    resumed = train(
        tiny_config(learning_rate=1e-3, budget_tokens=tokens + 1), tmp_path / "a", resume=True, console=QUIET
    )
    straight = train(tiny_config(learning_rate=1e-3, budget_tokens=tokens + 1), tmp_path / "b", console=QUIET)
    assert len(resumed["curve"]) == len(straight["curve"]) == 2
    assert resumed["curve"][1]["reward"] == straight["curve"][1]["reward"]
    assert [r["text"] for r in resumed["after"].examples] == [r["text"] for r in straight["after"].examples]


@pytest.mark.parametrize("algo", ["ppo", "a2c"])
def test_stock_algorithms_train_with_the_kl_wrapper(tmp_path, algo):
    result = train(tiny_config(algo=algo, budget_tokens=8), tmp_path / algo, console=QUIET)
    assert result["summary"]["train_tokens"] >= 8 and len(result["curve"]) >= 1
    agent = load_agent(tmp_path / algo)
    assert type(agent).__name__ == algo.upper()


def test_time_budget_stops_training_near_the_budget(tmp_path):
    budget_s = 10.0
    result = train(
        tiny_config(budget_tokens=10**9, budget_minutes=budget_s / 60), tmp_path / "t", console=QUIET
    )
    minutes = [0.0] + [p["minutes"] for p in result["curve"]]
    longest_batch = max(b - a for a, b in zip(minutes, minutes[1:]))
    assert len(result["curve"]) >= 2
    assert result["summary"]["train_minutes"] * 60 <= budget_s + longest_batch * 60
    assert result["summary"]["train_tokens"] < 10**9
