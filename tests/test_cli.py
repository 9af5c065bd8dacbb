"""The ``textgym`` command."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from run_helpers import sigterm_fails_the_test

import textgym
from textgym.cli import main


def test_envs_lists_every_env_with_its_description(capsys):
    assert main(["envs"]) == 0
    out = capsys.readouterr().out
    for env_id, cls in textgym.ENVS.items():
        line = next(line for line in out.splitlines() if env_id in line)
        assert cls.defaults.description in line and cls.defaults.dataset in line


def test_python_dash_m_runs_the_cli():
    out = subprocess.run(
        [sys.executable, "-m", "textgym", "envs"], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert "TextGen-Summarization-v0" in out.stdout


def test_demo_prints_texts_and_rewards(capsys):
    code = main(
        ["demo", "--model", "tiny", "--env", "TextGen-Sentiment-v0", "--episodes", "2", "--seed", "3"]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert (
        "TextGen-Sentiment-v0" in out
        and "vader_positive=" in out
        and "mean reward over 2 test prompts" in out
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--model", "tiny", "--episodes", "0"], "--episodes must be >= 1"),
        (["demo", "--model", "nope/nope"], "unknown model 'nope/nope'"),
        (["demo", "--model", "tiny", "--temperature", "0"], "temperature must be > 0"),
        (["demo", "--model", "tiny", "--seed", "-1"], "--seed must be an int from 0 to 4294967295, got -1"),
        (
            ["demo", "--model", "tiny", "--seed", str(2**32 - 2), "--episodes", "3"],
            "--seed must be an int from 0 to 4294967295 (with 3 seeds, at most 4294967293), got 4294967294",
        ),
    ],
)
def test_demo_bad_arguments_give_one_clear_error(capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().out


def test_unknown_env_is_rejected_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--env", "TextGen-Poetry-v0"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'TextGen-Poetry-v0'" in capsys.readouterr().err


def test_train_help_lists_every_setting_and_hyperparameter(capsys):
    from textgym.agents.runs.config import TrainConfig
    from textgym.agents.runs.hyperparams import ALGOS, params

    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for field in TrainConfig.__dataclass_fields__:
        assert f"--{field.replace('_', '-')}" in out
    for flag in (
        "--budget",
        "--out",
        "--resume",
        "--lr",
        "--kl-coef",
        "--lora",
        "--batch-episodes",
        "--eval-every",
    ):
        assert flag in out
    for algo in ALGOS:
        block = out.split(f"\n{algo}:\n")[1].split("\n\n")[0]
        listed = {line.split()[0] for line in block.splitlines() if line.startswith("  ")}
        assert set(params(algo)) <= listed, algo


def test_leaderboard_help_lists_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["leaderboard", "--help"])
    out = capsys.readouterr().out
    for flag in ("--model", "--budget-tokens", "--budget-minutes", "--eval-prompts", "--envs", "--agents",
                 "--seeds", "--results", "--board", "--quick"):  # fmt: skip
        assert flag in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--hyperparams", "gama=0.9"], "unknown hyperparameter 'gama' for textppo; accepted: learning_rate"),
        (["--hyperparams", "n_epochs=two"], "hyperparameter 'n_epochs' of textppo takes an int, got 'two'"),
        (["--lr", "fast"], "hyperparameter 'learning_rate' of textppo takes a finite float, got 'fast'"),
        (["--lr", "1e-3", "--hyperparams", "learning_rate=1e-4"], "'learning_rate' is given twice"),
        (["--algo", "ppo", "--batch-episodes", "4"], "unknown hyperparameter 'batch_episodes' for ppo"),
        (["--budget", "10m", "--budget-tokens", "5"], "give --budget, or --budget-tokens"),
        (["--profile", "quick", "--hyperparams", "learning_rate"], "overrides take key=value"),
        (["--hyperparams", "kl_estimator=k9"], "kl_estimator must be one of ('k1', 'k3'), got 'k9'"),
        (["--hyperparams", "reward_normalization=x"], "reward_normalization must be one of"),
        (["--budget", "10m,20k,30k"], "bad budget '10m,20k,30k': it gives tokens twice"),
        (["--hyperparams", "policy_kwargs.lora={r: -1}"], "lora r (the adapters' rank) must be an int >= 1"),
        (
            ["--hyperparams", "policy_kwargs.lora={target_modules: [q_proj, qkv]}"],
            "lora target_modules ['qkv']: no module of LlamaForCausalLM has that name; its linear layers are",
        ),
        (["--seed", str(2**32)], "seed must be an int from 0 to 4294967295, got 4294967296"),
    ],
)
def test_train_bad_hyperparameters_are_one_error_before_anything_is_written(tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    argv = ["train", "--env", "TextGen-Sentiment-v0", "--model", "tiny", "--out", str(out), *extra]
    assert main(argv) == 2
    assert message in capsys.readouterr().out.replace("\n", "")
    assert not out.exists()


def test_train_out_under_a_file_is_one_error_and_nothing_is_written(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("mine")
    out = blocker / "run"
    assert main(["train", "--env", "TextGen-Sentiment-v0", "--model", "tiny", "--out", str(out)]) == 2
    printed = capsys.readouterr()
    assert f"--out {out} cannot be created: {blocker} is a file" in " ".join(printed.out.split())
    assert "Traceback" not in printed.out + printed.err
    assert blocker.read_text() == "mine" and list(tmp_path.iterdir()) == [blocker]


def test_train_ctrl_c_exits_130_with_one_line_and_no_traceback(tmp_path, capsys, monkeypatch):
    from textgym.agents.runs import training

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "evaluate", interrupt)
    out = tmp_path / "run"
    argv = ["train", "--env", "TextGen-Sentiment-v0", "--model", "tiny", "--budget", "1", "--out", str(out)]
    try:
        code = main(argv)
    except KeyboardInterrupt:
        code = "KeyboardInterrupt escaped main()"
    assert code == 130
    printed = capsys.readouterr()
    assert "Traceback" not in printed.out + printed.err
    assert [line for line in printed.out.splitlines() if "interrupted" in line] == [
        f"interrupted before the first checkpoint: `textgym train ... --resume --out {out}` "
        "starts the training again"
    ]
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"


def test_train_sigterm_exits_143_with_one_line_and_no_traceback(tmp_path, capsys, monkeypatch):
    """SIGTERM during the first evaluation, as Ctrl-C (above): one line, status "interrupted"."""
    from textgym.agents.runs import training

    monkeypatch.setattr(training, "evaluate", lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGTERM))
    out = tmp_path / "run"
    argv = ["train", "--env", "TextGen-Sentiment-v0", "--model", "tiny", "--budget", "1", "--out", str(out)]
    with sigterm_fails_the_test():
        try:
            code = main(argv)
        except KeyboardInterrupt:
            code = "KeyboardInterrupt escaped main()"
    assert code == 143
    printed = capsys.readouterr()
    assert "Traceback" not in printed.out + printed.err
    assert [line for line in printed.out.splitlines() if "interrupted" in line] == [
        f"interrupted by SIGTERM before the first checkpoint: `textgym train ... --resume --out {out}` "
        "starts the training again"
    ]
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"


def test_sigterm_stops_a_train_process_with_143_one_line_and_a_checkpoint_to_resume(tmp_path):
    """A real ``python -m textgym train``, sent SIGTERM once its first checkpoint is written (as
    a scheduler would): exit status 143, one line, status "interrupted", and --resume goes on."""
    from run_helpers import QUIET, tiny_config

    from textgym.agents.runs.training import train

    out = tmp_path / "run"
    argv = ["train", "--env", "TextGen-Sentiment-v0", "--model", "tiny", "--profile", "quick",
            "--eval-prompts", "4", "--eval-every", "0", "--checkpoint-minutes", "0", "--budget", "1000000",
            "--hyperparams", "batch_episodes=4", "minibatch_episodes=2", "--out", str(out)]  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "textgym", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        while not (out / "checkpoints" / "current.json").exists() and process.poll() is None:
            time.sleep(0.1)  # waits on the file, whatever the time (the assertions read no clock)
        assert process.poll() is None, process.communicate()
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=600)
    finally:
        process.kill()
    assert process.returncode == 143, stderr
    assert "Traceback" not in stdout + stderr
    lines = [line for line in stdout.splitlines() if "interrupted" in line]
    assert len(lines) == 1 and lines[0].startswith("interrupted by SIGTERM: the checkpoint at "), stdout
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    tokens = int(lines[0].split("checkpoint at ")[1].split()[0])
    config = tiny_config(eval_every_minutes=0, checkpoint_minutes=0, budget_tokens=tokens + 1)
    resumed = train(config, out, resume=True, console=QUIET)
    assert resumed["curve"][-2]["tokens"] == tokens and resumed["summary"]["train_tokens"] > tokens


def test_train_full_disk_is_one_message_and_exit_1(tmp_path, capsys, monkeypatch):
    from textgym import atomic

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic, "write_bytes", full)  # from the first write (run.json) on
    out = tmp_path / "run"
    argv = ["train", "--env", "TextGen-Sentiment-v0", "--model", "tiny", "--budget", "1", "--out", str(out)]
    assert main(argv) == 1
    printed = capsys.readouterr()
    assert "Traceback" not in printed.out + printed.err
    text = " ".join(printed.out.split())  # the console wraps long lines
    assert text.count("textgym: error:") == 1
    needed = r"\([\d.]+ (B|KiB) needed, [\d.]+ (B|KiB|MiB|GiB) free\)"  # run.json: about 1 KiB
    resume = f"free some space: `textgym train ... --resume --out {out}` starts again"
    assert re.search(f"no space left on device writing {re.escape(str(out / 'run.json'))} {needed}; ", text)
    assert text.endswith(resume)
    assert (out / "train.lock").read_text().startswith("failed (run.json could not be written")
