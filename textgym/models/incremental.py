"""Forward passes of a causal LM over left-padded batches, one pass or one token at a time.

Every textgym consumer of a model (the samplers, the policies, the KL wrapper, TextPPO) goes
through these functions, so that positions and masks are computed one way: a token's log-prob
is then the same whether the context was run in one pass or grown step by step with the KV cache.
KV caches are passed, read and rebuilt through :mod:`textgym.compat` (the cache keyword is
``cache`` in current transformers, ``past_key_values`` in older ones).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from textgym.compat import cache_argument, cache_from_layers, cache_layers, output_cache


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) positions of the real tokens of left-padded rows (0 at each row's first token)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def left_pad(rows: list[np.ndarray] | list[list[int]], pad_id: int, device: torch.device | str = "cpu"):
    """Stack token rows into left-padded ``(ids, mask)``, both (B, T) int64."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if len(row):
            ids[i, width - len(row) :] = torch.as_tensor(np.asarray(row, dtype=np.int64))
            mask[i, width - len(row) :] = 1
    return ids.to(device), mask.to(device)


def observation_rows(observations: dict[str, Any]) -> list[np.ndarray]:
    """The real tokens (int64, padding dropped) of each row of a batch of env observations: a
    VecEnv's arrays or SB3's observation tensors (float in rollout buffers). The inverse of
    :func:`left_pad` (:func:`observation_tokens` for one observation)."""
    ids = np.asarray(_numpy(observations["input_ids"]), dtype=np.int64)
    mask = _numpy(observations["attention_mask"]) > 0
    if ids.ndim != 2 or ids.shape != mask.shape:
        raise ValueError(
            f"observations need (B, T) 'input_ids' and 'attention_mask' of one shape, got "
            f"{ids.shape} and {mask.shape}"
        )
    return [row[keep] for row, keep in zip(ids, mask)]


def observation_tokens(observation: dict[str, Any]) -> np.ndarray:
    """The real tokens (int64) of one env observation."""
    rows = {key: _numpy(observation[key])[None] for key in ("input_ids", "attention_mask")}
    return observation_rows(rows)[0]


def _numpy(values: Any) -> np.ndarray:
    return values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)


