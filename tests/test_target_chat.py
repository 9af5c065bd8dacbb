"""TextGen-TargetChat: target words, the language-model partner, and the turn rewards."""

from __future__ import annotations

import gymnasium as gym
import pytest

import textgym  # noqa: F401  (registers the envs)
from textgym.datasets import load_dataset
from textgym.datasets.games import target_vocabulary
from textgym.envs import FunctionPartner, LMPartner
from textgym.envs.target_chat import says

CHAT = "TextGen-TargetChat-v0"
END = 2  # the tiny model's end-of-turn token


def make(**kwargs):
    return gym.make(CHAT, **{"model": "tiny", "split": "test", **kwargs}).unwrapped


def say(env, text: str):
    for token in env.tokenizer(text, add_special_tokens=False)["input_ids"] + [END]:
        result = env.step(token)
    return result


def test_targets_are_frequent_content_words_the_context_does_not_use():
    examples = load_dataset("chitchat-targets", "validation")
    vocabulary = set(target_vocabulary())
    assert len(vocabulary) > 50
    for example in examples[:500]:
        target = dict(example.extra)["target"]
        assert example.references == (target,) and target in vocabulary
        assert target not in {w.lower() for _, text in example.turns for w in text.split()}
        assert example.turns[-1][0] == "user"  # the partner spoke last
    again = load_dataset("chitchat-targets", "validation")
    assert [e.extra for e in again[:50]] == [e.extra for e in examples[:50]]
    other = load_dataset("chitchat-targets", "validation", seed=1)
    assert [e.extra for e in other[:50]] != [e.extra for e in examples[:50]]


def test_says_matches_inflections():
    assert says("movie", "I watched two movies.") and says("cook", "She was cooking.")
    assert not says("movie", "I watched a film.")


def test_the_agent_reads_its_target_and_the_partner_never_does():
    env = make(partner=LMPartner("tiny"))
    env.reset(options={"index": 0})
    target = dict(env._example.extra)["target"]
    prompt = env.tokenizer.decode(env._prompt_ids)
    assert f'says the word "{target}"' in prompt
    say(env, "hello there")
    partner_view = env.partner.prompt(env._conversation)
    assert target not in partner_view
    assert "<|im_start|>user\nhello there<|im_end|>" in partner_view  # the agent is its user
    assert env.partner.replies == 1 and env.partner.seconds > 0


def test_success_needs_the_partner_to_say_the_target_and_the_agent_never_to():
    def echo_target(conversation):
        return f"I love {dict(conversation.example.extra)['target']}s, honestly."

    env = make(partner=FunctionPartner(echo_target))
    env.reset(options={"index": 3})
    _, reward, terminated, truncated, info = say(env, "what do you like?")
    parts = info["turn_reward_components"]
    assert terminated and parts["success"] == 1.0 and info["metrics"]["success"] == 1.0
    assert reward == pytest.approx(sum(parts.values()), abs=1e-5)
    assert set(parts) == {"progress", "smoothness", "degeneracy", "success"}

    env.reset(options={"index": 3})
    target = dict(env._example.extra)["target"]
    _, _, terminated, truncated, info = say(env, f"say {target} please")
    assert not terminated and info["turn_reward_components"]["success"] == 0.0
    _, _, terminated, _, info = say(env, "and now?")  # said once: never a success after
    assert not terminated and info["turn_reward_components"]["success"] == 0.0


def test_lm_partner_answers_a_batch_and_checks_its_arguments():
    env = make(partner=LMPartner("tiny", max_new_tokens=5))
    conversations = [env.start_conversation(env.examples[i]) for i in range(3)]
    for conversation in conversations:
        conversation.messages.append(("assistant", "hi"))
    replies = env.partner.reply(conversations)
    assert len(replies) == 3 and all(isinstance(r, str) for r in replies)
    assert env.partner.replies == 3 and 0 < env.partner.tokens <= 15
    with pytest.raises(ValueError, match="max_new_tokens must be a positive int"):
        LMPartner("tiny", max_new_tokens=0)
    with pytest.raises(TypeError, match="reward= is not accepted"):
        make(reward="dialogue")


def test_the_lm_partner_repeats_no_ngram_of_what_it_reads(monkeypatch):
    from textgym.envs.partners import _partner_model

    _, model = _partner_model("tiny")
    generate, produced = model.generate, []

    def spy(*args, **kwargs):
        out = generate(*args, **kwargs)
        produced.append((kwargs["no_repeat_ngram_size"], kwargs["input_ids"].shape[1], out))
        return out

    monkeypatch.setattr(model, "generate", spy)
    env = make(partner=LMPartner("tiny", max_new_tokens=12, no_repeat_ngram_size=2))
    conversations = [env.start_conversation(env.examples[i]) for i in range(3)]
    for conversation in conversations:
        conversation.messages += [("assistant", "so so so"), ("user", "yes yes yes"), ("assistant", "so so")]
    env.partner.reply(conversations)
    [(size, start, out)] = produced
    assert size == 2
    for row in out.tolist():
        for end in range(start, len(row)):  # every bigram a new token closes, up to the reply's end
            if row[end] in env.eos_token_ids or row[end] == env.tokenizer.pad_token_id:
                break
            assert (row[end - 1], row[end]) not in set(zip(row[: end - 1], row[1 : end - 1]))
    with pytest.raises(ValueError, match=r"no_repeat_ngram_size must be an int >= 0 \(0: off\), got -1"):
        LMPartner("tiny", no_repeat_ngram_size=-1)
    assert LMPartner("tiny").no_repeat_ngram_size == 4  # the default


def test_the_default_partner_is_one_per_process_so_a_vector_env_batches_it():
    first, second = make(), make()
    assert first.partner is second.partner and isinstance(first.partner, LMPartner)
