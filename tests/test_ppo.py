"""The fast path: TextPPO's batched rollouts, one-pass log-probs, KL, GAE and learning."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.callbacks import BaseCallback

import textgym
from agents import TextPPO
from agents.rollout import gae, generate, kl_penalty, token_log_probs
from textgym.models import load_tokenizer

SHORT = {"model": "tiny", "max_new_tokens": 6}


def small_ppo(env, **kwargs):
    return TextPPO("LMPolicy", env, **{"batch_episodes": 4, "minibatch_episodes": 2, "seed": 0, **kwargs})


@pytest.mark.parametrize("env_id", sorted(textgym.ENVS))
def test_textppo_learns_on_every_env(env_id):
    env = gym.make(env_id, **SHORT)
    model = small_ppo(env)
    model.learn(30)
    assert model.num_timesteps >= 30
    assert len(model.ep_info_buffer) == 8  # two batches of four episodes
    assert set(model.last_update) >= {"policy_loss", "value_loss", "entropy", "clip_fraction", "kl"}
    assert np.isfinite(list(model.last_update.values())).all()
    assert len(model.last_rollout["texts"]) == 4 and np.isfinite(model.last_rollout["reward"])
    assert model.logger.name_to_value["train/explained_variance"] == model.last_update["explained_variance"]


def test_one_pass_log_probs_equal_the_step_by_step_ones():
    env = gym.make("TextGen-Sentiment-v0", model="tiny", max_new_tokens=12)
    model = small_ppo(env, policy_kwargs={"top_k": 50, "temperature": 0.8})
    net, task = model.policy.net, env.unwrapped
    prompts = [task.encode_prompt(task.examples[i])[0] for i in range(5)]
    assert len({len(p) for p in prompts}) > 1  # left padding is exercised
    # A large random EOS row (the tiny model's is zero: EOS is its padding id) makes rows end at
    # different steps, so right padding is exercised too.
    eos = sorted(task.eos_token_ids)
    with torch.no_grad():
        net.head.weight[eos] = torch.randn(
            len(eos), net.head.weight.shape[1], generator=torch.Generator().manual_seed(1)
        )
    batch = generate(net, prompts, 12, task.eos_token_ids, torch.Generator().manual_seed(0))
    assert batch.lengths.min() < batch.lengths.max()
    with torch.no_grad():
        mask = batch.response_mask
        raw, values = net.sequence(batch.ids, batch.mask, batch.start, mask)
        log_probs = token_log_probs(net.process(raw), batch.tokens[mask])
        kl_log_probs = token_log_probs(net.kl_logits(raw), batch.tokens[mask])
    torch.testing.assert_close(log_probs, batch.log_probs[mask], rtol=0, atol=1e-4)
    torch.testing.assert_close(kl_log_probs, batch.kl_log_probs[mask], rtol=0, atol=1e-4)
    torch.testing.assert_close(values[mask], batch.values[mask], rtol=0, atol=1e-5)
    # The reference is the initial model: before any update, its log-probs are the policy's.
    with torch.no_grad():
        ref_logits = net.reference_logits(batch.ids, batch.mask, batch.start, mask)
        ref = token_log_probs(net.kl_logits(ref_logits), batch.tokens[mask])
    assert float((ref - kl_log_probs).abs().max()) > 1  # lm_head was changed above, not the reference


def test_kl_estimators_and_gae_by_hand():
    p, q = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.5, -1.0]])
    torch.testing.assert_close(kl_penalty(p, q, "k1"), p - q)
    torch.testing.assert_close(kl_penalty(p, q, "k3"), torch.exp(q - p) - 1 - (q - p))
    assert (kl_penalty(p, q, "k3") >= 0).all()
    with pytest.raises(ValueError, match="kl_estimator"):
        kl_penalty(p, q, "k2")
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 0.0]])
    values = torch.tensor([[0.5, 0.5, 0.5], [0.1, 0.2, 0.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    # lambda = gamma = 1: advantage = (sum of later rewards) - value; nothing after the last token.
    torch.testing.assert_close(advantages, torch.tensor([[0.5, 0.5, 0.5], [1.9, 1.8, 0.0]]))
    torch.testing.assert_close(returns, torch.tensor([[1.0, 1.0, 1.0], [2.0, 2.0, 0.0]]))
    advantages, _ = gae(rewards, values, mask, gamma=0.5, lam=0.0)  # one-step TD errors
    torch.testing.assert_close(advantages, torch.tensor([[-0.25, -0.25, 0.5], [0.0, 1.8, 0.0]]))


def synthetic_bandit(tmp_path):
    """A task with a known optimum: the first generated token must be one fixed token, chosen
    among the tiny model's top-8 for the (single) prompt. Optimum 1.0; start about 1/8."""
    path = tmp_path / "bandit.jsonl"
    rows = [{"id": str(i), "prompt": "The weather today is", "reference": "-"} for i in range(40)]
    path.write_text("\n".join(json.dumps(row) for row in rows))
    env = gym.make("TextGen-Sentiment-v0", model="tiny", dataset=str(path), max_new_tokens=3)
    model = TextPPO(
        "LMPolicy", env, learning_rate=3e-3, batch_episodes=32, minibatch_episodes=16, n_epochs=2,
        kl_coef=0.0, seed=0, policy_kwargs={"top_k": 8},
    )  # fmt: skip
    task, net = env.unwrapped, model.policy.net
    prompt = task.encode_prompt(task.examples[0])[0]
    with torch.no_grad():
        hidden = net.backbone(input_ids=torch.tensor([prompt])).last_hidden_state[:, -1]
        logits = net.process(net.head(hidden))
    tokenizer = load_tokenizer("tiny")
    texts = [tokenizer.decode([int(i)]) for i in logits[0].topk(8).indices]
    # The target's text must not be a prefix of another candidate's, so the reward is exact.
    target = next(t for t in texts[1:] if t.strip() and not any(o != t and o.startswith(t) for o in texts))

    def first_token_is_target(prompts, completions, references):
        return np.array([c.startswith(target) for c in completions], dtype=np.float32)

    task.reward_fn = first_token_is_target
    return model


