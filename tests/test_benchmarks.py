"""The benchmark scripts run end to end on the tiny model and write their records."""

from __future__ import annotations

import importlib
import json
import os
import queue
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import textgym
from textgym.agents.leaderboard.board import select
from textgym.agents.leaderboard.config import LeaderboardConfig, RunSpec
from textgym.agents.leaderboard.store import read_records
from textgym.agents.runs.evaluation import mean_ci
from textgym.agents.runs.hyperparams import hyperparams

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def test_throughput_writes_every_figure(tmp_path, monkeypatch, capsys):
    # In this process, and so are the training probes the script runs in fresh processes for
    # their peak memory; its memory probe still spawns one (each spawn costs ~8 s of imports here).
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import throughput

    def here(target, *arguments):
        answers = queue.SimpleQueue()
        target(*arguments, answers)
        return answers.get()

    monkeypatch.setattr(throughput, "in_fresh_process", here)
    argv = [
        "--model", "tiny", "--batch", "4", "--new-tokens", "4", "--minibatch", "2", "--repeats", "1",
        "--random-episodes", "1", "--stock-envs", "2", "--stock-steps", "3", "--stock-sweep", "1",
        "--out", str(tmp_path), "--stock-train-envs", "TextGen-Sentiment-v0", "--stock-train-profile",
        "quick", "--plain-transitions", "5",
    ]  # fmt: skip
    run_script(monkeypatch, "throughput", argv)
    [path] = tmp_path.glob("throughput-*.json")
    assert path.name in capsys.readouterr().out.replace("\n", "")  # rich may wrap the long path
    record = json.loads(path.read_text())

    assert record["benchmark"] == "throughput" and record["args"]["model"] == "tiny"
    expected = {"rollout_vs_generate", "update_vs_forward_backward", "reference_vs_update_seconds"}
    expected.add("stock_cache_speedup/TextGen-Sentiment-v0/1-envs")  # --stock-sweep on --env
    expected.add("kl_batched_vs_per_env/TextGen-Sentiment-v0")
    assert record["stock_sweep"]["TextGen-Sentiment-v0"]["1"]["cached"]["tokens"] == 3
    for env_id in textgym.ENVS:
        expected |= {f"stock_cache_speedup/{env_id}", f"random_vs_stock_cached/{env_id}"}
        assert record["random_policy"][env_id]["steps"] > 0
        assert record["random_policy"][env_id]["steps_per_s"] > 0
        for setting in ("cached", "recomputed"):
            assert record["stock"][env_id][setting]["tokens"] == 2 * 3
    for key in ("stock_update_vs_textppo", "stock_episode_vs_plain_buffer", "stock_rollout_vs_textppo"):
        expected.add(f"{key}/TextGen-Sentiment-v0")
    training = record["stock_training"]["TextGen-Sentiment-v0"]
    assert training["ppo"]["n_envs"] == 4 and training["ppo"]["rollout"]["tokens"] == 4 * 8  # quick profile
    assert training["ppo"]["plain_update"]["tokens"] == 5  # one minibatch of the plain buffer
    assert training["textppo"]["rollout"]["tokens"] > 0 and training["ppo"]["peak_rss_gb"] > 0
    expected |= {"dqn_vs_softq_update/TextGen-Sentiment-v0", "dqn_vs_softq_rollout/TextGen-Sentiment-v0"}
    value = record["value_training"]["TextGen-Sentiment-v0"]
    assert value["dqn"]["update"]["tokens"] == 2 * 16  # quick: 2 gradient steps of 16 transitions
    assert value["dqn"]["rollout"]["tokens"] == 4 * 8  # 4 envs x 8 steps
    assert value["softq"]["rollout"]["tokens"] > 0 and value["softq"]["update"]["tokens"] > 0
    assert set(record["ratios"]) == expected
    assert all(ratio > 0 for ratio in record["ratios"].values())
    assert record["textppo_peak_rss_gb"] > 0
    assert record["update"]["tokens_per_s"] > 0 and record["forward_backward"]["tokens_per_s"] > 0
    assert len(record["rollouts"]) == len(record["generates"]) == 1


