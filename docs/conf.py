"""Sphinx configuration of the textgym documentation site.

Why Sphinx + MyST-Parser + furo: Stable-Baselines3, whose API textgym's agents follow, documents
itself with Sphinx, and autodoc reads the code's SB3-style reST docstrings (``:param x:``)
natively, so the API reference comes from the code with no second copy; MyST lets every page
be Markdown, like the README; furo is a plain, readable theme. No intersphinx: the build runs
without network access.

Build (CI runs this in .ci/run; warnings are errors):

    .venv/bin/python -m sphinx -W --keep-going -b html docs docs/_build/html

At build start every ``docs/_scripts/gen_*.py`` runs its ``generate(docs_dir)``, which writes
Markdown under ``docs/_generated/`` (gitignored): env pages from the env classes' docstrings,
the CLI reference from ``textgym.cli.build_parser()`` and the tables of measured results from
the records in ``benchmarks/results/``. Pages include those fragments, so they cannot drift.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # autodoc imports transformers; never wait on the hub


def run_generators(docs: Path = DOCS) -> None:
    """Run ``generate(docs)`` of every ``docs/_scripts/gen_*.py``, in name order."""
    for script in sorted((docs / "_scripts").glob("gen_*.py")):
        spec = importlib.util.spec_from_file_location(f"_docs_{script.stem}", script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.generate(docs)


# At import, before Sphinx reads any source: the generated fragments must exist when the pages
# that include them are read (Sphinx collects the source files right after loading this file).
run_generators()

project = "textgym"
author = "the textgym authors"
copyright = "the textgym authors"
sys.path.insert(0, str(ROOT))
import textgym  # noqa: E402

release = version = textgym.__version__

# napoleon (bundled with Sphinx): textgym's envs and wrappers document their arguments in Google
# style ("Arguments:" sections); the agents use SB3's ``:param`` fields, which autodoc reads as is.
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon"]
napoleon_numpy_docstring = False
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3  # [text](page.md#a-heading) links to the headings of other pages
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_scripts", "_generated", "README.md"]  # fragments are included, not pages

# The code's docstrings are SB3-style reST (``:param x: ...``). Type hints go into the
# descriptions rather than the signatures, which stay readable; a hint that names a class
# Sphinx cannot link is plain text (nitpicky is off, as SB3's docs have it).
autodoc_typehints = "description"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
# Sphinx 7.2+: ``__init__`` parameters are documented in the class docstring (SB3's way).
autoclass_content = "class"
nitpicky = False

html_theme = "furo"
html_title = f"textgym {release}"