def trim_padding(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the leading columns that are padding in every row (observations are padded to L)."""
    used = mask.bool().any(0).nonzero()
    start = int(used[0]) if len(used) else mask.shape[1] - 1
    return ids[:, start:], mask[:, start:]


def hidden_states(backbone: nn.Module, ids: torch.Tensor, mask: torch.Tensor, **kwargs: Any):
    """The backbone's output for a left-padded batch: ``last_hidden_state`` is (B, T, H).
    No KV cache is built unless ``use_cache=True`` is passed (read it with
    :func:`textgym.compat.output_cache`)."""
    kwargs.setdefault("use_cache", False)
    return backbone(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), **kwargs)


def repeat_cache(cache: Any, repeats: int, config: Any = None) -> Any:
    """The KV cache with each row repeated ``repeats`` times in place (row i -> rows i*r..i*r+r-1),
    differentiably: gradients through the copies add up in the original rows."""
    layers = [
        (k.repeat_interleave(repeats, 0), v.repeat_interleave(repeats, 0)) for k, v in cache_layers(cache)
    ]
    return cache_from_layers(layers, config)


def shared_prompt_states(
    backbone: nn.Module, ids: torch.Tensor, mask: torch.Tensor, start: int, group_size: int
) -> torch.Tensor:
    """(B, T-start, H) hidden states of the positions that predict tokens ``start..T-1`` of
    left-padded rows whose prompts (columns ``:start``) are the same within each group of
    ``group_size`` consecutive rows. The prompt runs once per group; its KV cache, repeated for
    the group, serves the group's continuations (the same values and gradients as one pass over
    every row, for a fraction of the prompt's cost)."""
    batch = ids.shape[0]
    prompts, prompt_mask = ids[::group_size, :start], mask[::group_size, :start]  # (G, start)
    out = hidden_states(backbone, prompts, prompt_mask, use_cache=True)
    first = out.last_hidden_state[:, -1:].repeat_interleave(group_size, 0)  # (B, 1, H): predicts `start`
    if ids.shape[1] - start <= 1:
        return first
    past = repeat_cache(output_cache(out), group_size, getattr(backbone, "config", None))
    rest = backbone(
        input_ids=ids[:, start:-1],
        attention_mask=mask[:, :-1],
        position_ids=position_ids(mask[:, :-1])[:, start:],
        use_cache=True,  # appends to the prompt's cache (its grad flows back to the prompt)
        **{cache_argument(backbone): past},
    ).last_hidden_state  # (B, T-start-1, H)
    if rest.shape[0] != batch:
        raise RuntimeError(f"expected {batch} rows from the continuation pass, got {rest.shape[0]}")
    return torch.cat([first, rest], dim=1)


class IncrementalForward:
    """Last-position hidden states for a batch of token rows that grow from call to call.

    When every row extends the previous call's row (by one token, as an env step appends, or by
    several, as a multi-turn env appends its partner's reply), only the new tokens run, in one
    pass against the stored KV cache; when every row is unchanged the stored states are
    returned; rows that do not extend theirs (a reset, a new episode) run their whole context,
    and their cache is merged with the others'. A call with a different number of rows is
    answered without touching the stored cache, so an odd one-row query (a terminal
    observation) does not throw away the batch's cache.
    """

    def __init__(self, backbone: nn.Module, pad_id: int):
        self.backbone = backbone
        self.pad_id = pad_id
        self.hits = 0
        self.misses = 0
        self.reset()

    def reset(self) -> None:
        self._rows: list[np.ndarray] | None = None
        self._mask: torch.Tensor | None = None  # (B, T) of the cached context
        self._past: Any = None
        self._last: torch.Tensor | None = None  # (B, H)

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    def __call__(self, rows: list[np.ndarray]) -> torch.Tensor:
        """(B, H) hidden state at the last token of each row (no gradient)."""
        rows = [np.asarray(row, dtype=np.int64) for row in rows]
        if any(len(row) == 0 for row in rows):
            raise ValueError("every row needs at least one token")
        previous = self._rows
        if previous is None or len(previous) != len(rows):
            return self._full(rows, store=previous is None)
        if all(np.array_equal(r, p) for r, p in zip(rows, previous)):
            self.hits += 1
            return self._last
        extends = [len(r) > len(p) and np.array_equal(r[: len(p)], p) for r, p in zip(rows, previous)]
        if all(extends):
            new, new_mask = self._appended(rows, previous, extends)
            self.hits += 1
            return self.extend(new, new_mask, rows=rows)
        if not any(extends):
            return self._full(rows, store=True)
        return self._partial(rows, extends)

    def _appended(
        self, rows: list[np.ndarray], previous: list[np.ndarray], extends: list[bool]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, K) the tokens each extending row added, right-aligned (padding first, mask 0),
        K the most any row added; rows that do not extend theirs add padding only."""
        added = [row[len(old) :] if grows else row[:0] for row, old, grows in zip(rows, previous, extends)]
        return left_pad(added, self.pad_id, self.device)  # left padding = right-aligned tokens

    @torch.no_grad()
    def start(self, ids: torch.Tensor, mask: torch.Tensor, repeats: int = 1) -> torch.Tensor:
        """Run left-padded (B, T) contexts from scratch and keep their cache; returns (B, H).
        With ``repeats`` > 1 each context is run once and stands for that many consecutive rows
        (B * repeats of them), as when several texts are sampled per prompt."""
        out = hidden_states(self.backbone, ids, mask, use_cache=True)
        past, last = output_cache(out), out.last_hidden_state[:, -1]
        if repeats > 1:
            past = repeat_cache(past, repeats, getattr(self.backbone, "config", None))
            mask, last = mask.repeat_interleave(repeats, 0), last.repeat_interleave(repeats, 0)
        self._rows, self._mask, self._past, self._last = None, mask, past, last
        return self._last

    @torch.no_grad()
    def extend(
        self, new: torch.Tensor, new_mask: torch.Tensor | None = None, rows: list[np.ndarray] | None = None
    ) -> torch.Tensor:
        """Append (B, K) tokens to the cached contexts in one pass; returns (B, H), each row's
        state at the last column.

        ``new_mask`` (B, K) marks appended tokens that are padding (0): rows that already
        finished, or, when rows add different numbers of tokens, the columns before a row's
        own (right-aligned, so that every row's last column is its last token)."""
        if self._past is None:
            raise RuntimeError("extend() needs a context: call start() first")
        new_mask = torch.ones_like(new) if new_mask is None else new_mask.to(new.dtype)
        # Each new token's position: the real tokens before it (padding takes the next one's).
        positions = self._mask.sum(-1, keepdim=True) + (new_mask.cumsum(-1) - 1).clamp(min=0)  # (B, K)
        self._mask = torch.cat([self._mask, new_mask], dim=1)
        out = self.backbone(
            input_ids=new,
            attention_mask=self._mask,
            position_ids=positions,
            use_cache=True,
            **{cache_argument(self.backbone): self._past},
        )
        self._past = output_cache(out)
        self._last = out.last_hidden_state[:, -1]
        self._rows = rows
        return self._last

    @torch.no_grad()
    def _full(self, rows: list[np.ndarray], *, store: bool) -> torch.Tensor:
        ids, mask = left_pad(rows, self.pad_id, self.device)
        self.misses += 1
        if not store:
            return hidden_states(self.backbone, ids, mask).last_hidden_state[:, -1]
        last = self.start(ids, mask)
        self._rows = rows
        return last

    @torch.no_grad()
    def _partial(self, rows: list[np.ndarray], extends: list[bool]) -> torch.Tensor:
        """Some rows extend their cached context, the others (new episodes in a vectorised env)
        start over: extend the former, run the latter's contexts, and merge both caches row by
        row (left-padded to one width)."""
        keep = torch.tensor(extends, device=self.device)  # (B,)
        new, new_mask = self._appended(rows, self._rows, extends)
        stepped = self.extend(new, new_mask)  # restarting rows append masked padding
        restarting = [row for row, extended in zip(rows, extends) if not extended]
        fresh_ids, fresh_mask = left_pad(restarting, self.pad_id, self.device)
        fresh = hidden_states(self.backbone, fresh_ids, fresh_mask, use_cache=True)
        width = max(self._mask.shape[1], fresh_mask.shape[1])

        def merge(old: torch.Tensor, young: torch.Tensor, dim: int) -> torch.Tensor:
            """Rows of ``old`` where kept, of ``young`` elsewhere, right-aligned along ``dim``."""
            shape = list(old.shape)
            shape[dim] = width
            merged = old.new_zeros(shape)
            merged.narrow(dim, width - old.shape[dim], old.shape[dim])[keep] = old[keep]
            merged.narrow(dim, width - young.shape[dim], young.shape[dim])[~keep] = young
            return merged

        mask = merge(self._mask, fresh_mask, 1)  # (B, W)
        first = int(mask.bool().any(0).long().argmax())  # drop columns that are padding everywhere
        layers = []  # keys and values are (B, heads, T, head_dim)
        for (keys, values), (fresh_keys, fresh_values) in zip(
            cache_layers(self._past), cache_layers(output_cache(fresh))
        ):
            layers.append(
                (merge(keys, fresh_keys, 2)[:, :, first:], merge(values, fresh_values, 2)[:, :, first:])
            )
        self._past = cache_from_layers(layers, getattr(self.backbone, "config", None))
        self._mask = mask[:, first:]
        self._last = stepped.clone()
        self._last[~keep] = fresh.last_hidden_state[:, -1]
        self._rows = rows
        self.misses += 1
        return self._last


# Powers of an odd 64-bit base: a polynomial hash of token prefixes (arithmetic wraps mod 2**64).
_HASH_BASE = np.uint64(0x9E3779B97F4A7C15)
_HASH_POWERS = np.ones(1, dtype=np.uint64)


def _prefix_hashes(row: np.ndarray) -> np.ndarray:
    """(n,) uint64 hashes of the row's prefixes of lengths 1..n."""
    global _HASH_POWERS
    if len(_HASH_POWERS) < len(row):
        powers = np.ones(max(len(row), 2 * len(_HASH_POWERS)), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for i in range(1, len(powers)):
                powers[i] = powers[i - 1] * _HASH_BASE
        _HASH_POWERS = powers
    with np.errstate(over="ignore"):
        return np.cumsum((row.astype(np.uint64) + np.uint64(1)) * _HASH_POWERS[: len(row)], dtype=np.uint64)


def prefix_groups(rows: list[np.ndarray]) -> tuple[list[int], np.ndarray]:
    """Group token rows by shared prefixes: ``(roots, owner)``, where ``roots`` are indices of
    rows that are no prefix of another row (the longest of each episode, in a batch of one
    episode's observations) and ``rows[i] == rows[roots[owner[i]]][:len(rows[i])]`` for every i.
    A causal LM run once over each root gives every row's last-position output. Prefixes are
    found by hashing and confirmed token by token, in time linear in the tokens."""
    owner = np.zeros(len(rows), dtype=np.int64)
    roots: list[int] = []
    found: dict[tuple[int, int], list[int]] = {}  # (prefix length, hash) -> roots holding it
    hashes = [_prefix_hashes(row) for row in rows]
    for i in sorted(range(len(rows)), key=lambda i: -len(rows[i])):
        row = rows[i]
        key = (len(row), int(hashes[i][-1])) if len(row) else (0, 0)
        for root in found.get(key, ()):
            if np.array_equal(rows[roots[root]][: len(row)], row):
                owner[i] = root
                break
        else:
            owner[i] = len(roots)
            roots.append(i)
            for length, value in enumerate(hashes[i].tolist(), start=1):
                found.setdefault((length, value), []).append(owner[i])
            found.setdefault((0, 0), []).append(owner[i])
    return roots, owner
