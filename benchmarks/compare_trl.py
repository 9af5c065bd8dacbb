"""textgym against TRL's GRPOTrainer: the same model, reward, prompts, completion length and wall time.

    pip install trl     # an optional benchmark dependency (not in textgym's extras)
    python benchmarks/compare_trl.py [--minutes 10] [--algo textppo] [--precision bf16] [--lora]
                                     [--hyperparams KEY=VALUE ...]

One after the other in one run, on ``--env`` (Sentiment: VADER reward, chitchat prompts, 32-token
completions): ``textgym train --algo ALGO`` (the registry's values, ``--hyperparams`` over them
as in ``textgym train``) for ``--minutes`` of training (in ``--precision``; ``--lora``: adapters
only), then TRL's ``GRPOTrainer`` with its defaults apart from the learning rate (``--trl-lr``,
by default the textgym agent's), the completion length (the env's), ``use_cpu`` on a machine
without CUDA (transformers refuses to start otherwise) and, if asked, its precision
(``--trl-precision``: TRL's configs default to bf16, which a CPU without bf16 instructions
emulates hundreds of times slower than fp32), stopped after the same wall time by a callback.
Each is scored on the same ``--eval-prompts`` test prompts by ``textgym.agents.evaluate`` (TRL's
model saved as a transformers directory, then loaded into a textgym network whose reference is
the untrained model, so both perplexities and KLs are against the same model). Reports
end-to-end completion tokens per second of training (TRL's counted from the completions its
reward function receives) and each one's reward gain over the untrained model, with 95%
intervals. Writes one JSON record, never overwriting.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
from common import STARTED_AT_COMMIT, parse_args, write_record
from rich.console import Console
from rich.table import Table

from textgym.agents.common.network import LMActorCritic
from textgym.agents.runs.config import TrainConfig
from textgym.agents.runs.evaluation import evaluate
from textgym.agents.runs.hyperparams import hyperparams, parse_overrides
from textgym.agents.runs.training import train
from textgym.models import DEFAULT_MODEL, load_model, load_tokenizer, logits_width

TRL_PRECISIONS = ("default", "same", "fp32", "bf16")


@dataclass
class Args:
    model: str = DEFAULT_MODEL
    env: str = "TextGen-Sentiment-v0"
    algo: str = "textppo"  # textgym's agent
    precision: str = "fp32"  # textgym's: fp32 | bf16 | auto (TRL's: --trl-precision)
    lora: bool = False  # textgym trains LoRA adapters only
    hyperparams: dict = field(default_factory=dict)  # textgym's overrides: --hyperparams kl_coef=0.01 ...
    minutes: float = 10.0  # of training, each
    # TRL's learning rate (0: the textgym agent's as it would be without --lora: TRL trains the
    # whole model, and the registry gives LoRA adapters a larger rate)
    trl_lr: float = 0.0
    # TRL's precision: default (its configs': bf16, even on a CPU that only emulates it) | same
    # (textgym's, as resolved) | fp32 | bf16
    trl_precision: str = "default"
    eval_prompts: int = 64
    seed: int = 0
    out: str = "benchmarks/results"


def trl_modules() -> tuple[Any, Any, Any, Any]:
    try:
        from datasets import Dataset
        from transformers import TrainerCallback
        from trl import GRPOConfig, GRPOTrainer
    except ImportError as err:
        raise SystemExit(f"compare_trl.py needs TRL: pip install trl ({err})") from None
    return Dataset, TrainerCallback, GRPOConfig, GRPOTrainer


def run_trl(args: Args, lr: float, folder: Path, precision: str) -> dict[str, Any]:
    """GRPOTrainer for ``args.minutes`` of wall time, in ``precision`` (``default``: TRL's own
    choice); the saved model's directory and the completion tokens it generated."""
    Dataset, TrainerCallback, GRPOConfig, GRPOTrainer = trl_modules()
    env = gym.make(args.env, model=args.model).unwrapped
    tokenizer = load_tokenizer(args.model)
    # The env's own prompts (chat template applied), as text TRL tokenizes again.
    prompts = [tokenizer.decode(env.encode_prompt(example)[0]) for example in env.examples]
    counted = {"tokens": 0}

    def reward(prompts: list[str], completions: list[str], **kwargs: Any) -> list[float]:
        ids = kwargs.get("completion_ids")
        counted["tokens"] += (
            sum(len(i) for i in ids)
            if ids is not None
            else sum(len(tokenizer(c)["input_ids"]) for c in completions)
        )
        references = [[] for _ in completions]
        return [float(r) for r in env.reward_fn(prompts, completions, references)]

    class WallClock(TrainerCallback):
        def __init__(self) -> None:
            self.start = time.perf_counter()

        def on_step_end(self, _args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if time.perf_counter() - self.start >= args.minutes * 60:
                control.should_training_stop = True
            return control

    config = GRPOConfig(
        output_dir=str(folder / "trl"), learning_rate=lr, max_completion_length=env.max_new_tokens,
        report_to="none", save_strategy="no", logging_steps=1, seed=args.seed, max_steps=10**6,
        use_cpu=not torch.cuda.is_available(),  # transformers refuses a CPU run without it
        **({} if precision == "default" else {"bf16": precision == "bf16", "fp16": False}),
    )  # fmt: skip
    trainer = GRPOTrainer(
        model=load_model(args.model), reward_funcs=reward, args=config,
        train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]), processing_class=tokenizer,
    )  # fmt: skip
    clock = WallClock()
    trainer.add_callback(clock)
    trainer.train()
    seconds = time.perf_counter() - clock.start
    model_dir = folder / "trl-model"
    trainer.save_model(str(model_dir))
    tokenizer.save_pretrained(str(model_dir))
    return {
        "model_dir": model_dir,
        "tokens": counted["tokens"],
        "seconds": seconds,
        "steps": trainer.state.global_step,
        "precision": "bf16" if config.bf16 else "fp16" if config.fp16 else "fp32",
        "generations_per_prompt": config.num_generations,
        "batch_size": config.per_device_train_batch_size,
    }


