"""Whole texts sampled together, as the sequence-level algorithms collect them (TextPPO and its
named configurations, SoftQ): which prompts each batch gets and the tokens, from one seeded
:class:`TextSampler` whose state checkpoints save (SB3's ``save`` does not), and one batch
played through SB3's callback token by token (:func:`play_batch`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv

from textgym.agents.common import distributed
from textgym.agents.common.rollout import TokenBatch, play, play_turns
from textgym.envs.base import TextGenEnv
from textgym.envs.multiturn import MultiTurnEnv


def text_env(env: VecEnv, algo: str, multi_turn: bool = True) -> TextGenEnv:
    """The textgym env behind an SB3 VecEnv (the first one: the sequence-level algorithms draw
    all their episodes from it); ``algo`` names the algorithm in the error. ``multi_turn``:
    whether the algorithm plays multi-turn episodes (SoftQ replays single texts only)."""
    inner = env.get_attr("unwrapped", indices=[0])[0]
    if not isinstance(inner, TextGenEnv):
        raise TypeError(f"{algo} needs a textgym env (a TextGenEnv), got {type(inner).__name__}")
    if isinstance(inner, MultiTurnEnv) and not multi_turn:
        raise TypeError(
            f"{algo} replays single-turn texts and {type(inner).__name__} is multi-turn: train it with "
            "TextPPO, GRPO, RLOO, REINFORCE or SB3's PPO, A2C or DQN"
        )
    return inner


class TextSampler:
    """The random state of a sequence-level algorithm: ``generator`` (tokens, minibatch orders,
    replay draws) and ``episode_rng`` (which prompts each batch gets)."""

    def __init__(self, device: torch.device | str, seed: int | None):
        # With several ranks (torchrun) each rank's seed is its own, so their texts differ.
        seed = None if seed is None else distributed.rank_seed(seed)
        self.generator = torch.Generator(device=device).manual_seed(0 if seed is None else seed)
        self.episode_rng = np.random.default_rng(seed)

    def reseed(self, seed: int) -> None:
        seed = distributed.rank_seed(seed)
        self.generator.manual_seed(seed)
        self.episode_rng = np.random.default_rng(seed)

    def state(self) -> dict[str, Any]:
        """JSON-serialisable: ``generator`` (the torch generator's bytes) and ``episode_rng``
        (NumPy's bit generator state)."""
        return {
            "generator": self.generator.get_state().tolist(),
            "episode_rng": self.episode_rng.bit_generator.state,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned."""
        missing = sorted({"generator", "episode_rng"} - set(state))
        if missing:
            raise ValueError(f"a sampler state needs 'generator' and 'episode_rng', missing {missing}")
        self.generator.set_state(torch.tensor(state["generator"], dtype=torch.uint8))
        self.episode_rng.bit_generator.state = state["episode_rng"]


def sampler_of(agent: Any) -> TextSampler | None:
    """The :class:`TextSampler` of a sequence-level agent; None for SB3's own algorithms."""
    sampler = getattr(agent, "sampler", None)
    return sampler if isinstance(sampler, TextSampler) else None


@dataclass
class PlayedBatch:
    """One batch of finished texts: the episodes, their (B,) task rewards, each one's final info
    and example index, and the seconds generation and scoring took."""

    episodes: TokenBatch
    rewards: np.ndarray
    infos: list[dict[str, Any]]
    indices: np.ndarray
    seconds: float


def play_batch(
    algo: BaseAlgorithm,
    sampler: TextSampler,
    env: VecEnv,
    callback: BaseCallback,
    n_episodes: int,
    group_size: int = 1,
) -> PlayedBatch | None:
    """Generate ``n_episodes`` texts of the env's prompts together, ``group_size`` per prompt,
    with ``algo``'s policy network, counting each token as one SB3 timestep through
    ``callback`` (None if it stopped the batch); score them in one reward call, and record them
    in ``algo.last_rollout``, SB3's episode statistics and the logger's ``rollout/`` keys."""
    task = text_env(env, type(algo).__name__)
    prompts = sampler.episode_rng.integers(len(task.examples), size=n_episodes // group_size)
    examples = [task.examples[i] for i in prompts]
    indices = np.repeat(prompts, group_size)  # each episode's example

    def on_step(n_active: int) -> bool:
        for _ in range(n_active):  # one env step per token, as SB3 counts
            algo.num_timesteps += 1
            callback.update_locals(locals())
            if not callback.on_step():
                return False
        return True

    started = time.perf_counter()
    if isinstance(task, MultiTurnEnv):  # whole conversations, each turn paid on its last token
        played = play_turns(
            algo.policy.net, task, examples, sampler.generator, group_size=group_size, on_step=on_step
        )
    else:
        played = play(algo.policy.net, task, examples, sampler.generator, on_step, group_size=group_size)
    if played is None:
        return None
    episodes, rewards, infos = played
    seconds = time.perf_counter() - started
    lengths = episodes.lengths.tolist()
    now = (time.time_ns() - algo.start_time) / 1e9
    algo.ep_info_buffer.extend({"r": float(r), "l": int(n), "t": now} for r, n in zip(rewards, lengths))
    components = {
        name: float(np.mean([info["reward_components"].get(name, 0.0) for info in infos]))
        for name in infos[0]["reward_components"]
    }
    algo.last_rollout = {
        "reward": float(rewards.mean()),
        "components": components,
        "tokens_per_s": sum(lengths) / seconds,
        "seconds": seconds,
        "indices": [int(i) for i in indices],
        "prompts": [task.examples[i].prompt for i in indices],
        "texts": [info["text"] for info in infos],
        "rewards": rewards.tolist(),
        "lengths": lengths,
    }
    algo.logger.record("rollout/reward", algo.last_rollout["reward"])
    for name, value in components.items():
        algo.logger.record(f"rollout/reward_{name}", value)
    algo.logger.record("rollout/tokens_per_s", algo.last_rollout["tokens_per_s"])
    return PlayedBatch(episodes, rewards, infos, indices, seconds)
