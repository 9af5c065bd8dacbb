"""Exporting a trained policy as a standard transformers model (``textgym.agents.runs.export``)."""

from __future__ import annotations

import json
import shutil

import gymnasium as gym
import pytest
import torch
from safetensors.torch import load_file
from stable_baselines3 import PPO
from transformers import AutoModelForCausalLM, GenerationConfig, pipeline

from textgym.agents import LMActorCriticPolicy, TextPPO, export_model
from textgym.agents.runs.checkpoints import (
    RUN_FILE,
    CheckpointError,
    load_agent,
    read_checkpoint,
    save_agent,
    write_json,
)
from textgym.cli import main
from textgym.models import eos_token_ids, load_tokenizer, logits_width
from textgym.models.incremental import left_pad

ENV = "TextGen-Sentiment-v0"
HYPERPARAMS = {"learning_rate": 2e-5, "batch_episodes": 4, "minibatch_episodes": 2, "kl_coef": 0.05}
BEFORE = {"reward": -0.125, "reward_ci95": 0.25, "perplexity": 41.5, "distinct_1": 0.5}
AFTER = {"reward": 0.375, "reward_ci95": 0.125, "perplexity": 43.0, "distinct_1": 0.25}


@pytest.fixture(scope="module", params=[False, True], ids=["full", "lora"])
def run_dir(request, tmp_path_factory):
    """A run directory as ``textgym train`` leaves it, for a tiny TextPPO agent trained on one
    small batch, its weights then moved well away from the initial model (one batch at a small
    learning rate barely moves them), so that an export that dropped them would differ."""
    lora = request.param
    out = tmp_path_factory.mktemp("runs") / ("lora" if lora else "full")
    env = gym.make(ENV, model="tiny", max_new_tokens=8)
    kwargs = {"model": "tiny", "lora": True} if lora else {"model": "tiny"}
    agent = TextPPO(
        "LMPolicy",
        env,
        learning_rate=2e-5,
        batch_episodes=4,
        minibatch_episodes=2,
        policy_kwargs=kwargs,
        seed=0,
    )
    agent.learn(4)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in agent.policy.net.named_parameters():
            if ("lora_B" in name) if lora else ("q_proj" in name or "value_head" in name):
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    save_agent(agent, out, {"tokens": agent.num_timesteps})
    config = {
        "env": ENV,
        "algo": "textppo",
        "model": "tiny",
        "seed": 0,
        "hyperparams": {**HYPERPARAMS, "lora": lora},
    }
    summary = {"train_tokens": agent.num_timesteps, "train_minutes": 0.1, "before": BEFORE, "after": AFTER}
    write_json(out / RUN_FILE, {"config": config, "status": "finished", "summary": summary})
    write_json(out / "eval-before.json", {"env_id": ENV, "metrics": BEFORE})
    write_json(out / "eval-after.json", {"env_id": ENV, "metrics": AFTER})
    return out


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    return export_model(run_dir, tmp_path_factory.mktemp("exports") / run_dir.name)


@torch.no_grad()
def greedy_tokens_of_the_agent(net, prompt, max_new_tokens):
    """The policy's most likely token at each step (its processed logits over the whole
    context), until an end token or the budget, as the env plays an episode."""
    ends = set(eos_token_ids("tiny"))
    row, tokens = list(prompt), []
    for _ in range(max_new_tokens):
        logits, _ = net.last(*left_pad([row], net.pad_id))  # (1, V), invalid ids at -inf
        tokens.append(int(logits[0].argmax()))
        row.append(tokens[-1])
        if tokens[-1] in ends:
            break
    return tokens


def test_exported_model_generates_the_agents_greedy_tokens(run_dir, exported):
    env = gym.make(ENV, model="tiny").unwrapped
    prompts = [env.encode_prompt(example)[0] for example in env.examples[:4]]
    net = load_agent(run_dir).policy.net
    expected = [greedy_tokens_of_the_agent(net, prompt, env.max_new_tokens) for prompt in prompts]

    model = AutoModelForCausalLM.from_pretrained(exported)
    got = []
    for prompt in prompts:
        ids = torch.tensor([prompt])
        out = model.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=env.max_new_tokens
        )
        got.append(out[0, len(prompt) :].tolist())
    assert got == expected
    assert any(len(tokens) > 1 for tokens in got)
    # The tiny model has logit rows past the tokenizer: the agent masks them, the export
    # suppresses them, and neither ever emits one.
    vocab = len(load_tokenizer("tiny"))
    assert logits_width("tiny") > vocab and all(t < vocab for tokens in got for t in tokens)


