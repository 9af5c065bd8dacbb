"""Reward functions: known values, the batch checks, the registry and the weighted combinator."""

from __future__ import annotations

import numpy as np
import pytest
from rouge_score import rouge_scorer

from textgym.datasets.concepts import concept_prompt
from textgym.rewards import (
    REWARDS,
    EmbeddingSimilarity,
    Rouge,
    VaderSentiment,
    WeightedSum,
    bleu,
    chrf,
    combine,
    degeneracy_penalty,
    make_reward,
    repetition_rate,
    score,
)
from textgym.rewards.base import check_batch

CAT = "The cat sat on the mat."
CAT_PARAPHRASE = "A cat was sitting on the mat."
STOCKS = "Stock markets fell sharply today."
PROSE = "The quick brown fox jumps over the lazy dog near the quiet river bank."

# A small batch every registered reward must handle: (prompts, completions, references).
BATCH = (
    ["Say something.", "Describe the animal.", "Summarize."],
    ["I love this wonderful day!", CAT, "a b c d a b c d"],
    [["What a great day."], [CAT_PARAPHRASE, STOCKS], ["The letters repeat."]],
)


# Rewards that read their task from the prompt get prompts of that task's form.
CONCEPT_PROMPTS = [concept_prompt(words) for words in (["day", "love"], ["animal", "cat"], ["letters"])]
TASK_PROMPTS = {name: CONCEPT_PROMPTS for name in ("concepts", "coverage", "sentence_coverage")}


def batch_for(name: str) -> tuple[list, list, list]:
    return TASK_PROMPTS.get(name, BATCH[0]), *BATCH[1:]


def batch_of(completions: list[str], references: list[list[str]]) -> tuple[list, list, list]:
    return [""] * len(completions), completions, references


@pytest.fixture(scope="module")
def similarity() -> EmbeddingSimilarity:
    return EmbeddingSimilarity()


# --- repetition_rate and degeneracy_penalty -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (PROSE, 0.0),
        ("", 0.0),
        ("a b c", 0.0),  # fewer than 4 tokens
        ("a b c d", 0.0),  # a single 4-gram cannot repeat
        ("a b c d a b c d", 1 / 5),  # 5 grams, 4 distinct
        ("a b c d a b c d a b c d", 5 / 9),  # 9 grams, 4 distinct
        ("A B C D a b c d", 1 / 5),  # lower-cased before counting
        ("go , go , go , go", 1 / 2),  # punctuation is a token: 4 grams, 2 distinct
        ("the the the the the the", 2 / 3),  # 3 grams, 1 distinct
    ],
)
def test_repetition_rate_known_values(text: str, expected: float) -> None:
    assert repetition_rate(text) == pytest.approx(expected)


@pytest.mark.parametrize(("n", "expected"), [(1, 3 / 4), (2, 2 / 3), (3, 1 / 2), (5, 0.0)])
def test_repetition_rate_order(n: int, expected: float) -> None:
    assert repetition_rate("x x x x", n=n) == pytest.approx(expected)


def test_degeneracy_penalty_known_values() -> None:
    completions = ["", "   \n\t", PROSE, "a b c d a b c d", "a b c d a b c d a b c d"]
    values = degeneracy_penalty(*batch_of(completions, [["r"]] * len(completions)))
    assert values.dtype == np.float32
    np.testing.assert_allclose(values, [-1.0, -1.0, 0.0, -1 / 5, -5 / 9], rtol=1e-6)


def test_degeneracy_penalty_range_and_order() -> None:
    loop = " ".join(["I like it."] * 30)
    completions = [PROSE, "a b c d a b c d", loop]
    values = degeneracy_penalty(*batch_of(completions, [["r"]] * 3))
    assert np.all((values >= -1.0) & (values <= 0.0))
    assert values[0] == 0.0
    assert values[2] < values[1] < 0.0  # a longer loop is penalised more
    assert values[2] < -0.9


# --- ROUGE -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rouge1", "rouge2", "rougeL", "mean"])
def test_rouge_identical_and_disjoint(kind: str) -> None:
    values = Rouge(kind)(*batch_of([CAT, "alpha beta gamma delta"], [[CAT], ["one two three four"]]))
    np.testing.assert_allclose(values, [1.0, 0.0], atol=1e-6)


