"""TextPPO: sequence-level PPO for textgym envs, as a Stable-Baselines3 on-policy algorithm.

Each iteration samples ``batch_episodes`` episodes together with the KV cache kept across
steps, scores the finished texts with one batched reward call (the env's ``score_episodes``)
and stores them in a :class:`TokenRolloutBuffer`, which computes the frozen reference's
log-probs, the per-token rewards (the KL penalty ``-kl_coef * KL_t`` plus the task reward on the
last token) and GAE per token. The update computes, for every token of a sequence in one
forward pass, the log-probs and values of the policy.
"""

from __future__ import annotations

import functools
import time
from typing import Any, ClassVar

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.type_aliases import GymEnv, Schedule
from stable_baselines3.common.utils import FloatSchedule, explained_variance
from stable_baselines3.common.vec_env import VecEnv
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from textgym.agents.common import distributed
from textgym.agents.common.buffers import (
    KL_ESTIMATORS,
    REWARD_NORMALIZATIONS,
    TokenRolloutBuffer,
)
from textgym.agents.common.checks import check_choice, check_groups, check_number
from textgym.agents.common.policies import LMActorCriticPolicy
from textgym.agents.common.rollout import reference_log_probs
from textgym.agents.common.sampler import TextSampler, play_batch, text_env


