"""A run while it trains: :class:`Run` (its directory, curve, evaluations and checkpoints) and
:class:`TrainingMonitor`, the SB3 callback that enforces the budget and records each batch."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

from textgym.agents.common import distributed
from textgym.agents.common.sampler import sampler_of
from textgym.agents.runs.checkpoints import RUN_FILE, save_agent
from textgym.agents.runs.evaluation import evaluate
from textgym.agents.runs.failures import save_json

if TYPE_CHECKING:
    from textgym.agents.runs.config import TrainConfig


class TrainingMonitor(BaseCallback):
    """Enforces the budget, draws the progress bar, records the reward curve, evaluates on
    validation prompts and checkpoints, all at batch boundaries (after each update).

    ``clock`` gives seconds (``time.perf_counter``); tests pass a fake one to check the budget.
    Under torchrun, rank 0's clock decides for every rank when the budget ends the run (at a
    batch boundary: a batch is never abandoned by one rank alone), and only rank 0 records,
    evaluates and checkpoints.
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
        self._last_batch = distributed.broadcast(self._spent() + self._iteration_s > self._budget_s)

    def _spent(self) -> float:
        return self.run.train_seconds + self.clock() - self._mark

    def _batch_done(self) -> None:
        """After an update: record the batch, then evaluate and checkpoint when due."""
        if not self._pending:
            return
        self._pending = False
        elapsed = self._tick()
        if not distributed.is_main():  # rank 0 records, evaluates and checkpoints
            return
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
            # The task reward of a finished text: the KL reward wrappers' unshaped reward, else
            # SB3's Monitor's episode return (the env's reward comes at the end of the text).
            if done and ("task_reward" in info or "episode" in info):
                self.finished_rewards.append(float(info.get("task_reward", info.get("episode", {}).get("r"))))
        spent = self._spent()
        self.run.progress(self.num_timesteps, spent)
        # A started batch runs to its end unless it was not to be started or the budget is spent
        # (with several ranks, only the former: they decide together, between batches).
        return not self._last_batch and (spent <= self._budget_s or distributed.active())

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
        if sampler_of(agent) is not None:  # a sequence-level agent: its batch's texts
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
        result = evaluate(
            agent, config.env, "validation", config.eval_every_prompts, seeds=[config.seed],
            env_kwargs=config.env_kwargs,
        )  # fmt: skip
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
        sampler = sampler_of(agent)
        if sampler is not None:  # SB3 does not save it; resuming must not replay prompts
            state.update(sampler.state())  # keys "generator" and "episode_rng"
        return state

    def restore(self, agent: BaseAlgorithm, state: dict[str, Any]) -> None:
        self.curve, self.evals = state["curve"], state["evals"]
        self.train_seconds = float(state["train_seconds"])
        sampler = sampler_of(agent)
        if sampler is not None and "generator" in state:
            sampler.load_state({key: state[key] for key in ("generator", "episode_rng")})

    def checkpoint(self, agent: BaseAlgorithm) -> None:
        save_agent(agent, self.out, self.state(agent))

    def write_run(self, status: str, **extra: Any) -> None:
        """Rewrite ``run.json`` with the config, ``status`` and ``extra`` (atomically)."""
        save_json(self.out / RUN_FILE, {"config": dataclasses.asdict(self.config), "status": status, **extra})

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
