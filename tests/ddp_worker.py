"""Run by tests/test_distributed.py under torchrun (2 gloo ranks): one TextPPO batch and update.

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/ddp_worker.py OUT DATASET

Each rank saves its initial and updated weights and its batch (episodes, rewards, advantages)
in OUT, for the test to replay the union of the batches in one process.
"""

from __future__ import annotations

import sys

import gymnasium as gym
import torch

import textgym  # noqa: F401  (registers the envs)
from textgym.agents import TextPPO
from textgym.agents.common import distributed

# SGD, so that the update is linear in the gradient and float noise stays float noise (Adam's
# first step divides each gradient by its own size).
SETTINGS = dict(
    learning_rate=1e-2, n_epochs=1, kl_coef=0.05, reward_normalization="batch", seed=0,
    policy_kwargs={"model": "tiny", "optimizer_class": torch.optim.SGD},
)  # fmt: skip
EPISODES = 4  # per rank, one minibatch


def make_agent(dataset: str, episodes: int) -> TextPPO:
    env = gym.make("TextGen-Sentiment-v0", model="tiny", dataset=dataset, max_new_tokens=3)
    agent = TextPPO(
        "LMPolicy", env, batch_episodes=episodes, minibatch_episodes=episodes, device="cpu", **SETTINGS
    )
    agent._setup_learn(total_timesteps=10**6)
    return agent


def main(out: str, dataset: str) -> None:
    distributed.setup("cpu")
    rank = distributed.rank()
    agent = make_agent(dataset, EPISODES)
    torch.save(agent.policy.state_dict(), f"{out}/before-{rank}.pt")
    agent.collect_rollouts(agent.env, agent._init_callback(None), agent.rollout_buffer, agent.n_steps)
    buffer = agent.rollout_buffer
    batch = {"episodes": buffer.episodes, "rewards": buffer.task_rewards, "advantages": buffer.advantages}
    torch.save({**batch, "tokens": agent.num_timesteps, "kl": buffer.sequence_kl}, f"{out}/batch-{rank}.pt")
    agent.train()
    torch.save(agent.policy.state_dict(), f"{out}/after-{rank}.pt")


if __name__ == "__main__":
    main(*sys.argv[1:3])
