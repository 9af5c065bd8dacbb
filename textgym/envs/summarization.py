"""TextGen-Summarization: summarize a scientific paper abstract."""

from __future__ import annotations

from textgym.envs.base import TaskDefaults, TextGenEnv


class SummarizationEnv(TextGenEnv):
    """
    ## Description
    Summarize the abstract of an ACL paper from the ``aclsum`` package (ACLSum: 100 train, 50
    validation and 100 test papers, its own disjoint splits). The prompt asks, through the
    model's chat template, for a three-sentence summary (challenge, approach, outcome) of the
    title and abstract; the reference is the human-written summary of those three aspects.

    ## Action Space
    ``Discrete(V)``: the next token id, V the model's logits width; ids past the tokenizer are
    invalid (see ``action_masks()``) and end the episode with an extra reward of -1.

    ## Observation Space
    ``Dict(input_ids=Box(0, V-1, (L,), int64), attention_mask=Box(0, 1, (L,), int8))``,
    left-padded to ``L = max_prompt_tokens + max_new_tokens``.

    ## Rewards
    0 until the last step; then the mean of ROUGE-1, ROUGE-2 and ROUGE-L F1 (rouge-score, with
    stemming) against the reference, plus the degeneracy penalty in [-1, 0]. Both components
    are in ``info["reward_components"]``.

    ## Starting State
    A paper drawn uniformly from the split with the env's seeded RNG, or
    ``reset(options={"index": i})``.

    ## Episode End
    Terminated on EOS or an invalid id; truncated after ``max_new_tokens`` tokens (default 64).
    Abstracts longer than ``max_prompt_tokens`` (default 448) lose their first tokens, and
    ``info["prompt_truncated"]`` says so.

    ## Arguments
    See :class:`textgym.envs.base.TextGenEnv`. Defaults: ``dataset="aclsum"``,
    ``max_prompt_tokens=448``, ``max_new_tokens=64``, ``chat_template=True``.

    ## Version History
    * v0: initial version.
    """

    defaults = TaskDefaults(
        description="Summarize an ACL paper abstract",
        dataset="aclsum",
        reward="summarization",
        max_prompt_tokens=448,
        max_new_tokens=64,
        chat_template=True,
        metrics=("rouge1", "rouge2", "rougeL"),
    )
