"""TextGen-TargetChat: lead a real conversation until the partner says a target word."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from textgym.datasets import Example
from textgym.envs.base import TaskDefaults
from textgym.envs.multiturn import Conversation, MultiTurnEnv, Partner
from textgym.envs.partners import shared_partner

SUCCESS_REWARD = 1.0  # the partner says the target (the agent never having said it)
SMOOTHNESS_WEIGHT = 0.2  # x MiniLM similarity of the agent's turn to the partner's last message
DEGENERACY_WEIGHT = 0.5  # x the degeneracy penalty of the agent's turn, in [-1, 0]


def says(word: str, text: str) -> bool:
    """Whether ``text`` uses ``word`` in any inflection that shares its Porter stem ("movies"
    for "movie"), as the concepts task counts a concept."""
    from textgym.rewards.concepts import _stem, stems

    return _stem(word.lower()) in stems(text)


class TargetChatEnv(MultiTurnEnv):
    """
    ## Description
    Target-guided conversation (Tang et al., ACL 2019). An episode starts from the last two turns
    of a real chat (``chitchat-dataset``, the Dialogue task's contexts, ending with the partner's
    turn) and a target word; the agent must lead the conversation so that its partner says the
    target within ``max_turns`` (default 4) turns, without saying it itself. The partner is a
    frozen copy of the env's model (the default model unless ``model=`` says otherwise), prompted
    as the other person of the chat (:class:`~textgym.envs.partners.LMPartner`: the roles
    swapped, greedy replies of at most 24 tokens); it never sees the target. Its model loads once
    per process and serves every env in it. Its replies take most of a rollout's time (measured
    on the results pages, "Multi-turn tasks"); batched rollouts ask for a batch's replies in one
    call, and a vector env does so through ``textgym.wrappers.VecPartnerBatcher``.

    The targets (the ``chitchat-targets`` dataset) are content words, picked as the concepts
    corpus picks them, of at least four letters that occur in at least 300 messages of the corpus;
    a seeded RNG per context draws one the context does not already use. The agent reads the
    target in its system prompt: "You are chatting with a friend. Steer the conversation so that
    your friend says the word "{target}", without saying it yourself."

    ## Action Space
    ``Discrete(V)``: the next token id, V the model's logits width; ids past the tokenizer are
    invalid (see ``action_masks()``) and end the episode with a reward of -1.

    ## Observation Space
    ``Dict(input_ids=Box(0, V-1, (L,), int64), attention_mask=Box(0, 1, (L,), int8))``, the
    whole conversation so far, left-padded to ``L = max_prompt_tokens + max_turns *
    max_new_tokens + (max_turns - 1) * max_partner_tokens`` (160 + 4 * 24 + 3 * 40 = 376).

    ## Rewards
    Paid on the step that ends a turn (0 on the others), the sum of:
    ``progress``, the MiniLM similarity of the partner's reply to the target minus that of its
    previous message; ``smoothness``, 0.2 x the similarity of the agent's turn to the partner's
    previous message (a turn that ignores what the partner said earns less); ``degeneracy``,
    0.5 x the degeneracy penalty of the agent's turn; and ``success``, 1 when the reply says the
    target (in any inflection sharing its Porter stem) and the agent has not said it in any turn.
    The parts are in ``info["turn_reward_components"]``. The task's metrics are ``success``,
    ``turns`` and ``closeness`` (the last reply's similarity to the target).

    ## Starting State
    A context drawn uniformly from the split with the env's seeded RNG, or
    ``reset(options={"index": i})``.

    ## Episode End
    A turn ends at the end-of-turn token or after ``max_new_tokens`` (default 24). The episode
    terminates when the partner says the target (or on an invalid id) and is truncated after
    ``max_turns`` turns.

    ## Arguments
    ``max_turns``, ``partner`` (default: one ``LMPartner(model)`` per process, shared by its envs) and
    ``max_partner_tokens`` (default 40) as in :class:`~textgym.envs.multiturn.MultiTurnEnv`. The rest as in
    :class:`textgym.envs.base.TextGenEnv`; defaults ``dataset_kwargs={"context_turns": 2}``,
    ``max_prompt_tokens=160``, ``max_new_tokens=24``, ``chat_template=True`` and the system prompt
    above (``{target}`` stands for the episode's target). The task scores its own turns:
    ``reward`` is not accepted.

    ## Version History
    * v0: initial version.
    """

    defaults = TaskDefaults(
        description="Lead a chat until the partner says a word",
        dataset="chitchat-targets",
        reward=None,
        max_prompt_tokens=160,
        max_new_tokens=24,
        chat_template=True,
        system_prompt=(
            "You are chatting with a friend. Steer the conversation so that your friend says the word "
            '"{target}", without saying it yourself.'
        ),
        dataset_kwargs={"context_turns": 2},
        metrics=("success", "turns", "closeness"),
        max_turns=4,
        max_partner_tokens=40,
    )

    def default_partner(self) -> Partner:
        return shared_partner(self.model_name)

    def system_message(self, example: Example) -> str | None:
        """The system prompt with ``{target}`` replaced by the episode's target."""
        target = dict(example.extra).get("target", "")
        return self.system_prompt.replace("{target}", target) if self.system_prompt else self.system_prompt

    def score_turns(
        self, conversations: Sequence[Conversation], texts: Sequence[str], replies: Sequence[str]
    ) -> tuple[np.ndarray, list[dict[str, float]], list[bool]]:
        from textgym.rewards.lexical import degeneracy_penalty
        from textgym.rewards.similarity import embed

        if not conversations:
            return np.zeros(0, dtype=np.float32), [], []
        targets = [dict(c.example.extra)["target"] for c in conversations]
        previous = [c.messages[-3][1] if len(c.messages) >= 3 else "" for c in conversations]
        n = len(conversations)
        vectors = embed([*targets, *replies, *previous, *texts])  # (4n, 384), unit norm
        target, reply, before, turn = (
            vectors[:n],
            vectors[n : 2 * n],
            vectors[2 * n : 3 * n],
            vectors[3 * n :],
        )
        closeness = (reply * target).sum(-1).tolist()
        progress = (np.asarray(closeness) - (before * target).sum(-1).numpy()).tolist()
        smooth = (turn * before).sum(-1).tolist()
        degenerate = degeneracy_penalty([""] * n, list(texts), [[""]] * n).tolist()
        rewards, components, done = [], [], []
        for i, conversation in enumerate(conversations):
            state = conversation.state
            state["agent_said"] = state.get("agent_said", False) or says(targets[i], texts[i])
            won = says(targets[i], replies[i]) and not state["agent_said"]
            state["won"], state["closeness"] = won, closeness[i]
            parts = {
                "progress": progress[i],
                "smoothness": SMOOTHNESS_WEIGHT * smooth[i],
                "degeneracy": DEGENERACY_WEIGHT * degenerate[i],
                "success": SUCCESS_REWARD if won else 0.0,
            }
            rewards.append(sum(parts.values()))
            components.append(parts)
            done.append(won)
        return np.asarray(rewards, dtype=np.float32), components, done

    def episode_metrics(self, conversation: Conversation) -> dict[str, float]:
        return {
            "success": float(conversation.state.get("won", False)),
            "turns": float(conversation.turn),
            "closeness": float(conversation.state.get("closeness", 0.0)),
        }
