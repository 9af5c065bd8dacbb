"""The value-based family: SB3 DQN with LMQPolicy (the stock path) and SoftQ (the fast path)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import DQN
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from test_ppo import RewardLog, synthetic_bandit

from textgym.agents import LMQPolicy, SoftQ
from textgym.agents.runs.checkpoints import zip_algo
from textgym.agents.runs.hyperparams import ALGOS, constructor_kwargs, hyperparams
from textgym.agents.softq.softq import path_consistency
from textgym.models.incremental import observation_rows
from textgym.wrappers import VecKLRewardWrapper

SHORT = {"model": "tiny", "max_new_tokens": 6}


# -- targets by hand -----------------------------------------------------------------------------


def test_path_consistency_residuals_by_hand():
    # Two texts: 3 tokens and 2 tokens (then padding); reward on each last token.
    values = torch.tensor([[0.5, 0.4, 0.3], [0.2, 0.1, 9.0]])
    target = torch.tensor([[0.6, 0.7, 0.8], [0.3, 0.5, 9.0]])
    ratios = torch.tensor([[0.1, -0.2, 0.3], [0.05, 0.0, 9.0]])
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    g = 0.9
    single, multi = path_consistency(values, target, ratios, rewards, mask, g, None)
    # single: V(s_t) + l_t - r_t - g * Vbar(s_{t+1}), Vbar after the last token = 0
    expected_single = torch.tensor(
        [
            [0.5 + 0.1 - g * 0.7, 0.4 - 0.2 - g * 0.8, 0.3 + 0.3 - 1.0],
            [0.2 + 0.05 - g * 0.5, 0.1 + 0.0 + 1.0, 0.0],
        ]
    )
    torch.testing.assert_close(single, expected_single)
    # to the end: V(s_t) + sum_u g^(u-t) (l_u - r_u)
    x = [[0.1, -0.2, 0.3 - 1.0], [0.05, 1.0]]
    expected_multi = torch.tensor(
        [
            [0.5 + x[0][0] + g * x[0][1] + g * g * x[0][2], 0.4 + x[0][1] + g * x[0][2], 0.3 + x[0][2]],
            [0.2 + x[1][0] + g * x[1][1], 0.1 + x[1][1], 0.0],
        ]
    )
    torch.testing.assert_close(multi, expected_multi)
    # horizon 2: bootstrap from Vbar(s_{t+2}) where the text is still running
    _, two = path_consistency(values, target, ratios, rewards, mask, g, 2)
    expected_two = torch.tensor(
        [
            [0.5 + x[0][0] + g * x[0][1] - g * g * 0.8, 0.4 + x[0][1] + g * x[0][2], 0.3 + x[0][2]],
            [0.2 + x[1][0] + g * x[1][1], 0.1 + x[1][1], 0.0],
        ]
    )
    torch.testing.assert_close(two, expected_two)
    # horizon 1 is the single-step residual
    torch.testing.assert_close(path_consistency(values, target, ratios, rewards, mask, g, 1)[1], single)


def small_dqn(env, **kwargs):
    options = {
        "learning_starts": 0, "exploration_initial_eps": 0.0, "exploration_final_eps": 0.0,
        "batch_size": 8, "train_freq": 6, "gradient_steps": 1, "buffer_size": 200, "seed": 0,
    }  # fmt: skip
    policy_kwargs = {"model": "tiny", **kwargs.pop("policy_kwargs", {})}
    return DQN(LMQPolicy, env, **{**options, **kwargs}, policy_kwargs=policy_kwargs)


def test_lm_q_values_bellman_targets_and_double_q_by_hand():
    venv = make_vec_env("TextGen-Sentiment-v0", n_envs=2, env_kwargs={**SHORT, "render_mode": "ansi"})
    model = small_dqn(venv, policy_kwargs={"q_scale": 0.1, "double_q": True})
    policy = model.policy
    obs = venv.reset()
    tensors, _ = policy.obs_to_tensor(obs)
    net = policy.q_net.net
    with torch.no_grad():
        policy.q_net.net.value_head.bias.fill_(0.25)  # a state value, so that Q != 0.1 * log pi
        q = policy.q_net(tensors)  # (2, V)
        raw, values = net.step(observation_rows(obs), raw=True)
        logits = net.process(raw)
    log_pi = torch.log_softmax(net.kl_logits(raw).clamp(min=-1e9), dim=-1)
    torch.testing.assert_close(q, 0.1 * log_pi + values[:, None])
    # softmax(Q / q_scale) is the LM's sampling distribution; the greedy action its argmax
    torch.testing.assert_close(torch.softmax(q / 0.1, dim=-1), torch.softmax(logits, dim=-1))
    assert torch.equal(policy.q_net._predict(tensors, deterministic=True), logits.argmax(-1))
    # Double Q: the target network's row max is its own Q at the online network's greedy action
    with torch.no_grad():
        norm = policy.q_net_target.net.backbone.norm.weight  # the target's last norm, scrambled
        norm.mul_(torch.randn(norm.shape, generator=torch.Generator().manual_seed(0)))
        target_net = policy.q_net_target
        target_logits, target_values = target_net.net.step(observation_rows(obs), raw=True)
        target_q = target_net.q_values(target_logits, target_values[:, None])
        double = policy.q_net_target(tensors)
    best = q.argmax(-1)
    rows = torch.arange(2)
    torch.testing.assert_close(double.max(dim=1).values, target_q[rows, best])
    assert not torch.equal(target_q.argmax(-1), best)  # the target alone would choose differently
    # SB3's DQN target: r + (1 - done) * gamma * max_a' Q_target(s', a')
    rewards = torch.tensor([[0.5], [-1.0]])
    dones = torch.tensor([[0.0], [1.0]])
    target = rewards + (1 - dones) * model.gamma * double.max(dim=1).values[:, None]
    assert float(target[1]) == -1.0
    torch.testing.assert_close(target[0, 0], 0.5 + model.gamma * target_q[0, best[0]])


# -- learning on a task with a known optimum ------------------------------------------------------


def test_soft_q_reaches_the_optimum_of_a_synthetic_task(tmp_path):
    base = synthetic_bandit(tmp_path)  # TextPPO on the bandit: the same env and reward here
    model = SoftQ(
        "LMPolicy", base.env, learning_rate=3e-3, batch_episodes=32, minibatch_episodes=16,
        gradient_steps=8, buffer_size=128, kl_coef=0.05, seed=0, policy_kwargs={"top_k": 8},
    )  # fmt: skip
    log = RewardLog()
    model.learn(32 * 3 * 16, callback=log)
    assert np.mean(log.rewards[:2]) < 0.4
    assert np.mean(log.rewards[-2:]) > 0.8, log.rewards
    assert model.last_update["value"] > 0.3  # V learned the task's value


class EpisodeRewards(BaseCallback):
    """The rewards of the episodes that ended, in order (SB3's Monitor info)."""

    def __init__(self):
        super().__init__()
        self.rewards: list[float] = []

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            if "episode" in info:
                self.rewards.append(info["episode"]["r"])
        return True


def test_dqn_with_the_lm_q_network_reaches_the_optimum_of_a_one_token_task(tmp_path):
    """The bandit's task with one token per text: SB3's DQN regresses Q(s0, a) on the reward
    plus the KL shaping ``q_scale * log pi_ref(a)`` (VecKLRewardWrapper, as ``textgym train``
    pays it), whose optimum is the target token. (On the three-token texts, where the reward
    must be bootstrapped back two steps, DQN did not learn within a test's budget.)"""
    base = synthetic_bandit(tmp_path)
    task = base.env.envs[0].unwrapped
    dataset = base.env.get_attr("spec")[0].kwargs["dataset"]
    env_kwargs = {"model": "tiny", "dataset": dataset, "max_new_tokens": 1, "render_mode": "ansi"}
    venv = make_vec_env("TextGen-Sentiment-v0", n_envs=8, env_kwargs=env_kwargs)
    for env in venv.envs:
        env.unwrapped.reward_fn = task.reward_fn
    venv = VecKLRewardWrapper(venv, coef=0.05, model="tiny")
    model = small_dqn(
        venv, learning_rate=1e-3, batch_size=32, train_freq=1, gradient_steps=2, gamma=1.0, tau=0.5,
        target_update_interval=8, replay_buffer_kwargs={"handle_timeout_termination": False},
        policy_kwargs={"top_k": 8, "q_scale": 0.05},
    )  # fmt: skip
    log = EpisodeRewards()
    model.learn(8 * 48, callback=log)
    assert np.mean(log.rewards[:16]) < 0.4
    assert np.mean(log.rewards[-16:]) > 0.8, log.rewards


# -- save/load, registry, errors --------------------------------------------------------------------


def test_soft_q_save_load_round_trip_with_its_target_and_replay(tmp_path):
    env = gym.make("TextGen-Sentiment-v0", **SHORT)
    model = SoftQ(
        "LMPolicy", env, batch_episodes=4, minibatch_episodes=2, gradient_steps=2, buffer_size=8, seed=0
    )
    model.learn(40)
    assert model.replay_buffer.size() >= 4 and model._n_updates >= 2
    online = [p for p in model.policy.parameters() if p.requires_grad]
    assert any(not torch.equal(p, c) for p, c in zip(online, model.target.copies()))  # Polyak lags
    model.save(tmp_path / "softq.zip")
    model.save_replay_buffer(tmp_path / "replay.pkl")
    assert zip_algo(tmp_path / "softq.zip") == "softq"
    loaded = SoftQ.load(tmp_path / "softq.zip", env=env)
    loaded.load_replay_buffer(tmp_path / "replay.pkl")
    for a, b in zip(loaded.target.copies(), model.target.copies()):
        assert torch.equal(a, b)
    for a, b in zip(loaded.policy.parameters(), model.policy.parameters()):
        assert torch.equal(a, b)
    assert loaded.replay_buffer.size() == model.replay_buffer.size()
    assert loaded.kl_coef == model.kl_coef and loaded.regularization == "kl"
    loaded.learn(10, reset_num_timesteps=False)
    with pytest.raises(TypeError, match="not SoftQ's TextReplayBuffer"):
        import pickle

        (tmp_path / "other.pkl").write_bytes(pickle.dumps({"not": "a buffer"}))
        loaded.load_replay_buffer(tmp_path / "other.pkl")


def test_dqn_save_load_round_trip_keeps_the_lm_q_network(tmp_path):
    venv = make_vec_env("TextGen-Sentiment-v0", n_envs=2, env_kwargs={**SHORT, "render_mode": "ansi"})
    model = small_dqn(venv, policy_kwargs={"double_q": True, "q_scale": 0.2})
    model.learn(24)
    model.save(tmp_path / "dqn.zip")
    assert zip_algo(tmp_path / "dqn.zip") == "dqn"
    loaded = DQN.load(tmp_path / "dqn.zip", env=venv)
    assert isinstance(loaded.policy, LMQPolicy) and loaded.policy.q_scale == 0.2
    assert loaded.policy.q_net_target.online is loaded.policy.q_net  # Double Q rebuilt
    obs = venv.reset()
    assert np.array_equal(
        model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0]
    )


