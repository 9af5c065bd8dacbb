"""TextGen-Reasoning-v0: reasoning-gym problems, the stated answer graded by reasoning-gym."""

from __future__ import annotations

import importlib
import json
import sys
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from textgym.datasets import DATASETS, load_dataset
from textgym.datasets.reasoning import (
    DEFAULT_TASK,
    DEFAULT_TASK_CONFIG,
    find_entry,
    reasoning_examples,
)
from textgym.rewards import REWARDS, make_reward, score
from textgym.rewards.metrics import METRICS, compute_metrics
from textgym.rewards.reasoning import extract_answer

ENV_ID = "TextGen-Reasoning-v0"
SMALL = {"task": "chain_sum", "task_config": {"min_terms": 2, "max_terms": 2, "max_digits": 1}}


def make(**kwargs):
    return gym.make(ENV_ID, **{"model": "tiny", "max_new_tokens": 6, **kwargs}).unwrapped


def rollout(env, seed: int) -> list:
    env.action_space.seed(seed)
    trace = [env.reset(seed=seed)]
    while True:
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        trace.append((obs, reward, terminated, truncated, info))
        if terminated or truncated:
            return trace


def test_gymnasium_and_sb3_check_env_pass():
    gym_check_env(make(render_mode="ansi"), skip_render_check=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sb3_check_env(make(**SMALL), warn=True)
    assert not [w for w in caught if "space" in str(w.message).lower()], [str(w.message) for w in caught]


def test_seeded_rollouts_repeat_exactly():
    first, second = rollout(make(), seed=7), rollout(make(), seed=7)
    assert len(first) == len(second)
    assert first[0][1]["example_id"] == second[0][1]["example_id"]
    for a, b in zip(first[1:], second[1:]):
        np.testing.assert_array_equal(a[0]["input_ids"], b[0]["input_ids"])
        assert a[1:4] == b[1:4]
    assert first[-1][4]["text"] == second[-1][4]["text"]


def test_the_default_task_and_its_prompt():
    env = make()
    assert env.task == DEFAULT_TASK and env.task_config == DEFAULT_TASK_CONFIG
    assert env.defaults.metrics == ("accuracy", "format") and env.defaults.reward == "reasoning"
    obs, info = env.reset(options={"index": 0})
    prompt = env.tokenizer.decode(obs["input_ids"][obs["attention_mask"] == 1])
    assert env.examples[0].prompt in prompt and "The answer is <answer>." in prompt
    assert not info["prompt_truncated"]


def test_task_and_config_choose_the_problems():
    env = make(**SMALL, split="test")
    assert env.task == "chain_sum" and env.examples[0].id.startswith("reasoning-gym/chain_sum/")
    assert env.examples == reasoning_examples("test", **SMALL)
    other = make(task="gcd", split="test")
    assert other.task_config == {} and "GCD" in other.examples[0].prompt  # reasoning-gym's defaults
    via_options = make(dataset_kwargs={"task": "gcd"}, split="test")
    assert via_options.task == "gcd" and via_options.examples == other.examples


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"task": "no_such_task"},
            ValueError,
            r"unknown reasoning-gym task 'no_such_task': expected one of \[.*'gcd'",
        ),
        ({"task": 3}, ValueError, r"unknown reasoning-gym task 3: expected one of \["),
        (
            {"task": "gcd", "task_config": [1]},
            TypeError,
            r"task_config must be a dict of options for reasoning-gym task 'gcd' \(accepted keys: "
            r"\['min_numbers', 'max_numbers', 'min_value', 'max_value'\]\) or None, got list \[1\]",
        ),
        (
            {"task": "gcd", "task_config": {"seed": 1}},
            TypeError,
            r"task_config has unknown key\(s\) \['seed'\] for reasoning-gym task 'gcd'; accepted keys: "
            r"\['min_numbers', 'max_numbers', 'min_value', 'max_value'\]",
        ),
        (
            {"task": "gcd", "task_config": {"min_value": 50, "max_value": 10}},
            ValueError,
            r"task_config \{'min_value': 50, 'max_value': 10\} is invalid for reasoning-gym task 'gcd': ",
        ),
        (
            {"task": "gcd", "dataset_kwargs": {"task": "lcm"}},
            ValueError,
            r"task='gcd' and dataset_kwargs\['task'\]='lcm' disagree",
        ),
        (
            {"dataset_kwargs": {"foo": 1}},
            TypeError,
            r"dataset_kwargs has unknown key\(s\) \['foo'\] for dataset 'reasoning-gym'; "
            r"accepted keys: \['task', 'task_config', 'size'\]",
        ),
        (
            {"dataset_kwargs": {"size": 0}},
            ValueError,
            r"size must be a positive int \(entries in the pool\), got 0",
        ),
        (
            {"difficulty": 1},
            TypeError,
            r"unknown argument\(s\) \['difficulty'\]; accepted: \['task', 'task_config', ",
        ),
    ],
)
def test_bad_arguments_raise_one_clear_error(kwargs, error, match):
    with pytest.raises(error, match=match):
        make(**kwargs)


