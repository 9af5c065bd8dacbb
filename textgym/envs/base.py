"""The token-level text generation MDP shared by every textgym task."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from textgym.datasets import Example, dataset_options, example_columns, load_dataset
from textgym.datasets.base import check_options
from textgym.models import (
    DEFAULT_MODEL,
    check_model_name,
    context_length,
    eos_token_ids,
    load_tokenizer,
    logits_width,
)
from textgym.rewards import RewardFunction, make_reward, reward_name, score

# Added to the task reward when the agent emits a token id past the tokenizer's vocabulary
# (a logits row that decodes to nothing); the episode then terminates.
INVALID_TOKEN_REWARD = -1.0


class UnsupportedRenderMode(ValueError, TypeError):
    """A render mode the env does not have. Also a TypeError because SB3's ``make_vec_env``
    asks for ``render_mode="rgb_array"`` and retries without it on a TypeError."""


@dataclass(frozen=True)
class TaskDefaults:
    """What a task fixes unless the user overrides it through ``gymnasium.make`` kwargs."""

    description: str
    dataset: str
    reward: str | None  # None: the task scores its episodes itself (textgym.envs.multiturn)
    max_prompt_tokens: int
    max_new_tokens: int
    chat_template: bool
    system_prompt: str | None = None
    dataset_kwargs: dict[str, Any] = field(default_factory=dict)
    metrics: tuple[str, ...] = ()  # the task's standard metrics (textgym.rewards.metrics)
    max_turns: int = 1  # agent turns per episode (multi-turn tasks: textgym.envs.multiturn)
    max_partner_tokens: int = 32  # tokens one partner message adds to the observation (multi-turn)

    @property
    def reward_label(self) -> str:
        """The reward's name for catalogues (``textgym envs``, the docs)."""
        return self.reward if self.reward is not None else "the game's own, per turn"

    @property
    def tokens_label(self) -> str:
        """``prompt / new`` token budgets (``96 / 6 x 16``: six turns of 16 new tokens each)."""
        turns = f"{self.max_turns} x " if self.max_turns > 1 else ""
        return f"{self.max_prompt_tokens} / {turns}{self.max_new_tokens}"


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


