"""One training run, as ``textgym train`` and the leaderboard do it: evaluate the untrained
model, train within a budget of tokens and wall time (checkpointing, evaluating periodically,
logging to TensorBoard), evaluate again, and leave everything in a run directory.

The budget stops training at whichever of ``budget_tokens`` (generated tokens, SB3 timesteps)
and ``budget_minutes`` (training time, evaluations excluded) comes first; a batch that would
end past the time budget is not started. A run resumes from its last checkpoint.

The algorithm's hyperparameters come from the registry (``agents/hyperparams/<algo>.yml``, see
:mod:`textgym.agents.hyperparams`) with the run's overrides; ``run.json`` holds them resolved.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

import textgym
from textgym.models import DEFAULT_MODEL, load_tokenizer
from textgym.wrappers import VecKLRewardWrapper

from .checkpoints import (
    ALGOS,
    CHECKPOINT,
    RUN_FILE,
    STATE,
    CheckpointError,
    read_json,
    read_run,
    save_agent,
    write_json,
)
from .evaluation import Evaluation, evaluate
from .hyperparams import PROFILES, constructor_kwargs, hyperparams, params
from .policies import LMActorCriticPolicy
from .ppo import TextPPO


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved in ``run.json``): the run's settings, and
    ``hyperparams``, the algorithm's hyperparameters over the registry's values for the env and
    ``profile`` (``agents/hyperparams/<algo>.yml``); :meth:`resolved` fills in every one."""

    env: str = field(default="TextGen-Sentiment-v0", metadata={"help": "env id"})
    algo: str = field(default="textppo", metadata={"help": "textppo | ppo | a2c"})
    model: str = field(default=DEFAULT_MODEL, metadata={"help": "model name or path"})
    seed: int = field(default=0, metadata={"help": "seeds the env, the sampling and the evaluations"})
    budget_tokens: int = field(default=1_000_000, metadata={"help": "generated tokens (SB3 timesteps)"})
    budget_minutes: float = field(default=10.0, metadata={"help": "training wall time, evaluations excluded"})
    eval_prompts: int = field(
        default=64, metadata={"help": "test prompts evaluated before and after training"}
    )
    eval_every_minutes: float = field(
        default=5.0, metadata={"help": "training minutes between evaluations on validation prompts (0: off)"}
    )
    eval_every_prompts: int = field(
        default=16, metadata={"help": "validation prompts per periodic evaluation"}
    )
    checkpoint_minutes: float = field(default=2.0, metadata={"help": "training minutes between checkpoints"})
    profile: str = field(
        default="default", metadata={"help": "the registry's profile: default, or quick (small batches)"}
    )
    hyperparams: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "hyperparameters over the registry's (listed below)"}
    )

    def resolved(self) -> TrainConfig:
        """This run with every hyperparameter filled in; ValueError names a bad key or value."""
        return dataclasses.replace(
            self, hyperparams=hyperparams(self.algo, self.env, self.profile, self.hyperparams)
        )

    def validate(self) -> None:
        """Raise ValueError naming the first bad field (before anything is written)."""
        if self.env not in gym.registry:
            raise ValueError(f"unknown env {self.env!r}: expected one of {list(textgym.ENVS)}")
        if self.algo not in ALGOS:
            raise ValueError(f"unknown algo {self.algo!r}: expected one of {list(ALGOS)}")
        for name in ("seed", "budget_tokens", "eval_prompts", "eval_every_prompts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "seed" else 1):
                raise ValueError(
                    f"{name} must be a {'non-negative' if name == 'seed' else 'positive'} int, got {value!r}"
                )
        for name in ("budget_minutes", "eval_every_minutes", "checkpoint_minutes"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value < 0
            ):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.budget_minutes <= 0:
            raise ValueError(f"budget_minutes must be > 0, got {self.budget_minutes!r}")
        if self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}: expected one of {list(PROFILES)}")
        self.resolved()  # an unknown hyperparameter or a badly typed value fails here
        load_tokenizer(self.model)  # an unknown model fails here, before any file is written


