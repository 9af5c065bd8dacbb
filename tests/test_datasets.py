"""Datasets: the packaged corpora, the split rule, the user's JSONL/CSV files and the hub prefix."""

from __future__ import annotations

import collections
import csv
import importlib.util
import itertools
import json
import sys
from pathlib import Path

import pytest

from textgym.datasets import DATASETS, SPLITS, Example, chitchat, dataset_options, load_dataset, split_of
from textgym.datasets.aclsum import INSTRUCTION, detokenize, summarization_examples
from textgym.datasets.chitchat import _data_file, conversations, dialogue_examples, opening_examples
from textgym.datasets.files import file_examples
from textgym.datasets.translation import clean_pairs, keep_pair, pair_examples, translation_examples

CHITCHAT = ("chitchat-dialogue", "chitchat-openings")


def conversation_id(example: Example) -> str:
    return example.id.rpartition("/")[0]


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# --- the registered corpora ------------------------------------------------------------------------


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("name", sorted(DATASETS))
def test_registered_dataset_examples(name: str, split: str) -> None:
    examples = load_dataset(name, split)
    assert isinstance(examples, tuple)
    assert examples
    for example in examples:
        assert isinstance(example, Example)
        assert isinstance(example.prompt, str) and example.prompt.strip()
        assert isinstance(example.references, tuple) and example.references
        assert all(isinstance(ref, str) and ref.strip() for ref in example.references)
    assert len({example.id for example in examples}) == len(examples)


def test_registry_has_descriptions() -> None:
    assert set(DATASETS) >= {"aclsum", *CHITCHAT}
    for builder, description in DATASETS.values():
        assert callable(builder)
        assert isinstance(description, str) and description


@pytest.mark.parametrize("name", CHITCHAT)
def test_chitchat_splits_are_disjoint_by_conversation(name: str) -> None:
    ids = {split: {conversation_id(e) for e in load_dataset(name, split)} for split in SPLITS}
    assert not ids["train"] & ids["validation"]
    assert not ids["train"] & ids["test"]
    assert not ids["validation"] & ids["test"]
    for split, conv_ids in ids.items():
        assert all(split_of(conv_id) == split for conv_id in conv_ids)
    sizes = {split: len(conv_ids) for split, conv_ids in ids.items()}
    assert sizes["train"] > 5 * sizes["validation"]
    assert sizes["train"] > 5 * sizes["test"]


def test_aclsum_official_splits() -> None:
    ids = {split: {e.id for e in load_dataset("aclsum", split)} for split in SPLITS}
    assert {split: len(v) for split, v in ids.items()} == {"train": 100, "validation": 50, "test": 100}
    assert not ids["train"] & ids["validation"]
    assert not ids["train"] & ids["test"]
    assert not ids["validation"] & ids["test"]


@pytest.mark.parametrize(
    ("builder", "cache", "kwargs"),
    [
        (dialogue_examples, chitchat._dialogue_examples, {}),
        (dialogue_examples, chitchat._dialogue_examples, {"context_turns": 1}),
        (opening_examples, chitchat._opening_examples, {}),
        (summarization_examples, summarization_examples, {}),
    ],
)
def test_loading_is_deterministic(builder, cache, kwargs: dict) -> None:
    first = builder("validation", **kwargs)
    cache.cache_clear()  # build it afresh
    again = builder("validation", **kwargs)
    assert again is not first
    assert again == first


# --- the split rule --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "split"),
    [("row-0", "train"), ("row-1", "test"), ("row-6", "validation"), ("row-8", "test"), ("hello", "train")],
)
def test_split_of_is_stable(key: str, split: str) -> None:
    assert split_of(key) == split


def test_split_of_fractions() -> None:
    counts = collections.Counter(split_of(f"key-{i}") for i in range(5000))
    assert set(counts) == set(SPLITS)
    assert counts["train"] / 5000 == pytest.approx(0.8, abs=0.03)
    assert counts["validation"] / 5000 == pytest.approx(0.1, abs=0.03)
    assert counts["test"] / 5000 == pytest.approx(0.1, abs=0.03)


# --- dialogue and openings -------------------------------------------------------------------------


