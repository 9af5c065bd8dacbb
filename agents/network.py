"""A pretrained causal LM as actor and critic: the network inside the agents' policies."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel

from textgym.models import load_model, load_tokenizer
from textgym.models.incremental import IncrementalForward, hidden_states, left_pad
from textgym.models.packed import PackedLinears
from textgym.models.sampling import logits_processors

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# peft's defaults for a causal LM, made explicit so a saved agent rebuilds the same adapters.
DEFAULT_LORA = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}


def lora_config(lora: bool | dict[str, Any] | None) -> dict[str, Any] | None:
    """Validate the ``lora`` policy argument: None/False (off), True (defaults) or LoraConfig kwargs."""
    if lora is None or lora is False:
        return None
    if lora is True:
        return dict(DEFAULT_LORA)
    if not isinstance(lora, dict):
        raise TypeError(f"lora must be None, True or a dict of peft.LoraConfig arguments, got {lora!r}")
    return {**DEFAULT_LORA, **lora}


def _peft() -> Any:
    try:
        import peft
    except ImportError as err:
        raise ImportError("LoRA adapters need the 'peft' package: pip install 'textgym[lora]'") from err
    return peft


def generated_states(backbone: nn.Module, ids: torch.Tensor, mask: torch.Tensor, start: int) -> torch.Tensor:
    """(B, T-start, H) hidden states of the positions that predict tokens ``start..T-1``."""
    return hidden_states(backbone, ids, mask).last_hidden_state[:, start - 1 : -1]


class LMActorCritic(nn.Module):
    """Action logits from the LM at the last position; a value from a head on the last hidden state.

    The sampling knobs (temperature, top-k, top-p) and the mask of token ids the tokenizer cannot
    decode are applied by :meth:`process`, the one place both rollouts and updates go through.
    With ``separate_critic`` the value comes from a second copy of the LM trunk. With ``lora``
    only the adapters (and the value head) train, and the reference policy is the same model
    with its adapters disabled. With ``packed_linears`` (the default), acting (:meth:`step`)
    runs the linear layers on oneDNN-packed weights where it can (CPU float32, see
    :mod:`textgym.models.packed`); updates never do.
    """

    def __init__(
        self,
        model: str,
        action_dim: int,
        *,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        lora: bool | dict[str, Any] | None = None,
        separate_critic: bool = False,
        dtype: str = "float32",
        kv_cache: bool = True,
        packed_linears: bool = True,
    ):
        super().__init__()
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        if not isinstance(separate_critic, bool):
            raise TypeError(f"separate_critic must be True or False, got {separate_critic!r}")
        self.model_name = model
        self.dtype_name = dtype
        self.kv_cache = bool(kv_cache)
        self.processors = logits_processors(temperature, top_k, top_p)
        self.temperature = temperature
        self.lora = lora_config(lora)

        self.tokenizer = load_tokenizer(model)
        lm: PreTrainedModel = load_model(model, dtype=DTYPES[dtype])
        width = lm.get_output_embeddings().out_features
        if width != action_dim:
            raise ValueError(
                f"model {model!r} has {width} logits but the env's action space has {action_dim} "
                "actions: create the env with the same model (gym.make(..., model=...))"
            )
        invalid = torch.arange(width) >= len(self.tokenizer)  # (V,) rows the tokenizer cannot decode
        self.register_buffer("invalid", invalid, persistent=False)
        self.pad_id = int(self.tokenizer.pad_token_id)

        if self.lora is not None:
            peft = _peft()
            try:
                config = peft.LoraConfig(task_type="CAUSAL_LM", **self.lora)
            except TypeError as err:
                raise TypeError(f"bad lora arguments {self.lora}: {err}") from err
            self.lm = peft.get_peft_model(lm, config)
            self.causal = self.lm.get_base_model()  # the same modules, adapters injected
        else:
            self.lm = lm
            self.causal = lm
        hidden = self.causal.config.get_text_config().hidden_size
        self.value_head = nn.Linear(hidden, 1, dtype=torch.float32)
        nn.init.zeros_(self.value_head.weight)  # values start at 0; nothing pretrained is touched
        nn.init.zeros_(self.value_head.bias)
        self.critic = copy.deepcopy(self.causal.get_decoder()) if separate_critic else None
        self._reference: PreTrainedModel | None = None
        self._actor_cache = IncrementalForward(self.backbone, self.pad_id)
        self._critic_cache = None if self.critic is None else IncrementalForward(self.critic, self.pad_id)
        self._cache_version = -1
        # Acting runs its linear layers on packed weights (CPU float32; see textgym.models.packed).
        self.packed = PackedLinears(enabled=packed_linears)
        self.packed.attach(self)
        # Kept for the weights-version check of every step (walking the module tree costs 1 ms).
        self._parameter_list = list(self.parameters())

    @property
    def backbone(self) -> nn.Module:
        return self.causal.get_decoder()

    @property
    def head(self) -> nn.Module:
        return self.causal.get_output_embeddings()

    # -- distributions ------------------------------------------------------------------------

    def process(self, logits: torch.Tensor) -> torch.Tensor:
        """(N, V) raw logits -> the logits of the sampling distribution (float32)."""
        logits = logits.float().masked_fill(self.invalid, float("-inf"))
        return self.processors(None, logits) if len(self.processors) else logits

    def kl_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """(N, V) raw logits -> the logits KL penalties compare: temperature and mask, no top-k/p
        (a token outside the reference's top-k would make the KL infinite)."""
        logits = logits.float().masked_fill(self.invalid, float("-inf"))
        return logits / self.temperature

    def value(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., H) -> (...) values."""
        return self.value_head(hidden.float()).squeeze(-1)

    # -- acting: last position, cached ----------------------------------------------------------

    def _weights_version(self) -> int:
        # Optimiser steps and load_state_dict modify parameters in place, bumping their version.
        return sum(p._version for p in self._parameter_list)

    def step(self, rows: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Processed logits (B, V) and values (B,) for the next token of each row, with the KV
        cache reused when the rows extend the previous call's (no gradient)."""
        with torch.no_grad(), self.packed:
            if not self.kv_cache:
                return self.last(*left_pad(rows, self.pad_id, self.invalid.device))
            version = self._weights_version()
            if version != self._cache_version:
                self.reset_cache()
                self._cache_version = version
            hidden = self._actor_cache(rows)  # (B, H)
            logits = self.process(self.head(hidden))
            values = self.value(hidden if self._critic_cache is None else self._critic_cache(rows))
        return logits, values

    def last(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Processed logits (B, V) and values (B,) at the last position, whole context, with grad."""
        hidden = hidden_states(self.backbone, ids, mask).last_hidden_state[:, -1]  # (B, H)
        values = self.value(
            hidden if self.critic is None else hidden_states(self.critic, ids, mask)[0][:, -1]
        )
        return self.process(self.head(hidden)), values

    def reset_cache(self) -> None:
        """Forget the KV caches (the packed weights check their own versions)."""
        self._actor_cache.reset()
        if self._critic_cache is not None:
            self._critic_cache.reset()

    def release(self) -> None:
        """Free what acting keeps between steps, the KV caches and the packed weights; the next
        step rebuilds them. For before an update, which makes both stale and needs the memory."""
        self.reset_cache()
        self.packed.clear()

    @property
    def cache_stats(self) -> dict[str, int]:
        return {"hits": self._actor_cache.hits, "misses": self._actor_cache.misses}

    # -- sequences: every position in one pass ----------------------------------------------------

    def sequence(
        self, ids: torch.Tensor, mask: torch.Tensor, start: int, select: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One forward pass (with grad) over left-padded (B, T) sequences whose tokens
        ``start..T-1`` were generated: the raw logits (N, V) that predicted the N tokens that
        ``select`` (B, T-start) marks, and the values (B, T-start) of the states before them.
        Logits are computed only where selected (the LM head is a fifth of the model's work)."""
        hidden = generated_states(self.backbone, ids, mask, start)  # (B, R, H)
        critic_hidden = hidden if self.critic is None else generated_states(self.critic, ids, mask, start)
        return self.head(hidden[select]), self.value(critic_hidden)

    @contextlib.contextmanager
    def reference(self) -> Iterator[nn.Module]:
        """The frozen initial policy as a causal LM: with LoRA this model with its adapters
        disabled, otherwise a fresh copy of the pretrained model (loaded on first use)."""
        if self.lora is not None:
            with self.lm.disable_adapter():
                yield self.causal
            return
        if self._reference is None:
            reference = load_model(self.model_name, dtype=DTYPES[self.dtype_name])
            reference.requires_grad_(False)
            # Stored outside the module tree: not saved, not trained, not moved by .to().
            object.__setattr__(self, "_reference", reference.to(self.invalid.device))
        yield self._reference

    @torch.no_grad()
    def reference_logits(
        self, ids: torch.Tensor, mask: torch.Tensor, start: int, select: torch.Tensor
    ) -> torch.Tensor:
        """Raw reference logits (N, V) for the generated tokens ``select`` marks (as :meth:`sequence`)."""
        with self.reference() as reference:
            hidden = generated_states(reference.get_decoder(), ids, mask, start)
            return reference.get_output_embeddings()(hidden[select])

    def trainable_fraction(self) -> float:
        params = list(self.parameters())
        return sum(p.numel() for p in params if p.requires_grad) / sum(p.numel() for p in params)
