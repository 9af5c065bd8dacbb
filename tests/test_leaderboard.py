"""The leaderboard's quick mode end to end, its resuming, and the CLI's train/eval commands."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import textgym
from textgym.agents.leaderboard import runner
from textgym.agents.leaderboard.board import hyperparameter_lines, select
from textgym.agents.leaderboard.config import AGENTS, PROFILES, TRAINED, LeaderboardConfig, RunSpec
from textgym.agents.leaderboard.runner import run_isolated
from textgym.agents.leaderboard.store import append_record, load_records, read_records
from textgym.agents.runs.hyperparams import hyperparams
from textgym.cli import main
from textgym.models import DEFAULT_MODEL

AGENTS_DIR = Path(__file__).resolve().parent.parent / "agents"


def snapshot(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# RLOO and REINFORCE are GRPO's and TextPPO's machinery with other settings (tests/test_group_agents.py);
# SoftQ, DQN and A2C train through the same train() as the others (tests/test_training.py): the quick
# board runs the others, to keep the suite short.
BOARD_AGENTS = [agent for agent in AGENTS if agent not in ("a2c", "rloo", "reinforce", "softq", "dqn")]
SENTIMENT = "TextGen-Sentiment-v0"


def test_quick_leaderboard_runs_every_env_and_agent_then_resumes(tmp_path, capsys, runs_in_this_process):
    results, board = tmp_path / "results", tmp_path / "board" / "LEADERBOARD.md"
    # Trained runs stop on their 512 tokens: a time budget that cannot bind keeps the test
    # independent of this machine's speed. Every agent runs on one env, then every env gets the
    # untrained model, added to the same board (runs in this process: the suite's longest test
    # otherwise; every agent trains on every env in tests/test_ppo.py and test_training.py).
    common = ["leaderboard", "--quick", "--results", str(results), "--board", str(board)]
    budget = ["--budget-minutes", "1e4", "--budget-tokens", "512"]
    every_agent = [*common, *budget, "--agents", ",".join(BOARD_AGENTS), "--envs", SENTIMENT]
    assert main(every_agent) == 0
    assert main([*common, *budget, "--agents", "sample"]) == 0
    records = read_records(results / "runs.jsonl")
    expected = {(SENTIMENT, a) for a in BOARD_AGENTS} | {(e, "sample") for e in textgym.ENVS}
    assert {(r["env"], r["agent"]) for r in records} == expected and len(records) == len(expected)
    for record in records:
        assert record["model"] == "tiny" and record["git_commit"] and record["versions"]["torch"]
        assert record["env_spec"]["id"] == record["env"] and record["env_spec"]["defaults"]["metrics"]
        assert len(record["per_example"]["reward"]) == 8 and record["peak_rss_gb"] > 0
        if record["agent"] in TRAINED:
            assert record["used"]["tokens"] >= 512 and record["curve"]
            assert record["budget"] == {"tokens": 512, "minutes": 1e4}
            assert record["hyperparams"] == hyperparams(record["agent"], record["env"], "quick")
        else:
            assert record["hyperparams"] is None
    text = board.read_text()
    for env_id in textgym.ENVS:
        assert f"## {env_id}" in text
        assert (board.parent / "leaderboard" / f"{env_id}-curve.png").is_file()
        assert (board.parent / "leaderboard" / f"{env_id}-metrics.png").is_file()
    assert "TextPPO" in text and "SB3 PPO" in text and "Not run yet" not in text
    assert "Reproduce: `textgym leaderboard --quick`" in text
    # Each trained row's hyperparameters, where they differ from its algorithm's defaults.
    [grpo] = [line for line in text.splitlines() if line.startswith("- GRPO: ")]
    assert "`batch_episodes=16`" in grpo

    # A second run finds every result and only regenerates the board; results are appended to,
    # never rewritten.
    lines = (results / "runs.jsonl").read_text()
    capsys.readouterr()
    assert main(every_agent) == 0
    assert f"{len(BOARD_AGENTS)} already in" in capsys.readouterr().out
    assert (results / "runs.jsonl").read_text() == lines


def test_board_states_hyperparameters_per_row_and_seed():
    config = LeaderboardConfig(quick=True).resolved()
    env = "TextGen-Sentiment-v0"
    tuned = {**hyperparams("grpo", env, "quick"), "learning_rate": 1e-4}
    legacy = {"seed": 2}  # a record from before the registry: the values its key pins
    by_agent = {
        "grpo": [{"seed": 0, "hyperparams": tuned}, {"seed": 1, "hyperparams": dict(tuned)}],
        "textppo": [{"seed": 0, "hyperparams": hyperparams("textppo", env, "quick")}, legacy],
        "sample": [{"seed": 0, "hyperparams": None}],
    }
    lines = hyperparameter_lines(env, by_agent, config)
    assert lines[0].startswith("- GRPO: ") and "`learning_rate=0.0001`" in lines[0]
    assert "`batch_episodes=16`" in lines[0] and "group_size" not in lines[0]  # 4 is GRPO's default
    assert lines[1:] == [lines[1]] and lines[1].startswith("- TextPPO: ")  # both seeds: one line
    by_agent["grpo"][1]["hyperparams"]["learning_rate"] = 3e-5
    lines = hyperparameter_lines(env, by_agent, config)
    assert lines[0].startswith("- GRPO (seeds 0): ") and lines[1].startswith("- GRPO (seeds 1): ")


def test_quick_and_full_settings():
    quick = LeaderboardConfig(quick=True).resolved()
    assert (quick.model, quick.seeds, quick.budget_tokens, quick.budget_minutes, quick.eval_prompts) == (
        "tiny", "0", 1024, 0.5, 8,
    )  # fmt: skip
    assert (quick.results, quick.board) == (
        "leaderboard-quick",
        str(Path("leaderboard-quick/LEADERBOARD.md")),
    )
    full = LeaderboardConfig().resolved()
    assert (full.model, full.seeds, full.budget_tokens, full.budget_minutes, full.eval_prompts) == (
        "smollm2-135m-instruct", "0,1", 100_000, 5.0, 64,
    )  # fmt: skip
    assert (full.results, full.board) == ("leaderboard", str(Path("leaderboard/LEADERBOARD.md")))
    given = LeaderboardConfig(quick=True, results="r", budget_tokens=99).resolved()
    assert (given.results, given.board, given.budget_tokens, given.model) == (
        "r",
        "r/LEADERBOARD.md",
        99,
        "tiny",
    )
    for config, profile in ((quick, "quick"), (full, "default")):
        for agent in TRAINED:
            train = config.train_config("TextGen-Dialogue-v0", agent, 1)
            assert train.hyperparams == hyperparams(agent, "TextGen-Dialogue-v0", profile)
            assert (train.model, train.budget_tokens, train.eval_every_minutes) == (
                config.model,
                config.budget_tokens,
                0,
            )


def test_records_from_before_the_registry_keep_their_keys():
    """Keys that trained runs had before the hyperparameter registry (computed then): their
    records still count, so the published board need not be re-run; stock PPO's changed
    hyperparameters (64 envs, the KL in the policy) and TextPPO's on Sentiment (tuned rate and
    batch) make their old records another experiment."""
    before = {
        ("TextGen-Sentiment-v0", False, "ppo", 0): "TextGen-Sentiment-v0-ppo-s0-b59ce19a75",
        ("TextGen-Sentiment-v0", False, "textppo", 0): "TextGen-Sentiment-v0-textppo-s0-2298d65a1d",
        ("TextGen-Sentiment-v0", True, "ppo", 0): "TextGen-Sentiment-v0-ppo-s0-d748a75d1e",
        ("TextGen-Sentiment-v0", True, "textppo", 0): "TextGen-Sentiment-v0-textppo-s0-45d170d9cf",
        ("TextGen-Sentiment-v0", False, "sample", 0): "TextGen-Sentiment-v0-sample-s0-87f7d74bbe",
        ("TextGen-Sentiment-v0", True, "sample", 0): "TextGen-Sentiment-v0-sample-s0-9b79700ccd",
        ("TextGen-Dialogue-v0", False, "textppo", 0): "TextGen-Dialogue-v0-textppo-s0-c93135e526",
    }
    changed = {("TextGen-Sentiment-v0", "ppo"), ("TextGen-Sentiment-v0", "textppo")}
    for (env, quick, agent, seed), key in before.items():
        config = LeaderboardConfig(quick=quick).resolved()
        spec = RunSpec(env, agent, seed)
        if (env, agent) in changed:
            assert key not in spec.keys(config)
            continue
        assert spec.legacy_key(config) == key and key in spec.keys(config)
        record = {"key": key, "env": spec.env, "agent": agent, "seed": seed}
        newer = {**record, "key": spec.key(config), "note": "re-run"}
        assert select([record], config) == {spec.env: {agent: [record]}}
        assert select([record, newer], config) == {spec.env: {agent: [newer]}}  # the latest counts


def test_board_keeps_only_this_configuration(tmp_path):
    config = LeaderboardConfig(quick=True, results=str(tmp_path)).resolved()
    spec = RunSpec("TextGen-Sentiment-v0", "sample", 0)
    mine = {"key": spec.key(config), "env": spec.env, "agent": "sample", "seed": 0}
    other = {**mine, "key": spec.key(LeaderboardConfig(quick=True, eval_prompts=99).resolved())}
    assert select([mine, other], config) == {spec.env: {"sample": [mine]}}


def test_board_of_one_env_keeps_the_other_envs_rows():
    """Re-running one env (``--envs``) regenerates a board that still has every env's rows of
    the same configuration, in the catalogue's order, as re-running one agent or seed does."""
    full, one = (LeaderboardConfig(quick=True, envs=e).resolved() for e in ("", "TextGen-Sentiment-v0"))
    rows = []
    for env in ("TextGen-Sentiment-v0", "TextGen-Dialogue-v0"):
        spec = RunSpec(env, "sample", 0)
        rows.append({"key": spec.key(full), "env": env, "agent": "sample", "seed": 0})
    assert list(select(rows, one)) == ["TextGen-Dialogue-v0", "TextGen-Sentiment-v0"]
    assert select(rows, one) == select(rows, full)
    other = {
        **rows[1],
        "key": RunSpec("TextGen-Dialogue-v0", "sample", 0).key(
            LeaderboardConfig(quick=True, eval_prompts=99).resolved()
        ),
    }
    assert list(select([rows[0], other], one)) == [
        "TextGen-Sentiment-v0"
    ]  # another configuration's: not shown