@pytest.mark.parametrize("context_turns", [1, 2, 3, 5])
def test_dialogue_examples_shape(context_turns: int) -> None:
    examples = load_dataset("chitchat-dialogue", "validation", context_turns=context_turns)
    lengths = collections.Counter()
    for example in examples:
        turns = example.turns
        assert turns is not None
        assert 1 <= len(turns) <= context_turns
        lengths[len(turns)] += 1
        assert turns[-1][0] == "user"
        roles = [role for role, _ in turns]
        assert all(a != b for a, b in itertools.pairwise(roles))
        assert set(roles) <= {"user", "assistant"}
        assert all(text.strip() for _, text in turns)
        assert example.prompt.endswith("\nAssistant:")
        expected = "\n".join([*(f"{r.capitalize()}: {t}" for r, t in turns), "Assistant:"])
        assert example.prompt == expected
        assert len(example.references) == 1
    assert lengths[context_turns] > 0  # the context is filled whenever the chat allows


def test_dialogue_single_turn_context() -> None:
    examples = load_dataset("chitchat-dialogue", "test", context_turns=1)
    assert all(len(e.turns) == 1 and e.turns[0][0] == "user" for e in examples)
    first = examples[0]
    assert first.prompt == f"User: {first.turns[0][1]}\nAssistant:"


def test_dialogue_follows_the_conversation() -> None:
    """Example ``<conv>/<i>`` has turn i of the chat as reference and the turns before it as context."""
    chats = dict(conversations())
    for example in load_dataset("chitchat-dialogue", "test", context_turns=2)[:500]:
        conv_id, _, index = example.id.rpartition("/")
        turns = chats[conv_id]
        i = int(index)
        assert example.references == (turns[i],)
        assert tuple(text for _, text in example.turns) == turns[max(0, i - 2) : i]


@pytest.mark.parametrize("context_turns", [0, -1, "3", 2.0, None])
def test_dialogue_bad_context_turns(context_turns: object) -> None:
    with pytest.raises(ValueError, match=f"context_turns must be a positive int, got {context_turns!r}"):
        load_dataset("chitchat-dialogue", "train", context_turns=context_turns)


@pytest.mark.parametrize("prompt_words", [3, 6])
def test_openings(prompt_words: int) -> None:
    chats = dict(conversations())
    examples = load_dataset("chitchat-openings", "validation", prompt_words=prompt_words)
    for example in examples:
        assert len(example.prompt.split()) == prompt_words
        assert example.turns is None
        (reference,) = example.references
        assert reference.strip()
        conv_id, _, index = example.id.rpartition("/")
        turn = chats[conv_id][int(index)]
        assert f"{example.prompt} {reference}" == " ".join(turn.split())
    # Every turn of at least min_words=12 words in the split's chats, and only those, opens an example.
    expected = {
        f"{conv_id}/{i}"
        for conv_id, turns in conversations()
        if split_of(conv_id) == "validation"
        for i, turn in enumerate(turns)
        if len(turn.split()) >= 12
    }
    assert len(examples) == len(expected)
    assert {e.id for e in examples} == expected


def test_openings_min_words() -> None:
    examples = load_dataset("chitchat-openings", "test", prompt_words=2, min_words=30)
    assert examples
    assert all(len(e.prompt.split()) + len(e.references[0].split()) >= 30 for e in examples)
    assert len(examples) < len(load_dataset("chitchat-openings", "test", prompt_words=2))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"prompt_words": 0}, "prompt_words must be a positive int, got 0"),
        ({"prompt_words": "6"}, "prompt_words must be a positive int, got '6'"),
        ({"prompt_words": 6, "min_words": 6}, "min_words must be an int above prompt_words=6, got 6"),
        ({"min_words": 4}, "min_words must be an int above prompt_words=6, got 4"),
        ({"min_words": 12.5}, "min_words must be an int above prompt_words=6, got 12.5"),
    ],
)
def test_openings_bad_options(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_dataset("chitchat-openings", "train", **options)


def test_conversation_turns_alternate_speakers() -> None:
    raw = json.loads(_data_file().read_text(encoding="utf-8"))
    chats = dict(conversations())
    for conv_id, conv in raw.items():
        senders = [
            message[0]["sender"] for message in conv["messages"] if any(u["text"].strip() for u in message)
        ]
        # One turn per run of one speaker: turns alternate speakers even where the corpus
        # has an empty message between two of one speaker's messages.
        runs = [sender for sender, _ in itertools.groupby(senders)]
        assert len(runs) == len(chats[conv_id]), conv_id


# --- aclsum ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("paths ( QA ) .", "paths (QA)."),
        ("do n't", "don't"),
        ("it 's a test , right ?", "it's a test, right?"),
        ("we 've seen 50 % gains ; see [ 1 ] .", "we've seen 50% gains; see [1]."),
        ("I 'm sure they 're here : { x }", "I'm sure they're here: {x}"),
        ("  spaced   out  ", "spaced out"),
        ("already clean.", "already clean."),
    ],
)
def test_detokenize(text: str, expected: str) -> None:
    assert detokenize(text) == expected


