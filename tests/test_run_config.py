"""A run's configuration (``textgym.agents.runs.config``): budgets, validation before anything is
written, and run.json files of earlier versions."""

from __future__ import annotations

import dataclasses
import json

import pytest
from run_helpers import QUIET, snapshot, tiny_config

from textgym.agents.runs.checkpoints import (
    RUN_FILE,
    CheckpointError,
)
from textgym.agents.runs.config import parse_budget, parse_env_kwargs
from textgym.agents.runs.training import train


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10m", (None, 10.0)),
        ("90s", (None, 1.5)),
        ("1.5h", (None, 90.0)),
        ("20000", (20000, None)),
        ("20k", (20000, None)),
        ("5m,3k", (3000, 5.0)),
    ],
)
def test_parse_budget(text, expected):
    assert parse_budget(text) == expected


@pytest.mark.parametrize("text", ["", "5x", "m", "-3m", "0", "ten minutes"])
def test_parse_budget_rejects_bad_text(text):
    with pytest.raises(ValueError, match="budget"):
        parse_budget(text)


@pytest.mark.parametrize(
    ("text", "twice"), [("10m,20k,30k", "tokens"), ("5m,90s", "a time"), ("1k,2000", "tokens")]
)
def test_parse_budget_rejects_a_repeated_budget(text, twice):
    """The last of two token budgets used to win silently."""
    with pytest.raises(ValueError, match=f"bad budget '{text}': it gives {twice} twice"):
        parse_budget(text)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"env": "TextGen-Nope-v0"}, "unknown env"),
        ({"algo": "sac"}, "unknown algo"),
        ({"model": "no/such-model"}, "unknown model"),
        ({"budget_minutes": 0}, "budget_minutes"),
        ({"profile": "huge"}, "unknown profile 'huge'"),
        ({"hyperparams": {"batch_episodes": 0}}, "'batch_episodes' of textppo must be >= 1"),
        ({"hyperparams": {"learning_rate": float("nan")}}, "'learning_rate' of textppo takes a finite float"),
        ({"hyperparams": {"n_epochs": 1.5}}, "'n_epochs' of textppo takes an int"),
        ({"hyperparams": {"lr": 1e-3}}, "unknown hyperparameter 'lr' for textppo; accepted: learning_rate"),
        ({"hyperparams": {"n_envs": 4}}, "unknown hyperparameter 'n_envs' for textppo"),
        ({"hyperparams": {"policy_kwargs": {"temperature": 0}}}, "policy_kwargs: temperature"),
        ({"hyperparams": {"batch_episodes": 2, "minibatch_episodes": 4}}, "exceeds batch_episodes"),
        # Well-typed values that only the algorithm's constructor rejects.
        ({"hyperparams": {"kl_estimator": "k9"}}, r"kl_estimator must be one of \('k1', 'k3'\), got 'k9'"),
        ({"hyperparams": {"reward_normalization": "x"}}, "reward_normalization must be one of"),
        ({"hyperparams": {"gamma": 1.5}}, r"gamma must be a number in \[0, 1\]"),
        # LoRA arguments, checked against the model before anything is written.
        ({"hyperparams": {"policy_kwargs": {"lora": {"r": -1}}}}, r"lora r \(the adapters' rank\) must be"),
        ({"hyperparams": {"policy_kwargs": {"lora": {"target_modules": ["nope"]}}}},
         r"lora target_modules \['nope'\]: no module of LlamaForCausalLM has that name"),
        ({"hyperparams": {"policy_kwargs": {"lora": {"target_modules": "nope"}}}},
         "bad lora arguments .* for the model 'tiny': Target modules nope not found"),
        ({"hyperparams": {"policy_kwargs": {"lora": {"bias": "x"}}}}, "Requested bias: x, is not implem"),
        # Seeds NumPy can take: an overflow used to come after the run directory was written.
        ({"seed": 2**32}, "seed must be an int from 0 to 4294967295, got 4294967296"),
        ({"seed": -1}, "seed must be an int from 0 to 4294967295, got -1"),
        # The env's own arguments: its keys, JSON values (run.json), and the env's own checks.
        ({"env_kwargs": {"rewrd": "rouge"}}, r"env_kwargs has unknown key\(s\) \['rewrd'\] for "
         r"TextGen-Sentiment-v0; accepted keys: \['target', 'dataset', "),
        ({"env_kwargs": {"model": "tiny"}}, r"unknown key\(s\) \['model'\]"),
        ({"env_kwargs": {"reward": len}}, "env_kwargs must hold JSON values .* not a function"),
        ({"env_kwargs": {"reward": "nope"}}, "unknown reward 'nope'"),
        ({"env_kwargs": {"max_new_tokens": 0}}, "max_new_tokens"),
        ({"env_kwargs": ["reward=rouge"]}, "env_kwargs must be a dict of TextGen-Sentiment-v0's arguments"),
    ],
)  # fmt: skip
def test_bad_config_stops_before_writing(tmp_path, change, match):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=match):
        train(dataclasses.replace(tiny_config(), **change), out, console=QUIET)
    assert not out.exists()


