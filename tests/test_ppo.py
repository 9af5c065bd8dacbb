"""The fast path: TextPPO's batched rollouts, one-pass log-probs, KL, GAE and learning."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.running_mean_std import RunningMeanStd

import textgym
from textgym.agents import TextPPO, TokenRolloutBuffer
from textgym.agents.common.buffers import gae, kl_penalty
from textgym.agents.common.rollout import TokenBatch, generate, token_log_probs
from textgym.envs.multiturn import MultiTurnEnv
from textgym.models import load_tokenizer

SHORT = {"model": "tiny", "max_new_tokens": 6}


def small_ppo(env, **kwargs):
    return TextPPO("LMPolicy", env, **{"batch_episodes": 4, "minibatch_episodes": 2, "seed": 0, **kwargs})


@pytest.mark.parametrize(
    "env_id", sorted(e for e, c in textgym.ENVS.items() if not issubclass(c, MultiTurnEnv))
)
def test_textppo_learns_on_every_single_turn_env(env_id):
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


class KLCoefficients(BaseCallback):
    """Each batch's KL per text and the coefficient after the controller's step."""

    def __init__(self):
        super().__init__()
        self.batches: list[tuple[float, float]] = []

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        self.batches.append((self.model.rollout_buffer.sequence_kl, self.model.kl_coef))


def test_adaptive_kl_coefficient_moves_toward_its_target():
    env = gym.make("TextGen-Sentiment-v0", **SHORT)
    # KL far below the target: the coefficient shrinks by the controller's largest step each batch.
    model = small_ppo(env, kl_coef=0.1, adaptive_kl_target=1e6, adaptive_kl_horizon=8)
    model.learn(24 * 3)
    assert model.kl_coef == pytest.approx(0.1 * (1 - 0.2 * 4 / 8) ** 3)
    # A policy that moves fast exceeds a tiny target: every batch's step follows its own KL (up
    # when above the target, down when below), and some batch is above it.
    target = 1e-3
    model = small_ppo(env, kl_coef=0.1, adaptive_kl_target=target, adaptive_kl_horizon=8, kl_estimator="k3",
                      learning_rate=1e-2)  # fmt: skip
    log = KLCoefficients()
    model.learn(24 * 6, callback=log)
    before = 0.1
    for kl, after in log.batches:
        error = float(np.clip(kl / target - 1, -0.2, 0.2))
        assert after == pytest.approx(before * (1 + error * 4 / 8))
        before = after
    assert any(kl > target for kl, _ in log.batches[1:]), log.batches  # after the first update


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
        ({"adaptive_kl_target": 0}, ValueError, "adaptive_kl_target must be a number"),
        ({"adaptive_kl_horizon": 0}, ValueError, "adaptive_kl_horizon must be a positive int"),
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


# -- the rollout buffer -------------------------------------------------------------------------


def hand_batch() -> TokenBatch:
    """Three episodes of lengths 3, 2 and 1 after a 2-column prompt (the first one-token prompt
    is left-padded); episode i's old log-probs are -(i + 1), so a row names its episode."""
    response_mask = torch.tensor([[True, True, True], [True, True, False], [True, False, False]])
    prompt_mask = torch.tensor([[0, 1], [1, 1], [1, 1]])
    tokens = torch.tensor([[5, 6, 7], [5, 6, 0], [8, 0, 0]])
    log_probs = -torch.arange(1.0, 4.0)[:, None] * response_mask
    return TokenBatch(
        ids=torch.cat([torch.tensor([[0, 3], [2, 3], [4, 3]]), tokens], dim=1),
        mask=torch.cat([prompt_mask, response_mask.long()], dim=1),
        start=2,
        response_mask=response_mask,
        log_probs=log_probs,
        kl_log_probs=log_probs.clone(),
        values=torch.tensor([[0.5, 0.5, 0.5], [0.1, 0.2, 0.0], [0.0, 0.0, 0.0]]),
    )


def make_buffer(size: int = 3, **kwargs) -> TokenRolloutBuffer:
    observations = spaces.Dict(
        {"input_ids": spaces.Box(0, 9, (5,), np.int64), "attention_mask": spaces.Box(0, 1, (5,), np.int8)}
    )
    kwargs = {"gamma": 1.0, "gae_lambda": 1.0, "normalize_advantage": False, **kwargs}
    return TokenRolloutBuffer(size, observations, spaces.Discrete(10), device="cpu", **kwargs)


def test_buffer_computes_the_kl_penalty_and_gae_by_hand():
    buffer = make_buffer()
    buffer.add(hand_batch(), np.array([1.0, 2.0, -1.0], dtype=np.float32))
    assert buffer.full and buffer.size() == 3
    sizes = []

    def reference(part: TokenBatch) -> torch.Tensor:  # KL 0.5 per emitted token (k1)
        sizes.append(len(part.ids))
        return part.kl_log_probs[part.response_mask] - 0.5

    buffer.compute_returns_and_advantage(kl_coef=0.2, reference=reference, batch_size=2)
    assert sizes == [2, 1]  # the reference pass runs over minibatches of whole episodes
    # Rewards -0.1 per token plus the task reward on the last; gamma = lambda = 1: the return is
    # the sum of the rewards from t on, the advantage the return minus the value.
    returns = torch.tensor([[0.7, 0.8, 0.9], [1.8, 1.9, 0.0], [-1.1, 0.0, 0.0]])
    torch.testing.assert_close(buffer.returns, returns)
    advantages = torch.tensor([[0.2, 0.3, 0.4], [1.7, 1.7, 0.0], [-1.1, 0.0, 0.0]])
    torch.testing.assert_close(buffer.advantages, advantages)
    torch.testing.assert_close(buffer.kl, 0.5 * hand_batch().response_mask.float())
    assert buffer.sequence_kl == pytest.approx((1.5 + 1.0 + 0.5) / 3)
    # Without a reference there is no penalty, and whitened advantages have mean 0, std 1 over tokens.
    buffer = make_buffer(normalize_advantage=True)
    buffer.add(hand_batch(), [1.0, 2.0, -1.0])
    buffer.compute_returns_and_advantage(kl_coef=0.2)
    assert buffer.sequence_kl == 0
    emitted = buffer.advantages[hand_batch().response_mask]
    assert float(emitted.mean()) == pytest.approx(0, abs=1e-6)
    assert float(emitted.std(unbiased=False)) == pytest.approx(1, abs=1e-4)


