"""The textgym leaderboard: every registered env x agent x seed with the same training budget.

    python benchmarks/leaderboard.py            # the full run (default model, a few hours here)
    python benchmarks/leaderboard.py --quick    # tiny model, small budgets: a few minutes

Appends one JSON line per run to ``<results>/runs.jsonl`` (never rewriting earlier lines),
skips runs already there (so an interrupted run resumes; a trained run continues from its
checkpoint), then regenerates the board and its PNG plots. The same as ``textgym leaderboard
[--quick]`` (the options are the fields of ``LeaderboardConfig``), but writing into this
repository unless told otherwise: the full run to ``benchmarks/results/leaderboard/runs.jsonl``
and ``benchmarks/LEADERBOARD.md``, the quick one to ``benchmarks/results/leaderboard-quick/``.
"""

from __future__ import annotations

import argparse
import sys

from textgym.agents.leaderboard.runner import LeaderboardConfig, run_leaderboard
from textgym.cli import add_leaderboard_options, dataclass_values

PATHS = {"results": "benchmarks/results/leaderboard", "board": "benchmarks/LEADERBOARD.md"}
QUICK_PATHS = {"results": "benchmarks/results/leaderboard-quick"}  # its board: LEADERBOARD.md in there

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_leaderboard_options(parser)  # the options of ``textgym leaderboard``
    given = dataclass_values(LeaderboardConfig, parser.parse_args())
    # The repository's paths where none is given (a --results of one's own keeps its board in it).
    paths = {} if "results" in given else QUICK_PATHS if given.get("quick") else PATHS
    try:
        run_leaderboard(LeaderboardConfig(**{**paths, **given}), command="python benchmarks/leaderboard.py")
    except ValueError as err:  # a bad argument, found before any run: one line, like argparse's
        print(f"leaderboard.py: error: {err}", file=sys.stderr)
        sys.exit(2)