@pytest.mark.parametrize("kind", ["rouge1", "rouge2", "rougeL", "mean"])
def test_rouge_matches_rouge_score(kind: str) -> None:
    completions = ["the cats are sitting on a mat today", "police killed the gunman", "nothing alike"]
    references = [
        [CAT, "a dog sat on a rug"],
        ["the gunman was shot dead by police", "gunman police"],
        ["entirely different words here"],
    ]
    kinds = ["rouge1", "rouge2", "rougeL"] if kind == "mean" else [kind]
    scorer = rouge_scorer.RougeScorer(kinds, use_stemmer=True)
    expected = [
        max(np.mean([scorer.score(ref, hyp)[k].fmeasure for k in kinds]) for ref in refs)
        for hyp, refs in zip(completions, references, strict=True)
    ]
    values = Rouge(kind)(*batch_of(completions, references))
    np.testing.assert_allclose(values, expected, rtol=1e-6)
    assert 0.0 < values[0] < 1.0
    assert values[2] == 0.0
    assert Rouge(kind).name == ("rouge" if kind == "mean" else kind)


def test_rouge_takes_best_reference() -> None:
    rouge = Rouge("rouge1")
    alone = rouge(*batch_of([CAT, CAT], [["a dog ran in the park"], [CAT_PARAPHRASE]]))
    both = rouge(*batch_of([CAT], [["a dog ran in the park", CAT_PARAPHRASE]]))
    assert alone[0] < alone[1]
    assert both[0] == pytest.approx(max(alone))


def test_rouge_unknown_kind() -> None:
    with pytest.raises(ValueError, match=r"unknown ROUGE kind 'rouge3'.*rouge1.*rouge2.*rougeL.*mean"):
        Rouge("rouge3")


# --- BLEU and chrF ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [bleu, chrf], ids=["bleu", "chrf"])
def test_sacrebleu_identical_unrelated_and_multi_reference(fn) -> None:
    completions = [CAT, CAT, CAT]
    references = [[CAT], ["Stock markets fell sharply today"], [STOCKS, CAT]]
    values = fn(*batch_of(completions, references))
    assert values.dtype == np.float32
    assert np.all((values >= 0.0) & (values <= 1.0))
    assert values[0] == pytest.approx(1.0, abs=1e-6)
    assert values[1] < 0.2
    assert values[2] == pytest.approx(1.0, abs=1e-6)  # the matching reference among several


def test_bleu_matches_sacrebleu() -> None:
    import sacrebleu

    hyp, refs = "the cat is on the mat", ["the cat sat on the mat", "there is a cat on the mat"]
    values = bleu(*batch_of([hyp], [refs]))
    assert values[0] == pytest.approx(sacrebleu.sentence_bleu(hyp, refs).score / 100, rel=1e-6)
    values = chrf(*batch_of([hyp], [refs]))
    assert values[0] == pytest.approx(sacrebleu.sentence_chrf(hyp, refs).score / 100, rel=1e-6)


# --- VADER -----------------------------------------------------------------------------------------


def test_vader_sentiment_sign() -> None:
    completions = ["I love this, it is wonderful and amazing!", "This is terrible, I hate it.", "The door."]
    args = batch_of(completions, [["r"]] * 3)
    positive = VaderSentiment("positive")(*args)
    negative = VaderSentiment("negative")(*args)
    assert positive[0] > 0.5
    assert positive[1] < -0.5
    assert positive[2] == 0.0
    np.testing.assert_array_equal(negative, -positive)
    assert np.all(np.abs(positive) <= 1.0)


def test_vader_unknown_target() -> None:
    with pytest.raises(ValueError, match=r"unknown sentiment target 'neutral'.*positive.*negative"):
        VaderSentiment("neutral")


# --- embedding similarity --------------------------------------------------------------------------


