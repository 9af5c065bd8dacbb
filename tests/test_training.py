"""Training runs, checkpoints and resuming (``textgym.agents.training``), with the tiny model.

No test here reads the clock to pass or fail: runs stop on token budgets (their time budget
cannot bind), and the time budget is tested with a fake clock."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

from textgym.agents.checkpoints import CHECKPOINT, RUN_FILE, STATE, CheckpointError, load_agent
from textgym.agents.hyperparams import hyperparams
from textgym.agents.ppo import TextPPO
from textgym.agents.training import Run, TrainConfig, TrainingMonitor, parse_budget, train

QUIET = Console(quiet=True)
NEVER = 10_000.0  # minutes: a time budget that cannot bind before a token budget of a few batches
# Batches smaller than the quick profile's, so that each test trains in seconds.
TINY = {
    "textppo": {"batch_episodes": 4, "minibatch_episodes": 2},
    "ppo": {"n_envs": 2, "n_steps": 4, "batch_size": 4},
    "a2c": {"n_envs": 2, "n_steps": 4},
}


def tiny_config(algo: str = "textppo", hyperparams: dict | None = None, **settings) -> TrainConfig:
    run = dict(
        env="TextGen-Sentiment-v0",
        model="tiny",
        budget_tokens=1,
        budget_minutes=NEVER,
        eval_prompts=4,
        eval_every_minutes=0,
        profile="quick",
    )
    return TrainConfig(algo=algo, hyperparams={**TINY[algo], **(hyperparams or {})}, **{**run, **settings})


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
    ("change", "match"),
    [
        ({"env": "TextGen-Nope-v0"}, "unknown env"),
        ({"algo": "dqn"}, "unknown algo"),
        ({"model": "no/such-model"}, "unknown model"),
        ({"budget_minutes": 0}, "budget_minutes"),
        ({"profile": "huge"}, "unknown profile 'huge'"),
        ({"hyperparams": {"batch_episodes": 0}}, "'batch_episodes' of textppo must be >= 1"),
        ({"hyperparams": {"learning_rate": float("nan")}}, "'learning_rate' of textppo takes a finite float"),
        ({"hyperparams": {"n_epochs": 1.5}}, "'n_epochs' of textppo takes an int"),
        ({"hyperparams": {"lr": 1e-3}}, "unknown hyperparameter 'lr' for textppo; accepted: learning_rate"),
        ({"hyperparams": {"n_envs": 4}}, "unknown hyperparameter 'n_envs' for textppo"),
        ({"hyperparams": {"policy_kwargs": {"temperature": 0}}}, "policy_kwargs: temperature"),
        ({"hyperparams": {"batch_episodes": 2, "minibatch_episodes": 4}}, "exceeds batch_episodes"),
    ],
)
def test_bad_config_stops_before_writing(tmp_path, change, match):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=match):
        train(dataclasses.replace(tiny_config(), **change), out, console=QUIET)
    assert not out.exists()


def test_textppo_run_leaves_a_complete_run_directory(tmp_path):
    out, printed = tmp_path / "run", io.StringIO()
    result = train(tiny_config(budget_tokens=40), out, console=Console(file=printed, width=400))
    run = json.loads((out / RUN_FILE).read_text())
    assert run["status"] == "finished" and run["config"]["algo"] == "textppo"
    assert run["summary"]["train_tokens"] >= 40 and run["summary"]["batches"] == len(result["curve"]) >= 1
    # run.json and the start of the output hold every hyperparameter, resolved.
    resolved = hyperparams("textppo", "TextGen-Sentiment-v0", "quick", TINY["textppo"])
    assert run["config"]["hyperparams"] == resolved == result["config"]["hyperparams"]
    assert resolved["learning_rate"] == 2e-5 and resolved["batch_episodes"] == 4 and "clip_range" in resolved
    head = printed.getvalue().split("evaluating")[0].replace("\n", " ")
    assert "quick profile; overridden: batch_episodes, minibatch_episodes" in head
    assert all(f"{key}={value!r}" in head for key, value in resolved.items())
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
    assert (agent.batch_episodes, agent.minibatch_episodes, agent.learning_rate) == (4, 2, 2e-5)


def test_out_dir_holding_a_run_is_never_touched(tmp_path):
    out = tmp_path / "run"
    train(tiny_config(), out, console=QUIET)
    before = snapshot(out)
    with pytest.raises(ValueError, match="already holds this run"):
        train(tiny_config(), out, console=QUIET)
    with pytest.raises(ValueError, match="holds another run"):
        train(tiny_config(env="TextGen-Dialogue-v0"), out, console=QUIET)
    with pytest.raises(ValueError, match=r"holds another run \(learning_rate=2e-05 \(asked 0.001\)\)"):
        train(tiny_config(hyperparams={"learning_rate": 1e-3}), out, resume=True, console=QUIET)
    with pytest.raises(ValueError, match="unknown hyperparameter 'gama'"):
        train(tiny_config(hyperparams={"gama": 0.9}), out, resume=True, console=QUIET)
    assert snapshot(out) == before

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        train(tiny_config(), tmp_path / "other", console=QUIET)
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train(tiny_config(), tmp_path / "absent", resume=True, console=QUIET)


def test_run_json_from_before_the_registry_is_recognised(tmp_path):
    """A run.json with the flat config of earlier versions (learning_rate, kl_coef, lora, ...)
    is the same run as today's config with those values."""
    out = tmp_path / "run"
    train(tiny_config(), out, console=QUIET)
    run = json.loads((out / RUN_FILE).read_text())
    config = {k: v for k, v in run["config"].items() if k not in ("hyperparams", "profile")}
    flat = dict(learning_rate=2e-5, kl_coef=0.05, lora=False, batch_episodes=4, minibatch_episodes=2,
                n_envs=8, n_steps=16, batch_size=8)  # fmt: skip
    (out / RUN_FILE).write_text(json.dumps({**run, "config": {**config, **flat}}))
    before = snapshot(out)
    with pytest.raises(ValueError, match="already holds this run"):
        train(tiny_config(), out, console=QUIET)
    with pytest.raises(ValueError, match=r"holds another run \(batch_episodes=4 \(asked 8\)"):
        train(tiny_config(hyperparams={"batch_episodes": 8}), out, resume=True, console=QUIET)
    (out / RUN_FILE).write_text(json.dumps({**run, "config": {**config, **flat, "algo": "dqn"}}))
    with pytest.raises(CheckpointError, match="cannot read.*unknown algo 'dqn'"):
        train(tiny_config(), out, resume=True, console=QUIET)
    assert {k: v for k, v in snapshot(out).items() if k != RUN_FILE} == {
        k: v for k, v in before.items() if k != RUN_FILE
    }


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
    fast = {"learning_rate": 1e-3}
    first = train(tiny_config(hyperparams=fast), tmp_path / "a", console=QUIET)
    tokens = first["summary"]["train_tokens"]
    resumed = train(
        tiny_config(hyperparams=fast, budget_tokens=tokens + 1), tmp_path / "a", resume=True, console=QUIET
    )
    straight = train(tiny_config(hyperparams=fast, budget_tokens=tokens + 1), tmp_path / "b", console=QUIET)
    assert len(resumed["curve"]) == len(straight["curve"]) == 2
    assert resumed["curve"][1]["reward"] == straight["curve"][1]["reward"]
    assert [r["text"] for r in resumed["after"].examples] == [r["text"] for r in straight["after"].examples]