def record(key: str) -> dict:
    """The fields of a record that identify its run (what every reader of the records keys on)."""
    return {"key": key, "env": SENTIMENT, "agent": "sample", "seed": 0}


def test_torn_last_line_is_skipped(tmp_path):
    path = tmp_path / "runs.jsonl"
    path.write_text(json.dumps(record("a")) + "\n" + '{"key": "b", "tru')
    assert read_records(path) == [record("a")]
    assert load_records(path) == ([record("a")], 1)


def test_a_record_appended_after_a_torn_line_is_readable(tmp_path):
    """A writer killed mid-line leaves a torn last line: the next record starts on a line of its
    own (not glued to the torn one, where it would be lost from the board)."""
    path = tmp_path / "runs.jsonl"
    path.write_text(json.dumps(record("a")) + "\n" + '{"key": "b", "tru')
    append_record(path, record("c"))
    append_record(path, record("d"))
    assert read_records(path) == [record("a"), record("c"), record("d")]


MALFORMED = [
    {"x": 1},  # no key
    {"key": ["a"]},  # a key that is not a string (unhashable)
    {"key": "k", "env": SENTIMENT, "agent": "sample"},  # no seed
    {"key": "k", "env": SENTIMENT, "agent": "sample", "seed": "0"},
    [1, 2],  # not an object
    "text",
]