class RewardLog(BaseCallback):
    def __init__(self):
        super().__init__()
        self.rewards: list[float] = []

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        self.rewards.append(self.model.last_rollout["reward"])


def test_textppo_reaches_the_optimum_of_a_synthetic_task(tmp_path):
    model = synthetic_bandit(tmp_path)
    log = RewardLog()
    model.learn(32 * 3 * 12, callback=log)
    start, end = np.mean(log.rewards[:2]), np.mean(log.rewards[-2:])
    assert start < 0.4
    assert end > 0.8, log.rewards


def test_adaptive_kl_coefficient_moves_toward_its_target():
    env = gym.make("TextGen-Sentiment-v0", **SHORT)
    # KL far below the target: the coefficient shrinks by the controller's largest step each batch.
    model = small_ppo(env, kl_coef=0.1, kl_target=1e6, kl_horizon=8)
    model.learn(24 * 3)
    assert model.kl_coef == pytest.approx(0.1 * (1 - 0.2 * 4 / 8) ** 3)
    # A policy that moves fast exceeds a tiny target, and the coefficient grows.
    model = small_ppo(env, kl_coef=0.1, kl_target=1e-3, kl_horizon=8, kl_estimator="k3", learning_rate=1e-2)
    model.learn(24 * 6)
    assert model.last_update["kl"] > 1e-3
    assert model.kl_coef > 0.1


@pytest.mark.parametrize("normalization", ["none", "running", "batch"])
def test_reward_normalisation_options_run(normalization):
    env = gym.make("TextGen-Sentiment-v0", **SHORT)
    small_ppo(env, reward_normalization=normalization, kl_estimator="k3").learn(10)


def test_lora_reference_is_the_model_without_adapters():
    pytest.importorskip("peft")
    env = gym.make("TextGen-Sentiment-v0", **SHORT)
    model = small_ppo(env, learning_rate=1e-2, policy_kwargs={"lora": True})
    model.learn(40)
    net = model.policy.net
    assert net._reference is None  # no second copy was loaded
    assert model.last_update["kl"] != 0


def test_save_load_round_trip_and_continued_training(tmp_path):
    env = gym.make("TextGen-Sentiment-v0", **SHORT)
    model = small_ppo(env, learning_rate=1e-3)
    model.learn(20)
    model.save(tmp_path / "agent.zip")
    loaded = TextPPO.load(tmp_path / "agent.zip", env=env)
    assert loaded.policy_kwargs["model"] == "tiny" and loaded.batch_episodes == 4
    for name, value in model.policy.state_dict().items():
        assert torch.equal(value, loaded.policy.state_dict()[name]), name
    observation, _ = env.reset(seed=1)
    assert int(model.predict(observation, deterministic=True)[0]) == int(
        loaded.predict(observation, deterministic=True)[0]
    )
    loaded.learn(10, reset_num_timesteps=False)
    assert loaded.num_timesteps > model.num_timesteps


def test_progress_counts_tokens_and_a_callback_can_stop_training():
    class StopAfter(BaseCallback):
        def _on_step(self) -> bool:
            return self.n_calls < 5

    env = gym.make("TextGen-Sentiment-v0", **SHORT)
    model = small_ppo(env)
    model.learn(1000, callback=StopAfter())
    assert model.num_timesteps == 5


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"batch_episodes": 0}, ValueError, "batch_episodes must be a positive int"),
        ({"minibatch_episodes": 8}, ValueError, r"minibatch_episodes \(8\) exceeds batch_episodes \(4\)"),
        ({"kl_estimator": "k2"}, ValueError, "kl_estimator must be one of"),
        ({"reward_normalization": "std"}, ValueError, "reward_normalization must be one of"),
        ({"kl_coef": -1}, ValueError, "kl_coef must be a number"),
        ({"kl_target": 0}, ValueError, "kl_target must be a number"),
        ({"gamma": 2}, ValueError, "gamma must be a number"),
        ({"policy_kwargs": {"model": "tiny", "bogus": 1}}, TypeError, "unknown LM policy argument"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, error, match):
    env = gym.make("TextGen-Sentiment-v0", **SHORT)
    with pytest.raises(error, match=match):
        small_ppo(env, **kwargs)


def test_non_text_env_is_refused():
    with pytest.raises(TypeError, match="TextPPO needs a textgym env"):
        TextPPO("LMPolicy", gym.make("FrozenLake-v1"))
