"""Export a trained policy as a standard transformers model directory (``textgym export``).

The directory loads with ``AutoModelForCausalLM.from_pretrained(out)`` or
``transformers.pipeline("text-generation", model=out)``, with no textgym installed::

    config.json, model.safetensors   the policy's LM, LoRA adapters merged (plain weights,
                                     no quantization_config)
    generation_config.json           the policy's sampling distribution (temperature, top-k,
                                     top-p), its end tokens, and ids the tokenizer cannot decode
                                     suppressed (the agent masks them)
    tokenizer files                  the env's tokenizer
    value_head.safetensors           the critic: the value head (and a separate critic trunk)
    README.md                        model card: env, algorithm, hyperparameters, metrics

It is written to a temporary sibling directory and renamed into place
(:func:`textgym.atomic.staged_dir`), so a failed export leaves nothing at ``out``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from stable_baselines3.common.base_class import BaseAlgorithm
from transformers import (
    GenerationConfig,
    PreTrainedModel,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

import textgym
from textgym.agents.common.network import LMActorCritic
from textgym.agents.runs.checkpoints import (
    CheckpointError,
    checkpoint_path,
    is_run_dir,
    load_agent,
    read_json,
    read_run,
)
from textgym.atomic import check_writable, staged_dir
from textgym.compat import strip_quantization
from textgym.models import DEFAULT_MODEL, eos_token_ids
from textgym.models.loading import quiet_progress_bars

VALUE_HEAD = "value_head.safetensors"
CARD = "README.md"
# Hub ids of the models textgym knows by a short name, for the card's ``base_model``.
HUB_IDS = {DEFAULT_MODEL: "HuggingFaceTB/SmolLM2-135M-Instruct"}


def export_model(checkpoint: str | Path, out: str | Path) -> Path:
    """Write the agent at ``checkpoint`` (a ``textgym train`` run directory or an SB3 ``.zip``)
    to ``out`` as a transformers model directory (see the module docstring); returns ``out``.

    Raises :class:`CheckpointError` (a ``ValueError``) for a missing or corrupt checkpoint and
    ``ValueError`` if ``out`` exists and is not an empty directory.
    """
    out = Path(out)
    _check_out(out)
    checkpoint = Path(checkpoint)
    archive, algo = checkpoint_path(checkpoint)
    run = read_run(checkpoint) if is_run_dir(checkpoint) else None
    agent = load_agent(checkpoint)
    net = getattr(agent.policy, "net", None)
    if not isinstance(net, LMActorCritic):
        raise CheckpointError(f"checkpoint {archive} holds a {type(agent.policy).__name__}, not an LM policy")
    lm = plain_lm(net)
    lm.generation_config = generation_config(net, lm)

    evaluations = _evaluations(checkpoint, run)
    try:
        with staged_dir(out) as staging:
            with quiet_progress_bars():
                lm.save_pretrained(staging)
            net.tokenizer.save_pretrained(staging)
            save_file(critic_tensors(net), staging / VALUE_HEAD)
            (staging / CARD).write_text(model_card(out.name, net, agent, algo, archive, run, evaluations))
            _check_out(out)  # nothing appeared there meanwhile
            if out.is_dir():
                out.rmdir()  # empty: staged_dir renames only onto a path that does not exist
    except FileExistsError:  # another process created out between the check and the rename
        raise ValueError(f"--out {out} was created by another process during the export") from None
    return out


def _check_out(out: Path) -> None:
    check_writable(out, "--out", folder=True)  # a file there, under a file, read-only
    if out.is_dir() and any(out.iterdir()):
        raise ValueError(f"--out {out} already exists and is not empty: choose a new directory")


def plain_lm(net: LMActorCritic) -> PreTrainedModel:
    """The policy's causal LM as an ordinary transformers model: LoRA adapters merged into the
    weights (this changes ``net``), no quantizer or quantization config."""
    lm = net.lm.merge_and_unload() if net.lora is not None else net.causal
    strip_quantization(lm)
    return lm


def sampling_knobs(net: LMActorCritic) -> dict[str, float]:
    """Temperature, top-k and top-p of the policy's sampling distribution (1, 0 and 1 when off)."""
    knobs: dict[str, float] = {"temperature": 1.0, "top_k": 0, "top_p": 1.0}
    for processor in net.processors:
        if isinstance(processor, TemperatureLogitsWarper):
            knobs["temperature"] = float(processor.temperature)
        elif isinstance(processor, TopKLogitsWarper):
            knobs["top_k"] = int(processor.top_k)
        elif isinstance(processor, TopPLogitsWarper):
            knobs["top_p"] = float(processor.top_p)
    return knobs


def suppressed_ids(net: LMActorCritic) -> list[int]:
    """Logit rows past the tokenizer's vocabulary, which the agent never emits."""
    return torch.nonzero(net.invalid).flatten().tolist()


def generation_config(net: LMActorCritic, lm: PreTrainedModel) -> GenerationConfig:
    """``generate()`` defaults that sample as the policy does (``do_sample=False`` is its greedy
    text) and end where the env ends an episode."""
    config = GenerationConfig.from_dict(lm.generation_config.to_dict())
    config.do_sample = True
    for name, value in sampling_knobs(net).items():
        setattr(config, name, value)
    config.eos_token_id = sorted(eos_token_ids(net.model_name))
    config.pad_token_id = net.pad_id
    config.suppress_tokens = suppressed_ids(net) or None
    return config