def test_leaderboard_script_writes_into_the_repository_paths(tmp_path, monkeypatch, runs_in_this_process):
    """``python benchmarks/leaderboard.py`` writes where the README says (relative to where it
    runs, the repository root), while the library's defaults name no repository path. The script
    runs as ``__main__`` in this process (its command line in a fresh interpreter is the next test)."""
    small = ["--agents", "sample", "--envs", "TextGen-Sentiment-v0", "--eval-prompts", "2", "--seeds", "0"]
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    for extra, results, board in (
        (["--model", "tiny"], "benchmarks/results/leaderboard", "benchmarks/LEADERBOARD.md"),
        (
            ["--quick"],
            "benchmarks/results/leaderboard-quick",
            "benchmarks/results/leaderboard-quick/LEADERBOARD.md",
        ),
    ):
        monkeypatch.setattr(sys, "argv", ["leaderboard.py", *small, *extra])
        runpy.run_path(str(BENCHMARKS / "leaderboard.py"), run_name="__main__")
        [record] = read_records(tmp_path / results / "runs.jsonl")
        assert record["agent"] == "sample" and record["model"] == "tiny"
        reproduce = "python benchmarks/leaderboard.py" + (" --quick" if "--quick" in extra else "")
        assert f"Reproduce: `{reproduce}`" in (tmp_path / board).read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["benchmarks"]
    assert "benchmarks" not in LeaderboardConfig().resolved().results + LeaderboardConfig().resolved().board


