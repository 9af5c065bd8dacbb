"""Evaluating a policy on a fixed, seeded set of prompts: the task reward, the task's standard
metrics, fluency, diversity and KL to the reference, each mean with a 95% interval."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from rich.table import Table
from stable_baselines3.common.base_class import BaseAlgorithm

import textgym
from textgym.agents.common.network import LMActorCritic
from textgym.agents.common.policies import LMActorCriticPolicy
from textgym.agents.common.rollout import play, play_turns, token_log_probs
from textgym.agents.runs.checkpoints import is_run_dir, load_agent
from textgym.agents.runs.config import SEEDS
from textgym.datasets import example_columns
from textgym.envs.base import TextGenEnv
from textgym.envs.multiturn import MultiTurnEnv
from textgym.models import logits_width
from textgym.rewards.lexical import distinct_n, repetition_rate
from textgym.rewards.metrics import compute_metrics

Z95 = 1.959964  # two-sided 95% normal quantile


def mean_ci(values: Any) -> tuple[float, float]:
    """Mean and 95% half-width (normal approximation) of a 1-D sample; NaN half-width if n < 2."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return float(values.mean()) if len(values) else float("nan"), float("nan")
    return float(values.mean()), float(Z95 * values.std(ddof=1) / math.sqrt(len(values)))


def prompt_indices(n_examples: int, n: int, seed: int = 0) -> list[int]:
    """The fixed evaluation prompts: ``n`` example indices drawn without replacement (seeded)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    order = np.random.default_rng(seed).permutation(n_examples)
    return sorted(int(i) for i in order[: min(n, n_examples)])


def resolve_policy(
    policy: Any, temperature: float = 1.0, *, device: str = "cpu", precision: str | None = None
) -> tuple[LMActorCritic, str]:
    """The network and a short description of ``policy``: an SB3 algorithm (TextPPO, PPO, A2C)
    with an LM policy, an :class:`LMActorCriticPolicy`, an :class:`LMActorCritic`, a checkpoint
    (run directory or ``.zip``), or a model name or path (the untrained model). A checkpoint or
    a model name loads on ``device``, in ``precision`` (None: a checkpoint's own, fp32 for a
    model name); an agent or a network runs where it is, as it is."""
    if isinstance(policy, LMActorCritic):
        return policy, f"LMActorCritic({policy.model_name})"
    if isinstance(policy, LMActorCriticPolicy):
        return policy.net, f"{type(policy).__name__}({policy.net.model_name})"
    if isinstance(policy, BaseAlgorithm):
        net = getattr(policy.policy, "net", None)  # LMActorCriticPolicy's, or LMQPolicy's Q-network LM
        if not isinstance(net, LMActorCritic):
            raise TypeError(f"{type(policy).__name__} has a {type(policy.policy).__name__}, not an LM policy")
        return net, f"{type(policy).__name__}({net.model_name})"
    if isinstance(policy, (str, Path)):
        path = Path(policy)
        if path.suffix == ".zip" or is_run_dir(path):
            agent = load_agent(path, device=device, precision=precision)
            return resolve_policy(agent)[0], f"{type(agent).__name__} checkpoint {path}"
        name = str(policy)
        net = LMActorCritic(name, logits_width(name), temperature=temperature, precision=precision or "fp32")
        net.to(device)
        return net, f"untrained {name}"
    raise TypeError(
        "policy must be an SB3 algorithm, an LMActorCriticPolicy, an LMActorCritic, a checkpoint "
        f"path or a model name, got {type(policy).__name__}"
    )


@dataclass
class Evaluation:
    """What :func:`evaluate` measured: aggregate ``metrics`` and one row per (seed, example)."""

    env_id: str
    split: str
    policy: str
    greedy: bool
    seeds: list[int]
    metric_names: list[str]
    metrics: dict[str, float]
    examples: list[dict[str, Any]] = field(repr=False)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def rows(self) -> list[tuple[str, str]]:
        """(metric, formatted value) pairs, for tables."""
        m = self.metrics

        def pm(key: str, digits: int = 3, sign: bool = False) -> str:
            value, half = m[key], m.get(f"{key}_ci95", float("nan"))
            text = f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"
            return text if math.isnan(half) else f"{text} ± {half:.{digits}f}"

        rows = [("task reward", pm("reward", sign=True))]
        rows += [(name, pm(name, 2 if name == "bleu" else 3)) for name in self.metric_names]
        rows.append(
            ("perplexity", f"{m['perplexity']:.2f} ({m['perplexity_low']:.2f}-{m['perplexity_high']:.2f})")
        )
        rows += [("distinct-1", f"{m['distinct_1']:.3f}"), ("distinct-2", f"{m['distinct_2']:.3f}")]
        rows += [("mean length (tokens)", pm("mean_length", 1)), ("repetition (seq-rep-4)", pm("repetition"))]
        rows.append(("KL to reference (nats/text)", "-" if math.isnan(m["kl"]) else pm("kl", 2)))
        return rows

    def table(self, title: str | None = None) -> Table:
        table = Table(title=title or f"{self.env_id} ({self.split}, n={self.metrics['n']}): {self.policy}")
        table.add_column("metric")
        table.add_column("mean ± 95% CI", justify="right")
        for name, value in self.rows():
            table.add_row(name, value)
        return table


@torch.no_grad()
def _reference_terms(net: LMActorCritic, batch: Any, minibatch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per emitted token (B, R): log-prob under the frozen reference (raw, for perplexity) and
    under the reference's KL distribution (temperature and mask, as TextPPO's penalty)."""
    raw_lp = torch.zeros_like(batch.log_probs)
    kl_lp = torch.zeros_like(batch.log_probs)
    for first in range(0, len(batch.ids), minibatch):
        index = torch.arange(first, min(first + minibatch, len(batch.ids)))
        part = batch.select(index)
        select = part.response_mask
        logits = net.reference_logits(part.ids, part.mask, part.start, select).float()  # (N, V)
        tokens = part.tokens[select]
        rows_raw, rows_kl = torch.zeros_like(part.log_probs), torch.zeros_like(part.log_probs)
        rows_raw[select] = token_log_probs(logits, tokens)
        rows_kl[select] = token_log_probs(net.kl_logits(logits), tokens)
        raw_lp[index], kl_lp[index] = rows_raw, rows_kl
    return raw_lp, kl_lp