def test_run_json_from_before_the_registry_is_recognised(tmp_path):
    """A run.json with the flat config of earlier versions (learning_rate, kl_coef, lora, ...)
    is the same run as today's config with those values."""
    out = tmp_path / "run"
    train(tiny_config(), out, console=QUIET)
    run = json.loads((out / RUN_FILE).read_text())
    config = {k: v for k, v in run["config"].items() if k not in ("hyperparams", "profile")}
    flat = dict(learning_rate=3.5e-5, kl_coef=0.05, lora=False, batch_episodes=4, minibatch_episodes=2,
                n_envs=8, n_steps=16, batch_size=8)  # fmt: skip
    (out / RUN_FILE).write_text(json.dumps({**run, "config": {**config, **flat}}))
    before = snapshot(out)
    with pytest.raises(ValueError, match="already holds this run"):
        train(tiny_config(), out, console=QUIET)
    with pytest.raises(ValueError, match=r"holds another run \(batch_episodes=4 \(asked 8\)"):
        train(tiny_config(hyperparams={"batch_episodes": 8}), out, resume=True, console=QUIET)
    (out / RUN_FILE).write_text(json.dumps({**run, "config": {**config, **flat, "algo": "sac"}}))
    with pytest.raises(CheckpointError, match="cannot read.*unknown algo 'sac'"):
        train(tiny_config(), out, resume=True, console=QUIET)
    assert {k: v for k, v in snapshot(out).items() if k != RUN_FILE} == {
        k: v for k, v in before.items() if k != RUN_FILE
    }


def test_a_run_trains_and_evaluates_on_its_env_kwargs_and_keeps_them(tmp_path):
    """``env_kwargs`` reach the training env and every evaluation, run.json keeps them, and a
    resume with others is another run."""
    out = tmp_path / "run"
    config = tiny_config(env_kwargs={"reward": "rouge1", "max_new_tokens": 5}, budget_tokens=40)
    result = train(config, out, console=QUIET)
    assert json.loads((out / RUN_FILE).read_text())["config"]["env_kwargs"] == config.env_kwargs
    for name in ("eval-before.json", "eval-after.json"):
        rows = json.loads((out / name).read_text())["examples"]
        assert all(set(r["components"]) == {"rouge1"} and r["tokens"] <= 5 for r in rows)
    assert result["summary"]["train_tokens"] >= 40
    before = snapshot(out)
    other = dataclasses.replace(config, env_kwargs={"reward": "rouge2", "max_new_tokens": 5})
    with pytest.raises(ValueError, match=r"holds another run \(env_kwargs=.*'rouge1'.*\(asked .*'rouge2'"):
        train(other, out, resume=True, console=QUIET)
    assert snapshot(out) == before


def test_a_run_json_without_env_kwargs_is_a_run_without_them(tmp_path):
    out = tmp_path / "run"
    train(tiny_config(), out, console=QUIET)
    run = json.loads((out / RUN_FILE).read_text())
    del run["config"]["env_kwargs"]  # as earlier versions wrote it
    (out / RUN_FILE).write_text(json.dumps(run))
    with pytest.raises(ValueError, match="already holds this run"):
        train(tiny_config(), out, console=QUIET)


def test_parse_env_kwargs_reads_the_command_lines_pairs():
    pairs = ["reward=dialogue-relevance", "max_new_tokens=48", "dataset_kwargs={context_turns: 2}"]
    assert parse_env_kwargs(pairs) == {
        "reward": "dialogue-relevance", "max_new_tokens": 48, "dataset_kwargs": {"context_turns": 2}
    }  # fmt: skip
    with pytest.raises(ValueError, match="--env-kwargs takes KEY=VALUE, got 'reward'"):
        parse_env_kwargs(["reward"])
    with pytest.raises(ValueError, match="env argument 'reward' is given twice"):
        parse_env_kwargs(["reward=a", "reward=b"])
