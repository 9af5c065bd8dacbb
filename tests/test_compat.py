"""The compatibility layer (textgym.compat): each private path and its public fallback agree, and
textgym's own calls raise no deprecation warnings from torch or transformers."""

from __future__ import annotations

import logging
import types
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from transformers import DynamicCache

from textgym import compat
from textgym.agents import LMActorCritic, LMActorCriticPolicy, TextPPO
from textgym.models import load_model, logits_width
from textgym.models.incremental import hidden_states, left_pad
from textgym.models.packed import PackedLinears
from textgym.models.sampling import LMSampler, run_episode
from textgym.wrappers import VecKLRewardWrapper

TINY = {"model": "tiny"}


def forward_with_cache(backbone, rows):
    """Hidden states and KV cache of a left-padded batch."""
    ids, mask = left_pad(rows, 0)
    with torch.no_grad():
        out = hidden_states(backbone, ids, mask, use_cache=True)
    return out, ids, mask


def next_hidden(backbone, cache, mask, token=7):
    """The last hidden states after appending ``token`` to every row, continuing ``cache``."""
    new = torch.full((mask.shape[0], 1), token)
    full_mask = torch.cat([mask, torch.ones_like(new)], 1)
    with torch.no_grad():
        out = backbone(
            input_ids=new,
            attention_mask=full_mask,
            position_ids=mask.sum(-1, keepdim=True),
            use_cache=True,
            **{compat.cache_argument(backbone): cache},
        )
    return out.last_hidden_state[:, -1]


# -- KV caches ----------------------------------------------------------------------------------


def test_cache_argument_follows_the_forward_signature():
    backbone = load_model("tiny").get_decoder()
    assert compat.cache_argument(backbone) in {"cache", "past_key_values"}
    if transformers.__version__ == compat.TESTED_WITH["transformers"]:
        assert compat.cache_argument(backbone) == "cache"

    class Legacy(torch.nn.Module):
        def forward(self, input_ids=None, past_key_values=None, use_cache=None):
            return input_ids

    assert compat.cache_argument(Legacy()) == "past_key_values"


def test_output_cache_reads_the_current_and_the_legacy_field():
    backbone = load_model("tiny").get_decoder()
    out, _, _ = forward_with_cache(backbone, [[5, 6, 7]])
    cache = compat.output_cache(out)
    assert isinstance(cache, DynamicCache) and cache.get_seq_length() == 3
    legacy = types.SimpleNamespace(past_key_values=cache)  # an output class without ``cache``
    assert compat.output_cache(legacy) is cache
    assert compat.output_cache(hidden_states(backbone, *left_pad([[5, 6]], 0))) is None


def test_cache_layers_from_layer_objects_and_from_tuples_agree():
    backbone = load_model("tiny").get_decoder()
    out, _, _ = forward_with_cache(backbone, [[5, 6, 7], [8, 9]])
    layers = compat.cache_layers(compat.output_cache(out))
    assert len(layers) == backbone.config.num_hidden_layers
    assert layers[0][0].shape == (2, backbone.config.num_key_value_heads, 3, 16)  # (B, heads, T, head_dim)
    legacy = [(keys, values, None) for keys, values in layers]  # an older cache iterates as tuples
    for (k1, v1), (k2, v2) in zip(layers, compat.cache_layers(legacy)):
        assert k1 is k2 and v1 is v2


@pytest.mark.parametrize("with_config", [True, False])
def test_a_rebuilt_cache_continues_like_the_original(monkeypatch, with_config):
    backbone = load_model("tiny").get_decoder()
    rows = [[5, 6, 7, 8], [9, 10]]
    expected_out, _, mask = forward_with_cache(backbone, rows)
    expected = next_hidden(backbone, compat.output_cache(expected_out), mask)
    out, _, mask = forward_with_cache(backbone, rows)
    if not with_config:
        monkeypatch.setattr(compat, "HAS_CACHE_CONFIG", False)
    rebuilt = compat.cache_from_layers(compat.cache_layers(compat.output_cache(out)), backbone.config)
    assert rebuilt.get_seq_length() == 4
    torch.testing.assert_close(next_hidden(backbone, rebuilt, mask), expected, rtol=0, atol=0)


# -- packed linear layers -----------------------------------------------------------------------


@pytest.mark.parametrize("mkldnn", [True, False])
def test_packed_linear_equals_f_linear_with_and_without_onednn(monkeypatch, mkldnn):
    if mkldnn and not compat.HAS_MKLDNN_LINEAR:
        pytest.skip("this PyTorch has no oneDNN linear ops")
    monkeypatch.setattr(compat, "HAS_MKLDNN_LINEAR", mkldnn)
    torch.manual_seed(0)
    weight, bias, x = torch.randn(96, 64), torch.randn(96), torch.randn(5, 64)
    packed = compat.pack_linear_weight(weight)
    torch.testing.assert_close(compat.packed_linear(x, packed, bias), F.linear(x, weight, bias))
    torch.testing.assert_close(compat.packed_linear(x, packed, None), F.linear(x, weight))
    assert compat.linear_packing_available() is mkldnn


def test_without_onednn_packed_linears_attach_nothing(monkeypatch):
    monkeypatch.setattr(compat, "HAS_MKLDNN_LINEAR", False)
    layer = torch.nn.Linear(8, 4)
    packed = PackedLinears()
    packed.attach(layer)
    x = torch.randn(3, 8)
    with torch.no_grad(), packed:
        torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias))
    assert not packed.enabled and packed.packed_bytes == 0


