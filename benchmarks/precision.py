"""Precision and LoRA: TextPPO's rollout and update in fp32 vs bf16, full fine-tuning vs LoRA.

    python benchmarks/precision.py [--env TextGen-Sentiment-v0] [--batch 16] [--device auto]
    python benchmarks/precision.py --model tiny --batch 4 --new-tokens 4 --minibatch 2   # smoke
    python benchmarks/precision.py --precisions fp32 --plain   # also acting on plain weights

Each setting (``--precisions`` x full/LoRA) gets a fresh TextPPO agent with the registry's
values for ``--env`` (the batch shape is the measurement's own) and the same seed; after one
untimed iteration (oneDNN picks its kernels, the reference loads), ``--repeats`` timed
iterations each time a rollout (``collect_rollouts``: sampling with the KV cache, values,
rewards, the reference pass) and an update (``train()``); the best of each is kept. Generated
tokens per second, and each setting's ratio to fp32 with full fine-tuning, all from this one
run. Also records the CPU probe behind ``--precision auto`` (bf16 vs fp32 matrix products)
and what ``auto`` picks here. ``--plain``: also each setting with ``packed_linears=False``
(acting on the plain weights: no oneDNN-packed float32 copies, no kept bf16 copies), named
``...-plain``, to show what those copies save. Prints a table; writes one JSON record, never
overwriting.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import torch
from common import parse_args, registry_textppo, write_record
from rich.console import Console
from rich.table import Table

from textgym.models import DEFAULT_MODEL
from textgym.models.precision import cpu_bf16_speedup, resolve_device, resolve_precision


@dataclass
class Args:
    model: str = DEFAULT_MODEL
    env: str = "TextGen-Sentiment-v0"
    batch: int = 16  # episodes per iteration
    minibatch: int = 8  # episodes per gradient step
    new_tokens: int = 32
    repeats: int = 2  # timed iterations per setting (best kept)
    precisions: str = "fp32,bf16"
    lora: bool = True  # also each precision with LoRA adapters (peft)
    plain: bool = False  # also each setting acting on plain weights (packed_linears=False)
    device: str = "auto"
    seed: int = 0
    out: str = "benchmarks/results"

    def __post_init__(self) -> None:
        for name in ("batch", "minibatch", "new_tokens", "repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for precision in self.precision_list:
            if precision not in ("fp32", "bf16"):
                raise ValueError(
                    f"--precisions takes fp32 and/or bf16, comma-separated, got {self.precisions!r}"
                )

    @property
    def precision_list(self) -> list[str]:
        return [p.strip() for p in self.precisions.split(",") if p.strip()]


def measure(args: Args, precision: str, lora: bool, device: str, packed: bool) -> dict[str, dict[str, float]]:
    env = gym.make(args.env, model=args.model, max_new_tokens=args.new_tokens)
    shape = {"batch_episodes": args.batch, "minibatch_episodes": args.minibatch}
    agent = registry_textppo(
        env, args.env, args.seed, shape, device=device, precision=precision, lora=lora, packed_linears=packed
    )
    callback = agent._init_callback(None)
    best = {"rollout": 0.0, "update": 0.0}
    for repeat in range(args.repeats + 1):  # the first is the untimed warm-up
        agent.collect_rollouts(agent.env, callback, agent.rollout_buffer, agent.n_steps)
        agent.train()
        if repeat:
            best["rollout"] = max(best["rollout"], agent.last_rollout["tokens_per_s"])
            best["update"] = max(best["update"], agent.last_update["tokens_per_s"])
    net = agent.policy.net
    return {
        "rollout": {"tokens_per_s": best["rollout"]},
        "update": {"tokens_per_s": best["update"]},
        "trainable_fraction": net.trainable_fraction(),
        "precision": net.precision,  # what the policy ran in
    }


def main() -> None:
    args = parse_args(Args, __doc__.splitlines()[0])
    console = Console(width=120)
    device = resolve_device(args.device)
    probe = cpu_bf16_speedup() if device == "cpu" else None
    auto = resolve_precision("auto", device)
    settings = [
        (p, lora, packed)
        for p in args.precision_list
        for lora in ((False, True) if args.lora else (False,))
        for packed in ((True, False) if args.plain else (True,))
    ]
    results: dict[str, dict] = {}
    for precision, lora, packed in settings:
        name = f"{precision}-{'lora' if lora else 'full'}{'' if packed else '-plain'}"
        console.print(f"{name}: {args.repeats} timed iterations of {args.batch} texts on {args.env} ...")
        results[name] = measure(args, precision, lora, device, packed)

    base = results.get("fp32-full")
    ratios: dict[str, float] = {}
    table = Table(title=f"precision and LoRA ({device}, {torch.get_num_threads()} threads, {args.model})")
    for column in (
        "setting",
        "trainable",
        "rollout tokens/s",
        "update tokens/s",
        "rollout ratio",
        "update ratio",
    ):
        table.add_column(column, justify="left" if column == "setting" else "right")
    for name, row in results.items():
        cells = ["", ""]
        if base is not None:
            for i, part in enumerate(("rollout", "update")):
                ratios[f"{name}_vs_fp32-full/{part}"] = row[part]["tokens_per_s"] / base[part]["tokens_per_s"]
                cells[i] = f"{ratios[f'{name}_vs_fp32-full/{part}']:.2f}x"
        table.add_row(
            name, f"{row['trainable_fraction']:.2%}", f"{row['rollout']['tokens_per_s']:.1f}",
            f"{row['update']['tokens_per_s']:.1f}", *cells,
        )  # fmt: skip
    console.print(table)
    if probe is not None:
        console.print(
            f"CPU probe: bf16 autocast products at {probe:.2f}x fp32's; --precision auto picks {auto}"
        )
    record = {
        "device": device,
        "cpu_bf16_speedup": probe,
        "auto": auto,
        "settings": results,
        "ratios": ratios,
    }
    console.print(f"wrote {write_record('precision', args, record, args.out)}")


if __name__ == "__main__":
    main()
