"""Training runs (``textgym.agents.runs.training``) with the tiny model: the run directory, resuming,
every kind of algorithm, failures and Ctrl-C, an --out that cannot be written.

No test here reads the clock to pass or fail: runs stop on token budgets (their time budget
cannot bind)."""

from __future__ import annotations

import dataclasses
import errno
import io
import json
import os
import re
import signal
from pathlib import Path

import pytest
from rich.console import Console
from run_helpers import QUIET, TINY, sigterm_fails_the_test, snapshot, tiny_config

from textgym import atomic
from textgym.agents import EpisodeRolloutBuffer, LMQPolicy, export_model
from textgym.agents.runs import rundir, training
from textgym.agents.runs.callbacks import Run
from textgym.agents.runs.checkpoints import (
    CHECKPOINTS,
    CURRENT,
    LOCK,
    REPLAY,
    RUN_FILE,
    CheckpointError,
    RunLock,
    load_agent,
    read_checkpoint,
)
from textgym.agents.runs.hyperparams import hyperparams
from textgym.agents.runs.training import train
from textgym.agents.textppo.textppo import TextPPO


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


@pytest.mark.parametrize("algo", ["ppo", "dqn", "textppo"])
def test_algorithms_train_a_multi_turn_env_and_evaluate_whole_games(tmp_path, algo):
    config = tiny_config(
        algo, budget_tokens=8, env="TextGen-GuessNumber-v0", env_kwargs={"max_new_tokens": 3}
    )
    result = train(config, tmp_path / "game", console=QUIET)
    assert result["summary"]["train_tokens"] >= 8
    for moment in ("before", "after"):
        assert set(result["summary"][moment]) >= {"reward", "success", "turns", "valid"}


def test_stock_agents_multi_turn_envs_ask_their_partners_in_one_batch():
    from textgym.agents.runs.training import training_env
    from textgym.wrappers import VecPartnerBatcher

    def wrappers(venv) -> list[type]:
        kinds = [type(venv)]
        while hasattr(venv, "venv"):  # an SB3 VecEnvWrapper
            venv = venv.venv
            kinds.append(type(venv))
        return kinds

    game = tiny_config("ppo", env="TextGen-GuessNumber-v0").validate()
    assert VecPartnerBatcher in wrappers(training_env(game))
    assert VecPartnerBatcher not in wrappers(training_env(tiny_config("ppo").validate()))  # single-turn


def test_softq_on_a_multi_turn_env_is_one_error_before_anything_is_written(tmp_path):
    with pytest.raises(
        ValueError, match="softq replays single-turn texts and TextGen-GuessNumber-v0 is multi-turn"
    ):
        train(tiny_config("softq", env="TextGen-GuessNumber-v0"), tmp_path / "run", console=QUIET)
    assert not (tmp_path / "run").exists()


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


def test_sigterm_stops_a_run_as_ctrl_c_does_and_resume_continues(tmp_path, monkeypatch):
    """SIGTERM (what Slurm, Kubernetes and systemd send) during training: the batch is abandoned,
    the status is "interrupted", one line names the intact checkpoint, and the handler that was
    there before is back once train() has returned."""
    out, printed = tmp_path / "run", io.StringIO()
    record = Run.record_batch

    def record_then_sigterm(self, agent, rewards):
        record(self, agent, rewards)
        if len(self.curve) == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(Run, "record_batch", record_then_sigterm)
    config = tiny_config(budget_tokens=10_000, checkpoint_minutes=0)  # a checkpoint after each batch
    with sigterm_fails_the_test() as guard:
        with pytest.raises(KeyboardInterrupt) as stopped:
            train(config, out, console=Console(file=printed, width=80))
        assert type(stopped.value).__name__ == "Terminated" and stopped.value.exit_code == 143
        assert signal.getsignal(signal.SIGTERM) is guard
    assert json.loads((out / RUN_FILE).read_text())["status"] == "interrupted"
    tokens = read_checkpoint(out).state["tokens"]
    lines = [line for line in printed.getvalue().splitlines() if "interrupted" in line]
    assert lines == [
        f"interrupted by SIGTERM: the checkpoint at {tokens} tokens in {out} is intact; "
        f"`textgym train ... --resume --out {out}` continues from it"
    ]
    monkeypatch.undo()
    resumed = train(dataclasses.replace(config, budget_tokens=tokens + 1), out, resume=True, console=QUIET)
    assert len(resumed["curve"]) == 2 and resumed["curve"][0]["tokens"] == tokens


