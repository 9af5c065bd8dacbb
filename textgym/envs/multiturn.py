"""Multi-turn episodes at the token level: a partner speaks between the agent's turns.

A :class:`MultiTurnEnv` is the same MDP as :class:`~textgym.envs.base.TextGenEnv` (``Discrete(V)``
actions, the same observation ``Dict``) whose episodes span several agent turns. When the agent
ends a turn (its end-of-turn token, or the turn's token budget), the env asks its
:class:`Partner` for a reply, pays the finished turn's reward on that step, and appends the
reply's tokens, formatted with the chat template, to the observation. The episode never leaves
token space: the history is never re-tokenized, so every observation is a prefix of the next one
and the partner's tokens are observations, never actions.

:meth:`MultiTurnEnv.end_turns` is the batched form of a turn's end: batch samplers call it with
the turns a batch of conversations just finished, as ``step`` does with one. A vector env of
separate envs batches its partners' replies through :meth:`MultiTurnEnv.reply_request` and
:meth:`MultiTurnEnv.supply_reply` (see :class:`textgym.wrappers.VecPartnerBatcher`).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from textgym.datasets import Example
from textgym.envs.base import INVALID_TOKEN_REWARD, TextGenEnv, _positive_int

# Marks where the partner's words go when the chat template is rendered once to find the
# tokens around a partner message (a private-use character no tokenizer merges with its neighbours).
_SLOT = "\ue000"


@dataclass
class Conversation:
    """One multi-turn episode as the partner and the task's reward see it.

    ``messages`` are ``(role, text)`` pairs, the prompt's turns first (``"user"`` for the partner,
    ``"assistant"`` for the agent); ``turn`` counts the agent's finished turns; ``state`` is the
    task's and the partner's own memory (a secret number, a target word)."""

    example: Example
    messages: list[tuple[str, str]]
    turn: int = 0
    state: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TurnResult:
    """What ending one agent turn did: its text, the partner's reply, the turn's reward and its
    parts, whether the task ended (``done``) or the episode has no further turn (``last``), and
    the token ids the observation grows by before the agent's next turn (empty when ``last``)."""

    text: str
    reply: str
    reward: float
    components: dict[str, float]
    done: bool
    last: bool
    appended: tuple[int, ...]


class Partner(abc.ABC):
    """The other side of a multi-turn episode: scripted, a language model, or a person.

    Subclass it and implement :meth:`reply`; :meth:`start` is optional. The env calls ``reply``
    with a batch of conversations whose last message is the agent's turn (a vector env or a batch
    sampler asks for several replies at once, so a model can answer them in one batch).
    """

    def start(self, conversation: Conversation) -> None:  # noqa: B027 (optional, not abstract)
        """A new conversation begins (``conversation.state`` is empty); the default does nothing."""

    @abc.abstractmethod
    def reply(self, conversations: Sequence[Conversation]) -> list[str]:
        """One reply per conversation, to the agent's turn that ends its ``messages``."""


class FunctionPartner(Partner):
    """A partner made of a function ``(conversation) -> reply``, one conversation at a time."""

    def __init__(self, respond: Callable[[Conversation], str]):
        if not callable(respond):
            raise TypeError(f"FunctionPartner takes a function (conversation) -> str, got {respond!r}")
        self.respond = respond

    def reply(self, conversations: Sequence[Conversation]) -> list[str]:
        return [self.respond(conversation) for conversation in conversations]


class HumanPartner(Partner):
    """A person at a prompt: prints the agent's turn and reads the reply (``ask``: ``input`` by
    default; any function from a prompt string to the typed reply)."""

    def __init__(self, ask: Callable[[str], str] = input):
        self.ask = ask

    def reply(self, conversations: Sequence[Conversation]) -> list[str]:
        return [self.ask(f"agent: {c.messages[-1][1]}\nyou: ") for c in conversations]


def check_replies(partner: Partner, replies: Any, n: int) -> list[str]:
    """``replies`` if it is what ``partner.reply`` must return for ``n`` conversations (a list of
    ``n`` strings); otherwise one TypeError that says what came back."""
    name = type(partner).__name__
    if not isinstance(replies, (list, tuple)) or len(replies) != n:
        raise TypeError(
            f"{name}.reply must return a list of one string per conversation ({n}), got {replies!r}"
        )
    for reply in replies:
        if not isinstance(reply, str):
            raise TypeError(f"{name}.reply returned a {type(reply).__name__}, not a str")
    return list(replies)


