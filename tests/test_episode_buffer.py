"""The stock path's update in one forward pass per episode: EpisodeRolloutBuffer's minibatches of
whole episodes, prefix grouping, and evaluate_actions equal to the per-observation computation."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.buffers import DictRolloutBuffer
from stable_baselines3.common.env_util import make_vec_env

from textgym.agents import EpisodeRolloutBuffer, LMActorCriticPolicy
from textgym.agents.common.buffers import EpisodeObservations, episode_segments, pack_segments
from textgym.models.incremental import observation_rows, position_ids, prefix_groups, trim_padding

TINY = {"model": "tiny"}


def venv(n_envs: int = 3, new_tokens: int = 5, seed: int = 0):
    return make_vec_env(
        "TextGen-Sentiment-v0", n_envs=n_envs, seed=seed,
        env_kwargs={"model": "tiny", "max_new_tokens": new_tokens},
    )  # fmt: skip


def collected(algo=PPO, buffer=EpisodeRolloutBuffer, n_steps: int = 7, **kwargs):
    """An agent with one full rollout collected (7 steps of 5-token episodes: every env restarts
    within the rollout and its last episode is cut by the rollout's end)."""
    policy_kwargs = {**TINY, **kwargs.pop("policy_kwargs", {})}
    model = algo(
        LMActorCriticPolicy, venv(), n_steps=n_steps, policy_kwargs=policy_kwargs,
        rollout_buffer_class=buffer, seed=0, **kwargs,
    )  # fmt: skip
    model._setup_learn(total_timesteps=10**6)
    callback = model._init_callback(None)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=n_steps)
    return model


def per_observation(policy, obs, actions):
    """Today's computation: one row per observation, its whole context."""
    ids, mask = trim_padding(obs["input_ids"].long(), obs["attention_mask"].long())
    logits, values = policy.net.last(ids, mask)
    distribution = policy.action_dist.proba_distribution(action_logits=logits)
    return values.unsqueeze(-1), distribution.log_prob(actions), distribution.entropy()


def test_prefix_groups_put_each_row_under_a_row_it_begins():
    rng = np.random.default_rng(0)
    episodes = [rng.integers(0, 50, size=rng.integers(3, 9)) for _ in range(6)]
    episodes.append(episodes[0][:2].copy())  # a row that is another episode's prefix
    rows = [episode[:n] for episode in episodes for n in range(1, len(episode) + 1)]
    rows.append(np.array([49, 49, 49, 49, 49, 49, 49, 49, 49, 49]))  # shares no prefix
    order = rng.permutation(len(rows))
    rows = [rows[i] for i in order]
    roots, owner = prefix_groups(rows)
    for i, row in enumerate(rows):
        root = rows[roots[owner[i]]]
        assert len(root) >= len(row) and np.array_equal(root[: len(row)], row)
    # Every episode is one root (the six are distinct), the extra row another: no row is lost.
    assert len(roots) == 7
    assert set(owner.tolist()) == set(range(len(roots)))


def test_prefix_groups_keep_rows_that_only_share_a_hash_length_apart():
    rows = [np.array([1, 2, 3]), np.array([1, 2, 4]), np.array([1, 2]), np.array([2])]
    roots, owner = prefix_groups(rows)
    assert sorted(roots) == [0, 1, 3]
    assert rows[roots[owner[2]]][:2].tolist() == [1, 2]


def test_episode_segments_follow_episode_starts_and_rollout_cuts():
    starts = np.zeros((6, 2))
    starts[[0, 3], 0] = 1  # env 0: two episodes
    starts[4, 1] = 1  # env 1: a piece continuing an earlier episode, then one that starts at 4
    segments = episode_segments(starts)
    assert [s.tolist() for s in segments] == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9], [10, 11]]
    pieces = episode_segments(starts, longest=2)
    assert [s.tolist() for s in pieces] == [[0, 1], [2], [3, 4], [5], [6, 7], [8, 9], [10, 11]]
    batches = pack_segments(pieces, np.arange(len(pieces)), batch_size=3)
    assert [b.tolist() for b in batches] == [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9], [10, 11]]
    shuffled = pack_segments(pieces, np.array([0, 2, 4, 1, 3, 5, 6]), batch_size=3)
    assert [b.tolist() for b in shuffled] == [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9], [10, 11]]