def parse_budget(text: str) -> tuple[int | None, float | None]:
    """``"10m"``, ``"90s"``, ``"1.5h"``, ``"20000"``/``"20k"`` tokens, or both joined by a comma:
    (tokens or None, minutes or None)."""
    tokens, minutes = None, None
    for part in (p.strip().lower() for p in str(text).split(",")):
        try:
            if part.endswith(("h", "m", "s")) and part[:-1]:
                scale = {"h": 60.0, "m": 1.0, "s": 1 / 60}[part[-1]]
                minutes = float(part[:-1]) * scale
            elif part.endswith("k"):
                tokens = int(float(part[:-1]) * 1000)
            else:
                tokens = int(part)
        except ValueError:
            raise ValueError(
                f"bad budget {text!r}: use minutes (10m, 90s, 1h), tokens (20000, 20k) or both (10m,20k)"
            ) from None
    if (tokens is not None and tokens < 1) or (minutes is not None and not minutes > 0):
        raise ValueError(f"bad budget {text!r}: it must be positive")
    return tokens, minutes


class TrainingMonitor(BaseCallback):
    """Enforces the budget, draws the progress bar, records the reward curve, evaluates on
    validation prompts and checkpoints, all at batch boundaries (after each update).

    ``clock`` gives seconds (``time.perf_counter``); tests pass a fake one to check the budget.
    """

    def __init__(self, run: Run, clock: Callable[[], float] = time.perf_counter):
        super().__init__()
        self.run = run
        self.clock = clock
        self.finished_rewards: list[float] = []  # stock path: task rewards of episodes that ended
        self._since_checkpoint = 0.0
        self._since_eval = 0.0
        self._pending = False  # a batch was collected and its update not yet recorded

    # Training time excludes evaluations and checkpoints: the clock runs only inside learn().
    def _on_training_start(self) -> None:
        self._mark = self.clock()
        self._iteration_s = 0.0
        self._budget_s = self.run.config.budget_minutes * 60
        self._last_batch = False

    def _tick(self) -> float:
        now = self.clock()
        elapsed, self._mark = now - self._mark, now
        self.run.train_seconds += elapsed
        return elapsed

    def _on_rollout_end(self) -> None:
        self._pending = True  # a full batch was collected: an update follows

    def _on_rollout_start(self) -> None:
        self._batch_done()
        # Start a batch only if it should end within the budget (by a running average of batches).
        self._last_batch = self._spent() + self._iteration_s > self._budget_s

    def _spent(self) -> float:
        return self.run.train_seconds + self.clock() - self._mark

    def _batch_done(self) -> None:
        """After an update: record the batch, then evaluate and checkpoint when due."""
        if not self._pending:
            return
        self._pending = False
        elapsed = self._tick()
        self._iteration_s = elapsed if not self._iteration_s else 0.5 * (self._iteration_s + elapsed)
        self.run.record_batch(self.model, self.finished_rewards)
        self.finished_rewards = []
        self._since_checkpoint += elapsed
        self._since_eval += elapsed
        config = self.run.config
        if config.eval_every_minutes and self._since_eval >= config.eval_every_minutes * 60:
            self.run.periodic_eval(self.model)
            self._since_eval = 0.0
        if self._since_checkpoint >= config.checkpoint_minutes * 60:
            self.run.checkpoint(self.model)
            self._since_checkpoint = 0.0
        self._mark = self.clock()

    def _on_step(self) -> bool:
        for info, done in zip(self.locals.get("infos", ()), self.locals.get("dones", ())):
            if done and "task_reward" in info:
                self.finished_rewards.append(float(info["task_reward"]))
        spent = self._spent()
        self.run.progress(self.num_timesteps, spent)
        # A started batch runs to its end unless it was not to be started or the budget is spent.
        return not self._last_batch and spent <= self._budget_s

    def _on_training_end(self) -> None:
        self._batch_done()  # the last batch, when the token budget ended the loop
        self._tick()


