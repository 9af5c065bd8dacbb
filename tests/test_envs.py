"""Registry-driven tests of the environments, on the tiny model."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import textgym
from textgym.envs.base import INVALID_TOKEN_REWARD
from textgym.envs.multiturn import MultiTurnEnv
from textgym.models import load_tokenizer
from textgym.rewards import VaderSentiment

ENV_IDS = sorted(textgym.ENVS)


def make(env_id: str, **kwargs):
    return gym.make(env_id, **{"model": "tiny", "max_new_tokens": 6, **kwargs}).unwrapped


def rollout(env, seed: int, steps: int = 100):
    """Random-action episode from a seeded reset; returns every step's outputs."""
    env.action_space.seed(seed)
    obs, info = env.reset(seed=seed)
    trace = [(obs, info)]
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        trace.append((obs, reward, terminated, truncated, info))
        if terminated or truncated:
            break
    return trace


def test_registry_holds_every_task():
    assert ENV_IDS == [
        "TextGen-Concepts-v0",
        "TextGen-Dialogue-v0",
        "TextGen-Dialogue-v1",
        "TextGen-GuessNumber-v0",
        "TextGen-Reasoning-v0",
        "TextGen-Sentiment-v0",
        "TextGen-Summarization-v0",
        "TextGen-TargetChat-v0",
        "TextGen-Translation-v0",
    ]
    for env_id in ENV_IDS:
        assert env_id in gym.registry


