"""One training run, as ``textgym train`` and the leaderboard do it: evaluate the untrained
model, train within a budget of tokens and wall time (checkpointing, evaluating periodically,
logging to TensorBoard), evaluate again, and leave everything in a run directory.

The budget stops training at whichever of ``budget_tokens`` (generated tokens, SB3 timesteps)
and ``budget_minutes`` (training time, evaluations excluded) comes first; a batch that would
end past the time budget is not started. A run resumes from its last checkpoint.

One process at a time trains a run directory (it holds ``train.lock``), and ``run.json``'s
status says how the last one ended: ``running`` (or, with the lock free, killed before it
ended), ``finished``, ``interrupted`` (Ctrl-C or SIGTERM) or ``failed`` (with the error; a full
disk is one message, and where ``run.json`` cannot be written, the lock file holds the status).

The algorithm's hyperparameters come from the registry (``agents/hyperparams/<algo>.yml``, see
:mod:`textgym.agents.runs.hyperparams`) with the run's overrides; ``run.json`` holds them resolved.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
from rich.console import Console
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from textgym.agents.common import distributed
from textgym.agents.common.buffers import EpisodeRolloutBuffer
from textgym.agents.common.policies import LMActorCriticPolicy
from textgym.agents.dqn.policy import LMQPolicy
from textgym.agents.runs.callbacks import Run, TrainingMonitor
from textgym.agents.runs.checkpoints import (
    LOCK,
    REPLAY,
    RUN_FILE,
    Checkpoint,
    CheckpointError,
    RunLock,
    is_run_dir,
    load_archive,
    read_checkpoint,
    read_json,
    read_run,
)
from textgym.agents.runs.config import DATA_PARALLEL, TrainConfig
from textgym.agents.runs.evaluation import evaluate
from textgym.agents.runs.failures import (
    DiskFullError,
    describe,
    disk_full,
    release,
    save_json,
    sigterm_interrupts,
)
from textgym.agents.runs.hyperparams import ALGOS, STOCK, constructor_kwargs
from textgym.agents.runs.report import report
from textgym.agents.runs.rundir import (
    checkpoint_tokens,
    interrupted,
    new_run_dir,
    prepare_out,
    start_over,
    stopped_early,
)
from textgym.envs.multiturn import MultiTurnEnv
from textgym.models.precision import describe_precision, resolve_device
from textgym.wrappers import VecKLRewardWrapper, VecPartnerBatcher


def build_agent(config: TrainConfig, tensorboard: Path | None, device: str) -> BaseAlgorithm:
    """The algorithm with the run's resolved hyperparameters (``config.resolved()``), on
    ``device`` (resolved: ``"cpu"``, ``"cuda"``, ``"cuda:1"``), logging to TensorBoard in
    ``tensorboard`` (None: not)."""
    kwargs = constructor_kwargs(config.algo, config.hyperparams)
    policy_kwargs = {"model": config.model, **config.hyperparams["policy_kwargs"]}
    policy_kwargs["precision"] = config.precision
    if config.algo not in STOCK:  # TextPPO, its named configurations and SoftQ
        policy = "LMPolicy"
    elif config.algo == "dqn":  # the LM as Q-network, SB3's replay buffer
        # A text that reaches max_new_tokens is finished (its reward is paid): not bootstrapped.
        policy, kwargs["replay_buffer_kwargs"] = LMQPolicy, {"handle_timeout_termination": False}
    else:  # stock PPO/A2C: minibatches of whole episodes, one forward pass per episode
        policy, kwargs["rollout_buffer_class"] = LMActorCriticPolicy, EpisodeRolloutBuffer
    env = training_env(config)
    return ALGOS[config.algo](
        policy,
        env,
        seed=config.seed,
        tensorboard_log=None if tensorboard is None else str(tensorboard),
        policy_kwargs=policy_kwargs,
        device=device,
        **kwargs,
    )


def training_env(config: TrainConfig) -> Any:
    """TextPPO's env, or for stock PPO/A2C ``n_envs`` envs (multi-turn ones with their partners'
    replies asked in one batch per step); unless the policy computes the KL
    itself (``policy_kwargs.kl_to_reference``), they pay the KL to a frozen copy of the initial
    model in their rewards, scored for all envs in one batched step."""
    if config.algo not in STOCK:
        return gym.make(config.env, model=config.model, **config.env_kwargs)
    # render_mode: the envs' own ("ansi"), not the "rgb_array" make_vec_env asks for by default
    env_kwargs = {**config.env_kwargs, "model": config.model, "render_mode": "ansi"}
    n_envs = config.hyperparams["n_envs"]
    venv = make_vec_env(config.env, n_envs=n_envs, seed=config.seed, env_kwargs=env_kwargs)
    if isinstance(venv.envs[0].unwrapped, MultiTurnEnv):  # the partners of all envs reply in one batch
        venv = VecPartnerBatcher(venv)
    if config.hyperparams["policy_kwargs"].get("kl_to_reference"):
        return venv
    return VecKLRewardWrapper(venv, coef=config.hyperparams["kl_coef"], model=config.model)


def train(
    config: TrainConfig,
    out: str | Path | None = None,
    *,
    resume: bool = False,
    console: Console | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    """Run (or resume) one training run in ``out`` (None: a new run directory, see
    :func:`new_run_dir`); returns its summary (also in ``run.json``). ``clock`` measures
    training time against ``budget_minutes`` (tests pass a fake one).

    Nothing is written when the config, ``out`` or the checkpoint is bad, or when another
    process trains ``out`` (:class:`RunBusyError`). Once ``run.json`` says "running", an error
    leaves it "failed", and Ctrl-C or SIGTERM (:class:`Terminated`) "interrupted", and the
    exception goes on; a full disk is one :class:`DiskFullError`. A run that stopped before its
    first checkpoint is started over by a run without ``resume`` (:func:`stopped_early`).

    Under ``torchrun`` (data-parallel, see :mod:`textgym.agents.common.distributed`) every rank calls
    this; rank 0 does all of the above, the other ranks train alongside it and write nothing."""
    console = console or Console()
    overridden = ", ".join(config.hyperparams) or "none"
    with sigterm_interrupts():  # SIGTERM stops a run as Ctrl-C does
        config = config.validate()  # resolved once, here, then passed down
        device = resolve_device(config.device)  # the one place a run resolves its device
        if out is None and (resume or distributed.launched()):
            raise ValueError("give the run directory (--out) to resume a run or to train it under torchrun")
        if distributed.launched():
            if config.algo not in DATA_PARALLEL:
                raise ValueError(
                    f"torchrun runs {list(DATA_PARALLEL)} on several ranks, not {config.algo!r}: "
                    "train it in one process"
                )
            device = distributed.setup(device)
            if not distributed.is_main():
                return train_alongside(config, Path(out), resume, device, clock)
        out = new_run_dir(config) if out is None else Path(out)
        if not is_run_dir(out):
            prepare_out(config, out, resume)  # a bad --out fails before the lock creates anything
        with RunLock(out) as lock:  # held until train() returns
            return train_holding(config, out, lock, resume, console, device, clock, overridden)


def train_holding(
    config: TrainConfig,
    out: Path,
    lock: RunLock,
    resume: bool,
    console: Console,
    device: str,
    clock: Callable[[], float],
    overridden: str,
) -> dict[str, Any]:
    """:func:`train`, once it holds the lock of ``out``."""
    status = None if resume else stopped_early(out)
    if status is not None:
        start_over(out, status, console)
    checkpoint = prepare_out(config, out, resume)  # checked again: no other process changes out now
    console.print(
        f"{config.algo} on {config.env}, hyperparameters from agents/hyperparams/{config.algo}.yml "
        f"({config.profile} profile; overridden: {overridden}):\n  "
        + ", ".join(f"{k}={v!r}" for k, v in config.hyperparams.items())
    )
    console.print(f"device {device}, precision {describe_precision(config.precision, device)}")
    run = Run(config, out, console)
    agent = None if checkpoint is None else resume_agent(run, checkpoint, device)  # before any write
    if is_run_dir(out) and read_run(out).get("status") == "running":
        how = f"it left in {out / LOCK}: {lock.left}" if lock.left else "killed or crashed"
        console.print(
            f"{out / RUN_FILE} says 'running' but no process holds {out / LOCK}: "
            f"the process that trained it stopped without finishing ({how})"
        )
    try:
        run.write_run("running")
        return run_training(run, agent, device, clock)
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM
        record(run, lock, "interrupted")
        console.print(interrupted(out, err), soft_wrap=True, markup=False, highlight=False)
        raise
    except Exception as err:
        full = disk_full(err)
        if full is None:
            record(run, lock, "failed", error=f"{type(err).__name__}: {err}")
            raise
        release(err)  # the files the failed write held open are closed, their space free again
        path = full.path if isinstance(full, DiskFullError) else Path(full.filename or out)
        needed = full.needed if isinstance(full, DiskFullError) else None
        tokens = checkpoint_tokens(out)
        then = "starts again" if tokens is None else f"continues from the checkpoint at {tokens} tokens"
        message = (
            f"{describe(path, needed)}; free some space: `textgym train ... --resume --out {out}` {then}"
        )
        record(run, lock, "failed", error=f"DiskFullError: {message}")
        raise DiskFullError(path, needed, message) from None


def record(run: Run, lock: RunLock, status: str, **extra: Any) -> None:
    """``status`` in ``run.json``, or where even that cannot be written (a full disk), in the
    lock file, where the next run finds it."""
    try:
        run.write_run(status, **extra)
    except OSError as err:
        release(err)
        why = f" ({RUN_FILE} could not be written: {err})"
        with contextlib.suppress(OSError):
            lock.note(f"{status}{why}" + (f": {extra['error']}" if "error" in extra else ""))


def train_alongside(
    config: TrainConfig, out: Path, resume: bool, device: str, clock: Callable[[], float]
) -> dict[str, Any]:
    """A rank other than 0 under torchrun: the same agent and budget decisions as rank 0, its
    own texts, and nothing written (rank 0 has checked ``out`` and holds its lock)."""
    run = Run(config, out, Console(quiet=True))
    checkpoint = read_checkpoint(out) if resume else None
    if checkpoint is None:
        agent = build_agent(config, None, device)
    else:
        agent = load_archive(
            checkpoint.archive, config.algo, config.precision, env=training_env(config), device=device
        )
        run.train_seconds = float(checkpoint.state["train_seconds"])
        agent.sampler.reseed(config.seed + agent.num_timesteps)  # not rank 0's saved state: new prompts
    remaining = config.budget_tokens - agent.num_timesteps
    if remaining > 0 and run.train_seconds < config.budget_minutes * 60:
        agent.learn(remaining, callback=TrainingMonitor(run, clock), reset_num_timesteps=checkpoint is None)
    return {"config": dataclasses.asdict(config), "rank": distributed.rank(), "tokens": agent.num_timesteps}


def resume_agent(run: Run, checkpoint: Checkpoint, device: str) -> BaseAlgorithm:
    """The agent of ``checkpoint`` on ``device``, with the run's state restored from it."""
    config, state = run.config, checkpoint.state
    try:
        run.console.print(
            f"resuming from {checkpoint.archive}: {state['tokens']} tokens, "
            f"{state['train_seconds'] / 60:.1f} min"
        )
        agent = load_archive(
            checkpoint.archive,
            config.algo,
            env=training_env(config),
            device=device,
            precision=config.precision,  # this run's, not the checkpoint's
            tensorboard_log=str(run.out / "tb"),
        )
        replay = checkpoint.archive.parent / REPLAY
        if isinstance(agent, OffPolicyAlgorithm) and replay.is_file():
            agent.load_replay_buffer(replay)
        run.restore(agent, state)
    except Exception as err:  # SB3 raises many kinds for a damaged archive
        raise CheckpointError(
            f"checkpoint {checkpoint.archive} could not be resumed ({type(err).__name__}: {err})"
        ) from err
    if agent.num_timesteps != state["tokens"]:  # only the old two-file layout can tear
        raise CheckpointError(
            f"checkpoint {checkpoint.archive} holds an agent at {agent.num_timesteps} tokens but its state "
            f"{checkpoint.state_file} says {state['tokens']}: they come from two checkpoints (a kill "
            "interrupted the write), so the run cannot resume; start a new one"
        )
    return agent


