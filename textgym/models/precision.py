"""Where a model runs and in what precision: ``--device auto|cpu|cuda`` and ``--precision
auto|fp32|bf16``.

``bf16`` is mixed precision: the weights (and the optimiser's state) stay float32, and the
forward passes run under ``torch.autocast`` in bfloat16, so matrix products run in bf16 while
softmaxes, losses and the value head stay float32. Whether that is faster depends on the
machine, not on its name: on this project's CPUs bf16 products ran at 620 GFLOP/s on one
(with bf16 instructions) and at 1 GFLOP/s on another (emulated, against 54 in fp32). So
``auto`` measures: on a CPU it times one matrix product of a decoding step's shape in both
precisions, once per process, and picks bf16 only if it is at least :data:`BF16_MIN_SPEEDUP`
times faster; on CUDA it picks bf16 where the GPU supports it.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")
BF16_MIN_SPEEDUP = 1.25  # below this, autocast's casts and the lost precision are not worth it


def check_device(device: str) -> str:
    """``device`` if it names a device this machine has (``auto``, ``cpu``, ``cuda``,
    ``cuda:N``); ValueError naming what is accepted otherwise."""
    if not isinstance(device, str) or not (device in DEVICES or device.startswith("cuda:")):
        raise ValueError(f"device must be one of {list(DEVICES)} (or cuda:N), got {device!r}")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {device!r}: this PyTorch sees no CUDA GPU (torch.cuda.is_available() is False, "
                f"torch {torch.__version__}, CUDA build {torch.version.cuda}); use --device cpu or auto"
            )
        index = device.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise ValueError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA devices")
    return device


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` where PyTorch sees a GPU, else ``cpu``; other names are checked."""
    check_device(device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    return precision


def _products_per_s(dtype: torch.dtype | None, clock: Callable[[], float], seconds: float) -> float:
    """Matrix products per second of a decoding step's shape (64 rows through a 576 x 1536
    layer, SmolLM2-135M's MLP), float32 or under CPU autocast to ``dtype``."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 576, generator=generator)
    weight = torch.randn(1536, 576, generator=generator)
    context = torch.autocast("cpu", dtype=dtype) if dtype is not None else contextlib.nullcontext()
    with torch.no_grad(), context:
        F.linear(x, weight)  # warm-up: oneDNN picks and caches its kernel
        count, start = 0, clock()
        while True:
            F.linear(x, weight)
            count += 1
            elapsed = clock() - start
            if elapsed >= seconds or count >= 200:
                return count / max(elapsed, 1e-9)


def bf16_speedup(seconds: float = 0.05, clock: Callable[[], float] = time.perf_counter) -> float:
    """How many times faster a bf16-autocast matrix product runs than a float32 one on this
    CPU, measured now (about ``2 * seconds``; under 1 where bf16 is emulated)."""
    fp32 = _products_per_s(None, clock, seconds)
    return _products_per_s(torch.bfloat16, clock, seconds) / fp32


@functools.cache
def cpu_bf16_speedup() -> float:
    """:func:`bf16_speedup`, measured once per process (what ``auto`` decides by)."""
    return bf16_speedup()


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> str:
    """``fp32`` or ``bf16`` for ``device`` (``auto``: see the module's docstring)."""
    check_precision(precision)
    if precision != "auto":
        return precision
    kind = torch.device(device).type
    if kind == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if kind == "cpu":
        return "bf16" if cpu_bf16_speedup() >= BF16_MIN_SPEEDUP else "fp32"
    return "fp32"


def describe_precision(precision: str, device: str | torch.device) -> str:
    """What ``precision`` resolves to on ``device``, and why, in a few words (for logs)."""
    resolved = resolve_precision(precision, device)
    if precision != "auto":
        return resolved
    if torch.device(device).type == "cpu":
        return f"{resolved} (auto: bf16 products ran {cpu_bf16_speedup():.2g}x as fast as fp32 here)"
    return f"{resolved} (auto)"


@contextlib.contextmanager
def autocast(precision: str, device: str | torch.device) -> Iterator[None]:
    """bf16 autocast on ``device`` for ``precision`` ``bf16`` (resolved), nothing for ``fp32``."""
    if precision == "bf16":
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
            yield
    else:
        yield
