"""The stock path: LMActorCriticPolicy with SB3's PPO and A2C and sb3-contrib's MaskablePPO."""

from __future__ import annotations

import copy
import pickle

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import A2C, PPO

import textgym
from textgym.agents import LMActorCritic, LMActorCriticPolicy, LMPolicyConfig
from textgym.envs.multiturn import MultiTurnEnv
from textgym.models import DEFAULT_MODEL, load_model, load_tokenizer
from textgym.models.incremental import observation_rows, trim_padding

TINY = {"model": "tiny"}
SHORT = {"model": "tiny", "max_new_tokens": 6}


def make(env_id: str = "TextGen-Sentiment-v0", **kwargs):
    return gym.make(env_id, **{**SHORT, **kwargs})


def episode_observations(env, n: int = 5, seed: int = 0):
    """Observations of one episode stepped with fixed tokens (each extends the last by one)."""
    observation, _ = env.reset(seed=seed)
    observations = [observation]
    for token in range(100, 100 + n):
        observation, *_ = env.step(token)
        observations.append(observation)
    return observations


def text_length(prompts, completions, references):
    """A reward every env can earn with random tokens, so that every update has a signal."""
    return np.array([len(text) / 50 for text in completions], dtype=np.float32)


def observation_batch(obs):
    """The per-observation reference: (B, T) ids and mask, padding trimmed, one row each."""
    return trim_padding(obs["input_ids"].long(), obs["attention_mask"].long())


def as_batch(policy, observation):
    return policy.obs_to_tensor(observation)[0]


@pytest.mark.parametrize("env_id", sorted(textgym.ENVS))
def test_ppo_learns_on_every_env(env_id):
    multi_turn = issubclass(textgym.ENVS[env_id], MultiTurnEnv)  # a game scores its own turns
    env = make(env_id, **({} if multi_turn else {"reward": text_length}))
    model = PPO(LMActorCriticPolicy, env, n_steps=12, batch_size=6, n_epochs=1, policy_kwargs=TINY, seed=0)
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(12)
    assert model.num_timesteps == 12
    changed = [not torch.equal(a, p) for a, p in zip(before, model.policy.parameters())]
    assert any(changed)  # the update reached the LM
    assert model.policy.net.cache_stats["hits"] > 0


def test_a2c_and_maskable_ppo_run():
    sb3_contrib = pytest.importorskip("sb3_contrib")
    from textgym.agents import MaskableLMActorCriticPolicy

    env = make()
    A2C(LMActorCriticPolicy, env, n_steps=6, policy_kwargs=TINY).learn(12)
    model = sb3_contrib.MaskablePPO(
        MaskableLMActorCriticPolicy, env, n_steps=12, batch_size=6, n_epochs=1, policy_kwargs=TINY
    )
    model.learn(12)
    # The env's mask and the policy's own mask agree: padded logit rows are never chosen.
    observation, _ = env.reset(seed=0)
    masks = env.unwrapped.action_masks()
    with torch.no_grad():
        distribution = model.policy.get_distribution(as_batch(model.policy, observation), masks)
    probs = distribution.distribution.probs[0]
    assert float(probs[~torch.as_tensor(env.unwrapped.action_masks())].sum()) == 0


def test_pretrained_weights_are_not_reinitialised():
    policy = PPO(LMActorCriticPolicy, make(), n_steps=6, batch_size=6, policy_kwargs=TINY).policy
    fresh = load_model("tiny").state_dict()
    for name, value in policy.net.causal.state_dict().items():
        assert torch.equal(value, fresh[name]), name
    assert float(policy.net.value_head.weight.abs().sum()) == 0  # values start at 0


def test_padded_logit_rows_are_never_sampled():
    env = make()
    policy = PPO(LMActorCriticPolicy, env, n_steps=6, batch_size=6, policy_kwargs=TINY).policy
    obs = as_batch(policy, env.reset(seed=0)[0])
    with torch.no_grad():
        probs = policy.get_distribution(obs).distribution.probs[0]
    invalid = ~torch.as_tensor(env.unwrapped.action_masks())
    assert invalid.any() and float(probs[invalid].sum()) == 0