def trained_net(model: str, model_dir: Path, precision: str) -> LMActorCritic:
    """TRL's trained weights in a textgym network whose reference is the untrained ``model``,
    so perplexity and KL are measured against the same model as textgym's (evaluating the saved
    directory by name would make it its own reference), evaluated in the precision the untrained
    model was (its texts are sampled in it)."""
    net = LMActorCritic(model, logits_width(model), precision=precision)
    net.lm.load_state_dict(load_model(str(model_dir)).state_dict())
    return net


def main() -> None:
    args = parse_args(Args, __doc__.splitlines()[0])
    if args.trl_precision not in TRL_PRECISIONS:
        raise SystemExit(f"--trl-precision must be one of {list(TRL_PRECISIONS)}, got {args.trl_precision!r}")
    trl_modules()  # a machine without TRL fails now, not after textgym's training
    console = Console(width=120)
    pairs = [*args.hyperparams, *(["policy_kwargs.lora=true"] if args.lora else [])]  # KEY=VALUE strings
    overrides = parse_overrides(args.algo, pairs)
    whole_model = parse_overrides(args.algo, args.hyperparams)
    lr = args.trl_lr or hyperparams(args.algo, args.env, overrides=whole_model)["learning_rate"]
    stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{STARTED_AT_COMMIT[:8]}"
    console.print(f"textgym {args.algo}, {args.minutes:g} minutes on {args.env} ...")
    config = TrainConfig(
        env=args.env, algo=args.algo, model=args.model, seed=args.seed, budget_minutes=args.minutes,
        eval_prompts=args.eval_prompts, eval_every_minutes=0, precision=args.precision,
        hyperparams=overrides,
    )  # fmt: skip
    ours = train(config, Path(args.out) / f"compare-trl-{args.algo}-{stamp}", console=console)
    before, after = ours["summary"]["before"], ours["summary"]["after"]
    console.print(f"TRL GRPOTrainer, learning rate {lr:g}, {args.minutes:g} minutes ...")
    with tempfile.TemporaryDirectory() as folder:
        same = ours["summary"]["precision"]  # textgym's, resolved
        trl = run_trl(args, lr, Path(folder), same if args.trl_precision == "same" else args.trl_precision)
        trl_after = evaluate(trained_net(args.model, trl["model_dir"], args.precision), args.env, "test",
                             args.eval_prompts, seeds=[args.seed]).metrics  # fmt: skip

    rates = {
        "textgym": ours["summary"]["train_tokens"] / (ours["summary"]["train_minutes"] * 60),
        "trl": trl["tokens"] / trl["seconds"],
    }
    gains = {"textgym": after["reward"] - before["reward"], "trl": trl_after["reward"] - before["reward"]}
    table = Table(title=f"textgym {args.algo} vs TRL GRPOTrainer: {args.env}, {args.minutes:g} min each")
    for column in ("", "completion tokens/s", "test reward after", "gain over untrained"):
        table.add_column(column, justify="left" if not column else "right")
    table.add_row("untrained", "", f"{before['reward']:+.3f} ± {before['reward_ci95']:.3f}", "")
    for name, metrics in (("textgym", after), ("trl", trl_after)):
        table.add_row(
            name, f"{rates[name]:.1f}", f"{metrics['reward']:+.3f} ± {metrics['reward_ci95']:.3f}",
            f"{gains[name]:+.3f}",
        )  # fmt: skip
    console.print(table)
    ratio = rates["textgym"] / rates["trl"]
    console.print(f"textgym / TRL tokens/s: {ratio:.2f}x (target >= 2x, with the larger gain)")
    record = {
        "lr_trl": lr, "tokens_per_s": rates, "ratio": ratio, "gain": gains, "before": before,
        "after": {"textgym": after, "trl": trl_after},
        "trl": {k: v for k, v in trl.items() if k != "model_dir"}, "textgym": ours["summary"],
    }  # fmt: skip
    console.print(f"wrote {write_record('compare-trl', args, record, args.out)}")


if __name__ == "__main__":
    main()