@pytest.mark.parametrize("split", SPLITS)
def test_summarization_prompt(split: str) -> None:
    for example in load_dataset("aclsum", split):
        assert example.prompt.startswith(INSTRUCTION)
        assert "\n\nTitle: " in example.prompt
        assert "\n\nAbstract: " in example.prompt
        assert example.prompt.endswith("\n\nSummary:")
        ((role, request),) = example.turns
        assert role == "user"
        assert example.prompt == f"{request}\n\nSummary:"
        abstract = request.split("\n\nAbstract: ", 1)[1]
        assert " ." not in abstract and "( " not in abstract
        assert len(example.references) == 1


# --- user files ------------------------------------------------------------------------------------


def test_jsonl_with_split_column(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "data.jsonl",
        [
            {"id": "a", "prompt": "Hello?", "reference": "Hi!", "split": "train"},
            {"id": "b", "prompt": "Name?", "references": ["Bob", "Robert"], "split": "test"},
            {"id": "c", "prompt": "Age?", "reference": "Forty", "split": "train"},
            {"id": "d", "prompt": "Where?", "reference": "Here", "split": "validation"},
        ],
    )
    assert load_dataset(str(path), "train") == (
        Example("a", "Hello?", ("Hi!",)),
        Example("c", "Age?", ("Forty",)),
    )
    assert load_dataset(str(path), "test") == (Example("b", "Name?", ("Bob", "Robert")),)
    assert load_dataset(str(path), "validation") == (Example("d", "Where?", ("Here",)),)
    assert file_examples(path, "test") == load_dataset(str(path), "test")


def test_jsonl_hash_split_and_blank_lines(tmp_path: Path) -> None:
    rows = [{"id": f"row-{i}", "prompt": f"p{i}", "reference": f"r{i}"} for i in range(12)]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n\n  \n", encoding="utf-8")
    got = {split: [e.id for e in load_dataset(str(path), split)] for split in SPLITS}
    assert got == {
        "train": ["row-0", "row-2", "row-3", "row-4", "row-5", "row-7", "row-9", "row-10"],
        "validation": ["row-6"],
        "test": ["row-1", "row-8", "row-11"],
    }


def test_jsonl_without_id_uses_prompt(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "data.jsonl", [{"prompt": "row-1", "references": "only one"}])
    assert load_dataset(str(path), "test") == (Example("row-1", "row-1", ("only one",)),)


def test_csv_with_and_without_split(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "data.csv",
        ["id", "prompt", "reference", "split"],
        [
            ["x", "Translate: chat", "cat", "validation"],
            ["row-1", "Translate: chien", "dog", ""],  # no split given: hashed, row-1 -> test
            ["y", 'Say, "hi"', "hi, there", "validation"],
            ["row-0", "Translate: oiseau", "bird", ""],  # row-0 -> train
        ],
    )
    assert load_dataset(str(path), "validation") == (
        Example("x", "Translate: chat", ("cat",)),
        Example("y", 'Say, "hi"', ("hi, there",)),
    )
    assert load_dataset(str(path), "test") == (Example("row-1", "Translate: chien", ("dog",)),)
    assert load_dataset(str(path), "train") == (Example("row-0", "Translate: oiseau", ("bird",)),)


