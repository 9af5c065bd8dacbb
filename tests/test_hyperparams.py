"""The hyperparameter registry (``agents/hyperparams/<algo>.yml``) and its overrides."""

from __future__ import annotations

import inspect
import re
import shutil

import pytest

import textgym
from textgym.agents.runs.hyperparams import (
    ALGOS,
    FOLDER,
    PROFILES,
    describe,
    hyperparams,
    params,
    parse_overrides,
    policy_keys,
    registry,
    supports,
)

# The shipped values (TextPPO's: those of every run before the registry and of the published
# leaderboard). Changing one is a new experiment: re-run the leaderboard's rows of that algorithm.
PUBLISHED = {
    "textppo": dict(learning_rate=2e-5, batch_episodes=64, minibatch_episodes=8, kl_coef=0.05,
                    policy_kwargs={}),
    "ppo": dict(learning_rate=2e-5, n_envs=64, n_steps=32, batch_size=256, n_epochs=1, gamma=1.0,
                gae_lambda=0.95, ent_coef=0.05, vf_coef=0.1, max_grad_norm=1.0, kl_coef=0.05,
                policy_kwargs={"kl_to_reference": True}),
    "a2c": dict(learning_rate=2e-5, n_envs=16, n_steps=32, gamma=1.0, gae_lambda=0.95, ent_coef=0.05,
                vf_coef=0.1, max_grad_norm=1.0, kl_coef=0.05, policy_kwargs={"kl_to_reference": True}),
    "grpo": dict(learning_rate=3e-5, batch_episodes=64, minibatch_episodes=8, group_size=4, kl_coef=0.002,
                 policy_kwargs={}),
    "rloo": dict(learning_rate=3e-5, batch_episodes=64, minibatch_episodes=8, group_size=4, kl_coef=0.002,
                 policy_kwargs={}),
    "reinforce": dict(learning_rate=2e-5, batch_episodes=64, minibatch_episodes=8, kl_coef=0.05,
                      policy_kwargs={}),
    "softq": dict(learning_rate=2e-5, buffer_size=1024, batch_episodes=64, minibatch_episodes=8,
                  gradient_steps=8, kl_coef=0.01, policy_kwargs={}),
    "dqn": dict(learning_rate=2e-5, n_envs=16, train_freq=32, gradient_steps=8, batch_size=64,
                buffer_size=20000, learning_starts=0, gamma=1.0, tau=1.0, target_update_interval=2048,
                exploration_initial_eps=0.0, exploration_final_eps=0.0, max_grad_norm=1.0, kl_coef=0.05,
                policy_kwargs={"q_scale": 0.05}),
}  # fmt: skip
# Stock rollouts are as long as the env's texts (Summarization: 64 new tokens); A2C's whole rollout
# is one gradient step, so it holds fewer of Summarization's long contexts.
PER_ENV = {
    ("ppo", "TextGen-Summarization-v0"): dict(n_steps=64, batch_size=512),
    ("a2c", "TextGen-Summarization-v0"): dict(n_envs=8, n_steps=64),
    # The group agents: RLOO's Sentiment keeps TextPPO's hand-set rate and KL; Summarization's batch
    # is 8 prompts.
    ("rloo", "TextGen-Sentiment-v0"): dict(learning_rate=2e-5, kl_coef=0.05),
    # GRPO's Sentiment rate and batch, TextPPO's, from a study and a 20-minute run (grpo.yml says which).
    ("grpo", "TextGen-Sentiment-v0"): dict(learning_rate=3.5e-5, batch_episodes=32, kl_coef=0.05),
    **{(algo, "TextGen-Summarization-v0"): dict(batch_episodes=32) for algo in ("grpo", "rloo")},
    # REINFORCE on Summarization: GRPO's KL coefficient and batch (a study and a 20-minute run).
    ("reinforce", "TextGen-Summarization-v0"): dict(batch_episodes=32, kl_coef=0.002),
    # TextPPO's Sentiment rate and batch, from a study and two 20-minute runs (textppo.yml says which).
    ("textppo", "TextGen-Sentiment-v0"): dict(learning_rate=3.5e-5, batch_episodes=32),
    # GRPO's Dialogue rate, raised after a 20-minute run (grpo.yml says which).
    ("grpo", "TextGen-Dialogue-v0"): dict(learning_rate=5e-5),
    ("grpo", "TextGen-Dialogue-v1"): dict(learning_rate=5e-5),  # v1: v0's values, not re-tuned yet
    # SoftQ: TextPPO's KL on Sentiment; Summarization's batch is 32 long texts, replayed once.
    ("softq", "TextGen-Sentiment-v0"): dict(learning_rate=3e-5, kl_coef=0.05),
    ("softq", "TextGen-Summarization-v0"): dict(batch_episodes=32, gradient_steps=4),
    ("dqn", "TextGen-Summarization-v0"): dict(train_freq=64),
    # Translation, hand-set from Sentiment's (36 new tokens): no study yet.
    ("ppo", "TextGen-Translation-v0"): dict(n_steps=36, batch_size=288),
    ("a2c", "TextGen-Translation-v0"): dict(n_steps=36),
    ("dqn", "TextGen-Translation-v0"): dict(train_freq=36),
    ("grpo", "TextGen-Translation-v0"): dict(learning_rate=3.5e-5, batch_episodes=32, kl_coef=0.05),
    ("rloo", "TextGen-Translation-v0"): dict(learning_rate=2e-5, kl_coef=0.05),
    ("textppo", "TextGen-Translation-v0"): dict(learning_rate=3.5e-5, batch_episodes=32),
    ("softq", "TextGen-Translation-v0"): dict(learning_rate=3e-5, kl_coef=0.05),
    # Concepts, hand-set from Sentiment's (32 new tokens): no study yet.
    ("ppo", "TextGen-Concepts-v0"): dict(n_steps=32, batch_size=256),
    ("a2c", "TextGen-Concepts-v0"): dict(n_steps=32),
    ("dqn", "TextGen-Concepts-v0"): dict(train_freq=32),
    ("grpo", "TextGen-Concepts-v0"): dict(learning_rate=3.5e-5, batch_episodes=32, kl_coef=0.05),
    ("rloo", "TextGen-Concepts-v0"): dict(learning_rate=2e-5, kl_coef=0.05),
    ("textppo", "TextGen-Concepts-v0"): dict(learning_rate=3.5e-5, batch_episodes=32),
    ("softq", "TextGen-Concepts-v0"): dict(learning_rate=3e-5, kl_coef=0.05),
    # Reasoning, hand-set from Sentiment's (96 new tokens): no study yet.
    ("ppo", "TextGen-Reasoning-v0"): dict(n_steps=96, batch_size=768),
    ("a2c", "TextGen-Reasoning-v0"): dict(n_steps=96),
    ("dqn", "TextGen-Reasoning-v0"): dict(train_freq=96),
    ("grpo", "TextGen-Reasoning-v0"): dict(learning_rate=3.5e-5, batch_episodes=32, kl_coef=0.05),
    ("rloo", "TextGen-Reasoning-v0"): dict(learning_rate=2e-5, kl_coef=0.05),
    ("textppo", "TextGen-Reasoning-v0"): dict(learning_rate=3.5e-5, batch_episodes=32),
    ("softq", "TextGen-Reasoning-v0"): dict(learning_rate=3e-5, kl_coef=0.05),
    # GuessNumber (multi-turn; no SoftQ), hand-set: a game of 6 short turns.
    ("ppo", "TextGen-GuessNumber-v0"): dict(n_steps=48, batch_size=256),
    ("a2c", "TextGen-GuessNumber-v0"): dict(n_steps=48),
    ("dqn", "TextGen-GuessNumber-v0"): dict(train_freq=48),
    ("grpo", "TextGen-GuessNumber-v0"): dict(learning_rate=3.5e-5, batch_episodes=32, kl_coef=0.05),
    ("rloo", "TextGen-GuessNumber-v0"): dict(learning_rate=2e-5, kl_coef=0.05),
    ("textppo", "TextGen-GuessNumber-v0"): dict(learning_rate=3.5e-5, batch_episodes=32),
    # TargetChat (multi-turn; no SoftQ), hand-set: 4 turns of up to 24 tokens.
    ("ppo", "TextGen-TargetChat-v0"): dict(n_steps=96, batch_size=256),
    ("a2c", "TextGen-TargetChat-v0"): dict(n_steps=96),
    ("dqn", "TextGen-TargetChat-v0"): dict(train_freq=96),
    ("grpo", "TextGen-TargetChat-v0"): dict(learning_rate=3.5e-5, batch_episodes=32, kl_coef=0.05),
    ("rloo", "TextGen-TargetChat-v0"): dict(learning_rate=2e-5, kl_coef=0.05),
    ("textppo", "TextGen-TargetChat-v0"): dict(learning_rate=3.5e-5, batch_episodes=32),
}
LORA = {"textppo": dict(learning_rate=2e-4)}  # with --lora, over an env's values (textppo.yml says why)
QUICK = {  # the quick leaderboard's (and the tests') smaller batches
    "textppo": dict(batch_episodes=16, minibatch_episodes=8),
    "ppo": dict(n_envs=4, n_steps=8, batch_size=16),
    "a2c": dict(n_envs=4, n_steps=8),
    "grpo": dict(batch_episodes=16, minibatch_episodes=8),
    "rloo": dict(batch_episodes=16, minibatch_episodes=8),
    "reinforce": dict(batch_episodes=16, minibatch_episodes=8),
    "softq": dict(buffer_size=64, batch_episodes=16, minibatch_episodes=8, gradient_steps=2),
    "dqn": dict(n_envs=4, train_freq=8, gradient_steps=2, batch_size=16, buffer_size=512),
}