def test_episode_minibatches_cover_the_rollout_once_with_one_root_per_episode():
    model = collected()
    buffer = model.rollout_buffer
    segments = episode_segments(buffer.episode_starts.copy(), longest=8)
    seen, passes = [], 0
    for batch in buffer.get(8):
        assert isinstance(batch.observations, EpisodeObservations)
        assert len(batch.actions) <= 8
        seen += batch.old_log_prob.tolist()
        passes += len(prefix_groups(observation_rows(batch.observations))[0])
    assert sorted(seen) == sorted(buffer.log_probs.flatten().tolist())  # every transition once
    # One pass per episode piece (fewer where two pieces begin with the same prompt).
    assert passes <= len(segments) < buffer.buffer_size * buffer.n_envs


@pytest.mark.parametrize("buffer", [EpisodeRolloutBuffer, DictRolloutBuffer])
@pytest.mark.parametrize("policy_kwargs", [{}, {"separate_critic": True, "temperature": 0.7, "top_k": 20}])
def test_evaluate_actions_equals_the_per_observation_computation(buffer, policy_kwargs):
    model = collected(buffer=buffer, policy_kwargs=policy_kwargs)
    policy = model.policy
    policy.set_training_mode(True)
    with torch.no_grad():  # random value head and critic: values are compared too
        policy.net.value_head.weight.normal_(0, 0.1)
    passes = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for batch in model.rollout_buffer.get(9):
            actions = batch.actions.long().flatten()
            values, log_prob, entropy = policy.evaluate_actions(batch.observations, actions)
            expected = per_observation(policy, batch.observations, actions)
            for got, want in zip((values, log_prob, entropy), expected):
                torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
            assert log_prob.requires_grad and values.requires_grad
            passes += len(prefix_groups(observation_rows(batch.observations))[0])
    transitions = model.rollout_buffer.buffer_size * model.rollout_buffer.n_envs
    if buffer is EpisodeRolloutBuffer:
        assert passes <= transitions // 2  # episodes, not observations


def test_a2c_whole_buffer_runs_one_row_per_episode():
    model = collected(algo=A2C)
    rows = observation_rows(next(model.rollout_buffer.get()).observations)
    roots, _ = prefix_groups(rows)
    starts = model.rollout_buffer.episode_starts
    assert len(roots) == len(episode_segments(starts))


