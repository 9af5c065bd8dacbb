"""SoftQ: sequence-level soft Q-learning for textgym envs, as a Stable-Baselines3 off-policy algorithm.

The fast value-based path (Guo et al. 2021, "Efficient (Soft) Q-Learning for Text Generation";
path consistency from Nachum et al. 2017). The LM is the soft Q-function, parameterised as

    Q(s_t, a) = V(s_t) + alpha * (log pi(a | s_t) - log pi_ref(a | s_t))    (regularization="kl")
    Q(s_t, a) = V(s_t) + alpha * log pi(a | s_t)                           (regularization="entropy")

with ``pi`` the LM's sampling distribution, ``V`` its value head, ``pi_ref`` the frozen initial
model and ``alpha`` the ``kl_coef``: the policy is the Boltzmann policy of Q (``pi = pi_ref *
exp((Q - V) / alpha)``), so a pretrained LM with a value of 0 is already a consistent initial
Q-function. Each iteration samples ``batch_episodes`` texts together (TextPPO's rollout), stores
them whole in a :class:`TextReplayBuffer`, and takes ``gradient_steps`` steps on minibatches of
replayed texts: one forward pass per text gives Q at every position, a target network (Polyak
averages of the trainable parameters; with LoRA, of the adapters and value head only) gives the
bootstrapped values, and the loss is the single- and multi-step path-consistency residuals
(:func:`path_consistency`), optionally with prioritized replay of texts (Schaul et al. 2016).
"""

from __future__ import annotations

import contextlib
import io
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.save_util import load_from_pkl
from stable_baselines3.common.type_aliases import GymEnv, RolloutReturn, Schedule
from stable_baselines3.common.utils import polyak_update
from stable_baselines3.common.vec_env import VecEnv
from torch import nn

from textgym.agents.common.checks import check_choice, check_number
from textgym.agents.common.network import LMActorCritic
from textgym.agents.common.policies import LMActorCriticPolicy
from textgym.agents.common.rollout import reference_log_probs, token_log_probs
from textgym.agents.common.sampler import TextSampler, play_batch, text_env
from textgym.agents.softq.buffer import TextReplayBuffer

REGULARIZATIONS = ("kl", "entropy")


