"""Throughput: the envs alone, the stock-path policy, and TextPPO against bare transformers loops.

    python benchmarks/throughput.py [--batch 64] [--new-tokens 48] [--out benchmarks/results]

Measures, in one run and as ratios, with the default model in fp32 on this machine:
- env steps/s of each env with a random policy (random valid token ids through the terminal
  reward call: env overhead alone), and its ratio to the stock path's cached steps/s below;
- stock-path stepping (``LMActorCriticPolicy.predict`` on a DummyVecEnv of each env) with vs.
  without the KV cache (best of ``--repeats`` alternated runs), and on ``--env`` for other
  numbers of envs (``--stock-sweep``); the weights are packed for oneDNN before the clock starts
  (the packing is timed apart: it happens once per weights version, at the start and after
  each update);
- stock-path stepping with the KL reward on ``--env``: one batched reference step for all envs
  (``VecKLRewardWrapper``) vs. one per env (``KLRewardWrapper`` on each env);
- TextPPO rollout collection (``collect_rollouts``: batched sampling with the KV cache, values,
  the batched reward call) vs. bare ``model.generate`` sampling of the same prompts and length;
- the PPO update (``train()`` epochs: one pass per sequence, loss, backward, optimiser step) vs.
  a bare forward + backward loop over the same sequences and minibatches; the reference pass
  that feeds the KL penalty is timed apart;
- peak memory of a TextPPO iteration (policy, value head, reference, optimiser), in a fresh process;
- stock SB3 PPO as ``textgym train --algo ppo`` builds it (the registry's env count and batch,
  ``EpisodeRolloutBuffer``, the KL in the policy) against TextPPO with as many episodes, on each
  env (``--stock-train-envs``), each in a fresh process: the rollout vs. TextPPO's rollout; the
  update (``train()``, with the policy's reference pass for the KL) vs. TextPPO's update and
  reference pass; the
  update with the episode buffer vs. SB3's plain buffer on the same rollout and from the same
  weights (one minibatch of ``--plain-transitions`` random transitions: it is that slow); the
  stock run's peak memory. Tokens are generated tokens (SB3 transitions) trained per second;
- the value-based agents as ``textgym train --algo dqn|softq`` builds them, on each env of
  ``--value-envs``, each in a fresh process: one rollout into the replay buffer, then one
  ``train()`` call; stock DQN's update (single transitions, a forward pass over each one's whole
  context and its next state's) vs. SoftQ's (whole replayed texts, one pass each), in generated
  tokens trained per second.
Prints one table and writes one JSON record per run, never overwriting earlier runs.
"""

from __future__ import annotations

import copy
import itertools
import multiprocessing
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import torch
from common import parse_args, peak_rss_gb, random_policy_steps, registry_textppo, timed, write_record
from rich.console import Console
from rich.table import Table
from stable_baselines3.common.buffers import DictRolloutBuffer
from stable_baselines3.common.env_util import make_vec_env

import textgym
from textgym.agents import LMActorCriticPolicy, TextPPO
from textgym.agents.common.rollout import TokenBatch
from textgym.agents.runs.config import TrainConfig
from textgym.agents.runs.hyperparams import PROFILES
from textgym.agents.runs.training import build_agent
from textgym.models import DEFAULT_MODEL, load_model
from textgym.models.incremental import left_pad, position_ids
from textgym.models.precision import resolve_device
from textgym.wrappers import KLRewardWrapper, VecKLRewardWrapper