def test_make_with_module_prefix_imports_textgym():
    code = (
        "import gymnasium as gym, sys\n"
        "assert 'textgym' not in sys.modules\n"
        "env = gym.make('textgym:TextGen-Sentiment-v0', model='tiny')\n"
        "print(type(env.unwrapped).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("SentimentEnv")


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_gymnasium_check_env(env_id):
    gym_check_env(make(env_id, render_mode="ansi"), skip_render_check=False)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_sb3_check_env(env_id):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sb3_check_env(make(env_id), warn=True)
    # SB3 warns about spaces it cannot handle; ours must raise none of those.
    assert not [w for w in caught if "space" in str(w.message).lower()], [str(w.message) for w in caught]


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_spaces_follow_the_design(env_id):
    env = make(env_id)
    vocab = len(load_tokenizer("tiny"))
    length = env.max_prompt_tokens + env.max_new_tokens
    if isinstance(env, MultiTurnEnv):  # every turn's budget and a partner message between turns
        length = env.max_prompt_tokens + env.max_turns * env.max_new_tokens
        length += (env.max_turns - 1) * env.max_partner_tokens
    assert isinstance(env.action_space, gym.spaces.Discrete) and env.action_space.n == env.vocab_size
    assert env.vocab_size > vocab  # the tiny model has padded logits rows
    ids, mask = env.observation_space["input_ids"], env.observation_space["attention_mask"]
    assert ids.shape == mask.shape == (length,)
    assert ids.dtype == np.int64 and mask.dtype == np.int8
    assert ids.high.max() == env.vocab_size - 1
    masks = env.action_masks()
    assert masks.shape == (env.vocab_size,) and masks.sum() == vocab and not masks[vocab:].any()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_seeded_rollouts_repeat_exactly(env_id):
    first, second = rollout(make(env_id), seed=7), rollout(make(env_id), seed=7)
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert gym.utils.env_checker.data_equivalence(a, b)
    other = rollout(make(env_id), seed=8)
    assert first[0][1]["example_id"] != other[0][1]["example_id"]


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_random_episode_ends_with_finite_reward_and_full_info(env_id):
    env = make(env_id)
    trace = rollout(env, seed=3)
    *middle, (obs, reward, terminated, truncated, info) = trace[1:]
    assert all(not step[2] and not step[3] for step in middle)
    assert terminated or truncated
    assert np.isfinite(reward)
    if isinstance(env, MultiTurnEnv):  # each turn is paid on the step that ends it
        total = sum(step[1] for step in trace[1:])
        assert total == pytest.approx(sum(turn["reward"] for turn in info["turns"]), abs=1e-5)
        assert total == pytest.approx(sum(info["reward_components"].values()), abs=1e-5)
        return
    assert all(step[1] == 0.0 for step in middle)
    for key in ("text", "prompt", "references", "reward_components", "example_id", "invalid_token"):
        assert key in info
    assert (
        isinstance(info["text"], str)
        and info["references"]
        and all(isinstance(r, str) for r in info["references"])
    )
    components = dict(info["reward_components"])
    expected = sum(components.values())  # every default task reward is an unweighted sum
    assert reward == pytest.approx(expected, abs=1e-5)


def test_observation_is_left_padded_prompt_plus_tokens():
    env = make("TextGen-Sentiment-v0")
    obs, info = env.reset(seed=0)
    n = info["prompt_tokens"]
    assert obs["attention_mask"].sum() == n and obs["attention_mask"][-n:].all()
    assert (obs["input_ids"][:-n] == env.tokenizer.pad_token_id).all()
    prompt_ids = env.tokenizer(env.examples[info["example_index"]].prompt)["input_ids"]
    assert obs["input_ids"][-n:].tolist() == prompt_ids
    obs, *_ = env.step(np.int64(42))
    assert obs["input_ids"][-1] == 42 and obs["attention_mask"].sum() == n + 1
    assert obs["input_ids"][-n - 1 : -1].tolist() == prompt_ids


def test_eos_terminates_and_budget_truncates():
    env = make("TextGen-Sentiment-v0", max_new_tokens=3)
    env.reset(seed=0)
    eos = min(env.eos_token_ids)
    _, reward, terminated, truncated, info = env.step(eos)
    assert terminated and not truncated and info["tokens_generated"] == 1
    assert info["text"] == "" and reward == 0.0  # VADER scores empty text 0
    env.reset(seed=0)
    word = env.tokenizer(" great")["input_ids"][0]
    outcomes = [env.step(word)[2:4] for _ in range(3)]
    assert outcomes == [(False, False), (False, False), (False, True)]


def test_invalid_token_terminates_with_penalty():
    env = make("TextGen-Sentiment-v0")
    env.reset(seed=0)
    _, reward, terminated, truncated, info = env.step(env.vocab_size - 1)
    assert terminated and not truncated and info["invalid_token"]
    assert info["reward_components"]["invalid_token"] == INVALID_TOKEN_REWARD
    assert reward == pytest.approx(INVALID_TOKEN_REWARD + info["reward_components"]["vader_positive"])


def test_reward_is_the_task_reward_of_the_decoded_text():
    env = make("TextGen-Sentiment-v0", max_new_tokens=4)
    env.reset(seed=1)
    ids = env.tokenizer(" a wonderful happy day")["input_ids"][:4]
    for token in ids:
        _, reward, _, truncated, info = env.step(token)
    assert truncated and info["text"] == env.tokenizer.decode(ids)
    expected = VaderSentiment("positive")([""], [info["text"]], [[""]])[0]
    assert reward == pytest.approx(float(expected)) and reward > 0.5


def test_negative_target_flips_the_sign():
    pos, neg = (
        make("TextGen-Sentiment-v0", max_new_tokens=2),
        make("TextGen-Sentiment-v0", target="negative", max_new_tokens=2),
    )
    ids = pos.tokenizer(" love it")["input_ids"][:2]
    rewards = []
    for env in (pos, neg):
        env.reset(seed=0)
        for token in ids:
            _, reward, *_ = env.step(token)
        rewards.append(reward)
    assert rewards[0] > 0.3 and rewards[1] == pytest.approx(-rewards[0])


def test_reset_index_option_selects_the_example():
    env = make("TextGen-Summarization-v0")
    _, info = env.reset(options={"index": 5})
    assert info["example_id"] == env.examples[5].id and info["example_index"] == 5


def test_long_prompts_are_left_truncated_and_reported():
    full = make("TextGen-Summarization-v0")
    short = make("TextGen-Summarization-v0", max_prompt_tokens=16)
    obs_full, info_full = full.reset(options={"index": 0})
    obs_short, info_short = short.reset(options={"index": 0})
    assert not info_full["prompt_truncated"]
    assert info_short["prompt_truncated"] and info_short["prompt_tokens"] == 16
    assert info_short["prompt_tokens_dropped"] == info_full["prompt_tokens"] - 16
    assert obs_short["input_ids"][-16:].tolist() == obs_full["input_ids"][-16:].tolist()


def test_dialogue_uses_chat_template_unless_disabled():
    chat = make("TextGen-Dialogue-v0")
    plain = make("TextGen-Dialogue-v0", chat_template=False)
    chat.reset(options={"index": 0})
    plain.reset(options={"index": 0})
    chat_text = chat.tokenizer.decode(chat._prompt_ids)
    assert "<|im_start|>assistant" in chat_text and chat.system_prompt in chat_text
    assert plain.tokenizer.decode(plain._prompt_ids).rstrip().endswith("Assistant:")


def test_render_ansi_shows_prompt_and_text():
    env = make("TextGen-Sentiment-v0", render_mode="ansi")
    env.reset(seed=0)
    token = env.tokenizer(" sunshine")["input_ids"][0]
    env.step(token)
    frame = env.render()
    assert env._example.prompt in frame
    assert frame.rstrip().endswith(env.tokenizer.decode([token]).strip())
    assert "1/6 tokens" in frame


def test_callable_reward_and_user_dataset(tmp_path):
    data = tmp_path / "mine.jsonl"
    rows = [
        {"prompt": f"Tell me about item {i}.", "reference": f"Item {i} is fine.", "split": "test"}
        for i in range(3)
    ]
    data.write_text("\n".join(json.dumps(r) for r in rows))

    def length_reward(prompts, completions, references):
        return np.array([len(c) for c in completions], dtype=np.float32)

    env = make("TextGen-Dialogue-v0", dataset=str(data), split="test", reward=length_reward, max_new_tokens=2)
    assert len(env.examples) == 3
    env.reset(seed=0)
    ids = env.tokenizer(" hello there")["input_ids"][:2]
    env.step(ids[0])
    _, reward, _, truncated, info = env.step(ids[1])
    assert (
        truncated and reward == len(info["text"]) and info["reward_components"] == {"length_reward": reward}
    )


# -- bad input ---------------------------------------------------------------------------------


@pytest.fixture
def env():
    env = make("TextGen-Sentiment-v0")
    env.reset(seed=0)
    return env


@pytest.mark.parametrize(
    ("action", "error", "match"),
    [
        (-1, ValueError, r"outside the action space: token ids are in \[0, "),
        (10**6, ValueError, "outside the action space"),
        (3.0, TypeError, "action must be an integer token id, got float"),
        ("5", TypeError, "integer token id"),
        (True, TypeError, "integer token id"),
        (np.array([1, 2]), ValueError, r"single token id, got an array of shape \(2,\)"),
        (np.array(1.5), TypeError, "integer token id"),
    ],
)
def test_bad_actions_raise(env, action, error, match):
    with pytest.raises(error, match=match):
        env.step(action)


def test_step_before_reset_and_after_end_raise():
    env = make("TextGen-Sentiment-v0")
    with pytest.raises(RuntimeError, match="before reset"):
        env.step(1)
    env.reset(seed=0)
    env.step(min(env.eos_token_ids))
    with pytest.raises(RuntimeError, match="after the episode ended"):
        env.step(1)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"colour": "red"}, TypeError, r"unknown argument\(s\) \['colour'\]; accepted: .*max_new_tokens"),
        ({"target": "neutral"}, ValueError, r"unknown sentiment target 'neutral'.*positive"),
        ({"model": "no-such-model"}, ValueError, r"unknown model 'no-such-model'.*smollm2-135m-instruct"),
        ({"model": 3}, TypeError, "model must be a non-empty string"),
        ({"dataset": "imdb"}, ValueError, r"unknown dataset 'imdb'.*chitchat-dialogue"),
        ({"split": "dev"}, ValueError, r"unknown split 'dev'.*validation"),
        ({"reward": "bleurt"}, ValueError, r"unknown reward 'bleurt'.*rouge"),
        ({"reward": 5}, TypeError, "registered name or a callable"),
        ({"max_new_tokens": 0}, ValueError, "max_new_tokens must be a positive int"),
        ({"max_prompt_tokens": 2.5}, ValueError, "max_prompt_tokens must be a positive int"),
        ({"render_mode": "human"}, ValueError, "render_mode must be one of"),
        ({"system_prompt": 3}, TypeError, "system_prompt must be a string or None, got int"),
        ({"chat_template": "no"}, TypeError, "chat_template must be True, False or None"),
        ({"dataset_kwargs": {"prompt_words": 0}}, ValueError, "prompt_words must be a positive int"),
        # Wrong container types used to surface as Python internals ("unhashable type: 'list'",
        # "'list' object is not a mapping", "opening_examples() got an unexpected keyword argument").
        ({"model": ["tiny"]}, TypeError, r"model must be a non-empty string .*got \['tiny'\]"),
        (
            {"dataset_kwargs": [1]},
            TypeError,
            r"dataset_kwargs must be a dict of options for dataset 'chitchat-openings' \(accepted keys: "
            r"\['prompt_words', 'min_words'\]\) or None, got list \[1\]",
        ),
        (
            {"dataset_kwargs": {"foo": 1}},
            TypeError,
            r"dataset_kwargs has unknown key\(s\) \['foo'\] for dataset 'chitchat-openings'; "
            r"accepted keys: \['prompt_words', 'min_words'\]",
        ),
        (
            {"dataset_kwargs": {"prompt_words": [6]}},
            ValueError,
            r"prompt_words must be a positive int, got \[6\]",
        ),
    ],
)
def test_bad_constructor_arguments_raise(kwargs, error, match):
    # gym.make itself warns about an unknown render mode before the env raises.
    with warnings.catch_warnings(), pytest.raises(error, match=match):
        warnings.simplefilter("ignore")
        make("TextGen-Sentiment-v0", **kwargs)


