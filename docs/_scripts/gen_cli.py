"""The CLI reference from ``textgym.cli.build_parser()``: writes ``docs/_generated/cli.md``, one
section per subcommand with its help text and options exactly as ``textgym <command> --help``
prints them (so the page cannot drift from the parser)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

WIDTH = "100"  # argparse wraps to $COLUMNS: fixed, so the page does not depend on the terminal


def subcommands(parser: argparse.ArgumentParser) -> dict[str, tuple[str, argparse.ArgumentParser]]:
    """``{name: (one-line help, parser)}`` in the order the CLI declares them."""
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
    return {name: (helps.get(name, ""), sub) for name, sub in action.choices.items()}


def cli_markdown() -> str:
    from textgym.cli import build_parser

    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        parser = build_parser()
        lines = ["```text", parser.format_help().rstrip(), "```", ""]
        for name, (text, sub) in subcommands(parser).items():
            lines += [f"## textgym {name}", "", f"{text[:1].upper()}{text[1:]}." if text else "", ""]
            lines += ["```text", sub.format_help().rstrip(), "```", ""]
    finally:
        if previous is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = previous
    return "\n".join(lines)


def generate(docs: Path) -> None:
    path = docs / "_generated" / "cli.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = cli_markdown()
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


if __name__ == "__main__":
    generate(Path(__file__).resolve().parents[1])
