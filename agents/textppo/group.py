"""Group baselines and REINFORCE: :class:`GRPO`, :class:`RLOO` and :class:`REINFORCE` are
TextPPO with other defaults, sharing its rollout, buffer, one-pass update, KL options,
``save``/``load`` and command line. Each ``__init__`` lists every argument so that its defaults
show (the registry and ``textgym train --help`` read them); the ``:param`` entries are the ones
whose default differs from TextPPO's, every other argument is :class:`TextPPO`'s."""

from __future__ import annotations

from typing import Any

import torch
from stable_baselines3.common.type_aliases import GymEnv, Schedule

from textgym.agents.common.policies import LMActorCriticPolicy
from textgym.agents.textppo.textppo import TextPPO


class GRPO(TextPPO):
    """Group Relative Policy Optimization (Shao et al. 2024, DeepSeekMath) on TextPPO's machinery:
    ``group_size`` texts per prompt; each text's advantage, on every one of its tokens, is its reward
    sum (the task reward minus the KL penalties) minus its group's mean, divided by the group's std;
    no critic; PPO's clipped loss.

    :param policy: ``"LMPolicy"`` or :class:`LMActorCriticPolicy` (or a subclass).
    :param env: a textgym env (id string, env or VecEnv).
    :param group_size: ``4``: texts per prompt (k); a batch draws ``batch_episodes / k`` prompts.
    :param group_baseline: ``"mean"``: each text's reward sum minus its group's mean.
    :param scale_group_std: ``True``: and divided by the group's std.
    :param use_critic: ``False``: no value head, no value loss.
    :param normalize_advantage: ``False``: the group baseline already centres the advantages.

    Every other argument is :class:`TextPPO`'s, with its default.
    """

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
        normalize_advantage: bool = False,
        group_size: int = 4,
        group_baseline: str | None = "mean",
        scale_group_std: bool = True,
        use_critic: bool = False,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: torch.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            batch_episodes=batch_episodes,
            minibatch_episodes=minibatch_episodes,
            n_epochs=n_epochs,
            gamma=gamma,
            gae_lambda=gae_lambda,
            clip_range=clip_range,
            clip_range_vf=clip_range_vf,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            kl_coef=kl_coef,
            adaptive_kl_target=adaptive_kl_target,
            adaptive_kl_horizon=adaptive_kl_horizon,
            kl_estimator=kl_estimator,
            reward_normalization=reward_normalization,
            normalize_advantage=normalize_advantage,
            group_size=group_size,
            group_baseline=group_baseline,
            scale_group_std=scale_group_std,
            use_critic=use_critic,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=_init_setup_model,
        )


class RLOO(TextPPO):
    """REINFORCE Leave-One-Out (Kool et al. 2019; Ahmadian et al. 2024) on TextPPO's machinery:
    ``group_size`` texts per prompt; each text's advantage is its reward sum minus the mean of the
    other texts of its group; no critic.

    :param policy: ``"LMPolicy"`` or :class:`LMActorCriticPolicy` (or a subclass).
    :param env: a textgym env (id string, env or VecEnv).
    :param group_size: ``4``: texts per prompt (k); a batch draws ``batch_episodes / k`` prompts.
    :param group_baseline: ``"leave_one_out"``: reward sum minus the mean of the group's other texts.
    :param use_critic: ``False``: no value head, no value loss.
    :param normalize_advantage: ``False``: the group baseline already centres the advantages.

    Every other argument is :class:`TextPPO`'s, with its default.
    """

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
        normalize_advantage: bool = False,
        group_size: int = 4,
        group_baseline: str | None = "leave_one_out",
        scale_group_std: bool = False,
        use_critic: bool = False,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: torch.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            batch_episodes=batch_episodes,
            minibatch_episodes=minibatch_episodes,
            n_epochs=n_epochs,
            gamma=gamma,
            gae_lambda=gae_lambda,
            clip_range=clip_range,
            clip_range_vf=clip_range_vf,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            kl_coef=kl_coef,
            adaptive_kl_target=adaptive_kl_target,
            adaptive_kl_horizon=adaptive_kl_horizon,
            kl_estimator=kl_estimator,
            reward_normalization=reward_normalization,
            normalize_advantage=normalize_advantage,
            group_size=group_size,
            group_baseline=group_baseline,
            scale_group_std=scale_group_std,
            use_critic=use_critic,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=_init_setup_model,
        )


class REINFORCE(TextPPO):
    """REINFORCE with a learned baseline (Williams 1992) on TextPPO's machinery: the plain
    policy-gradient loss ``-A * ratio`` (no clipping), Monte Carlo returns to go minus the value
    head's estimate, one pass over each batch.

    :param policy: ``"LMPolicy"`` or :class:`LMActorCriticPolicy` (or a subclass).
    :param env: a textgym env (id string, env or VecEnv).
    :param clip_range: ``None``: no clipping: the policy-gradient loss, on-policy in one epoch.
    :param clip_range_vf: ``None``: the value is not clipped.
    :param gae_lambda: ``1.0``: Monte Carlo returns (minus the value head's baseline).
    :param n_epochs: ``1``: one pass over each batch (on-policy).

    Every other argument is :class:`TextPPO`'s, with its default.
    """

    def __init__(
        self,
        policy: str | type[LMActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 1e-5,
        batch_episodes: int = 64,
        minibatch_episodes: int = 8,
        n_epochs: int = 1,
        gamma: float = 1.0,
        gae_lambda: float = 1.0,
        clip_range: float | Schedule | None = None,
        clip_range_vf: float | None = None,
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
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            batch_episodes=batch_episodes,
            minibatch_episodes=minibatch_episodes,
            n_epochs=n_epochs,
            gamma=gamma,
            gae_lambda=gae_lambda,
            clip_range=clip_range,
            clip_range_vf=clip_range_vf,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            kl_coef=kl_coef,
            adaptive_kl_target=adaptive_kl_target,
            adaptive_kl_horizon=adaptive_kl_horizon,
            kl_estimator=kl_estimator,
            reward_normalization=reward_normalization,
            normalize_advantage=normalize_advantage,
            group_size=group_size,
            group_baseline=group_baseline,
            scale_group_std=scale_group_std,
            use_critic=use_critic,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=_init_setup_model,
        )
