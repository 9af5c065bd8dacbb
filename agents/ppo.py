"""TextPPO: sequence-level PPO for textgym envs, as a Stable-Baselines3 on-policy algorithm.

Each iteration samples ``batch_episodes`` episodes together with the KV cache kept across
steps, scores the finished texts with one batched reward call (the env's ``score_episodes``),
then computes, for every token of a sequence in one forward pass, the log-probs and values of
the policy and the log-probs of the frozen reference. Rewards per token are the KL penalty
``-kl_coef * KL_t`` plus the task reward on the last token; advantages are GAE per token.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.type_aliases import GymEnv, Schedule
from stable_baselines3.common.utils import FloatSchedule, explained_variance
from stable_baselines3.common.vec_env import VecEnv

from agents.policies import LMActorCriticPolicy
from agents.rollout import (
    KL_ESTIMATORS,
    TokenBatch,
    gae,
    kl_penalty,
    play,
    token_log_probs,
    whiten,
)
from textgym.envs.base import TextGenEnv

REWARD_NORMALIZATIONS = ("none", "running", "batch")


def text_env(env: VecEnv) -> TextGenEnv:
    """The textgym env behind an SB3 VecEnv (the first one: TextPPO draws all its episodes from it)."""
    inner = env.get_attr("unwrapped", indices=[0])[0]
    if not isinstance(inner, TextGenEnv):
        raise TypeError(f"TextPPO needs a textgym env (a TextGenEnv), got {type(inner).__name__}")
    return inner


def _check(name: str, value: Any, low: float, high: float, *, open_low: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and (low < value if open_low else low <= value) and value <= high
    if not ok:
        bound = "(" if open_low else "["
        raise ValueError(f"{name} must be a number in {bound}{low}, {high}], got {value!r}")
    return float(value)


class TextPPO(OnPolicyAlgorithm):
    """PPO on whole generated texts, with a KL penalty to the initial model.

    :param policy: ``"LMPolicy"`` or :class:`agents.LMActorCriticPolicy` (a subclass).
    :param env: a textgym env (id string, env or VecEnv); its model is the policy's unless
        ``policy_kwargs["model"]`` says otherwise.
    :param batch_episodes: episodes sampled together per iteration (B).
    :param minibatch_episodes: episodes per gradient step.
    :param n_epochs: passes over each batch.
    :param gamma, gae_lambda: per-token GAE (gamma=1: the text's reward is not discounted).
    :param clip_range, clip_range_vf: PPO clipping of the ratio and (None: off) of the value.
    :param kl_coef: initial coefficient of the per-token KL penalty (0: no reference model).
    :param kl_target: with a target (nats per episode), the coefficient adapts to reach it
        (Ziegler et al. 2019), over ``kl_horizon`` episodes; None keeps it fixed.
    :param kl_estimator: ``"k1"`` (log p - log q) or ``"k3"`` ((q/p - 1) - log(q/p)).
    :param reward_normalization: ``"none"``, ``"running"`` (divide task rewards by their
        running std) or ``"batch"`` (standardise them within each batch).
    :param normalize_advantage: whiten advantages over each batch's tokens.
    """

    policy_aliases: ClassVar[dict[str, type]] = {"LMPolicy": LMActorCriticPolicy}

    def __init__(
        self,
        policy: str | type[LMActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 1e-5,
        batch_episodes: int = 64,
        minibatch_episodes: int = 8,
        n_epochs: int = 1,
        gamma: float = 1.0,
        gae_lambda: float = 0.95,
        clip_range: float | Schedule = 0.2,
        clip_range_vf: float | None = 0.2,
        ent_coef: float = 0.0,
        vf_coef: float = 0.1,
        max_grad_norm: float = 1.0,
        kl_coef: float = 0.05,
        kl_target: float | None = None,
        kl_horizon: int = 10_000,
        kl_estimator: str = "k1",
        reward_normalization: str = "none",
        normalize_advantage: bool = True,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: torch.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        for name, value in (("batch_episodes", batch_episodes), ("minibatch_episodes", minibatch_episodes),
                            ("n_epochs", n_epochs), ("kl_horizon", kl_horizon)):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if minibatch_episodes > batch_episodes:
            raise ValueError(
                f"minibatch_episodes ({minibatch_episodes}) exceeds batch_episodes ({batch_episodes})"
            )
        if kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"kl_estimator must be one of {KL_ESTIMATORS}, got {kl_estimator!r}")
        if reward_normalization not in REWARD_NORMALIZATIONS:
            raise ValueError(
                f"reward_normalization must be one of {REWARD_NORMALIZATIONS}, got {reward_normalization!r}"
            )
        _check("kl_coef", kl_coef, 0, 1e3)
        _check("gamma", gamma, 0, 1)
        _check("gae_lambda", gae_lambda, 0, 1)
        if kl_target is not None:
            _check("kl_target", kl_target, 0, 1e6, open_low=True)
        if clip_range_vf is not None:
            _check("clip_range_vf", clip_range_vf, 0, 1e6, open_low=True)
        if policy_kwargs is not None and not isinstance(policy_kwargs, dict):
            raise TypeError(f"policy_kwargs must be a dict, got {type(policy_kwargs).__name__}")
        self.batch_episodes = batch_episodes
        self.minibatch_episodes = minibatch_episodes
        self.n_epochs = n_epochs
        self.clip_range = clip_range
        self.clip_range_vf = clip_range_vf
        self.kl_coef = float(kl_coef)
        self.kl_target = kl_target
        self.kl_horizon = kl_horizon
        self.kl_estimator = kl_estimator
        self.reward_normalization = reward_normalization
        self.normalize_advantage = normalize_advantage
        self._rollout: TokenBatch | None = None
        super().__init__(
            policy, env, learning_rate=learning_rate, n_steps=1, gamma=gamma, gae_lambda=gae_lambda,
            ent_coef=ent_coef, vf_coef=vf_coef, max_grad_norm=max_grad_norm, use_sde=False,
            sde_sample_freq=-1, stats_window_size=stats_window_size, tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs, verbose=verbose, seed=seed, device=device,
            _init_setup_model=False, supported_action_spaces=(spaces.Discrete,),
        )  # fmt: skip
        if not issubclass(self.policy_class, LMActorCriticPolicy):
            raise TypeError(f"TextPPO needs an LMActorCriticPolicy, got {self.policy_class.__name__}")
        if self.env is not None and "model" not in self.policy_kwargs:
            # Saved with the agent, so that load() rebuilds the same model without the env.
            self.policy_kwargs["model"] = text_env(self.env).model_name
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        self.policy = self.policy_class(
            self.observation_space, self.action_space, self.lr_schedule, **self.policy_kwargs
        ).to(self.device)
        self.rollout_buffer = None  # TextPPO keeps its batch as a TokenBatch
        self.clip_range = FloatSchedule(self.clip_range)
        self.reward_stats = RunningMeanStd(shape=())
        self._generator = torch.Generator(device=self.device).manual_seed(
            0 if self.seed is None else self.seed
        )
        self._episode_rng = np.random.default_rng(self.seed)

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_rollout", "_scores", "_generator", "_episode_rng"]

    def set_random_seed(self, seed: int | None = None) -> None:
        super().set_random_seed(seed)
        if seed is not None and hasattr(self, "_generator"):
            self._generator.manual_seed(seed)
            self._episode_rng = np.random.default_rng(seed)

    # -- rollouts -------------------------------------------------------------------------------

    def collect_rollouts(
        self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer | None, n_rollout_steps: int
    ) -> bool:
        """Generate ``batch_episodes`` texts together and score them in one reward call."""
        task = text_env(env)
        self.policy.set_training_mode(False)
        callback.on_rollout_start()
        indices = self._episode_rng.integers(len(task.examples), size=self.batch_episodes)
        examples = [task.examples[i] for i in indices]

        def on_step(n_active: int) -> bool:
            for _ in range(n_active):  # one env step per token, as SB3 counts
                self.num_timesteps += 1
                callback.update_locals(locals())
                if not callback.on_step():
                    return False
            return True

        started = time.perf_counter()
        played = play(self.policy.net, task, examples, self._generator, on_step)
        if played is None:
            return False
        batch, rewards, infos = played
        elapsed = time.perf_counter() - started
        self._rollout = batch
        self._scores = torch.as_tensor(rewards, device=self.device)
        lengths = batch.lengths.tolist()
        now = (time.time_ns() - self.start_time) / 1e9
        self.ep_info_buffer.extend({"r": float(r), "l": int(n), "t": now} for r, n in zip(rewards, lengths))
        components = {
            name: float(np.mean([info["reward_components"].get(name, 0.0) for info in infos]))
            for name in infos[0]["reward_components"]
        }
        # What the last batch did, for callbacks and scripts (the logger clears on each dump).
        self.last_rollout = {
            "reward": float(rewards.mean()),
            "components": components,
            "tokens_per_s": sum(lengths) / elapsed,
            "seconds": elapsed,
            "indices": [int(i) for i in indices],
            "prompts": [example.prompt for example in examples],
            "texts": [info["text"] for info in infos],
            "rewards": rewards.tolist(),
            "lengths": lengths,
        }
        self.logger.record("rollout/reward", self.last_rollout["reward"])
        for name, value in components.items():
            self.logger.record(f"rollout/reward_{name}", value)
        self.logger.record("rollout/tokens_per_s", self.last_rollout["tokens_per_s"])
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    # -- update ---------------------------------------------------------------------------------

    def _minibatches(self, size: int, shuffle: bool):
        order = torch.randperm(self.batch_episodes, generator=self._generator) if shuffle else None
        for first in range(0, self.batch_episodes, size):
            index = torch.arange(first, min(first + size, self.batch_episodes))
            yield order[index] if shuffle else index

    @torch.no_grad()
    def _advantages(self, batch: TokenBatch) -> dict[str, torch.Tensor]:
        """Reference log-probs, per-token rewards, GAE advantages and returns, (B, R) each."""
        net = self.policy.net
        mask = batch.response_mask
        kl = torch.zeros_like(batch.log_probs)
        if self.kl_coef > 0 or self.kl_target is not None:
            for index in self._minibatches(self.minibatch_episodes, shuffle=False):
                part = batch.select(index)
                select = part.response_mask
                ref_logits = net.kl_logits(net.reference_logits(part.ids, part.mask, part.start, select))
                ref_log_probs = token_log_probs(ref_logits, part.tokens[select])  # (N,)
                rows = torch.zeros_like(part.kl_log_probs)
                rows[select] = kl_penalty(part.kl_log_probs[select], ref_log_probs, self.kl_estimator)
                kl[index] = rows
        scores = self._scores.float()
        if self.reward_normalization == "running":
            self.reward_stats.update(scores.cpu().numpy())
            scores = scores / float(np.sqrt(self.reward_stats.var + 1e-8))
        elif self.reward_normalization == "batch":
            scores = (scores - scores.mean()) / (scores.std() + 1e-8)
        rewards = -self.kl_coef * kl
        last = (batch.lengths - 1).clamp(min=0)
        rewards[torch.arange(len(last)), last] += scores
        advantages, returns = gae(rewards, batch.values, mask, self.gamma, self.gae_lambda)
        if self.normalize_advantage:
            advantages = whiten(advantages, mask)
        self._sequence_kl = float(kl.sum(-1).mean())  # nats per episode
        if self.kl_target is not None:  # proportional controller on the per-episode KL
            error = float(np.clip(self._sequence_kl / self.kl_target - 1, -0.2, 0.2))
            self.kl_coef *= 1 + error * self.batch_episodes / self.kl_horizon
        return {"advantages": advantages, "returns": returns}

    def train(self) -> None:
        """PPO epochs over the last batch: every token's log-prob and value in one pass."""
        if self._rollout is None:
            raise RuntimeError("train() needs a batch: call collect_rollouts() (learn() does) first")
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        clip_range = self.clip_range(self._current_progress_remaining)
        net, batch = self.policy.net, self._rollout
        started = time.perf_counter()
        targets = self._advantages(batch)
        reference_s = time.perf_counter() - started

        stats: dict[str, list[float]] = {k: [] for k in ("pg", "vf", "entropy", "clip", "approx_kl")}
        updated_tokens = 0
        for _ in range(self.n_epochs):
            for index in self._minibatches(self.minibatch_episodes, shuffle=True):
                part = batch.select(index)
                select = part.response_mask  # (b, R): the N tokens the policy emitted
                advantages, returns = targets["advantages"][index][select], targets["returns"][index][select]
                raw, values = net.sequence(part.ids, part.mask, part.start, select)  # (N, V), (b, R)
                # Filtered ids get a large finite logit instead of -inf: probability 0, no NaN.
                log_softmax = torch.log_softmax(net.process(raw).clamp(min=-1e9), dim=-1)  # (N, V)
                log_probs = log_softmax.gather(-1, part.tokens[select].unsqueeze(-1)).squeeze(-1)  # (N,)
                entropy = -(log_softmax.exp() * log_softmax).sum(-1).mean()
                log_ratio = log_probs - part.log_probs[select]
                ratio = log_ratio.exp()
                clipped_ratio = ratio.clamp(1 - clip_range, 1 + clip_range)
                pg_loss = torch.max(-advantages * ratio, -advantages * clipped_ratio).mean()
                values, old_values = values[select], part.values[select]
                if self.clip_range_vf is not None:
                    bound = self.clip_range_vf
                    clipped = old_values + (values - old_values).clamp(-bound, bound)
                    vf_loss = torch.max((values - returns) ** 2, (clipped - returns) ** 2).mean() / 2
                else:
                    vf_loss = ((values - returns) ** 2).mean() / 2
                loss = pg_loss + self.vf_coef * vf_loss - self.ent_coef * entropy
                self.policy.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.policy.optimizer.step()
                with torch.no_grad():
                    stats["pg"].append(float(pg_loss))
                    stats["vf"].append(float(vf_loss))
                    stats["entropy"].append(float(entropy))
                    stats["clip"].append(float(((ratio - 1).abs() > clip_range).float().mean()))
                    stats["approx_kl"].append(float(((ratio - 1) - log_ratio).mean()))
                updated_tokens += int(part.mask.sum())
        update_s = time.perf_counter() - started - reference_s
        self._n_updates += self.n_epochs
        mask = batch.response_mask
        returns = targets["returns"][mask].cpu().numpy()
        self.last_update = {
            "policy_loss": float(np.mean(stats["pg"])),
            "value_loss": float(np.mean(stats["vf"])),
            "entropy": float(np.mean(stats["entropy"])),
            "clip_fraction": float(np.mean(stats["clip"])),
            "approx_kl": float(np.mean(stats["approx_kl"])),
            "explained_variance": float(explained_variance(batch.values[mask].cpu().numpy(), returns)),
            "kl": self._sequence_kl,
            "kl_coef": self.kl_coef,
            "tokens_per_s": updated_tokens / update_s,
            "seconds": update_s,
            "reference_seconds": reference_s,
        }
        for key, value in self.last_update.items():
            self.logger.record(f"train/{key}", value)
        self.logger.record("train/learning_rate", self.policy.optimizer.param_groups[0]["lr"])
        self.logger.record("train/clip_range", clip_range)
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")

    def learn(
        self,
        total_timesteps: int,
        callback: Any = None,
        log_interval: int = 1,
        tb_log_name: str = "TextPPO",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> TextPPO:
        """Train for ``total_timesteps`` generated tokens (env steps), a batch at a time."""
        return super().learn(
            total_timesteps, callback, log_interval, tb_log_name, reset_num_timesteps, progress_bar
        )
