"""TextGen-Sentiment: continue the opening words of a real message with a target sentiment."""

from __future__ import annotations

from typing import Any

from textgym.envs.base import TaskDefaults, TextGenEnv
from textgym.rewards.sentiment import TARGETS


class SentimentEnv(TextGenEnv):
    """
    ## Description
    Sentiment steering. The prompt is the first six words of a real chat message (from
    ``chitchat-dataset``, messages of at least twelve words); the agent continues the text,
    without a chat template, and is rewarded for the target sentiment of its continuation.
    The rest of the real message is kept as the reference (for fluency and overlap metrics).

    ## Action Space
    ``Discrete(V)``: the next token id, V the model's logits width; ids past the tokenizer are
    invalid (see ``action_masks()``) and end the episode with an extra reward of -1.

    ## Observation Space
    ``Dict(input_ids=Box(0, V-1, (L,), int64), attention_mask=Box(0, 1, (L,), int8))``,
    left-padded to ``L = max_prompt_tokens + max_new_tokens``.

    ## Rewards
    0 until the last step; then the VADER compound score (vaderSentiment) of the continuation,
    in [-1, 1], negated when ``target="negative"``.

    ## Starting State
    An opening drawn uniformly from the split with the env's seeded RNG, or
    ``reset(options={"index": i})``. Splits are disjoint by conversation.

    ## Episode End
    Terminated on EOS or an invalid id; truncated after ``max_new_tokens`` tokens (default 32).

    ## Arguments
    ``target``: ``"positive"`` (default) or ``"negative"``. The rest as in
    :class:`textgym.envs.base.TextGenEnv`; defaults ``dataset="chitchat-openings"``,
    ``max_prompt_tokens=32``, ``max_new_tokens=32``, ``chat_template=False``.

    ## Version History
    * v0: initial version.
    """

    defaults = TaskDefaults(
        description="Continue a message with a target sentiment",
        dataset="chitchat-openings",
        reward="sentiment-positive",
        max_prompt_tokens=32,
        max_new_tokens=32,
        chat_template=False,
        dataset_kwargs={"prompt_words": 6, "min_words": 12},
        metrics=("vader", "positive_rate"),
    )

    def __init__(self, target: str = "positive", **kwargs: Any):
        if target not in TARGETS:
            raise ValueError(f"unknown sentiment target {target!r}: expected one of {list(TARGETS)}")
        self.target = target
        if kwargs.get("reward") is None:
            kwargs["reward"] = f"sentiment-{target}"
        super().__init__(**kwargs)
