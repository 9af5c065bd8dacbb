"""A pretrained causal LM as actor and critic: the network inside the agents' policies."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import LogitsProcessorList, PreTrainedModel

from textgym.compat import weights_version, wrap_with_lora
from textgym.models import DEFAULT_MODEL, load_model, load_tokenizer
from textgym.models.incremental import IncrementalForward, hidden_states, left_pad, shared_prompt_states
from textgym.models.packed import PackedLinears
from textgym.models.precision import autocast, check_precision, resolve_precision
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
    config = {**DEFAULT_LORA, **lora}
    r, alpha, dropout, targets = (config[k] for k in ("r", "lora_alpha", "lora_dropout", "target_modules"))
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ValueError(f"lora r (the adapters' rank) must be an int >= 1, got {r!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ValueError(f"lora lora_alpha must be a number > 0, got {alpha!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"lora lora_dropout must be a number in [0, 1), got {dropout!r}")
    if not (
        isinstance(targets, str)
        or (targets and isinstance(targets, list) and all(isinstance(t, str) for t in targets))
    ):
        raise ValueError(
            "lora target_modules must be a list of module names (such as ['q_proj', 'v_proj']) or "
            f"a string (peft's regular expression, or 'all-linear'), got {targets!r}"
        )
    return config


def lora_adapters(lora: dict[str, Any], model: nn.Module) -> Any:
    """peft's ``LoraConfig`` for ``lora`` (a :func:`lora_config`), whose ``target_modules``, when
    a list, each name a module of ``model`` (peft itself only fails when none does)."""
    peft = _peft()
    try:
        adapters = peft.LoraConfig(task_type="CAUSAL_LM", **lora)
    except TypeError as err:
        raise TypeError(f"bad lora arguments {lora}: {err}") from err
    targets = lora["target_modules"]
    if isinstance(targets, list):
        names = [name for name, _ in model.named_modules()]
        missing = [t for t in targets if not any(n == t or n.endswith(f".{t}") for n in names)]
        if missing:
            linear = sorted(
                {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
            )
            raise ValueError(
                f"lora target_modules {missing}: no module of {type(model).__name__} has that name; "
                f"its linear layers are {linear}"
            )
    return adapters


def check_lora(lora: bool | dict[str, Any] | None, model: str) -> None:
    """Check the ``lora`` policy argument against the model ``model`` before anything is
    written: its values, its target modules, and peft's own checks as it injects the adapters
    into a copy of the model (ValueError or TypeError naming the problem)."""
    config = lora_config(lora)
    if config is None:
        return
    lm = load_model(model)
    adapters = lora_adapters(config, lm)
    try:
        wrap_with_lora(_peft(), lm, adapters)
    except Exception as err:  # peft raises ValueError, TypeError, NotImplementedError, ...
        raise ValueError(f"bad lora arguments {config} for the model {model!r}: {err}") from None


def _peft() -> Any:
    try:
        import peft
    except ImportError as err:
        raise ImportError("LoRA adapters need the 'peft' package: pip install 'textgym[lora]'") from err
    return peft


@dataclass(frozen=True)
class LMPolicyConfig:
    """What an LM policy's network is: the one list of the LM policies' ``policy_kwargs``.

    :class:`LMActorCriticPolicy`, :class:`MaskableLMActorCriticPolicy` and :class:`LMActorCritic`
    take these fields (as plain keyword values, so that ``policy_kwargs`` stay picklable) and
    build one config; its fields are validated here, where they enter.

    :param model: model name or path (the env's; ``smollm2-135m-instruct`` by default).
    :param temperature: divides the logits of the sampling distribution (> 0).
    :param top_k: keep only the k most likely tokens (0: off).
    :param top_p: keep the smallest set of tokens whose probability reaches p (1: off).
        The three knobs are applied alike when acting and in the loss, so the PPO ratio compares
        the distribution that acted.
    :param lora: None/False (off), True (peft defaults: r=8 on q_proj/v_proj) or a dict of
        ``peft.LoraConfig`` arguments: only the adapters and the value head train, and the
        reference policy is the model with its adapters disabled.
    :param separate_critic: the value from a second copy of the LM trunk (False: a head on the
        actor's last hidden state).
    :param dtype: the weights' dtype: ``float32`` (default), ``bfloat16`` or ``float16``.
    :param precision: ``fp32`` (default), ``bf16`` (mixed precision: float32 weights, forward
        passes under bf16 autocast; the value head, softmaxes and losses stay float32) or
        ``auto`` (bf16 where the device runs it faster: see :mod:`textgym.models.precision`).
    :param kv_cache: reuse the KV cache while stepping (False: recompute the context every step).
    :param packed_linears: act (steps and batched rollouts) with the linear layers on
        oneDNN-packed weights where possible (CPU float32), or under CPU bf16 autocast on kept
        bf16 copies of the weights (see :mod:`textgym.models.packed`); updates never do.
    :param kl_to_reference: the entropy term of SB3's loss (weighed by ``ent_coef``) becomes
        minus the KL divergence from the policy to the reference (the initial model; with LoRA,
        the model with its adapters disabled), exact over the vocabulary at every state of the
        minibatch: with it, ``ent_coef`` is the KL coefficient of the RLHF objective ``reward -
        ent_coef * KL(pi || pi_ref)``, with no KL noise in the rewards. Costs one reference pass
        per episode in each update. False: SB3's entropy bonus.
    """

    model: str = DEFAULT_MODEL
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    lora: bool | dict[str, Any] | None = None
    separate_critic: bool = False
    dtype: str = "float32"
    precision: str = "fp32"
    kv_cache: bool = True
    packed_linears: bool = True
    kl_to_reference: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.model, str):
            raise TypeError(
                f"policy_kwargs['model'] must be a model name or path (a string, so that policy_kwargs "
                f"stay picklable), got {type(self.model).__name__}"
            )
        self.logits_processors()  # validates temperature, top_k and top_p
        lora_config(self.lora)
        for name in ("separate_critic", "kl_to_reference"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        check_precision(self.precision)

    @classmethod
    def field_names(cls) -> list[str]:
        return [field.name for field in dataclasses.fields(cls)]

    def kwargs(self) -> dict[str, Any]:
        """The fields as plain keyword values (what a saved policy stores)."""
        return {name: copy.deepcopy(getattr(self, name)) for name in self.field_names()}

    def logits_processors(self) -> LogitsProcessorList:
        """The transformers warpers for temperature, top-k and top-p (empty for the defaults)."""
        return logits_processors(self.temperature, self.top_k, self.top_p)


def generated_states(
    backbone: nn.Module, ids: torch.Tensor, mask: torch.Tensor, start: int, group_size: int = 1
) -> torch.Tensor:
    """(B, T-start, H) hidden states of the positions that predict tokens ``start..T-1``; with
    ``group_size`` > 1 consecutive groups of rows share their prompt, which runs once per group
    (:func:`~textgym.models.incremental.shared_prompt_states`)."""
    if group_size > 1:
        return shared_prompt_states(backbone, ids, mask, start, group_size)
    return hidden_states(backbone, ids, mask).last_hidden_state[:, start - 1 : -1]


class LMActorCritic(nn.Module):
    """Action logits from the LM at the last position; a value from a head on the last hidden state.

    The sampling knobs (temperature, top-k, top-p) and the mask of token ids the tokenizer cannot
    decode are applied by :meth:`process`, the one place both rollouts and updates go through.
    With ``separate_critic`` the value comes from a second copy of the LM trunk. With ``lora``
    only the adapters (and the value head) train, and the reference policy is the same model
    with its adapters disabled. With ``packed_linears`` (the default), acting (:meth:`step`
    and :func:`textgym.agents.common.rollout.generate`) runs the linear layers on oneDNN-packed weights
    where it can (CPU float32), or on kept bf16 copies under CPU bf16 autocast (see
    :mod:`textgym.models.packed`); updates never do.

    :param config: an :class:`LMPolicyConfig`, or a model name with the other fields as
        ``options``: ``LMActorCritic("tiny", V, temperature=0.7)`` is short for
        ``LMActorCritic(LMPolicyConfig("tiny", temperature=0.7), V)``.
    :param action_dim: the env's number of actions, which must be the model's logits width.
    """

    def __init__(self, config: LMPolicyConfig | str, action_dim: int, **options: Any):
        super().__init__()
        if isinstance(config, str):
            config = LMPolicyConfig(model=config, **options)
        elif not isinstance(config, LMPolicyConfig):
            raise TypeError(f"config must be an LMPolicyConfig or a model name, got {config!r}")
        elif options:
            raise TypeError(f"give either an LMPolicyConfig or keyword options, not both: {sorted(options)}")
        self.config = config
        self.model_name = model = config.model
        self.dtype_name = config.dtype
        self.kv_cache = bool(config.kv_cache)
        self.processors = config.logits_processors()
        self.temperature = config.temperature
        self.lora = lora_config(config.lora)

        self.tokenizer = load_tokenizer(model)
        lm: PreTrainedModel = load_model(model, dtype=DTYPES[config.dtype])
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
            self.lm = wrap_with_lora(_peft(), lm, lora_adapters(self.lora, lm))
            self.causal = self.lm.get_base_model()  # the same modules, adapters injected
        else:
            self.lm = lm
            self.causal = lm
        hidden = self.causal.config.get_text_config().hidden_size
        self.value_head = nn.Linear(hidden, 1, dtype=torch.float32)
        nn.init.zeros_(self.value_head.weight)  # values start at 0; nothing pretrained is touched
        nn.init.zeros_(self.value_head.bias)
        self.critic = copy.deepcopy(self.causal.get_decoder()) if config.separate_critic else None
        self._reference: PreTrainedModel | None = None
        self._actor_cache = IncrementalForward(self.backbone, self.pad_id)
        self._critic_cache = None if self.critic is None else IncrementalForward(self.critic, self.pad_id)
        self._cache_version = -1
        # Acting runs its linear layers on packed weights (CPU float32) or kept bf16 copies
        # (CPU bf16 autocast); see textgym.models.packed.
        self.packed = PackedLinears(enabled=config.packed_linears)
        self.packed.attach(self)
        # Kept for the weights-version check of every step (walking the module tree costs 1 ms).
        self._parameter_list = list(self.parameters())
        self._precision: tuple[torch.device, str] | None = None  # (device, fp32|bf16) resolved there

    @property
    def backbone(self) -> nn.Module:
        return self.causal.get_decoder()

    @property
    def head(self) -> nn.Module:
        return self.causal.get_output_embeddings()

    @property
    def precision(self) -> str:
        """``fp32`` or ``bf16``: the config's precision, resolved for the device the network is on."""
        device = self.invalid.device
        if self._precision is None or self._precision[0] != device:
            self._precision = (device, resolve_precision(self.config.precision, device))
        return self._precision[1]

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        """The context every forward pass runs in: bf16 autocast for ``bf16``, else nothing."""
        return autocast(self.precision, self.invalid.device)

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
        """(..., H) -> (...) values, in float32 (also under bf16 autocast)."""
        with torch.autocast(hidden.device.type, enabled=False):
            return self.value_head(hidden.float()).squeeze(-1)

    # -- acting: last position, cached ----------------------------------------------------------

    def _weights_version(self) -> object:
        # Optimiser steps and load_state_dict modify parameters in place, bumping their version.
        return weights_version(self._parameter_list)

    def step(self, rows: list[np.ndarray], raw: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Processed logits (B, V) and values (B,) for the next token of each row, with the KV
        cache reused when the rows extend the previous call's (no gradient)."""
        with torch.no_grad(), self.packed, self.autocast():
            if not self.kv_cache:
                return self.last(*left_pad(rows, self.pad_id, self.invalid.device), raw=raw)
            version = self._weights_version()
            if version != self._cache_version:
                self.reset_cache()
                self._cache_version = version
            hidden = self._actor_cache(rows)  # (B, H)
            logits = self.head(hidden) if raw else self.process(self.head(hidden))
            values = self.value(hidden if self._critic_cache is None else self._critic_cache(rows))
        return logits, values

    def last(
        self, ids: torch.Tensor, mask: torch.Tensor, raw: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Processed logits (B, V) and values (B,) at the last position, whole context, with grad."""
        with self.autocast():
            hidden = hidden_states(self.backbone, ids, mask).last_hidden_state[:, -1]  # (B, H)
            values = self.value(
                hidden if self.critic is None else hidden_states(self.critic, ids, mask)[0][:, -1]
            )
            return self.head(hidden) if raw else self.process(self.head(hidden)), values

    def at_positions(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        rows: torch.Tensor,
        columns: torch.Tensor,
        raw: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass (with grad) over left-padded (B, T) sequences: processed logits (N, V) and
        values (N,) at the N positions ``(rows[n], columns[n])``, each as :meth:`last` gives
        them for the sequence cut after that position (the LM is causal). ``raw`` (here, in
        :meth:`step` and :meth:`last`): the LM head's logits, not processed."""
        with self.autocast():
            hidden = hidden_states(self.backbone, ids, mask).last_hidden_state[rows, columns]  # (N, H)
            if self.critic is not None:
                values = self.value(hidden_states(self.critic, ids, mask)[0][rows, columns])
            else:
                values = self.value(hidden)
            return self.head(hidden) if raw else self.process(self.head(hidden)), values

    @torch.no_grad()
    def reference_at_positions(
        self, ids: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor, columns: torch.Tensor
    ) -> torch.Tensor:
        """The reference's raw logits (N, V) at the positions :meth:`at_positions` reads."""
        with self.reference() as reference, self.autocast():
            hidden = hidden_states(reference.get_decoder(), ids, mask).last_hidden_state[rows, columns]
            return reference.get_output_embeddings()(hidden)

    def kl_to_reference(self, logits: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """(N,) KL(pi || pi_ref) over the vocabulary, from the policy's processed logits and the
        reference's raw ones (temperature and mask applied, as :meth:`kl_logits`). Ids the policy
        filters out (top-k/p, mask) have probability 0 and add nothing."""
        log_p = torch.log_softmax(logits.clamp(min=-1e9), dim=-1)
        log_q = torch.log_softmax(self.kl_logits(reference).clamp(min=-1e9), dim=-1)
        return (log_p.exp() * (log_p - log_q)).sum(-1)

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
        self, ids: torch.Tensor, mask: torch.Tensor, start: int, select: torch.Tensor, group_size: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One forward pass (with grad) over left-padded (B, T) sequences whose tokens
        ``start..T-1`` were generated: the raw logits (N, V) that predicted the N tokens that
        ``select`` (B, T-start) marks, and the values (B, T-start) of the states before them.
        Logits are computed only where selected (the LM head is a fifth of the model's work).
        ``group_size``: consecutive groups of rows share their prompt, run once per group."""
        with self.autocast():
            hidden = generated_states(self.backbone, ids, mask, start, group_size)  # (B, R, H)
            critic_hidden = (
                hidden if self.critic is None else generated_states(self.critic, ids, mask, start, group_size)
            )
            return self.head(hidden[select]), self.value(critic_hidden)

    def sequence_values(
        self, ids: torch.Tensor, mask: torch.Tensor, start: int, group_size: int = 1
    ) -> torch.Tensor:
        """The values (B, T-start) of the states before tokens ``start..T-1``, as :meth:`sequence`
        gives them, without the LM head (a fifth of the model's work)."""
        trunk = self.backbone if self.critic is None else self.critic
        with self.autocast():
            return self.value(generated_states(trunk, ids, mask, start, group_size))

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
        self, ids: torch.Tensor, mask: torch.Tensor, start: int, select: torch.Tensor, group_size: int = 1
    ) -> torch.Tensor:
        """Raw reference logits (N, V) for the generated tokens ``select`` marks (as :meth:`sequence`)."""
        with self.reference() as reference, self.autocast():
            hidden = generated_states(reference.get_decoder(), ids, mask, start, group_size)
            return reference.get_output_embeddings()(hidden[select])

    def trainable_fraction(self) -> float:
        params = list(self.parameters())
        return sum(p.numel() for p in params if p.requires_grad) / sum(p.numel() for p in params)