def evaluate(
    policy: Any,
    env_id: str,
    split: str = "test",
    n: int = 64,
    *,
    seeds: tuple[int, ...] | list[int] = (0,),
    greedy: bool = False,
    prompt_seed: int = 0,
    batch_size: int = 32,
    temperature: float = 1.0,
    env_kwargs: dict[str, Any] | None = None,
    device: str = "cpu",
    precision: str | None = None,
) -> Evaluation:
    """Run ``policy`` on ``n`` seeded prompts of ``env_id``'s ``split``, once per seed.

    Reports the task reward, the task's standard metrics (``TaskDefaults.metrics``), fluency as
    the perplexity of the generated tokens under the frozen initial model (the policy's
    reference: its model before training), diversity (distinct-1/2, mean length, seq-rep-4)
    and, for sampled texts, the KL to the reference (k1 estimate, nats per text). Means carry
    a 95% interval over examples, of each example's mean over the seeds. ``temperature``
    applies to untrained models given by name; trained agents keep their own. ``device`` and
    ``precision`` apply to a model name or a checkpoint path (see :func:`resolve_policy`).
    """
    if env_id not in gym.registry:
        raise ValueError(f"unknown env {env_id!r}: expected one of {list(textgym.ENVS)}")
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < SEEDS for s in seeds):
        raise ValueError(f"seeds must be a non-empty list of ints from 0 to {SEEDS - 1}, got {seeds!r}")
    net, description = resolve_policy(policy, temperature, device=device, precision=precision)
    env = gym.make(env_id, model=net.model_name, split=split, **(env_kwargs or {})).unwrapped
    if not isinstance(env, TextGenEnv):
        raise TypeError(f"{env_id} is not a textgym env")
    indices = prompt_indices(len(env.examples), n, prompt_seed)
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    was_training = net.training
    net.eval()
    try:
        for seed in seeds if not greedy else seeds[:1]:
            generator = torch.Generator(device=net.invalid.device).manual_seed(seed)
            for first in range(0, len(indices), batch_size):
                chunk = indices[first : first + batch_size]
                examples = [env.examples[i] for i in chunk]
                if isinstance(env, MultiTurnEnv):  # whole conversations; the game scores itself
                    batch, rewards, infos = play_turns(net, env, examples, generator, greedy=greedy)
                else:
                    batch, rewards, infos = play(net, env, examples, generator, greedy=greedy)
                raw_lp, kl_lp = _reference_terms(net, batch, minibatch=8)
                mask = batch.response_mask.float()
                tokens = mask.sum(-1).clamp(min=1)
                nll = (-(raw_lp * mask).sum(-1) / tokens).tolist()
                kl = ((batch.kl_log_probs - kl_lp) * mask).sum(-1).tolist()
                texts = [info["text"] for info in infos]
                if isinstance(env, MultiTurnEnv):
                    metric_values = {
                        name: [info["metrics"][name] for info in infos] for name in env.defaults.metrics
                    }
                else:
                    metric_values = compute_metrics(
                        env.defaults.metrics,
                        [e.prompt for e in examples],
                        texts,
                        [list(e.references) for e in examples],
                        example_columns(examples),
                    )
                for j, (index, example, info) in enumerate(zip(chunk, examples, infos)):
                    rows.append({
                        "seed": seed, "index": index, "example_id": example.id, "prompt": example.prompt,
                        "references": list(example.references), "text": texts[j],
                        "reward": float(rewards[j]), "components": info["reward_components"],
                        **{name: float(values[j]) for name, values in metric_values.items()},
                        "tokens": int(batch.lengths[j]), "nll": nll[j],
                        "kl": float("nan") if greedy else kl[j],
                        "repetition": repetition_rate(texts[j]),
                        **({"conversation": info["turns"]} if isinstance(env, MultiTurnEnv) else {}),
                    })  # fmt: skip
    finally:
        net.train(was_training)
    metrics = aggregate(rows, list(env.defaults.metrics))
    return Evaluation(
        env_id=env_id,
        split=split,
        policy=description + (" (greedy)" if greedy else ""),
        greedy=greedy,
        seeds=list(seeds if not greedy else seeds[:1]),
        metric_names=list(env.defaults.metrics),
        metrics=metrics,
        examples=rows,
        seconds=time.perf_counter() - started,
    )


