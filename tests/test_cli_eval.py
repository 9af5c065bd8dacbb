"""``textgym eval --json``: the output path is checked before the evaluation, and written whole."""

from __future__ import annotations

import json

import pytest

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