# -- in-place change detection ------------------------------------------------------------------


def test_without_version_counters_every_use_repacks(monkeypatch):
    monkeypatch.setattr(compat, "HAS_TENSOR_VERSION", False)
    weight = torch.randn(4, 3)
    assert compat.tensor_version(weight) is None
    assert compat.weights_version([weight]) != compat.weights_version([weight])
    if not compat.HAS_MKLDNN_LINEAR:
        return
    layer = torch.nn.Linear(3, 4)
    packed = PackedLinears()
    packed.attach(layer)
    x = torch.randn(2, 3)
    with torch.no_grad(), packed:
        layer(x)
        layer.weight.mul_(2)  # same storage: only a version counter or a repack sees it
        torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias))


def test_version_counters_see_in_place_changes():
    weight = torch.randn(4, 3)
    before = compat.weights_version([weight])
    assert compat.weights_version([weight]) == before
    with torch.no_grad():
        weight.add_(1)
    assert compat.weights_version([weight]) != before


def test_without_version_counters_cached_acting_still_matches(monkeypatch):
    monkeypatch.setattr(compat, "HAS_TENSOR_VERSION", False)
    net = LMActorCritic("tiny", logits_width("tiny"))
    rows = [np.array([5, 6, 7]), np.array([8, 9])]
    logits, values = net.step(rows)
    with torch.no_grad():
        expected, expected_values = net.last(*left_pad(rows, net.pad_id))
        net.head.weight.mul_(1.5)  # an in-place update the cache must not survive
        changed, _ = net.last(*left_pad(rows, net.pad_id))
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(values, expected_values)
    torch.testing.assert_close(net.step(rows)[0], changed, rtol=1e-4, atol=1e-4)


# -- quantization metadata ----------------------------------------------------------------------


def test_strip_quantization_uses_the_quantizer_or_deletes_the_config():
    model = load_model("tiny")
    model.config.quantization_config = {"quant_method": "gguf"}
    calls = []

    class Quantizer:
        def remove_quantization_config(self, target):
            calls.append(target)
            del target.config.quantization_config

    model.hf_quantizer = Quantizer()
    compat.strip_quantization(model)
    assert calls == [model] and not hasattr(model.config, "quantization_config")

    fallback = load_model("tiny")  # no quantizer with that method: the public fallback
    fallback.config.quantization_config = {"quant_method": "gguf"}
    fallback.hf_quantizer = object()
    compat.strip_quantization(fallback)
    assert not hasattr(fallback.config, "quantization_config") and fallback.hf_quantizer is None
    assert "quantization_config" not in fallback.config.to_dict()


def test_gguf_files_load_dequantized_where_transformers_can_choose(monkeypatch):
    kwargs = compat.gguf_dequantize_kwargs()
    if hasattr(transformers, "GgufConfig"):
        assert kwargs["quantization_config"].dequantize is True
    monkeypatch.setattr(transformers, "GgufConfig", None)
    assert compat.gguf_dequantize_kwargs() == {}


# -- no deprecation warnings from textgym's calls -----------------------------------------------


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_training_runs_raise_no_deprecation_or_future_warnings():
    """Short TextPPO runs (full and LoRA), a short stock PPO run through the KL reward wrapper
    and a sampled episode: none of textgym's calls may trigger a DeprecationWarning or FutureWarning (nor
    transformers' logged "deprecated" notices, which it prints once per process)."""
    env = gym.make("TextGen-Sentiment-v0", model="tiny", max_new_tokens=6)
    venv = VecKLRewardWrapper(
        make_vec_env("TextGen-Sentiment-v0", n_envs=2, env_kwargs={"model": "tiny", "max_new_tokens": 4})
    )
    warning_once = getattr(logging.Logger, "warning_once", None)
    if hasattr(warning_once, "cache_clear"):
        warning_once.cache_clear()  # a notice already logged in this process would hide a new one
    handler = _Records()
    hf_logger = logging.getLogger("transformers")
    hf_logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            agent = TextPPO(
                "LMPolicy", env, batch_episodes=4, minibatch_episodes=2, policy_kwargs=TINY, seed=0
            )
            agent.learn(8)
            lora = TextPPO(
                "LMPolicy", env, batch_episodes=2, minibatch_episodes=2, policy_kwargs={**TINY, "lora": True}
            )
            lora.learn(2)
            stock = PPO(
                LMActorCriticPolicy, venv, n_steps=4, batch_size=4, n_epochs=1, policy_kwargs=TINY, seed=0
            )
            stock.learn(8)
            sampler = LMSampler(load_model("tiny"), env.unwrapped.action_masks(), seed=0)
            run_episode(env, sampler, seed=0)
    finally:
        hf_logger.removeHandler(handler)
    deprecations = [
        f"{w.category.__name__} {w.filename}:{w.lineno}: {w.message}"
        for w in caught
        if issubclass(w.category, (DeprecationWarning, FutureWarning))
    ]
    assert deprecations == []
    assert [m for m in handler.messages if "deprecat" in m.lower()] == []
    assert agent.num_timesteps > 0 and stock.num_timesteps >= 8