@pytest.mark.parametrize(
    ("env_id", "accepted"),
    [
        ("TextGen-Dialogue-v0", r"\['context_turns'\]"),
        ("TextGen-Summarization-v0", "none"),
        ("TextGen-Sentiment-v0", r"\['prompt_words', 'min_words'\]"),
        ("TextGen-Translation-v0", r"\['target'\]"),
        ("TextGen-Reasoning-v0", r"\['task', 'task_config', 'size'\]"),
        ("TextGen-Concepts-v0", r"\['seed'\]"),
    ],
)
def test_unknown_dataset_kwargs_name_the_accepted_keys_of_the_dataset(env_id, accepted):
    with pytest.raises(
        TypeError, match=rf"dataset_kwargs has unknown key\(s\) \['foo'\] .*accepted keys: {accepted}"
    ):
        make(env_id, dataset_kwargs={"foo": 1})


def test_dataset_kwargs_of_a_data_file_accept_no_keys(tmp_path):
    data = tmp_path / "mine.jsonl"
    data.write_text(json.dumps({"prompt": "hi", "reference": "hello", "split": "train"}) + "\n")
    with pytest.raises(
        TypeError, match=r"unknown key\(s\) \['prompt_words'\] .*mine\.jsonl'; accepted keys: none"
    ):
        make("TextGen-Sentiment-v0", dataset=str(data), dataset_kwargs={"prompt_words": 3})
    assert len(make("TextGen-Sentiment-v0", dataset=str(data), dataset_kwargs={}).examples) == 1