def test_path_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "reference": "r", "split": "train"}])
    assert load_dataset("~/d.jsonl", "train") == (Example("p", "p", ("r",)),)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [{"prompt": "ok", "reference": "r"}, {"reference": "r"}],
            r"data\.jsonl:2: needs a non-empty 'prompt'",
        ),
        ([{"prompt": "   ", "reference": "r"}], r"data\.jsonl:1: needs a non-empty 'prompt'"),
        ([{"prompt": 5, "reference": "r"}], r"data\.jsonl:1: needs a non-empty 'prompt'"),
        ([{"prompt": "p"}], r"data\.jsonl:1: needs a 'reference' or 'references' column.*\['prompt'\]"),
        ([{"prompt": "p", "reference": ""}], r"data\.jsonl:1: the 'reference' column is empty"),
        ([{"prompt": "p", "references": [1, 2]}], r"must be a non-empty list of non-empty strings"),
        ([{"prompt": "p", "reference": 3}], r"'references' must be a non-empty list of non-empty strings"),
        ([{"prompt": "p", "reference": "r", "split": "dev"}], r"data\.jsonl:1: unknown split 'dev'"),
        ([["p", "r"]], r"data\.jsonl:1: each line must be a JSON object, got list"),
        (["just text"], r"data\.jsonl:1: each line must be a JSON object, got str"),
    ],
)
def test_jsonl_bad_rows(tmp_path: Path, rows: list, message: str) -> None:
    path = write_jsonl(tmp_path / "data.jsonl", rows)
    with pytest.raises(ValueError, match=message):
        load_dataset(str(path), "train")


def test_jsonl_bad_json(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"prompt": "p", "reference": "r"}\n{"prompt": "p",\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"data\.jsonl:2: not valid JSON"):
        load_dataset(str(path), "train")


@pytest.mark.parametrize(
    ("header", "rows", "message"),
    [
        (["prompt", "reference"], [["p", "r"], ["", "r"]], r"data\.csv:3: needs a non-empty 'prompt'"),
        (["prompt", "reference"], [["p", ""]], r"data\.csv:2: the 'reference' column is empty"),
        (["question", "reference"], [["p", "r"]], r"needs a non-empty 'prompt'.*\['question', 'reference'\]"),
        (["prompt", "reference", "split"], [["p", "r", "eval"]], r"data\.csv:2: unknown split 'eval'"),
        (
            ["prompt", "reference"],
            [["p", "r", "extra"]],
            r"data\.csv:2: the row has more fields than the header",
        ),
    ],
)
def test_csv_bad_rows(tmp_path: Path, header: list[str], rows: list[list[str]], message: str) -> None:
    path = write_csv(tmp_path / "data.csv", header, rows)
    with pytest.raises(ValueError, match=message):
        load_dataset(str(path), "train")


def test_file_with_wrong_suffix(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_text("prompt,reference\np,r\n", encoding="utf-8")
    with pytest.raises(
        ValueError, match=r"unknown dataset .*data\.txt.*a path ending in \['\.jsonl', '\.csv'\]"
    ):
        load_dataset(str(path), "train")
    with pytest.raises(ValueError, match=r"data\.txt' must end in one of \['\.jsonl', '\.csv'\]"):
        file_examples(path, "train")


@pytest.mark.parametrize("name", ["missing.jsonl", "missing.csv"])
def test_missing_file(tmp_path: Path, name: str) -> None:
    with pytest.raises(FileNotFoundError, match=f"{name}' does not exist"):
        load_dataset(str(tmp_path / name), "train")


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    (tmp_path / "dir.jsonl").mkdir()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset(str(tmp_path / "dir.jsonl"), "train")


def test_file_without_examples_in_split(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "data.jsonl", [{"prompt": "p", "reference": "r", "split": "train"}])
    assert load_dataset(str(path), "train")
    with pytest.raises(ValueError, match=r"has no examples in split 'test'"):
        load_dataset(str(path), "test")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match=r"has no examples in split 'train'"):
        load_dataset(str(path), "train")


def test_file_takes_no_options(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "data.jsonl", [{"prompt": "p", "reference": "r", "split": "train"}])
    with pytest.raises(
        TypeError, match=r"unknown option\(s\) \['context_turns'\] .*data\.jsonl'; accepted: none"
    ):
        load_dataset(str(path), "train", context_turns=2)


def test_jsonl_empty_references_list(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "data.jsonl", [{"prompt": "p", "references": [], "split": "train"}])
    with pytest.raises(ValueError, match="references"):
        load_dataset(str(path), "train")


# --- names, splits and the hub ---------------------------------------------------------------------