def test_similarity_identical_paraphrase_unrelated(similarity: EmbeddingSimilarity) -> None:
    values = similarity(*batch_of([CAT, CAT_PARAPHRASE, STOCKS], [[CAT], [CAT], [CAT]]))
    assert values.dtype == np.float32
    assert values[0] == pytest.approx(1.0, abs=1e-4)
    assert values[1] > values[2] + 0.3
    assert values[1] > 0.7
    assert np.all((values >= -1.0 - 1e-4) & (values <= 1.0 + 1e-4))


def test_similarity_max_over_references(similarity: EmbeddingSimilarity) -> None:
    single = similarity(*batch_of([CAT, CAT], [[STOCKS], [CAT_PARAPHRASE]]))
    multi = similarity(*batch_of([CAT, CAT], [[STOCKS, CAT_PARAPHRASE], [CAT_PARAPHRASE, STOCKS]]))
    np.testing.assert_allclose(multi, [single.max(), single.max()], atol=1e-5)


def test_similarity_empty_reference_list(similarity: EmbeddingSimilarity) -> None:
    with pytest.raises(ValueError, match="example 1 has no reference text"):
        similarity(*batch_of([CAT, CAT], [[CAT], []]))


# --- check_batch -----------------------------------------------------------------------------------


def test_check_batch_accepts_a_consistent_batch() -> None:
    check_batch(*BATCH)  # no error
    check_batch([], [], [])


@pytest.mark.parametrize("name", sorted(REWARDS))
def test_batch_size_mismatch(name: str) -> None:
    fn = make_reward(name)
    with pytest.raises(ValueError, match=r"2 prompts, 3 completions, 3 reference lists"):
        fn(["p", "p"], ["a", "b", "c"], [["r"], ["r"], ["r"]])
    with pytest.raises(ValueError, match=r"2 prompts, 2 completions, 1 reference lists"):
        fn(["p", "p"], ["a", "b"], [["r"]])


@pytest.mark.parametrize("name", sorted(REWARDS))
def test_single_string_instead_of_list(name: str) -> None:
    fn = make_reward(name)
    with pytest.raises(TypeError, match="not a single string"):
        fn(["p"], "a completion", [["r"]])
    with pytest.raises(TypeError, match="not a single string"):
        fn("p", ["a completion"], [["r"]])


@pytest.mark.parametrize("name", sorted(REWARDS))
def test_reference_string_instead_of_list(name: str) -> None:
    fn = make_reward(name)
    with pytest.raises(TypeError, match="one sequence of reference texts per example, got a string"):
        fn(["p", "p"], ["a", "b"], ["ref one", "ref two"])


# --- the registry ----------------------------------------------------------------------------------


# The user's turn after each reply: the column the next-turn rewards need (chitchat-dialogue's).
NEXT_TURNS = {"next_turn": ["Yes, it was great!", "", "Why do you say that?"]}
NEEDS_NEXT_TURN = ("next_turn", "dialogue-next-turn", "dialogue-mix")


@pytest.mark.parametrize("name", sorted(REWARDS))
def test_every_registered_reward(name: str) -> None:
    fn = make_reward(name)
    assert callable(fn)
    columns = NEXT_TURNS if name in NEEDS_NEXT_TURN else {}
    values = fn(*batch_for(name), **columns)
    assert isinstance(values, np.ndarray)
    assert values.dtype == np.float32
    assert values.shape == (3,)
    assert np.all(np.isfinite(values))
    total, components = score(fn, *batch_for(name), NEXT_TURNS)  # each term takes the columns it names
    np.testing.assert_allclose(total, values, rtol=1e-6, atol=1e-6)
    assert components


def test_registered_rewards_values() -> None:
    """A few registered names agree with the classes they stand for."""
    np.testing.assert_array_equal(make_reward("rouge2")(*BATCH), Rouge("rouge2")(*BATCH))
    np.testing.assert_array_equal(make_reward("degeneracy")(*BATCH), degeneracy_penalty(*BATCH))
    np.testing.assert_array_equal(
        make_reward("sentiment-negative")(*BATCH), -make_reward("sentiment-positive")(*BATCH)
    )
    summarization = make_reward("summarization")
    np.testing.assert_allclose(
        summarization(*BATCH), Rouge()(*BATCH) + degeneracy_penalty(*BATCH), rtol=1e-6, atol=1e-7
    )
    assert summarization.name == "summarization"
    dialogue = make_reward("dialogue")
    assert dialogue.name == "dialogue"
    assert set(dialogue.terms) == {"similarity", "degeneracy"}


