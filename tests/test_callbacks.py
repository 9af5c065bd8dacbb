"""The training monitor (``textgym.agents.runs.callbacks``): the reward it records and the time
budget, tested with a fake clock (no test here reads the clock to pass or fail)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from run_helpers import QUIET, tiny_config

from textgym.agents.runs.callbacks import Run, TrainingMonitor
from textgym.agents.runs.training import train


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
