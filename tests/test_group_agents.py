"""Group sampling and the agents built on TextPPO's machinery: GRPO, RLOO and REINFORCE."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from test_ppo import RewardLog, synthetic_bandit

from textgym.agents import GRPO, REINFORCE, RLOO, TextPPO, TokenRolloutBuffer
from textgym.agents.common.rollout import TokenBatch, generate, play, token_log_probs
from textgym.agents.runs.hyperparams import ALGOS, constructor_kwargs, hyperparams
from textgym.models import load_model
from textgym.models.incremental import IncrementalForward, hidden_states, left_pad, shared_prompt_states

SHORT = {"model": "tiny", "max_new_tokens": 6}


def grouped_rows(group_size: int = 3, new: int = 5) -> tuple[torch.Tensor, torch.Tensor, int, torch.Tensor]:
    """Two prompts of different lengths, each repeated ``group_size`` times, left-padded, then
    ``new`` random tokens per row, some rows ending early (right padding)."""
    prompts = [[5, 6, 7, 8], [9, 10]]
    ids, mask = left_pad([p for p in prompts for _ in range(group_size)], 0)
    tokens = torch.randint(11, 50, (len(ids), new), generator=torch.Generator().manual_seed(0))
    response = torch.ones_like(tokens)
    response[1, 3:] = 0
    response[4, 1:] = 0
    return torch.cat([ids, tokens], 1), torch.cat([mask, response], 1), ids.shape[1], response.bool()


def test_shared_prompt_states_equal_one_pass_over_every_row_with_their_gradients():
    backbone = load_model("tiny").get_decoder()
    ids, mask, start, select = grouped_rows()
    full = hidden_states(backbone, ids, mask).last_hidden_state[:, start - 1 : -1]
    shared = shared_prompt_states(backbone, ids, mask, start, 3)
    torch.testing.assert_close(shared[select], full[select], rtol=0, atol=1e-5)
    gradients = []
    for states in (full, shared):
        backbone.zero_grad()
        (states[select] ** 2).sum().backward()
        gradients.append([p.grad.clone() for p in backbone.parameters()])
    for one, other in zip(*gradients):  # to float rounding, relative to each gradient's scale
        assert float((other - one).abs().max()) <= 1e-3 * float(one.abs().max()) + 1e-8
    # One generated token: only the prompt pass runs.
    one = shared_prompt_states(backbone, ids[:, : start + 1], mask[:, : start + 1], start, 3)
    torch.testing.assert_close(one, full[:, :1], rtol=0, atol=1e-5)


def test_a_repeated_start_serves_every_row_of_its_group():
    backbone = load_model("tiny").get_decoder()
    ids, mask = left_pad([[5, 6, 7, 8], [9, 10]], 0)
    grouped, plain = IncrementalForward(backbone, 0), IncrementalForward(backbone, 0)
    torch.testing.assert_close(
        grouped.start(ids, mask, repeats=3),
        plain.start(ids.repeat_interleave(3, 0), mask.repeat_interleave(3, 0)),
        rtol=0,
        atol=1e-5,
    )
    new = torch.arange(11, 17)[:, None]
    torch.testing.assert_close(grouped.extend(new), plain.extend(new), rtol=0, atol=1e-5)


def test_grouped_generation_shares_prompts_and_agrees_with_the_one_pass_scores():
    env = gym.make("TextGen-Sentiment-v0", model="tiny", max_new_tokens=8)
    model = TextPPO("LMPolicy", env, batch_episodes=6, minibatch_episodes=6, seed=0)
    net, task = model.policy.net, env.unwrapped
    prompts = [task.encode_prompt(task.examples[i])[0] for i in (0, 3)]
    batch = generate(net, prompts, 8, task.eos_token_ids, torch.Generator().manual_seed(0), group_size=3)
    assert batch.group_size == 3 and len(batch.ids) == 6
    for group in range(2):
        rows = batch.ids[3 * group : 3 * group + 3, : batch.start]
        assert (rows == rows[0]).all()  # the group's prompt
    assert len({tuple(row) for row in batch.tokens.tolist()}) > 2  # its texts are sampled apart
    select = batch.response_mask
    with torch.no_grad():
        for group_size in (3, 1):  # one prompt pass per group, or one per row: the same scores
            raw, values = net.sequence(batch.ids, batch.mask, batch.start, select, group_size)
            log_probs = token_log_probs(net.process(raw), batch.tokens[select])
            torch.testing.assert_close(log_probs, batch.log_probs[select], rtol=0, atol=1e-4)
            torch.testing.assert_close(values[select], batch.values[select], rtol=0, atol=1e-5)
    played = play(net, task, task.examples[:2], torch.Generator().manual_seed(0), group_size=3)
    assert played is not None
    _, rewards, infos = played
    assert rewards.shape == (6,) and len(infos) == 6


def group_batch() -> TokenBatch:
    """Four episodes in two groups of two: lengths 2, 1, 2, 2 after a 1-column prompt."""
    response_mask = torch.tensor([[True, True], [True, False], [True, True], [True, True]])
    tokens = torch.tensor([[5, 6], [5, 0], [7, 8], [8, 7]])
    return TokenBatch(
        ids=torch.cat([torch.tensor([[3], [3], [4], [4]]), tokens], dim=1),
        mask=torch.cat([torch.ones(4, 1, dtype=torch.long), response_mask.long()], dim=1),
        start=1,
        response_mask=response_mask,
        log_probs=-torch.ones(4, 2) * response_mask,
        kl_log_probs=-torch.ones(4, 2) * response_mask,
        values=torch.full((4, 2), 0.25) * response_mask,
        group_size=2,
    )


def group_buffer(**kwargs) -> TokenRolloutBuffer:
    observations = spaces.Dict(
        {"input_ids": spaces.Box(0, 9, (3,), np.int64), "attention_mask": spaces.Box(0, 1, (3,), np.int8)}
    )
    kwargs = {"gamma": 1.0, "gae_lambda": 1.0, "normalize_advantage": False, "group_size": 2, **kwargs}
    return TokenRolloutBuffer(4, observations, spaces.Discrete(10), device="cpu", **kwargs)


def advantages_of(rewards, kl_coef=0.0, **kwargs) -> torch.Tensor:
    buffer = group_buffer(**kwargs)
    buffer.add(group_batch(), np.array(rewards, dtype=np.float32))

    def reference(part: TokenBatch) -> torch.Tensor:  # KL 0.5 per emitted token (k1)
        return part.kl_log_probs[part.response_mask] - 0.5

    buffer.compute_returns_and_advantage(kl_coef, reference if kl_coef else None)
    return buffer.advantages


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        # Group mean: texts 1, 3 in group (1, 3); 0, 2 in group (0, 2). Every token of a text
        # gets its reward minus the group's mean (no critic: returns to go, no value).
        ({"group_baseline": "mean"}, [[-1, -1], [1, 0], [-1, -1], [1, 1]]),
        # Leave one out: minus the other text's reward.
        ({"group_baseline": "leave_one_out"}, [[-2, -2], [2, 0], [-2, -2], [2, 2]]),
        # GRPO: and divided by the group's std (sqrt 2 for both groups), plus 1e-4.
        (
            {"group_baseline": "mean", "scale_group_std": True},
            [
                [-1 / (2**0.5 + 1e-4)] * 2,
                [1 / (2**0.5 + 1e-4), 0],
                [-1 / (2**0.5 + 1e-4)] * 2,
                [1 / (2**0.5 + 1e-4)] * 2,
            ],
        ),  # fmt: skip
        # No baseline: the plain return (REINFORCE without a critic).
        ({}, [[1, 1], [3, 0], [0, 0], [2, 2]]),
    ],
)
def test_group_advantages_by_hand(kwargs, expected):
    advantages = advantages_of([1.0, 3.0, 0.0, 2.0], use_critic=False, **kwargs)
    torch.testing.assert_close(advantages, torch.tensor(expected, dtype=torch.float32), atol=1e-5, rtol=0)


def test_group_baselines_with_a_kl_penalty_and_with_a_critic():
    # KL 0.5 per token at kl_coef 0.2: -0.1 per token. Reward sums: 0.8, 2.9 | -0.2, 1.8.
    # Leave one out: baselines 2.9, 0.8 | 1.8, -0.2 come off each text's last reward, and each
    # token's advantage is its return to go.
    advantages = advantages_of(
        [1.0, 3.0, 0.0, 2.0], kl_coef=0.2, group_baseline="leave_one_out", use_critic=False
    )
    expected = [[0.8 - 2.9, 0.9 - 2.9], [2.9 - 0.8, 0.0], [-0.2 - 1.8, -0.1 - 1.8], [1.8 + 0.2, 1.9 + 0.2]]
    torch.testing.assert_close(advantages, torch.tensor(expected), atol=1e-5, rtol=0)
    # With the critic, GAE runs on the group-relative rewards (lambda = 1: return minus value).
    with_critic = advantages_of(
        [1.0, 3.0, 0.0, 2.0], kl_coef=0.2, group_baseline="leave_one_out", use_critic=True
    )
    torch.testing.assert_close(
        with_critic, (advantages - 0.25) * group_batch().response_mask, atol=1e-5, rtol=0
    )


def test_group_minibatches_are_whole_groups_that_share_their_prompt_pass():
    buffer = group_buffer(group_baseline="mean")
    buffer.add(group_batch(), [1.0, 3.0, 0.0, 2.0])
    buffer.compute_returns_and_advantage(0.0)
    generator, firsts = torch.Generator().manual_seed(0), set()
    for _ in range(6):
        for samples in buffer.get(2, generator):
            assert samples.episodes.group_size == 2
            prompts = samples.episodes.ids[:, : samples.episodes.start]
            assert (prompts == prompts[0]).all()  # one group
            firsts.add(int(prompts[0, -1]))
    assert firsts == {3, 4}
    # A chunk that is not whole groups falls back to one pass per row.
    assert buffer._group_size_of(torch.tensor([1, 2])) == 1
    assert buffer._group_size_of(torch.tensor([2, 3, 0, 1])) == 2


@pytest.mark.parametrize("agent", [GRPO, RLOO])
def test_group_agents_reach_the_optimum_of_a_synthetic_task(tmp_path, agent):
    base = synthetic_bandit(tmp_path)  # TextPPO on the bandit; the same env and reward here
    model = agent(
        "LMPolicy", base.env, learning_rate=3e-3, batch_episodes=32, minibatch_episodes=16, n_epochs=2,
        kl_coef=0.0, seed=0, group_size=8, policy_kwargs={"top_k": 8},
    )  # fmt: skip
    log = RewardLog()
    model.learn(32 * 3 * 12, callback=log)
    assert np.mean(log.rewards[:2]) < 0.4
    assert np.mean(log.rewards[-2:]) > 0.8, log.rewards
    assert model.last_update["value_loss"] == 0  # no critic


def test_reinforce_learns_without_clipping(tmp_path):
    base = synthetic_bandit(tmp_path)
    model = REINFORCE(
        "LMPolicy", base.env, learning_rate=3e-3, batch_episodes=32, minibatch_episodes=16,
        kl_coef=0.0, seed=0, policy_kwargs={"top_k": 8},
    )  # fmt: skip
    assert model.clip_range is None and model.gae_lambda == 1.0 and model.use_critic
    log = RewardLog()
    model.learn(32 * 3 * 24, callback=log)  # one epoch per batch: twice PPO's batches
    assert np.mean(log.rewards[:2]) < 0.4
    assert np.mean(log.rewards[-2:]) > 0.8, log.rewards
    assert model.last_update["clip_fraction"] == 0


def test_named_agents_are_textppo_configurations_with_their_own_defaults(tmp_path):
    env = gym.make("TextGen-Sentiment-v0", **SHORT)
    grpo = GRPO("LMPolicy", env, batch_episodes=8, minibatch_episodes=4, seed=0)
    assert isinstance(grpo, TextPPO) and ALGOS["grpo"] is GRPO
    assert (grpo.group_size, grpo.group_baseline, grpo.scale_group_std, grpo.use_critic) == (
        4,
        "mean",
        True,
        False,
    )
    rloo = RLOO("LMPolicy", env, batch_episodes=8, minibatch_episodes=4, group_size=2, seed=0)
    assert (rloo.group_size, rloo.group_baseline, rloo.use_critic) == (2, "leave_one_out", False)
    grpo.learn(20)
    assert len(grpo.last_rollout["prompts"]) == 8 and len(set(grpo.last_rollout["indices"][:4])) == 1
    grpo.save(tmp_path / "grpo.zip")  # the save/load contract: tests/test_contract.py
    loaded = GRPO.load(tmp_path / "grpo.zip", env=env)
    assert loaded.group_size == 4 and loaded.rollout_buffer.group_size == 4
    # The registry's keys are the constructor's, with the agent's own defaults.
    for algo in ("grpo", "rloo", "reinforce"):
        values = hyperparams(algo, "TextGen-Sentiment-v0", "quick")
        agent = ALGOS[algo]("LMPolicy", env, seed=0, **constructor_kwargs(algo, values))
        assert agent.batch_episodes == values["batch_episodes"]
    assert hyperparams("reinforce", "TextGen-Sentiment-v0")["clip_range"] is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"group_size": 3}, r"group_size \(3\) must divide the batch's episodes \(8\)"),
        ({"group_size": 0}, "group_size must be a positive int"),
        (
            {"group_size": 8, "minibatch_episodes": 4},
            r"minibatch_episodes \(4\) must be a multiple of group_size",
        ),
        ({"group_baseline": "median", "group_size": 2}, "group_baseline must be one of"),
        ({"group_baseline": "mean"}, "needs group_size >= 2"),
        ({"clip_range": 0}, "clip_range must be a number"),
    ],
)
def test_bad_group_arguments_are_clear_errors(kwargs, match):
    env = gym.make("TextGen-Sentiment-v0", **SHORT)
    with pytest.raises(ValueError, match=match):
        TextPPO("LMPolicy", env, **{"batch_episodes": 8, "minibatch_episodes": 4, **kwargs})
