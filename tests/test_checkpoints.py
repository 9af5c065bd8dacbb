"""Checkpoints and run directories (``textgym.agents.runs.checkpoints``): written as one unit (a
kill or a failure at any step leaves one checkpoint to resume), older layouts load, one process
per run directory."""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from rich.console import Console
from run_helpers import QUIET, snapshot, tiny_config

from textgym.agents.runs.checkpoints import (
    CHECKPOINTS,
    CURRENT,
    LEGACY_ARCHIVE,
    LEGACY_STATE,
    LOCK,
    RUN_FILE,
    CheckpointError,
    RunBusyError,
    RunLock,
    load_agent,
    read_checkpoint,
    save_agent,
)
from textgym.agents.runs.failures import DiskFullError
from textgym.agents.runs.training import prepare_out, train
from textgym.agents.textppo.textppo import TextPPO


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
            except DiskFullError as err:  # names the checkpoint or pointer, the space needed and free
                assert "injected" in str(err.__cause__)
                assert f"no space left on device writing {out / CHECKPOINTS}" in str(err)
                assert " needed, " in str(err) and " free)" in str(err)
            except OSError as err:  # before the writing began (making the checkpoints folder)
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
    from textgym.agents.runs.export import export_model

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


def test_the_lock_keeps_a_note_when_run_json_cannot_be_written(tmp_path, monkeypatch):
    """Where a full disk stops even run.json, the status goes in the lock file (its block is on
    the disk already) and stays there for the next holder; a lock that cannot be written is one
    DiskFullError naming it."""
    out = tmp_path / "run"
    with RunLock(out) as lock:
        assert lock.left == ""
        lock.note("failed (run.json could not be written): DiskFullError: no space left")
    assert (out / LOCK).read_text() == "failed (run.json could not be written): DiskFullError: no space left"
    with RunLock(out) as lock:
        assert lock.left.startswith("failed (run.json") and (out / LOCK).read_text() == str(os.getpid())
    with RunLock(out) as lock:
        assert lock.left == ""  # read once: the next holder finds nothing
    (out / LOCK).unlink()

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(DiskFullError, match=f"no space left on device writing {out / LOCK}"), RunLock(out):
        pass
    monkeypatch.undo()
    with RunLock(out):  # released
        pass
