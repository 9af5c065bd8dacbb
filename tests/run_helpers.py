"""What the tests of training runs share: small configs of every algorithm, a quiet console, a
snapshot of a folder's files, a fake clock, and a guard for the tests that send SIGTERM."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator

from rich.console import Console

from textgym.agents.runs.config import TrainConfig

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


@contextlib.contextmanager
def sigterm_fails_the_test() -> Iterator[Callable]:
    """SIGTERM raises AssertionError, unless something (train()) handles it meanwhile: the tests
    that send SIGTERM to their own process fail instead of killing pytest where it is not handled.
    Yields the handler, which train() must put back."""

    def handler(signum, frame):
        raise AssertionError("SIGTERM reached the test's handler: train() did not handle it")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield handler
    finally:
        signal.signal(signal.SIGTERM, previous)
