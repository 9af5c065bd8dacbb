"""TextGen-Concepts: write one sentence that uses every word of a concept set (CommonGen's task)."""

from __future__ import annotations

from textgym.envs.base import TaskDefaults, TextGenEnv


class ConceptsEnv(TextGenEnv):
    """
    ## Description
    Given 3-5 concept words, write one sentence that uses them all: the task of CommonGen
    (Lin et al., 2020), whose concept sets are content words of image captions. Here they are
    content words of one-sentence messages (6-20 words) of ``chitchat-dataset``, which is the
    reference: alphabetic words of three letters or more, not in the ``stop-words`` package's
    English list (BSD-3-Clause) nor in a short list of chat fillers ("yeah", "lol"), not proper
    nouns, and found in at least five messages of the corpus. A seeded RNG per message picks 3,
    4 or 5 of them, listed in alphabetical order. Splits are disjoint by conversation, as in
    the Dialogue task:

    | split | examples | 3 concepts | 4 | 5 |
    |---|---|---|---|---|
    | train | 13,043 | 8,559 | 3,453 | 1,031 |
    | validation | 1,734 | 1,131 | 463 | 140 |
    | test | 1,533 | 1,022 | 393 | 118 |

    The prompt, through the model's chat template, is "Write one sentence that uses all of these
    words: climb, summer, weekend."

    ## Action Space
    ``Discrete(V)``: the next token id, V the model's logits width; ids past the tokenizer are
    invalid (see ``action_masks()``) and end the episode with an extra reward of -1.

    ## Observation Space
    ``Dict(input_ids=Box(0, V-1, (L,), int64), attention_mask=Box(0, 1, (L,), int8))``,
    left-padded to ``L = max_prompt_tokens + max_new_tokens``.

    ## Rewards
    0 until the last step; then the concepts used in a sentence (``sentence_coverage``, in
    [0, 1]) plus 0.5 x ROUGE-L F1 against the message, plus the degeneracy penalty in [-1, 0].
    Coverage is the share of the concepts the text uses: a concept counts in any inflection
    that shares its Porter stem ("dogs" for "dog", "writing" for "write"; irregular forms such
    as "wrote" do not). The reward scales it by two factors, one for each way a 20-minute GRPO
    run found to earn coverage without a sentence (the results page has both runs):

    * ``min(1, function words / concepts)``, function words being those of the stop-word list:
      a bare list of the concepts ("Dogs, frisbee, park.") earns nothing. On plain coverage,
      GRPO learned to list them, and neither distinct-2 nor perplexity showed it (record
      ``study-concepts-plain-coverage-grpo-20m``).
    * ``1 - `` the share of the text's 3-grams (words and punctuation) that the prompt holds:
      with the first factor alone, GRPO learned to copy the prompt around the list ("This
      sentence uses all of these words: dogs, frisbee, park.", record
      ``study-concepts-function-words-grpo-20m``).

    The references themselves earn 0.991 on average, and 97.1% of them the full 1 (the first
    3,000 of the train split). The components are in ``info["reward_components"]``. The task's
    metrics are coverage (in [0, 1], without the factors), BLEU (in [0, 100]) and ROUGE-L (in
    [0, 1]).

    ## Starting State
    A concept set drawn uniformly from the split with the env's seeded RNG, or
    ``reset(options={"index": i})``.

    ## Episode End
    Terminated on EOS or an invalid id; truncated after ``max_new_tokens`` tokens (default 32,
    enough for 99.85% of the references with their EOS under the default tokenizer). Every
    prompt fits ``max_prompt_tokens`` (default 64; the longest, with the system prompt, has 50
    tokens).

    ## Arguments
    ``dataset_kwargs={"seed": n}`` redraws every concept set (default 0: the sets above). Any
    dataset of prompts in the form above works with the task's reward
    (``dataset="my_sets.jsonl"``). The rest as in
    :class:`textgym.envs.base.TextGenEnv`; defaults ``dataset="chitchat-concepts"``,
    ``max_prompt_tokens=64``, ``max_new_tokens=32``, ``chat_template=True`` and a system prompt
    asking for one sentence.

    ## Version History
    * v0: initial version.
    """

    defaults = TaskDefaults(
        description="Use every concept word in a sentence",
        dataset="chitchat-concepts",
        reward="concepts",
        max_prompt_tokens=64,
        max_new_tokens=32,
        chat_template=True,
        system_prompt="Reply with one short, natural sentence.",
        metrics=("coverage", "bleu", "rougeL"),
    )