class MultiTurnEnv(TextGenEnv):
    """Episodes of up to ``max_turns`` agent turns with a partner's reply between them.

    Subclasses set :attr:`defaults` (``max_turns`` and ``max_partner_tokens`` among them) and
    implement :meth:`score_turns` (the reward of finished turns), :meth:`default_partner` and
    :meth:`episode_metrics`. The arguments below come besides
    :class:`~textgym.envs.base.TextGenEnv`'s.

    Arguments:
        max_turns: the agent's turns per episode (the task may end it sooner).
        partner: a :class:`Partner` (``None``: the task's own).
        max_partner_tokens: the most tokens one partner message adds to the observation, its
            chat-template tokens included (longer replies lose their last words).

    ``max_new_tokens`` applies to each turn; the observation covers the whole episode:
    ``L = max_prompt_tokens + max_turns * max_new_tokens + (max_turns - 1) * max_partner_tokens``.
    """

    def __init__(
        self,
        max_turns: int | None = None,
        partner: Partner | None = None,
        max_partner_tokens: int | None = None,
        **kwargs: Any,
    ):
        task = self.defaults
        if task.reward is None and kwargs.get("reward") is not None:
            raise TypeError(
                f"{type(self).__name__} scores its own turns (score_turns): reward= is not accepted"
            )
        self.max_turns = _positive_int("max_turns", task.max_turns if max_turns is None else max_turns)
        self.max_partner_tokens = _positive_int(
            "max_partner_tokens",
            task.max_partner_tokens if max_partner_tokens is None else max_partner_tokens,
        )
        if partner is not None and not isinstance(partner, Partner):
            raise TypeError(
                "partner must be a textgym.envs.multiturn.Partner (subclass it, or wrap a function in "
                f"FunctionPartner) or None for the task's own, got {type(partner).__name__}"
            )
        super().__init__(**kwargs)
        self.partner = self.default_partner() if partner is None else partner
        self._close_ids, self._open_ids, self._reply_end_ids = self._partner_template()
        fixed = len(self._close_ids) + len(self._open_ids) + len(self._reply_end_ids)
        if self.max_partner_tokens <= fixed:
            raise ValueError(
                f"max_partner_tokens must exceed the {fixed} tokens the chat template puts around a partner "
                f"message, got {self.max_partner_tokens}"
            )
        self._conversation: Conversation | None = None
        self._turn: list[int] = []  # the agent's tokens of the turn under way
        self._results: list[TurnResult] = []  # the episode's finished turns
        self._supplied: str | None = None  # the partner's reply to the next step's turn, asked in a batch

    def observation_length(self) -> int:
        """L: the prompt, every turn's budget, and a partner message between turns."""
        turns = self.max_turns * self.max_new_tokens
        return self.max_prompt_tokens + turns + (self.max_turns - 1) * self.max_partner_tokens

    def length_formula(self) -> str:
        return (
            "max_prompt_tokens + max_turns * max_new_tokens + (max_turns - 1) * max_partner_tokens = "
            f"{self.max_prompt_tokens} + {self.max_turns} * {self.max_new_tokens} + "
            f"{self.max_turns - 1} * {self.max_partner_tokens}"
        )

    # -- what a task provides -------------------------------------------------------------------

    def default_partner(self) -> Partner:
        """The task's partner when the user passes none."""
        raise NotImplementedError(f"{type(self).__name__} must define its partner")

    def score_turns(
        self, conversations: Sequence[Conversation], texts: Sequence[str], replies: Sequence[str]
    ) -> tuple[np.ndarray, list[dict[str, float]], list[bool]]:
        """The (B,) rewards of finished turns (``texts``, answered by ``replies``; both already
        the last two of each conversation's ``messages``), each turn's reward parts, and whether
        the task ended with it."""
        raise NotImplementedError(f"{type(self).__name__} must score its turns")

    def episode_metrics(self, conversation: Conversation) -> dict[str, float]:
        """The task's metrics (``defaults.metrics``) of a finished episode."""
        raise NotImplementedError(f"{type(self).__name__} must define its metrics")

    # -- the chat template around a partner message ------------------------------------------

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

    def _partner_template(self) -> tuple[list[int], list[int], list[int]]:
        """Token ids that close an agent turn the budget cut (the agent's own end-of-turn token
        otherwise), that open a partner message, and that close it and open the agent's next turn.
        Read from the chat template by rendering a conversation once with a marker in place of the
        partner's words; without a template, plain ``User:``/``Assistant:`` lines."""
        end = min(self.eos_token_ids)
        if not self.uses_chat_template:
            return [end], self._encode("\nUser: "), self._encode("\nAssistant:")
        messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
        rendered = self.tokenizer.apply_chat_template(
            [*messages, {"role": "user", "content": _SLOT}], add_generation_prompt=True, tokenize=False
        )
        after = rendered[rendered.rindex("b", 0, rendered.index(_SLOT)) + 1 :]  # after the agent's words
        end_text = self.tokenizer.decode([end])
        if after.startswith(end_text):
            after = after[len(end_text) :]
        opening, closing = after.split(_SLOT)
        return [end], self._encode(opening), self._encode(closing)

    def partner_tokens(self, reply: str, closed: bool) -> list[int]:
        """The tokens a partner message adds to the observation: the end of the agent's turn
        where the budget cut it (``closed`` False), the message's opening, the reply (its tokens
        cut to fit ``max_partner_tokens``), the message's end and the opening of the agent's turn."""
        close = [] if closed else self._close_ids
        room = self.max_partner_tokens - len(self._close_ids) - len(self._open_ids) - len(self._reply_end_ids)
        return close + self._open_ids + self._encode(reply)[:room] + self._reply_end_ids

    # -- episodes -------------------------------------------------------------------------------

    def start_conversation(self, example: Example) -> Conversation:
        """A new conversation on ``example``, announced to the partner."""
        turns = example.turns if example.turns is not None else (("user", example.prompt),)
        conversation = Conversation(example=example, messages=[tuple(t) for t in turns])
        self.partner.start(conversation)
        return conversation

    def end_turns(
        self, conversations: Sequence[Conversation], turns: Sequence[Sequence[int]]
    ) -> list[TurnResult]:
        """End one agent turn in each conversation: ``turns[i]`` is the token ids conversation
        ``i``'s agent just emitted (ending with its end-of-turn token or an invalid id, or cut by
        the budget). The partners reply in one call, the turns are scored in one call, and each
        conversation records both. A turn that ends with an invalid id ends its episode with a
        reward of -1 and no reply."""
        if len(conversations) != len(turns):
            raise ValueError(f"got {len(conversations)} conversations for {len(turns)} turns")
        closed, texts, invalid = [], [], []
        for conversation, tokens in zip(conversations, turns):
            if not len(tokens):
                raise ValueError("every turn emits at least one token")
            if conversation.turn >= self.max_turns:
                raise ValueError(f"the conversation already had its {self.max_turns} turns")
            text, ended, bad = self._close_turn(tokens)
            invalid.append(bad)
            closed.append(ended)
            texts.append(text)
        answered = [i for i, bad in enumerate(invalid) if not bad]
        talking = [conversations[i] for i in answered]
        for i in answered:
            conversations[i].messages.append(("assistant", texts[i]))
        supplied, self._supplied = self._supplied, None
        if supplied is not None and len(talking) == 1 and talking[0] is self._conversation:
            replies = [supplied]  # asked for in a vector env's batch (reply_request)
        else:
            replies = self.partner.reply(talking) if talking else []
            replies = check_replies(self.partner, replies, len(talking))
        for conversation, reply in zip(talking, replies):
            conversation.messages.append(("user", reply))
        rewards, components, done = self.score_turns(talking, [texts[i] for i in answered], replies)
        results: list[TurnResult] = []
        scored = {i: k for k, i in enumerate(answered)}
        for i, conversation in enumerate(conversations):
            conversation.turn += 1
            if invalid[i]:
                parts = {"invalid_token": INVALID_TOKEN_REWARD}
                results.append(TurnResult(texts[i], "", INVALID_TOKEN_REWARD, parts, True, True, ()))
                continue
            k = scored[i]
            last = bool(done[k]) or conversation.turn >= self.max_turns
            appended = () if last else tuple(self.partner_tokens(replies[k], closed[i]))
            results.append(
                TurnResult(
                    texts[i],
                    replies[k],
                    float(rewards[k]),
                    dict(components[k]),
                    bool(done[k]),
                    last,
                    appended,
                )
            )
        return results

    def _close_turn(self, tokens: Sequence[int]) -> tuple[str, bool, bool]:
        """A finished turn's text, whether the agent closed it itself (its end-of-turn token or an
        invalid id, neither part of the text), and whether it ended on an invalid id."""
        bad = not self._valid_actions[tokens[-1]]
        ended = bad or tokens[-1] in self.eos_token_ids
        return self.completion_text(list(tokens[:-1] if ended else tokens)), ended, bad

    def _ends_turn(self, token: int, length: int) -> bool:
        """Whether ``token``, the turn's ``length``-th, ends the agent's turn: an end-of-turn
        token, an invalid id, or the turn's budget spent."""
        return not self._valid_actions[token] or token in self.eos_token_ids or length >= self.max_new_tokens

    def reply_request(self, action: Any) -> Conversation | None:
        """If ``step(action)`` would end the agent's turn with a reply due, the conversation as
        the partner will read it (a copy with the turn appended, sharing the original's
        ``state``); otherwise None (the turn goes on, the id is invalid or out of range, or no
        episode is under way: ``step`` then does what it always does). A vector env asks the
        partner for all its envs' requests at once and hands each env its reply with
        :meth:`supply_reply` before stepping it."""
        if self._conversation is None or self._done:
            return None
        try:
            token = self._check_action(action)
        except (TypeError, ValueError):
            return None  # step names the problem
        if not self._valid_actions[token] or not self._ends_turn(token, len(self._turn) + 1):
            return None
        text, _, _ = self._close_turn([*self._turn, token])
        conversation = self._conversation
        return replace(conversation, messages=[*conversation.messages, ("assistant", text)])

    def supply_reply(self, reply: str) -> None:
        """The partner's reply to the turn the next ``step`` ends, asked for through
        :meth:`reply_request` (the step uses it instead of calling the partner; a ``reset``
        drops it)."""
        (self._supplied,) = check_replies(self.partner, [reply], 1)

    def episode_info(self, conversation: Conversation, results: Sequence[TurnResult]) -> dict[str, Any]:
        """The ``info`` entries of an episode's last step, from its turns' results."""
        example = conversation.example
        parts: dict[str, float] = {}
        for result in results:
            for key, value in result.components.items():
                parts[key] = parts.get(key, 0.0) + float(value)
        return {
            "text": "\n".join(result.text for result in results),
            "turns": [
                {"text": r.text, "reply": r.reply, "reward": r.reward, "components": r.components}
                for r in results
            ],
            "prompt": example.prompt,
            "references": list(example.references),
            "reward_components": parts,
            "reward_name": type(self).__name__,
            "example_id": example.id,
            "invalid_token": bool(results) and "invalid_token" in results[-1].components,
            "metrics": self.episode_metrics(conversation),
        }

    def score_episodes(self, examples: Sequence[Example], generated: Sequence[Sequence[int]]):
        raise TypeError(
            f"{type(self).__name__} is multi-turn: its turns are scored as they end (end_turns), "
            "not as one finished text; train it with stock SB3 PPO or A2C"
        )

    # -- gymnasium API ----------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Draw an example (or take ``options={"index": i}``), start a conversation on it and
        return its prompt."""
        observation, info = super().reset(seed=seed, options=options)
        self._conversation = self.start_conversation(self._example)
        self._turn, self._results, self._supplied = [], [], None
        info["turn"] = 0
        return observation, info

    def step(self, action: int) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Append the token. An end-of-turn token or the turn's budget ends the turn: the partner
        replies, the turn is rewarded, and the reply's tokens join the observation. The episode
        terminates when the task ends (or on an invalid id) and is truncated after ``max_turns``."""
        token = self._append(action)
        self._turn.append(token)
        conversation = self._conversation
        info: dict[str, Any] = {"turn": conversation.turn, "tokens_generated": len(self._turn)}
        if not self._ends_turn(token, len(self._turn)):
            return self._observation(), 0.0, False, False, info
        (result,) = self.end_turns([conversation], [self._turn])
        self._results.append(result)
        info.update(
            {
                "turn_text": result.text,
                "partner_reply": result.reply,
                "turn_reward_components": result.components,
            }
        )
        self._turn = []
        if result.last:
            self._done = True
            info.update(self.episode_info(conversation, self._results))
        else:
            self._generated.extend(result.appended)
        return self._observation(), result.reward, result.done, result.last and not result.done, info

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        if self._conversation is None:
            return "(no episode: call reset())"
        lines = [f"{role}: {text}" for role, text in self._conversation.messages]
        if self._turn:
            lines.append(f"assistant (writing, {len(self._turn)}/{self.max_new_tokens} tokens): "
                         f"{self.completion_text(self._turn)}")  # fmt: skip
        return "\n".join(lines)
