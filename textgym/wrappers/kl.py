"""Reward shaping toward a reference LM, so that any SB3 algorithm can train KL-regularised.

:class:`KLRewardWrapper` wraps one env; :class:`VecKLRewardWrapper` wraps an SB3 VecEnv of
textgym envs and scores every env's action with one batched reference step (one read of the
reference's weights per vectorised step instead of one per env).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from transformers import PreTrainedModel

from textgym.envs.base import TextGenEnv
from textgym.models import load_model
from textgym.models.incremental import IncrementalForward, observation_rows, observation_tokens
from textgym.models.packed import PackedLinears


class ReferenceScorer:
    """``log p_ref(action | context)`` for a batch of token contexts that grow one token per call
    (the KV cache is reused; rows that start over are recomputed and merged).

    With ``pack``, a reference loaded here by name runs its linear layers on packed weights (it
    is frozen, so they are packed once, a second copy of its weights); a model passed in is
    used as it is.
    """

    def __init__(
        self,
        model: str | PreTrainedModel,
        n_actions: int,
        invalid: np.ndarray,
        pad_id: int,
        temperature: float,
        min_log_prob: float,
        pack: bool = False,
    ):
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        if not min_log_prob < 0:
            raise ValueError(f"min_log_prob must be < 0, got {min_log_prob!r}")
        self.temperature = float(temperature)
        self.min_log_prob = float(min_log_prob)
        self.packed = PackedLinears(enabled=pack and isinstance(model, str))
        if isinstance(model, str):
            model = load_model(model)
        elif not isinstance(model, PreTrainedModel):
            raise TypeError(
                f"model must be a name, a path or a transformers causal LM, got {type(model).__name__}"
            )
        self.model = model.requires_grad_(False)
        width = self.model.get_output_embeddings().out_features
        if width != n_actions:
            raise ValueError(
                f"reference model {self.model.name_or_path or type(model).__name__!r} has {width} "
                f"logits but the env has {n_actions} actions"
            )
        self.packed.attach(self.model)
        self.invalid = torch.as_tensor(invalid)  # (V,)
        self.forward = IncrementalForward(self.model.get_decoder(), pad_id)

    @torch.no_grad()
    def log_probs(self, contexts: list[np.ndarray], actions: np.ndarray) -> np.ndarray:
        """(N,) float64 ``log p_ref(actions[i] | contexts[i])``, each floored at ``min_log_prob``."""
        with self.packed:
            hidden = self.forward(contexts)  # (N, H)
            logits = self.model.get_output_embeddings()(hidden).float()  # (N, V)
        logits = logits.masked_fill(self.invalid, float("-inf")) / self.temperature
        chosen = torch.as_tensor(np.asarray(actions, dtype=np.int64).reshape(-1, 1))
        log_probs = torch.log_softmax(logits, -1).gather(-1, chosen).squeeze(-1)
        return np.maximum(log_probs.double().numpy(), self.min_log_prob)


def _check_coef(coef: float) -> float:
    if isinstance(coef, bool) or not isinstance(coef, (int, float)) or coef < 0:
        raise ValueError(f"coef must be a number >= 0, got {coef!r}")
    return float(coef)


class KLRewardWrapper(gym.Wrapper):
    """Adds ``coef * log p_ref(a_t | s_t)`` to every step's reward.

    ``p_ref`` is a frozen reference LM (by default the env's own model, i.e. the policy's
    initial weights). Because ``E_pi[log p_ref] = -KL(pi || p_ref) - H(pi)``, training on this
    reward with an entropy bonus of the same coefficient (``ent_coef=coef`` in SB3's PPO or A2C)
    optimises ``task reward - coef * KL(pi || p_ref)`` per token, the RLHF objective.

    Arguments:
        env: a textgym env (possibly wrapped).
        coef: weight of the reference log-prob term (>= 0).
        model: reference model name or path (default: the env's model), or a loaded causal LM
            (several wrapped envs can share one; it is frozen, never trained).
        temperature: the reference's temperature (match the policy's).
        min_log_prob: floor on the term, so that one very unlikely token cannot dominate a return.

    Each step's ``info`` gains ``reference_log_prob`` and ``task_reward`` (the unshaped reward).
    For a vectorised env, :class:`VecKLRewardWrapper` does the same with one batched reference
    step for all envs.
    """

    def __init__(
        self,
        env: gym.Env,
        coef: float = 0.05,
        model: str | PreTrainedModel | None = None,
        temperature: float = 1.0,
        min_log_prob: float = -20.0,
    ):
        super().__init__(env)
        base = env.unwrapped
        if not isinstance(base, TextGenEnv):
            raise TypeError(f"KLRewardWrapper needs a textgym env, got {type(base).__name__}")
        self.coef = _check_coef(coef)
        self.scorer = ReferenceScorer(
            base.model_name if model is None else model,
            int(base.action_space.n),
            ~base.action_masks(),
            int(base.tokenizer.pad_token_id),
            temperature,
            min_log_prob,
        )
        self._context: np.ndarray | None = None

    @property
    def reference(self) -> PreTrainedModel:
        return self.scorer.model

    @property
    def forward(self) -> IncrementalForward:
        return self.scorer.forward

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        observation, info = self.env.reset(**kwargs)
        self._context = observation_tokens(observation)
        return observation, info

    def reference_log_prob(self, action: int) -> float:
        """log p_ref(action | current context), floored at ``min_log_prob``."""
        return float(self.scorer.log_probs([self._context], np.array([int(action)]))[0])

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if self._context is None:
            raise RuntimeError("step() called before reset(): call env.reset() first")
        observation, reward, terminated, truncated, info = self.env.step(action)  # validates action
        log_prob = self.reference_log_prob(action)
        self._context = observation_tokens(observation)
        info = {**info, "reference_log_prob": log_prob, "task_reward": float(reward)}
        return observation, float(reward) + self.coef * log_prob, terminated, truncated, info


class VecKLRewardWrapper(VecEnvWrapper):
    """:class:`KLRewardWrapper` for an SB3 VecEnv of textgym envs (same arguments and ``info``).

    All envs' actions are scored in one batched reference step, with the KV cache kept across
    steps and the rows of envs that started a new episode recomputed and merged, so a step
    reads the reference's weights once rather than once per env. The envs must share one model
    (the reference's logits are their action space).
    """

    def __init__(
        self,
        venv: VecEnv,
        coef: float = 0.05,
        model: str | PreTrainedModel | None = None,
        temperature: float = 1.0,
        min_log_prob: float = -20.0,
    ):
        if not isinstance(venv, VecEnv):
            raise TypeError(f"VecKLRewardWrapper needs an SB3 VecEnv, got {type(venv).__name__}")
        names = venv.get_attr("model_name") if venv.has_attr("model_name") else []
        if len(names) != venv.num_envs or len(set(names)) != 1:
            raise TypeError("VecKLRewardWrapper needs a VecEnv of textgym envs that share one model")
        super().__init__(venv)
        self.coef = _check_coef(coef)
        [masks] = venv.env_method("action_masks", indices=[0])
        [tokenizer] = venv.get_attr("tokenizer", indices=[0])
        self.scorer = ReferenceScorer(
            names[0] if model is None else model,
            int(venv.action_space.n),
            ~masks,
            int(tokenizer.pad_token_id),
            temperature,
            min_log_prob,
            pack=True,  # one reference for all envs: its packed copy is paid once
        )
        self._contexts: list[np.ndarray] | None = None
        self._actions: np.ndarray | None = None

    def reset(self) -> Any:
        observations = self.venv.reset()
        self._contexts = observation_rows(observations)
        return observations

    def step_async(self, actions: np.ndarray) -> None:
        if self._contexts is None:
            raise RuntimeError("step() called before reset(): call env.reset() first")
        self._actions = np.asarray(actions).reshape(-1)
        self.venv.step_async(actions)

    def step_wait(self) -> Any:
        observations, rewards, dones, infos = self.venv.step_wait()  # the envs validate the actions
        log_probs = self.scorer.log_probs(self._contexts, self._actions)  # (N,)
        self._contexts = observation_rows(observations)  # a finished env's row is its new prompt
        for info, reward, log_prob in zip(infos, rewards, log_probs):
            info["reference_log_prob"] = float(log_prob)
            info["task_reward"] = float(reward)
        shaped = (rewards + self.coef * log_probs).astype(rewards.dtype)
        return observations, shaped, dones, infos
