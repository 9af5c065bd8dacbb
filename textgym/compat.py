"""Every private or version-dependent torch and transformers API that textgym uses, in one place.

Tested with torch 2.13.0, transformers 5.24.0 and peft 0.21.2. Each function takes the fast or
current path where this install has it and otherwise falls back to a public one, so that a
release dropping a private API makes textgym slower, never wrong (the fallbacks are what the
oldest versions ``setup.cfg`` accepts, torch 2.4 and transformers 4.56, would take; they are
exercised by tests/test_compat.py, not on those versions):

- :func:`cache_argument`: the forward keyword of the KV cache, ``cache`` (transformers 5.24,
  where ``past_key_values`` warns and goes in 5.40), else ``past_key_values``.
- :func:`output_cache`: ``output.cache``, else ``output.past_key_values``.
- :func:`cache_layers`: ``cache.layers[i].keys / .values``, else iterating the cache as
  ``(keys, values, ...)`` tuples (the DDP-only ``__iter__``).
- :func:`cache_from_layers`: ``DynamicCache(config=...)`` filled by the public ``Cache.update``
  (not the DDP-only ``ddp_cache_data`` argument), else ``DynamicCache()``.
- :func:`pack_linear_weight` / :func:`packed_linear`: ``torch.ops.mkldnn._reorder_linear_weight``
  and ``_linear_pointwise``, else the plain weight and ``F.linear``.
- :func:`tensor_version` / :func:`weights_version`: ``Tensor._version``, else "unknown", which
  callers treat as changed (repack, drop the KV cache).
- :func:`strip_quantization`: ``model.hf_quantizer.remove_quantization_config``, else deleting
  ``config.quantization_config`` and the quantizer attribute.
- :func:`gguf_dequantize_kwargs`: ``GgufConfig(dequantize=True)``, else nothing (transformers
  4.x always de-quantizes GGUF files).
- :func:`wrap_with_lora`: ``peft.get_peft_model`` without the FutureWarning peft 0.21 triggers
  by reading a property transformers 5 deprecates.

The ``HAS_*`` flags record what this install offers; tests switch them off to run the fallbacks.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
import transformers
from torch import nn
from transformers import DynamicCache

TESTED_WITH = {"torch": "2.13.0", "transformers": "5.24.0", "peft": "0.21.2"}

HAS_TENSOR_VERSION = hasattr(torch.Tensor, "_version")
HAS_MKLDNN_LINEAR = bool(
    torch.backends.mkldnn.is_available()
    and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
)
HAS_CACHE_CONFIG = "config" in inspect.signature(DynamicCache.__init__).parameters


# -- KV caches (transformers) ---------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _forward_parameters(module_type: type) -> frozenset[str]:
    # transformers' deprecation decorators keep the signature (functools.wraps).
    return frozenset(inspect.signature(module_type.forward).parameters)


def cache_argument(module: nn.Module) -> str:
    """The keyword a model's ``forward`` takes its KV cache by: ``cache`` in transformers 5.24
    (``past_key_values`` there warns and goes in 5.40), ``past_key_values`` before."""
    return "cache" if "cache" in _forward_parameters(type(module)) else "past_key_values"


def output_cache(output: Any) -> Any:
    """The KV cache a forward pass returned (None if it built none)."""
    if dataclasses.is_dataclass(output) and "cache" in {f.name for f in dataclasses.fields(output)}:
        return output.cache
    return getattr(output, "past_key_values", None)


def cache_layers(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, the cached ``(keys, values)``, each (B, heads, T, head_dim)."""
    layers = getattr(cache, "layers", None)
    if layers is not None:  # transformers >= 4.56: one cache-layer object per layer
        return [(layer.keys, layer.values) for layer in layers]
    return [(keys, values) for keys, values, *_ in cache]  # older caches iterate as tuples


def cache_from_layers(
    layers: Iterable[tuple[torch.Tensor, torch.Tensor]], config: Any = None
) -> DynamicCache:
    """A ``DynamicCache`` holding the given per-layer ``(keys, values)``, through the public
    ``Cache.update`` (not the DDP-only ``ddp_cache_data`` constructor argument). With the model's
    ``config`` the layers are of the kinds the model itself would make (e.g. sliding windows)."""
    cache = DynamicCache(config=config) if config is not None and HAS_CACHE_CONFIG else DynamicCache()
    for index, (keys, values) in enumerate(layers):
        cache.update(keys, values, index)
    return cache


# -- packed linear layers (torch, oneDNN) ---------------------------------------------------------


def linear_packing_available() -> bool:
    """True where this torch has oneDNN's packed-weight linear product."""
    return HAS_MKLDNN_LINEAR


def pack_linear_weight(weight: torch.Tensor) -> torch.Tensor:
    """An (out, in) weight reordered into oneDNN's blocked layout, for :func:`packed_linear`
    (without oneDNN: the detached weight itself, no copy)."""
    if HAS_MKLDNN_LINEAR:
        return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None)
    return weight.detach()


def packed_linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` given ``packed = pack_linear_weight(weight)``."""
    if HAS_MKLDNN_LINEAR:
        return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")
    return F.linear(x, packed, bias)


# -- in-place change detection (torch) ------------------------------------------------------------


def tensor_version(tensor: torch.Tensor) -> int | None:
    """A counter that every in-place change of ``tensor`` bumps (an optimiser step,
    ``load_state_dict``), or None where torch has none: callers then treat it as changed."""
    return tensor._version if HAS_TENSOR_VERSION else None


def weights_version(tensors: Sequence[torch.Tensor]) -> object:
    """A value that changes whenever any of ``tensors`` changes in place; without version
    counters, a fresh object that equals no earlier one (every check then sees a change)."""
    if HAS_TENSOR_VERSION:
        return sum(tensor._version for tensor in tensors)
    return object()


# -- quantization metadata (transformers) ---------------------------------------------------------


def strip_quantization(model: nn.Module) -> None:
    """Make a de-quantized model an ordinary one: drop its quantizer and the
    ``quantization_config`` that ``save_pretrained`` would write (another library loading the
    copy would otherwise treat it as quantized, e.g. refuse to fine-tune it)."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None and hasattr(quantizer, "remove_quantization_config"):
        quantizer.remove_quantization_config(model)
    else:
        if "hf_quantizer" in vars(model):
            model.hf_quantizer = None
        config = getattr(model, "config", None)
        if config is not None and hasattr(config, "quantization_config"):
            del config.quantization_config
        if getattr(model, "is_quantized", False):
            model.is_quantized = False


def gguf_dequantize_kwargs() -> dict[str, Any]:
    """``from_pretrained`` arguments that unpack a GGUF file into plain dense weights (5.x keeps
    them in GGUF blocks where the ``kernels`` package can run them)."""
    gguf_config = getattr(transformers, "GgufConfig", None)  # absent in 4.x, which always de-quantizes
    if gguf_config is None or "dequantize" not in inspect.signature(gguf_config.__init__).parameters:
        return {}
    return {"quantization_config": gguf_config(dequantize=True)}


# -- LoRA adapters (peft) -------------------------------------------------------------------------


def wrap_with_lora(peft: Any, model: nn.Module, config: Any) -> Any:
    """``peft.get_peft_model(model, config)``. peft (0.21 and earlier) reads the model's
    ``is_gradient_checkpointing``, which transformers 5 deprecates with a FutureWarning that the
    user can do nothing about; that one warning is not shown, any other is."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
        )
        return peft.get_peft_model(model, config)