def test_records_without_a_usable_key_are_skipped_and_counted(tmp_path, capsys, runs_in_this_process):
    """Lines of runs.jsonl that are JSON but not records (edited by hand) are skipped and counted,
    as torn lines are, and the leaderboard says how many; it runs and writes its board."""
    results = tmp_path / "results"
    results.mkdir()
    lines = [json.dumps(value) for value in MALFORMED] + ["", '{"key": "torn", "tru']
    (results / "runs.jsonl").write_text("\n".join(lines) + "\n")
    assert load_records(results / "runs.jsonl") == ([], len(MALFORMED) + 1)  # the blank line is no record
    args = ["leaderboard", "--quick", "--results", str(results), "--agents", "sample", "--envs", SENTIMENT]
    assert main([*args, "--eval-prompts", "2"]) == 0
    out = capsys.readouterr().out
    assert "Traceback" not in out and "error" not in out
    assert f"skipped {len(MALFORMED) + 1} lines of {results / 'runs.jsonl'}" in out.replace("\n", "")
    [new] = read_records(results / "runs.jsonl")
    assert new["agent"] == "sample" and (results / "LEADERBOARD.md").is_file()
    assert (results / "runs.jsonl").read_text().startswith("\n".join(lines))  # nothing rewritten


def test_an_option_given_with_quick_wins_even_at_the_full_profiles_value(
    tmp_path, capsys, runs_in_this_process
):
    """``--quick`` fills in only what was not given: ``--quick --seeds 0,1`` runs both seeds,
    and every other option it sets (model, budgets, prompts, results) keeps a value given
    explicitly, also one equal to the full leaderboard's default."""
    seen = []

    def capture(config, console):
        seen.append(config.resolved())

    given = dict(
        seeds="0,1", model=DEFAULT_MODEL, budget_tokens=100_000, budget_minutes=5.0, eval_prompts=64,
        results="leaderboard",
    )  # fmt: skip
    assert given == PROFILES["default"]
    flags = [x for name, value in given.items() for x in (f"--{name.replace('_', '-')}", str(value))]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "run_leaderboard", capture)
        assert main(["leaderboard", "--quick", *flags]) == 0
        assert main(["leaderboard", "--quick"]) == 0  # nothing given: the quick profile
    assert [{name: getattr(config, name) for name in given} for config in seen] == [given, PROFILES["quick"]]
    assert LeaderboardConfig(quick=True, **given).resolved().seed_list() == [0, 1]
    # End to end: both seeds run, and the records say so.
    results = tmp_path / "results"
    args = ["leaderboard", "--quick", "--seeds", "0,1", "--results", str(results), "--agents", "sample"]
    assert main([*args, "--envs", SENTIMENT, "--eval-prompts", "2"]) == 0
    assert sorted(r["seed"] for r in read_records(results / "runs.jsonl")) == [0, 1]