def test_empty_split_raises(tmp_path):
    data = tmp_path / "mine.csv"
    data.write_text("prompt,reference,split\nhi,hello,train\n")
    with pytest.raises(ValueError, match="has no examples in split 'test'"):
        make("TextGen-Dialogue-v0", dataset=str(data), split="test")


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"index": -1}, r"options\['index'\] must be an int in \[0, "),
        ({"index": "3"}, "must be an int"),
        ({"prompt": "x"}, "unknown reset option"),
    ],
)
def test_bad_reset_options_raise(options, match):
    env = make("TextGen-Sentiment-v0")
    with pytest.raises(ValueError, match=match):
        env.reset(options=options)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"max_new_tokens": 10**12},
            r"max_prompt_tokens \+ max_new_tokens = 32 \+ 1000000000000 exceeds the 2048",
        ),
        ({"max_new_tokens": 10**6}, r"exceeds the 2048 positions model 'tiny' attends to"),
        ({"max_prompt_tokens": 2048, "max_new_tokens": 1}, r"2048 \+ 1 exceeds"),
    ],
)
def test_lengths_past_the_model_context_are_one_error(kwargs, match):
    """10**12 new tokens used to raise MemoryError for a 931 GiB array; 10**6 was accepted."""
    with pytest.raises(ValueError, match=match):
        make("TextGen-Sentiment-v0", **kwargs)
    make("TextGen-Sentiment-v0", max_prompt_tokens=2000, max_new_tokens=48)  # fits exactly