def test_make_reward_unknown_name() -> None:
    with pytest.raises(ValueError, match=r"unknown reward 'rouge4'.*'bleu'.*'similarity'"):
        make_reward("rouge4")


@pytest.mark.parametrize("bad", [None, 3, 1.5, ["bleu"]])
def test_make_reward_not_callable(bad: object) -> None:
    with pytest.raises(TypeError, match=f"registered name or a callable, got {type(bad).__name__}"):
        make_reward(bad)


def test_make_reward_callable_passes_through() -> None:
    def constant(prompts, completions, references):
        return np.full(len(completions), 0.25, dtype=np.float32)

    assert make_reward(constant) is constant
    assert make_reward(bleu) is bleu


# --- combine / WeightedSum / score -----------------------------------------------------------------


def test_combine_is_the_weighted_sum() -> None:
    total_fn = combine({"bleu": 2.0, "degeneracy": 0.5, "rouge1": -1})
    expected = 2.0 * bleu(*BATCH) + 0.5 * degeneracy_penalty(*BATCH) - Rouge("rouge1")(*BATCH)
    total = total_fn(*BATCH)
    assert total.dtype == np.float32
    assert total.shape == (3,)
    np.testing.assert_allclose(total, expected, rtol=1e-6, atol=1e-6)
    assert repr(total_fn) == "WeightedSum(bleu=2, degeneracy=0.5, rouge1=-1)"


def test_combine_callable_keys_use_their_names() -> None:
    def half(prompts, completions, references):
        return np.full(len(completions), 0.5, dtype=np.float32)

    total_fn = combine({half: 4.0, "degeneracy": 1.0}, name="mine")
    assert total_fn.name == "mine"
    assert list(total_fn.terms) == ["half", "degeneracy"]
    np.testing.assert_allclose(total_fn(*BATCH), 2.0 + degeneracy_penalty(*BATCH), rtol=1e-6)


def test_score_returns_total_and_components() -> None:
    total_fn = combine({"chrf": 1.0, "degeneracy": 3.0})
    total, components = score(total_fn, *BATCH)
    assert set(components) == {"chrf", "degeneracy"}
    np.testing.assert_allclose(components["chrf"], chrf(*BATCH), rtol=1e-6)
    np.testing.assert_allclose(components["degeneracy"], degeneracy_penalty(*BATCH), rtol=1e-6)
    np.testing.assert_allclose(total, components["chrf"] + 3.0 * components["degeneracy"], rtol=1e-6)
    np.testing.assert_allclose(total, total_fn(*BATCH), rtol=1e-6)
    assert all(v.dtype == np.float32 and v.shape == (3,) for v in (total, *components.values()))


def test_score_of_a_plain_function() -> None:
    total, components = score(bleu, *BATCH)
    assert list(components) == ["bleu"]
    np.testing.assert_array_equal(components["bleu"], total)
    np.testing.assert_array_equal(total, bleu(*BATCH))
    _, components = score(Rouge("rougeL"), *BATCH)
    assert list(components) == ["rougeL"]


def wrong_shape(prompts, completions, references):
    return np.zeros(len(completions) + 1)


def returns_nan(prompts, completions, references):
    return np.array([np.nan] * len(completions))


