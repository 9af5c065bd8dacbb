"""Scoring a policy on a fixed set of prompts: the task reward and the diversity of its texts."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from agents.network import LMActorCritic
from agents.rollout import play
from textgym.envs.base import TextGenEnv
from textgym.rewards.lexical import distinct_n, repetition_rate


def sample_episodes(
    net: LMActorCritic, env: TextGenEnv, indices: list[int], *, seed: int = 0, batch_size: int = 64
) -> dict[str, Any]:
    """One sampled episode per example index of ``env`` (batched, seeded): texts, rewards and
    each reward component, in the order of ``indices``."""
    if not isinstance(env, TextGenEnv):
        raise TypeError(f"sample_episodes needs a textgym env (env.unwrapped), got {type(env).__name__}")
    generator = torch.Generator(device=net.invalid.device).manual_seed(seed)
    texts, rewards, lengths, components = [], [], [], []
    was_training = net.training
    net.eval()
    try:
        for first in range(0, len(indices), batch_size):
            examples = [env.examples[i] for i in indices[first : first + batch_size]]
            batch, batch_rewards, infos = play(net, env, examples, generator)
            rewards += batch_rewards.tolist()
            lengths += batch.lengths.tolist()
            texts += [info["text"] for info in infos]
            components += [info["reward_components"] for info in infos]
    finally:
        net.train(was_training)
    return {
        "indices": list(indices),
        "texts": texts,
        "rewards": rewards,
        "lengths": lengths,
        "components": components,
    }


def summarize(samples: dict[str, Any]) -> dict[str, float]:
    """Mean reward with a 95% confidence interval over examples, each component's mean, and the
    diversity of the texts (distinct-1/2, mean length in tokens, seq-rep-4)."""
    rewards = np.asarray(samples["rewards"], dtype=np.float64)
    half_width = 1.96 * rewards.std(ddof=1) / np.sqrt(len(rewards)) if len(rewards) > 1 else float("nan")
    summary = {
        "reward": float(rewards.mean()),
        "reward_ci95": float(half_width),
        "distinct_1": distinct_n(samples["texts"], 1),
        "distinct_2": distinct_n(samples["texts"], 2),
        "mean_length": float(np.mean(samples["lengths"])),
        "repetition": float(np.mean([repetition_rate(text) for text in samples["texts"]])),
    }
    for name in samples["components"][0] if samples["components"] else ():
        summary[f"reward/{name}"] = float(np.mean([c.get(name, 0.0) for c in samples["components"]]))
    return summary