def test_unknown_dataset() -> None:
    expected = r"unknown dataset 'wikitext'.*\['aclsum', 'chitchat-concepts', 'chitchat-dialogue'"
    with pytest.raises(ValueError, match=expected):
        load_dataset("wikitext", "train")


@pytest.mark.parametrize("split", ["dev", "val", "Train", ""])
def test_unknown_split(split: str) -> None:
    with pytest.raises(ValueError, match=rf"unknown split '{split}'.*\['train', 'validation', 'test'\]"):
        load_dataset("aclsum", split)


@pytest.mark.parametrize("name", [None, 3, "", Path("data.jsonl")])
def test_dataset_name_must_be_a_string(name: object) -> None:
    with pytest.raises(TypeError, match="dataset must be a non-empty string"):
        load_dataset(name, "train")


def test_unknown_option_for_a_corpus() -> None:
    with pytest.raises(
        TypeError, match=r"unknown option\(s\) \['context_turns'\] for dataset 'aclsum'; accepted: none"
    ):
        load_dataset("aclsum", "train", context_turns=2)
    # It used to be "opening_examples() got an unexpected keyword argument 'foo'".
    with pytest.raises(
        TypeError,
        match=r"\['foo'\] for dataset 'chitchat-openings'; accepted: \['prompt_words', 'min_words'\]",
    ):
        load_dataset("chitchat-openings", "train", foo=1)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("chitchat-dialogue", ("context_turns",)),
        ("chitchat-openings", ("prompt_words", "min_words")),
        ("aclsum", ()),
        ("data.csv", ()),
        ("hf:imdb", ("prompt_column", "reference_column", "translation")),
        ("jupyterlab-l10n", ("target",)),
    ],
)
def test_dataset_options_are_the_builders_parameters(name: str, options: tuple) -> None:
    assert dataset_options(name) == options


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("chitchat-openings", {"prompt_words": [6]}, r"prompt_words must be a positive int, got \[6\]"),
        ("chitchat-openings", {"min_words": {}}, r"min_words must be an int above prompt_words=6, got \{\}"),
        ("chitchat-dialogue", {"context_turns": [3]}, r"context_turns must be a positive int, got \[3\]"),
        ("chitchat-dialogue", {"context_turns": True}, r"context_turns must be a positive int, got True"),
    ],
)
def test_option_values_are_checked_before_the_cache(name: str, options: dict, message: str) -> None:
    """A list used to reach the builders' lru_cache first: "unhashable type: 'list'"."""
    with pytest.raises(ValueError, match=message):
        load_dataset(name, "train", **options)


@pytest.mark.skipif(importlib.util.find_spec("datasets") is not None, reason="'datasets' is installed")
@pytest.mark.parametrize("name", ["hf:imdb", "hf:glue:sst2"])
def test_hub_needs_the_datasets_package(name: str) -> None:
    with pytest.raises(ImportError, match=r"needs the package 'datasets'"):
        load_dataset(name, "train")


class _FakeTable:
    """The slice of a ``datasets.Dataset`` the hub loader uses."""

    def __init__(self, rows: list[dict]):
        self.rows = rows
        self.column_names = list(rows[0])

    def __iter__(self):
        return iter(self.rows)


