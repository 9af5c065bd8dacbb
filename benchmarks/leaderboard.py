"""The textgym leaderboard: every registered env x agent x seed with the same training budget.

    python benchmarks/leaderboard.py            # the full run (default model, a few hours here)
    python benchmarks/leaderboard.py --quick    # tiny model, small budgets: a few minutes

Appends one JSON line per run to ``<results>/runs.jsonl`` (never rewriting earlier lines),
skips runs already there (so an interrupted run resumes; a trained run continues from its
checkpoint), then regenerates ``benchmarks/LEADERBOARD.md`` and its PNG plots. The same as
``textgym leaderboard [--quick]``; the options are the fields of ``LeaderboardConfig``.
"""

from __future__ import annotations

from common import parse_args

from agents.leaderboard import LeaderboardConfig, run_leaderboard

if __name__ == "__main__":
    run_leaderboard(parse_args(LeaderboardConfig, __doc__.splitlines()[0]))