@pytest.mark.parametrize("options", [[1], "x", 3, ("index", 1)])
def test_reset_options_that_are_not_a_dict_are_one_error_naming_options(options):
    env = make("TextGen-Sentiment-v0")
    with pytest.raises(TypeError, match=r"options must be a dict such as \{'index': 3\} or None"):
        env.reset(options=options)


def test_reward_function_with_wrong_output_raises():
    env = make("TextGen-Sentiment-v0", reward=lambda p, c, r: np.zeros(2), max_new_tokens=1)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"returned shape \(2,\), expected \(1,\)"):
        env.step(5)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_stock_sb3_ppo_learns_on_the_env_protocol(env_id):
    """SB3's own PPO (MultiInputPolicy) runs rollouts and updates through a DummyVecEnv."""
    from stable_baselines3 import PPO

    turns = {"max_turns": 2} if issubclass(textgym.ENVS[env_id], MultiTurnEnv) else {}  # 2 episodes at least
    env = gym.make(env_id, model="tiny", max_new_tokens=4, **turns)
    model = PPO("MultiInputPolicy", env, n_steps=8, batch_size=8, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=16)
    assert model.num_timesteps == 16
    ep_info = model.ep_info_buffer
    assert len(ep_info) >= 2 and all(np.isfinite(e["r"]) for e in ep_info)


def test_sync_vector_env_batches_the_envs():
    envs = gym.make_vec(
        "TextGen-Sentiment-v0", num_envs=3, vectorization_mode="sync", model="tiny", max_new_tokens=3
    )
    obs, infos = envs.reset(seed=0)
    assert obs["input_ids"].shape == (3, envs.single_observation_space["input_ids"].shape[0])
    assert len(set(infos["example_id"])) == 3  # each sub-env drew its own prompt
    rewards = []
    for _ in range(3):
        obs, reward, terminated, truncated, infos = envs.step(np.full(3, 42))
        rewards.append(reward)
    assert truncated.all() and not terminated.any()
    assert np.all(np.stack(rewards[:2]) == 0) and np.isfinite(rewards[-1]).all()
    envs.close()


def test_sb3_make_vec_env_works_with_its_default_render_mode():
    from stable_baselines3.common.env_util import make_vec_env

    venv = make_vec_env("TextGen-Sentiment-v0", n_envs=2, env_kwargs={"model": "tiny"})
    assert venv.num_envs == 2 and venv.get_attr("render_mode") == [None, None]


@pytest.mark.parametrize("target", ["en", "FR", "french", None, ["fr"]])
def test_translation_target_is_one_error_naming_the_targets(target):
    with pytest.raises(ValueError, match=r"unknown translation target .*expected one of \['fr', 'de'\]"):
        make("TextGen-Translation-v0", target=target)


def test_translation_target_picks_the_language_of_data_and_prompt():
    fr = make("TextGen-Translation-v0")
    de = make("TextGen-Translation-v0", target="de", split="test")
    assert fr.examples[0].prompt.startswith("Translate into French: ")
    assert de.examples[0].prompt.startswith("Translate into German: ")
    assert len(de.examples) < len(fr.examples)
    obs, info = de.reset(options={"index": 0})
    prompt = de.tokenizer.decode(obs["input_ids"][obs["attention_mask"] == 1])
    assert "Translate into German: " in prompt and not info["prompt_truncated"]