@pytest.mark.parametrize("algo", ["ppo", "a2c"])
def test_stock_algorithms_train_with_the_kl_wrapper(tmp_path, algo):
    result = train(tiny_config(algo, budget_tokens=8), tmp_path / algo, console=QUIET)
    assert result["summary"]["train_tokens"] >= 8 and len(result["curve"]) >= 1
    agent = load_agent(tmp_path / algo)
    assert type(agent).__name__ == algo.upper()
    assert agent.n_envs == 2 and agent.n_steps == 4 and agent.ent_coef == 0.05 and agent.gamma == 1.0


class FakeClock:
    """Seconds that pass only when a test says so."""

    def __init__(self, now: float = 0.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def simulate(budget_s: float, steps: int, step_s: float, update_s: float) -> tuple[Run, int]:
    """Drive a TrainingMonitor as SB3's learn() does, batches of ``steps`` steps of ``step_s``
    seconds then an update of ``update_s``, until it stops training; the run and the steps taken."""
    clock = FakeClock()
    config = tiny_config(budget_minutes=budget_s / 60).resolved()
    run = Run(config, Path("unused"), QUIET)
    model = SimpleNamespace(num_timesteps=0)
    monitor = TrainingMonitor(run, clock)
    monitor.init_callback(model)
    monitor.on_training_start({}, {})
    taken, going = 0, True
    while going:
        monitor.on_rollout_start()
        for _ in range(steps):
            clock.now += step_s
            model.num_timesteps += 1
            taken += 1
            if not monitor.on_step():
                going = False
                break
        else:
            monitor.on_rollout_end()
            clock.now += update_s  # the update
    monitor.on_training_end()
    return run, taken


def test_time_budget_skips_a_batch_that_would_end_past_it():
    # Batches of 5 s (4 steps of 1 s, an update of 1 s) against 12 s: two batches; the third
    # would end at 15 s, so it stops at its first step (which counts: 11 s of training).
    run, taken = simulate(budget_s=12, steps=4, step_s=1, update_s=1)
    assert [p["minutes"] * 60 for p in run.curve] == pytest.approx([5, 10])
    assert [p["tokens"] for p in run.curve] == [4, 8]
    assert taken == 9 and run.train_seconds == 11


def test_time_budget_stops_a_first_batch_that_runs_past_it():
    # No batch time is known before the first: it starts, and stops at the step past 2.5 s.
    run, taken = simulate(budget_s=2.5, steps=4, step_s=1, update_s=1)
    assert run.curve == [] and taken == 3 and run.train_seconds == 3


def test_train_measures_time_with_the_given_clock(tmp_path):
    """A clock that jumps a day after training starts: training stops at once, on time, not tokens."""
    calls = []

    def clock() -> float:
        calls.append(None)
        return 0.0 if len(calls) == 1 else 86_400.0

    result = train(
        tiny_config(budget_tokens=500, budget_minutes=60.0), tmp_path / "t", console=QUIET, clock=clock
    )
    assert result["summary"]["train_minutes"] == 86_400 / 60
    assert result["summary"]["train_tokens"] < 500 and len(result["curve"]) <= 1
