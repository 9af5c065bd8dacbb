"""``textgym.agents.evaluate`` and the task metrics, with the tiny model."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import textgym
from textgym.agents import LMActorCriticPolicy, TextPPO
from textgym.agents.common.network import LMActorCritic
from textgym.agents.runs.evaluation import aggregate, evaluate, mean_ci, prompt_indices
from textgym.envs.multiturn import MultiTurnEnv
from textgym.rewards.metrics import METRICS, compute_metrics, positive_rate

P, R = ["p", "p"], [["a b c"], ["a b c"]]


def test_every_env_names_registered_metrics():
    """A single-turn task's metrics are registered text metrics; a multi-turn task reports its
    own from each finished game (tests/test_multiturn.py checks them)."""
    for cls in textgym.ENVS.values():
        assert cls.defaults.metrics
        if not issubclass(cls, MultiTurnEnv):
            assert set(cls.defaults.metrics) <= set(METRICS)


def test_positive_rate_uses_vader_threshold():
    values = positive_rate(P, ["I love this, wonderful!", "This is terrible and sad."], R)
    assert values.tolist() == [1.0, 0.0]


def test_metric_values_are_per_example_in_their_units():
    out = compute_metrics(["rouge1", "bleu"], P, ["a b c", "x y z"], R)
    assert out["rouge1"].tolist() == pytest.approx([1.0, 0.0])
    assert out["bleu"][0] == pytest.approx(100.0) and out["bleu"][1] < 1.0
    with pytest.raises(ValueError, match="unknown metrics"):
        compute_metrics(["rouge9"], P, ["a", "b"], R)


def test_mean_ci_matches_the_normal_interval():
    mean, half = mean_ci([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and half == pytest.approx(1.959964 * np.std([1, 2, 3, 4], ddof=1) / 2)
    assert math.isnan(mean_ci([1.0])[1])


def test_prompts_are_a_fixed_seeded_subset():
    assert prompt_indices(100, 10, seed=0) == prompt_indices(100, 10, seed=0)
    assert prompt_indices(100, 10, seed=0) != prompt_indices(100, 10, seed=1)
    assert prompt_indices(5, 10) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="positive int"):
        prompt_indices(5, 0)


def test_aggregate_averages_each_example_over_seeds_before_the_interval():
    rows = [
        {
            "seed": s,
            "index": i,
            "reward": r,
            "tokens": 4,
            "repetition": 0.0,
            "kl": 0.0,
            "nll": 1.0,
            "text": "a b",
        }
        for s, i, r in [(0, 0, 1.0), (1, 0, 3.0), (0, 1, 0.0), (1, 1, 0.0)]
    ]
    out = aggregate(rows, [])
    assert out["n"] == 2 and out["reward"] == 1.0
    assert out["reward_ci95"] == pytest.approx(mean_ci([2.0, 0.0])[1])
    assert out["perplexity"] == pytest.approx(math.e)


@pytest.mark.parametrize("env_id", list(textgym.ENVS))
def test_evaluate_reports_reward_metrics_fluency_diversity_and_kl(env_id):
    result = evaluate("tiny", env_id, n=3, seeds=[0, 1], batch_size=2)
    m = result.metrics
    assert m["n"] == 3 and len(result.examples) == 6
    for key in ("reward", *textgym.ENVS[env_id].defaults.metrics, "mean_length", "repetition", "kl"):
        assert math.isfinite(m[key]) and math.isfinite(m[f"{key}_ci95"]), key
    # The untrained model is its own reference: KL 0; a random model's perplexity is near V.
    assert abs(m["kl"]) < 1e-3
    assert 1e4 < m["perplexity"] < 1e5 and m["perplexity_low"] < m["perplexity"] < m["perplexity_high"]
    rewards = [row["reward"] for row in result.examples]
    assert m["reward"] == pytest.approx(np.mean(rewards), abs=1e-6)
    assert 0 <= m["distinct_2"] <= 1 and len(result.rows()) >= 9


def test_evaluate_is_reproducible_and_greedy_has_no_kl():
    first = evaluate("tiny", "TextGen-Sentiment-v0", n=4)
    again = evaluate("tiny", "TextGen-Sentiment-v0", n=4)
    assert [r["text"] for r in first.examples] == [r["text"] for r in again.examples]
    greedy = evaluate("tiny", "TextGen-Sentiment-v0", n=4, seeds=[0, 1], greedy=True)
    assert greedy.seeds == [0] and len(greedy.examples) == 4 and math.isnan(greedy.metrics["kl"])
    assert "greedy" in greedy.policy


def test_evaluate_accepts_agents_policies_networks_and_checkpoints(tmp_path):
    env = gym.make("TextGen-Sentiment-v0", model="tiny")
    agent = TextPPO("LMPolicy", env, batch_episodes=2, minibatch_episodes=1, seed=0)
    path = tmp_path / "agent.zip"
    agent.save(path)
    texts = []
    for policy in (agent, agent.policy, agent.policy.net, str(path)):
        texts.append([r["text"] for r in evaluate(policy, "TextGen-Sentiment-v0", n=2).examples])
    assert all(t == texts[0] for t in texts)
    assert isinstance(agent.policy, LMActorCriticPolicy) and isinstance(agent.policy.net, LMActorCritic)


def test_trained_policy_reports_its_kl_to_the_reference():
    env = gym.make("TextGen-Sentiment-v0", model="tiny")
    agent = TextPPO("LMPolicy", env, batch_episodes=2, minibatch_episodes=1, seed=0)
    with torch.no_grad():
        agent.policy.net.head.weight.mul_(30.0)  # a policy far from its reference
    assert evaluate(agent, "TextGen-Sentiment-v0", n=2).metrics["kl"] > 1.0


@pytest.mark.parametrize(
    ("policy", "env_id", "error", "match"),
    [
        ("tiny", "TextGen-Nope-v0", ValueError, "unknown env"),
        (42, "TextGen-Sentiment-v0", TypeError, "policy must be"),
        ("/no/such/run.zip", "TextGen-Sentiment-v0", ValueError, "no checkpoint"),
    ],
)
def test_evaluate_rejects_bad_input(policy, env_id, error, match):
    with pytest.raises(error, match=match):
        evaluate(policy, env_id, n=2)
