"""Shared test set-up: an offline hub and the registered envs."""

from __future__ import annotations

import os

# Set before transformers is imported: a hub lookup fails at once instead of retrying for a
# minute on this machine, which has no route to the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

import textgym  # noqa: E402,F401  (registers the envs)
from textgym.models import precision  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def sb3_logs_in_pytest_tmp(tmp_path_factory):
    """An SB3 algorithm that learns without a logger of its own makes a folder in the system's
    temporary directory (``SB3_LOGDIR`` when set); the suite's go under pytest's temporary
    directory, which pytest prunes, instead of about 900 empty folders in /tmp per run."""
    with pytest.MonkeyPatch.context() as patch:  # the session-wide monkeypatch: undone at the end
        patch.setenv("SB3_LOGDIR", str(tmp_path_factory.mktemp("sb3-logs")))
        yield


@pytest.fixture(autouse=True)
def fp32_is_auto(monkeypatch):
    """``--precision auto`` means fp32 in the suite, whatever this machine's bf16 speed: the
    probe's answer is the one thing that would make a test depend on the CPU it runs on
    (tests/test_precision.py asks for bf16 explicitly, and tests the probe itself)."""
    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: 0.0)


@pytest.fixture
def runs_in_this_process(monkeypatch):
    """The leaderboard's runs in the test's own process instead of a spawned one apiece: each
    spawned process imports torch and transformers again (about 8 s here), and the longest tests
    would spend most of their time on that. The spawned path itself is tested where it matters
    (tests/test_leaderboard.py's killed-run tests, and the Ray board)."""
    from textgym.agents.leaderboard import runner as leaderboard

    monkeypatch.setattr(
        leaderboard, "run_isolated", lambda config, spec, out: leaderboard.run_one(config, spec, out)
    )