class Run:
    """A run directory and the state of its training."""

    def __init__(self, config: TrainConfig, out: Path, console: Console):
        self.config, self.out, self.console = config, out, console
        self.curve: list[dict[str, float]] = []
        self.evals: list[dict[str, float]] = []
        self.train_seconds = 0.0
        self._bar: Progress | None = None

    def progress(self, tokens: int, seconds: float) -> None:
        if self._bar is not None:
            used = max(tokens / self.config.budget_tokens, seconds / (self.config.budget_minutes * 60))
            self._bar.update(self._task, completed=min(used, 1.0) * 1000, tokens=tokens, minutes=seconds / 60)

    def record_batch(self, agent: BaseAlgorithm, finished_rewards: list[float]) -> None:
        if isinstance(agent, TextPPO):
            reward, extra = agent.last_rollout["reward"], {"kl": agent.last_update["kl"]}
        else:
            reward, extra = float(np.mean(finished_rewards)) if finished_rewards else float("nan"), {}
        point = {"tokens": agent.num_timesteps, "minutes": self.train_seconds / 60, "reward": reward, **extra}
        self.curve.append(point)
        kl = f"  KL {point['kl']:5.2f}" if "kl" in point else ""
        self.console.print(
            f"batch {len(self.curve):3d}  {point['minutes']:5.1f} min  {point['tokens']:8d} tokens  "
            f"training reward {reward:+.3f}{kl}"
        )

    def periodic_eval(self, agent: BaseAlgorithm) -> None:
        config = self.config
        result = evaluate(agent, config.env, "validation", config.eval_every_prompts, seeds=[config.seed])
        point = {
            "tokens": agent.num_timesteps,
            "minutes": self.train_seconds / 60,
            "reward": result.metrics["reward"],
        }
        self.evals.append(point)
        agent.logger.record("eval/reward", point["reward"])
        self.console.print(
            f"  validation reward {point['reward']:+.3f} ({config.eval_every_prompts} prompts)"
        )

    def state(self, agent: BaseAlgorithm) -> dict[str, Any]:
        state = {
            "tokens": agent.num_timesteps,
            "train_seconds": self.train_seconds,
            "curve": self.curve,
            "evals": self.evals,
        }
        if isinstance(agent, TextPPO):  # SB3 does not save it; resuming must not replay prompts
            state.update(agent.get_sampler_state())  # keys "generator" and "episode_rng"
        return state

    def restore(self, agent: BaseAlgorithm, state: dict[str, Any]) -> None:
        self.curve, self.evals = state["curve"], state["evals"]
        self.train_seconds = float(state["train_seconds"])
        if isinstance(agent, TextPPO) and "generator" in state:
            agent.set_sampler_state({key: state[key] for key in ("generator", "episode_rng")})

    def checkpoint(self, agent: BaseAlgorithm) -> None:
        save_agent(agent, self.out, self.state(agent))

    def write_run(self, status: str, **extra: Any) -> None:
        write_json(
            self.out / RUN_FILE, {"config": dataclasses.asdict(self.config), "status": status, **extra}
        )

    def bar(self) -> Progress:
        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}% of budget"),
            TextColumn("{task.fields[tokens]} tokens, {task.fields[minutes]:.1f} min"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self._task = self._bar.add_task(
            f"{self.config.algo} on {self.config.env}", total=1000, tokens=0, minutes=0.0
        )
        return self._bar


def prepare_out(config: TrainConfig, out: Path, resume: bool) -> dict[str, Any] | None:
    """Check ``out`` before anything is written; the saved state when resuming."""
    if not out.exists():
        if resume:
            raise CheckpointError(f"nothing to resume: {out} does not exist")
        return None
    if not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a directory")
    if not (out / RUN_FILE).exists():
        if any(out.iterdir()):
            raise ValueError(f"--out {out} is not empty and holds no textgym run: choose another directory")
        if resume:
            raise CheckpointError(f"nothing to resume: {out} is empty")
        return None
    saved = saved_config(read_run(out)["config"])
    mine = json.loads(json.dumps(dataclasses.asdict(config)))  # as it reads back from run.json
    differ = [f"{k}={saved.get(k)!r} (asked {mine[k]!r})" for k in IDENTITY if saved.get(k) != mine[k]]
    if not differ:  # the same env and algo: name the hyperparameters that differ
        old, new = saved["hyperparams"], mine["hyperparams"]
        differ = [
            f"{k}={old.get(k)!r} (asked {new.get(k)!r})" for k in {**old, **new} if old.get(k) != new.get(k)
        ]
    if differ:
        raise ValueError(f"--out {out} holds another run ({', '.join(differ)}): choose another directory")
    if not resume:
        raise ValueError(
            f"--out {out} already holds this run: pass --resume to continue it, or choose another --out"
        )
    if not (out / CHECKPOINT).is_file():
        return {}  # stopped before its first checkpoint: start training again, keep the first evaluation
    return read_json(out / STATE, "checkpoint state")


IDENTITY = ("env", "algo", "model", "seed")  # with the resolved hyperparameters: what a run is
# What run.json held before the hyperparameter registry, besides the run's settings.
FLAT_HYPERPARAMS = ("learning_rate", "kl_coef", "batch_episodes", "minibatch_episodes", "n_envs", "n_steps",
                    "batch_size")  # fmt: skip


def saved_config(saved: dict[str, Any]) -> dict[str, Any]:
    """A ``run.json`` config; one written before the registry (flat ``learning_rate``,
    ``kl_coef``, ``lora``, ...) reads as the registry's default values with the ones it saved,
    which is what those runs used."""
    if "hyperparams" in saved:
        return saved
    try:
        known = params(saved["algo"])
        flat = {k: v for k, v in saved.items() if k in FLAT_HYPERPARAMS and k in known}
        flat["policy_kwargs"] = {"lora": True} if saved.get("lora") else {}
        resolved = hyperparams(saved["algo"], saved["env"], "default", flat)
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"run.json holds a config this version cannot read ({err})") from None
    return {**saved, "hyperparams": resolved}


