"""English -> French/German user-interface strings from the JupyterLab language packs (BSD).

The wheels ``jupyterlab-language-pack-fr-fr`` and ``jupyterlab-language-pack-de-de`` ship
human translations as gettext JSON, ``locale/<lang>/LC_MESSAGES/<domain>.json``: a dict of
``msgid -> [translation, plural translation...]`` whose ``""`` entry is the catalog's header, and
whose msgids may carry a gettext context, ``"settings\\x04Font family"``. :func:`clean_pairs`
turns a catalog into source/reference pairs; splits are disjoint by source string.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
from collections.abc import Iterable
from pathlib import Path

from textgym.datasets.base import Example, split_of

# target -> (the package that holds its catalogs, the package's import name)
LANGUAGES: dict[str, tuple[str, str]] = {
    "fr": ("jupyterlab-language-pack-fr-fr", "jupyterlab_language_pack_fr_FR"),
    "de": ("jupyterlab-language-pack-de-de", "jupyterlab_language_pack_de_DE"),
}

# English names of the languages of WMT16 and IWSLT2017, for the prompts ("Translate into German: ...").
LANGUAGE_NAMES = {
    "ar": "Arabic", "cs": "Czech", "de": "German", "en": "English", "fi": "Finnish", "fr": "French",
    "it": "Italian", "ja": "Japanese", "ko": "Korean", "nl": "Dutch", "ro": "Romanian", "ru": "Russian",
    "tr": "Turkish", "zh": "Chinese",
}  # fmt: skip
CONTEXT_SEPARATOR = "\x04"  # gettext's msgctxt/msgid separator
# Placeholders of the catalogs' formats: %1, %s, %(name)s, {name}, {{name}}.
_PLACEHOLDER = re.compile(r"%\(\w+\)[sdif]|%\d+|%[sdif]|\{\{?\s*[\w.]*\s*\}?\}")
# Code and markup: HTML tags, backtick spans, dotted names, paths, file names, snake_case and
# camelCase identifiers.
_CODE = re.compile(
    r"<[a-zA-Z/][^>]*>|`[^`]*`|\w+\.\w+\.\w+|(?:^|\s)~?/[\w.-]|\w+\.(?:py|js|json|ipynb|md|txt|ya?ml)\b"
    r"|\b[a-z]+_\w+|\b[a-z]{2,}[A-Z][a-z]\w*"
)
_LETTERS = re.compile(r"[^\W\d_]{2,}")  # a word of two or more letters
MAX_PLACEHOLDER_SHARE = 0.34  # a source with more placeholder characters than this is dropped


def instruction(target: str) -> str:
    """The request that opens every prompt: ``"Translate into French:"``."""
    return f"Translate into {LANGUAGE_NAMES[target]}:"


def check_target(target: object) -> str:
    if not isinstance(target, str) or target not in LANGUAGES:
        raise ValueError(f"unknown translation target {target!r}: expected one of {list(LANGUAGES)}")
    return target


def keep_pair(source: str, translation: str) -> bool:
    """Whether a cleaned (context-free) catalog pair is a sentence worth translating.

    Dropped: empty or untranslated (the translation repeats the source), multi-line blocks,
    strings that are mostly placeholders, strings with code or markup, and strings without a
    word of at least two letters (``"C++"``, ``"%1 / %2"``).
    """
    source, translation = source.strip(), translation.strip()
    if not source or not translation or source.casefold() == translation.casefold():
        return False
    if "\n" in source or "\n" in translation:
        return False
    if _CODE.search(source) or _CODE.search(translation):
        return False
    prose = _PLACEHOLDER.sub("", source)
    if (len(source) - len(prose)) / len(source) > MAX_PLACEHOLDER_SHARE:
        return False
    return bool(_LETTERS.search(prose))


def clean_pairs(catalogs: Iterable[dict[str, object]]) -> tuple[tuple[str, str], ...]:
    """``(source, reference)`` pairs of gettext JSON catalogs, cleaned and de-duplicated.

    Context prefixes (``settings\\x04``) are dropped; a plural entry gives its singular form;
    a source seen twice (in two catalogs or two contexts) keeps its first translation.
    The pairs come back sorted by source, so the result does not depend on file order.
    """
    pairs: dict[str, str] = {}
    for catalog in catalogs:
        for msgid, translations in catalog.items():
            if not msgid or not isinstance(translations, list) or not translations:
                continue  # "" holds the catalog's header
            source = msgid.rpartition(CONTEXT_SEPARATOR)[2].strip()
            translation = translations[0]
            if not isinstance(translation, str) or not keep_pair(source, translation):
                continue
            pairs.setdefault(source, " ".join(translation.split()))
    return tuple(sorted(pairs.items()))


def _catalog_files(target: str) -> list[Path]:
    package, module = LANGUAGES[target]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"the translation corpus (target={target!r}) needs the package {package!r}: pip install {package}"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    return sorted(root.glob("locale/*/LC_MESSAGES/*.json"))


@functools.cache
def translation_pairs(target: str) -> tuple[tuple[str, str], ...]:
    """Every cleaned ``(English, translation)`` pair of the ``target`` language pack."""
    catalogs = [json.loads(path.read_text(encoding="utf-8")) for path in _catalog_files(target)]
    return clean_pairs(catalogs)


def pair_examples(
    pairs: Iterable[tuple[str, str]], split: str, target: str, key: str = "jupyterlab"
) -> tuple[Example, ...]:
    """Examples of ``split``: the pairs whose source hashes into it, as chat prompts."""
    request = instruction(target)
    examples = []
    for source, reference in pairs:
        if split_of(source) != split:
            continue
        text = f"{request} {source}"
        examples.append(Example(f"{key}-{target}/{source}", text, (reference,), (("user", text),)))
    return tuple(examples)


def translation_examples(split: str, target: str = "fr") -> tuple[Example, ...]:
    """English UI strings -> their French (``target="fr"``) or German (``"de"``) translations."""
    return _translation_examples(split, check_target(target))  # checked first: the cache needs hashables


@functools.lru_cache(maxsize=8)
def _translation_examples(split: str, target: str) -> tuple[Example, ...]:
    return pair_examples(translation_pairs(target), split, target)


def check_language_pair(pair: object) -> tuple[str, str]:
    """``"en-de"`` -> ``("en", "de")``, both codes among :data:`LANGUAGE_NAMES`."""
    codes = pair.split("-") if isinstance(pair, str) else []
    if len(codes) != 2 or codes[0] == codes[1] or not all(code in LANGUAGE_NAMES for code in codes):
        raise ValueError(
            f"translation must be '<source>-<target>' with two different codes from "
            f"{sorted(LANGUAGE_NAMES)} (e.g. 'en-de'), got {pair!r}"
        )
    return codes[0], codes[1]


def hub_translation_example(row: dict, pair: tuple[str, str], example_id: str, name: str) -> Example:
    """One WMT/IWSLT row, ``{"translation": {"en": ..., "de": ...}}``, as a chat prompt."""
    source, target = pair
    texts = row.get("translation")
    if not isinstance(texts, dict) or not {source, target} <= set(texts):
        found = sorted(texts) if isinstance(texts, dict) else f"columns {sorted(row)}"
        raise ValueError(
            f"dataset {name!r}: translation={'-'.join(pair)!r} needs rows with a 'translation' column "
            f"holding {source!r} and {target!r} texts; found {found}"
        )
    text = f"{instruction(target)} {' '.join(str(texts[source]).split())}"
    return Example(example_id, text, (" ".join(str(texts[target]).split()),), (("user", text),))