def test_a_second_leaderboard_on_the_same_results_is_refused(tmp_path, capsys, monkeypatch):
    """Two leaderboards on one --results at once would run the same runs twice: while the first
    runs, the second is refused with one message naming the first's process, and writes nothing;
    the first's records are whole and single; once it ends, the same command runs (resumes)."""
    results = tmp_path / "results"
    args = ["leaderboard", "--quick", "--results", str(results), "--agents", "sample", "--envs", SENTIMENT]
    args += ["--eval-prompts", "2"]
    second: list[int | None] = []

    def run_with_a_second_leaderboard(config, spec, out):
        if not second:  # the first leaderboard's run (the second's, if it ran one, goes on as usual)
            second.append(None)
            before = snapshot(results)
            second[0] = main(args)  # started while the first one runs
            assert snapshot(results) == before
        return runner.run_one(config, spec, out)

    monkeypatch.setattr(runner, "run_isolated", run_with_a_second_leaderboard)
    assert main(args) == 0
    out = capsys.readouterr().out
    assert second == [2] and "Traceback" not in out
    expected = f"leaderboard results {results} are being written by process {os.getpid()}"
    assert expected in out.replace("\n", "")
    [first] = read_records(results / "runs.jsonl")
    assert main(args) == 0 and second == [2]  # the lock is free again: nothing left to run
    assert "1 already in" in capsys.readouterr().out and read_records(results / "runs.jsonl") == [first]


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        pytest.param(["--envs", "TextGen-Nope-v0"], "unknown envs", id="unknown-env"),
        pytest.param(
            ["--envs", "TextGen-Sentiment-v0,TextGen-Sentiment-v0"], "more than once", id="env-twice"
        ),
        pytest.param(["--agents", "sac"], "unknown agents", id="unknown-agent"),
        pytest.param(["--agents", "sample,sample"], "more than once", id="agent-twice"),
        pytest.param(["--seeds", "a,b"], "seeds", id="seeds-not-ints"),
        pytest.param(["--seeds", "-1"], "non-negative", id="seed-negative"),
        pytest.param(["--seeds", "0,-1"], "non-negative", id="one-seed-negative"),
        pytest.param(["--seeds", "0,0"], "more than once", id="seed-twice"),
        pytest.param(["--budget-tokens", "0"], "budget_tokens", id="budget-tokens-zero"),
        pytest.param(["--budget-minutes", "-1"], "budget_minutes", id="budget-minutes-negative"),
        pytest.param(["--budget-minutes", "nan"], "budget_minutes", id="budget-minutes-nan"),
        pytest.param(["--budget-minutes", "inf"], "budget_minutes", id="budget-minutes-inf"),
        pytest.param(["--eval-prompts", "0"], "eval_prompts", id="eval-prompts-zero"),
        pytest.param(["--model", "no-such-model"], "no-such-model", id="unknown-model"),
        pytest.param(["--results", "{afile}/r"], "is a file, not a folder", id="results-under-a-file"),
        pytest.param(["--results", "{afile}"], "is a file, not a folder", id="results-is-a-file"),
        pytest.param(["--board", "{afile}/B.md"], "is a file, not a folder", id="board-under-a-file"),
        pytest.param(["--board", "{tmp}"], "is a folder, not a file", id="board-is-a-folder"),
    ],
)
def test_bad_leaderboard_arguments_fail_before_any_run(tmp_path, extra, match, capsys):
    """Every argument is checked before the first run: one clear message, exit 2, nothing written
    (not two records and then a traceback)."""
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    before = snapshot(tmp_path)
    extra = [e.format(afile=afile, tmp=tmp_path) for e in extra]
    args = ["leaderboard", "--quick", "--results", str(tmp_path / "r"), "--board", str(tmp_path / "b.md")]
    args += ["--envs", "TextGen-Sentiment-v0", "--agents", "sample,greedy,ppo", "--budget-minutes", "1e4"]
    assert main([*args, *extra]) == 2
    out = capsys.readouterr().out
    assert "textgym: error:" in out and match in out and "Traceback" not in out
    assert snapshot(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie awaiting its reaper counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return not stat.parent.parent.is_dir()  # no /proc here: os.kill's answer stands


def wait_until(condition, polls: int = 1200, every: float = 0.1) -> bool:
    """Poll ``condition`` a bounded number of times (a guard against hanging, not a timing)."""
    for _ in range(polls):
        if condition():
            return True
        time.sleep(every)
    return condition()


def endless_run(tmp_path) -> tuple[LeaderboardConfig, RunSpec, Path]:
    """A trained run whose budget never binds: it trains until its process is killed."""
    config = LeaderboardConfig(quick=True, budget_tokens=10**9, budget_minutes=1e6, results=str(tmp_path))
    return config.resolved(), RunSpec("TextGen-Sentiment-v0", "ppo", 0), tmp_path / "run"


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signals")
def test_a_run_process_killed_mid_run_is_a_clear_error_not_a_hang(tmp_path):
    """A run's process that dies without a result (segfault, OOM killer, kill -9) ends the wait
    with one error naming the run and the exit code."""
    config, spec, out = endless_run(tmp_path)
    outcome: list[BaseException | dict] = []

    def wait() -> None:
        try:
            outcome.append(run_isolated(config, spec, str(out)))
        except BaseException as err:
            outcome.append(err)

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    assert wait_until(lambda: (out / "run.json").exists()), "the run never started training"
    [child] = multiprocessing.active_children()
    os.kill(child.pid, signal.SIGKILL)
    waiter.join(timeout=300)  # a bound on a hang; the wait ends as soon as the death is noticed
    assert not waiter.is_alive(), "run_isolated still waits for a result from a dead process"
    [error] = outcome
    assert isinstance(error, RuntimeError)
    assert "TextGen-Sentiment-v0 ppo seed 0" in str(error) and "exit code -9" in str(error)
    assert "SIGKILL" in str(error)


PARENT = """
import multiprocessing, sys, threading, time
from pathlib import Path
from textgym.agents.leaderboard.runner import LeaderboardConfig, RunSpec, run_isolated

def report_child(path):
    while not multiprocessing.active_children():
        time.sleep(0.05)
    Path(path).write_text(str(multiprocessing.active_children()[0].pid))

if __name__ == "__main__":
    threading.Thread(target=report_child, args=(sys.argv[1],), daemon=True).start()
    config = LeaderboardConfig(quick=True, budget_tokens=10**9, budget_minutes=1e6, results=sys.argv[2])
    run_isolated(config.resolved(), RunSpec("TextGen-Sentiment-v0", "ppo", 0), sys.argv[3])
"""

WATCHED = """
import os, sys, time
from pathlib import Path
from textgym.agents.leaderboard.runner import _watch_parent

_watch_parent(os.getppid())
Path(sys.argv[1]).write_text(str(os.getpid()))
time.sleep(600)
"""


def assert_child_dies_with_parent(parent: subprocess.Popen, pid_file: Path, started) -> None:
    child = None
    try:

        def ready() -> bool:
            return bool(pid_file.exists() and pid_file.read_text() and started())

        assert wait_until(lambda: ready() or parent.poll() is not None) and ready(), "the child never started"
        child = int(pid_file.read_text())
        assert running(child)
        parent.kill()  # SIGKILL: no cleanup runs in the parent
        parent.wait()
        assert wait_until(lambda: not running(child), polls=300), "the child outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if child is not None and running(child):
            os.kill(child, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX signals, /proc")
def test_a_run_process_dies_with_a_killed_leaderboard(tmp_path):
    """``kill -9`` of the leaderboard takes its run's process with it: no orphan keeps writing
    the run directory that the rerun resumes."""
    script, pid_file, out = tmp_path / "parent.py", tmp_path / "child.pid", tmp_path / "run"
    script.write_text(PARENT)
    parent = subprocess.Popen([sys.executable, str(script), str(pid_file), str(tmp_path), str(out)])
    assert_child_dies_with_parent(parent, pid_file, lambda: (out / "run.json").exists())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX signals, /proc")
def test_the_parent_watchdog_alone_ends_an_orphan(tmp_path):
    """The fallback where no parent-death signal exists: a thread that notices the new parent."""
    pid_file = tmp_path / "child.pid"
    spawn = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {WATCHED!r}, {str(pid_file)!r}])"
    parent = subprocess.Popen([sys.executable, "-c", spawn])
    assert_child_dies_with_parent(parent, pid_file, lambda: True)


