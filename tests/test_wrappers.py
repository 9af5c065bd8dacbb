"""KLRewardWrapper and VecKLRewardWrapper: the reference-model log-prob term for stock-path KL
regularisation."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

from textgym.agents import LMActorCriticPolicy
from textgym.models import load_model
from textgym.models.packed import available as packed_linears_available
from textgym.wrappers import KLRewardWrapper, VecKLRewardWrapper


def make(**kwargs):
    return gym.make("TextGen-Sentiment-v0", model="tiny", max_new_tokens=5, **kwargs)


def test_reward_gains_the_reference_log_prob_of_each_action():
    env = KLRewardWrapper(make(), coef=0.5, temperature=0.9)
    reference = load_model("tiny")
    observation, _ = env.reset(seed=0)
    for step, action in enumerate([300, 301, 302, 303, 304]):
        context = observation["input_ids"][observation["attention_mask"].astype(bool)]
        with torch.no_grad():
            logits = reference(input_ids=torch.as_tensor(context)[None]).logits[0, -1]
        logits[~torch.as_tensor(env.unwrapped.action_masks())] = float("-inf")
        expected = float(torch.log_softmax(logits / 0.9, -1)[action])
        observation, reward, terminated, truncated, info = env.step(action)
        assert info["reference_log_prob"] == pytest.approx(expected, abs=1e-4)
        assert reward == pytest.approx(info["task_reward"] + 0.5 * expected, abs=1e-4)
        if step < 4:
            assert info["task_reward"] == 0 and not (terminated or truncated)
    assert truncated
    assert env.forward.hits == 4 and env.forward.misses == 1  # one prompt pass, then the cache


def test_invalid_tokens_are_floored_and_bad_actions_still_get_the_env_error():
    env = KLRewardWrapper(make(), coef=1.0, min_log_prob=-7.0)
    env.reset(seed=0)
    invalid = int(env.unwrapped.vocab_size - 1)  # a padded logits row: log p_ref = -inf
    _, _, terminated, _, info = env.step(invalid)
    assert terminated and info["reference_log_prob"] == -7.0
    env.reset(seed=0)
    with pytest.raises(ValueError, match="outside the action space"):
        env.step(10**9)


def test_ppo_trains_kl_regularised_through_the_wrapper():
    env = KLRewardWrapper(make(), coef=0.05)
    model = PPO(LMActorCriticPolicy, env, n_steps=10, batch_size=5, n_epochs=1, ent_coef=0.05,
                policy_kwargs={"model": "tiny"})  # fmt: skip
    model.learn(10)
    assert model.num_timesteps == 10


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"coef": -1}, ValueError, "coef must be a number >= 0"),
        ({"temperature": 0}, ValueError, "temperature must be > 0"),
        ({"min_log_prob": 1}, ValueError, "min_log_prob must be < 0"),
        ({"model": "no/such-model"}, ValueError, "unknown model"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        KLRewardWrapper(make(), **kwargs)


def test_step_before_reset_and_non_text_envs_are_refused():
    with pytest.raises(RuntimeError, match="before reset"):
        KLRewardWrapper(make()).step(1)
    with pytest.raises(TypeError, match="needs a textgym env"):
        KLRewardWrapper(gym.make("CartPole-v1"))


def make_vec(n_envs: int = 3, **kwargs):
    env_kwargs = {"model": "tiny", "max_new_tokens": 5}
    return make_vec_env("TextGen-Sentiment-v0", n_envs=n_envs, seed=0, env_kwargs=env_kwargs, **kwargs)


def test_vectorised_wrapper_pays_what_each_env_wrapper_pays_through_restarts():
    shared = load_model("tiny")
    per_env = make_vec(wrapper_class=KLRewardWrapper, wrapper_kwargs={"coef": 0.5, "model": shared})
    batched = VecKLRewardWrapper(make_vec(), coef=0.5)
    np.testing.assert_array_equal(per_env.reset()["input_ids"], batched.reset()["input_ids"])
    rng = np.random.default_rng(0)
    restarts = 0
    for step in range(12):
        actions = rng.integers(100, 1000, size=3)
        if step == 3:
            actions[1] = 2  # EOS of the tiny model's tokenizer: that env alone starts over
        _, expected, expected_dones, expected_infos = per_env.step(actions)
        _, rewards, dones, infos = batched.step(actions)
        np.testing.assert_array_equal(dones, expected_dones)
        np.testing.assert_allclose(rewards, expected, rtol=1e-5, atol=1e-5)
        for info, expected_info in zip(infos, expected_infos):
            assert info["task_reward"] == expected_info["task_reward"]
            assert info["reference_log_prob"] == pytest.approx(expected_info["reference_log_prob"], abs=1e-4)
        restarts += int(dones.any() and not dones.all())
    assert restarts > 0  # some envs restarted while others went on
    assert batched.scorer.forward.hits > batched.scorer.forward.misses  # one batched cache, reused
    # The shared reference is packed once; the per-env wrappers leave the model they were given alone.
    assert batched.scorer.packed.packed_bytes > 0 or not packed_linears_available()
    assert per_env.envs[0].get_wrapper_attr("scorer").packed.packed_bytes == 0


def test_ppo_trains_through_the_vectorised_wrapper():
    env = VecKLRewardWrapper(make_vec(2), coef=0.05)
    model = PPO(LMActorCriticPolicy, env, n_steps=5, batch_size=5, n_epochs=1, ent_coef=0.05,
                policy_kwargs={"model": "tiny"})  # fmt: skip
    model.learn(10)
    assert model.num_timesteps == 10


def test_vectorised_wrapper_refuses_other_envs_and_steps_before_reset():
    with pytest.raises(TypeError, match="VecEnv of textgym envs"):
        VecKLRewardWrapper(make_vec_env("CartPole-v1", n_envs=2))
    with pytest.raises(TypeError, match="needs an SB3 VecEnv"):
        VecKLRewardWrapper(make())
    with pytest.raises(ValueError, match="coef must be a number >= 0"):
        VecKLRewardWrapper(make_vec(2), coef=-1)
    with pytest.raises(RuntimeError, match="before reset"):
        VecKLRewardWrapper(make_vec(2)).step(np.array([5, 6]))
