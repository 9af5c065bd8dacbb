"""Multi-turn episodes at the token level (textgym.envs.multiturn) and the number-guessing game."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from stable_baselines3 import PPO
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.env_util import make_vec_env

import textgym  # noqa: F401  (registers the envs)
from textgym.agents import EpisodeRolloutBuffer, LMActorCriticPolicy
from textgym.agents.common.network import LMActorCritic
from textgym.agents.common.rollout import play_turns, token_log_probs
from textgym.agents.runs.evaluation import evaluate
from textgym.envs import FunctionPartner, HumanPartner, Partner
from textgym.envs.guess_number import NOT_A_GUESS, TURN_COST, binary_search_turns, read_guess
from textgym.envs.multiturn import MultiTurnEnv
from textgym.wrappers import VecPartnerBatcher

GAME = "TextGen-GuessNumber-v0"
END = 2  # the tiny model's end-of-turn token (<|im_end|>)


def make(**kwargs) -> MultiTurnEnv:
    return gym.make(GAME, **{"model": "tiny", "split": "test", **kwargs}).unwrapped


def say(env, text: str, end: bool = True):
    """Step the tokens of ``text`` (then the end-of-turn token); the last step's result."""
    ids = env.tokenizer(text, add_special_tokens=False)["input_ids"] + ([END] if end else [])
    for token in ids:
        result = env.step(token)
    return result


def tokens(observation) -> list[int]:
    return observation["input_ids"][observation["attention_mask"] == 1].tolist()


def test_the_env_checkers_pass():
    env = gym.make(GAME, model="tiny")
    check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped)


def test_bisection_wins_within_the_known_bound_and_is_paid_per_turn():
    env = make()
    for index in range(8):
        env.reset(options={"index": index})
        secret = dict(env._conversation.example.extra)["secret"]
        low, high, turns, total = 1, env.high, 0, 0.0
        while True:
            guess = (low + high) // 2
            _, reward, terminated, truncated, info = say(env, f"{guess}")
            turns, total = turns + 1, total + reward
            assert info["turn_text"] == str(guess)
            if terminated or truncated:
                break
            assert reward == pytest.approx(TURN_COST)
            assert info["partner_reply"] == ("Higher." if secret > guess else "Lower.")
            low, high = (guess + 1, high) if secret > guess else (low, guess - 1)
        assert terminated and not truncated and info["partner_reply"] == "Correct!"
        assert turns <= math.ceil(math.log2(env.high + 1))
        assert total == pytest.approx(1 + TURN_COST * turns)
        assert info["metrics"] == {"success": 1.0, "turns": float(turns), "valid": 1.0}
        assert len(info["turns"]) == turns and info["reward_components"]["success"] == 1.0


def test_binary_search_turns_by_hand():
    assert binary_search_turns(3) == pytest.approx((2 + 1 + 2) / 3)  # guesses 2, then 1 or 3
    assert binary_search_turns(20) == pytest.approx(3.7)


def test_read_guess_takes_exactly_one_number():
    assert read_guess("I guess 7.") == 7 and read_guess("7? 7!") == 7
    assert read_guess("Is it 7 or 8?") is None and read_guess("no idea") is None


def test_the_observation_is_the_chat_template_of_the_whole_game():
    """Partner tokens join the observation as the chat template renders the conversation: the
    observation decodes to the template's text of every message so far, and each observation is
    a prefix of the next (nothing is re-tokenized)."""
    env = make()
    index = next(i for i, e in enumerate(env.examples) if dict(e.extra)["secret"] not in (5, 10))
    observation, _ = env.reset(options={"index": index})
    previous = tokens(observation)
    for guess in ("10", "I think it is 5"):
        ids = env.tokenizer(guess, add_special_tokens=False)["input_ids"] + [END]
        for token in ids:
            observation, _, terminated, truncated, _ = env.step(token)
            now = tokens(observation)
            assert now[: len(previous)] == previous
            previous = now
        assert not (terminated or truncated)
    messages = [{"role": "system", "content": env.system_prompt}]
    messages += [{"role": role, "content": text} for role, text in env._conversation.messages]
    rendered = env.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert env.tokenizer.decode(previous) == rendered