def test_a2c_with_sb3s_plain_buffer_does_not_warn():
    """A2C updates on the whole rollout: its episodes are whole with any buffer (the warning
    named EpisodeRolloutBuffer for A2C though it changed nothing)."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        A2C(LMActorCriticPolicy, venv(n_envs=2), n_steps=6, policy_kwargs=TINY).learn(24)
    assert not [w for w in record if "rollout_buffer_class" in str(w.message)]


def test_plain_buffer_warns_once_naming_the_argument_and_the_episode_buffer_does_not():
    env = venv(n_envs=2)
    with pytest.warns(
        UserWarning, match="rollout_buffer_class=textgym.agents.EpisodeRolloutBuffer"
    ) as record:
        PPO(LMActorCriticPolicy, env, n_steps=6, batch_size=4, n_epochs=2, policy_kwargs=TINY).learn(12)
    assert sum("rollout_buffer_class" in str(w.message) for w in record) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = PPO(
            LMActorCriticPolicy, env, n_steps=6, batch_size=4, policy_kwargs=TINY,
            rollout_buffer_class=EpisodeRolloutBuffer,
        )  # fmt: skip
        before = [p.detach().clone() for p in model.policy.parameters()]
        model.learn(12)
    assert any(not torch.equal(a, p) for a, p in zip(before, model.policy.parameters()))


def test_maskable_ppo_with_the_maskable_episode_buffer():
    sb3_contrib = pytest.importorskip("sb3_contrib")
    from textgym.agents import MaskableEpisodeRolloutBuffer, MaskableLMActorCriticPolicy

    model = sb3_contrib.MaskablePPO(
        MaskableLMActorCriticPolicy, venv(n_envs=2), n_steps=6, batch_size=4, n_epochs=1,
        policy_kwargs=TINY, rollout_buffer_class=MaskableEpisodeRolloutBuffer, seed=0,
    )  # fmt: skip
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model.learn(12)
    assert not [w for w in record if "rollout_buffer_class" in str(w.message)]
    batch = next(model.rollout_buffer.get(4))
    assert isinstance(batch.observations, EpisodeObservations) and batch.action_masks.shape[0] <= 4
    actions = batch.actions.long().flatten()
    got = model.policy.evaluate_actions(batch.observations, actions, batch.action_masks)
    ids, mask = trim_padding(
        batch.observations["input_ids"].long(), batch.observations["attention_mask"].long()
    )
    logits, values = model.policy.net.last(ids, mask)
    distribution = model.policy._distribution(logits, batch.action_masks)
    torch.testing.assert_close(got[1], distribution.log_prob(actions), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got[0], values.unsqueeze(-1), rtol=1e-4, atol=1e-4)


def test_kl_to_reference_is_zero_at_the_start_and_the_exact_kl_after_a_change():
    from textgym.models import load_model

    model = collected(policy_kwargs={"kl_to_reference": True, "temperature": 0.8})
    policy = model.policy
    batch = next(model.rollout_buffer.get(9))
    actions = batch.actions.long().flatten()
    minus_kl = policy.evaluate_actions(batch.observations, actions)[2]
    torch.testing.assert_close(minus_kl, torch.zeros_like(minus_kl), rtol=0, atol=1e-4)  # policy == reference
    with torch.no_grad():
        policy.net.backbone.norm.weight.mul_(1.5)
    minus_kl = policy.evaluate_actions(batch.observations, actions)[2]
    ids, mask = trim_padding(
        batch.observations["input_ids"].long(), batch.observations["attention_mask"].long()
    )
    logits = policy.net.last(ids, mask)[0]  # processed: temperature and invalid ids
    reference = load_model("tiny")
    with torch.no_grad():
        raw = reference(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask)).logits[:, -1]
    log_q = torch.log_softmax(policy.net.kl_logits(raw).clamp(min=-1e9), -1)
    log_p = torch.log_softmax(logits.clamp(min=-1e9), -1)
    expected = (log_p.exp() * (log_p - log_q)).sum(-1)
    assert float(expected.min()) > 1e-3
    torch.testing.assert_close(-minus_kl, expected, rtol=1e-3, atol=1e-4)
    assert minus_kl.requires_grad  # the KL term trains the policy


def test_stock_training_pays_the_kl_in_the_policy_or_in_the_rewards():
    from textgym.agents.runs.config import TrainConfig
    from textgym.agents.runs.training import build_agent
    from textgym.wrappers import VecKLRewardWrapper

    config = TrainConfig(algo="ppo", model="tiny", profile="quick").resolved()
    assert config.hyperparams["policy_kwargs"] == {"kl_to_reference": True}
    assert config.hyperparams["ent_coef"] == config.hyperparams["kl_coef"]
    agent = build_agent(config, tensorboard=Path("/nonexistent-unused"), device="cpu")
    assert not isinstance(agent.env, VecKLRewardWrapper) and agent.policy.net.config.kl_to_reference
    assert agent.rollout_buffer_class is EpisodeRolloutBuffer
    rewards = {"policy_kwargs": {"kl_to_reference": False}}
    config = TrainConfig(algo="a2c", model="tiny", profile="quick", hyperparams=rewards).resolved()
    agent = build_agent(config, tensorboard=Path("/nonexistent-unused"), device="cpu")
    assert isinstance(agent.env, VecKLRewardWrapper) and not agent.policy.net.config.kl_to_reference