@pytest.mark.parametrize("run_json_too", [False, True], ids=["run.json-written", "run.json-full-too"])
def test_a_full_disk_is_one_error_recorded_failed_and_resume_finishes(tmp_path, monkeypatch, run_json_too):
    """The disk fills up as the trained agent's evaluation is written: one DiskFullError names
    the file, the bytes it needed and the space free; the status is "failed" in run.json, or
    where run.json cannot be written either, in the lock file; nothing is lost, and --resume
    finishes the run once there is space."""
    out, printed = tmp_path / "run", io.StringIO()
    write, full = atomic.write_bytes, []

    def write_bytes(path, data):
        full.extend([True] if Path(path).name == "eval-after.json" else [])
        if full and (run_json_too or Path(path).name != RUN_FILE):
            raise OSError(errno.ENOSPC, "No space left on device")
        write(path, data)

    monkeypatch.setattr(atomic, "write_bytes", write_bytes)
    config = tiny_config()
    with pytest.raises(OSError) as failed:
        train(config, out, console=QUIET)
    message = str(failed.value)
    assert type(failed.value).__name__ == "DiskFullError" and failed.value.errno == errno.ENOSPC
    assert message.startswith(f"no space left on device writing {out / 'eval-after.json'} (")
    space = r"\.json \([\d.]+ (B|KiB) needed, [\d.]+ (B|KiB|MiB|GiB) free\); free some space: "
    assert re.search(space, message)
    tokens = read_checkpoint(out).state["tokens"]
    assert message.endswith(
        f"`textgym train ... --resume --out {out}` continues from the checkpoint at {tokens} tokens"
    )
    assert failed.value.__cause__ is None and failed.value.__suppress_context__  # one message, not a chain
    run = json.loads((out / RUN_FILE).read_text())
    if run_json_too:
        assert run["status"] == "running"
        note = (out / LOCK).read_text()
        assert note.startswith(
            f"failed ({RUN_FILE} could not be written: no space left on device writing {out}"
        )
        assert note.endswith(f"DiskFullError: {message}")
    else:
        assert run["status"] == "failed" and run["error"] == f"DiskFullError: {message}"
        assert (out / LOCK).read_text() == ""
    monkeypatch.undo()
    resumed = train(config, out, resume=True, console=Console(file=printed, width=1000))
    assert resumed["summary"]["train_tokens"] == tokens and len(resumed["curve"]) == 1
    assert json.loads((out / RUN_FILE).read_text())["status"] == "finished"
    assert (out / "eval-after.json").is_file() and (out / LOCK).read_text() == ""
    said = "stopped without finishing (it left in" if run_json_too else "stopped without finishing"
    assert (said in printed.getvalue()) == run_json_too