def test_a_turn_cut_by_its_budget_is_closed_for_it_and_the_game_is_truncated_after_max_turns():
    env = make(max_turns=3, max_new_tokens=4)
    observation, _ = env.reset(seed=0)
    rewards = []
    for turn in range(3):
        start = len(tokens(observation))
        for step in range(4):  # "hello" four times: no number, never an end-of-turn token
            observation, reward, terminated, truncated, info = env.step(
                env.tokenizer("hello")["input_ids"][0]
            )
            assert info["turn"] == turn and info["tokens_generated"] == step + 1
        rewards.append(reward)
        appended = tokens(observation)[start + 4 :]
        if turn < 2:
            assert not (terminated or truncated)
            assert appended[0] == END  # the env closes the agent's turn, as an observation
            assert appended == env.partner_tokens(info["partner_reply"], closed=False)
    assert truncated and not terminated
    assert rewards == [pytest.approx(NOT_A_GUESS)] * 3
    assert info["metrics"] == {"success": 0.0, "turns": 3.0, "valid": 0.0}
    assert len(tokens(observation)) <= env.max_length


def test_seeded_games_repeat_exactly():
    def game(seed):
        env = make(split="train")
        env.reset(seed=seed)
        env.action_space.seed(seed)
        rewards, observations = [], []
        for _ in range(40):
            action = env.action_space.sample(mask=env.action_masks().astype(np.int8))
            observation, reward, terminated, truncated, _ = env.step(action)
            rewards.append(reward)
            observations.append(tokens(observation))
            if terminated or truncated:
                break
        return rewards, observations

    assert game(5) == game(5)


def test_a_user_partner_plugs_in():
    env = make(partner=FunctionPartner(lambda conversation: f"You said {conversation.messages[-1][1]}."))
    env.reset(seed=0)
    _, _, _, _, info = say(env, "4")
    assert info["partner_reply"] == "You said 4."
    typed = []
    human = make(partner=HumanPartner(ask=lambda prompt: typed.append(prompt) or "Higher."))
    human.reset(seed=0)
    _, _, _, _, info = say(human, "3")
    assert info["partner_reply"] == "Higher." and typed == ["agent: 3\nyou: "]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"max_turns": 0}, ValueError, "max_turns must be a positive int"),
        ({"partner": "scripted"}, TypeError, "partner must be a textgym.envs.multiturn.Partner"),
        ({"max_partner_tokens": 5}, ValueError, "max_partner_tokens must exceed the 11 tokens"),
        ({"high": 1}, ValueError, "high must be an int from 2"),
        ({"high": 20, "dataset_kwargs": {"high": 30}}, ValueError, "disagree"),
        ({"reward": "dialogue"}, TypeError, "reward= is not accepted"),
        ({"max_new_tokens": 400}, ValueError, r"max_turns \* max_new_tokens .* exceeds the 2048 positions"),
        ({"colour": "red"}, TypeError, "unknown argument"),
    ],
)
def test_bad_arguments_are_one_clear_error(kwargs, error, match):
    with pytest.raises(error, match=match):
        make(**kwargs)


def test_a_partner_that_does_not_answer_with_text_is_named():
    class Silent(Partner):
        def reply(self, conversations):
            return [None for _ in conversations]

    env = make(partner=Silent())
    env.reset(seed=0)
    with pytest.raises(TypeError, match="Silent.reply returned a NoneType, not a str"):
        say(env, "5")


class Recording(Partner):
    """Answers with what it read, and records the size of every batch it was asked."""

    def __init__(self):
        self.calls: list[int] = []

    def reply(self, conversations):
        self.calls.append(len(conversations))
        return [f"Turn {c.turn}: you said {c.messages[-1][1]!r}." for c in conversations]


def test_a_reply_request_is_the_conversation_the_partner_reads_and_a_supplied_reply_is_used():
    partner = Recording()
    env = make(partner=partner, max_new_tokens=3)
    env.reset(seed=0)
    word = env.tokenizer("7", add_special_tokens=False)["input_ids"][0]
    assert env.reply_request(word) is None  # the turn goes on
    assert env.reply_request(10**9) is None and env.reply_request("x") is None  # step names those
    request = env.reply_request(END)
    assert request.messages[-1] == ("assistant", "") and request.state is env._conversation.state
    assert len(env._conversation.messages) == len(request.messages) - 1  # the env's own is untouched
    env.step(word)
    env.step(word)
    assert env.reply_request(word).messages[-1] == ("assistant", "777")  # the budget ends this turn
    env.supply_reply("Lower.")
    *_, info = env.step(word)
    assert info["partner_reply"] == "Lower." and partner.calls == []
    with pytest.raises(TypeError, match="Recording.reply returned a int, not a str"):
        env.supply_reply(3)
    env.supply_reply("Dropped by the reset.")
    env.reset(seed=1)
    *_, info = say(env, "5")
    assert info["partner_reply"] == "Turn 0: you said '5'." and partner.calls == [1]