def test_cached_stepping_matches_recomputing_the_context():
    env = make(max_new_tokens=8)
    policy = PPO(LMActorCriticPolicy, env, n_steps=6, batch_size=6, policy_kwargs=TINY).policy
    observations = episode_observations(env, n=5)
    for observation in observations:
        obs = as_batch(policy, observation)
        with torch.no_grad():
            cached_logits, cached_values = policy.net.step(observation_rows(obs))
            full_logits, full_values = policy.net.last(*observation_batch(obs))
        torch.testing.assert_close(cached_logits, full_logits, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(cached_values, full_values, rtol=1e-4, atol=1e-5)
    assert policy.net.cache_stats == {"hits": 5, "misses": 1}


def test_cache_is_dropped_when_the_weights_change():
    env = make()
    policy = PPO(LMActorCriticPolicy, env, n_steps=6, batch_size=6, policy_kwargs=TINY).policy
    first, second = episode_observations(env, n=1)
    with torch.no_grad():
        policy.net.step(observation_rows(as_batch(policy, first)))
        for parameter in policy.net.value_head.parameters():
            parameter.add_(1.0)  # as an optimiser step would
        cached = policy.net.step(observation_rows(as_batch(policy, second)))
        full = policy.net.last(*observation_batch(as_batch(policy, second)))
    assert policy.net.cache_stats["misses"] == 2
    torch.testing.assert_close(cached[1], full[1])


@pytest.mark.parametrize("knobs", [{"temperature": 0.7}, {"top_k": 5}, {"top_p": 0.9, "temperature": 1.3}])
def test_sampling_knobs_are_the_same_in_rollouts_and_evaluate_actions(knobs):
    env = make()
    policy = PPO(LMActorCriticPolicy, env, n_steps=6, batch_size=6, policy_kwargs={**TINY, **knobs}).policy
    obs = as_batch(policy, env.reset(seed=0)[0])
    with torch.no_grad():
        actions, values, log_probs = policy(obs)
    policy.set_training_mode(True)
    new_values, new_log_probs, entropy = policy.evaluate_actions(obs, actions)
    torch.testing.assert_close(new_log_probs, log_probs, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(new_values, values)
    assert torch.isfinite(entropy).all()
    if "top_k" in knobs:
        with torch.no_grad():
            probs = policy.get_distribution(obs).distribution.probs[0]
        assert int((probs > 0).sum()) == knobs["top_k"]


def test_the_policy_alone_round_trips_and_its_kwargs_pickle(tmp_path):
    """SB3's ``policy.save``/``load`` (the agents' save/load: tests/test_contract.py)."""
    model = PPO(LMActorCriticPolicy, make(), n_steps=12, batch_size=6, n_epochs=1, policy_kwargs=TINY, seed=0)
    pickle.dumps(model.policy_kwargs)
    model.policy.save(tmp_path / "policy.pth")
    policy = LMActorCriticPolicy.load(tmp_path / "policy.pth")
    assert policy.config == model.policy.config == LMPolicyConfig(model="tiny")
    for name, value in model.policy.state_dict().items():
        assert torch.equal(value, policy.state_dict()[name]), name


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"model": load_model}, TypeError, "must be a model name or path"),
        ({"model": "tiny", "net_arch": [64]}, TypeError, r"unknown LM policy argument\(s\) \['net_arch'\]"),
        ({"model": "tiny", "ortho_init": True}, ValueError, "re-initialise the pretrained LM"),
        ({"model": "tiny", "temperature": 0}, ValueError, "temperature must be > 0"),
        ({"model": "tiny", "top_k": -1}, ValueError, "top_k must be an int"),
        ({"model": "tiny", "dtype": "float64"}, ValueError, "dtype must be one of"),
        ({"model": "tiny", "lora": "yes"}, TypeError, "lora must be None, True or a dict"),
        ({"model": "tiny", "lora": {"rank": 4}}, TypeError, "bad lora arguments"),
        (
            {"model": "tiny", "lora": {"target_modules": ["q_proj", "qkv"]}},
            ValueError,
            r"lora target_modules \['qkv'\]: no module of LlamaForCausalLM has that name",
        ),  # fmt: skip
        ({"model": "tiny", "separate_critic": 1}, TypeError, "separate_critic must be True or False"),
        ({"model": "no/such-model"}, ValueError, "unknown model 'no/such-model'"),
    ],
)
def test_bad_policy_kwargs_raise_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        PPO(LMActorCriticPolicy, make(), n_steps=6, batch_size=6, policy_kwargs=kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"model": load_model}, TypeError, "must be a model name or path"),
        ({"temperature": 0}, ValueError, "temperature must be > 0"),
        ({"top_k": 2.5}, ValueError, "top_k must be an int"),
        ({"top_p": 0}, ValueError, r"top_p must be in \(0, 1\]"),
        ({"dtype": "float64"}, ValueError, "dtype must be one of"),
        ({"lora": "yes"}, TypeError, "lora must be None, True or a dict"),
        ({"lora": {"r": -1}}, ValueError, r"lora r \(the adapters' rank\) must be an int >= 1, got -1"),
        ({"lora": {"r": 2.5}}, ValueError, r"lora r \(the adapters' rank\) must be an int >= 1, got 2.5"),
        ({"lora": {"lora_alpha": "x"}}, ValueError, "lora lora_alpha must be a number > 0, got 'x'"),
        ({"lora": {"lora_dropout": 1.0}}, ValueError, r"lora lora_dropout must be a number in \[0, 1\)"),
        ({"lora": {"target_modules": []}}, ValueError, "lora target_modules must be a list of module names"),
        ({"separate_critic": "no"}, TypeError, "separate_critic must be True or False"),
    ],
)
def test_lm_policy_config_validates_its_fields(kwargs, error, match):
    with pytest.raises(error, match=match):
        LMPolicyConfig(**kwargs)