def test_without_the_extra_gym_make_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "reasoning_gym", None)  # `import reasoning_gym` now fails
    with pytest.raises(
        ImportError,
        match=r"reasoning tasks need the package 'reasoning-gym': pip install \"textgym\[reasoning\]\"",
    ):
        make()
    with pytest.raises(ImportError, match=r"pip install \"textgym\[reasoning\]\""):
        load_dataset("reasoning-gym", "test")


def test_splits_are_disjoint_by_question_deterministic_and_sized():
    splits = {
        split: load_dataset("reasoning-gym", split, **SMALL) for split in ("train", "validation", "test")
    }
    questions = {split: {e.prompt for e in examples} for split, examples in splits.items()}
    assert not questions["train"] & questions["validation"]
    assert not questions["train"] & questions["test"]
    assert not questions["validation"] & questions["test"]
    assert all(len(q) == len(splits[s]) for s, q in questions.items())  # no question twice in a split
    # chain_sum with two 1-digit terms has few distinct questions: fewer than the pool's 2,000.
    assert sum(map(len, questions.values())) < 2000
    assert splits["test"] == reasoning_examples("test", **SMALL)
    default = {split: load_dataset("reasoning-gym", split) for split in ("train", "validation", "test")}
    assert [len(default[split]) for split in ("train", "validation", "test")] == [1000, 122, 113]
    assert "reasoning-gym" in DATASETS


def test_examples_carry_the_answer_and_the_entry_behind_them():
    example = load_dataset("reasoning-gym", "test", **SMALL)[0]
    pool, entry = find_entry(example.prompt)
    assert pool.task == "chain_sum" and entry["question"] == example.prompt
    assert example.references == (str(entry["answer"]),) and example.turns == (("user", example.prompt),)
    assert find_entry("What is the airspeed of an unladen swallow?") is None


@pytest.mark.parametrize(
    ("text", "answer", "formatted"),
    [
        ("7 + 5 = 12, so the answer is 12.", "12", True),
        ("The answer is **-3**.", "-3", True),
        ("Answer: 4.5", "4.5", True),
        ("The answer is: 8", "8", True),
        ("First the answer is 2. Then I checked: the answer is 3. Done.", "3", True),
        ("The answer is 6\nsince 2 * 3 = 6", "6", True),
        ("I think it is 17 or maybe 1,024", "1,024", False),
        ("2 + 2 equals -1/2.", "-1/2", False),
        ("no digits here\n\nlast line\n", "last line", False),
        ("", "", False),
    ],
)
def test_answer_extraction(text, answer, formatted):
    assert extract_answer(text) == (answer, formatted)


def _chain_sum_example():
    example = load_dataset("reasoning-gym", "test", **SMALL)[0]
    return example, example.references[0]


