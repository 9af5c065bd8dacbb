"""The GPU check: one command on a CUDA machine says whether textgym's GPU path works and pays.

    python benchmarks/gpu_check.py                  # CUDA (auto), the default model, 5 minutes
    python benchmarks/gpu_check.py --device cpu --model tiny --budget-tokens 64 --batch 4 --new-tokens 4

Prints, for ``--device`` (``auto``: CUDA where present) and ``--precision`` (``auto``: bf16
where the GPU supports it):
- TextPPO's rollout (``collect_rollouts``) vs ``model.generate`` sampling of the same prompts;
- TextPPO's update (``train()``) vs a bare forward + backward over the same texts;
- peak memory (the GPU's allocator on CUDA, the process's RSS on CPU);
- ``--minutes`` of ``textgym train`` (TextPPO, the registry's values) on ``--env``: the test
  reward on ``--eval-prompts`` prompts before and after, with 95% intervals.
Writes one JSON record (and the run directory under ``--out``), never overwriting.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import torch
from common import STARTED_AT_COMMIT, parse_args, registry_textppo, write_record
from rich.console import Console
from rich.table import Table
from throughput import bare_forward_backward, bare_generate, rollout

from textgym.agents.runs.config import TrainConfig
from textgym.agents.runs.training import train
from textgym.models import DEFAULT_MODEL
from textgym.models.precision import describe_precision, resolve_device, resolve_precision


@dataclass
class Args:
    model: str = DEFAULT_MODEL
    env: str = "TextGen-Sentiment-v0"
    device: str = "auto"
    precision: str = "auto"
    batch: int = 64  # texts sampled together in the rollout comparison
    new_tokens: int = 48
    minibatch: int = 8
    minutes: float = 5.0  # of TextPPO training
    budget_tokens: int = 10**9  # or as many generated tokens, if fewer (a smoke run's budget)
    eval_prompts: int = 64
    seed: int = 0
    out: str = "benchmarks/results"


def peak_memory_gb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    args = parse_args(Args, __doc__.splitlines()[0])
    console = Console(width=120)
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "CPU"
    console.print(f"{device} ({name}), precision {describe_precision(args.precision, device)}")

    env = gym.make(args.env, model=args.model, max_new_tokens=args.new_tokens)
    shape = {"batch_episodes": args.batch, "minibatch_episodes": args.minibatch}
    agent = registry_textppo(env, args.env, args.seed, shape, device=device, precision=precision)
    rollout(agent)  # warm-up: kernels chosen, the reference loaded
    agent.train()
    console.print("rollout vs generate, update vs forward + backward ...")
    ours = rollout(agent)
    generate = bare_generate(agent, agent.last_rollout["indices"], args.new_tokens, args.seed)
    bare = bare_forward_backward(agent, agent.rollout_buffer.episodes, args.minibatch)
    agent.train()
    update = agent.last_update
    peak = peak_memory_gb(device)
    del agent

    console.print(f"{args.minutes:g} minutes of TextPPO on {args.env} ...")
    config = TrainConfig(
        env=args.env, model=args.model, seed=args.seed, budget_minutes=args.minutes,
        budget_tokens=args.budget_tokens, eval_prompts=args.eval_prompts, eval_every_minutes=0,
        device=device, precision=args.precision,
    )  # fmt: skip
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = Path(args.out) / f"gpu-check-{args.env}-{stamp}-{STARTED_AT_COMMIT[:8]}"
    result = train(config, run_dir, console=console)
    before, after = result["summary"]["before"], result["summary"]["after"]

    ratios = {
        "rollout_vs_generate": ours["tokens_per_s"] / generate["tokens_per_s"],
        "update_vs_forward_backward": update["tokens_per_s"] / bare["tokens_per_s"],
    }
    table = Table(title=f"GPU check: {device} ({name}), {precision}, {args.model}")
    for column in ("measurement", "ours", "baseline", "ratio"):
        table.add_column(column, justify="left" if column == "measurement" else "right")
    table.add_row(
        f"rollout vs model.generate ({args.batch} x {args.new_tokens}), tokens/s",
        f"{ours['tokens_per_s']:.0f}", f"{generate['tokens_per_s']:.0f}",
        f"{ratios['rollout_vs_generate']:.2f}x",
    )  # fmt: skip
    table.add_row(
        f"update vs forward + backward (minibatch {args.minibatch}), tokens/s",
        f"{update['tokens_per_s']:.0f}", f"{bare['tokens_per_s']:.0f}",
        f"{ratios['update_vs_forward_backward']:.2f}x",
    )  # fmt: skip
    table.add_row("peak memory, GB", f"{peak:.2f}", "", "")
    table.add_row(
        f"TextPPO {result['summary']['train_minutes']:.1f} min ({result['summary']['train_tokens']} tokens): "
        f"test reward before -> after ({args.eval_prompts} prompts)",
        f"{after['reward']:+.3f} ± {after['reward_ci95']:.3f}",
        f"{before['reward']:+.3f} ± {before['reward_ci95']:.3f}",
        f"{after['reward'] - before['reward']:+.3f}",
    )  # fmt: skip
    console.print(table)
    record = {
        "device": device, "device_name": name, "precision": precision, "rollout": ours, "generate": generate,
        "update": update, "forward_backward": bare, "peak_memory_gb": peak, "ratios": ratios,
        "training": {"run_dir": str(run_dir), **result["summary"]},
    }  # fmt: skip
    console.print(f"wrote {write_record('gpu-check', args, record, args.out)}")


if __name__ == "__main__":
    main()