@pytest.mark.parametrize(
    ("algo", "env_id"), [(algo, env) for env in textgym.ENVS for algo in ALGOS if supports(algo, env)]
)
def test_registry_values_per_env_and_profile(algo, env_id):
    default = hyperparams(algo, env_id)
    assert set(default) == set(params(algo))
    shipped = {**PUBLISHED[algo], **PER_ENV.get((algo, env_id), {})}
    assert {key: default[key] for key in PUBLISHED[algo]} == shipped
    constructor = inspect.signature(ALGOS[algo].__init__).parameters
    for key, value in default.items():  # the rest: the algorithm's own defaults
        if key not in PUBLISHED[algo]:
            assert value == constructor[key].default, key
    assert hyperparams(algo, env_id, "quick") == {**default, **QUICK[algo]}
    lora = {"policy_kwargs": {**default["policy_kwargs"], "lora": True}}
    assert hyperparams(algo, env_id, overrides=lora) == {**default, **LORA.get(algo, {}), **lora}


def test_the_lora_block_applies_whenever_lora_is_on_and_overrides_still_win():
    env = "TextGen-Sentiment-v0"
    on = {"policy_kwargs": {"lora": True}}
    assert hyperparams("textppo", env, "quick", on)["learning_rate"] == 2e-4  # after the profile
    assert hyperparams("textppo", env, overrides={**on, "learning_rate": 5e-5})["learning_rate"] == 5e-5
    adapters = {"policy_kwargs": {"lora": {"r": 4}}}  # LoraConfig arguments turn it on too
    assert hyperparams("textppo", env, overrides=adapters)["learning_rate"] == 2e-4
    off = {"policy_kwargs": {"lora": False}}
    assert hyperparams("textppo", env, overrides=off)["learning_rate"] == 3.5e-5
    parsed = parse_overrides("textppo", ["policy_kwargs.lora=true"])  # what `textgym train --lora` passes
    assert hyperparams("textppo", env, overrides=parsed)["learning_rate"] == 2e-4


