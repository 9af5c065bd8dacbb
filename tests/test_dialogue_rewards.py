"""Rewards that take the examples' extra columns, and the Dialogue reward candidates."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import textgym  # noqa: F401  (registers the envs)
from textgym.datasets import Example, example_columns, load_dataset
from textgym.rewards import REWARDS, NextTurnGain, call_reward, make_reward, score
from textgym.rewards.dialogue import ContextRelevance, _reference, answered_turn
from textgym.rewards.metrics import compute_metrics


def test_dialogue_examples_carry_the_users_next_turn():
    examples = load_dataset("chitchat-dialogue", "test")
    by_id = {example.id: example for example in examples}
    ended = 0
    for example in examples[:300]:
        conversation, turn = example.id.rsplit("/", 1)
        following = by_id.get(f"{conversation}/{int(turn) + 1}")
        next_turn = dict(example.extra)["next_turn"]
        if following is None:
            ended += 1
            assert next_turn == ""  # the chat ended with the reference
        else:
            assert next_turn == following.references[0] and next_turn
            assert following.turns[-1][1] == example.references[0]  # one chat, one turn on
    assert ended > 0


def test_example_columns_list_each_column_and_the_turns():
    examples = [
        Example("a", "p", ("r",), (("user", "hi"),), (("next_turn", "x"),)),
        Example("b", "q", ("s",), None, (("other", 1),)),
    ]
    columns = example_columns(examples)
    assert columns == {"next_turn": ["x", None], "other": [None, 1], "turns": [(("user", "hi"),), None]}
    assert example_columns([Example("c", "p", ("r",))]) == {}


def test_a_reward_gets_the_columns_it_names_and_no_others():
    got = {}

    def named(prompts, completions, references, next_turn):
        got["named"] = next_turn
        return [1.0] * len(completions)

    def takes_all(prompts, completions, references, **columns):
        got["all"] = columns
        return [2.0] * len(completions)

    def plain(prompts, completions, references):
        return [3.0] * len(completions)

    columns = {"next_turn": ["x", ""], "turns": [None, None]}
    batch = (["p", "q"], ["a", "b"], [["r"], ["s"]])
    for fn, value in ((named, 1.0), (takes_all, 2.0), (plain, 3.0)):
        np.testing.assert_array_equal(call_reward(fn, *batch, columns), [value, value])
    assert got == {"named": ["x", ""], "all": columns}
    with pytest.raises(ValueError, match=r"column 'next_turn' must be a list of one value per text \(2\)"):
        call_reward(named, *batch, {"next_turn": ["x"]})
    with pytest.raises(ValueError, match="column 'prompts' has the name of a reward argument"):
        call_reward(plain, *batch, {"prompts": ["x", "y"]})


def test_the_env_passes_a_dialogue_examples_columns_to_its_reward():
    seen = []

    def spy(prompts, completions, references, turns, next_turn):
        seen.append((list(turns), list(next_turn)))
        return [0.5] * len(completions)

    env = gym.make("TextGen-Dialogue-v0", model="tiny", max_new_tokens=2, reward=spy).unwrapped
    env.reset(seed=0, options={"index": 3})
    example = env.examples[3]
    for _ in range(2):
        *_, info = env.step(5)
    assert seen == [([example.turns], [dict(example.extra)["next_turn"]])]
    assert info["reward_components"] == {"spy": 0.5}


def test_answered_turn_from_the_turns_or_the_prompt():
    turns = (("user", "I hike."), ("assistant", "Nice!"), ("user", "Do you?"))
    assert answered_turn("ignored", turns) == "Do you?"
    assert answered_turn("User: I hike.\nAssistant: Nice!\nUser: Do you?\nAssistant:", None) == "Do you?"
    assert answered_turn("Tell me a story.", None) == "Tell me a story."


def test_relevance_ranks_an_answer_on_the_topic_above_an_off_topic_one_and_a_copy_at_zero():
    user = "I love hiking in the mountains on weekends, especially in the fall."
    prompt = f"User: {user}\nAssistant:"
    replies = [
        "Which trails do you like best when the leaves turn?",  # on the topic
        "My printer ran out of ink again this morning.",  # off the topic
        user,  # a copy of the user's turn
        "",
    ]
    values = ContextRelevance()([prompt] * 4, replies, [["-"]] * 4)
    assert values.dtype == np.float32 and values[0] > values[1] + 0.1
    assert values[2] == pytest.approx(0.0, abs=1e-6) and values[3] == 0.0


def test_next_turn_gain_on_the_tiny_model_scores_the_next_turn_only():
    reward = NextTurnGain(model="tiny")
    prompts = ["User: How old are you?\nAssistant:"] * 4
    replies = ["I'm 30. And you?", "Okay.", "I'm 30. And you?", "Anything"]
    next_turns = ["I'm 25!", "I'm 25!", "", None]
    values = reward(prompts, replies, [["-"]] * 4, next_turn=next_turns)
    assert values[1] == pytest.approx(0.0, abs=1e-5)  # the neutral reply itself
    assert values[2] == 0.0 and values[3] == 0.0  # no next turn: the chat ended
    assert -1.0 <= values[0] <= 1.0 and values[0] != 0.0

    # the gain is the difference of two mean log-likelihoods of the next turn's tokens
    tokenizer, model = _reference("tiny")
    means = []
    for reply in (replies[0], "Okay."):
        prefix, target = reward._encode(tokenizer, "How old are you?", reply, "I'm 25!")
        ids = torch.tensor([prefix + target])
        with torch.no_grad():
            log_probs = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
        picked = log_probs[torch.arange(ids.shape[1] - 1), ids[0, 1:]][len(prefix) - 1 :]
        assert len(picked) == len(target) > 0
        means.append(float(picked.mean()))
    assert values[0] == pytest.approx(np.clip(means[0] - means[1], -1, 1), abs=1e-4)


def test_next_turn_gain_keeps_the_neutral_score_and_says_what_it_needs(monkeypatch):
    reward = NextTurnGain(model="tiny")
    calls = []
    original = reward.log_likelihoods
    monkeypatch.setattr(
        reward, "log_likelihoods", lambda triples: calls.append(len(triples)) or original(triples)
    )
    batch = (["User: Hi\nAssistant:"] * 2, ["Hello!", "Hey there"], [["-"]] * 2)
    first = reward(*batch, next_turn=["What's up?", "What's up?"])
    second = reward(*batch, next_turn=["What's up?", "What's up?"])
    assert calls == [1, 2, 2] and np.array_equal(first, second)  # neutral once, replies each time
    with pytest.raises(ValueError, match="needs the examples' column 'next_turn'"):
        reward(*batch)
    for bad, message in (({"neutral": " "}, "neutral must be"), ({"clip": 0}, "clip must be")):
        with pytest.raises(ValueError, match=message):
            NextTurnGain(model="tiny", **bad)


def test_next_turn_gain_on_the_default_model_prefers_a_reply_the_next_turn_answers():
    reward = NextTurnGain()
    prompt = "User: I just got back from a trip to Japan.\nAssistant:"
    replies = ["How long were you there, and what was your favourite city?", "The sky is blue."]
    next_turn = "Two weeks! Kyoto was my favourite city, the temples were amazing."
    values = reward([prompt] * 2, replies, [["-"]] * 2, next_turn=[next_turn] * 2)
    assert values[0] > 0 > values[1]


def test_the_candidate_rewards_and_metrics_are_registered_and_score_an_episode():
    env = gym.make("TextGen-Dialogue-v0", model="tiny", max_new_tokens=3, reward="dialogue-mix").unwrapped
    examples = env.examples[:3]
    texts = ["That sounds fun!", "I like it too.", ""]
    columns = example_columns(examples)
    total, parts = score(
        env.reward_fn, [e.prompt for e in examples], texts, [e.references for e in examples], columns
    )
    assert set(parts) == {"similarity", "relevance", "next_turn", "degeneracy"}
    np.testing.assert_allclose(total, sum(parts.values()), rtol=1e-5)
    assert parts["degeneracy"][2] == -1.0
    metrics = compute_metrics(
        ["relevance", "next_turn"],
        [e.prompt for e in examples],
        texts,
        [e.references for e in examples],
        columns,
    )
    np.testing.assert_allclose(metrics["relevance"], parts["relevance"], rtol=1e-5)
    assert {"dialogue-relevance", "dialogue-next-turn", "relevance", "next_turn"} <= set(REWARDS)
    assert make_reward("dialogue-next-turn").terms.keys() == {"next_turn", "degeneracy"}


def test_the_study_script_scores_every_candidate_on_a_runs_texts(tmp_path, monkeypatch):
    """Smoke run of benchmarks/dialogue_rewards.py on a tiny Dialogue run trained on relevance."""
    from run_helpers import QUIET, tiny_config

    from textgym.agents.runs.training import train

    run = tmp_path / "run"
    kwargs = {"reward": "dialogue-relevance"}
    config = tiny_config(env="TextGen-Dialogue-v0", env_kwargs=kwargs, budget_tokens=20, eval_prompts=3)
    train(config, run, console=QUIET)
    benchmarks = Path(__file__).resolve().parents[1] / "benchmarks"
    monkeypatch.syspath_prepend(str(benchmarks))
    argv = ["dialogue_rewards.py", "--runs", str(run), "--next-turn-model", "tiny", "--out", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    importlib.import_module("dialogue_rewards").main()
    [path] = tmp_path.glob("dialogue-rewards-*.json")
    [row] = json.loads(path.read_text())["runs"]
    assert row["reward"] == "dialogue-relevance" and row["n"] == 3 and len(row["texts"]) == 3
    assert set(row["scores"]) == {"similarity", "relevance", "next_turn", "bleu", "degeneracy", "copy"}
    assert row["env"] == "TextGen-Dialogue-v0" and row["seed"] == 0
    before = json.loads((run / "eval-before.json").read_text())["examples"]
    relevance = row["scores"]["relevance"]
    assert relevance["before"] == pytest.approx(
        np.mean([r["reward"] - r["components"]["degeneracy"] for r in before])
    )
    assert relevance["change"] == pytest.approx(relevance["after"] - relevance["before"], abs=1e-9)


def test_dialogue_v1_is_v0s_task_with_the_relevance_reward():
    v0, v1 = (gym.make(f"TextGen-Dialogue-v{v}", model="tiny", max_new_tokens=3).unwrapped for v in "01")
    assert v1.defaults.reward == "dialogue-relevance" and v0.defaults.reward == "dialogue"  # v0 unchanged
    assert v1.defaults.metrics == ("relevance", "similarity", "bleu")
    assert v1.observation_space == v0.observation_space and v1.action_space == v0.action_space
    first = [env.reset(seed=7, options={"index": 5})[0]["input_ids"] for env in (v0, v1)]
    np.testing.assert_array_equal(*first)  # the same prompts, drawn the same way
    infos = []
    for env in (v0, v1):
        for action in (300, 301, 302):
            *_, info = env.step(action)
        infos.append(info)
    assert infos[0]["text"] == infos[1]["text"]
    assert set(infos[0]["reward_components"]) == {"similarity", "degeneracy"}
    assert set(infos[1]["reward_components"]) == {"relevance", "degeneracy"}
    example = v1.examples[5]
    relevance = ContextRelevance()([example.prompt], [infos[1]["text"]], [["-"]], turns=[example.turns])
    assert infos[1]["reward_components"]["relevance"] == pytest.approx(float(relevance[0]), abs=1e-6)