def test_hub_datasets_map_columns_through_a_stand_in_library(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_load_dataset(path, config, split):
        calls.append((path, config, split))
        return _FakeTable(
            [{"text": "Great film.", "label": "pos"}, {"text": "Dull.", "label": ["neg", "bad"]}]
        )

    fake = type(sys)("datasets")
    fake.load_dataset = fake_load_dataset
    monkeypatch.setitem(sys.modules, "datasets", fake)
    examples = load_dataset("hf:imdb:plain", "test", prompt_column="text", reference_column="label")
    assert calls == [("imdb", "plain", "test")]
    assert examples == (
        Example("imdb/test/0", "Great film.", ("pos",)),
        Example("imdb/test/1", "Dull.", ("neg", "bad")),
    )
    with pytest.raises(
        ValueError, match=r"has no column\(s\) \['prompt', 'reference'\]; columns: \['text', 'label'\]"
    ):
        load_dataset("hf:imdb", "train")


def test_csv_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    """Spreadsheet programs write UTF-8 CSV with a BOM; it used to become part of 'prompt'."""
    path = tmp_path / "excel.csv"
    path.write_bytes("prompt,reference,split\nhi there,hello,train\n".encode("utf-8-sig"))
    (example,) = file_examples(path, "train")
    assert example.prompt == "hi there" and example.references == ("hello",)


def test_jsonl_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes('{"prompt": "hi", "reference": "hello", "split": "test"}\n'.encode("utf-8-sig"))
    assert file_examples(path, "test")[0].prompt == "hi"


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_file_that_is_not_utf8_names_the_file_and_line(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"latin1{suffix}"
    good = "prompt,reference\nhi,hello\n" if suffix == ".csv" else '{"prompt": "hi", "reference": "hello"}\n'
    bad = "caf\xe9,ol\xe9\n" if suffix == ".csv" else '{"prompt": "caf\xe9", "reference": "x"}\n'
    path.write_bytes((good + bad).encode("latin-1"))
    line = 3 if suffix == ".csv" else 2  # the CSV header is line 1
    with pytest.raises(ValueError, match=rf"{path.name}:{line}: not UTF-8 text .*save the file as UTF-8"):
        file_examples(path, "train")


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_empty_reference_is_called_empty_not_missing(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"empty{suffix}"
    text = "prompt,reference\nhi,\n" if suffix == ".csv" else '{"prompt": "hi", "reference": ""}\n'
    path.write_text(text)
    with pytest.raises(ValueError, match=r":2: the 'reference' column is empty" if suffix == ".csv" else
                       r":1: the 'reference' column is empty"):  # fmt: skip
        file_examples(path, "train")


@pytest.mark.parametrize("falsy", [0, "0", False])
def test_falsy_ids_are_kept(tmp_path: Path, falsy: object) -> None:
    path = tmp_path / "ids.jsonl"
    path.write_text(json.dumps({"id": falsy, "prompt": "hi", "reference": "hello", "split": "train"}) + "\n")
    assert file_examples(path, "train")[0].id == str(falsy)


# --- data files: every error names the file and the line -------------------------------------------


def test_csv_field_past_the_csv_limit_names_the_file_and_line(tmp_path: Path) -> None:
    """It used to be a bare `_csv.Error: field larger than field limit (131072)`."""
    path = tmp_path / "long.csv"
    path.write_text("prompt,reference\nhi,hello\n" + "p," + "x" * (csv.field_size_limit() + 1) + "\n")
    with pytest.raises(ValueError, match=r"long\.csv:3: a field is longer than 131,072 characters.*\.jsonl"):
        file_examples(path, "train")


def test_csv_lines_count_the_lines_of_quoted_multi_line_fields(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text('prompt,reference\n"two\nlines",r\n\nhi,\n')
    with pytest.raises(ValueError, match=r"data\.csv:5: the 'reference' column is empty"):
        file_examples(path, "train")


def test_jsonl_nested_too_deep_names_the_file_and_line(tmp_path: Path) -> None:
    """It used to be a bare RecursionError."""
    path = tmp_path / "deep.jsonl"
    depth = 100_000
    path.write_text('{"prompt": "p", "reference": "r"}\n' + "[" * depth + "]" * depth + "\n")
    with pytest.raises(ValueError, match=r"deep\.jsonl:2: JSON nested too deeply"):
        file_examples(path, "train")


def test_jsonl_integer_past_the_digit_limit_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    path.write_text('{"prompt": "p", "reference": "r", "id": ' + "9" * 5000 + "}\n")
    with pytest.raises(ValueError, match=r"big\.jsonl:1: not valid JSON"):
        file_examples(path, "train")


# --- translation ----------------------------------------------------------------------------------


def test_translation_catalogs_are_cleaned():
    catalog = {
        "": {"domain": "jupyterlab", "language": "fr-FR"},  # the header
        "settings\x04Font family": ["Famille de polices"],  # context prefix dropped
        "Font family": ["Police"],  # duplicate source: the first one kept
        "Open %1": ["Ouvrir %1"],  # a placeholder inside prose is kept
        "%1 (%2)": ["%1 (%2)"],  # untranslated
        "%1 and %2": ["%1 et %2"],  # mostly placeholders
        "Open the provided `path`.": ["Ouvrir le `path` fourni."],  # code
        "Line one\nLine two": ["Ligne un\nLigne deux"],  # multi-line
        "Save": [""],  # empty
        "%d file": ["%d fichier", "%d fichiers"],  # plural: the singular form
        "Close  all": ["Fermer   tout"],  # spaces collapsed
    }
    assert clean_pairs([catalog]) == (
        ("%d file", "%d fichier"),
        ("Close  all", "Fermer tout"),
        ("Font family", "Famille de polices"),
        ("Open %1", "Ouvrir %1"),
    )
    assert not keep_pair("C++", "C++") and not keep_pair("%1 / %2", "%1 / %2")
    assert not keep_pair("Use {name}", "Utiliser {name}")  # half placeholder
    assert keep_pair("Reset", "Réinitialiser")


def test_translation_splits_are_disjoint_by_source_and_repeat():
    pairs = [(f"Open file number {i}", f"Ouvrir le fichier {i}") for i in range(200)]
    splits = {split: pair_examples(pairs, split, "de") for split in SPLITS}
    sources = {split: {e.id for e in examples} for split, examples in splits.items()}
    assert sum(map(len, sources.values())) == 200 and all(sources.values())
    assert not (sources["train"] & sources["test"] or sources["train"] & sources["validation"])
    assert splits["test"] == pair_examples(reversed(pairs), "test", "de")[::-1]  # order in, order out
    example = splits["test"][0]
    assert example.prompt.startswith("Translate into German: Open file number ")
    assert example.turns == (("user", example.prompt),)


@pytest.mark.parametrize(("target", "sizes"), [("fr", (2251, 330, 293)), ("de", (770, 115, 103))])
def test_translation_corpus_sizes_and_disjoint_splits(target, sizes):
    splits = [translation_examples(split, target) for split in SPLITS]
    assert tuple(map(len, splits)) == sizes  # the docstring's table
    sources = [{e.prompt for e in examples} for examples in splits]
    assert len(set.union(*sources)) == sum(sizes)
    assert load_dataset("jupyterlab-l10n", "test", target=target) == splits[2]


def test_translation_target_is_checked():
    with pytest.raises(ValueError, match=r"unknown translation target 'es': expected one of \['fr', 'de'\]"):
        load_dataset("jupyterlab-l10n", "train", target="es")


WMT_ROWS = [  # WMT16's and IWSLT2017's layout
    {"translation": {"de": "Guten Morgen.", "en": "Good morning."}},
    {"translation": {"de": "Wie  geht es dir?", "en": "How are you?"}},
]


def _stand_in_datasets(monkeypatch, rows, calls):
    fake = type(sys)("datasets")
    fake.load_dataset = lambda path, config, split: calls.append((path, config, split)) or _FakeTable(rows)
    monkeypatch.setitem(sys.modules, "datasets", fake)


def test_hub_translation_layout_becomes_prompts_and_references(monkeypatch):
    calls = []
    _stand_in_datasets(monkeypatch, WMT_ROWS, calls)
    examples = load_dataset("hf:wmt16:de-en", "validation", translation="en-de")
    assert calls == [("wmt16", "de-en", "validation")]
    prompt = "Translate into German: Good morning."
    assert examples[0] == Example("wmt16/validation/0", prompt, ("Guten Morgen.",), (("user", prompt),))
    assert examples[1].references == ("Wie geht es dir?",)
    assert load_dataset("hf:wmt16:de-en", "test", translation="de-en")[0].prompt == (
        "Translate into English: Guten Morgen."
    )
    with pytest.raises(ValueError, match=r"translation must be '<source>-<target>' .*got 'en-xx'"):
        load_dataset("hf:wmt16:de-en", "test", translation="en-xx")
    with pytest.raises(
        ValueError, match=r"'translation' column holding 'en' and 'fr' texts; found \['de', 'en'\]"
    ):
        load_dataset("hf:wmt16:de-en", "test", translation="en-fr")


def test_translation_env_reads_the_hub_layout_for_its_target(monkeypatch):
    import gymnasium as gym

    _stand_in_datasets(monkeypatch, WMT_ROWS, [])
    env = gym.make(
        "TextGen-Translation-v0", model="tiny", target="de", dataset="hf:iwslt2017:iwslt2017-en-de"
    )
    assert env.unwrapped.examples[1].prompt == "Translate into German: How are you?"