def test_a_lora_block_cannot_set_policy_kwargs(tmp_path, monkeypatch):
    from textgym.agents.runs import hyperparams as module

    shutil.copytree(FOLDER, tmp_path / "hyperparams")
    path = tmp_path / "hyperparams" / "textppo.yml"
    path.write_text(path.read_text() + "  policy_kwargs: {lora: false}\n")
    monkeypatch.setattr(module, "FOLDER", tmp_path / "hyperparams")
    with pytest.raises(ValueError, match="lora applies when policy_kwargs turn LoRA on, so it cannot set"):
        registry("textppo")


@pytest.mark.parametrize("algo", list(ALGOS))
def test_each_file_names_every_env_and_says_how_its_values_were_found(algo):
    text = (FOLDER / f"{algo}.yml").read_text()
    assert "How they were found:" in text
    envs = {env for env in textgym.ENVS if supports(algo, env)}
    assert set(registry(algo)) == {*envs, "quick", *(["lora"] if algo in LORA else [])}


def test_softq_on_a_multi_turn_env_names_what_trains_there():
    with pytest.raises(ValueError, match=r"is multi-turn: train it with one of \['textppo', 'grpo', "):
        hyperparams("softq", "TextGen-GuessNumber-v0")


def test_textppo_keys_follow_its_constructor():
    keys = set(params("textppo"))
    assert {"learning_rate", "n_epochs", "clip_range", "kl_estimator", "policy_kwargs"} <= keys
    assert not keys & {"policy", "env", "seed", "device", "verbose", "tensorboard_log", "n_envs"}
    assert {"n_envs", "kl_coef", "policy_kwargs"} <= set(params("ppo"))