@pytest.mark.parametrize("algo", ["softq", "dqn"])
def test_registry_builds_the_value_agents(algo):
    values = hyperparams(algo, "TextGen-Sentiment-v0", "quick")
    if algo == "softq":
        agent = ALGOS[algo]("LMPolicy", gym.make("TextGen-Sentiment-v0", **SHORT), seed=0,
                            **constructor_kwargs(algo, values))  # fmt: skip
        assert agent.batch_episodes == values["batch_episodes"]
    else:
        venv = make_vec_env("TextGen-Sentiment-v0", n_envs=2, env_kwargs={**SHORT, "render_mode": "ansi"})
        kwargs = constructor_kwargs(algo, values)
        agent = DQN(
            LMQPolicy, venv, seed=0, **kwargs, policy_kwargs={"model": "tiny", **values["policy_kwargs"]}
        )
        assert agent.exploration_rate == 0 and agent.policy.q_scale == values["policy_kwargs"]["q_scale"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kl_coef": 0}, r"kl_coef must be a number in \(0"),
        ({"regularization": "l2"}, "regularization must be one of"),
        ({"batch_episodes": 16, "buffer_size": 8}, r"batch_episodes \(16\) exceeds buffer_size \(8\)"),
        ({"single_step_coef": 0, "multi_step_coef": 0}, "no loss to train on"),
        ({"multi_step_horizon": 0}, "multi_step_horizon must be a positive int or None"),
        ({"tau": 1.5}, r"tau must be a number in \(0, 1\]"),
        ({"gradient_steps": -1}, "gradient_steps must be a positive int"),
    ],
)
def test_bad_soft_q_arguments_are_clear_errors(kwargs, match):
    env = gym.make("TextGen-Sentiment-v0", **SHORT)
    with pytest.raises(ValueError, match=match):
        SoftQ("LMPolicy", env, **{"batch_episodes": 4, "minibatch_episodes": 2, "buffer_size": 8, **kwargs})


@pytest.mark.parametrize(
    ("policy_kwargs", "error", "match"),
    [
        ({"q_scale": 0}, ValueError, "q_scale must be a positive number"),
        ({"double_q": "yes"}, TypeError, "double_q must be True or False"),
        ({"ortho": True}, TypeError, "unknown LM policy argument"),
    ],
)
def test_bad_lm_q_policy_arguments_are_clear_errors(policy_kwargs, error, match):
    venv = make_vec_env("TextGen-Sentiment-v0", n_envs=1, env_kwargs={**SHORT, "render_mode": "ansi"})
    with pytest.raises(error, match=match):
        small_dqn(venv, policy_kwargs=policy_kwargs)
