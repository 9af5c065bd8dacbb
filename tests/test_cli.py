"""The ``textgym`` command."""

from __future__ import annotations

import subprocess
import sys

import pytest

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