class TextGenEnv(gym.Env[dict[str, np.ndarray], int]):
    """Generate a text one token at a time; the finished text earns the task reward.

    Subclasses set :attr:`defaults` (the task) and document themselves; the constructor
    arguments below apply to every task, and ``None`` means "the task's default".

    Arguments:
        model: model name or path whose tokenizer encodes prompts and whose logits width is
            the action space size (``smollm2-135m-instruct``, ``tiny``, a path or a hub id).
        split: ``train``, ``validation`` or ``test``.
        dataset: a registered dataset name, a ``.jsonl``/``.csv`` path, or ``hf:<path>``.
        dataset_kwargs: options for the dataset loader (e.g. ``context_turns``).
        reward: a registered reward name or a callable ``(prompts, completions, references)``.
        max_prompt_tokens: longer prompts lose their oldest tokens (``info["prompt_truncated"]``).
        max_new_tokens: the generation budget; reaching it truncates the episode.
        chat_template: format conversational prompts with the tokenizer's chat template.
        system_prompt: system message for the chat template (``""``: the template's default).
        render_mode: ``"ansi"`` or ``None``.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}
    defaults: TaskDefaults

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        split: str = "train",
        dataset: str | None = None,
        dataset_kwargs: dict[str, Any] | None = None,
        reward: str | RewardFunction | None = None,
        max_prompt_tokens: int | None = None,
        max_new_tokens: int | None = None,
        chat_template: bool | None = None,
        system_prompt: str | None = None,
        render_mode: str | None = None,
        **unknown: Any,
    ):
        if unknown:
            raise TypeError(
                f"{type(self).__name__} got unknown argument(s) {sorted(unknown)}; "
                f"accepted: {self.accepted_arguments()}"
            )
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise UnsupportedRenderMode(
                f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}"
            )
        task = self.defaults
        model = check_model_name(model)
        self.render_mode = render_mode
        self.model_name = model
        self.split = split
        self.max_prompt_tokens = _positive_int(
            "max_prompt_tokens", task.max_prompt_tokens if max_prompt_tokens is None else max_prompt_tokens
        )
        self.max_new_tokens = _positive_int(
            "max_new_tokens", task.max_new_tokens if max_new_tokens is None else max_new_tokens
        )
        if system_prompt is not None and not isinstance(system_prompt, str):
            raise TypeError(f"system_prompt must be a string or None, got {type(system_prompt).__name__}")
        if chat_template is not None and not isinstance(chat_template, bool):
            raise TypeError(f"chat_template must be True, False or None, got {chat_template!r}")
        self.system_prompt = task.system_prompt if system_prompt is None else system_prompt

        self.dataset_name = dataset or task.dataset
        options = dict(task.dataset_kwargs) if dataset is None else {}
        if dataset_kwargs is not None:
            options.update(self._check_dataset_kwargs(self.dataset_name, dataset_kwargs))
        self.examples: tuple[Example, ...] = load_dataset(self.dataset_name, split, **options)
        # None for a task that scores its own episodes (a multi-turn game).
        chosen = task.reward if reward is None else reward
        self.reward_fn: RewardFunction | None = None if chosen is None else make_reward(chosen)

        self.tokenizer = load_tokenizer(model)
        self.max_length = self.observation_length()  # L
        positions = context_length(model)
        if positions is not None and self.max_length > positions:
            raise ValueError(
                f"{self.length_formula()} exceeds the {positions} positions model {model!r} attends to: "
                "lower max_new_tokens or max_prompt_tokens"
            )
        self.vocab_size = logits_width(model)  # V; may exceed len(tokenizer)
        if self.vocab_size < len(self.tokenizer):
            raise ValueError(
                f"model {model!r} has {self.vocab_size} logits for {len(self.tokenizer)} tokenizer entries: "
                "its tokenizer does not belong to it"
            )
        self.eos_token_ids = frozenset(eos_token_ids(model))
        want_chat = task.chat_template if chat_template is None else chat_template
        # Falls back to the plain-text prompt for tokenizers without a chat template.
        self.uses_chat_template = want_chat and self.tokenizer.chat_template is not None

        self.action_space = spaces.Discrete(self.vocab_size)
        self.observation_space = spaces.Dict(
            {
                "input_ids": spaces.Box(0, self.vocab_size - 1, (self.max_length,), np.int64),
                "attention_mask": spaces.Box(0, 1, (self.max_length,), np.int8),
            }
        )
        self._valid_actions = np.arange(self.vocab_size) < len(self.tokenizer)  # (V,)
        self._example: Example | None = None
        self._prompt_ids: list[int] = []
        self._generated: list[int] = []
        self._done = False

    def observation_length(self) -> int:
        """L, the length of every observation: the prompt's budget plus the generation budget."""
        return self.max_prompt_tokens + self.max_new_tokens

    def length_formula(self) -> str:
        """How :meth:`observation_length` is made, for errors."""
        return f"max_prompt_tokens + max_new_tokens = {self.max_prompt_tokens} + {self.max_new_tokens}"

    @staticmethod
    def _check_dataset_kwargs(dataset: str, dataset_kwargs: Any) -> Mapping[str, Any]:
        """``dataset_kwargs`` if it is a dict of options ``dataset`` takes, else one error naming it."""
        accepted = dataset_options(dataset)
        return check_options("dataset_kwargs", f"dataset {dataset!r}", dataset_kwargs, accepted)

    @classmethod
    def accepted_arguments(cls) -> list[str]:
        """Constructor keyword arguments of this task, its own first."""
        names: list[str] = []
        for klass in (cls, TextGenEnv):
            for param in inspect.signature(klass.__init__).parameters.values():
                named = param.kind in (param.KEYWORD_ONLY, param.POSITIONAL_OR_KEYWORD)
                if named and param.name != "self" and param.name not in names:
                    names.append(param.name)
        return names

    # -- prompts ----------------------------------------------------------------------------

    def encode_prompt(self, example: Example) -> tuple[list[int], int]:
        """Prompt token ids (left-truncated to ``max_prompt_tokens``) and how many were dropped."""
        if self.uses_chat_template and example.turns is not None:
            system = self.system_message(example)
            messages = [{"role": "system", "content": system}] if system else []
            messages += [{"role": role, "content": text} for role, text in example.turns]
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            ids = self.tokenizer(example.prompt)["input_ids"]
        dropped = max(0, len(ids) - self.max_prompt_tokens)
        return list(ids[dropped:]), dropped

    def system_message(self, example: Example) -> str | None:
        """The system prompt of ``example``'s chat: the env's, the same for every example."""
        return self.system_prompt

    def _observation(self) -> dict[str, np.ndarray]:
        tokens = self._prompt_ids + self._generated
        input_ids = np.full(self.max_length, self.tokenizer.pad_token_id, dtype=np.int64)
        attention_mask = np.zeros(self.max_length, dtype=np.int8)
        input_ids[self.max_length - len(tokens) :] = tokens
        attention_mask[self.max_length - len(tokens) :] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    # -- gymnasium API ----------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Draw an example (or take ``options={"index": i}``) and return its prompt."""
        super().reset(seed=seed)
        if options is not None and not isinstance(options, Mapping):
            raise TypeError(
                "options must be a dict such as {'index': 3} or None, "
                f"got {type(options).__name__} {options!r}"
            )
        options = dict(options or {})
        index = options.pop("index", None)
        if options:
            raise ValueError(f"unknown reset option(s) {sorted(options)}; accepted: ['index']")
        if index is None:
            index = int(self.np_random.integers(len(self.examples)))
        elif (
            isinstance(index, bool)
            or not isinstance(index, (int, np.integer))
            or not 0 <= index < len(self.examples)
        ):
            raise ValueError(f"options['index'] must be an int in [0, {len(self.examples)}), got {index!r}")
        self._example = self.examples[int(index)]
        self._prompt_ids, dropped = self.encode_prompt(self._example)
        self._generated = []
        self._done = False
        info = {
            "example_id": self._example.id,
            "example_index": int(index),
            "prompt_tokens": len(self._prompt_ids),
            "prompt_truncated": dropped > 0,
            "prompt_tokens_dropped": dropped,
        }
        return self._observation(), info

    def _check_action(self, action: Any) -> int:
        if isinstance(action, np.ndarray):
            if action.shape != ():
                raise ValueError(f"action must be a single token id, got an array of shape {action.shape}")
            action = action[()]
        if isinstance(action, (bool, np.bool_)) or not isinstance(action, (int, np.integer)):
            raise TypeError(f"action must be an integer token id, got {type(action).__name__} {action!r}")
        if not 0 <= action < self.vocab_size:
            raise ValueError(
                f"action {int(action)} is outside the action space: token ids are in [0, {self.vocab_size})"
            )
        return int(action)

    def _append(self, action: Any) -> int:
        """The checked token id of ``action``, appended to the episode's tokens; one error for a
        step before ``reset()`` or after the episode ended."""
        if self._example is None:
            raise RuntimeError("step() called before reset(): call env.reset() first")
        if self._done:
            raise RuntimeError(
                "step() called after the episode ended (terminated or truncated): call env.reset()"
            )
        token = self._check_action(action)
        self._generated.append(token)
        return token

    def step(self, action: int) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Append the token; EOS (or an invalid id) terminates, the budget truncates."""
        token = self._append(action)
        invalid = not self._valid_actions[token]
        terminated = invalid or token in self.eos_token_ids
        truncated = not terminated and len(self._generated) >= self.max_new_tokens
        info: dict[str, Any] = {"tokens_generated": len(self._generated)}
        reward = 0.0
        if terminated or truncated:
            self._done = True
            reward = self._finish(info, invalid)
        return self._observation(), reward, terminated, truncated, info

    def _finish(self, info: dict[str, Any], invalid: bool) -> float:
        """Score the finished text and fill ``info``; returns the reward."""
        rewards, (final,) = self.score_episodes([self._example], [self._generated])
        info.update(final)
        return float(rewards[0])

    def score_episodes(
        self, examples: Sequence[Example], generated: Sequence[Sequence[int]]
    ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Score finished episodes in one batched reward call (the batched form of the last step).

        ``generated[i]`` is the token ids an episode on ``examples[i]`` emitted, ending with its
        EOS or invalid id if it had one. Returns the (B,) float32 rewards and, per episode, the
        ``info`` entries of its final step. Batch samplers such as ``agents.TextPPO`` use this.
        """
        if len(examples) != len(generated):
            raise ValueError(f"got {len(examples)} examples for {len(generated)} generated sequences")
        texts, invalid = [], []
        for tokens in generated:
            if not len(tokens):
                raise ValueError("every episode emits at least one token")
            bad = not self._valid_actions[tokens[-1]]
            ended = bad or tokens[-1] in self.eos_token_ids
            texts.append(self.completion_text(list(tokens[:-1] if ended else tokens)))
            invalid.append(bad)
        prompts = [example.prompt for example in examples]
        references = [example.references for example in examples]
        total, components = score(self.reward_fn, prompts, texts, references, example_columns(examples))
        rewards = total.astype(np.float32) + np.where(invalid, np.float32(INVALID_TOKEN_REWARD), 0)
        name = reward_name(self.reward_fn)
        infos = []
        for i, example in enumerate(examples):
            parts = {key: float(value[i]) for key, value in components.items()}
            if invalid[i]:
                parts["invalid_token"] = INVALID_TOKEN_REWARD
            infos.append(
                {
                    "text": texts[i],
                    "prompt": example.prompt,
                    "references": list(example.references),
                    "reward_components": parts,
                    "reward_name": name,
                    "example_id": example.id,
                    "invalid_token": invalid[i],
                }
            )
        return rewards.astype(np.float32), infos

    def completion_text(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)

    def action_masks(self) -> np.ndarray:
        """(V,) bool: True for token ids the tokenizer can decode (sb3-contrib MaskablePPO)."""
        return self._valid_actions.copy()

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        if self._example is None:
            return "(no episode: call reset())"
        prompt = self.tokenizer.decode(self._prompt_ids)
        header = f"--- generated ({len(self._generated)}/{self.max_new_tokens} tokens) ---"
        return f"{prompt}\n{header}\n{self.tokenizer.decode(self._generated)}"