@dataclass
class Args:
    model: str = DEFAULT_MODEL
    env: str = "TextGen-Sentiment-v0"  # prompts for the rollout and update comparisons
    batch: int = 64  # episodes sampled together
    new_tokens: int = 48
    minibatch: int = 8  # episodes per gradient step
    repeats: int = 2  # timed runs of each comparison (best of each reported)
    random_episodes: int = 10  # episodes per env with the random policy
    stock_envs: int = 8  # envs stepped together on the stock path (an SB3 DummyVecEnv)
    stock_steps: int = 24  # vectorised steps per env and setting on the stock path
    stock_sweep: str = "1,4,16"  # other env counts for the stock comparison on --env ("": none)
    stock_only: str = ""  # comma-separated env ids for the stock comparison ("": every env)
    skip_stock: bool = False
    skip_textppo: bool = False  # only the env and stock-path figures
    stock_train_envs: str = ",".join(textgym.ENVS)  # envs of the stock PPO vs TextPPO training rows
    plain_transitions: int = 32  # one minibatch of these, timed with SB3's plain buffer (a pass each)
    stock_train_profile: str = "default"  # the registry's profile for those rows (quick: small batches)
    value_envs: str = "TextGen-Sentiment-v0"  # envs of the DQN vs SoftQ rows ("": none)
    seed: int = 0
    out: str = "benchmarks/results"

    def __post_init__(self) -> None:
        for name, value in vars(self).items():  # every int option but the seed is a count
            if type(value) is int and name != "seed" and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        if not all(part.isdigit() and int(part) >= 1 for part in self.stock_sweep.split(",") if part):
            raise ValueError(f"--stock-sweep takes env counts >= 1, comma-separated: {self.stock_sweep!r}")
        unknown = [e for e in self.stock_train_envs.split(",") if e and e not in textgym.ENVS]
        if unknown:
            raise ValueError(f"--stock-train-envs: unknown env ids {unknown}; expected {list(textgym.ENVS)}")
        if self.stock_train_profile not in PROFILES:
            raise ValueError(f"--stock-train-profile: one of {PROFILES}, got {self.stock_train_profile!r}")

    @property
    def sweep(self) -> list[int]:
        return [int(part) for part in self.stock_sweep.split(",") if part]


def make_agent(args: Args) -> TextPPO:
    env = gym.make(args.env, model=args.model, max_new_tokens=args.new_tokens)
    # The registry's hyperparameters for the env; the batch shape is the measurement's own.
    measured = {"batch_episodes": args.batch, "minibatch_episodes": args.minibatch}
    return registry_textppo(env, args.env, args.seed, measured)


def rollout(agent: TextPPO) -> dict[str, float]:
    callback = agent._init_callback(None)
    agent.collect_rollouts(agent.env, callback, agent.rollout_buffer, agent.n_steps)
    stats = agent.last_rollout
    return {
        "tokens": sum(stats["lengths"]),
        "seconds": stats["seconds"],
        "tokens_per_s": stats["tokens_per_s"],
    }


@torch.no_grad()
def bare_generate(agent: TextPPO, indices: list[int], new_tokens: int, seed: int) -> dict[str, float]:
    """``model.generate`` sampling (temperature 1, no top-k/p) of the same prompts."""
    task, net = agent.env.envs[0].unwrapped, agent.policy.net
    prompts = [task.encode_prompt(task.examples[i])[0] for i in indices]
    device = net.invalid.device
    ids, mask = left_pad(prompts, net.pad_id, device)
    torch.manual_seed(seed)
    start = time.perf_counter()
    with net.autocast():  # the policy's precision
        out = net.causal.generate(
            input_ids=ids, attention_mask=mask, do_sample=True, max_new_tokens=new_tokens, temperature=1.0,
            top_k=0, top_p=1.0, pad_token_id=net.pad_id, eos_token_id=sorted(task.eos_token_ids),
        )  # fmt: skip
    generated = out[:, ids.shape[1] :].cpu()  # waits for the device
    seconds = time.perf_counter() - start
    ended = torch.zeros(len(generated), dtype=torch.bool)
    tokens = 0
    for column in generated.T:  # count each row's tokens up to and including its EOS
        tokens += int((~ended).sum())
        ended |= torch.isin(column, torch.tensor(sorted(task.eos_token_ids)))
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}