def test_leaderboard_script_checks_its_arguments_before_any_run(tmp_path):
    command = [sys.executable, str(BENCHMARKS / "leaderboard.py"), "--quick", "--seeds", "-1"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "leaderboard.py: error: seeds must be comma-separated non-negative ints" in out.stderr
    assert not any(tmp_path.iterdir())


# (agent, env) pairs whose hyperparameters changed since some of their records were written.
CHANGED = {("ppo", env) for env in textgym.ENVS} | {
    ("grpo", "TextGen-Dialogue-v0"),
    ("textppo", "TextGen-Sentiment-v0"),
}


def test_published_leaderboard_records_are_still_recognised():
    """The board's records (most written before the hyperparameter registry) still count for the
    configuration that made them, so regenerating the board needs no re-run; stock PPO's
    hyperparameters changed since (64 envs, the KL in the policy), and GRPO's Dialogue learning
    rate, and TextPPO's Sentiment rate and batch, so only their re-run rows count."""
    path = BENCHMARKS / "results" / "leaderboard" / "runs.jsonl"
    if not path.is_file():
        pytest.skip("no published leaderboard records")
    records = read_records(path)
    config = LeaderboardConfig().resolved()
    chosen = select(records, config)
    picked = {
        (env, agent, r["seed"]) for env, agents in chosen.items() for agent, rs in agents.items() for r in rs
    }
    current = {
        (r["env"], r["agent"], r["seed"])
        for r in records
        if (r["agent"], r["env"]) not in CHANGED
        or r["key"] in RunSpec(r["env"], r["agent"], r["seed"]).keys(config)
    }
    assert picked == current and {"textppo", "sample", "greedy"} <= {agent for _, agent, _ in picked}


def test_groups_benchmark_samples_the_same_tokens_both_ways(tmp_path, monkeypatch):
    argv = ["--model", "tiny", "--envs", "TextGen-Sentiment-v0", "--prompts", "2", "--group-size", "2"]
    run_script(monkeypatch, "groups", [*argv, "--minibatch", "2", "--out", str(tmp_path)])
    [path] = tmp_path.glob("groups-*.json")
    record = json.loads(path.read_text())
    figures = record["envs"]["TextGen-Sentiment-v0"]
    # One generator seed: the grouped and per-row rollouts sample the same tokens.
    assert figures["rollout_grouped"]["tokens"] == figures["rollout_per_row"]["tokens"] > 0
    assert figures["update_grouped"]["tokens"] == figures["update_per_row"]["tokens"] > 0
    assert set(record["ratios"]) == {
        "rollout_grouped_vs_per_row/TextGen-Sentiment-v0",
        "update_grouped_vs_per_row/TextGen-Sentiment-v0",
    }


def tune_in_process(monkeypatch, tmp_path, algo: str, budget_tokens: int, *extra: str):
    """tune.py's module and its command line for a one-trial study of ``algo`` on Sentiment with
    the tiny model, set as ``sys.argv``. Its main runs in this process, and its trials and
    untrained evaluation too, which it runs in processes of their own (each an interpreter start,
    ~8 s here; that path is tests/test_leaderboard.py's)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import tune

    monkeypatch.setattr(tune, "run_in_child", lambda target, args, name: target(*args))
    command = [
        "tune.py", "--model", "tiny", "--env", "TextGen-Sentiment-v0", "--algo", algo, "--trials", "1",
        "--budget-tokens", str(budget_tokens), "--budget-minutes", "1e4", "--eval-prompts", "2",
        "--out", str(tmp_path), *extra,
    ]  # fmt: skip
    monkeypatch.setattr(sys, "argv", command)
    return tune, command


def study(tmp_path: Path, name: str, create: bool = False):
    """The study ``name`` that tune.py keeps in ``tmp_path`` (its journal file)."""
    import optuna
    import tune

    storage = tune.study_storage(tmp_path, name)
    if create:
        return optuna.create_study(study_name=name, storage=storage, direction="maximize")
    return optuna.load_study(study_name=name, storage=storage)


def killed_trial(study, point: dict | None = None) -> int:
    """A trial of ``study`` as a killed study process leaves it: running, having suggested
    ``point`` of GRPO's search space (if given), with no process holding the study's lock.
    Returns its number."""
    import tune

    if point is not None:
        study.enqueue_trial(point)
    trial = study.ask()
    if point is not None:
        tune.space(trial, "grpo")  # the enqueued values, as the objective suggests them
    return trial.number


def test_tune_runs_trials_with_constraints_and_resumes(tmp_path, monkeypatch, capsys):
    from optuna.trial import TrialState

    tune, _ = tune_in_process(monkeypatch, tmp_path, "grpo", 64)
    tune.main()
    out = capsys.readouterr().out
    lines = (tmp_path / "grpo-TextGen-Sentiment-v0-tiny.jsonl").read_text().splitlines()
    trials = [json.loads(line) for line in lines]
    assert [t["trial"] for t in trials] == [0]
    registry = hyperparams("grpo", "TextGen-Sentiment-v0")  # trial 0 is the registry's values
    assert {k: registry[k] for k in trials[0]["hyperparams"] if k != "minibatch_episodes"} == {
        k: v for k, v in trials[0]["hyperparams"].items() if k != "minibatch_episodes"
    }
    for trial in trials:
        assert {"learning_rate", "kl_coef", "group_size", "batch_episodes"} <= set(trial["hyperparams"])
        assert trial["hyperparams"]["batch_episodes"] % trial["hyperparams"]["group_size"] == 0
        assert trial["metrics"]["n"] == 2 and "distinct_2" in trial["untrained"]
        run = json.loads((Path(trial["run_dir"]) / "run.json").read_text())
        assert run["config"]["hyperparams"]["learning_rate"] == trial["hyperparams"]["learning_rate"]
    assert "feasible" in out and "validation prompts ..." in out
    # A point that is not in the search space fails before anything runs.
    for bad, accepted in (
        ("minibatch_episodes=4", "searches"),
        ("group_size=3", "out of the searched range"),
    ):
        monkeypatch.setattr(sys, "argv", [*sys.argv, "--enqueue", bad])
        with pytest.raises(SystemExit, match=accepted):
            tune.main()
        monkeypatch.setattr(sys, "argv", sys.argv[:-2])
    # Resumed with another budget or other prompts, its trials would not be comparable: refused,
    # naming the study's settings, and the study is left as it was.
    for flag, value, kept in (
        ("--budget-tokens", "128", "budget_tokens 64"),
        ("--eval-prompts", "3", "eval_prompts 2"),
    ):
        monkeypatch.setattr(sys, "argv", [*sys.argv, flag, value])
        with pytest.raises(SystemExit, match=f"ran with other settings: {kept} .*--out another folder"):
            tune.main()
        monkeypatch.setattr(sys, "argv", sys.argv[:-2])
    assert len((tmp_path / "grpo-TextGen-Sentiment-v0-tiny.jsonl").read_text().splitlines()) == 1
    # A study process killed during trial 1: the trial stays "running", and the study's lock is free.
    name = "grpo-TextGen-Sentiment-v0-tiny"
    assert (tmp_path / f"{name}.journal").is_file() and not (tmp_path / f"{name}.db").exists()
    killed_trial(study(tmp_path, name))
    # The study resumes: the killed trial is marked failed, the next trial (number 2) is the
    # enqueued point (the registry's values for the keys not given), and the untrained evaluation
    # is not redone.
    monkeypatch.setattr(sys, "argv", [*sys.argv, "--enqueue", "learning_rate=5e-5", "group_size=2"])
    tune.main()
    assert "validation prompts ..." not in capsys.readouterr().out
    assert [t.state for t in study(tmp_path, name).trials] == [
        TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE,
    ]  # fmt: skip
    lines = (tmp_path / "grpo-TextGen-Sentiment-v0-tiny.jsonl").read_text().splitlines()
    first, second = (json.loads(line) for line in lines)
    assert second["trial"] == 2
    assert second["hyperparams"] == {**first["hyperparams"], "learning_rate": 5e-5, "group_size": 2}
    # Each trial is compared with the untrained model and with trial 0 on the same prompts.
    base = first["untrained"]["rewards"]
    assert len(base) == len(first["metrics"]["rewards"]) == 2
    assert first["paired"]["trial0"] is None  # trial 0 is the registry's values itself
    assert first["paired"]["untrained"] == pytest.approx(
        mean_ci(np.subtract(first["metrics"]["rewards"], base))
    )
    versus_first = np.subtract(second["metrics"]["rewards"], first["metrics"]["rewards"])
    assert second["paired"]["trial0"] == pytest.approx(mean_ci(versus_first))
    # The untrained evaluation is kept for every study of the env: a study of another algorithm
    # with the same prompts reuses it.
    kept = tmp_path / "untrained-TextGen-Sentiment-v0-tiny-fp32-n2-seed0.json"
    assert json.loads(kept.read_text())["rewards"] == base
    monkeypatch.setattr(sys, "argv", [a if a != "grpo" else "rloo" for a in sys.argv])
    tune.main()
    assert "validation prompts ..." not in capsys.readouterr().out
    [other] = [
        json.loads(line)
        for line in (tmp_path / "rloo-TextGen-Sentiment-v0-tiny.jsonl").read_text().splitlines()
    ]
    assert other["untrained"]["rewards"] == base


def test_tune_tries_again_what_a_killed_trial_tried(tmp_path, monkeypatch):
    """A study killed during its first trial (the registry's values) and during an enqueued
    hypothesis: run again with the same command, it tries both again, and the retried registry
    trial is the one every other trial is compared with."""
    from optuna.trial import TrialState

    tune, command = tune_in_process(monkeypatch, tmp_path, "grpo", 64, "--trials", "2")
    name = "grpo-TextGen-Sentiment-v0-tiny"
    killed = study(tmp_path, name, create=True)
    registry = tune.registry_point("grpo", "TextGen-Sentiment-v0")
    hypothesis = {**registry, "learning_rate": 5e-5, "group_size": 2}
    assert [killed_trial(killed, registry), killed_trial(killed, hypothesis)] == [0, 1]
    monkeypatch.setattr(sys, "argv", [*command, "--enqueue", "learning_rate=5e-5", "group_size=2"])
    tune.main()
    trials = study(tmp_path, name).trials
    states = [t.state for t in trials]
    assert states == [TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert [trials[2].params, trials[3].params] == [registry, hypothesis]
    records = [json.loads(line) for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
    assert [r["trial"] for r in records] == [2, 3]
    assert records[0]["paired"]["trial0"] is None  # trial 2 stands for the killed trial 0
    versus_registry = np.subtract(records[1]["metrics"]["rewards"], records[0]["metrics"]["rewards"])
    assert records[1]["paired"]["trial0"] == pytest.approx(mean_ci(versus_registry))


class Killed(BaseException):
    """Stands for SIGKILL in a trial: Optuna catches Exception and KeyboardInterrupt (and marks
    the trial failed) but not this, so the trial stays "running" and the study's lock is freed
    on the way out, as the OS frees it when a process dies."""


@pytest.mark.parametrize(
    "enqueue", [[], ["--enqueue", "learning_rate=5e-5", "group_size=2"]], ids=["", "enqueue"]
)
def test_tune_killed_during_trial_0_retries_the_registry_first(tmp_path, monkeypatch, enqueue):
    """The issue's reproduction: a study killed during trial 0 (the registry's values) and run
    again at once (no heartbeat grace to wait out) fails the killed trial and runs the
    registry's values first, before any --enqueue point or search point; they stand for trial 0
    in every paired comparison."""
    from optuna.trial import TrialState

    tune, command = tune_in_process(monkeypatch, tmp_path, "grpo", 64, *enqueue)
    name = "grpo-TextGen-Sentiment-v0-tiny"
    registry = tune.registry_point("grpo", "TextGen-Sentiment-v0")

    def killed(target, args, label):
        if label.startswith("trial"):
            raise Killed
        return target(*args)

    monkeypatch.setattr(tune, "run_in_child", killed)
    with pytest.raises(Killed):
        tune.main()
    assert [(t.state, t.params) for t in study(tmp_path, name).trials][0] == (TrialState.RUNNING, registry)
    monkeypatch.setattr(tune, "run_in_child", lambda target, args, label: target(*args))
    tune.main()  # the same command
    trials = study(tmp_path, name).trials
    ran = [t for t in trials if t.state == TrialState.COMPLETE]
    assert trials[0].state == TrialState.FAIL and ran[0].params == registry  # retried first
    records = [json.loads(line) for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
    assert [r["trial"] for r in records] == [t.number for t in ran]
    assert records[0]["paired"]["trial0"] is None  # the registry's values themselves
    if not enqueue:
        assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
        return
    # The enqueued point, which was waiting when the study was killed, runs next (once).
    monkeypatch.setattr(sys, "argv", [*command[: -len(enqueue)], "--trials", "1", *enqueue])
    tune.main()
    trials = study(tmp_path, name).trials
    ran = [t for t in trials if t.state == TrialState.COMPLETE]
    assert [t.state for t in trials] == [TrialState.FAIL] * 2 + [TrialState.COMPLETE] * 2
    assert ran[1].params == {**registry, "learning_rate": 5e-5, "group_size": 2}
    records = [json.loads(line) for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
    versus_registry = np.subtract(records[1]["metrics"]["rewards"], records[0]["metrics"]["rewards"])
    assert records[1]["paired"]["trial0"] == pytest.approx(mean_ci(versus_registry))


def train_error(capsys, argv: list[str]) -> str:
    """What ``textgym train ARGV`` prints on its error line."""
    from textgym.cli import main

    with pytest.raises(SystemExit):
        main(["train", *argv])
    return capsys.readouterr().err.strip().splitlines()[-1].split("error: ", 1)[1]


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        pytest.param("--env", "Bogus-v0", "argument --env: invalid choice: 'Bogus-v0'", id="unknown-env"),
        pytest.param("--algo", "sac", "argument --algo: invalid choice: 'sac'", id="unknown-algo"),
        pytest.param("--budget-minutes", "0", "budget_minutes must be > 0, got 0", id="budget-minutes-zero"),
        pytest.param(
            "--budget-minutes", "nan", "budget_minutes must be a finite number", id="budget-minutes-nan"
        ),
        pytest.param("--budget-tokens", "0", "budget_tokens must be a positive int", id="budget-tokens-zero"),
        pytest.param("--eval-prompts", "0", "eval_prompts must be a positive int", id="eval-prompts-zero"),
        pytest.param("--seed", "-1", "seed must be", id="seed-negative"),
        pytest.param("--model", "no-such-model", "no-such-model", id="unknown-model"),
        pytest.param("--trials", "0", "--trials 0: expected at least 1", id="trials-zero"),
        pytest.param("--max-perplexity", "nan", "--max-perplexity nan: expected a finite", id="bound-nan"),
    ],
)
def test_tune_checks_every_setting_before_anything_is_stored(
    tmp_path, monkeypatch, capsys, flag, value, message
):
    """A bad setting is one message (an unknown env or algo: the one ``textgym train`` gives)
    before the study is created or anything evaluated, so the corrected command then runs."""
    tune, command = tune_in_process(monkeypatch, tmp_path / "out", "grpo", 64)
    with pytest.raises(SystemExit) as exit:
        tune.main([*command[1:], flag, value])
    said = f"{exit.value.code}" + capsys.readouterr().err
    assert message in said and "Traceback" not in said
    if flag in ("--env", "--algo"):  # argparse's error line, word for word textgym train's
        assert exit.value.code == 2 and said.splitlines()[-1].split("error: ", 1)[1] == train_error(
            capsys, [flag, value]
        )
    assert not (tmp_path / "out").exists()


def test_tune_runs_the_corrected_command_of_a_study_whose_settings_never_ran(tmp_path, monkeypatch):
    """A study that stored settings but evaluated no trial with them (an earlier version stored
    --budget-minutes 0 and failed on it) takes the corrected command's settings instead of
    refusing it; the settings of a study with evaluated trials still bind (the resume test)."""
    from optuna.trial import TrialState

    tune, command = tune_in_process(monkeypatch, tmp_path, "grpo", 64)
    name = "grpo-TextGen-Sentiment-v0-tiny"
    stale = study(tmp_path, name, create=True)
    stale.set_user_attr("settings", {**tune.settings(tune.parse(command[1:])), "budget_minutes": 0})
    killed_trial(stale, tune.registry_point("grpo", "TextGen-Sentiment-v0"))
    tune.main()
    trials = study(tmp_path, name).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert study(tmp_path, name).user_attrs["settings"]["budget_minutes"] == 1e4


def test_tune_refuses_a_study_another_process_runs(tmp_path, monkeypatch):
    """One process runs a study at a time (so a trial left running is a killed process's)."""
    from textgym.agents.runs.checkpoints import RunLock

    tune, _ = tune_in_process(monkeypatch, tmp_path, "grpo", 64)
    with (
        RunLock(tmp_path / "runs" / "grpo-TextGen-Sentiment-v0-tiny"),
        pytest.raises(SystemExit, match=f"is being run by process {os.getpid()}: wait for it to end"),
    ):
        tune.main()
    assert not (tmp_path / "grpo-TextGen-Sentiment-v0-tiny.jsonl").exists()


def test_tune_copies_a_sqlite_study_into_its_journal(tmp_path, monkeypatch):
    """A study kept by earlier versions in ``<name>.db`` resumes from a copy in the journal."""
    import optuna

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import tune

    name = "grpo-TextGen-Sentiment-v0-tiny"
    old = optuna.create_study(
        study_name=name, storage=f"sqlite:///{tmp_path / name}.db", direction="maximize"
    )
    old.set_user_attr("settings", {"seed": 0})
    space = {"kl_coef": tune.SPACE["kl_coef"]}
    old.add_trial(optuna.trial.create_trial(params={"kl_coef": 0.01}, distributions=space, value=0.5))
    copied = study(tmp_path, name)
    assert copied.user_attrs == {"settings": {"seed": 0}}
    assert [(t.params, t.value) for t in copied.trials] == [({"kl_coef": 0.01}, 0.5)]
    assert (tmp_path / f"{name}.journal").is_file()


def test_tune_with_rungs_reports_each_rung_and_prunes(tmp_path, monkeypatch, capsys):
    import optuna

    tune, command = tune_in_process(monkeypatch, tmp_path, "textppo", 96, "--rungs", "2")
    tune.main()  # trial 0: the pruner waits for --prune-after (2) full trials, so both rungs run
    jsonl = tmp_path / "textppo-TextGen-Sentiment-v0-tiny.jsonl"
    [first] = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert first["pruned"] is False and first["rungs"]["reached"] == 2 and len(first["rungs"]["rewards"]) == 2
    run = json.loads((Path(first["run_dir"]) / "run.json").read_text())
    assert run["config"]["budget_tokens"] == 96  # the last rung trained to the whole budget
    assert "rung 2/2" in capsys.readouterr().out

    # A pruner that stops every trial at its first rung: the trial ends pruned after half its budget.
    # Its verdict is numpy's bool, as the median pruner's (a comparison with np.nanpercentile) is.
    class Always(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return np.True_

    monkeypatch.setattr(tune, "pruner", lambda prune_after: Always())
    monkeypatch.setenv("COLUMNS", "300")  # the table's cells on one line each
    tune.main()
    second = json.loads(jsonl.read_text().splitlines()[1])
    assert second["pruned"] is True and second["rungs"] == {
        "of": 2,
        "reached": 1,
        "rewards": [second["metrics"]["reward"]],
    }
    assert json.loads((Path(second["run_dir"]) / "run.json").read_text())["config"]["budget_tokens"] == 48
    trials = study(tmp_path, "textppo-TextGen-Sentiment-v0-tiny").trials
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED"]
    assert len(trials[0].intermediate_values) == 2
    assert "pruned at rung 1" in capsys.readouterr().out

    monkeypatch.setattr(sys, "argv", [*command[:-1], "0"])
    with pytest.raises(SystemExit, match="expected --rungs >= 1"):
        tune.main()


def run_script(monkeypatch, name: str, argv: list[str]) -> None:
    """``python benchmarks/<name>.py ARGV`` in this process (no interpreter start)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.setattr(sys, "argv", [f"{name}.py", *argv])
    importlib.import_module(name).main()


def test_multiturn_benchmark_times_the_cached_and_the_reencoded_rollout(tmp_path, monkeypatch):
    argv = ["--model", "tiny", "--games", "2", "--repeats", "1", "--out", str(tmp_path)]
    run_script(monkeypatch, "multiturn", argv)
    [path] = tmp_path.glob("multiturn-*.json")
    record = json.loads(path.read_text())
    for way in ("cached", "reencoded", "single_turn"):
        assert record[way]["tokens"] > 0 and record[way]["tokens_per_s"] > 0 and len(record["runs"][way]) == 1
    assert 0 < record["cached"]["end_turns_share"] < 1 and record["single_turn"]["end_turns_seconds"] == 0
    assert set(record["ratios"]) == {"cached_vs_reencoded", "cached_vs_single_turn"}
    assert record["single_turn"]["tokens"] == 2 * record["single_turn_length"]  # no end token: full length


def test_partner_batching_benchmark_gets_the_same_replies_in_fewer_calls(tmp_path, monkeypatch):
    argv = ["--model", "tiny", "--envs", "3", "--steps", "30", "--repeats", "1", "--out", str(tmp_path)]
    run_script(monkeypatch, "partner_batching", argv)
    [path] = tmp_path.glob("partner_batching-*.json")
    record = json.loads(path.read_text())
    alone, batched = record["alone"], record["batched"]
    assert alone["replies"] == batched["replies"] > 0 and alone["calls"] == alone["replies"]
    assert batched["calls"] < batched["replies"]  # some steps ended several envs' turns
    assert 0 < batched["partner_share"] < 1 and len(record["runs"]["batched"]) == 1


def test_precision_benchmark_compares_precisions_and_lora_in_one_run(tmp_path, monkeypatch):
    small = ["--model", "tiny", "--batch", "2", "--minibatch", "2", "--new-tokens", "3", "--repeats", "1"]
    run_script(monkeypatch, "precision", [*small, "--device", "cpu", "--out", str(tmp_path)])
    [path] = tmp_path.glob("precision-*.json")
    record = json.loads(path.read_text())
    settings = {"fp32-full", "fp32-lora", "bf16-full", "bf16-lora"}
    assert set(record["settings"]) == settings and record["device"] == "cpu" and record["auto"] == "fp32"
    full, lora = record["settings"]["fp32-full"], record["settings"]["bf16-lora"]
    assert lora["trainable_fraction"] < 0.1 < full["trainable_fraction"] == 1.0
    assert (full["precision"], lora["precision"]) == ("fp32", "bf16")
    expected = {f"{s}_vs_fp32-full/{part}" for s in settings for part in ("rollout", "update")}
    assert set(record["ratios"]) == expected
    assert all(ratio > 0 for ratio in record["ratios"].values())


def test_precision_benchmark_with_plain_also_times_acting_on_the_plain_weights(tmp_path, monkeypatch):
    small = ["--model", "tiny", "--batch", "2", "--minibatch", "2", "--new-tokens", "3", "--repeats", "1"]
    small += ["--precisions", "fp32", "--no-lora", "--plain", "--device", "cpu"]
    run_script(monkeypatch, "precision", [*small, "--out", str(tmp_path)])
    [path] = tmp_path.glob("precision-*.json")
    record = json.loads(path.read_text())
    assert set(record["settings"]) == {"fp32-full", "fp32-full-plain"}
    assert record["args"]["plain"] is True and record["ratios"]["fp32-full-plain_vs_fp32-full/rollout"] > 0


def test_gpu_check_runs_its_whole_check_on_the_cpu(tmp_path, monkeypatch):
    small = ["--model", "tiny", "--batch", "2", "--minibatch", "2", "--new-tokens", "3"]
    small += ["--eval-prompts", "2"]
    budget = ["--minutes", "1e4", "--budget-tokens", "8"]  # stops on tokens, whatever the speed
    run_script(monkeypatch, "gpu_check", [*small, *budget, "--device", "cpu", "--out", str(tmp_path)])
    [path] = tmp_path.glob("gpu-check-*.json")
    record = json.loads(path.read_text())
    assert (record["device"], record["precision"]) == ("cpu", "fp32")
    assert set(record["ratios"]) == {"rollout_vs_generate", "update_vs_forward_backward"}
    assert all(ratio > 0 for ratio in record["ratios"].values()) and record["peak_memory_gb"] > 0
    training = record["training"]
    assert training["train_tokens"] >= 8 and training["before"]["n"] == training["after"]["n"] == 2
    assert json.loads((Path(training["run_dir"]) / "run.json").read_text())["status"] == "finished"


def test_compare_trl_without_trl_fails_before_training_and_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "trl", None)  # import trl raises ImportError
    with pytest.raises(SystemExit, match="pip install trl"):
        run_script(monkeypatch, "compare_trl", ["--model", "tiny", "--out", str(tmp_path)])
    assert not any(tmp_path.iterdir())  # nothing trained, nothing written


def test_compare_trl_refuses_an_unknown_trl_precision_before_training(tmp_path, monkeypatch):
    expected = r"--trl-precision must be one of \['default', 'same', 'fp32', 'bf16'\], got 'fp16'"
    with pytest.raises(SystemExit, match=expected):
        run_script(monkeypatch, "compare_trl", ["--trl-precision", "fp16", "--out", str(tmp_path)])
    assert not any(tmp_path.iterdir())


def test_compare_trl_trains_both_and_records_rates_and_gains(tmp_path, monkeypatch):
    pytest.importorskip("trl")  # an optional benchmark dependency, not in the test extra
    small = ["--model", "tiny", "--minutes", "0.01", "--eval-prompts", "2", "--lora"]
    small += ["--hyperparams", "kl_coef=0", "--trl-precision", "same"]
    run_script(monkeypatch, "compare_trl", [*small, "--out", str(tmp_path)])
    [path] = tmp_path.glob("compare-trl-*.json")
    record = json.loads(path.read_text())
    assert set(record["tokens_per_s"]) == set(record["gain"]) == {"textgym", "trl"}
    assert record["trl"]["tokens"] > 0 and record["trl"]["steps"] >= 1  # one step at least
    assert record["textgym"]["train_tokens"] > 0 and record["args"]["lora"] is True
    assert record["trl"]["precision"] == record["textgym"]["precision"] == "fp32"  # "same": textgym's
    assert record["ratio"] == pytest.approx(record["tokens_per_s"]["textgym"] / record["tokens_per_s"]["trl"])
    assert record["after"]["trl"]["n"] == record["before"]["n"] == 2
    [run] = tmp_path.glob("compare-trl-textppo-*/run.json")  # the textgym run took the overrides
    values = json.loads(run.read_text())["config"]["hyperparams"]
    assert values["kl_coef"] == 0 and values["policy_kwargs"]["lora"] is True
    # LoRA's rate on textgym's side (the registry's lora block), the whole model's on TRL's.
    assert values["learning_rate"] == 2e-4 and record["lr_trl"] == 3.5e-5
