"""TextGen-Reasoning: answer a verifiable problem of any reasoning-gym dataset."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from textgym.datasets.reasoning import (
    DEFAULT_TASK,
    DEFAULT_TASK_CONFIG,
    check_task,
    check_task_config,
    reasoning_gym,
)
from textgym.envs.base import TaskDefaults, TextGenEnv


class ReasoningEnv(TextGenEnv):
    """
    ## Description
    Answer a problem that reasoning-gym generates (Apache-2.0; ``pip install
    "textgym[reasoning]"``): ``task`` is any name in ``reasoning_gym.factory.DATASETS`` (106 in
    reasoning-gym 0.1.25) and ``task_config`` that dataset's config options. Each
    ``(task, task_config)`` has one fixed pool of 2,000 entries generated with seed 1234
    (``dataset_kwargs={"size": n}`` for another size); a repeated question keeps its first entry,
    and a stable hash of the question picks its split (80/10/10), so the splits are disjoint by
    question and the same on every machine. The prompt, through the model's chat template, is
    the question under the system prompt "Solve the problem, then end your reply with 'The
    answer is <answer>.'"; the entry's answer is the reference.

    The default task is ``basic_arithmetic`` with ``{"min_terms": 2, "max_terms": 2,
    "max_digits": 1}`` ("Calculate 5 - -5."): 1,235 distinct questions, 1,000 / 122 / 113
    train / validation / test. The untrained default model answered seven candidate arithmetic
    tasks greedily, 100 test prompts each (mean ± 95% interval; "format": the share that state
    the answer as asked; "cut": the share the token budget ended; records
    ``reasoning-tasks-*.json`` in ``benchmarks/results/``, from ``python
    benchmarks/reasoning_tasks.py --max-new-tokens 96``). Four fall between 10% and 60%; the
    default is the one nearest the middle of that range, which leaves the most to learn in
    both directions:

    | task | task_config | accuracy | format | cut |
    |---|---|---|---|---|
    | ``basic_arithmetic`` | 2 terms, 1 digit (the default) | 0.28 ± 0.09 | 0.42 | 0.11 |
    | ``basic_arithmetic`` | 2 terms, 2 digits | 0.14 ± 0.07 | 0.48 | 0.17 |
    | ``gcd`` | ``max_value=100`` | 0.15 ± 0.07 | 0.40 | 0.00 |
    | ``decimal_arithmetic`` | 2 terms, 1 decimal place | 0.13 ± 0.07 | 0.65 | 0.05 |
    | ``chain_sum`` | 2 terms, 2 digits | 0.05 ± 0.04 | 0.87 | 0.00 |
    | ``leg_counting`` | 1-2 animals, up to 3 each (94 test questions) | 0.01 ± 0.02 | 0.95 | 0.01 |
    | ``number_sorting`` | 3-4 integers | 0.00 ± 0.00 | 0.00 | 1.00 |

    On the default task a budget of 64 new tokens cut 30% of the texts (accuracy 0.24 ± 0.08),
    96 cut 11%: the default is 96.

    ## Action Space
    ``Discrete(V)``: the next token id, V the model's logits width; ids past the tokenizer are
    invalid (see ``action_masks()``) and end the episode with an extra reward of -1.

    ## Observation Space
    ``Dict(input_ids=Box(0, V-1, (L,), int64), attention_mask=Box(0, 1, (L,), int8))``,
    left-padded to ``L = max_prompt_tokens + max_new_tokens``.

    ## Rewards
    0 until the last step; then reasoning-gym's own ``score_answer(answer, entry)`` of the answer
    the text states (1 when right; some datasets give partial credit, e.g. a text that contains
    the answer among other words), plus a tenth of that score when the text states the answer in
    the asked format (the format earns only with the answer: a bonus for the format alone was a
    sure reward that GRPO took in place of the answer), plus 0.5 x the degeneracy penalty in
    [-1, 0]. The answer is the text after the last "answer is"
    or "answer:" (any case) up to the end of its line and its sentence; without one, the last
    number; without a number, the last line (:func:`textgym.rewards.reasoning.extract_answer`).
    The components are in ``info["reward_components"]``. The task's metrics are accuracy
    (1 when the score is 1.0) and the format rate.

    ## Starting State
    A question drawn uniformly from the split with the env's seeded RNG, or
    ``reset(options={"index": i})``.

    ## Episode End
    Terminated on EOS or an invalid id; truncated after ``max_new_tokens`` tokens (default 96).
    Every prompt of the default task fits ``max_prompt_tokens`` (default 128; the longest, with
    the system prompt, has 56 tokens); longer questions of other tasks may need more.

    ## Arguments
    ``task``: a reasoning-gym dataset name (default ``"basic_arithmetic"``). ``task_config``: a
    dict of its config options but ``seed`` and ``size`` (default: the default task's config for
    the default task, reasoning-gym's defaults for any other). Both may also come through
    ``dataset_kwargs``. The rest as in :class:`textgym.envs.base.TextGenEnv`; defaults
    ``dataset="reasoning-gym"``, ``max_prompt_tokens=128``, ``max_new_tokens=96``,
    ``chat_template=True`` and the system prompt above.

    ## Version History
    * v0: initial version.
    """

    defaults = TaskDefaults(
        description="Answer a reasoning-gym problem",
        dataset="reasoning-gym",
        reward="reasoning",
        max_prompt_tokens=128,
        max_new_tokens=96,
        chat_template=True,
        system_prompt="Solve the problem, then end your reply with 'The answer is <answer>.'",
        dataset_kwargs={"task": DEFAULT_TASK},
        metrics=("accuracy", "format"),
    )

    def __init__(self, task: str | None = None, task_config: dict[str, Any] | None = None, **kwargs: Any):
        reasoning_gym()  # one ImportError naming the extra, before anything else
        dataset, options = kwargs.get("dataset"), kwargs.get("dataset_kwargs")
        # Wrong option types are left to the base class, which names what it accepts.
        if dataset is None and (options is None or isinstance(options, Mapping)):
            options = dict(options or {})
            for key, value in (("task", task), ("task_config", task_config)):
                if value is not None and key in options and options[key] != value:
                    raise ValueError(f"{key}={value!r} and dataset_kwargs[{key!r}]={options[key]!r} disagree")
                if value is not None:
                    options[key] = value
            kwargs["dataset_kwargs"] = options
            task, task_config = options.get("task", task), options.get("task_config", task_config)
        self.task = check_task(DEFAULT_TASK if task is None else task)
        if task_config is None:
            task_config = DEFAULT_TASK_CONFIG if self.task == DEFAULT_TASK else {}
        check_task_config(self.task, task_config)  # one error naming the accepted keys
        self.task_config = dict(task_config)
        super().__init__(**kwargs)