def test_reward_values_for_right_wrong_and_unformatted_answers():
    example, right = _chain_sum_example()
    wrong = str(int(right) + 1)
    completions = [
        f"The answer is {right}.",  # right, formatted
        f"The answer is {wrong}.",  # wrong, formatted
        f"I get {right}",  # right, without the format
        "",  # empty
        " ".join(["the answer is"] * 12) + f" {right}",  # right and formatted, but a loop
    ]
    reward = make_reward("reasoning")
    total, parts = score(reward, [example.prompt] * 5, completions, [example.references] * 5)
    np.testing.assert_allclose(parts["answer"], [1, 0, 1, 0, 1])
    np.testing.assert_allclose(parts["formatted_answer"], [1, 0, 0, 0, 1])
    assert parts["degeneracy"][:3].tolist() == [0, 0, 0] and parts["degeneracy"][3] == -1
    # the format earns only with the answer: a wrong answer in the format earns nothing
    np.testing.assert_allclose(total[:4], [1.1, 0.0, 1.0, -0.5], rtol=1e-6)
    assert 0.5 < total[4] < 1.1 and total.dtype == np.float32
    assert {"reasoning", "answer", "answer_format", "formatted_answer"} <= set(REWARDS)
    np.testing.assert_allclose(
        make_reward("answer_format")([example.prompt] * 5, completions, [example.references] * 5),
        [1, 1, 0, 0, 1],
    )


def test_an_unknown_prompt_is_graded_by_exact_match_with_the_reference():
    reward = make_reward("answer")
    values = reward(["Is 2 prime?"] * 3, ["The answer is yes.", "The answer is no", "yes!"], [["yes"]] * 3)
    np.testing.assert_array_equal(values, np.array([1, 0, 0], dtype=np.float32))


def test_accuracy_metric_counts_exactly_right_answers():
    example, right = _chain_sum_example()
    texts = [f"The answer is {right}.", f"The answer is {right}0.", "The answer is 0.5 apples."]
    values = compute_metrics(["accuracy", "format"], [example.prompt] * 3, texts, [example.references] * 3)
    partial = make_reward("answer")([example.prompt], [texts[1]], [example.references])
    assert 0 < partial[0] < 1  # reasoning-gym's partial credit is not accuracy
    np.testing.assert_array_equal(values["accuracy"], np.array([1, 0, 0], dtype=np.float32))
    np.testing.assert_array_equal(values["format"], np.array([1, 1, 1], dtype=np.float32))
    assert {"accuracy", "format"} <= set(METRICS)


def test_the_env_rewards_a_right_answer_on_the_last_step():
    env = make(**SMALL, max_new_tokens=32, split="test")
    obs, info = env.reset(options={"index": 0})
    right = env.examples[0].references[0]
    tokens = env.tokenizer(f"The answer is {right}.", add_special_tokens=False)["input_ids"]
    rewards = []
    for token in [*tokens, next(iter(env.eos_token_ids))]:
        obs, reward, terminated, truncated, info = env.step(token)
        rewards.append(reward)
    assert terminated and not truncated and rewards[:-1] == [0.0] * len(tokens)
    assert info["text"] == f"The answer is {right}." and rewards[-1] == pytest.approx(1.1)
    assert info["reward_components"]["answer"] == 1.0 and info["reward_components"]["formatted_answer"] == 1.0


def test_the_task_benchmark_records_each_candidate(tmp_path, monkeypatch):
    """Smoke run of benchmarks/reasoning_tasks.py (the measurement behind the default task)."""
    benchmarks = Path(__file__).resolve().parents[1] / "benchmarks"
    monkeypatch.syspath_prepend(str(benchmarks))
    argv = ["reasoning_tasks.py", "--model", "tiny", "--n", "2", "--max-new-tokens", "3"]
    monkeypatch.setattr(sys, "argv", [*argv, "--candidates", "0,2", "--out", str(tmp_path)])
    importlib.import_module("reasoning_tasks").main()
    [path] = tmp_path.glob("reasoning-tasks-*.json")
    record = json.loads(path.read_text())
    assert [row["task"] for row in record["candidates"]] == ["basic_arithmetic", "chain_sum"]
    first = record["candidates"][0]
    assert first["task_config"] == DEFAULT_TASK_CONFIG and first["n"] == 2 and first["truncated"] == 1.0
    assert 0 <= first["accuracy"] <= 1 and record["git_commit"]
