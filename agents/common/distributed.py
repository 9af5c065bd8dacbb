"""Data-parallel training with ``torch.distributed``, as ``torchrun`` launches it.

    torchrun --nproc-per-node 2 -m textgym train --env TextGen-Sentiment-v0 --budget 10m

Each rank samples its own texts (its sampler's seed is offset by its rank), gradients are
averaged by :class:`~torch.nn.parallel.DistributedDataParallel`, and every statistic that
decides an update is summed over the ranks (:func:`all_sum`), so every rank takes the same
decisions and keeps the same weights: reward normalisation and advantage whitening over the
union of the ranks' batches, the batch KL the adaptive coefficient follows, the token count
of the budget; rank 0's clock decides when the time budget ends a run and when to evaluate
or checkpoint (:func:`broadcast`). Only rank 0 evaluates, logs and writes the run directory.
Backends: NCCL on CUDA, gloo on CPU. In a single process every function here is the identity
(or a constant), so the algorithms call them unconditionally.

A rank that dies (``kill -9``, the OOM killer) closes its sockets: the others' next collective
fails at once (gloo: "Connection reset by peer"), rank 0 records the run ``failed``, torchrun
ends the remaining ranks, and ``--resume`` continues from the last checkpoint. A peer that stops
answering without closing them (a machine gone from the network) fails a collective after
:data:`TIMEOUT` instead of never.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import torch
import torch.distributed as dist

SEED_STRIDE = 1_000_003  # between the ranks' sampler seeds: their texts differ
# The longest a rank waits in one collective. It must exceed the longest time rank 0 works alone
# while the others wait for it (its evaluations of the model before and after training).
TIMEOUT = datetime.timedelta(minutes=30)


def launched() -> bool:
    """True in a process that ``torchrun`` started with other ranks (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: str) -> str:
    """Join the process group ``torchrun`` describes (once), NCCL for CUDA and gloo for the
    CPU; this rank's device (``cuda`` becomes ``cuda:<LOCAL_RANK>``). Outside torchrun:
    ``device``, unchanged."""
    if not launched():
        return device
    if device.startswith("cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", timeout=TIMEOUT)
    return device


def shutdown() -> None:
    """Leave the process group, if this process joined one (before it exits)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def rank_seed(seed: int) -> int:
    """This rank's sampler seed: ``seed`` on rank 0 (and in a single process)."""
    return seed + rank() * SEED_STRIDE


def all_sum(values: torch.Tensor) -> torch.Tensor:
    """``values`` summed over the ranks (a new tensor; ``values`` itself in a single process)."""
    if not active():
        return values
    backend_device = "cpu" if dist.get_backend() == "gloo" else values.device
    summed = values.detach().to(backend_device, copy=True)
    dist.all_reduce(summed)
    return summed.to(values.device)


def broadcast(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (any picklable value)."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def token_share(n_local: torch.Tensor) -> torch.Tensor:
    """``world_size * n_local / n_all``: the factor that turns this rank's mean over its
    ``n_local`` tokens into its part of the mean over all ranks' tokens, once DDP averages the
    gradients (1 in a single process)."""
    if not active():
        return torch.ones((), device=n_local.device)
    n_all = all_sum(n_local.float())
    return world_size() * n_local.float() / n_all.clamp(min=1)