def test_one_lm_policy_config_for_the_policies_and_the_network():
    config = LMPolicyConfig()
    assert config.model == DEFAULT_MODEL and config.temperature == 1.0 and config.lora is None
    config = LMPolicyConfig(model="tiny", top_k=5, lora={"r": 4})
    # Plain values that rebuild the same config (what a saved policy stores), and picklable.
    assert LMPolicyConfig(**config.kwargs()) == config == pickle.loads(pickle.dumps(config))
    assert set(config.kwargs()) == set(LMPolicyConfig.field_names())
    policy = PPO(
        LMActorCriticPolicy, make(), n_steps=6, batch_size=6, policy_kwargs={**TINY, "top_k": 5}
    ).policy
    assert policy.config == LMPolicyConfig(model="tiny", top_k=5) and policy.net.config is policy.config
    assert {name: policy._get_constructor_parameters()[name] for name in config.field_names()} == (
        policy.config.kwargs()
    )
    width = make().action_space.n
    net = LMActorCritic("tiny", width, temperature=0.5)  # a model name and options: the same config
    assert net.config == LMPolicyConfig(model="tiny", temperature=0.5)
    with pytest.raises(TypeError, match="not both"):
        LMActorCritic(net.config, width, temperature=0.5)


def test_model_that_does_not_match_the_env_is_refused(tmp_path):
    # A local model with the tokenizer's exact vocabulary: 32 logits fewer than the tiny env's.
    tokenizer = load_tokenizer("tiny")
    model = load_model("tiny")
    model.resize_token_embeddings(len(tokenizer))
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"has \d+ logits but the env's action space has \d+ actions"):
        PPO(LMActorCriticPolicy, make(), n_steps=6, batch_size=6, policy_kwargs={"model": str(tmp_path)})


def test_non_text_env_is_refused():
    with pytest.raises(TypeError, match="needs a Discrete action space"):
        PPO(LMActorCriticPolicy, "Pendulum-v1", policy_kwargs=TINY)
    with pytest.raises(TypeError, match="needs a Dict observation space"):
        PPO(LMActorCriticPolicy, "CartPole-v1", policy_kwargs=TINY)


def test_lora_trains_only_adapters_and_value_head():
    pytest.importorskip("peft")
    env = make(reward=text_length)  # a reward that differs between episodes, so every update has a signal
    lora = {**TINY, "lora": True}
    model = PPO(LMActorCriticPolicy, env, n_steps=12, batch_size=6, n_epochs=1, policy_kwargs=lora, seed=0)
    net = model.policy.net
    trainable = {name for name, p in model.policy.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name or "value_head" in name for name in trainable)
    assert net.trainable_fraction() < 0.01
    before = {name: p.detach().clone() for name, p in model.policy.named_parameters()}
    model.learn(12)
    for name, p in model.policy.named_parameters():
        assert torch.equal(p, before[name]) == (name not in trainable), name
    # The reference is the same model with its adapters off: it matches the pretrained model.
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad(), net.reference() as reference:
        ref_logits = reference(input_ids=ids).logits
    torch.testing.assert_close(ref_logits, load_model("tiny")(input_ids=ids).logits)


def test_separate_critic_has_its_own_trunk():
    env = make(max_new_tokens=8)
    kwargs = {**TINY, "separate_critic": True}
    model = PPO(LMActorCriticPolicy, env, n_steps=6, batch_size=6, policy_kwargs=kwargs)
    net = model.policy.net
    assert net.critic is not None and net.critic is not net.backbone
    with torch.no_grad():
        net.critic.norm.weight.mul_(2.0)  # make the critic's trunk differ from the actor's
        net.value_head.weight.fill_(0.1)
    for observation in episode_observations(env, n=3):
        obs = as_batch(model.policy, observation)
        with torch.no_grad():
            cached = net.step(observation_rows(obs))[1]
            full = net.last(*observation_batch(obs))[1]
        torch.testing.assert_close(cached, full, rtol=1e-4, atol=1e-5)
    model.learn(6)


