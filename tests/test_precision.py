"""Devices and mixed precision: ``--device auto|cpu|cuda``, ``--precision auto|fp32|bf16``.

The suite's ``auto`` precision is fp32 (conftest replaces the CPU probe), so no other test
depends on whether this machine runs bf16 fast; the tests here ask for bf16 explicitly.
"""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from rich.console import Console
from stable_baselines3 import PPO

from textgym.agents import EpisodeRolloutBuffer, LMActorCritic, LMActorCriticPolicy, TextPPO
from textgym.agents.common.rollout import generate
from textgym.agents.leaderboard.config import LeaderboardConfig, RunSpec
from textgym.agents.runs.checkpoints import load_agent
from textgym.agents.runs.config import TrainConfig
from textgym.agents.runs.evaluation import evaluate
from textgym.agents.runs.training import train
from textgym.cli import main
from textgym.models import logits_width
from textgym.models import precision as precision_module
from textgym.models.incremental import left_pad
from textgym.models.precision import check_device, resolve_device, resolve_precision

QUIET = Console(quiet=True)
ROWS = [[1, 2, 3, 4, 5], [7, 8, 9]]


def network(precision: str, **options) -> LMActorCritic:
    torch.manual_seed(0)
    return LMActorCritic("tiny", logits_width("tiny"), precision=precision, **options)


def test_auto_device_is_the_cpu_here_and_cuda_is_a_clear_error():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match=r"device must be one of \['auto', 'cpu', 'cuda'\]"):
        check_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA GPU.*--device cpu or auto"):
            resolve_device("cuda")


