"""A vector env whose multi-turn envs' partners reply in one batch per step."""

from __future__ import annotations

from typing import Any

import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecEnvWrapper

from textgym.envs.multiturn import MultiTurnEnv, check_replies


class VecPartnerBatcher(VecEnvWrapper):
    """Asks the partners of an SB3 ``DummyVecEnv``'s multi-turn envs for their replies together.

    Before the envs step, every env whose action ends its agent's turn hands over the
    conversation its partner must answer (:meth:`~textgym.envs.multiturn.MultiTurnEnv.reply_request`);
    the envs that share one partner object (TargetChat's language-model partner is one per
    process) are answered in one ``reply`` call, a single batched ``generate``; each env then
    steps as usual with its reply supplied. Observations, rewards and ``info`` are what the
    unbatched envs give, up to the numerics of batching. Envs that are not multi-turn pass through.
    """

    def __init__(self, venv: VecEnv):
        if not isinstance(venv, VecEnv):
            raise TypeError(f"VecPartnerBatcher needs an SB3 VecEnv, got {type(venv).__name__}")
        base = venv.unwrapped
        if not isinstance(base, DummyVecEnv):
            raise TypeError(
                f"VecPartnerBatcher needs a DummyVecEnv (its envs live in this process), got "
                f"{type(base).__name__}: a SubprocVecEnv's envs each ask their own partner"
            )
        super().__init__(venv)
        self.cores = [env.unwrapped for env in base.envs]
        self.batches, self.replies = 0, 0  # partner calls made for the envs, and replies they gave

    def reset(self) -> Any:
        return self.venv.reset()

    def step_async(self, actions: np.ndarray) -> None:
        groups: dict[int, tuple[Any, list[MultiTurnEnv], list[Any]]] = {}
        for core, action in zip(self.cores, np.asarray(actions).reshape(-1)):
            if isinstance(core, MultiTurnEnv):
                request = core.reply_request(action)
                if request is not None:
                    partner, envs, requests = groups.setdefault(id(core.partner), (core.partner, [], []))
                    envs.append(core)
                    requests.append(request)
        for partner, envs, requests in groups.values():
            replies = check_replies(partner, partner.reply(requests), len(requests))
            for core, reply in zip(envs, replies):
                core.supply_reply(reply)
            self.batches += 1
            self.replies += len(replies)
        self.venv.step_async(actions)

    def step_wait(self) -> Any:
        return self.venv.step_wait()