def test_predict_on_a_single_observation():
    env = make()
    model = PPO(LMActorCriticPolicy, env, n_steps=6, batch_size=6, policy_kwargs=TINY)
    observation, _ = env.reset(seed=0)
    action, _ = model.predict(observation, deterministic=True)
    assert np.shape(action) == () and env.unwrapped.action_masks()[int(action)]


def test_vectorised_envs_keep_the_cache_through_restarts():
    from stable_baselines3.common.env_util import make_vec_env

    venv = make_vec_env(
        "TextGen-Sentiment-v0", n_envs=3, seed=0, env_kwargs={"model": "tiny", "max_new_tokens": 4}
    )
    model = PPO(LMActorCriticPolicy, venv, n_steps=8, batch_size=8, n_epochs=1, policy_kwargs=TINY, seed=0)
    model.learn(24)
    stats = model.policy.net.cache_stats
    assert stats["hits"] > 0 and stats["misses"] > 0
    # Cached predictions on a batch where one env just restarted equal full recomputation.
    observations = venv.reset()
    for step in range(6):
        obs = as_batch(model.policy, observations)
        with torch.no_grad():
            cached = model.policy.net.step(observation_rows(obs))[0]
            full = model.policy.net.last(*observation_batch(obs))[0]
        torch.testing.assert_close(cached, full, rtol=1e-4, atol=1e-5)
        observations, *_ = venv.step(np.array([200 + step, 300 + step, 400 + step]))


def test_acting_samples_tokens_and_training_frees_the_packed_weights():
    env = make()
    policy = PPO(LMActorCriticPolicy, env, n_steps=6, batch_size=6, policy_kwargs=TINY).policy
    obs = as_batch(policy, env.reset(seed=0)[0])
    torch.manual_seed(0)
    actions = [int(policy.predict(env.reset(seed=0)[0])[0]) for _ in range(64)]
    assert len(set(actions)) > 1  # sampled, not the mode
    assert all(env.unwrapped.action_masks()[a] for a in actions)
    with torch.no_grad():
        greedy = int(policy.net.step(observation_rows(obs))[0].argmax())
        assert int(policy.get_distribution(obs).mode()) == greedy
    assert policy.net.packed.packed_bytes > 0 or not policy.net.packed.enabled
    policy.set_training_mode(True)  # as PPO.train() does before its update
    assert policy.net.packed.packed_bytes == 0


def test_a_policy_that_acted_can_be_copied_and_pickled():
    env = make()
    policy = PPO(LMActorCriticPolicy, env, n_steps=6, batch_size=6, policy_kwargs=TINY).policy
    observation = env.reset(seed=0)[0]
    greedy = policy.predict(observation, deterministic=True)[0]
    for clone in (copy.deepcopy(policy), pickle.loads(pickle.dumps(policy))):
        assert clone.predict(observation, deterministic=True)[0] == greedy


def test_maskable_policy_samples_only_unmasked_tokens_in_proportion():
    sb3_contrib = pytest.importorskip("sb3_contrib")
    from textgym.agents import MaskableLMActorCriticPolicy
    from textgym.agents.common.policies import MaskableTokenDistribution

    env = make()
    model = sb3_contrib.MaskablePPO(
        MaskableLMActorCriticPolicy, env, n_steps=6, batch_size=6, policy_kwargs=TINY
    )
    policy = model.policy
    assert isinstance(policy.action_dist, MaskableTokenDistribution)
    observation = env.reset(seed=0)[0]
    allowed = [5, 17, 42]
    masks = np.zeros(env.action_space.n, dtype=bool)
    masks[allowed] = True
    rows = 600  # each row is a forward pass over the whole vocabulary
    batch = {key: value.repeat(rows, 1) for key, value in as_batch(policy, observation).items()}
    torch.manual_seed(0)
    with torch.no_grad():
        distribution = policy.get_distribution(batch, np.tile(masks, (rows, 1)))
        actions = distribution.sample()
        probs = distribution.distribution.probs[0, allowed].double()
        assert int(distribution.mode()[0]) == allowed[int(probs.argmax())]
    assert set(actions.tolist()) <= set(allowed)
    counts = torch.tensor([(actions == a).sum() for a in allowed], dtype=torch.float64)
    sd = (rows * probs * (1 - probs)).sqrt()
    assert bool(((counts - rows * probs).abs() <= 4.5 * sd + 1).all()), (counts, rows * probs)