def returns_list(prompts, completions, references):
    return [1] * len(completions)


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (wrong_shape, r"'wrong_shape' returned shape \(4,\), expected \(3,\)"),
        (returns_nan, r"'returns_nan' returned non-finite values"),
    ],
)
def test_misbehaving_term_is_named(fn, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        combine({fn: 1.0, "degeneracy": 1.0})(*BATCH)
    with pytest.raises(ValueError, match=message):
        score(fn, *BATCH)


def returns_strings(prompts, completions, references):
    return ["0.5"] * len(completions)


def returns_dicts(prompts, completions, references):
    return [{"reward": 1.0}] * len(completions)


def returns_objects(prompts, completions, references):
    return [object()] * len(completions)


def returns_ragged(prompts, completions, references):
    return [[1.0], [1.0, 2.0]] + [[0.0]] * (len(completions) - 2)


@pytest.mark.parametrize("fn", [returns_strings, returns_dicts, returns_objects, returns_ragged])
def test_non_numeric_reward_output_is_one_error_naming_the_function(fn) -> None:
    """Numeric strings ("0.5") were silently accepted; dicts and objects raised numpy's own error."""
    message = rf"reward function '{fn.__name__}' returned .*: expected a sequence of numbers"
    with pytest.raises(TypeError, match=message):
        score(fn, *BATCH)
    with pytest.raises(TypeError, match=message):
        combine({fn: 1.0, "degeneracy": 1.0})(*BATCH)


def test_term_output_is_converted_to_float32() -> None:
    total, components = score(combine({returns_list: 0.5}), *BATCH)
    assert components["returns_list"].dtype == np.float32
    np.testing.assert_array_equal(total, [0.5, 0.5, 0.5])


def test_empty_terms() -> None:
    with pytest.raises(ValueError, match="at least one term"):
        combine({})
    with pytest.raises(ValueError, match="at least one term"):
        WeightedSum({})


@pytest.mark.parametrize("weight", ["1", None, [1.0], float("nan"), float("inf")])
def test_bad_weight(weight: object) -> None:
    with pytest.raises(TypeError, match="weight of term 'bleu' must be a finite number"):
        combine({"bleu": weight})


def test_weighted_sum_term_not_callable() -> None:
    with pytest.raises(TypeError, match="term 'x' is not callable"):
        WeightedSum({"x": ("bleu", 1.0)})


def test_combine_rejects_terms_with_the_same_name() -> None:
    def first(prompts, completions, references):
        return np.ones(len(completions))

    def second(prompts, completions, references):
        return np.zeros(len(completions))

    second.__name__ = "first"
    with pytest.raises(ValueError, match="first"):
        combine({first: 1.0, second: 2.0})


def test_distinct_n_counts_unique_ngrams_over_all_texts():
    from textgym.rewards.lexical import distinct_n

    assert distinct_n(["a b c", "a b d"], 1) == pytest.approx(4 / 6)
    assert distinct_n(["a b c", "a b d"], 2) == pytest.approx(3 / 4)
    assert distinct_n(["the the the the"], 2) == pytest.approx(1 / 3)
    assert distinct_n(["", "one"], 2) == 0.0
    with pytest.raises(ValueError, match="n must be a positive int"):
        distinct_n(["a"], 0)


def test_translation_reward_is_chrf_plus_degeneracy_on_known_strings():
    fn = make_reward("translation")
    completions = ["Ouvrir le fichier", "", "fichier fichier fichier fichier fichier"]
    references = [("Ouvrir le fichier",), ("Ouvrir",), ("Ouvrir le fichier",)]
    total, parts = score(fn, ["p"] * 3, completions, references)
    assert total.dtype == np.float32 and set(parts) == {"chrf", "degeneracy"}
    np.testing.assert_allclose(parts["chrf"][:2], [1.0, 0.0])  # exact match, empty text
    assert 0 < parts["chrf"][2] < 1
    np.testing.assert_allclose(parts["degeneracy"], [0.0, -1.0, -0.5])
    np.testing.assert_allclose(total, parts["chrf"] + parts["degeneracy"])


def test_translation_metrics_bleu_chrf_ter():
    from textgym.rewards.metrics import compute_metrics

    values = compute_metrics(
        ["bleu", "chrf", "ter"], ["p", "p"], ["Ouvrir le fichier", "Fermer"], [("Ouvrir le fichier",)] * 2
    )
    np.testing.assert_allclose([values[k][0] for k in ("bleu", "chrf", "ter")], [100.0, 100.0, 0.0])
    assert (
        values["bleu"][1] == 0 and values["chrf"][1] < 10 and values["ter"][1] == 100.0
    )  # 3 edits / 3 words
