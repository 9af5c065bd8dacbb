"""The environment catalogue: every ``register()`` call of textgym lives here.

``import textgym`` runs this module; ``gymnasium.make("textgym:<id>")`` imports it on the fly.
Registered kwargs are plain values; models and datasets load when an env is made.
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

from textgym.envs.base import TaskDefaults, TextGenEnv
from textgym.envs.concepts import ConceptsEnv
from textgym.envs.dialogue import DialogueEnv, DialogueV1Env
from textgym.envs.guess_number import GuessNumberEnv
from textgym.envs.multiturn import Conversation, FunctionPartner, HumanPartner, MultiTurnEnv, Partner
from textgym.envs.partners import LMPartner
from textgym.envs.reasoning import ReasoningEnv
from textgym.envs.sentiment import SentimentEnv
from textgym.envs.summarization import SummarizationEnv
from textgym.envs.target_chat import TargetChatEnv
from textgym.envs.translation import TranslationEnv

# id -> entry point; the catalogue ``textgym envs`` prints.
ENVS: dict[str, type[TextGenEnv]] = {
    "TextGen-Dialogue-v0": DialogueEnv,
    "TextGen-Dialogue-v1": DialogueV1Env,
    "TextGen-Summarization-v0": SummarizationEnv,
    "TextGen-Sentiment-v0": SentimentEnv,
    "TextGen-Translation-v0": TranslationEnv,
    "TextGen-Concepts-v0": ConceptsEnv,
    "TextGen-Reasoning-v0": ReasoningEnv,
    "TextGen-GuessNumber-v0": GuessNumberEnv,
    "TextGen-TargetChat-v0": TargetChatEnv,
}

for _env_id, _cls in ENVS.items():
    if _env_id not in registry:
        register(id=_env_id, entry_point=f"{_cls.__module__}:{_cls.__name__}")

__all__ = [
    "ENVS",
    "ConceptsEnv",
    "Conversation",
    "DialogueEnv",
    "DialogueV1Env",
    "FunctionPartner",
    "GuessNumberEnv",
    "HumanPartner",
    "LMPartner",
    "MultiTurnEnv",
    "Partner",
    "ReasoningEnv",
    "SentimentEnv",
    "SummarizationEnv",
    "TargetChatEnv",
    "TaskDefaults",
    "TextGenEnv",
    "TranslationEnv",
]
