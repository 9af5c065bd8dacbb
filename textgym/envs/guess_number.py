"""TextGen-GuessNumber: find a secret number from a scripted partner's "higher" and "lower"."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from textgym.envs.base import TaskDefaults
from textgym.envs.multiturn import Conversation, MultiTurnEnv, Partner

SUCCESS_REWARD = 1.0  # the turn that names the secret
TURN_COST = -0.1  # every turn that states a guess
NOT_A_GUESS = -0.3  # a turn that does not state exactly one number
_NUMBER = re.compile(r"-?\d+")


def read_guess(text: str) -> int | None:
    """The number a turn guesses: the one number it states (repeating it is fine), else None
    (no number, or two different numbers)."""
    numbers = {int(match) for match in _NUMBER.findall(text)}
    return numbers.pop() if len(numbers) == 1 else None


def binary_search_turns(high: int) -> float:
    """The mean number of turns bisection needs against the scripted partner, over secrets
    uniform on ``1..high``: guess the middle of what is left (rounded down) until it is right."""
    total = 0
    for secret in range(1, high + 1):
        low, top, turns = 1, high, 0
        while True:
            guess, turns = (low + top) // 2, turns + 1
            if guess == secret:
                break
            low, top = (guess + 1, top) if secret > guess else (low, guess - 1)
        total += turns
    return total / high


class NumberPartner(Partner):
    """The scripted partner: knows the game's secret (its example's ``secret`` column) and answers
    a guess with "Higher.", "Lower." or "Correct!", anything else with a request for one number."""

    def reply(self, conversations: Sequence[Conversation]) -> list[str]:
        replies = []
        for conversation in conversations:
            extra = dict(conversation.example.extra)
            secret, high = extra["secret"], extra["high"]
            guess = read_guess(conversation.messages[-1][1])
            if guess is None:
                replies.append(f"Please guess one number from 1 to {high}.")
            else:
                replies.append("Correct!" if guess == secret else "Higher." if secret > guess else "Lower.")
        return replies


class GuessNumberEnv(MultiTurnEnv):
    """
    ## Description
    A number-guessing game over several turns. The partner, a script, thinks of a whole number
    from 1 to ``high`` (default 20) and asks the agent to guess it; after each guess it answers
    "Higher.", "Lower." or "Correct!". The agent sees the whole game so far and has ``max_turns``
    (default 6) turns to name the number. Bisection is the known optimum: it needs at most
    ``ceil(log2(high + 1))`` guesses (5 for 20) and 3.7 on average for 20
    (:func:`binary_search_turns`).

    The games come from the ``guess-number`` dataset: 2,000 / 200 / 200 train / validation / test
    secrets, uniform on ``1..high``, each split from its own seeded RNG (the prompt is the same in
    every game). The prompt, through the model's chat template under a short system prompt, is
    "Let's play a game. I am thinking of a whole number from 1 to 20. Guess it: reply with one
    number, and I will tell you whether mine is higher or lower."

    ## Action Space
    ``Discrete(V)``: the next token id, V the model's logits width; ids past the tokenizer are
    invalid (see ``action_masks()``) and end the episode with a reward of -1.

    ## Observation Space
    ``Dict(input_ids=Box(0, V-1, (L,), int64), attention_mask=Box(0, 1, (L,), int8))``, the
    whole game so far, left-padded to ``L = max_prompt_tokens + max_turns * max_new_tokens +
    (max_turns - 1) * max_partner_tokens`` (96 + 6 * 16 + 5 * 24 = 312 by default).

    ## Rewards
    Paid on the step that ends a turn (0 on the others): -0.1 for a turn that states a guess,
    plus 1 when the guess is the secret; -0.3 for a turn that does not state exactly one number
    (no number, or two different ones: :func:`read_guess`). A game won in k turns earns
    ``1 - 0.1 k``; fewer turns are better. The parts are in ``info["turn_reward_components"]``
    (``success``, ``turn_cost``, ``not_a_guess``). The task's metrics are ``success`` (the game
    was won), ``turns`` (the agent's turns) and ``valid`` (the share of turns that guessed).

    ## Starting State
    A game drawn uniformly from the split with the env's seeded RNG, or
    ``reset(options={"index": i})``.

    ## Episode End
    A turn ends at the end-of-turn token (``<|im_end|>`` for SmolLM2) or after ``max_new_tokens``
    (default 16). The episode terminates when a guess is right (or on an invalid id) and is
    truncated after ``max_turns`` turns.

    ## Arguments
    ``high``: the largest secret (default 20; also ``dataset_kwargs={"high": n}``). ``max_turns``,
    ``partner`` (a :class:`~textgym.envs.multiturn.Partner`; default :class:`NumberPartner`) and
    ``max_partner_tokens`` as in :class:`~textgym.envs.multiturn.MultiTurnEnv`. The rest as in
    :class:`textgym.envs.base.TextGenEnv`; defaults ``max_prompt_tokens=96``,
    ``max_new_tokens=16``, ``chat_template=True``. The game scores its own turns: ``reward`` is
    not accepted.

    ## Version History
    * v0: initial version.
    """

    defaults = TaskDefaults(
        description="Guess a number from higher/lower answers",
        dataset="guess-number",
        reward=None,
        max_prompt_tokens=96,
        max_new_tokens=16,
        chat_template=True,
        system_prompt="You are playing a number-guessing game. Answer each turn with one number.",
        metrics=("success", "turns", "valid"),
        max_turns=6,
        max_partner_tokens=24,
    )

    def __init__(self, high: int | None = None, **kwargs: Any):
        options = kwargs.get("dataset_kwargs")
        if high is not None:
            if options is not None and not isinstance(options, dict):
                options = None  # the base class names what it accepts
            elif (options or {}).get("high", high) != high:
                raise ValueError(f"high={high!r} and dataset_kwargs['high']={options['high']!r} disagree")
            else:
                kwargs["dataset_kwargs"] = {**(options or {}), "high": high}
        super().__init__(**kwargs)
        self.high = int(dict(self.examples[0].extra)["high"])

    def default_partner(self) -> Partner:
        return NumberPartner()

    def score_turns(
        self, conversations: Sequence[Conversation], texts: Sequence[str], replies: Sequence[str]
    ) -> tuple[np.ndarray, list[dict[str, float]], list[bool]]:
        rewards, components, done = [], [], []
        for conversation, text in zip(conversations, texts):
            guess = read_guess(text)
            won = guess is not None and guess == dict(conversation.example.extra)["secret"]
            parts = (
                {"not_a_guess": NOT_A_GUESS}
                if guess is None
                else {"turn_cost": TURN_COST, "success": SUCCESS_REWARD if won else 0.0}
            )
            conversation.state.setdefault("guesses", []).append(guess)
            conversation.state["won"] = won
            rewards.append(sum(parts.values()))
            components.append(parts)
            done.append(won)
        return np.asarray(rewards, dtype=np.float32), components, done

    def episode_metrics(self, conversation: Conversation) -> dict[str, float]:
        guesses = conversation.state.get("guesses", [])
        return {
            "success": float(conversation.state.get("won", False)),
            "turns": float(conversation.turn),
            "valid": float(np.mean([g is not None for g in guesses])) if guesses else 0.0,
        }