def test_overrides_are_parsed_with_the_type_of_the_default():
    pairs = [
        "learning_rate=1e-4",
        "n_epochs=2",
        "gamma=1",  # an int where a float is expected
        "normalize_advantage=false",
        "clip_range_vf=none",  # a default that may be None
        "kl_estimator=k3",
        "policy_kwargs.lora=true",
        "policy_kwargs.temperature=0.7",
    ]
    overrides = parse_overrides("textppo", pairs)
    assert overrides == {
        "learning_rate": 1e-4,
        "n_epochs": 2,
        "gamma": 1.0,
        "normalize_advantage": False,
        "clip_range_vf": None,
        "kl_estimator": "k3",
        "policy_kwargs": {"lora": True, "temperature": 0.7},
    }
    assert type(overrides["gamma"]) is float and type(overrides["n_epochs"]) is int
    resolved = hyperparams("textppo", "TextGen-Sentiment-v0", "quick", overrides)
    assert resolved == {**hyperparams("textppo", "TextGen-Sentiment-v0", "quick"), **overrides}
    assert parse_overrides("ppo", ["policy_kwargs={top_k: 8}", "target_kl=0.02"]) == {
        "policy_kwargs": {"top_k": 8},
        "target_kl": 0.02,
    }


@pytest.mark.parametrize(
    ("algo", "pair", "message"),
    [
        (
            "textppo",
            "lr=1e-3",
            "unknown hyperparameter 'lr' for textppo; accepted: learning_rate, batch_episodes",
        ),
        (
            "ppo",
            "batch_episodes=4",
            "unknown hyperparameter 'batch_episodes' for ppo; accepted: learning_rate",
        ),
        (
            "textppo",
            "batch_episodes=2.5",
            "hyperparameter 'batch_episodes' of textppo takes an int, got '2.5'",
        ),
        ("textppo", "learning_rate=fast", "'learning_rate' of textppo takes a finite float, got 'fast'"),
        ("textppo", "learning_rate=nan", "'learning_rate' of textppo takes a finite float, got nan"),
        ("textppo", "gamma=none", "'gamma' of textppo takes a finite float, got 'none'"),
        ("textppo", "normalize_advantage=maybe", "takes a bool, got 'maybe'"),
        ("textppo", "batch_episodes=0", "'batch_episodes' of textppo must be >= 1, got 0"),
        ("ppo", "kl_coef=-1", "'kl_coef' of ppo must be >= 0, got -1.0"),
        ("textppo", "learning_rate", "overrides take key=value, got 'learning_rate'"),
        ("textppo", "policy_kwargs.model=gpt2", "the model is --model"),
        ("textppo", "policy_kwargs.colour=red", "policy_kwargs takes plain values"),
        ("textppo", "policy_kwargs.temperature=0", "policy_kwargs: temperature"),
    ],
)
def test_bad_overrides_are_one_clear_error(algo, pair, message):
    with pytest.raises(ValueError) as error:
        parse_overrides(algo, [pair])
    assert message in str(error.value)