def path_consistency(
    values: torch.Tensor,
    target_values: torch.Tensor,
    log_ratios: torch.Tensor,
    rewards: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    horizon: int | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Single-step and multi-step path-consistency residuals, (B, R) each, 0 past each text's end.

    Over the tokens ``t`` of a text of ``n`` tokens (a state after the last token is terminal:
    its value is 0), with ``l_t = log_ratios[t]`` (``alpha * log(pi/pi_ref)`` of the emitted
    token, or ``alpha * log pi``), ``r_t`` the reward, ``V`` the online values and ``Vbar`` the
    target network's:

    - single: ``V(s_t) + l_t - r_t - gamma * Vbar(s_{t+1})`` (the soft Bellman residual of
      ``Q(s_t, a_t) = V(s_t) + l_t``);
    - multi: ``V(s_t) + sum_{u=t}^{t+d-1} gamma^(u-t) (l_u - r_u) - gamma^d Vbar(s_{t+d})`` with
      ``d = horizon`` (None: to the text's end, no bootstrap).
    """
    mask_f = mask.to(values.dtype)
    B, R = values.shape
    d = R if horizon is None else min(horizon, R)
    x = (log_ratios - rewards) * mask_f  # (B, R)
    offsets = torch.arange(R, device=values.device)
    gap = offsets[None, :] - offsets[:, None]  # (R, R): u - t
    window = ((gap >= 0) & (gap < d)).to(values.dtype) * gamma ** gap.clamp(min=0).to(values.dtype)
    sums = x @ window.T  # (B, R): the discounted window sum from each t

    def shifted(k: int) -> torch.Tensor:  # Vbar(s_{t+k}), 0 at and past the terminal state
        pad = torch.zeros(B, k, dtype=values.dtype, device=values.device)
        following = torch.cat([target_values * mask_f, pad], dim=1)[:, k : k + R]
        return following

    single = (values + log_ratios - rewards - gamma * shifted(1)) * mask_f
    multi = (values + sums - gamma**d * shifted(d)) * mask_f
    return single, multi


class TargetNetwork(nn.Module):
    """Polyak averages of a network's trainable parameters (with LoRA: the adapters and the
    value head, not the frozen model), swapped in for the target's forward passes. A module, so
    that SB3's ``save`` keeps it with the agent."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self._online = [p for p in net.parameters() if p.requires_grad]  # a list: not registered
        for i, parameter in enumerate(self._online):
            self.register_buffer(f"p{i}", parameter.detach().clone())

    def copies(self) -> list[torch.Tensor]:
        return [getattr(self, f"p{i}") for i in range(len(self._online))]

    def update(self, tau: float) -> None:
        polyak_update(self._online, self.copies(), tau)

    @contextlib.contextmanager
    def swapped(self) -> Iterator[None]:
        """The online network's trainable parameters hold the target's values inside the block
        (no copies: the tensors' storages are exchanged, and exchanged back after)."""
        online = [p.data for p in self._online]
        try:
            for parameter, copy in zip(self._online, self.copies()):
                parameter.data = copy
            yield
        finally:
            for parameter, data in zip(self._online, online):
                parameter.data = data


class SoftQ(OffPolicyAlgorithm):
    """Sequence-level soft Q-learning with path-consistency losses (see the module docstring).

    :param policy: ``"LMPolicy"`` or :class:`LMActorCriticPolicy`: its LM is the Q-function's
        policy part and its value head the soft value V.
    :param env: a textgym env (id string, env or VecEnv; texts are drawn from its first env).
    :param learning_rate: Adam's learning rate, a constant or a schedule.
    :param buffer_size: texts kept for replay.
    :param learning_starts: generated tokens (SB3 timesteps) before the first gradient step.
    :param batch_episodes: texts sampled together per iteration (and added to the buffer).
    :param minibatch_episodes: replayed texts per gradient step (SB3's ``batch_size``).
    :param gradient_steps: gradient steps per iteration (>= 1).
    :param tau: Polyak coefficient of the target network's update (1: a hard copy).
    :param target_update_interval: gradient steps between target updates.
    :param gamma: discount per token.
    :param kl_coef: alpha, the weight of the regulariser in Q (> 0).
    :param regularization: ``"kl"`` (to the frozen initial model: the KL-regularised objective
        ``reward - alpha * KL(pi || pi_ref)``) or ``"entropy"`` (``reward + alpha * H(pi)``).
    :param single_step_coef: weight of the single-step path-consistency loss.
    :param multi_step_coef: weight of the multi-step loss.
    :param multi_step_horizon: the multi-step loss's horizon in tokens (None: to the text's end).
    :param prioritized_replay: draw texts by their last residual (see :class:`TextReplayBuffer`).
    :param priority_exponent: prioritized replay's alpha (0: uniform).
    :param importance_exponent: prioritized replay's beta, the importance weights' exponent.
    :param max_grad_norm: gradients are clipped to this global norm.
    :param stats_window_size: episodes over which SB3's rollout statistics are averaged.
    :param tensorboard_log: the TensorBoard log folder (None: no TensorBoard).
    :param policy_kwargs: the policy's arguments (:class:`LMPolicyConfig`'s fields, plain values).
    :param verbose: 0 silent, 1 info, 2 debug (SB3's levels).
    :param seed: seeds SB3's generators, the token sampler and the prompt order.
    :param device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
    :param _init_setup_model: whether to build the policy and buffer now (SB3's ``load`` builds
        them later).
    """

    policy_aliases: ClassVar[dict[str, type]] = {"LMPolicy": LMActorCriticPolicy}
    replay_buffer: TextReplayBuffer
    policy: LMActorCriticPolicy

    def __init__(
        self,
        policy: str | type[LMActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 1e-5,
        buffer_size: int = 1024,
        learning_starts: int = 0,
        batch_episodes: int = 64,
        minibatch_episodes: int = 8,
        gradient_steps: int = 8,
        tau: float = 0.1,
        target_update_interval: int = 1,
        gamma: float = 1.0,
        kl_coef: float = 0.05,
        regularization: str = "kl",
        single_step_coef: float = 1.0,
        multi_step_coef: float = 1.0,
        multi_step_horizon: int | None = None,
        prioritized_replay: bool = False,
        priority_exponent: float = 0.6,
        importance_exponent: float = 0.4,
        max_grad_norm: float = 1.0,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: torch.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        counts = {"buffer_size": buffer_size, "batch_episodes": batch_episodes,
                  "minibatch_episodes": minibatch_episodes, "gradient_steps": gradient_steps,
                  "target_update_interval": target_update_interval}  # fmt: skip
        for name, value in counts.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if isinstance(learning_starts, bool) or not isinstance(learning_starts, int) or learning_starts < 0:
            raise ValueError(f"learning_starts must be an int >= 0, got {learning_starts!r}")
        if batch_episodes > buffer_size:
            raise ValueError(f"batch_episodes ({batch_episodes}) exceeds buffer_size ({buffer_size})")
        horizon = multi_step_horizon
        if horizon is not None and (isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1):
            raise ValueError(f"multi_step_horizon must be a positive int or None, got {multi_step_horizon!r}")
        check_choice("regularization", regularization, REGULARIZATIONS)
        check_number("tau", tau, 0, 1, open_low=True)  # open: 0 is not allowed
        check_number("kl_coef", kl_coef, 0, 1e3, open_low=True)
        check_number("max_grad_norm", max_grad_norm, 0, math.inf, open_low=True)
        check_number("gamma", gamma, 0, 1)
        check_number("single_step_coef", single_step_coef, 0, 1e6)
        check_number("multi_step_coef", multi_step_coef, 0, 1e6)
        check_number("priority_exponent", priority_exponent, 0, 10)
        check_number("importance_exponent", importance_exponent, 0, 10)
        if single_step_coef == 0 and multi_step_coef == 0:
            raise ValueError("single_step_coef and multi_step_coef are both 0: no loss to train on")
        if policy_kwargs is not None and not isinstance(policy_kwargs, dict):
            raise TypeError(f"policy_kwargs must be a dict, got {type(policy_kwargs).__name__}")
        self.batch_episodes = batch_episodes
        self.minibatch_episodes = minibatch_episodes
        self.target_update_interval = target_update_interval
        self.kl_coef = float(kl_coef)
        self.regularization = regularization
        self.single_step_coef = float(single_step_coef)
        self.multi_step_coef = float(multi_step_coef)
        self.multi_step_horizon = multi_step_horizon
        self.prioritized_replay = prioritized_replay
        self.max_grad_norm = float(max_grad_norm)
        super().__init__(
            policy, env, learning_rate, buffer_size=buffer_size, learning_starts=learning_starts,
            batch_size=minibatch_episodes, tau=tau, gamma=gamma, train_freq=(batch_episodes, "episode"),
            gradient_steps=gradient_steps, replay_buffer_class=TextReplayBuffer,
            replay_buffer_kwargs={"prioritized": prioritized_replay, "priority_exponent": priority_exponent,
                                  "importance_exponent": importance_exponent},
            policy_kwargs=policy_kwargs, stats_window_size=stats_window_size, tensorboard_log=tensorboard_log,
            verbose=verbose, device=device, seed=seed, sde_support=False, support_multi_env=False,
            supported_action_spaces=(spaces.Discrete,),
        )  # fmt: skip
        if not issubclass(self.policy_class, LMActorCriticPolicy):
            raise TypeError(f"SoftQ needs an LMActorCriticPolicy, got {self.policy_class.__name__}")
        if self.env is not None:
            task = text_env(self.env, "SoftQ", multi_turn=False)
            self.policy_kwargs.setdefault("model", task.model_name)
        self.sampler = TextSampler(self.device, seed)  # tokens, replay draws and prompts
        self.last_rollout: dict[str, Any] = {}
        self.last_update: dict[str, Any] = {}
        self._batch_kl = 0.0  # the last batch's KL to the reference, nats per text
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        super()._setup_model()
        self.replay_buffer.pad_id = self.policy.net.pad_id
        self.target = TargetNetwork(self.policy.net)

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "policy.optimizer", "target"], []

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "sampler"]

    def load_replay_buffer(
        self, path: str | Path | io.BufferedIOBase, truncate_last_traj: bool = True
    ) -> None:
        """Load what :meth:`save_replay_buffer` wrote (SB3's own needs a ``ReplayBuffer`` of
        transitions; this one holds texts)."""
        buffer = load_from_pkl(path, self.verbose)
        if not isinstance(buffer, TextReplayBuffer):
            raise TypeError(f"{path} holds a {type(buffer).__name__}, not SoftQ's TextReplayBuffer")
        buffer.device = self.device
        self.replay_buffer = buffer

    def set_random_seed(self, seed: int | None = None) -> None:
        """SB3's seeding, and the sampler's."""
        super().set_random_seed(seed)
        if seed is not None and hasattr(self, "sampler"):
            self.sampler.reseed(seed)

    # -- rollouts -------------------------------------------------------------------------------

    def collect_rollouts(  # type: ignore[override]
        self,
        env: VecEnv,
        callback: BaseCallback,
        train_freq: Any,
        replay_buffer: TextReplayBuffer,
        action_noise: Any = None,
        learning_starts: int = 0,
        log_interval: int | None = None,
    ) -> RolloutReturn:
        """Generate ``batch_episodes`` texts together, score them in one reward call, and add
        them with their reference log-probs to the replay buffer."""
        self.policy.set_training_mode(False)
        callback.on_rollout_start()
        played = play_batch(self, self.sampler, env, callback, self.batch_episodes)
        if played is None:
            return RolloutReturn(0, 0, continue_training=False)
        episodes, net = played.episodes, self.policy.net
        reference = torch.zeros_like(episodes.kl_log_probs)
        started = time.perf_counter()
        if self.regularization == "kl":
            for first in range(0, len(episodes.ids), self.minibatch_episodes):
                index = torch.arange(first, min(first + self.minibatch_episodes, len(episodes.ids)))
                part = episodes.select(index)
                rows = torch.zeros_like(part.kl_log_probs)
                rows[part.response_mask] = reference_log_probs(net, part)
                reference[index] = rows
        if self._n_updates == 0 and replay_buffer.size() == 0:
            # Before any update the policy is the reference, so (KL form) V(s) is the expected
            # task reward from s: the value head starts at the first batch's mean reward rather
            # than 0, which it would take hundreds of small steps to leave.
            with torch.no_grad():
                net.value_head.bias.fill_(float(np.mean(played.rewards)))
        mask = episodes.response_mask
        self._batch_kl = float(((episodes.kl_log_probs - reference) * mask).sum(-1).mean())
        self.last_update["kl"] = self._batch_kl
        replay_buffer.add(episodes, played.rewards, reference)
        self.last_rollout["reference_seconds"] = time.perf_counter() - started
        self._episode_num += len(episodes.ids)
        callback.update_locals(locals())
        callback.on_rollout_end()
        self.dump_logs()
        return RolloutReturn(int(episodes.lengths.sum()), len(episodes.ids), continue_training=True)

    # -- update ---------------------------------------------------------------------------------

    def train(self, gradient_steps: int, batch_size: int) -> None:
        """``gradient_steps`` steps on minibatches of ``batch_size`` replayed texts."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        net: LMActorCritic = self.policy.net
        started = time.perf_counter()
        stats: dict[str, list[float]] = {k: [] for k in ("loss", "single", "multi", "value", "log_ratio")}
        tokens = 0
        for _ in range(gradient_steps):
            data = self.replay_buffer.sample(batch_size, self.sampler.generator)
            part, select = data.episodes, data.episodes.response_mask
            with torch.no_grad(), self.target.swapped():
                target_values = net.sequence_values(part.ids, part.mask, part.start)  # (b, R)
            raw, values = net.sequence(part.ids, part.mask, part.start, select)  # (N, V), (b, R)
            # pi over the whole vocabulary (temperature and mask, as the reference's): top-k/p
            # only shape sampling; a replayed token outside today's top-k must not cost 1e9.
            log_probs = token_log_probs(net.kl_logits(raw), part.tokens[select])  # (N,)
            log_ratios = torch.zeros_like(values)
            if self.regularization == "kl":
                log_ratios[select] = self.kl_coef * (log_probs - data.ref_log_probs[select])
            else:
                log_ratios[select] = self.kl_coef * log_probs
            single, multi = path_consistency(
                values, target_values, log_ratios, data.rewards, select, self.gamma, self.multi_step_horizon
            )
            per_token = (self.single_step_coef * single**2 + self.multi_step_coef * multi**2) / 2
            loss = (data.weights[:, None] * per_token).sum() / select.sum().clamp(min=1)
            self.policy.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
            self.policy.optimizer.step()
            self._n_updates += 1
            if self._n_updates % self.target_update_interval == 0:
                self.target.update(self.tau)
            with torch.no_grad():
                counts = select.sum(-1).clamp(min=1)
                residual = (single.abs() + multi.abs()).sum(-1) / counts  # (b,) per text
                if self.prioritized_replay:
                    self.replay_buffer.update_priorities(data.indices, residual.cpu().numpy())
                stats["loss"].append(float(loss))
                stats["single"].append(float((single**2).sum() / select.sum()))
                stats["multi"].append(float((multi**2).sum() / select.sum()))
                stats["value"].append(float(values[select].mean()))
                stats["log_ratio"].append(float(log_ratios[select].mean()))
            tokens += int(select.sum())
        seconds = time.perf_counter() - started
        self.last_update = {
            **{(f"{k}_loss" if k in ("single", "multi") else k): float(np.mean(v)) for k, v in stats.items()},
            "kl": self._batch_kl,
            "replayed_tokens": tokens,  # generated tokens of the replayed texts
            "tokens_per_s": tokens / seconds,
            "seconds": seconds,
        }
        for key, value in self.last_update.items():
            self.logger.record(f"train/{key}", value)
        self.logger.record("train/learning_rate", self.policy.optimizer.param_groups[0]["lr"])
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")

    def learn(
        self,
        total_timesteps: int,
        callback: Any = None,
        log_interval: int = 1,
        tb_log_name: str = "SoftQ",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SoftQ:
        """Train for ``total_timesteps`` generated tokens (env steps), a batch at a time."""
        return super().learn(
            total_timesteps, callback, log_interval, tb_log_name, reset_num_timesteps, progress_bar
        )
