"""What every benchmark script shares: arguments from a dataclass, and records that never
overwrite earlier ones, stamped with the git commit, machine and package versions."""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from textgym.agents.runs.hyperparams import constructor_kwargs, hyperparams
from textgym.agents.runs.provenance import git_commit, machine, versions
from textgym.agents.textppo.textppo import TextPPO
from textgym.cli import add_dataclass_options, dataclass_values


def parse_given(cls: type, description: str) -> dict[str, Any]:
    """The fields of the dataclass ``cls`` given as ``--field-name value`` options (the same
    options as ``textgym``'s, from one generator: ``textgym.cli.add_dataclass_options``)."""
    parser = argparse.ArgumentParser(description=description)
    add_dataclass_options(parser, cls)
    return dataclass_values(cls, parser.parse_args())


def parse_args(cls: type, description: str) -> Any:
    """An instance of the dataclass ``cls`` from ``--field-name value`` options."""
    return cls(**parse_given(cls, description))


# Taken when a script starts, so a record names the code that ran even if HEAD moves meanwhile.
STARTED_AT_COMMIT = git_commit()


def registry_textppo(
    env: gym.Env,
    env_id: str,
    seed: int,
    overrides: dict[str, Any],
    profile: str = "default",
    device: str = "auto",
    **policy: Any,
) -> TextPPO:
    """TextPPO with the registry's values for ``env_id`` (``overrides`` over them, ``policy``
    over its ``policy_kwargs``, which ``constructor_kwargs`` leaves out), set up to be stepped
    by hand (``collect_rollouts`` / ``train``) as the benchmarks do."""
    values = hyperparams("textppo", env_id, profile, overrides=overrides)
    policy_kwargs = {**values["policy_kwargs"], **policy}
    kwargs = constructor_kwargs("textppo", values)
    agent = TextPPO("LMPolicy", env, seed=seed, device=device, policy_kwargs=policy_kwargs, **kwargs)
    agent._setup_learn(total_timesteps=10**12)
    return agent


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def peak_rss_gb() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def random_policy_steps(env: gym.Env, episodes: int, seed: int) -> dict[str, float]:
    """Env overhead alone: ``episodes`` episodes (reset, then steps of random valid token ids
    through the terminal reward call) and their env steps/s.

    One untimed episode first: a task's reward model loads lazily on the first reward call
    (once per process), which is not per-step overhead.
    """
    rng = np.random.default_rng(seed)
    vocab = len(env.unwrapped.tokenizer)

    def run(episode: int) -> int:
        env.reset(seed=seed + episode)
        steps, done = 0, False
        while not done:
            # Random valid tokens; EOS is unlikely, so episodes run to the budget.
            _, _, terminated, truncated, _ = env.step(int(rng.integers(vocab)))
            steps, done = steps + 1, terminated or truncated
        return steps

    run(0)  # the untimed first episode
    seconds, steps = timed(lambda: sum(run(episode) for episode in range(episodes)))
    return {"steps": steps, "seconds": seconds, "steps_per_s": steps / seconds}


def write_record(name: str, args: Any, results: dict[str, Any], out: str) -> Path:
    """Write ``results`` as ``<out>/<name>-<time>-<commit>.json``; never overwrites a file."""
    record = {
        "benchmark": name,
        "args": dataclasses.asdict(args),
        **results,
        "git_commit": STARTED_AT_COMMIT,
        "machine": machine(),
        "versions": versions(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{record['git_commit'][:8]}.json"
    with path.open("x") as handle:  # "x": never overwrite an earlier run
        json.dump(record, handle, indent=2)
    return path