def test_cli_train_then_eval(tmp_path, capsys):
    out = tmp_path / "run"
    train = [
        "train",
        "--env",
        "TextGen-Sentiment-v0",
        "--model",
        "tiny",
        "--budget",
        "1000h,10",  # 10 tokens; the time cannot bind
        "--batch-episodes",
        "4",
        "--eval-prompts",
        "3",
        "--out",
        str(out),
    ]
    assert main(train) == 0
    printed = capsys.readouterr().out
    assert "untrained" in printed and "trained" in printed and "task reward" in printed
    run = json.loads((out / "run.json").read_text())["config"]
    assert (run["budget_tokens"], run["budget_minutes"], run["eval_prompts"]) == (10, 60_000.0, 3)
    assert run["hyperparams"]["batch_episodes"] == run["hyperparams"]["minibatch_episodes"] == 4
    assert run["hyperparams"]["learning_rate"] == 3.5e-5
    before = snapshot(out)
    assert main(train) == 2 and "already holds this run" in capsys.readouterr().out
    assert main([*train, "--resume", "--hyperparams", "gama=1"]) == 2
    assert "unknown hyperparameter 'gama'" in capsys.readouterr().out
    assert main([*train, "--resume", "--lr", "1e-3"]) == 2
    assert "learning_rate=3.5e-05 (asked 0.001)" in capsys.readouterr().out
    assert snapshot(out) == before
    assert main(["eval", "--checkpoint", str(out), "-n", "2"]) == 0
    printed = capsys.readouterr().out
    assert "TextGen-Sentiment-v0" in printed and "perplexity" in printed and "sample texts" in printed
    assert main(["eval", "--checkpoint", str(tmp_path / "missing"), "--env", "TextGen-Sentiment-v0"]) == 2
    assert "no checkpoint at" in capsys.readouterr().out


