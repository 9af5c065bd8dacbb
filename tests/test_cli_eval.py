"""``textgym eval --json``: the output path is checked before the evaluation, and written whole."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import textgym.agents.runs.checkpoints
import textgym.agents.runs.evaluation
from textgym.cli import main

EVAL = ["eval", "--model", "tiny", "--env", "TextGen-Sentiment-v0", "-n", "2"]


@pytest.mark.parametrize(
    ("where", "match"),
    [
        ("afile/x.json", "is a file, not a folder"),
        ("afile/deeper/x.json", "is a file, not a folder"),
        ("folder", "is a folder, not a file"),
    ],
)
def test_eval_checks_its_json_path_before_evaluating(tmp_path, monkeypatch, capsys, where, match):
    (tmp_path / "afile").write_text("not a folder")
    (tmp_path / "folder").mkdir()

    def evaluate(*args, **kwargs):
        raise AssertionError("evaluated before the --json path was checked")

    monkeypatch.setattr(textgym.agents.runs.evaluation, "evaluate", evaluate)
    assert main([*EVAL, "--json", str(tmp_path / where)]) == 2
    out = capsys.readouterr().out
    assert "textgym: error:" in out and match in out and str(tmp_path / where.split("/")[0]) in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "folder"]
    assert (tmp_path / "afile").read_text() == "not a folder" and not any((tmp_path / "folder").iterdir())


def test_eval_writes_its_json_whole(tmp_path, capsys):
    path = tmp_path / "new" / "x.json"
    assert main([*EVAL, "--json", str(path)]) == 0
    written = json.loads(path.read_text())
    assert len(written["examples"]) == 2 and "reward" in written["metrics"]
    path.write_text("an earlier file")
    assert main([*EVAL, "--seed", "1", "--json", str(path)]) == 0
    assert json.loads(path.read_text())["metrics"].keys() == written["metrics"].keys()
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]  # no temporary file left behind


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--show", "-1"], "--show must be >= 0 (sample texts to print), got -1"),
        (["--seeds", "-3"], "--seeds must be >= 1 (sampling seeds per prompt), got -3"),
        (["--seeds", "0"], "--seeds must be >= 1 (sampling seeds per prompt), got 0"),
        (["--seed", str(2**32)], "--seed must be an int from 0 to 4294967295, got 4294967296"),
        (["--seed", "-1"], "--seed must be an int from 0 to 4294967295, got -1"),
        (["--seed", str(2**32 - 1), "--seeds", "2"], "(with 2 seeds, at most 4294967294), got 4294967295"),
    ],
)
def test_eval_bad_numbers_are_one_error_before_evaluating(monkeypatch, capsys, extra, message):
    def evaluate(*args, **kwargs):
        raise AssertionError("evaluated despite a bad argument")

    monkeypatch.setattr(textgym.agents.runs.evaluation, "evaluate", evaluate)
    assert main([*EVAL, *extra]) == 2
    assert message in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("seeds", [[2**32], [-1], [0, 2**64]])
def test_evaluate_takes_seeds_from_0_to_2_to_the_32(seeds):
    with pytest.raises(ValueError, match="seeds must be a non-empty list of ints from 0 to 4294967295"):
        textgym.agents.runs.evaluation.evaluate("tiny", "TextGen-Sentiment-v0", n=1, seeds=seeds)


RUN = "benchmarks/results/train-20m-grpo-dialogue-lr5e-5-ee780f8/run.json"  # a real run's settings


@pytest.mark.parametrize(
    ("saved", "extra", "expected"),
    [
        ({"reward": "dialogue-relevance"}, [], {"reward": "dialogue-relevance"}),  # the run's own env
        (None, [], {}),  # a run from before --env-kwargs
        ({"reward": "dialogue-relevance"}, ["--env-kwargs", "reward=dialogue"], {"reward": "dialogue"}),
        ({"reward": "dialogue-relevance"}, ["--env", "TextGen-Sentiment-v0"], {}),  # another env: not its
    ],
)
def test_eval_of_a_run_directory_uses_the_runs_env_kwargs(tmp_path, monkeypatch, saved, extra, expected):
    run = json.loads((Path(__file__).parents[1] / RUN).read_text())
    if saved is not None:
        run["config"]["env_kwargs"] = saved
    (tmp_path / "run.json").write_text(json.dumps(run))
    calls = []

    def evaluate(policy, env_id, *args, **kwargs):
        calls.append((env_id, kwargs["env_kwargs"]))
        raise RuntimeError("stop here")

    monkeypatch.setattr(textgym.agents.runs.checkpoints, "checkpoint_path", lambda path: (path, "grpo"))
    monkeypatch.setattr(textgym.agents.runs.evaluation, "evaluate", evaluate)
    with pytest.raises(RuntimeError, match="stop here"):
        main(["eval", "--checkpoint", str(tmp_path), "-n", "2", *extra])
    assert calls[0][1] == expected


def test_eval_rejects_env_kwargs_the_env_does_not_take(monkeypatch, capsys):
    monkeypatch.setattr(textgym.agents.runs.evaluation, "evaluate", lambda *a, **k: pytest.fail("evaluated"))
    assert main([*EVAL, "--env-kwargs", "rewrd=sentiment"]) == 2
    assert "unknown key(s) ['rewrd'] for TextGen-Sentiment-v0" in " ".join(capsys.readouterr().out.split())