def bare_forward_backward(agent: TextPPO, batch: TokenBatch, minibatch: int) -> dict[str, float]:
    """Forward + backward (LM cross-entropy on the emitted tokens) over the same minibatches."""
    net = agent.policy.net
    lm = net.causal
    lm.train()
    tokens, start = 0, time.perf_counter()
    for first in range(0, len(batch.ids), minibatch):
        part = batch.select(torch.arange(first, min(first + minibatch, len(batch.ids))))
        with net.autocast():  # the policy's precision
            logits = lm(
                input_ids=part.ids, attention_mask=part.mask, position_ids=position_ids(part.mask)
            ).logits
        predicted = logits[:, part.start - 1 : -1].float()
        loss = torch.nn.functional.cross_entropy(
            predicted[part.response_mask], part.tokens[part.response_mask]
        )
        loss.backward()
        lm.zero_grad(set_to_none=True)
        tokens += int(part.mask.sum())
    float(loss.detach())  # waits for the device
    seconds = time.perf_counter() - start
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}


def stock_stepping(
    args: Args, env_id: str, kv_cache: bool, n_envs: int, kl: str | None = None
) -> dict[str, float]:
    """Tokens/s of ``LMActorCriticPolicy.predict`` stepping ``n_envs`` envs together (an SB3
    DummyVecEnv, as SB3's PPO steps them; episodes end and restart at different steps), from
    the envs' reset; the weights are packed first and that is timed apart. ``kl``: the envs
    pay the KL reward, through one ``KLRewardWrapper`` per env sharing one reference model
    (``"per-env"``) or through one ``VecKLRewardWrapper`` (``"batched"``)."""
    env_kwargs = {"model": args.model}
    if kl == "per-env":
        reference = load_model(args.model).requires_grad_(False)
        wrapper = {"wrapper_class": KLRewardWrapper, "wrapper_kwargs": {"model": reference}}
        venv = make_vec_env(env_id, n_envs=n_envs, seed=args.seed, env_kwargs=env_kwargs, **wrapper)
    else:
        venv = make_vec_env(env_id, n_envs=n_envs, seed=args.seed, env_kwargs=env_kwargs)
        if kl == "batched":
            venv = VecKLRewardWrapper(venv, model=args.model)
            venv.scorer.packed.pack(venv.scorer.model)
    policy = LMActorCriticPolicy(
        venv.observation_space, venv.action_space, lambda _: 1e-5, model=args.model, kv_cache=kv_cache
    )
    packing_seconds, _ = timed(lambda: policy.net.packed.pack(policy.net))
    torch.manual_seed(args.seed)
    observation = venv.reset()
    start = time.perf_counter()
    for _ in range(args.stock_steps):
        actions, _ = policy.predict(observation)
        observation, *_ = venv.step(actions)
    seconds = time.perf_counter() - start
    tokens = args.stock_steps * n_envs
    return {
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
        "packing_seconds": packing_seconds,
        "packed_gb": policy.net.packed.packed_bytes / 1e9,
        **policy.net.cache_stats,
    }


def stock_comparison(
    args: Args, env_id: str, n_envs: int, console: Console, kl: bool = False
) -> dict[str, dict]:
    """Cached and recomputed stepping (``kl``: cached stepping with the batched and the per-env
    KL reward), alternated ``repeats`` times; the best run of each (the least disturbed by the
    rest of the machine) is the figure, every run is in ``runs``."""
    settings = {"batched": True, "per-env": True} if kl else {"cached": True, "recomputed": False}
    runs: dict[str, list[dict[str, float]]] = {setting: [] for setting in settings}
    for repeat in range(args.repeats):
        console.print(
            f"stock-path stepping{' with the KL reward' if kl else ''} in {env_id} ({n_envs} envs x "
            f"{args.stock_steps} steps), repeat {repeat + 1}/{args.repeats} ..."
        )
        for setting, kv_cache in settings.items():
            runs[setting].append(stock_stepping(args, env_id, kv_cache, n_envs, setting if kl else None))
    best = {setting: max(rows, key=lambda row: row["tokens_per_s"]) for setting, rows in runs.items()}
    return {**best, "runs": runs}


def memory_probe(args: Args, queue) -> None:
    """One TextPPO iteration (rollout, reference pass, update) in a fresh process: its peak RSS."""
    agent = make_agent(args)
    rollout(agent)
    agent.train()
    queue.put(peak_rss_gb())