def critic_tensors(net: LMActorCritic) -> dict[str, torch.Tensor]:
    """The value head (``value_head.weight`` (1, H), ``value_head.bias`` (1,)) and, for a
    separate critic, its trunk (``critic.*``), as contiguous CPU tensors."""
    tensors = {f"value_head.{k}": v for k, v in net.value_head.state_dict().items()}
    if net.critic is not None:
        tensors.update({f"critic.{k}": v for k, v in net.critic.state_dict().items()})
    return {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}


def _evaluations(checkpoint: Path, run: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Before/after metrics: ``eval-before.json`` / ``eval-after.json``, else ``run.json``'s summary."""
    found: dict[str, dict[str, Any]] = {}
    summary = (run or {}).get("summary") or {}
    for when in ("before", "after"):
        path = checkpoint / f"eval-{when}.json"
        if run is not None and path.is_file():
            try:
                metrics = read_json(path, "evaluation").get("metrics")
            except (CheckpointError, AttributeError):
                metrics = None
            if isinstance(metrics, dict):
                found[when] = metrics
                continue
        if isinstance(summary.get(when), dict):
            found[when] = summary[when]
    return found


def _settings(config: dict[str, Any]) -> list[tuple[str, Any]]:
    """A run's settings, its nested ``hyperparams`` (and any other table) one row per entry."""
    rows: list[tuple[str, Any]] = []
    for key, value in config.items():
        if isinstance(value, dict):
            rows += [(name if key == "hyperparams" else f"{key}.{name}", v) for name, v in value.items()]
        else:
            rows.append((key, value))
    return rows


def _value(metrics: dict[str, Any], key: str) -> str:
    value = metrics.get(key)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "-"
    if math.isnan(value):
        return "-"
    half = metrics.get(f"{key}_ci95")
    text = f"{value:.4g}"
    if isinstance(half, (int, float)) and not math.isnan(half):
        text += f" ± {half:.2g}"
    return text


def model_card(
    name: str,
    net: LMActorCritic,
    agent: BaseAlgorithm,
    algo: str,
    archive: Path,
    run: dict[str, Any] | None,
    evaluations: dict[str, dict[str, Any]],
) -> str:
    """The README.md of an exported model."""
    config = (run or {}).get("config") or {}
    env = config.get("env", "unknown env")
    knobs = sampling_knobs(net)
    suppressed = suppressed_ids(net)
    front = ["---", "library_name: transformers", "pipeline_tag: text-generation"]
    if net.model_name in HUB_IDS:
        front.append(f"base_model: {HUB_IDS[net.model_name]}")
    front += ["tags:", "- textgym", "- reinforcement-learning", f"- {algo}", "---", ""]
    lines = [
        *front,
        f"# {name}",
        "",
        f"A policy for the textgym environment `{env}`, trained with {type(agent).__name__} "
        f"({agent.num_timesteps} generated tokens) from `{net.model_name}` and exported by "
        f"textgym {textgym.__version__} from `{archive}`.",
        "",
        "## Model",
        "",
        f"- base model: `{net.model_name}`; "
        + (
            f"LoRA adapters ({json.dumps(net.lora)}) merged into the weights"
            if net.lora
            else "full fine-tune"
        ),
        f"- sampling distribution of the policy, the defaults in `generation_config.json`: temperature "
        f"{knobs['temperature']:g}, top-k {knobs['top_k'] or 'off'}, top-p {knobs['top_p']:g} "
        "(`do_sample=False` gives the policy's greedy text)",
        f"- episodes end at token ids {sorted(eos_token_ids(net.model_name))} (`eos_token_id`)",
    ]
    if suppressed:
        lines.append(
            f"- the model has {len(suppressed)} logit rows past the tokenizer's vocabulary (ids "
            f"{suppressed[0]}-{suppressed[-1]}); the agent never emits them, and "
            "`generation_config.suppress_tokens` lists them so `generate()` does not either"
        )
    lines += [
        "",
        "## Usage",
        "",
        "```python",
        "from transformers import pipeline",
        "",
        f'generate = pipeline("text-generation", model="{name}")',
        'print(generate("Hello", max_new_tokens=32)[0]["generated_text"])',
        "```",
        "",
        "Prompts are formatted as the env formats them (the chat template for conversations).",
        "",
        "## Value head",
        "",
        f"`{VALUE_HEAD}` holds the critic, which is not part of the LM's weights: `value_head.weight` "
        "(1, H) and `value_head.bias` (1,) map the last hidden state (after the final norm) to the "
        "value of the state before the next token, `values = hidden.float() @ weight.T + bias`"
        + (
            ", computed from a separate critic trunk whose weights are the `critic.*` tensors."
            if net.critic is not None
            else ", with `hidden = model.model(input_ids).last_hidden_state`."
        ),
        "",
    ]
    if config:
        lines += ["## Training", "", "| hyperparameter | value |", "| --- | --- |"]
        lines += [f"| {key} | {v if isinstance(v, str) else json.dumps(v)} |" for key, v in _settings(config)]
        summary = (run or {}).get("summary") or {}
        for key in ("train_tokens", "train_minutes", "tokens_per_s"):
            if isinstance(summary.get(key), (int, float)):
                lines.append(f"| {key} (measured) | {summary[key]:.4g} |")
        lines.append("")
    if evaluations:
        before, after = evaluations.get("before", {}), evaluations.get("after", {})
        both = {**before, **after}
        keys = [k for k, v in both.items() if not k.endswith("_ci95") and isinstance(v, (int, float))]
        lines += [
            "## Evaluation",
            "",
            f"On the test split of `{env}` (mean ± 95% interval):",
            "",
            "| metric | before training | after training |",
            "| --- | --- | --- |",
        ]
        lines += [f"| {key} | {_value(before, key)} | {_value(after, key)} |" for key in keys]
        lines.append("")
    return "\n".join(lines)