def test_cli_train_without_out_never_reuses_a_run_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    train = ["train", "--env", "TextGen-Sentiment-v0", "--model", "tiny", "--budget-tokens", "4",
             "--budget-minutes", "1e4", "--hyperparams", "batch_episodes=2",
             "--eval-prompts", "2"]  # fmt: skip
    assert main(train) == 0 and main(train) == 0
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert runs == ["TextGen-Sentiment-v0-textppo-seed0-1", "TextGen-Sentiment-v0-textppo-seed0-2"]
    assert main([*train, "--resume"]) == 2 and "--resume needs --out" in capsys.readouterr().out


def test_the_quick_board_on_a_local_ray_instance_writes_what_the_sequential_one_does(tmp_path, capsys):
    import ray  # the test extra installs it

    common = ["leaderboard", "--quick", "--envs", SENTIMENT, "--agents", "sample"]
    common += ["--eval-prompts", "4"]

    def place(name: str) -> list[str]:
        return ["--results", str(tmp_path / name), "--board", str(tmp_path / name / "B.md")]

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # the test's own instance
    try:
        # More CPUs (or GPUs) per run than any node has: Ray would leave the tasks pending for
        # ever; the leaderboard says so at once, with the numbers, and writes nothing.
        for ask, asked in (
            (["--ray-cpus", "8"], "8 CPUs and 0 GPUs"),
            (["--ray-gpus", "1"], "2 CPUs and 1 GPUs"),
        ):
            assert main([*common, *place("ray"), "--ray", *ask]) == 2
            out = capsys.readouterr().out.replace("\n", "")
            assert f"asks Ray for {asked}" in out and "its largest node has 2 CPUs and 0 GPUs" in out
            assert not (tmp_path / "ray").exists()
        assert main([*common, *place("ray"), "--ray", "--ray-cpus", "1"]) == 0
        capsys.readouterr()
        assert main([*common, *place("ray"), "--ray", "--ray-cpus", "1"]) == 0  # resumes: nothing to run
        assert "1 already in" in capsys.readouterr().out
    finally:
        ray.shutdown()
    assert main([*common, *place("seq")]) == 0
    on_ray, sequential = (
        sorted(read_records(tmp_path / name / "runs.jsonl"), key=lambda r: r["agent"])
        for name in ("ray", "seq")
    )
    assert [r["key"] for r in on_ray] == [r["key"] for r in sequential] and len(on_ray) == 1
    for a, b in zip(on_ray, sequential):  # the same runs, apart from their timings
        # The same texts and scores; log-probs to float noise (a Ray task runs torch on its
        # ray_cpus threads, which sums in another order).
        exact = {key: value for key, value in a["per_example"].items() if key not in ("nll", "kl")}
        assert exact == {key: b["per_example"][key] for key in exact} and a["samples"] == b["samples"]
        for key in ("nll", "kl"):
            assert a["per_example"][key] == pytest.approx(b["per_example"][key], abs=1e-4)
    assert (tmp_path / "ray" / "B.md").is_file()


def test_ray_without_the_package_is_one_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    args = ["leaderboard", "--quick", "--ray", "--results", str(tmp_path / "r")]
    assert main(args) == 2
    assert "--ray needs the 'ray' package: pip install 'textgym[ray]'" in capsys.readouterr().out
    assert not (tmp_path / "r").exists()


def test_a_trained_runs_key_does_not_change_with_the_train_configs_env_kwargs_field():
    """Board runs use each env's defaults, so the empty ``env_kwargs`` field (added after these
    records) stays out of their keys: GRPO's tuned Sentiment rows of 2026-12-04 still count."""
    config = LeaderboardConfig().resolved()
    spec = RunSpec("TextGen-Sentiment-v0", "grpo", 0)
    assert spec.key(config) == "TextGen-Sentiment-v0-grpo-s0-2ce9f119cb"
    assert config.train_config(spec.env, spec.agent, spec.seed).env_kwargs == {}