def measure_memory(args: Args) -> float:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=memory_probe, args=(args, queue))
    process.start()
    peak = queue.get()
    process.join()
    return peak


class FirstMinibatch(DictRolloutBuffer):
    """SB3's plain buffer yielding only its first minibatch, of ``size`` transitions whatever the
    algorithm asks (timing only: each observation costs a pass over its own context, so its
    tokens/s do not depend on the minibatch's size), counting the transitions it yields."""

    size = 1
    yielded = 0

    def get(self, batch_size=None):
        for samples in itertools.islice(super().get(self.size), 1):
            self.yielded += len(samples.actions)
            yield samples


def plain_copy(buffer: DictRolloutBuffer, size: int) -> FirstMinibatch:
    """The same rollout (before ``get`` flattens it) in SB3's plain buffer."""
    plain = FirstMinibatch(
        buffer.buffer_size, buffer.observation_space, buffer.action_space, device=buffer.device,
        gae_lambda=buffer.gae_lambda, gamma=buffer.gamma, n_envs=buffer.n_envs,
    )  # fmt: skip
    for name in ("observations", "actions", "rewards", "returns", "episode_starts", "values", "log_probs",
                 "advantages", "pos", "full"):  # fmt: skip
        setattr(plain, name, copy.deepcopy(getattr(buffer, name)))
    plain.size = size
    return plain


def stock_training_probe(args: Args, env_id: str, queue) -> None:
    """Stock PPO as ``textgym train --algo ppo`` builds it: one rollout, its update with the
    episode buffer and (from the same weights) with the plain buffer; peak memory."""
    with tempfile.TemporaryDirectory() as logs:
        config = TrainConfig(
            env=env_id,
            algo="ppo",
            model=args.model,
            seed=args.seed,
            profile=args.stock_train_profile,
            precision="fp32",  # the table's precision, whatever this machine's bf16 speed
        ).resolved()
        agent = build_agent(config, Path(logs), resolve_device(config.device))
        agent._setup_learn(total_timesteps=10**12)
        callback = agent._init_callback(None)
        rollout_s, _ = timed(
            lambda: agent.collect_rollouts(agent.env, callback, agent.rollout_buffer, agent.n_steps)
        )
        transitions = agent.n_steps * agent.n_envs
        plain = plain_copy(agent.rollout_buffer, args.plain_transitions)
        weights = copy.deepcopy(agent.policy.state_dict()), copy.deepcopy(agent.policy.optimizer.state_dict())
        update_s, _ = timed(agent.train)
        peak_gb = peak_rss_gb()  # rollout and update: what training holds (the plain pass holds more)
        agent.policy.load_state_dict(weights[0])
        agent.policy.optimizer.load_state_dict(weights[1])
        agent.rollout_buffer = plain
        plain_s, _ = timed(agent.train)
        queue.put({
            "n_envs": agent.n_envs, "n_steps": agent.n_steps, "batch_size": agent.batch_size,
            "rollout": {"tokens": transitions, "seconds": rollout_s, "tokens_per_s": transitions / rollout_s},
            "update": {"tokens": transitions * agent.n_epochs, "seconds": update_s,
                       "tokens_per_s": transitions * agent.n_epochs / update_s},
            "plain_update": {"tokens": plain.yielded, "seconds": plain_s,
                             "tokens_per_s": plain.yielded / plain_s},
            "peak_rss_gb": peak_gb,
            "peak_rss_gb_with_plain_pass": peak_rss_gb(),
        })  # fmt: skip


def textppo_training_probe(args: Args, env_id: str, episodes: int, queue) -> None:
    """TextPPO on ``env_id`` with the registry's values and ``episodes`` per batch: one rollout
    (and its reference pass) and one update, in generated tokens per second."""
    env = gym.make(env_id, model=args.model)
    agent = registry_textppo(env, env_id, args.seed, {"batch_episodes": episodes}, args.stock_train_profile)
    rollout(agent)
    tokens = sum(agent.last_rollout["lengths"])
    agent.train()
    seconds = agent.last_rollout["seconds"]
    # Its reference pass (run as the batch is stored) counts with the update, as the stock
    # policy's (kl_to_reference) runs in its update.
    update_s = agent.last_update["seconds"] + agent.last_rollout["reference_seconds"]
    trained = tokens * agent.n_epochs
    queue.put({
        "rollout": {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds},
        "update": {"tokens": trained, "seconds": update_s, "tokens_per_s": trained / update_s},
        "peak_rss_gb": peak_rss_gb(),
    })  # fmt: skip


