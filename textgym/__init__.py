"""textgym: token-level text generation as Gymnasium environments.

``import textgym`` registers the environments (see :mod:`textgym.envs`)::

    import gymnasium as gym
    env = gym.make("textgym:TextGen-Dialogue-v0", model="smollm2-135m-instruct")
"""

from __future__ import annotations

from textgym import envs
from textgym.envs import ENVS, TextGenEnv

__version__ = "0.1.0"

__all__ = ["ENVS", "TextGenEnv", "__version__", "envs"]