class SequencePass(nn.Module):
    """``LMActorCritic.sequence`` as a module's forward: what DistributedDataParallel wraps, so
    that the update's passes are the ones whose gradients it averages over the ranks."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, *args: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net.sequence(*args)


class TextPPO(OnPolicyAlgorithm):
    """PPO on whole generated texts, with a KL penalty to the initial model.

    :param policy: ``"LMPolicy"`` or :class:`LMActorCriticPolicy` (or a subclass).
    :param env: a textgym env (id string, env or VecEnv; episodes are drawn from its first
        env); its model is the policy's unless ``policy_kwargs["model"]`` says otherwise.
    :param learning_rate: the Adam learning rate, a constant or a schedule of the progress
        remaining (from 1 to 0).
    :param batch_episodes: episodes sampled together per iteration (B); SB3's ``n_steps``
        (the rollout buffer's size, counted in episodes: an episode is one env step per token).
    :param minibatch_episodes: whole episodes per gradient step (and per reference forward pass).
    :param n_epochs: passes over each batch.
    :param gamma: discount per token (1: a text's reward is not discounted).
    :param gae_lambda: GAE's lambda over the tokens of an episode.
    :param clip_range: PPO's clipping of the probability ratio, a constant or a schedule; None:
        no clipping (the policy-gradient loss ``-A * ratio``, REINFORCE's when on-policy).
    :param clip_range_vf: clipping of the value's change around the old value (None: off).
        Unlike SB3's, it is not a schedule.
    :param ent_coef: entropy bonus coefficient.
    :param vf_coef: value loss coefficient. The value loss is ``((V - R)**2).mean() / 2``, half
        SB3's ``F.mse_loss(R, V)``: a ``vf_coef`` of 0.1 here weighs as 0.05 in SB3's PPO.
    :param max_grad_norm: gradients are clipped to this global norm.
    :param kl_coef: initial coefficient of the per-token KL penalty (0 with no adaptive target:
        no reference model).
    :param adaptive_kl_target: a target KL (nats per episode) that the coefficient adapts to
        reach (Ziegler et al. 2019); None keeps it fixed. Not SB3's ``target_kl``, which stops
        an update's epochs early.
    :param adaptive_kl_horizon: episodes over which the adaptive coefficient moves (a larger
        horizon adapts more slowly).
    :param kl_estimator: ``"k1"`` (log p - log q) or ``"k3"`` ((q/p - 1) - log(q/p)).
    :param reward_normalization: ``"none"``, ``"running"`` (divide task rewards by their
        running std) or ``"batch"`` (standardise them within each batch).
    :param normalize_advantage: whiten advantages over each batch's tokens.
    :param group_size: texts sampled per prompt (k); the batch draws ``batch_episodes / k``
        prompts, and each prompt runs once in rollouts and in updates, its KV cache shared by
        its texts. Minibatches are made of whole groups.
    :param group_baseline: None, ``"mean"`` (GRPO) or ``"leave_one_out"`` (RLOO): each text's
        reward sum minus its group's baseline (see :class:`TokenRolloutBuffer`).
    :param scale_group_std: divide each text's rewards by its group's std (GRPO).
    :param use_critic: per-token advantages from the value head by GAE, and a value loss;
        False: each token's advantage is its return to go (after the group baseline), no value
        loss (REINFORCE, GRPO and RLOO without a critic).
    :param stats_window_size: episodes over which SB3's rollout/ep_rew_mean is averaged.
    :param tensorboard_log: the TensorBoard log folder (None: no TensorBoard).
    :param policy_kwargs: the policy's arguments (:class:`LMPolicyConfig`'s fields, plain values).
    :param verbose: 0 silent, 1 info, 2 debug (SB3's levels).
    :param seed: seeds SB3's generators, the token sampler and the prompt order.
    :param device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
    :param _init_setup_model: whether to build the policy and buffer now (SB3's ``load``
        builds them later).
    """

    policy_aliases: ClassVar[dict[str, type]] = {"LMPolicy": LMActorCriticPolicy}
    rollout_buffer: TokenRolloutBuffer
    policy: LMActorCriticPolicy

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
        clip_range: float | Schedule | None = 0.2,
        clip_range_vf: float | None = 0.2,
        ent_coef: float = 0.0,
        vf_coef: float = 0.1,
        max_grad_norm: float = 1.0,
        kl_coef: float = 0.05,
        adaptive_kl_target: float | None = None,
        adaptive_kl_horizon: int = 10_000,
        kl_estimator: str = "k1",
        reward_normalization: str = "none",
        normalize_advantage: bool = True,
        group_size: int = 1,
        group_baseline: str | None = None,
        scale_group_std: bool = False,
        use_critic: bool = True,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: torch.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        counts = {"batch_episodes": batch_episodes, "minibatch_episodes": minibatch_episodes,
                  "n_epochs": n_epochs, "adaptive_kl_horizon": adaptive_kl_horizon}  # fmt: skip
        for name, value in counts.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if minibatch_episodes > batch_episodes:
            raise ValueError(
                f"minibatch_episodes ({minibatch_episodes}) exceeds batch_episodes ({batch_episodes})"
            )
        check_groups(batch_episodes, group_size, group_baseline)
        if minibatch_episodes % group_size:
            raise ValueError(
                f"minibatch_episodes ({minibatch_episodes}) must be a multiple of group_size "
                f"({group_size}): minibatches are made of whole groups"
            )
        if isinstance(clip_range, (int, float)) and not isinstance(clip_range, bool):
            check_number("clip_range", clip_range, 0, 1e6, open_low=True)
        check_choice("kl_estimator", kl_estimator, KL_ESTIMATORS)
        check_choice("reward_normalization", reward_normalization, REWARD_NORMALIZATIONS)
        check_number("kl_coef", kl_coef, 0, 1e3)
        check_number("gamma", gamma, 0, 1)
        check_number("gae_lambda", gae_lambda, 0, 1)
        if adaptive_kl_target is not None:
            check_number("adaptive_kl_target", adaptive_kl_target, 0, 1e6, open_low=True)
        if clip_range_vf is not None:
            check_number("clip_range_vf", clip_range_vf, 0, 1e6, open_low=True)
        if policy_kwargs is not None and not isinstance(policy_kwargs, dict):
            raise TypeError(f"policy_kwargs must be a dict, got {type(policy_kwargs).__name__}")
        self.batch_episodes = batch_episodes
        self.minibatch_episodes = minibatch_episodes
        self.n_epochs = n_epochs
        self.clip_range = clip_range
        self.clip_range_vf = clip_range_vf
        self.kl_coef = float(kl_coef)
        self.adaptive_kl_target = adaptive_kl_target
        self.adaptive_kl_horizon = adaptive_kl_horizon
        self.kl_estimator = kl_estimator
        self.reward_normalization = reward_normalization
        self.normalize_advantage = normalize_advantage
        self.group_size = group_size
        self.group_baseline = group_baseline
        self.scale_group_std = scale_group_std
        self.use_critic = use_critic
        super().__init__(
            policy, env, learning_rate=learning_rate, n_steps=batch_episodes, gamma=gamma,
            gae_lambda=gae_lambda, ent_coef=ent_coef, vf_coef=vf_coef, max_grad_norm=max_grad_norm,
            use_sde=False, sde_sample_freq=-1, rollout_buffer_class=TokenRolloutBuffer,
            rollout_buffer_kwargs={"kl_estimator": kl_estimator, "reward_normalization": reward_normalization,
                                   "normalize_advantage": normalize_advantage, "group_size": group_size,
                                   "group_baseline": group_baseline, "scale_group_std": scale_group_std,
                                   "use_critic": use_critic},
            stats_window_size=stats_window_size, tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs, verbose=verbose, seed=seed, device=device,
            _init_setup_model=False, supported_action_spaces=(spaces.Discrete,),
        )  # fmt: skip
        if not issubclass(self.policy_class, LMActorCriticPolicy):
            raise TypeError(f"TextPPO needs an LMActorCriticPolicy, got {self.policy_class.__name__}")
        if self.env is not None:
            task = text_env(self.env, type(self).__name__)  # a textgym env, or one clear error
            # Saved with the agent, so that load() rebuilds the same model without the env.
            self.policy_kwargs.setdefault("model", task.model_name)
        self.reward_stats = RunningMeanStd(shape=())  # of task rewards, for "running" normalization
        # Tokens, minibatch orders and which prompts each batch gets. SB3's save does not keep it
        # (see get_sampler_state); set_random_seed reseeds it.
        self.sampler = TextSampler(self.device, seed)
        # What the last batch and update did, for callbacks and scripts (the logger clears on dump).
        self.last_rollout: dict[str, Any] = {}
        self.last_update: dict[str, Any] = {}
        self._ddp: DistributedDataParallel | None = None  # made by the first update under torchrun
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        super()._setup_model()
        if self.clip_range is not None:
            self.clip_range = FloatSchedule(self.clip_range)

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "sampler", "_ddp"]

    def set_random_seed(self, seed: int | None = None) -> None:
        """SB3's seeding (Python, NumPy, torch, the spaces and env), and the sampler's."""
        super().set_random_seed(seed)
        if seed is not None:
            self.sampler.reseed(seed)

    def get_sampler_state(self) -> dict[str, Any]:
        """The sampler's random state as JSON-serialisable values (:meth:`TextSampler.state`).
        SB3's ``save`` does not keep it; restore it with :meth:`set_sampler_state` so that a
        resumed run does not replay the same prompts."""
        return self.sampler.state()

    def set_sampler_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`get_sampler_state` returned."""
        self.sampler.load_state(state)

    # -- rollouts -------------------------------------------------------------------------------

    def collect_rollouts(
        self, env: VecEnv, callback: BaseCallback, rollout_buffer: TokenRolloutBuffer, n_rollout_steps: int
    ) -> bool:
        """Generate ``n_rollout_steps`` (``batch_episodes``) texts together, ``group_size`` per
        prompt, score them in one reward call, and fill ``rollout_buffer`` with them and their
        advantages and returns."""
        self.policy.set_training_mode(False)
        rollout_buffer.reset()
        callback.on_rollout_start()
        before = self.num_timesteps
        played = play_batch(self, self.sampler, env, callback, n_rollout_steps, self.group_size)
        if played is None:
            return False
        if distributed.active():  # the budget counts every rank's tokens; the curve, every text
            totals = distributed.all_sum(
                torch.tensor(
                    [self.num_timesteps - before, float(played.rewards.sum()), len(played.rewards)],
                    dtype=torch.float64,
                )
            )
            self.num_timesteps = before + int(totals[0])
            self.last_rollout["reward"] = float(totals[1] / totals[2])
        started = time.perf_counter()
        rollout_buffer.add(played.episodes, played.rewards)
        reference = None
        if self.kl_coef > 0 or self.adaptive_kl_target is not None:
            reference = functools.partial(reference_log_probs, self.policy.net)
        rollout_buffer.compute_returns_and_advantage(
            self.kl_coef, reference, self.reward_stats, batch_size=self.minibatch_episodes
        )
        # the reference pass, rewards and GAE
        self.last_rollout["reference_seconds"] = time.perf_counter() - started
        if self.adaptive_kl_target is not None:  # proportional controller on the per-episode KL
            error = float(np.clip(rollout_buffer.sequence_kl / self.adaptive_kl_target - 1, -0.2, 0.2))
            self.kl_coef *= 1 + error * n_rollout_steps / self.adaptive_kl_horizon
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    # -- update ---------------------------------------------------------------------------------

    def train(self) -> None:
        """PPO epochs over the buffer's batch: every token's log-prob and value in one pass."""
        if not self.rollout_buffer.full:
            raise RuntimeError("train() needs a batch: call collect_rollouts() (learn() does) first")
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        clip_range = None if self.clip_range is None else self.clip_range(self._current_progress_remaining)
        net = self.policy.net
        started = time.perf_counter()

        stats: dict[str, list[float]] = {k: [] for k in ("pg", "vf", "entropy", "clip", "approx_kl")}
        updated_tokens = 0
        for _ in range(self.n_epochs):
            for rollout_data in self.rollout_buffer.get(self.minibatch_episodes, self.sampler.generator):
                part = rollout_data.episodes
                select = part.response_mask  # (b, R): the N tokens the policy emitted
                advantages, returns = rollout_data.advantages[select], rollout_data.returns[select]  # (N,)
                # (N, V), (b, R); a group's prompt runs once
                raw, values = self._sequence_pass(part.ids, part.mask, part.start, select, part.group_size)
                # Filtered ids get a large finite logit instead of -inf: probability 0, no NaN.
                log_softmax = torch.log_softmax(net.process(raw).clamp(min=-1e9), dim=-1)  # (N, V)
                log_probs = log_softmax.gather(-1, part.tokens[select].unsqueeze(-1)).squeeze(-1)  # (N,)
                entropy = -(log_softmax.exp() * log_softmax).sum(-1).mean()
                log_ratio = log_probs - part.log_probs[select]
                ratio = log_ratio.exp()
                if clip_range is None:  # the plain policy gradient (REINFORCE)
                    pg_loss = (-advantages * ratio).mean()
                else:
                    clipped_ratio = ratio.clamp(1 - clip_range, 1 + clip_range)
                    pg_loss = torch.max(-advantages * ratio, -advantages * clipped_ratio).mean()
                values, old_values = values[select], part.values[select]
                if not self.use_critic:
                    vf_loss = torch.zeros((), device=values.device)
                elif self.clip_range_vf is not None:
                    bound = self.clip_range_vf
                    clipped = old_values + (values - old_values).clamp(-bound, bound)
                    vf_loss = torch.max((values - returns) ** 2, (clipped - returns) ** 2).mean() / 2
                else:
                    vf_loss = ((values - returns) ** 2).mean() / 2
                loss = pg_loss + self.vf_coef * vf_loss - self.ent_coef * entropy
                # Under torchrun, DDP averages the ranks' gradients: weighed by their token counts,
                # the average is the gradient of the mean over every rank's tokens.
                loss = loss * distributed.token_share(select.sum())
                self.policy.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.policy.optimizer.step()
                with torch.no_grad():
                    stats["pg"].append(float(pg_loss))
                    stats["vf"].append(float(vf_loss))
                    stats["entropy"].append(float(entropy))
                    out = (
                        0.0 if clip_range is None else float(((ratio - 1).abs() > clip_range).float().mean())
                    )
                    stats["clip"].append(out)
                    stats["approx_kl"].append(float(((ratio - 1) - log_ratio).mean()))
                updated_tokens += int(part.mask.sum())
        update_s = time.perf_counter() - started
        self._n_updates += self.n_epochs
        batch = self.rollout_buffer.episodes
        mask = batch.response_mask
        returns = self.rollout_buffer.returns[mask].cpu().numpy()
        self.last_update = {
            "policy_loss": float(np.mean(stats["pg"])),
            "value_loss": float(np.mean(stats["vf"])),
            "entropy": float(np.mean(stats["entropy"])),
            "clip_fraction": float(np.mean(stats["clip"])),
            "approx_kl": float(np.mean(stats["approx_kl"])),
            "explained_variance": float(explained_variance(batch.values[mask].cpu().numpy(), returns)),
            "kl": self.rollout_buffer.sequence_kl,
            "kl_coef": self.kl_coef,
            "tokens_per_s": updated_tokens / update_s,
            "seconds": update_s,
        }
        for key, value in self.last_update.items():
            self.logger.record(f"train/{key}", value)
        self.logger.record("train/learning_rate", self.policy.optimizer.param_groups[0]["lr"])
        if clip_range is not None:
            self.logger.record("train/clip_range", clip_range)
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")

    def _sequence_pass(self, *args: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``net.sequence(*args)``; under torchrun through DistributedDataParallel (made on first
        use, when it also gives every rank rank 0's weights)."""
        if not distributed.active():
            return self.policy.net.sequence(*args)
        if self._ddp is None:
            devices = [self.device] if self.device.type == "cuda" else None
            # Without a critic the value head is in the pass but not in the loss.
            self._ddp = DistributedDataParallel(
                SequencePass(self.policy.net), device_ids=devices, find_unused_parameters=True
            )
        return self._ddp(*args)

    def learn(
        self,
        total_timesteps: int,
        callback: Any = None,
        log_interval: int = 1,
        tb_log_name: str = "",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> TextPPO:
        """Train for ``total_timesteps`` generated tokens (env steps), a batch at a time;
        TensorBoard runs are named after the class (``TextPPO_1``, ``GRPO_1``) by default."""
        name = tb_log_name or type(self).__name__
        return super().learn(total_timesteps, callback, log_interval, name, reset_num_timesteps, progress_bar)
