"""Concept sets drawn from real chat messages, as CommonGen drew them from captions.

CommonGen (Lin et al., 2020) gives 3-5 concept words and asks for one sentence that uses them
all; its concept sets are content words of image captions, and the caption is the reference.
Here the sentences are one-sentence messages of ``chitchat-dataset`` (the same conversations as
the Dialogue task, split by conversation the same way). A message's candidate concepts are its
content words: alphabetic, three letters or more, not in the English stop-word list of the
``stop-words`` package (BSD-3-Clause) nor in :data:`CHAT_WORDS`, not a proper noun (capitalised
inside the sentence), and not a typo (found in at least :data:`MIN_MESSAGES` messages of the
corpus). A seeded RNG, one per message, picks 3, 4 or 5 of them, listed in alphabetical order
so that their order does not give away the reference's.
"""

from __future__ import annotations

import collections
import functools
import random
import re

from textgym.datasets.base import Example, split_of
from textgym.datasets.chitchat import conversations

# Interjections, chat fillers and vague words the general stop-word list lacks; a concept set
# of "yeah, haha, stuff" asks for no sentence in particular.
CHAT_WORDS = frozenset({
    "aww", "awesome", "btw", "bit", "chat", "cool", "cuz", "dang", "gonna", "gotta", "gtg", "guess",
    "hey", "hello", "hmm", "hola", "huh", "idk", "kinda", "lol", "lot", "nice", "nope", "okay", "omg",
    "ooh", "oops", "pretty", "sorta", "sounds", "stuff", "super", "sure", "talk", "talking", "thing",
    "things", "tho", "totally", "true", "ugh", "wanna", "wow", "yay", "yea", "yeah", "yep", "yes",
})  # fmt: skip
MIN_WORDS, MAX_WORDS = 6, 20  # a message's length in words, as CommonGen's captions
MIN_MESSAGES = 5  # a candidate word occurs in at least this many messages of the corpus
CONCEPT_COUNTS = (3, 4, 5)
PROMPT_OPENING = "Write one sentence that uses all of these words:"

_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")  # contractions stay whole, and are dropped
_LAUGHTER = re.compile(r"^(?:ha|he|ah|lo|ol){2,}h?$")  # haha, hehehe, ahah, lolol
_STRETCHED = re.compile(r"(.)\1\1")  # ooooh, sooo


@functools.cache
def stop_words() -> frozenset[str]:
    """The ``stop-words`` package's English list (1,333 words) and :data:`CHAT_WORDS`."""
    try:
        from stop_words import get_stop_words
    except ImportError as error:
        message = "the concepts corpus needs the package 'stop-words': pip install stop-words"
        raise ImportError(message) from error
    return frozenset(get_stop_words("en")) | CHAT_WORDS


@functools.cache
def _message_counts() -> collections.Counter[str]:
    """In how many chat turns each lower-cased word occurs (the whole corpus, every split)."""
    counts: collections.Counter[str] = collections.Counter()
    for _, turns in conversations():
        for turn in turns:
            counts.update({word.lower() for word in _WORD.findall(turn)})
    return counts


def is_one_sentence(text: str) -> bool:
    """A message of :data:`MIN_WORDS`-:data:`MAX_WORDS` words with no sentence break inside."""
    return MIN_WORDS <= len(text.split()) <= MAX_WORDS and not re.search(r"[.!?]\s+\S", text)


def content_words(text: str) -> list[str]:
    """The candidate concepts of ``text``, lower-cased, in order, without repeats."""
    stops, counts = stop_words(), _message_counts()
    words: list[str] = []
    for position, match in enumerate(_WORD.finditer(text)):
        word = match.group()
        lower = word.lower()
        if (
            len(lower) < 3
            or "'" in lower
            or lower in stops
            or _LAUGHTER.match(lower)
            or _STRETCHED.search(lower)
            or (position > 0 and word[0].isupper())  # a name, or a word shouted in capitals
            or counts[lower] < MIN_MESSAGES
            or lower in words
        ):
            continue
        words.append(lower)
    return words


def concept_prompt(concepts: list[str] | tuple[str, ...]) -> str:
    """``"Write one sentence that uses all of these words: climb, summer, weekend."``"""
    return f"{PROMPT_OPENING} {', '.join(concepts)}."


def concepts_of(prompt: str) -> tuple[str, ...]:
    """The concepts a prompt of :func:`concept_prompt`'s form asks for."""
    opening, _, listed = prompt.partition(PROMPT_OPENING)
    if not listed or opening.strip():
        raise ValueError(
            f"a concepts prompt must read {PROMPT_OPENING!r} followed by comma-separated words, "
            f"got {prompt[:80]!r}"
        )
    concepts = tuple(word.strip() for word in listed.strip().rstrip(".").split(",") if word.strip())
    if not concepts:
        raise ValueError(f"the concepts prompt {prompt[:80]!r} lists no words")
    return concepts


def concept_examples(split: str, seed: int = 0) -> tuple[Example, ...]:
    """One example per one-sentence chat message with three or more candidate concepts:
    3-5 of them (a seeded draw per message) -> the message. ``seed`` redraws every set."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return _concept_examples(split, seed)  # checked first: the cache needs hashable values


@functools.lru_cache(maxsize=8)
def _concept_examples(split: str, seed: int) -> tuple[Example, ...]:
    examples = []
    for conv_id, turns in conversations():
        if split_of(conv_id) != split:
            continue
        for i, turn in enumerate(turns):
            if not is_one_sentence(turn):
                continue
            candidates = content_words(turn)
            if len(candidates) < min(CONCEPT_COUNTS):
                continue
            rng = random.Random(f"{seed}/{conv_id}/{i}")  # str seeds are stable across runs
            count = min(rng.choice(CONCEPT_COUNTS), len(candidates))
            prompt = concept_prompt(sorted(rng.sample(candidates, count)))
            examples.append(Example(f"{conv_id}/{i}", prompt, (turn,), (("user", prompt),)))
    return tuple(examples)