def value_training_probe(args: Args, env_id: str, algo: str, queue) -> None:
    """DQN or SoftQ as ``textgym train --algo`` builds it (the registry's values): one rollout
    into the replay buffer, then one ``train()`` call, in generated tokens per second."""
    with tempfile.TemporaryDirectory() as logs:
        config = TrainConfig(
            env=env_id,
            algo=algo,
            model=args.model,
            seed=args.seed,
            profile=args.stock_train_profile,
            precision="fp32",  # the table's precision, whatever this machine's bf16 speed
        ).resolved()
        agent = build_agent(config, Path(logs), resolve_device(config.device))
        agent._setup_learn(total_timesteps=10**12)
        callback = agent._init_callback(None)
        rollout_s, collected = timed(
            lambda: agent.collect_rollouts(agent.env, callback, agent.train_freq, agent.replay_buffer)
        )
        steps, batch = agent.gradient_steps, agent.batch_size
        update_s, _ = timed(lambda: agent.train(gradient_steps=steps, batch_size=batch))
        # DQN replays transitions (one generated token each); SoftQ whole texts.
        trained = steps * batch if algo == "dqn" else agent.last_update["replayed_tokens"]
        tokens = collected.episode_timesteps
        queue.put({
            "gradient_steps": steps, "batch_size": batch,
            "rollout": {"tokens": tokens, "seconds": rollout_s, "tokens_per_s": tokens / rollout_s},
            "update": {"tokens": trained, "seconds": update_s, "tokens_per_s": trained / update_s},
            "peak_rss_gb": peak_rss_gb(),
        })  # fmt: skip