def test_a_vector_envs_partners_reply_in_one_batch_with_the_unbatched_results():
    def run(batched: bool):
        partner = Recording()
        kwargs = {"model": "tiny", "partner": partner, "max_new_tokens": 4, "max_turns": 3}
        kwargs["render_mode"] = "ansi"
        venv = make_vec_env(GAME, n_envs=4, seed=0, env_kwargs=kwargs)
        venv = VecPartnerBatcher(venv) if batched else venv
        words = np.flatnonzero(venv.env_method("action_masks", indices=[0])[0])[10:60]
        rng = np.random.default_rng(0)
        observations, steps = [venv.reset()], []
        for _ in range(40):
            actions = np.where(rng.random(4) < 0.4, END, rng.choice(words, 4))
            observation, rewards, dones, infos = venv.step(actions)
            observations.append(observation)
            steps.append((rewards.tolist(), dones.tolist(), [i.get("partner_reply") for i in infos]))
        return observations, steps, partner.calls

    observations, steps, calls = run(batched=True)
    alone_observations, alone_steps, alone_calls = run(batched=False)
    assert steps == alone_steps
    for a, b in zip(observations, alone_observations):
        assert all(np.array_equal(a[k], b[k]) for k in a)
    assert sum(calls) == sum(alone_calls) > 0 and set(alone_calls) == {1}
    assert len(calls) < len(alone_calls) and max(calls) > 1  # several envs' turns in one call


def test_the_partner_batcher_needs_envs_in_this_process():
    with pytest.raises(TypeError, match="needs an SB3 VecEnv, got GuessNumberEnv"):
        VecPartnerBatcher(make())


