"""Core figures: model loading times and env stepping speed, on this machine.

    python benchmarks/core.py [--episodes 20] [--out benchmarks/results]

Measures, in one run: loading the packaged GGUF (de-quantizing) vs. the cached safetensors
copy; env overhead alone (random actions, including the terminal reward); and the default
model acting through each env with a reused KV cache. Prints a table and writes one JSON file
per run (stamped with the git commit and package versions), never overwriting earlier runs.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from common import parse_args, random_policy_steps, timed, write_record
from rich.console import Console
from rich.table import Table

import textgym
from textgym.models import DEFAULT_MODEL, load_model
from textgym.models.loading import default_model_dir, load_gguf_model
from textgym.models.sampling import LMSampler, run_episode


@dataclass
class Args:
    episodes: int = 20  # episodes per env for each stepping measurement
    load_repeats: int = 5  # cached loads timed (median reported)
    seed: int = 0
    out: str = "benchmarks/results"


def measure_loading(args: Args) -> dict[str, float]:
    default_model_dir()  # make sure the cache exists before timing cached loads
    gguf_s, _ = timed(load_gguf_model)
    cached = [timed(lambda: load_model(DEFAULT_MODEL))[0] for _ in range(args.load_repeats)]
    return {"gguf_load_s": gguf_s, "cached_load_s": statistics.median(cached)}


def measure_env(env_id: str, args: Args, model: torch.nn.Module) -> dict[str, float]:
    make_s, env = timed(lambda: gym.make(env_id))
    random_steps_per_s = random_policy_steps(env, args.episodes, args.seed)["steps_per_s"]

    sampler = LMSampler(model, env.unwrapped.action_masks(), temperature=0.7, top_k=50, seed=args.seed)
    tokens, rewards, start = 0, [], time.perf_counter()
    for episode in range(args.episodes):
        result = run_episode(env, sampler, seed=args.seed + episode)
        tokens += result["tokens_generated"]
        rewards.append(result["reward"])
    model_tokens_per_s = tokens / (time.perf_counter() - start)
    return {
        "make_s": make_s,
        "random_steps_per_s": random_steps_per_s,
        "model_tokens_per_s": model_tokens_per_s,
        "model_mean_reward": float(np.mean(rewards)),
        "model_mean_tokens": tokens / args.episodes,
    }


def main() -> None:
    args = parse_args(Args, __doc__.splitlines()[0])
    console = Console(width=120)
    torch.manual_seed(args.seed)

    loading = measure_loading(args)
    model = load_model(DEFAULT_MODEL)
    envs = {env_id: measure_env(env_id, args, model) for env_id in textgym.ENVS}

    table = Table(title=f"textgym core figures ({torch.get_num_threads()} threads, fp32, {DEFAULT_MODEL})")
    table.add_column("env", no_wrap=True)
    for column in ("make (s)", "random steps/s", "model tokens/s", "model mean reward"):
        table.add_column(column, justify="right")
    for env_id, row in envs.items():
        table.add_row(
            env_id,
            f"{row['make_s']:.2f}",
            f"{row['random_steps_per_s']:.0f}",
            f"{row['model_tokens_per_s']:.1f}",
            f"{row['model_mean_reward']:+.3f}",
        )
    console.print(table)
    console.print(
        f"default model load: GGUF {loading['gguf_load_s']:.2f} s, cached safetensors "
        f"{loading['cached_load_s']:.3f} s ({loading['gguf_load_s'] / loading['cached_load_s']:.0f}x faster)"
    )

    results = {"loading": loading, "envs": envs}
    path = write_record("core", args, results, args.out)
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
