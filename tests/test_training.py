"""Training runs, checkpoints and resuming (``textgym.agents.training``), with the tiny model.

No test here reads the clock to pass or fail: runs stop on token budgets (their time budget
cannot bind), and the time budget is tested with a fake clock."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

from textgym.agents import EpisodeRolloutBuffer, LMQPolicy, export_model, training
from textgym.agents.checkpoints import (
    CHECKPOINTS,
    CURRENT,
    LEGACY_ARCHIVE,
    LEGACY_STATE,
    LOCK,
    REPLAY,
    RUN_FILE,
    CheckpointError,
    RunBusyError,
    RunLock,
    load_agent,
    read_checkpoint,
    save_agent,
)
from textgym.agents.hyperparams import hyperparams
from textgym.agents.ppo import TextPPO
from textgym.agents.training import Run, TrainConfig, TrainingMonitor, parse_budget, prepare_out, train

QUIET = Console(quiet=True)
NEVER = 10_000.0  # minutes: a time budget that cannot bind before a token budget of a few batches
# Batches smaller than the quick profile's, so that each test trains in seconds.
TINY = {
    "textppo": {"batch_episodes": 4, "minibatch_episodes": 2},
    "ppo": {"n_envs": 2, "n_steps": 4, "batch_size": 4},
    "a2c": {"n_envs": 2, "n_steps": 4},
    "softq": {"batch_episodes": 4, "minibatch_episodes": 2, "gradient_steps": 2, "buffer_size": 16},
    "dqn": {"n_envs": 2, "train_freq": 4, "gradient_steps": 1, "batch_size": 4, "buffer_size": 64},
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
    ("text", "twice"), [("10m,20k,30k", "tokens"), ("5m,90s", "a time"), ("1k,2000", "tokens")]
)
def test_parse_budget_rejects_a_repeated_budget(text, twice):
    """The last of two token budgets used to win silently."""
    with pytest.raises(ValueError, match=f"bad budget '{text}': it gives {twice} twice"):
        parse_budget(text)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"env": "TextGen-Nope-v0"}, "unknown env"),
        ({"algo": "sac"}, "unknown algo"),
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
        # Well-typed values that only the algorithm's constructor rejects.
        ({"hyperparams": {"kl_estimator": "k9"}}, r"kl_estimator must be one of \('k1', 'k3'\), got 'k9'"),
        ({"hyperparams": {"reward_normalization": "x"}}, "reward_normalization must be one of"),
        ({"hyperparams": {"gamma": 1.5}}, r"gamma must be a number in \[0, 1\]"),
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
    assert (
        resolved["learning_rate"] == 3.5e-5 and resolved["batch_episodes"] == 4 and "clip_range" in resolved
    )
    head = printed.getvalue().split("evaluating")[0].replace("\n", " ")
    assert "quick profile; overridden: batch_episodes, minibatch_episodes" in head
    assert all(f"{key}={value!r}" in head for key, value in resolved.items())
    for name in ("eval-before.json", "eval-after.json", "samples.md", "curve.png", str(CURRENT), LOCK):
        assert (out / name).is_file(), name
    # One checkpoint folder, made current by the pointer; no staging or older folder left.
    checkpoint = read_checkpoint(out)
    assert checkpoint.archive == out / CHECKPOINTS / "1" / "agent.zip" and checkpoint.archive.is_file()
    assert checkpoint.state["tokens"] == run["summary"]["train_tokens"]
    assert sorted(p.name for p in (out / CHECKPOINTS).iterdir()) == ["1", "current.json"]
    assert (out / LOCK).read_text() == ""  # the lock holds a PID only while it is held
    assert any((out / "tb").rglob("events.out.tfevents*"))
    before = json.loads((out / "eval-before.json").read_text())
    assert len(before["examples"]) == 4 and "vader" in before["metrics"]
    agent = load_agent(out)
    assert isinstance(agent, TextPPO) and agent.num_timesteps == run["summary"]["train_tokens"]
    assert (agent.batch_episodes, agent.minibatch_episodes, agent.learning_rate) == (4, 2, 3.5e-5)


def test_out_dir_holding_a_run_is_never_touched(tmp_path):
    out = tmp_path / "run"
    train(tiny_config(), out, console=QUIET)
    before = snapshot(out)
    with pytest.raises(ValueError, match="already holds this run"):
        train(tiny_config(), out, console=QUIET)
    with pytest.raises(ValueError, match="holds another run"):
        train(tiny_config(env="TextGen-Dialogue-v0"), out, console=QUIET)
    with pytest.raises(ValueError, match=r"holds another run \(learning_rate=3.5e-05 \(asked 0.001\)\)"):
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
    flat = dict(learning_rate=3.5e-5, kl_coef=0.05, lora=False, batch_episodes=4, minibatch_episodes=2,
                n_envs=8, n_steps=16, batch_size=8)  # fmt: skip
    (out / RUN_FILE).write_text(json.dumps({**run, "config": {**config, **flat}}))
    before = snapshot(out)
    with pytest.raises(ValueError, match="already holds this run"):
        train(tiny_config(), out, console=QUIET)
    with pytest.raises(ValueError, match=r"holds another run \(batch_episodes=4 \(asked 8\)"):
        train(tiny_config(hyperparams={"batch_episodes": 8}), out, resume=True, console=QUIET)
    (out / RUN_FILE).write_text(json.dumps({**run, "config": {**config, **flat, "algo": "sac"}}))
    with pytest.raises(CheckpointError, match="cannot read.*unknown algo 'sac'"):
        train(tiny_config(), out, resume=True, console=QUIET)
    assert {k: v for k, v in snapshot(out).items() if k != RUN_FILE} == {
        k: v for k, v in before.items() if k != RUN_FILE
    }


def test_corrupt_checkpoint_fails_clearly_and_changes_nothing(tmp_path):
    out = tmp_path / "run"
    train(tiny_config(), out, console=QUIET)
    read_checkpoint(out).archive.write_bytes(b"PK\x03\x04 not really a zip")
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
def test_stock_algorithms_train_with_the_episode_buffer_and_the_kl_in_the_policy(tmp_path, algo):
    result = train(tiny_config(algo, budget_tokens=8), tmp_path / algo, console=QUIET)
    assert result["summary"]["train_tokens"] >= 8 and len(result["curve"]) >= 1
    agent = load_agent(tmp_path / algo)
    assert type(agent).__name__ == algo.upper()
    assert agent.n_envs == 2 and agent.n_steps == 4 and agent.ent_coef == 0.05 and agent.gamma == 1.0
    assert agent.rollout_buffer_class is EpisodeRolloutBuffer and agent.policy.net.config.kl_to_reference


def test_soft_q_checkpoints_its_replay_and_target_and_resumes_exactly(tmp_path):
    """As TextPPO's resume test, for an off-policy agent: the replay buffer (next to the
    archive), the target network (in it) and the sampler come back, so a resumed run replays
    the same texts and ends as a straight one."""
    fast = {"learning_rate": 1e-3}
    first = train(tiny_config("softq", hyperparams=fast), tmp_path / "a", console=QUIET)
    assert (read_checkpoint(tmp_path / "a").archive.parent / REPLAY).is_file()
    tokens = first["summary"]["train_tokens"]
    again = tiny_config("softq", hyperparams=fast, budget_tokens=tokens + 1)
    resumed = train(again, tmp_path / "a", resume=True, console=QUIET)
    straight = train(again, tmp_path / "b", console=QUIET)
    assert len(resumed["curve"]) == len(straight["curve"]) == 2
    for key in ("tokens", "reward", "kl"):
        assert resumed["curve"][1][key] == straight["curve"][1][key]
    assert [r["text"] for r in resumed["after"].examples] == [r["text"] for r in straight["after"].examples]
    assert type(load_agent(tmp_path / "a")).__name__ == "SoftQ"


def test_dqn_trains_with_the_lm_q_policy_and_resumes_with_its_replay(tmp_path):
    result = train(tiny_config("dqn", budget_tokens=8), tmp_path / "dqn", console=QUIET)
    assert result["summary"]["train_tokens"] >= 8 and len(result["curve"]) >= 1
    agent = load_agent(tmp_path / "dqn")
    assert type(agent).__name__ == "DQN" and isinstance(agent.policy, LMQPolicy)
    assert agent.exploration_rate == 0 and agent.replay_buffer.handle_timeout_termination is False
    assert (read_checkpoint(tmp_path / "dqn").archive.parent / REPLAY).is_file()
    assert (
        export_model(tmp_path / "dqn", tmp_path / "exported") / "config.json"
    ).is_file()  # its Q-network's LM
    resumed = train(tiny_config("dqn", budget_tokens=24), tmp_path / "dqn", resume=True, console=QUIET)
    assert resumed["summary"]["train_tokens"] >= 24


def test_monitor_reads_the_task_reward_from_the_kl_wrapper_or_from_sb3s_monitor():
    monitor = TrainingMonitor(Run(tiny_config("ppo").resolved(), Path("unused"), QUIET), FakeClock())
    monitor.init_callback(SimpleNamespace(num_timesteps=0))
    monitor.on_training_start({}, {})
    infos = [{"task_reward": 0.5, "episode": {"r": 9.0}}, {"episode": {"r": -0.25, "l": 3}}, {}, {"x": 1}]
    monitor.update_locals({"infos": infos, "dones": [True, True, True, False]})
    monitor.on_step()
    assert monitor.finished_rewards == [0.5, -0.25]


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


# --- Checkpoints written as one unit ---------------------------------------------------------


@pytest.fixture
def two_checkpoints(tmp_path):
    """A run after one batch, with the agent and state of a later checkpoint to write over it
    (its tokens and curve moved on by 7 tokens, as after another batch)."""
    out = tmp_path / "run"
    train(tiny_config(), out, console=QUIET)
    first = read_checkpoint(out).state
    agent = load_agent(out)
    agent.num_timesteps += 7
    point = {**first["curve"][-1], "tokens": agent.num_timesteps}
    second = {**first, "tokens": agent.num_timesteps, "curve": [*first["curve"], point]}
    return out, agent, [first["tokens"], second["tokens"]], second


def before_each_write(monkeypatch, hook) -> None:
    """Call ``hook(name)`` ahead of every ``os`` call that changes files or folders: the points
    that a kill can fall between (SB3 writes the archive's bytes between two of them)."""
    busy = []
    creating = os.O_WRONLY | os.O_RDWR | os.O_CREAT

    def wrap(name, original):
        def call(*args, **kwargs):
            if not busy and (name != "open" or (len(args) > 1 and args[1] & creating)):
                busy.append(name)  # the hook's own file operations are not steps
                try:
                    hook(name)
                finally:
                    busy.pop()
            return original(*args, **kwargs)

        return call

    for name in ("open", "replace", "rename", "mkdir", "rmdir", "unlink", "remove", "fsync", "chmod"):
        monkeypatch.setattr(os, name, wrap(name, getattr(os, name)))


def resumed_tokens(out: Path, tokens: list[int]) -> int:
    """What a resume of ``out`` reads, checked to be one checkpoint: the state that prepare_out
    finds and the agent's archive agree, and the curve ends at the agent's tokens."""
    checkpoint = prepare_out(tiny_config().resolved(), out, resume=True)
    state = checkpoint.state
    # The archive whole (every member's CRC, as SB3's load reads them) and at the state's tokens;
    # read without building the agent, which a dozen copies here would pay for again and again.
    with zipfile.ZipFile(checkpoint.archive) as archive:
        assert archive.testzip() is None
        archived = json.loads(archive.read("data"))["num_timesteps"]
    assert archived == state["tokens"] == state["curve"][-1]["tokens"]
    assert state["tokens"] in tokens and len(state["curve"]) == tokens.index(state["tokens"]) + 1
    return state["tokens"]


def test_a_kill_at_any_step_of_a_checkpoint_resumes_to_one_checkpoint(two_checkpoints, tmp_path):
    """What a SIGKILL before each step of a checkpoint write leaves, copied at that instant, and
    after the last step: a resume finds the old checkpoint or the new one, never a mix."""
    out, agent, tokens, second = two_checkpoints
    kills: list[Path] = []

    def kill(name: str) -> None:
        kills.append(shutil.copytree(out, tmp_path / f"kill-{len(kills)}-before-{name}"))

    with pytest.MonkeyPatch.context() as patch:
        before_each_write(patch, kill)
        save_agent(agent, out, second)
    found = [resumed_tokens(path, tokens) for path in [*kills, out]]
    assert len(kills) >= 8 and found[0] == tokens[0] and found[-1] == tokens[1]
    assert found == sorted(found)  # the new checkpoint, once current, stays current


class FailAt:
    """A hook that fails at its ``step``-th call, as a full disk would at that step."""

    def __init__(self, step: int):
        self.step, self.calls = step, 0

    def __call__(self, name: str) -> None:
        self.calls += 1
        if self.calls == self.step:
            raise OSError(28, f"No space left on device (injected before os.{name})")


def test_a_failure_at_any_step_of_a_checkpoint_keeps_one_checkpoint(two_checkpoints, tmp_path):
    """A write that fails at any step (a full disk) leaves a checkpoint that resumes to one
    state, and the next checkpoint succeeds and clears what the failed one left."""
    out, agent, tokens, second = two_checkpoints
    pristine = shutil.copytree(out, tmp_path / "pristine")
    step = 0
    while True:
        step += 1
        shutil.rmtree(out)
        shutil.copytree(pristine, out)
        fail = FailAt(step)
        with pytest.MonkeyPatch.context() as patch:
            before_each_write(patch, fail)
            try:
                save_agent(agent, out, second)
            except OSError as err:
                assert "injected" in str(err)
        if fail.calls < step:
            break  # every step has failed once
        resumed_tokens(out, tokens)
        save_agent(agent, out, second)
        assert resumed_tokens(out, tokens) == tokens[1]
        current = json.loads((out / CURRENT).read_text())["checkpoint"]
        assert sorted(p.name for p in (out / CHECKPOINTS).iterdir()) == [str(current), "current.json"]
    assert step > 8


def to_legacy_layout(out: Path) -> None:
    """Rewrite ``out``'s checkpoint as textgym wrote it before checkpoint folders."""
    checkpoint = read_checkpoint(out)
    os.replace(checkpoint.archive, out / LEGACY_ARCHIVE)
    os.replace(checkpoint.state_file, out / LEGACY_STATE)
    checkpoint.archive.parent.rmdir()
    (out / CURRENT).unlink()
    (out / LOCK).unlink()


def test_runs_in_the_old_checkpoint_layout_load_export_and_resume(tmp_path):
    from textgym.agents.export import export_model

    out = tmp_path / "run"
    tokens = train(tiny_config(), out, console=QUIET)["summary"]["train_tokens"]
    to_legacy_layout(out)
    assert read_checkpoint(out).archive == out / LEGACY_ARCHIVE
    assert load_agent(out).num_timesteps == tokens
    assert (export_model(out, tmp_path / "model") / "model.safetensors").is_file()
    # A checkpoint torn by the old two-file write (a new archive, an older state) is refused.
    state = json.loads((out / LEGACY_STATE).read_text())
    (out / LEGACY_STATE).write_text(json.dumps({**state, "tokens": tokens - 1}))
    with pytest.raises(CheckpointError, match=f"at {tokens} tokens but its state .* says {tokens - 1}"):
        train(tiny_config(budget_tokens=tokens + 1), out, resume=True, console=QUIET)
    (out / LEGACY_STATE).write_text(json.dumps(state))
    resumed = train(tiny_config(budget_tokens=tokens + 1), out, resume=True, console=QUIET)
    assert len(resumed["curve"]) == 2
    assert not (out / LEGACY_ARCHIVE).exists() and not (out / LEGACY_STATE).exists()
    assert read_checkpoint(out).state["tokens"] == resumed["summary"]["train_tokens"]


# --- One process per run directory; the status says how a run ended --------------------------

HOLDER = """import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0)
os.write(fd, str(os.getpid()).encode())
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_run_being_trained_is_refused_and_a_crashed_one_resumes(tmp_path):
    """Another process holds the run's lock: every start is refused, naming it. Once it is
    gone, run.json still says "running" (as after a SIGKILL) and a resume says so and works."""
    out = tmp_path / "run"
    tokens = train(tiny_config(), out, console=QUIET)["summary"]["train_tokens"]
    run = json.loads((out / RUN_FILE).read_text())
    (out / RUN_FILE).write_text(json.dumps({**run, "status": "running"}))
    before = snapshot(out)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out / LOCK)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        for config, resume in [(tiny_config(), True), (tiny_config(), False), (tiny_config(seed=3), True)]:
            message = f"run {out} is being trained by process {holder.pid} "
            with pytest.raises(RunBusyError, match=message):
                train(config, out, resume=resume, console=QUIET)
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert {k: v for k, v in snapshot(out).items() if k != LOCK} == {
        k: v for k, v in before.items() if k != LOCK
    }
    printed = io.StringIO()
    resumed = train(
        tiny_config(budget_tokens=tokens + 1), out, resume=True, console=Console(file=printed, width=400)
    )
    assert "the process that trained it stopped without finishing" in printed.getvalue()
    assert len(resumed["curve"]) == 2
    assert json.loads((out / RUN_FILE).read_text())["status"] == "finished"


def test_the_lock_is_one_per_run_directory_in_one_process_too(tmp_path):
    out = tmp_path / "run"
    with RunLock(out):
        assert (out / LOCK).read_text() == str(os.getpid())
        with pytest.raises(RunBusyError, match=f"being trained by process {os.getpid()}"), RunLock(out):
            pass
    with RunLock(out):  # released
        pass
    assert (out / LOCK).read_text() == ""


def fail_with(error: BaseException):
    def fail(*args, **kwargs):
        raise error

    return fail


@pytest.mark.parametrize(
    "error", [ValueError("the cached model 'tiny' is corrupt"), RuntimeError("CUDA error: out of memory")]
)
def test_a_run_that_fails_is_recorded_failed_and_releases_its_lock(tmp_path, monkeypatch, error):
    out = tmp_path / "run"
    monkeypatch.setattr(training, "evaluate", fail_with(error))
    with pytest.raises(type(error), match=str(error)):
        train(tiny_config(), out, console=QUIET)
    run = json.loads((out / RUN_FILE).read_text())
    assert run["status"] == "failed" and run["error"] == f"{type(error).__name__}: {error}"
    with RunLock(out):
        pass


def test_ctrl_c_before_the_first_checkpoint_says_so_and_records_interrupted(tmp_path, monkeypatch):
    """Ctrl-C during the first evaluation: one line that says there is no checkpoint yet."""
    out, printed = tmp_path / "run", io.StringIO()
    monkeypatch.setattr(training, "evaluate", fail_with(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(), out, console=Console(file=printed, width=80))
    assert json.loads((out / RUN_FILE).read_text())["status"] == "interrupted"
    lines = [line for line in printed.getvalue().splitlines() if "interrupted" in line]
    assert lines == [
        f"interrupted before the first checkpoint: `textgym train ... --resume --out {out}` "
        "starts the training again"
    ]
    with RunLock(out):
        pass


def test_ctrl_c_during_training_names_the_checkpoint_resume_continues_from(tmp_path, monkeypatch):
    out, printed = tmp_path / "run", io.StringIO()
    record = Run.record_batch

    def record_then_interrupt(self, agent, rewards):
        record(self, agent, rewards)
        if len(self.curve) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(Run, "record_batch", record_then_interrupt)
    config = tiny_config(budget_tokens=10_000, checkpoint_minutes=0)  # a checkpoint after each batch
    with pytest.raises(KeyboardInterrupt):
        train(config, out, console=Console(file=printed, width=80))
    assert json.loads((out / RUN_FILE).read_text())["status"] == "interrupted"
    tokens = read_checkpoint(out).state["tokens"]
    lines = [line for line in printed.getvalue().splitlines() if "interrupted" in line]
    assert lines == [
        f"interrupted: the checkpoint at {tokens} tokens in {out} is intact; "
        f"`textgym train ... --resume --out {out}` continues from it"
    ]
    monkeypatch.undo()
    resumed = train(dataclasses.replace(config, budget_tokens=tokens + 1), out, resume=True, console=QUIET)
    assert len(resumed["curve"]) == 2 and resumed["curve"][0]["tokens"] == tokens


# --- An --out that cannot be written -----------------------------------------------------------


def test_out_under_a_file_is_one_error_and_nothing_is_written(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("mine")
    for out in (blocker / "run", blocker / "deeper" / "run"):
        with pytest.raises(ValueError, match=f"--out {out} cannot be created: {blocker} is a file"):
            train(tiny_config(), out, console=QUIET)
    assert blocker.read_text() == "mine" and list(tmp_path.iterdir()) == [blocker]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_out_in_a_read_only_folder_is_one_error_and_nothing_is_written(tmp_path):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(ValueError, match=f"--out {folder / 'run'} cannot be created: {folder} is not"):
            train(tiny_config(), folder / "run", console=QUIET)
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


def test_an_agent_saved_before_the_package_move_still_loads(tmp_path, monkeypatch):
    """Archives written when the agents were the top-level package ``agents`` (TextPPO without a
    rollout buffer, ``kl_target``/``kl_horizon``) pickled their policy class under that name:
    they used to fail with "No module named 'agents'"."""
    import base64
    import pickle
    import types
    import zipfile

    import gymnasium as gym

    from textgym.agents import LMActorCriticPolicy, TokenRolloutBuffer

    agent = TextPPO("LMPolicy", gym.make("TextGen-Sentiment-v0", model="tiny"), batch_episodes=4,
                    minibatch_episodes=2, adaptive_kl_target=3.0, seed=0)  # fmt: skip
    new = tmp_path / "new.zip"
    agent.save(new)
    # The old archive: the same agent, its policy class pickled by reference to `agents.policies`.
    legacy = types.ModuleType("agents.policies")
    old_class = type("LMActorCriticPolicy", (), {"__module__": "agents.policies"})
    legacy.LMActorCriticPolicy = old_class
    monkeypatch.setitem(sys.modules, "agents", types.ModuleType("agents"))
    monkeypatch.setitem(sys.modules, "agents.policies", legacy)
    pickled = base64.b64encode(pickle.dumps(old_class)).decode()  # by reference, as cloudpickle did
    monkeypatch.delitem(sys.modules, "agents.policies")
    monkeypatch.delitem(sys.modules, "agents")
    with zipfile.ZipFile(new) as source:
        files = {name: source.read(name) for name in source.namelist()}
    data = json.loads(files["data"])
    data["policy_class"] = {":type:": "<class 'abc.ABCMeta'>", ":serialized:": pickled}
    data.update(n_steps=1, rollout_buffer_class=None, rollout_buffer_kwargs={})
    data["kl_target"], data["kl_horizon"] = data.pop("adaptive_kl_target"), data.pop("adaptive_kl_horizon")
    files["data"] = json.dumps(data).encode()
    old = tmp_path / "old.zip"
    with zipfile.ZipFile(old, "w") as target:
        for name, content in files.items():
            target.writestr(name, content)
    # SB3 alone would unpickle `agents.policies`: missing (ModuleNotFoundError) in an install,
    # another package's `agents` beside openai-agents. load_agent never unpickles it.
    loaded = load_agent(old)
    assert isinstance(loaded.policy, LMActorCriticPolicy) and isinstance(
        loaded.rollout_buffer, TokenRolloutBuffer
    )
    assert loaded.n_steps == 4 and loaded.adaptive_kl_target == 3.0
    for name, value in agent.policy.state_dict().items():
        assert (loaded.policy.state_dict()[name] == value).all()
