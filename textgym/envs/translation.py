"""TextGen-Translation: translate an English user-interface string into French or German."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from textgym.datasets.hub import PREFIX as HUB_PREFIX
from textgym.datasets.translation import check_target
from textgym.envs.base import TaskDefaults, TextGenEnv


class TranslationEnv(TextGenEnv):
    """
    ## Description
    Translate an English string into French (``target="fr"``, default) or German (``"de"``).
    The data are the human translations that JupyterLab's language packs ship on PyPI
    (``jupyterlab-language-pack-fr-fr`` and ``-de-de`` 4.5, BSD-3-Clause, Project Jupyter
    contributors): user-interface strings of JupyterLab and its extensions, from a word
    ("Reset") to a sentence of 80 tokens. Gettext contexts (``settings\\x04``) are removed;
    multi-line blocks, untranslated strings, strings that are mostly placeholders (``%1``,
    ``{name}``) and strings with code are dropped; duplicates keep one translation. Splits are
    disjoint by English string (a stable hash of it):

    | target | pairs | train | validation | test |
    |---|---|---|---|---|
    | `fr` | 2,874 | 2,251 | 330 | 293 |
    | `de` | 988 | 770 | 115 | 103 |

    The prompt, through the model's chat template, is "Translate into French: <English>";
    the catalog's translation is the reference. Placeholders that remain (``%1``) are kept in
    the source and the reference alike, as a translator must keep them.

    ## Action Space
    ``Discrete(V)``: the next token id, V the model's logits width; ids past the tokenizer are
    invalid (see ``action_masks()``) and end the episode with an extra reward of -1.

    ## Observation Space
    ``Dict(input_ids=Box(0, V-1, (L,), int64), attention_mask=Box(0, 1, (L,), int8))``,
    left-padded to ``L = max_prompt_tokens + max_new_tokens``.

    ## Rewards
    0 until the last step; then sentence chrF (sacrebleu, scaled to [0, 1]) against the
    reference, plus the degeneracy penalty in [-1, 0]. Both components are in
    ``info["reward_components"]``. The task's metrics are BLEU, chrF and TER (sacrebleu,
    in [0, 100]; lower TER is better).

    ## Starting State
    A string drawn uniformly from the split with the env's seeded RNG, or
    ``reset(options={"index": i})``.

    ## Episode End
    Terminated on EOS or an invalid id; truncated after ``max_new_tokens`` tokens (default 36,
    enough for 95.5% of the French and 99.3% of the German references with their EOS under the
    default tokenizer). Every prompt fits ``max_prompt_tokens`` (default 128; the longest,
    with the system prompt, has 118 tokens).

    ## Arguments
    ``target``: ``"fr"`` (default) or ``"de"``. With a hub dataset, such as
    ``dataset="hf:wmt16:de-en"`` or ``"hf:iwslt2017:iwslt2017-en-de"``, rows in their
    ``{"translation": {"en": ..., "de": ...}}`` layout are read as English -> ``target``
    unless ``dataset_kwargs`` says otherwise (``{"translation": "de-en"}``). The rest as in
    :class:`textgym.envs.base.TextGenEnv`; defaults ``dataset="jupyterlab-l10n"``,
    ``max_prompt_tokens=128``, ``max_new_tokens=36``, ``chat_template=True`` and a system prompt
    asking for the translation alone.

    ## Version History
    * v0: initial version.
    """

    defaults = TaskDefaults(
        description="Translate an English UI string",
        dataset="jupyterlab-l10n",
        reward="translation",
        max_prompt_tokens=128,
        max_new_tokens=36,
        chat_template=True,
        system_prompt="You are a professional translator. Reply with the translation only.",
        dataset_kwargs={"target": "fr"},
        metrics=("bleu", "chrf", "ter"),
    )

    def __init__(self, target: str = "fr", **kwargs: Any):
        self.target = check_target(target)  # one error naming the accepted targets
        dataset, options = kwargs.get("dataset"), kwargs.get("dataset_kwargs")
        # Wrong option types are left to the base class, which names what it accepts.
        if options is None or isinstance(options, Mapping):
            options = dict(options or {})
            if dataset is None:
                options.setdefault("target", self.target)
                kwargs["dataset_kwargs"] = options
            elif isinstance(dataset, str) and dataset.startswith(HUB_PREFIX) and not options:
                kwargs["dataset_kwargs"] = {"translation": f"en-{self.target}"}
        super().__init__(**kwargs)