def test_exported_directory_is_a_plain_transformers_model(run_dir, exported):
    config = json.loads((exported / "config.json").read_text())
    assert "quantization_config" not in config and "peft" not in json.dumps(config).lower()
    assert not list(exported.glob("adapter_*"))  # LoRA merged, not saved as adapters
    model = AutoModelForCausalLM.from_pretrained(exported)
    assert getattr(model, "hf_quantizer", None) is None and not getattr(model, "is_quantized", False)
    assert not any("lora" in name for name, _ in model.named_parameters())

    generation = GenerationConfig.from_pretrained(exported)
    vocab, width = len(load_tokenizer("tiny")), logits_width("tiny")
    assert generation.suppress_tokens == list(range(vocab, width))
    assert sorted(generation.eos_token_id) == sorted(eos_token_ids("tiny"))
    assert generation.do_sample and generation.temperature == 1.0 and generation.top_k == 0

    net = load_agent(run_dir).policy.net
    head = load_file(exported / "value_head.safetensors")
    assert set(head) == {"value_head.weight", "value_head.bias"}
    assert torch.equal(head["value_head.weight"], net.value_head.weight)
    assert not any("value_head" in key for key in model.state_dict())
    if net.lora is None:  # a full fine-tune: the exported weights are the agent's
        for name, tensor in model.state_dict().items():
            assert torch.equal(tensor, net.causal.state_dict()[name]), name

    text = pipeline("text-generation", model=str(exported))("Hello", max_new_tokens=4, do_sample=False)
    assert text[0]["generated_text"].startswith("Hello")
    assert not [p for p in exported.parent.iterdir() if p.name.startswith(".")]  # no staging left


def test_model_card_names_env_algorithm_hyperparameters_and_metrics(run_dir, exported):
    card = (exported / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\n")
    assert ENV in card and "TextPPO" in card and "value_head.safetensors" in card
    assert "| learning_rate | 2e-05 |" in card and "| batch_episodes | 4 |" in card
    assert "| metric | before training | after training |" in card
    assert "| reward | -0.125 ± 0.25 | 0.375 ± 0.12 |" in card
    assert "| perplexity | 41.5 | 43 |" in card
    lora = load_agent(run_dir).policy.net.lora is not None
    assert ("LoRA adapters" in card) == lora and ("full fine-tune" in card) != lora
    assert "suppress_tokens" in card  # the tiny model needs its extra logit rows suppressed


def test_export_refuses_a_non_empty_out_and_bad_checkpoints(run_dir, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        export_model(run_dir, taken)
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]

    with pytest.raises(CheckpointError, match="no checkpoint at"):
        export_model(tmp_path / "nowhere", tmp_path / "a")
    corrupt = tmp_path / "corrupt"
    shutil.copytree(run_dir, corrupt)
    read_checkpoint(corrupt).archive.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="could not be loaded"):
        export_model(corrupt, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt", "taken"]


def test_cli_export(run_dir, tmp_path, capsys):
    out = tmp_path / "model"
    assert main(["export", "--checkpoint", str(run_dir), "--out", str(out)]) == 0
    assert (out / "model.safetensors").is_file() and str(out) in capsys.readouterr().out
    assert main(["export", "--checkpoint", str(run_dir), "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().out
    assert main(["export", "--checkpoint", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    assert "no checkpoint at" in capsys.readouterr().out


def test_a_stock_ppo_archive_exports_too(tmp_path):
    env = gym.make(ENV, model="tiny", max_new_tokens=4)
    agent = PPO(LMActorCriticPolicy, env, n_steps=4, batch_size=4, policy_kwargs={"model": "tiny"}, seed=0)
    agent.save(tmp_path / "agent.zip")
    out = export_model(tmp_path / "agent.zip", tmp_path / "model")
    model = AutoModelForCausalLM.from_pretrained(out)
    net = agent.policy.net
    assert all(torch.equal(t, net.causal.state_dict()[name]) for name, t in model.state_dict().items())
    card = (out / "README.md").read_text()
    assert "trained with PPO" in card and "## Evaluation" not in card  # a bare archive has no run files