def in_fresh_process(target, *arguments) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(*arguments, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def measure_stock_training(args: Args, console: Console) -> dict[str, dict]:
    results = {}
    for env_id in [e for e in args.stock_train_envs.split(",") if e]:
        console.print(f"stock PPO (registry values, episode buffer) on {env_id}: rollout and update ...")
        stock = in_fresh_process(stock_training_probe, args, env_id)
        console.print(f"TextPPO with {stock['n_envs']} episodes on {env_id}: rollout and update ...")
        results[env_id] = {
            "ppo": stock,
            "textppo": in_fresh_process(textppo_training_probe, args, env_id, stock["n_envs"]),
        }
    return results


def measure_textppo(args: Args, console: Console) -> dict:
    """Rollout vs. generate, update vs. forward+backward, and peak memory of an iteration."""
    console.print(f"measuring peak memory of one TextPPO iteration ({args.batch} x {args.new_tokens}) ...")
    peak_gb = measure_memory(args)
    agent = make_agent(args)
    rollouts, generates = [], []
    for repeat in range(args.repeats):
        console.print(f"rollout vs generate, repeat {repeat + 1}/{args.repeats} ...")
        rollouts.append(rollout(agent))
        indices = agent.last_rollout["indices"]
        generates.append(bare_generate(agent, indices, args.new_tokens, args.seed + repeat))
    console.print("update vs bare forward + backward ...")
    bare = bare_forward_backward(agent, agent.rollout_buffer.episodes, args.minibatch)
    agent.train()
    return {
        "rollouts": rollouts,
        "generates": generates,
        # The reference pass runs when the batch is stored (collect_rollouts), timed apart there.
        "update": {**agent.last_update, "reference_seconds": agent.last_rollout["reference_seconds"]},
        "forward_backward": bare,
        "textppo_peak_rss_gb": peak_gb,
    }


def main() -> None:
    args = parse_args(Args, __doc__.splitlines()[0])
    console = Console(width=120)
    # Random-policy stepping first, so each env's reward model is loaded before the stock path runs.
    random_policy = {}
    for env_id in textgym.ENVS:
        console.print(f"random-policy stepping in {env_id} ({args.random_episodes} episodes) ...")
        random_policy[env_id] = random_policy_steps(
            gym.make(env_id, model=args.model), args.random_episodes, args.seed
        )
    stock, sweep, kl = {}, {}, {}
    if not args.skip_stock:
        for env_id in [e for e in args.stock_only.split(",") if e] or textgym.ENVS:
            stock[env_id] = stock_comparison(args, env_id, args.stock_envs, console)
        for n_envs in args.sweep:
            sweep[n_envs] = stock_comparison(args, args.env, n_envs, console)
        kl[args.env] = stock_comparison(args, args.env, args.stock_envs, console, kl=True)
    results = {} if args.skip_textppo else measure_textppo(args, console)
    results["stock_training"] = training = measure_stock_training(args, console)
    results["value_training"] = value = {}
    for env_id in [e for e in args.value_envs.split(",") if e]:
        value[env_id] = {}
        for algo in ("dqn", "softq"):
            console.print(
                f"{algo} (registry values) on {env_id}: a rollout into the replay buffer and an update ..."
            )
            value[env_id][algo] = in_fresh_process(value_training_probe, args, env_id, algo)
    results |= {
        "random_policy": random_policy,
        "stock": stock,
        "stock_sweep": {args.env: sweep},
        "stock_kl": kl,
    }

    # Rows: measurement, unit, ours, baseline, ratio, target.
    ratios: dict[str, float] = {}
    rows: list[tuple[str, ...]] = []
    for env_id, row in random_policy.items():
        cells = [f"{row['steps_per_s']:.0f}", "", ""]  # ours, baseline, ratio
        if env_id in stock:
            key = f"random_vs_stock_cached/{env_id}"
            cached = stock[env_id]["cached"]["tokens_per_s"]  # one token per env step
            ratios[key] = row["steps_per_s"] / cached
            cells[1:] = [f"{cached:.1f}", f"{ratios[key]:.0f}x"]
        rows.append((f"env overhead: random policy vs stock cached: {env_id}", "steps/s", *cells, ""))
    compared = [
        (f"stock_cache_speedup/{env_id}", env_id, args.stock_envs, row) for env_id, row in stock.items()
    ]
    compared += [(f"stock_cache_speedup/{args.env}/{n}-envs", args.env, n, row) for n, row in sweep.items()]
    for key, env_id, n_envs, row in compared:
        ratios[key] = row["cached"]["tokens_per_s"] / row["recomputed"]["tokens_per_s"]
        rows.append((
            f"stock KV cache vs recompute ({n_envs} envs): {env_id}", "tokens/s",
            f"{row['cached']['tokens_per_s']:.1f}", f"{row['recomputed']['tokens_per_s']:.1f}",
            f"{ratios[key]:.1f}x", ">= 5x" if n_envs == args.stock_envs else "",
        ))  # fmt: skip
    for env_id, row in kl.items():
        key = f"kl_batched_vs_per_env/{env_id}"
        ratios[key] = row["batched"]["tokens_per_s"] / row["per-env"]["tokens_per_s"]
        rows.append((
            f"stock path with the KL reward ({args.stock_envs} envs): VecKLRewardWrapper vs. "
            f"KLRewardWrapper per env: {env_id}", "tokens/s", f"{row['batched']['tokens_per_s']:.1f}",
            f"{row['per-env']['tokens_per_s']:.1f}", f"{ratios[key]:.1f}x", "",
        ))  # fmt: skip
    if compared:
        packing = max(row["cached"]["packing_seconds"] for *_, row in compared)
        packed_gb = max(row["cached"]["packed_gb"] for *_, row in compared)
        rows.append((f"packing the weights for oneDNN, once per weights version ({packed_gb:.2f} GB)",
                     "s", f"{packing:.2f}", "", "", ""))  # fmt: skip
    if "update" in results:
        best_rollout = max(r["tokens_per_s"] for r in results["rollouts"])
        best_generate = max(g["tokens_per_s"] for g in results["generates"])
        update, bare = results["update"], results["forward_backward"]
        ratios["rollout_vs_generate"] = best_rollout / best_generate
        ratios["update_vs_forward_backward"] = update["tokens_per_s"] / bare["tokens_per_s"]
        ratios["reference_vs_update_seconds"] = update["reference_seconds"] / update["seconds"]
        rows += [
            (f"TextPPO rollout vs model.generate ({args.batch} x {args.new_tokens})", "tokens/s",
             f"{best_rollout:.0f}", f"{best_generate:.0f}", f"{ratios['rollout_vs_generate']:.2f}x",
             ">= 0.8x"),
            (f"PPO update vs forward+backward (minibatch {args.minibatch})", "tokens/s",
             f"{update['tokens_per_s']:.0f}", f"{bare['tokens_per_s']:.0f}",
             f"{ratios['update_vs_forward_backward']:.2f}x", ">= 0.7x"),
            ("KL reference pass vs the PPO update's epochs", "s", f"{update['reference_seconds']:.1f}",
             f"{update['seconds']:.1f}", f"{ratios['reference_vs_update_seconds']:.2f}x", ""),
            ("peak memory of a TextPPO iteration (fresh process)", "GB",
             f"{results['textppo_peak_rss_gb']:.2f}", "", "", "<= 5 GB"),
        ]  # fmt: skip

    for env_id, row in training.items():
        ppo, textppo = row["ppo"], row["textppo"]
        shape = f"{ppo['n_envs']} envs x {ppo['n_steps']} steps, minibatch {ppo['batch_size']}"
        for key, label, ours, baseline, target in (
            ("stock_update_vs_textppo", f"stock PPO update vs TextPPO update, with their KL passes ({shape})",
             ppo["update"], textppo["update"], ">= 0.7x"),
            ("stock_episode_vs_plain_buffer", "stock PPO update: EpisodeRolloutBuffer vs SB3's plain buffer",
             ppo["update"], ppo["plain_update"], ""),
            ("stock_rollout_vs_textppo",
             f"stock PPO rollout vs TextPPO rollout ({ppo['n_envs']} texts)",
             ppo["rollout"], textppo["rollout"], ">= 0.7x"),
        ):  # fmt: skip
            ratios[f"{key}/{env_id}"] = ours["tokens_per_s"] / baseline["tokens_per_s"]
            ratio = ratios[f"{key}/{env_id}"]
            rows.append((f"{label}: {env_id}", "tokens/s", f"{ours['tokens_per_s']:.0f}",
                         f"{baseline['tokens_per_s']:.0f}", f"{ratio:.2f}x", target))  # fmt: skip
        rows.append((f"peak memory of stock PPO, one rollout + update, fresh process: {env_id}", "GB",
                     f"{ppo['peak_rss_gb']:.2f}", f"{textppo['peak_rss_gb']:.2f}", "", ""))  # fmt: skip

    for env_id, row in value.items():
        dqn, softq = row["dqn"], row["softq"]
        for key, label in (("update", "update (replayed tokens)"), ("rollout", "rollout")):
            ours, theirs = dqn[key]["tokens_per_s"], softq[key]["tokens_per_s"]
            ratios[f"dqn_vs_softq_{key}/{env_id}"] = ours / theirs
            rows.append((f"DQN + LMQPolicy vs SoftQ {label}: {env_id}", "tokens/s", f"{ours:.1f}",
                         f"{theirs:.1f}", f"{ours / theirs:.2f}x", ""))  # fmt: skip

    table = Table(title=f"throughput ({torch.get_num_threads()} threads, fp32, {args.model})")
    for column in ("measurement", "unit", "ours", "baseline", "ratio", "target"):
        table.add_column(column, justify="left" if column in ("measurement", "unit") else "right")
    for measurement in rows:
        table.add_row(*measurement)
    console.print(table)
    results["ratios"] = ratios
    console.print(f"wrote {write_record('throughput', args, results, args.out)}")


if __name__ == "__main__":
    main()
