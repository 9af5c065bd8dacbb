"""The contract every algorithm of the registry keeps, in the shape of SB3's ``test_save_load.py``
and ``test_run.py``: built as ``textgym train`` builds it, it learns a few hundred tokens, saves,
loads (SB3's ``load`` and textgym's ``load_agent``) with the same weights and the same greedy
actions, and resumes training where it stopped. Archives saved before the agents were split
into layers (tests/data/legacy/<algo>-data.json: the ``data`` entry such an archive held) load
too. Algorithm-specific state (replay buffers, target networks, group settings) is tested in
each family's own test file."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from stable_baselines3.common.vec_env import VecEnv

from textgym.agents import LMActorCriticPolicy, LMQPolicy
from textgym.agents.runs.checkpoints import load_agent, zip_algo
from textgym.agents.runs.config import TrainConfig
from textgym.agents.runs.hyperparams import ALGOS
from textgym.agents.runs.training import build_agent, training_env

LEGACY = Path(__file__).parent / "data" / "legacy"
ENV = "TextGen-Sentiment-v0"
# Small batches: a few hundred tokens are several updates of every algorithm.
SMALL = {
    "textppo": {"batch_episodes": 4, "minibatch_episodes": 2},
    "grpo": {"batch_episodes": 4, "minibatch_episodes": 2, "group_size": 2},
    "rloo": {"batch_episodes": 4, "minibatch_episodes": 2, "group_size": 2},
    "reinforce": {"batch_episodes": 4, "minibatch_episodes": 2},
    "softq": {"batch_episodes": 4, "minibatch_episodes": 2, "buffer_size": 8, "gradient_steps": 1},
    "ppo": {"n_envs": 2, "n_steps": 32, "batch_size": 32},
    "a2c": {"n_envs": 2, "n_steps": 16},
    "dqn": {"n_envs": 2, "batch_size": 8, "train_freq": 16, "gradient_steps": 1, "buffer_size": 256},
}
TOKENS = 256


def test_every_registry_algorithm_has_a_contract_case():
    assert set(SMALL) == set(ALGOS)
    assert {path.name.removesuffix("-data.json") for path in LEGACY.glob("*-data.json")} == set(ALGOS)


def config_of(algo: str) -> TrainConfig:
    return TrainConfig(env=ENV, algo=algo, model="tiny", profile="quick", hyperparams=SMALL[algo]).resolved()


def observations(agent, n: int = 3) -> list:
    """A few observations of the agent's own env: a VecEnv's batch, or single env observations."""
    env = agent.get_env() if isinstance(agent.env, VecEnv) and agent.env.num_envs > 1 else None
    if env is not None:
        env.seed(7)
        return [env.reset()]
    single = training_env(config_of(zip_algo_name(agent)))
    return [single.reset(seed=7 + i)[0] for i in range(n)]


def zip_algo_name(agent) -> str:
    return next(name for name, cls in ALGOS.items() if type(agent) is cls)


def greedy(agent, batch) -> np.ndarray:
    return np.asarray(agent.predict(batch, deterministic=True)[0])


def assert_same_agent(a, b) -> None:
    assert isinstance(a, type(b)) and type(a.policy) is type(b.policy)  # a GRPO may load as TextPPO
    state_b = b.policy.state_dict()
    for name, value in a.policy.state_dict().items():
        assert torch.equal(value, state_b[name]), name
    for batch in observations(a):
        assert np.array_equal(greedy(a, batch), greedy(b, batch))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """Each algorithm trained once for TOKENS tokens and saved (shared by the tests below)."""
    folder = tmp_path_factory.mktemp("contract")
    agents = {}
    for algo in ALGOS:
        agent = build_agent(config_of(algo), None, "cpu")
        agent.learn(TOKENS)
        agent.save(folder / f"{algo}.zip")
        agents[algo] = (agent, folder / f"{algo}.zip")
    return agents


@pytest.mark.parametrize("algo", list(ALGOS))
def test_learns_saves_loads_and_resumes(trained, algo):
    agent, archive = trained[algo]
    assert agent.num_timesteps >= TOKENS
    expected = LMQPolicy if algo == "dqn" else LMActorCriticPolicy
    assert isinstance(agent.policy, expected)
    # A bare archive does not name its class: GRPO, RLOO and REINFORCE load as the TextPPO they
    # are (their settings come back with them); a run directory's run.json names the algorithm.
    assert zip_algo(archive) == ("textppo" if isinstance(agent, ALGOS["textppo"]) else algo)
    loaded = ALGOS[algo].load(archive, env=training_env(config_of(algo)), device="cpu")
    assert type(loaded) is type(agent)
    assert_same_agent(agent, loaded)
    assert loaded.num_timesteps == agent.num_timesteps
    assert_same_agent(agent, load_agent(archive))
    loaded.learn(64, reset_num_timesteps=False)  # resumes: the count goes on from the saved one
    assert loaded.num_timesteps >= agent.num_timesteps + 64


@pytest.mark.parametrize("algo", list(ALGOS))
def test_an_archive_saved_before_the_layers_loads(trained, algo, tmp_path):
    """The ``data`` of an archive saved by the flat agents/ folder names its classes
    ``textgym.agents.policies``, ``textgym.agents.buffers``, ``textgym.agents.qpolicy``;
    with this version's weights beside it, SB3's own ``load`` and ``load_agent`` read it."""
    agent, archive = trained[algo]
    legacy_data = (LEGACY / f"{algo}-data.json").read_bytes()
    assert b"textgym.agents.common" not in legacy_data  # pickled by the old layout
    old = tmp_path / f"{algo}-legacy.zip"
    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(old, "w") as target:
        for name in source.namelist():
            target.writestr(name, legacy_data if name == "data" else source.read(name))
    for loaded in (ALGOS[algo].load(old, env=training_env(config_of(algo)), device="cpu"), load_agent(old)):
        assert type(loaded.policy) is type(agent.policy)
        for batch in observations(agent):
            assert np.array_equal(greedy(agent, batch), greedy(loaded, batch))