def per_example(rows: list[dict[str, Any]], key: str) -> np.ndarray:
    """Each example's mean of ``key`` over the seeds, in index order."""
    by_index: dict[int, list[float]] = {}
    for row in rows:
        by_index.setdefault(row["index"], []).append(row[key])
    return np.array([np.mean(by_index[i]) for i in sorted(by_index)], dtype=np.float64)


def aggregate(rows: list[dict[str, Any]], metric_names: list[str]) -> dict[str, float]:
    """Means with 95% intervals over examples (of per-example means over seeds); distinct-n over
    each seed's texts, averaged over seeds; perplexity as exp of the mean per-token NLL."""
    out: dict[str, float] = {"n": len({row["index"] for row in rows})}
    for key in ("reward", *metric_names, "tokens", "repetition", "kl"):
        mean, half = mean_ci(per_example(rows, key))
        name = "mean_length" if key == "tokens" else key
        out[name], out[f"{name}_ci95"] = mean, half
    nll, half = mean_ci(per_example(rows, "nll"))
    out["perplexity"] = math.exp(nll)
    out["perplexity_low"], out["perplexity_high"] = math.exp(nll - half), math.exp(nll + half)
    seeds = sorted({row["seed"] for row in rows})
    for n in (1, 2):
        out[f"distinct_{n}"] = float(
            np.mean([distinct_n([r["text"] for r in rows if r["seed"] == s], n) for s in seeds])
        )
    return out