def build_agent(config: TrainConfig, tensorboard: Path) -> BaseAlgorithm:
    """The algorithm with the run's resolved hyperparameters (``config.resolved()``)."""
    kwargs = constructor_kwargs(config.algo, config.hyperparams)
    policy_kwargs = {"model": config.model, **config.hyperparams["policy_kwargs"]}
    policy = "LMPolicy" if config.algo == "textppo" else LMActorCriticPolicy
    env = training_env(config)
    return ALGOS[config.algo](
        policy, env, seed=config.seed, tensorboard_log=str(tensorboard), policy_kwargs=policy_kwargs, **kwargs
    )


def training_env(config: TrainConfig) -> Any:
    """TextPPO's env, or for stock PPO/A2C ``n_envs`` envs that pay the KL to a frozen copy of
    the initial model, scored for all envs in one batched step."""
    if config.algo == "textppo":
        return gym.make(config.env, model=config.model)
    venv = make_vec_env(
        config.env, n_envs=config.hyperparams["n_envs"], seed=config.seed, env_kwargs={"model": config.model}
    )
    return VecKLRewardWrapper(venv, coef=config.hyperparams["kl_coef"], model=config.model)


def train(
    config: TrainConfig,
    out: str | Path,
    *,
    resume: bool = False,
    console: Console | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    """Run (or resume) one training run in ``out``; returns its summary (also in ``run.json``).
    ``clock`` measures training time against ``budget_minutes`` (tests pass a fake one)."""
    console = console or Console()
    config.validate()
    overridden = ", ".join(config.hyperparams) or "none"
    config = config.resolved()
    out = Path(out)
    state = prepare_out(config, out, resume)
    console.print(
        f"{config.algo} on {config.env}, hyperparameters from agents/hyperparams/{config.algo}.yml "
        f"({config.profile} profile; overridden: {overridden}):\n  "
        + ", ".join(f"{k}={v!r}" for k, v in config.hyperparams.items())
    )
    run = Run(config, out, console)
    tensorboard = out / "tb"
    agent = None
    if state:  # load before writing anything: a corrupt checkpoint must leave the run as it was
        console.print(
            f"resuming from {out / CHECKPOINT}: "
            f"{state['tokens']} tokens, {state['train_seconds'] / 60:.1f} min"
        )
        try:
            agent = ALGOS[config.algo].load(
                out / CHECKPOINT, env=training_env(config), device="cpu", tensorboard_log=str(tensorboard)
            )
            run.restore(agent, state)
        except Exception as err:  # SB3 raises many kinds for a damaged archive
            raise CheckpointError(
                f"checkpoint {out / CHECKPOINT} could not be resumed ({type(err).__name__}: {err})"
            ) from err
    run.write_run("running")
    before_path = out / "eval-before.json"
    if before_path.is_file():
        before = read_json(before_path, "evaluation")
    else:
        console.print(f"evaluating the untrained model on {config.eval_prompts} test prompts ...")
        before = evaluate(
            config.model, config.env, "test", config.eval_prompts, seeds=[config.seed]
        ).to_dict()
        write_json(before_path, before)
    if agent is None:
        agent = build_agent(config, tensorboard)
    remaining = config.budget_tokens - agent.num_timesteps
    if remaining > 0 and run.train_seconds < config.budget_minutes * 60:
        monitor = TrainingMonitor(run, clock)
        try:
            with run.bar():
                agent.learn(
                    remaining, callback=monitor, reset_num_timesteps=not state, tb_log_name=config.algo
                )
        except KeyboardInterrupt:
            run.write_run("interrupted")
            console.print(f"interrupted: the last checkpoint in {out} is intact; --resume continues from it")
            raise
        run.checkpoint(agent)

    console.print(f"evaluating the trained agent on {config.eval_prompts} test prompts ...")
    after = evaluate(agent, config.env, "test", config.eval_prompts, seeds=[config.seed])
    write_json(out / "eval-after.json", after.to_dict())
    summary = {
        "train_tokens": agent.num_timesteps,
        "train_minutes": run.train_seconds / 60,
        "tokens_per_s": agent.num_timesteps / max(run.train_seconds, 1e-9),
        "batches": len(run.curve),
        "before": before["metrics"],
        "after": after.metrics,
    }
    run.write_run("finished", summary=summary)
    report(config, before, after, run, console)
    return {
        "config": dataclasses.asdict(config),
        "summary": summary,
        "curve": run.curve,
        "evals": run.evals,
        "after": after,
    }


def report(
    config: TrainConfig, before: dict[str, Any], after: Evaluation, run: Run, console: Console
) -> None:
    """Before/after table, sample texts (also in ``samples.md``) and the reward-curve PNG."""
    table = Table(title=f"{config.env}: {config.algo}, {run.train_seconds / 60:.1f} min of training")
    table.add_column("metric")
    table.add_column("untrained", justify="right")
    table.add_column("trained", justify="right")
    untrained = Evaluation(
        **{k: v for k, v in before.items() if k != "examples"}, examples=before["examples"]
    )
    for (name, old), (_, new) in zip(untrained.rows(), after.rows()):
        table.add_row(name, old, new)
    console.print(table)
    lines = [f"# {config.env}: {config.algo} on {config.model}, seed {config.seed}", ""]
    for old, new in list(zip(before["examples"], after.examples))[:5]:
        console.print(f"[bold]prompt[/] {old['prompt'][-300:]!r}")
        console.print(f"  untrained ({old['reward']:+.2f}) {old['text']!r}")
        console.print(f"  trained   ({new['reward']:+.2f}) {new['text']!r}")
        lines += [
            f"**prompt** {old['prompt']!r}",
            "",
            f"- untrained ({old['reward']:+.3f}): {old['text']!r}",
            f"- trained ({new['reward']:+.3f}): {new['text']!r}",
            "",
        ]
    (run.out / "samples.md").write_text("\n".join(lines))
    plot_curve(run, before["metrics"]["reward"], after.metrics["reward"], run.out / "curve.png")
    console.print(f"run directory: {run.out} (TensorBoard: tensorboard --logdir {run.out / 'tb'})")


def plot_curve(run: Run, before: float, after: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(
        [p["tokens"] for p in run.curve],
        [p["reward"] for p in run.curve],
        marker=".",
        label="training batches",
    )
    if run.evals:
        ax.plot(
            [p["tokens"] for p in run.evals], [p["reward"] for p in run.evals], marker="o", label="validation"
        )
    ax.axhline(before, color="gray", linestyle="--", label=f"untrained, test ({before:+.3f})")
    ax.axhline(after, color="green", linestyle="--", label=f"trained, test ({after:+.3f})")
    ax.set_xlabel("generated tokens")
    ax.set_ylabel("task reward")
    ax.set_title(f"{run.config.env}: {run.config.algo} ({run.config.model})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