def test_auto_precision_follows_the_probe(monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_bf16_speedup", lambda: 3.0)  # a CPU with bf16 units
    assert resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(precision_module, "cpu_bf16_speedup", lambda: 0.02)  # bf16 emulated
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16" and resolve_precision("fp32", "cpu") == "fp32"
    with pytest.raises(ValueError, match=r"precision must be one of \['auto', 'fp32', 'bf16'\], got 'fp16'"):
        resolve_precision("fp16", "cpu")


def test_the_probe_times_both_precisions():
    ticks = iter(range(10**6))
    # A clock that advances one second per reading: each precision runs one timed product.
    assert precision_module.bf16_speedup(seconds=0.5, clock=lambda: float(next(ticks))) == 1.0
    assert precision_module.bf16_speedup(seconds=0.01) > 0  # this CPU, for real


def test_bf16_keeps_float32_weights_and_outputs_and_stays_close_to_fp32():
    fp32, bf16 = network("fp32"), network("bf16")
    assert bf16.precision == "bf16" and fp32.precision == "fp32"
    assert all(p.dtype == torch.float32 for p in bf16.parameters())
    ids, mask = left_pad(ROWS, bf16.pad_id, torch.device("cpu"))
    with torch.no_grad():
        logits, values = bf16.last(ids, mask, raw=True)
        reference, _ = fp32.last(ids, mask, raw=True)
    assert logits.dtype == torch.bfloat16 and values.dtype == torch.float32  # the head ran in bf16
    assert not torch.equal(logits.float(), reference)
    torch.testing.assert_close(logits.float(), reference, atol=0.05 * reference.abs().max().item(), rtol=0)
    processed, _ = bf16.step(ROWS)
    assert processed.dtype == torch.float32


def copied_bytes(net: LMActorCritic) -> int:
    """What acting in bf16 keeps: a bf16 copy of every linear layer's weight and bias under
    autocast, and the packed float32 value head (it runs outside autocast)."""
    layers = {id(m.weight): m for m in net.modules() if isinstance(m, torch.nn.Linear)}
    layers.pop(id(net.value_head.weight))
    bf16 = sum(w.numel() * 2 for m in layers.values() for w in (m.weight, m.bias) if w is not None)
    return bf16 + net.value_head.weight.numel() * net.value_head.weight.element_size()


def test_bf16_acting_runs_kept_bf16_copies_with_autocasts_results():
    packed, plain = network("bf16", packed_linears=True), network("bf16", packed_linears=False)
    plain.load_state_dict(packed.state_dict())
    for _ in range(2):  # the second step reuses the copies
        torch.testing.assert_close(packed.step(ROWS)[0], plain.step(ROWS)[0], rtol=0, atol=0)
    assert packed.packed.packed_bytes == copied_bytes(packed)
    assert plain.packed.packed_bytes == 0


@pytest.mark.parametrize("lora", [False, True])
def test_bf16_rollouts_on_kept_copies_sample_what_autocast_samples(lora):
    pytest.importorskip("peft")
    env = gym.make("TextGen-Sentiment-v0", model="tiny", max_new_tokens=6).unwrapped
    prompts = [env.encode_prompt(example)[0] for example in env.examples[:3]]
    kept, plain = (network("bf16", packed_linears=on, lora=lora or None) for on in (True, False))
    plain.load_state_dict(kept.state_dict())
    batches = [
        generate(net, prompts, 6, env.eos_token_ids, torch.Generator().manual_seed(0), group_size=2)
        for net in (kept, plain, kept)  # kept twice: the copies are reused (LoRA: frozen weights)
    ]
    for batch in (batches[0], batches[2]):
        assert torch.equal(batch.ids, batches[1].ids)
        torch.testing.assert_close(batch.log_probs, batches[1].log_probs, rtol=0, atol=0)
    assert kept.packed.packed_bytes == copied_bytes(kept)


def test_bf16_gradients_reach_the_float32_weights():
    net = network("bf16")
    ids, mask = left_pad(ROWS, net.pad_id, torch.device("cpu"))
    logits, values = net.last(ids, mask)
    (torch.log_softmax(logits, -1)[:, 5].sum() + values.sum()).backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


def text_length(prompts, completions, references):
    return np.array([len(c) / 10 for c in completions], dtype=np.float32)  # varies between texts


def test_textppo_and_stock_ppo_train_in_bf16():
    env = gym.make("TextGen-Sentiment-v0", model="tiny", max_new_tokens=4)
    env.unwrapped.reward_fn = text_length
    agent = TextPPO(
        "LMPolicy", env, batch_episodes=4, minibatch_episodes=2, n_epochs=1, seed=0,
        policy_kwargs={"model": "tiny", "precision": "bf16"},
    )  # fmt: skip
    before = [p.detach().clone() for p in agent.policy.parameters()]
    agent.learn(8)
    assert agent.policy.net.precision == "bf16" and agent.num_timesteps >= 8
    assert any(not torch.equal(a, p) for a, p in zip(before, agent.policy.parameters()))
    assert all(p.dtype == torch.float32 for p in agent.policy.parameters())
    stock = PPO(LMActorCriticPolicy, env, n_steps=4, batch_size=4, n_epochs=1,
                rollout_buffer_class=EpisodeRolloutBuffer,
                policy_kwargs={"model": "tiny", "precision": "bf16"})  # fmt: skip
    stock.learn(4)
    assert stock.policy.net.precision == "bf16"


def test_a_run_records_its_precision_and_resumes_in_the_one_asked(tmp_path):
    config = TrainConfig(
        env="TextGen-Sentiment-v0", model="tiny", budget_tokens=1, budget_minutes=1e4, eval_prompts=2,
        eval_every_minutes=0, profile="quick", precision="bf16", device="cpu",
        hyperparams={"batch_episodes": 4, "minibatch_episodes": 2},
    )  # fmt: skip
    result = train(config, tmp_path / "run", console=QUIET)
    saved = json.loads((tmp_path / "run" / "run.json").read_text())["config"]
    assert (saved["precision"], saved["device"]) == ("bf16", "cpu")
    assert load_agent(tmp_path / "run").policy.net.precision == "bf16"
    assert load_agent(tmp_path / "run", precision="fp32").policy.net.precision == "fp32"
    tokens = result["summary"]["train_tokens"]
    again = TrainConfig(**{**vars(config), "precision": "fp32", "budget_tokens": tokens + 1})
    train(again, tmp_path / "run", resume=True, console=QUIET)
    assert load_agent(tmp_path / "run").policy.net.precision == "fp32"


def test_evaluate_loads_a_model_name_in_the_precision_asked():
    result = evaluate("tiny", "TextGen-Sentiment-v0", n=2, precision="bf16", device="cpu")
    assert result.metrics["n"] == 2


def test_leaderboard_keys_change_with_bf16_only():
    spec = RunSpec("TextGen-Sentiment-v0", "textppo", 0)
    fp32 = LeaderboardConfig(quick=True, precision="fp32").resolved()
    auto = LeaderboardConfig(quick=True, precision="auto").resolved()  # fp32 in the suite (conftest)
    # train probes (bf16 learned more in 20 minutes where it runs faster); a board compares its
    # rows, the published ones too, at one precision.
    assert (TrainConfig().precision, LeaderboardConfig().precision) == ("auto", "fp32")
    cuda_fp32 = LeaderboardConfig(quick=True, precision="fp32", device="cpu").resolved()
    bf16 = LeaderboardConfig(quick=True, precision="bf16").resolved()
    assert spec.key(fp32) == spec.key(auto) == spec.key(cuda_fp32) != spec.key(bf16)


def test_bad_device_or_precision_is_one_clear_error(tmp_path, capsys):
    argv = ["train", "--env", "TextGen-Sentiment-v0", "--model", "tiny", "--out", str(tmp_path / "run")]
    assert main([*argv, "--device", "gpu"]) == 2
    assert "device must be one of ['auto', 'cpu', 'cuda'] (or cuda:N), got 'gpu'" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--precision", "fp16"])
    assert exit_info.value.code == 2 and "invalid choice: 'fp16'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
