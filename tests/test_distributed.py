"""Data-parallel TextPPO under torchrun: 2 gloo ranks on this machine.

Each test launches ``torchrun --standalone --nproc-per-node 2`` (``python -m
torch.distributed.run``): the ranks share this machine's cores, so nothing here is about speed.
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from rich.console import Console

from textgym.agents.common.rollout import TokenBatch, reference_log_probs
from textgym.agents.runs.config import TrainConfig
from textgym.agents.runs.training import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ddp_worker import EPISODES, make_agent  # noqa: E402

WORKER = Path(__file__).resolve().parent / "ddp_worker.py"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def one_prompt(tmp_path: Path) -> str:
    """A dataset of one prompt: both ranks' texts then share their prompt's width."""
    path = tmp_path / "prompts.jsonl"
    rows = [{"id": str(i), "prompt": "The weather today is", "reference": "-"} for i in range(40)]
    path.write_text("\n".join(json.dumps(row) for row in rows))
    return str(path)


def union(first: TokenBatch, second: TokenBatch) -> TokenBatch:
    assert first.start == second.start and first.ids.shape[1] == second.ids.shape[1]
    fields = ("ids", "mask", "response_mask", "log_probs", "kl_log_probs", "values")
    return TokenBatch(
        start=first.start, **{f: torch.cat([getattr(first, f), getattr(second, f)]) for f in fields}
    )


def test_two_ranks_take_the_update_one_process_takes_on_the_union_of_their_batches(tmp_path):
    dataset = one_prompt(tmp_path)
    out = subprocess.run([*TORCHRUN, str(WORKER), str(tmp_path), dataset], capture_output=True, text=True,
                         timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    before, batches, after = ([torch.load(tmp_path / f"{name}-{r}.pt", weights_only=False) for r in (0, 1)]
                              for name in ("before", "batch", "after"))  # fmt: skip
    # The ranks sampled different texts, counted every rank's tokens, and stayed in step.
    assert not torch.equal(batches[0]["episodes"].ids, batches[1]["episodes"].ids)
    tokens = sum(int(b["episodes"].response_mask.sum()) for b in batches)
    assert batches[0]["tokens"] == batches[1]["tokens"] == tokens
    for key in before[0]:
        assert torch.equal(before[0][key], before[1][key]) and torch.equal(after[0][key], after[1][key])

    # One process, the same weights, the union of the two batches as one minibatch.
    single = make_agent(dataset, 2 * EPISODES)
    single.policy.load_state_dict(before[0])
    episodes = union(batches[0]["episodes"], batches[1]["episodes"])
    single.rollout_buffer.add(episodes, torch.cat([b["rewards"] for b in batches]).numpy())
    reference = functools.partial(reference_log_probs, single.policy.net)
    single.rollout_buffer.compute_returns_and_advantage(single.kl_coef, reference, single.reward_stats)
    buffer = single.rollout_buffer
    # Reward normalisation and advantage whitening over both ranks' texts, the KL over both.
    torch.testing.assert_close(buffer.advantages, torch.cat([b["advantages"] for b in batches]))
    assert buffer.sequence_kl == pytest.approx(batches[0]["kl"], rel=1e-5)
    single.train()
    state = single.policy.state_dict()
    moved = max(float((state[k] - before[0][k]).abs().max()) for k in state)
    assert moved > 1e-4  # the update did something
    for key in state:
        torch.testing.assert_close(state[key], after[0][key], rtol=1e-4, atol=1e-6)


def torchrun_train(out: Path, budget_tokens: int, *extra: str) -> list[str]:
    """``torchrun`` (2 ranks) of ``textgym train`` on the tiny model, small batches, no time budget."""
    return [
        *TORCHRUN, "-m", "textgym", "train", "--env", "TextGen-Sentiment-v0", "--model", "tiny",
        "--profile", "quick", "--budget-tokens", str(budget_tokens), "--budget-minutes", "1e4",
        "--eval-prompts", "2", "--eval-every", "0", "--batch-episodes", "4",
        "--hyperparams", "minibatch_episodes=2", "--out", str(out), *extra,
    ]  # fmt: skip


def test_torchrun_textgym_train_writes_one_run_directory_and_logs_once(tmp_path):
    out = tmp_path / "run"
    command = torchrun_train(out, 40)
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("evaluating the untrained model") == 1
    assert result.stdout.count("batch   1 ") == 1  # rank 0 alone reports the batches
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "finished" and run["summary"]["train_tokens"] >= 40
    assert len(list((out / "tb").iterdir())) == 1  # one TensorBoard log
    assert (out / "checkpoints").is_dir() and not list(out.glob("*.tmp*"))


def test_torchrun_refuses_the_algorithms_it_cannot_split(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it; refused before any rank joins
    config = TrainConfig(env="TextGen-Sentiment-v0", model="tiny", algo="softq", budget_tokens=8)
    expected = "torchrun runs ['textppo', 'grpo', 'rloo', 'reinforce'] on several ranks, not 'softq'"
    with pytest.raises(ValueError, match=re.escape(expected)):
        train(config, tmp_path / "run", console=Console(quiet=True))
    assert not (tmp_path / "run").exists()


def rank_pids(launcher: int) -> dict[int, int]:
    """``{rank: pid}`` of the processes that the torchrun process ``launcher`` started (/proc)."""
    ranks = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) != launcher:
                continue
            environ = (stat.parent / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):  # a process that ended meanwhile
            continue
        rank = next((line[5:] for line in environ if line.startswith(b"RANK=")), None)
        if rank is not None:
            ranks[int(rank)] = int(stat.parent.name)
    return ranks


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def until(condition, polls: int = 1200, every: float = 0.1) -> bool:
    """Poll ``condition`` a bounded number of times (a guard against hanging, not a timing)."""
    for _ in range(polls):
        if condition():
            return True
        time.sleep(every)
    return condition()


def trained_tokens(out: Path) -> int:
    """Tokens trained on in the current checkpoint of the run ``out`` (0 before its first)."""
    try:
        current = json.loads((out / "checkpoints" / "current.json").read_text())["checkpoint"]
        return json.loads((out / "checkpoints" / str(current) / "state.json").read_text())["tokens"]
    except (OSError, ValueError, KeyError, TypeError):  # none yet
        return 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX signals, /proc")
def test_a_killed_rank_ends_the_run_instead_of_hanging_and_it_resumes(tmp_path):
    """``kill -9`` of one rank while the ranks train: the other's next collective fails (its
    peer's socket closed) and torchrun ends it, so the launch ends rather than hangs; the run
    directory holds a whole checkpoint, and ``--resume`` under torchrun finishes the run from it."""
    out, log = tmp_path / "run", (tmp_path / "log").open("w")
    command = torchrun_train(out, 10**9, "--checkpoint-minutes", "0")  # a checkpoint every batch
    launcher = subprocess.Popen(command, stdout=log, stderr=log)
    try:
        # Two batches in (256 tokens each): a run that started over would have fewer than this one.
        assert until(lambda: trained_tokens(out) >= 512 or launcher.poll() is not None)
        ranks = rank_pids(launcher.pid)
        assert sorted(ranks) == [0, 1]
        os.kill(ranks[1], signal.SIGKILL)
        assert launcher.wait(timeout=300) != 0  # a bound on a hang: it ends once rank 0 is told
        assert not alive(ranks[0])
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
        log.close()
    trained = trained_tokens(out)
    assert json.loads((out / "run.json").read_text())["status"] != "finished" and trained >= 512
    # Resumed with a budget it has already spent: it continues from the checkpoint and finishes.
    result = subprocess.run(torchrun_train(out, 1, "--resume"), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "finished" and run["summary"]["train_tokens"] >= trained