def run_training(
    run: Run, agent: BaseAlgorithm | None, device: str, clock: Callable[[], float]
) -> dict[str, Any]:
    """Evaluate before (once), train ``agent`` (a new one if None) to the budget, checkpoint,
    evaluate after, and report."""
    config, out, console = run.config, run.out, run.console
    before_path = out / "eval-before.json"
    if before_path.is_file():
        before = read_json(before_path, "evaluation")
    else:
        console.print(f"evaluating the untrained model on {config.eval_prompts} test prompts ...")
        before = evaluate(
            config.model,
            config.env,
            "test",
            config.eval_prompts,
            seeds=[config.seed],
            device=device,
            precision=config.precision,
            env_kwargs=config.env_kwargs,
        ).to_dict()
        save_json(before_path, before)
    resumed = agent is not None
    if agent is None:
        agent = build_agent(config, out / "tb", device)
    remaining = config.budget_tokens - agent.num_timesteps
    if remaining > 0 and run.train_seconds < config.budget_minutes * 60:
        monitor = TrainingMonitor(run, clock)
        with run.bar():
            agent.learn(remaining, callback=monitor, reset_num_timesteps=not resumed, tb_log_name=config.algo)
        run.checkpoint(agent)

    console.print(f"evaluating the trained agent on {config.eval_prompts} test prompts ...")
    after = evaluate(
        agent, config.env, "test", config.eval_prompts, seeds=[config.seed], env_kwargs=config.env_kwargs
    )
    save_json(out / "eval-after.json", after.to_dict())
    summary = {
        "train_tokens": agent.num_timesteps,
        "train_minutes": run.train_seconds / 60,
        "tokens_per_s": agent.num_timesteps / max(run.train_seconds, 1e-9),
        "batches": len(run.curve),
        "device": str(agent.device),
        "precision": agent.policy.net.precision,
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