def test_an_override_given_twice_is_an_error():
    with pytest.raises(ValueError, match="'learning_rate' is given twice"):
        parse_overrides("textppo", ["learning_rate=1e-3", "learning_rate=1e-4"])


def test_values_that_follow_others():
    # Stock PPO/A2C: ent_coef is kl_coef unless set (the objective is reward - kl_coef * KL).
    assert hyperparams("ppo", "TextGen-Sentiment-v0", overrides={"kl_coef": 0.2})["ent_coef"] == 0.2
    assert (
        hyperparams("a2c", "TextGen-Sentiment-v0", overrides={"kl_coef": 0.2, "ent_coef": 0.0})["ent_coef"]
        == 0
    )
    # TextPPO: a smaller batch takes the minibatch down with it, unless the minibatch is set.
    assert (
        hyperparams("textppo", "TextGen-Sentiment-v0", overrides={"batch_episodes": 4})["minibatch_episodes"]
        == 4
    )
    with pytest.raises(ValueError, match=r"minibatch_episodes \(8\) exceeds batch_episodes \(4\)"):
        hyperparams(
            "textppo", "TextGen-Sentiment-v0", overrides={"batch_episodes": 4, "minibatch_episodes": 8}
        )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("sac", "TextGen-Sentiment-v0"), "unknown algo 'sac'"),
        (("textppo", "CartPole-v1"), "no textppo hyperparameters for 'CartPole-v1'"),
        (("textppo", "TextGen-Sentiment-v0", "huge"), "unknown hyperparameter profile 'huge'"),
    ],
)
def test_unknown_algo_env_or_profile(args, message):
    with pytest.raises(ValueError, match=message):
        hyperparams(*args)


def test_describe_lists_every_hyperparameter_with_its_values():
    text = describe()
    for algo in ALGOS:
        block = text.split(f"\n{algo}:\n")[1].split("\n\n")[0]
        for key, param in params(algo).items():
            line = next(line for line in block.splitlines() if line.split()[0] == key)
            assert param.describe() in line and repr(hyperparams(algo, "TextGen-Sentiment-v0")[key]) in line
        assert ", ".join(policy_keys()) in block
    assert "[quick: 16]" in text and set(PROFILES) == {"default", "quick"}
    textppo = text.split("\ntextppo:\n")[1].splitlines()
    assert "<lora: 0.0002>" in next(line for line in textppo if line.split()[0] == "learning_rate")


@pytest.mark.parametrize(
    ("algo", "overrides", "message"),
    [
        ("textppo", {"kl_estimator": "k9"}, "kl_estimator must be one of ('k1', 'k3'), got 'k9'"),
        ("textppo", {"reward_normalization": "x"}, "reward_normalization must be one of"),
        ("textppo", {"gamma": 1.5}, "gamma must be a number in [0, 1], got 1.5"),
        ("ppo", {"batch_size": 1}, "`batch_size` must be greater than 1"),
    ],
)
def test_values_the_algorithm_rejects_fail_when_resolved(algo, overrides, message):
    """Well-typed values that only the algorithm's constructor checks fail as the run's
    hyperparameters are resolved, before a run writes anything (the constructor's checks run
    without an env or a model)."""
    with pytest.raises(ValueError, match=re.escape(f"hyperparameters of {algo}: {message}")):
        hyperparams(algo, "TextGen-Sentiment-v0", "default", overrides)