@pytest.mark.parametrize("group_size", [1, 2])
def test_batched_turns_log_probs_equal_a_one_pass_replay_and_partner_tokens_are_not_actions(group_size):
    """play_turns keeps one KV cache through every turn (the partner's tokens enter it in one
    pass); a single pass over the finished conversations gives the same log-probs."""
    env = make(max_new_tokens=6)
    net = LMActorCritic("tiny", env.action_space.n)
    examples = [env.examples[i] for i in range(4 // group_size)]
    batch, returns, infos = play_turns(
        net, env, examples, torch.Generator().manual_seed(0), group_size=group_size
    )
    assert len(infos) == 4 and batch.group_size == group_size
    assert (batch.mask[:, batch.start :].sum(-1) > batch.response_mask.sum(-1)).any()  # partner tokens
    with torch.no_grad():
        raw, _ = net.sequence(batch.ids, batch.mask, batch.start, batch.response_mask)
        replayed = token_log_probs(net.process(raw), batch.tokens[batch.response_mask])
    assert torch.allclose(replayed, batch.log_probs[batch.response_mask], atol=1e-4)
    assert (batch.log_probs[~batch.response_mask] == 0).all()
    for row, info in enumerate(infos):
        assert returns[row] == pytest.approx(sum(turn["reward"] for turn in info["turns"]))
        assert set(info["metrics"]) == set(env.defaults.metrics)


def test_a_batched_game_replayed_step_by_step_through_the_env_has_the_same_tokens_and_log_probs():
    """The batch's conversations are what the env's observations are, token for token, and the
    policy stepping the env (its stepping cache takes each partner reply in one pass) gives the
    same log-prob to every agent token; the env pays the same return."""
    env = make(max_new_tokens=4, max_turns=3)
    net = LMActorCritic("tiny", env.action_space.n)
    batch, returns, _ = play_turns(net, env, env.examples[:2], torch.Generator().manual_seed(0))
    for row in range(2):
        prompt = env.encode_prompt(env.examples[row])[0]
        sequence = batch.tokens[row][batch.mask[row, batch.start :] == 1].tolist()
        observation, _ = env.reset(options={"index": row})
        total = 0.0
        for column in batch.response_mask[row].nonzero()[:, 0].tolist():
            assert tokens(observation) == prompt + sequence[:column]
            logits, _ = net.step([np.asarray(tokens(observation))])
            token = sequence[column]
            log_prob = token_log_probs(logits, torch.tensor([token]))
            assert float(log_prob) == pytest.approx(float(batch.log_probs[row, column]), abs=1e-4)
            observation, reward, terminated, truncated, _ = env.step(token)
            total += reward
        assert terminated or truncated
        assert total == pytest.approx(float(returns[row]), abs=1e-5)
    assert net.cache_stats["hits"] > 0


def test_evaluate_plays_whole_games():
    result = evaluate("tiny", GAME, n=3, seeds=[0], batch_size=2)
    for key in ("reward", "success", "turns", "valid", "kl", "perplexity"):
        assert math.isfinite(result.metrics[key]), key
    assert abs(result.metrics["kl"]) < 1e-3  # the untrained model is its own reference
    assert all(row["conversation"] for row in result.examples)


def test_stock_ppo_trains_on_whole_games_with_the_episode_buffer():
    env = make_vec_env(
        GAME,
        n_envs=2,
        env_kwargs={"model": "tiny", "max_new_tokens": 3, "max_turns": 2, "render_mode": "ansi"},
    )
    model = PPO(
        LMActorCriticPolicy, env, n_steps=8, batch_size=8, n_epochs=1, seed=0,
        rollout_buffer_class=EpisodeRolloutBuffer, policy_kwargs={"model": "tiny"},
    )  # fmt: skip
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(16)
    assert model.num_timesteps == 16
    assert any(not torch.equal(a, p) for a, p in zip(before, model.policy.parameters()))


def test_softq_refuses_a_multi_turn_env():
    from textgym.agents import SoftQ

    with pytest.raises(TypeError, match="SoftQ replays single-turn texts and GuessNumberEnv is multi-turn"):
        SoftQ("LMPolicy", gym.make(GAME, model="tiny"))


@pytest.mark.parametrize("algo", ["TextPPO", "GRPO", "RLOO", "REINFORCE"])
def test_the_sequence_level_agents_learn_on_whole_games(algo):
    import textgym.agents as agents

    env = gym.make(GAME, model="tiny", max_new_tokens=3, max_turns=2)
    group = {"group_size": 2} if algo in ("GRPO", "RLOO") else {}
    model = getattr(agents, algo)("LMPolicy", env, batch_episodes=4, minibatch_episodes=2, seed=0, **group)
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(8)
    assert len(model.ep_info_buffer) == 4 and np.isfinite(model.last_rollout["reward"])
    assert any(not torch.equal(a, p) for a, p in zip(before, model.policy.parameters()))


def test_turn_rewards_are_paid_on_each_turns_last_token_and_partner_tokens_get_no_advantage():
    from textgym.agents import TokenRolloutBuffer

    env = make(max_new_tokens=3, max_turns=3)
    net = LMActorCritic("tiny", env.action_space.n)
    episodes, returns, infos = play_turns(net, env, env.examples[:4], torch.Generator().manual_seed(0))
    agent = episodes.response_mask
    for row, info in enumerate(infos):  # one reward per turn, on agent tokens only
        paid = episodes.rewards[row][episodes.rewards[row] != 0].tolist()
        assert paid == pytest.approx([t["reward"] for t in info["turns"] if t["reward"] != 0])
        assert (episodes.rewards[row][~agent[row]] == 0).all()
    buffer = TokenRolloutBuffer(4, env.observation_space, env.action_space, device="cpu", gamma=1.0,
                                gae_lambda=1.0, normalize_advantage=False, use_critic=False)  # fmt: skip
    buffer.add(episodes, returns)
    buffer.compute_returns_and_advantage(kl_coef=0.0)
    assert (buffer.advantages[~agent] == 0).all() and (buffer.returns[~agent] == 0).all()
    # Without a critic or discount, an agent token's advantage is the rest of its game's rewards.
    for row in range(4):
        columns = agent[row].nonzero()[:, 0]
        to_go = episodes.rewards[row][columns].flip(0).cumsum(0).flip(0)
        assert torch.allclose(buffer.advantages[row, columns], to_go)
        assert buffer.advantages[row, columns[0]] == pytest.approx(float(returns[row]))
