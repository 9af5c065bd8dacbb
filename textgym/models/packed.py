"""Faster linear layers for CPU inference: oneDNN matrix products on pre-packed weights.

PyTorch runs ``F.linear`` on the CPU through MKL's sgemm, which re-reads each weight in its
plain layout on every call. A decoding step multiplies only a few rows (one per sequence) by
every weight of the model, so its cost is reading the weights; oneDNN with the weights
reordered once into its blocked layout runs a decoding step's products in less than half the
time on this machine's AVX-512 CPU (profiled: about 30 ms against 69 ms for SmolLM2-135M with
8 rows), and wide products (192 rows) about 1.3x faster.

:class:`PackedLinears` attaches to a model's ``nn.Linear`` layers (forward hooks, PyTorch's
public extension point; no model code is modified). Inside ``with packed:`` and without
autograd, each float32 CPU layer call runs ``torch.ops.mkldnn._linear_pointwise`` (the op
PyTorch's own compiler emits for frozen linear layers) on a packed copy of the weight, made on
first use and remade when the weight changes (an optimiser step or ``load_state_dict`` bumps
its version). Anything else (gradients, other dtypes or devices, a PyTorch without oneDNN, any
call outside the block) runs ``F.linear`` as usual; autocast, see below. The hooks switch a
``TorchFunctionMode`` on for the duration of one layer's call only, so the model's other
operations do not pay for the mode's dispatch (7 ms of a 50 ms decoding step here).

Under bf16 autocast (mixed precision on the CPU) the same hooks serve another purpose: autocast
casts every float32 weight to bf16 on every call, and keeps a cast only for weights that require
gradients, only until its ``with torch.autocast`` block ends: a decoding step that casts reads
every float32 weight and writes its cast before the product reads that, and LoRA's frozen
weights are cast again at every step of a rollout. Inside ``with packed:`` and without autograd,
each layer call under CPU bf16 autocast runs on a bf16 copy of its weight kept between blocks
(remade when the weight changes, as the packed copies): the same cast, made once, so the result is
exactly autocast's.

The packed copies cost as much memory as the weights they pack (the bf16 copies half);
:meth:`PackedLinears.clear` frees them. The oneDNN ops and the weight version counter are
private torch APIs, reached through :mod:`textgym.compat` (without a version counter every use
copies again).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from textgym.compat import linear_packing_available, pack_linear_weight, packed_linear, tensor_version


def available() -> bool:
    """True where this PyTorch can run packed oneDNN linear products."""
    return linear_packing_available()


class PackedLinears:
    """Runs the attached ``nn.Linear`` layers on packed weights inside ``with packed:`` (no grad),
    or, under CPU bf16 autocast, on kept bf16 copies of their weights.

    One instance keeps the packed copies between blocks, so a policy that steps once per call
    packs its weights once; each copy is checked against its weight's storage and version on
    every use. With ``enabled=False`` (or without oneDNN) nothing is attached or changed.
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and available()
        # (id(weight), kind) -> (weak reference to the weight, its data_ptr and version when
        # copied, the copy): kind "packed" (oneDNN layout, float32) or "bf16".
        self._packed: dict[tuple[int, str], tuple[weakref.ref, int, int | None, torch.Tensor]] = {}
        self._active = 0  # depth of the open ``with`` blocks
        self._mode = _PackedLinearMode(self)
        self._pushed: list[bool] = []  # per layer call in progress: whether it switched the mode on

    def __getstate__(self) -> dict[str, Any]:
        # Copies and pickles of a model (deepcopy, pickle) carry the hooks but not the packed
        # weights: oneDNN's packed tensors have no storage to copy, and they are rebuilt on use.
        return {**self.__dict__, "_packed": {}, "_pushed": []}

    def attach(self, module: torch.nn.Module) -> None:
        """Hook every ``nn.Linear`` of ``module`` (call once per module)."""
        if not self.enabled:
            return
        for layer in module.modules():
            if isinstance(layer, torch.nn.Linear):
                layer.register_forward_pre_hook(self._before)
                layer.register_forward_hook(self._after, always_call=True)

    def __enter__(self) -> PackedLinears:
        self._active += 1
        return self

    def __exit__(self, *exc: Any) -> None:
        self._active -= 1

    def _before(self, layer: torch.nn.Module, args: Any) -> None:
        push = self._active > 0 and not torch.is_grad_enabled()
        if push:
            self._mode.__enter__()
        self._pushed.append(push)

    def _after(self, layer: torch.nn.Module, args: Any, output: Any) -> None:
        if self._pushed.pop():  # also after an exception (always_call)
            self._mode.__exit__(None, None, None)

    def clear(self) -> None:
        """Drop every packed copy (their memory is freed; the next use packs again)."""
        self._packed.clear()

    @property
    def packed_bytes(self) -> int:
        """Bytes held by the packed and bf16 copies."""
        return sum(entry[3].numel() * entry[3].element_size() for entry in self._packed.values())

    def pack(self, module: torch.nn.Module) -> None:
        """Pack the weights of every float32 CPU ``nn.Linear`` in ``module`` now rather than on
        first use (the first step would otherwise pay for it)."""
        if not self.enabled:
            return
        for layer in module.modules():
            if isinstance(layer, torch.nn.Linear) and _packable_weight(layer.weight, layer.bias):
                self.packed(layer.weight)

    def packed(self, weight: torch.Tensor) -> torch.Tensor:
        """The packed copy of a (out, in) weight, made or remade as needed."""
        return self._copy(weight, "packed", pack_linear_weight)

    def bf16(self, tensor: torch.Tensor) -> torch.Tensor:
        """A bf16 copy of a float32 weight or bias (autocast's cast), made or remade as needed."""
        return self._copy(tensor, "bf16", lambda t: t.detach().to(torch.bfloat16))

    def _copy(
        self, weight: torch.Tensor, kind: str, make: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        key = (id(weight), kind)
        entry = self._packed.get(key)
        version = tensor_version(weight)  # None: unknown, so never trusted
        if (
            entry is not None
            and entry[0]() is weight
            and entry[1] == weight.data_ptr()
            and version is not None
            and entry[2] == version
        ):
            return entry[3]
        copy = make(weight)
        self._packed[key] = (weakref.ref(weight), weight.data_ptr(), version, copy)
        return copy

    def linear(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """``F.linear(x, weight, bias)``: on the packed weight where it applies, on kept bf16
        copies under CPU bf16 autocast (which would cast the same way on every call)."""
        if torch.is_autocast_enabled("cpu"):
            if torch.get_autocast_dtype("cpu") == torch.bfloat16 and _castable(x, weight, bias):
                bias = None if bias is None else self.bf16(bias)
                return F.linear(x.to(torch.bfloat16), self.bf16(weight), bias)
            return F.linear(x, weight, bias)
        if _packable(x, weight, bias):
            return packed_linear(x, self.packed(weight), bias)
        return F.linear(x, weight, bias)


class _PackedLinearMode(TorchFunctionMode):
    """Sends ``F.linear`` calls to :meth:`PackedLinears.linear` while it is on."""

    def __init__(self, packed: PackedLinears):
        super().__init__()
        self.packed = packed

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.linear:
            return self.packed.linear(*args, **(kwargs or {}))
        return func(*args, **(kwargs or {}))


def _plain_cpu_float32(t: torch.Tensor) -> bool:
    plain = type(t) in (torch.Tensor, torch.nn.Parameter)  # not a subclass (quantised, sharded...)
    return plain and t.device.type == "cpu" and t.dtype == torch.float32


def _packable_weight(weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    return _plain_cpu_float32(weight) and weight.dim() == 2 and (bias is None or _plain_cpu_float32(bias))


def _castable(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """What CPU bf16 autocast would cast: float32 weights (and bias), a float32 or bf16 input."""
    return (
        x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.bfloat16)
        and _packable_weight(weight, bias)
        and x.shape[-1] == weight.shape[-1]
    )


def _packable(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    return (
        _plain_cpu_float32(x)
        and x.dim() >= 2
        and x.numel() > 0
        and _packable_weight(weight, bias)
        and x.shape[-1] == weight.shape[1]
    )
