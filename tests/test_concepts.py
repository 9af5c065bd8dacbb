"""TextGen-Concepts-v0: the concept sets drawn from chat messages, coverage, the reward and the env."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import textgym  # noqa: F401  (registers the envs)
from textgym.datasets import SPLITS, load_dataset
from textgym.datasets.concepts import (
    CONCEPT_COUNTS,
    concept_examples,
    concept_prompt,
    concepts_of,
    content_words,
    is_one_sentence,
)
from textgym.rewards import make_reward, score
from textgym.rewards.concepts import coverage, sentence_form
from textgym.rewards.lexical import copy_rate
from textgym.rewards.metrics import compute_metrics


def test_content_words_drop_stop_words_fillers_names_and_typos():
    words = content_words("Yeah haha I went climbing with Rachel every weekend last summer zzqxv")
    assert words == ["climbing", "weekend", "summer"]  # "went", "every", "last": stop words
    assert content_words("Soooo the dogs chased dogs around the park") == ["dogs", "chased", "park"]


def test_one_sentence_rule():
    assert is_one_sentence("I went climbing every weekend last summer with friends")
    assert not is_one_sentence("I went climbing. Then I slept all weekend long at home")
    assert not is_one_sentence("too short")


def test_prompt_round_trip_and_malformed_prompts():
    prompt = concept_prompt(["climb", "summer", "weekend"])
    assert prompt == "Write one sentence that uses all of these words: climb, summer, weekend."
    assert concepts_of(prompt) == ("climb", "summer", "weekend")
    with pytest.raises(ValueError, match="a concepts prompt must read 'Write one sentence"):
        concepts_of("Translate into French: Open")
    with pytest.raises(ValueError, match="lists no words"):
        concepts_of("Write one sentence that uses all of these words: .")


def test_corpus_sizes_disjoint_splits_and_repeatable_draws():
    splits = [concept_examples(split) for split in SPLITS]
    assert tuple(map(len, splits)) == (13043, 1734, 1533)  # the env docstring's table
    conversations = [{e.id.rpartition("/")[0] for e in examples} for examples in splits]
    assert not (conversations[0] & conversations[1] or conversations[0] & conversations[2])
    assert not conversations[1] & conversations[2]
    for example in splits[2][:200]:
        concepts = concepts_of(example.prompt)
        assert len(concepts) in CONCEPT_COUNTS and list(concepts) == sorted(concepts)
        assert coverage(concepts, example.references[0]) == 1.0  # the message uses its own concepts
        assert example.turns == (("user", example.prompt),)
    assert load_dataset("chitchat-concepts", "test") == splits[2]
    redrawn = concept_examples("test", seed=1)
    assert [e.id for e in redrawn] == [e.id for e in splits[2]]  # the same messages
    assert sum(a.prompt != b.prompt for a, b in zip(redrawn, splits[2])) > len(redrawn) // 4


@pytest.mark.parametrize("seed", [-1, 1.5, True, "0"])
def test_bad_seed_is_one_error(seed):
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        concept_examples("test", seed=seed)


def test_coverage_matches_inflections_by_porter_stem():
    assert coverage(["dog", "eat", "park"], "The dogs were eating in the park.") == 1.0
    assert coverage(["write", "book"], "She wrote a book.") == 0.5  # irregular forms do not count
    assert coverage(["Summer"], "summer rain") == 1.0
    assert coverage(["weekend"], "week end") == 0.0
    with pytest.raises(ValueError, match="at least one concept"):
        coverage([], "text")


def test_sentence_form_counts_function_words_per_concept():
    assert sentence_form(["dog", "frisbee", "park"], "The dog caught the frisbee in the park.") == 1.0
    assert sentence_form(["dog", "frisbee", "park"], "Dog, frisbee, park.") == 0.0
    assert sentence_form(["dog", "park"], "A dog runs") == 0.5  # one function word, two concepts
    with pytest.raises(ValueError, match="at least one concept"):
        sentence_form([], "text")


def test_copy_rate_counts_the_prompts_3_grams():
    prompt = concept_prompt(["dog", "frisbee", "park"])
    copied = "This sentence uses all of these words: dog, frisbee, park."
    # 14 tokens, 12 trigrams; all but "this sentence uses" and "sentence uses all" are the prompt's.
    assert copy_rate(prompt, copied) == pytest.approx(10 / 12)
    assert copy_rate(prompt, "The dog caught the frisbee in the park.") == 0.0
    assert copy_rate(prompt, "Dog, frisbee") == 1.0 and copy_rate(prompt, "dog") == 0.0


def test_concepts_reward_pays_concepts_in_a_sentence_of_its_own():
    prompt = concept_prompt(["dog", "frisbee", "park"])
    completions = [
        "The dog caught the frisbee in the park.",
        "A dog.",
        "",
        "Dog, frisbee, park.",
        "dog dog dog dog dog dog dog dog",
        "This sentence uses all of these words: dog, frisbee, park.",
    ]
    references = [("My dog caught a frisbee at the park",)] * 6
    total, parts = score(make_reward("concepts"), [prompt] * 6, completions, references)
    assert set(parts) == {"sentence_coverage", "rougeL", "degeneracy"} and total.dtype == np.float32
    # "A dog.": a third of the concepts, one function word for three concepts; the copy of the
    # prompt: every concept and enough function words, but 10 of its 12 trigrams are the prompt's.
    np.testing.assert_allclose(parts["sentence_coverage"], [1.0, 1 / 9, 0.0, 0.0, 0.0, 1 / 6], atol=1e-6)
    np.testing.assert_allclose(parts["degeneracy"][[0, 1, 2, 3, 5]], [0.0, 0.0, -1.0, 0.0, 0.0])
    assert parts["degeneracy"][4] < -0.5
    expected = parts["sentence_coverage"] + 0.5 * parts["rougeL"] + parts["degeneracy"]
    np.testing.assert_allclose(total, expected, rtol=1e-6)
    assert total[0] > total[5] > total[3] and total[0] > total[1] > total[4]
    plain = make_reward("coverage")([prompt] * 6, completions, references)
    np.testing.assert_allclose(plain, [1.0, 1 / 3, 0.0, 1.0, 1 / 3, 1.0], rtol=1e-6)  # the metric


def test_concepts_metrics():
    prompt = concept_prompt(["dog", "frisbee", "park"])
    texts, references = ["my dog caught a frisbee", "hello"], [("my dog caught a frisbee",)] * 2
    values = compute_metrics(["coverage", "bleu", "rougeL"], [prompt] * 2, texts, references)
    np.testing.assert_allclose(values["coverage"], [2 / 3, 0.0], rtol=1e-6)
    assert values["bleu"][0] == pytest.approx(100.0) and values["rougeL"][1] == 0.0


def test_env_prompts_name_the_concepts_and_the_reward_pays_coverage():
    env = gym.make("TextGen-Concepts-v0", model="tiny", split="test", max_new_tokens=4).unwrapped
    assert env.defaults.metrics == ("coverage", "bleu", "rougeL")
    _, info = env.reset(seed=0, options={"index": 3})
    example = env.examples[3]
    text = env.tokenizer.decode(env._prompt_ids)
    assert example.prompt in text and "one short, natural sentence" in text  # chat template + system
    for _ in range(4):
        _, reward, terminated, truncated, info = env.step(int(env.tokenizer.encode("a")[0]))
        if terminated or truncated:
            break
    assert set(info["reward_components"]) == {"sentence_coverage", "rougeL", "degeneracy"}
    redrawn = gym.make(
        "TextGen-Concepts-v0", model="tiny", split="test", dataset_kwargs={"seed": 2}
    ).unwrapped
    assert [e.id for e in redrawn.examples] == [e.id for e in env.examples]
    assert redrawn.examples != env.examples
