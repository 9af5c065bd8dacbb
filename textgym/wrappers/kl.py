"""Reward shaping toward a reference LM, so that any SB3 algorithm can train KL-regularised."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from transformers import PreTrainedModel

from textgym.envs.base import TextGenEnv
from textgym.models import load_model
from textgym.models.incremental import IncrementalForward


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
        if isinstance(coef, bool) or not isinstance(coef, (int, float)) or coef < 0:
            raise ValueError(f"coef must be a number >= 0, got {coef!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        if not min_log_prob < 0:
            raise ValueError(f"min_log_prob must be < 0, got {min_log_prob!r}")
        self.coef = float(coef)
        self.temperature = float(temperature)
        self.min_log_prob = float(min_log_prob)
        if model is None or isinstance(model, str):
            model = load_model(base.model_name if model is None else model)
        elif not isinstance(model, PreTrainedModel):
            raise TypeError(
                f"model must be a name, a path or a transformers causal LM, got {type(model).__name__}"
            )
        self.reference = model.requires_grad_(False)
        width = self.reference.get_output_embeddings().out_features
        if width != base.action_space.n:
            raise ValueError(
                f"reference model {self.reference.name_or_path or type(model).__name__!r} has {width} "
                f"logits but the env has {base.action_space.n} actions"
            )
        self.invalid = torch.as_tensor(~base.action_masks())  # (V,)
        self.forward = IncrementalForward(self.reference.get_decoder(), int(base.tokenizer.pad_token_id))
        self._context: np.ndarray | None = None

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        observation, info = self.env.reset(**kwargs)
        self._context = self._tokens(observation)
        return observation, info

    @staticmethod
    def _tokens(observation: dict[str, np.ndarray]) -> np.ndarray:
        return observation["input_ids"][observation["attention_mask"].astype(bool)]

    @torch.no_grad()
    def reference_log_prob(self, action: int) -> float:
        """log p_ref(action | current context), floored at ``min_log_prob``."""
        hidden = self.forward([self._context])  # (1, H)
        logits = self.reference.get_output_embeddings()(hidden)[0].float()  # (V,)
        logits = logits.masked_fill(self.invalid, float("-inf")) / self.temperature
        return max(float(torch.log_softmax(logits, -1)[int(action)]), self.min_log_prob)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if self._context is None:
            raise RuntimeError("step() called before reset(): call env.reset() first")
        observation, reward, terminated, truncated, info = self.env.step(action)  # validates action
        log_prob = self.reference_log_prob(action)
        self._context = self._tokens(observation)
        info = {**info, "reference_log_prob": log_prob, "task_reward": float(reward)}
        return observation, float(reward) + self.coef * log_prob, terminated, truncated, info