def test_a_run_that_stopped_before_its_first_checkpoint_starts_over(tmp_path, monkeypatch):
    """A run that failed before its first batch (a bad argument only the algorithm rejects) does
    not block the corrected command, nor the same one: with no checkpoint there is nothing to
    resume, so its files are replaced. A run with a checkpoint still needs --resume."""
    out, printed = tmp_path / "run", io.StringIO()
    monkeypatch.setattr(training, "build_agent", fail_with(ValueError("rejected by the algorithm")))
    with pytest.raises(ValueError, match="rejected by the algorithm"):
        train(tiny_config(), out, console=QUIET)
    assert json.loads((out / RUN_FILE).read_text())["status"] == "failed"
    with pytest.raises(ValueError, match="rejected by the algorithm"):  # the same command, again
        train(tiny_config(), out, console=QUIET)
    monkeypatch.undo()
    (out / "tb" / "leftover").mkdir(parents=True)
    corrected = tiny_config(hyperparams={"learning_rate": 1e-3})
    train(corrected, out, console=Console(file=printed, width=1000))
    assert f"{out} holds a run that stopped before its first checkpoint (failed): starting over" in (
        printed.getvalue()
    )
    run = json.loads((out / RUN_FILE).read_text())
    assert run["status"] == "finished" and run["config"]["hyperparams"]["learning_rate"] == 1e-3
    assert not (out / "tb" / "leftover").exists()
    with pytest.raises(ValueError, match="already holds this run"):  # finished, with a checkpoint
        train(corrected, out, console=QUIET)
    run["status"] = "failed"  # failed later: its checkpoint is resumed, never replaced
    (out / RUN_FILE).write_text(json.dumps(run))
    with pytest.raises(ValueError, match="holds another run"):
        train(tiny_config(), out, console=QUIET)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    (tmp_path / "mine" / RUN_FILE).write_text(json.dumps({**run, "status": "failed"}))
    untouched = snapshot(tmp_path / "mine")
    with pytest.raises(ValueError, match="holds another run"):  # a file of the user's: not replaced
        train(tiny_config(), tmp_path / "mine", console=QUIET)
    assert {k: v for k, v in snapshot(tmp_path / "mine").items() if k != LOCK} == untouched


@pytest.mark.parametrize(
    ("change", "asked"), [({"eval_prompts": 8}, "eval_prompts=4 (asked 8)"),
                          ({"eval_every_prompts": 4}, "eval_every_prompts=16 (asked 4)")]
)  # fmt: skip
def test_resume_keeps_the_settings_the_evaluations_compare(tmp_path, change, asked):
    """The before/after table compares the same test prompts, and the validation curve the same
    validation prompts: --resume refuses other numbers (budgets may change)."""
    out = tmp_path / "run"
    tokens = train(tiny_config(), out, console=QUIET)["summary"]["train_tokens"]
    before = snapshot(out)
    refused = re.escape(f"holds this run with other evaluation settings ({asked})")
    for resume in (True, False):
        with pytest.raises(ValueError, match=refused):
            train(tiny_config(budget_tokens=tokens + 1, **change), out, resume=resume, console=QUIET)
    assert snapshot(out) == before
    resumed = train(
        tiny_config(budget_tokens=tokens + 1, checkpoint_minutes=1), out, resume=True, console=QUIET
    )
    assert len(resumed["curve"]) == 2


def test_runs_without_out_claim_a_new_directory_each(tmp_path, monkeypatch):
    """Without --out each run claims runs/<env>-<algo>-seed<seed>-<n> by creating it, so two
    runs started together never share one; a bad config claims nothing."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="seed must be an int from 0 to 4294967295"):
        train(tiny_config(seed=2**32), console=QUIET)
    assert list(tmp_path.iterdir()) == []
    first, second = rundir.new_run_dir(tiny_config()), rundir.new_run_dir(tiny_config())
    assert [first.name, second.name] == [
        "TextGen-Sentiment-v0-textppo-seed0-1",
        "TextGen-Sentiment-v0-textppo-seed0-2",
    ]
    assert first.is_dir() and second.is_dir() and first.parent == Path("runs")
    (Path("runs") / "TextGen-Sentiment-v0-textppo-seed0-3").write_text("a file")
    result = train(tiny_config(), console=QUIET)  # -1 and -2 are claimed, -3 is a file
    assert json.loads(Path("runs/TextGen-Sentiment-v0-textppo-seed0-4/run.json").read_text())["status"] == (
        "finished"
    )
    assert result["summary"]["train_tokens"] >= 1


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