def test_buffer_minibatches_are_whole_episodes_covering_the_batch_once_per_epoch():
    buffer = make_buffer()
    buffer.add(hand_batch(), np.array([1.0, 2.0, -1.0], dtype=np.float32))
    with pytest.raises(RuntimeError, match="compute_returns_and_advantage"):
        next(buffer.get(2))
    buffer.compute_returns_and_advantage(kl_coef=0.0)
    batch, generator = hand_batch(), torch.Generator().manual_seed(0)
    orders = []
    for _ in range(4):  # epochs
        seen = []
        for samples in buffer.get(2, generator):
            episodes = [int(-row[0]) - 1 for row in samples.episodes.log_probs]  # which episodes
            assert samples.advantages.shape == samples.returns.shape == (len(episodes), 3)
            for row, episode in enumerate(episodes):
                torch.testing.assert_close(samples.episodes.tokens[row], batch.tokens[episode])
                torch.testing.assert_close(samples.episodes.response_mask[row], batch.response_mask[episode])
                torch.testing.assert_close(samples.advantages[row], buffer.advantages[episode])
                torch.testing.assert_close(samples.returns[row], buffer.returns[episode])
            # The prompt columns that are padding in every episode of the minibatch are dropped.
            assert samples.episodes.start == (1 if episodes == [0] else 2)
            seen.append(episodes)
        assert [len(part) for part in seen] == [2, 1]
        assert sorted(sum(seen, [])) == [0, 1, 2]
        orders.append(sum(seen, []))
    assert len({tuple(order) for order in orders}) > 1  # shuffled anew each epoch
    assert [len(s.episodes.ids) for s in buffer.get()] == [3]  # None: the whole batch


def test_buffer_checks_what_it_is_given():
    with pytest.raises(ValueError, match="kl_estimator must be one of"):
        make_buffer(kl_estimator="k2")
    with pytest.raises(ValueError, match="reward_normalization must be one of"):
        make_buffer(reward_normalization="std")
    buffer = make_buffer(size=4)
    with pytest.raises(ValueError, match="takes 4 episodes"):
        buffer.add(hand_batch(), [1.0, 2.0, 3.0])
    with pytest.raises(RuntimeError, match="empty"):
        buffer.compute_returns_and_advantage(kl_coef=0.1)
    buffer = make_buffer(reward_normalization="running")
    buffer.add(hand_batch(), [1.0, 2.0, -1.0])
    with pytest.raises(ValueError, match="needs reward_stats"):
        buffer.compute_returns_and_advantage(kl_coef=0.0)
    stats = RunningMeanStd(shape=())
    buffer.compute_returns_and_advantage(kl_coef=0.0, reward_stats=stats)
    assert stats.count == pytest.approx(3, abs=1e-3)
    buffer.reset()
    assert not buffer.full and buffer.episodes is None and buffer.advantages is None


def test_setup_model_builds_a_token_rollout_buffer():
    env = gym.make("TextGen-Sentiment-v0", **SHORT)
    model = small_ppo(env, gamma=0.9, gae_lambda=0.8, kl_estimator="k3", reward_normalization="batch")
    buffer = model.rollout_buffer
    assert isinstance(buffer, TokenRolloutBuffer)
    assert buffer.buffer_size == model.n_steps == model.batch_episodes == 4
    assert (buffer.gamma, buffer.gae_lambda) == (0.9, 0.8)
    assert (buffer.kl_estimator, buffer.reward_normalization) == ("k3", "batch")
    with pytest.raises(RuntimeError, match="train\\(\\) needs a batch"):
        model.train()
    model.learn(1)  # one batch: collected into the buffer, then trained on
    assert buffer.full and buffer.episodes is not None and buffer.advantages.shape == buffer.returns.shape


def test_sampler_state_round_trips_through_json():
    env = gym.make("TextGen-Sentiment-v0", **SHORT)
    first = small_ppo(env, seed=0)
    state = first.get_sampler_state()
    saved = json.loads(json.dumps(state))
    first.learn(1)
    assert first.get_sampler_state() != state  # prompts and tokens were drawn
    # Another agent given that state draws the same prompts and tokens as the first did.
    second = small_ppo(env, seed=1)
    second.set_sampler_state(saved)
    assert second.get_sampler_state() == state
    second.learn(1)
    assert second.last_rollout["indices"] == first.last_rollout["indices"]
    assert second.last_rollout["texts"] == first.last_rollout["texts"]
    assert second.get_sampler_state() == first.get_sampler_state()
    with pytest.raises(ValueError, match="missing \\['episode_rng'\\]"):
        second.set_sampler_state({"generator": saved["generator"]})
