"""Tests for the ``<estimator>-critic`` methods (agents/critic.py): learning, env handling, gradients, resume."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs  # noqa: F401  (registers the gridworlds)
from agents import Agent, StopTrainingOnSolved, make_agent
from agents.critic import CriticAgent
from gumbel_rl.estimators import PATHWISE_ESTIMATORS

EMPTY = "gumbel_rl/EmptyRoom-5x5-v0"
# Small, fast settings for the 5x5 room: updates every 2 env steps, frequent evaluation.
FAST = {"learning_starts": 200, "batch_size": 64, "train_freq": 2, "eval_every": 250, "net_arch": [32]}


@pytest.mark.parametrize("estimator", PATHWISE_ESTIMATORS)
def test_learns_empty_room(estimator: str) -> None:
    agent = make_agent(f"{estimator}-critic", EMPTY, seed=0, **FAST)
    agent.learn(4_000, callback=StopTrainingOnSolved())
    assert agent.solved, f"{estimator}-critic did not solve {EMPTY}: last eval {agent.last_eval}"
    # The solved greedy policy: 100 episodes at the threshold (0.911), i.e. within a step of the optimum 0.92.
    assert agent.evaluate(episodes=20, seed=123).mean >= agent.threshold


FROZEN_DET = "gumbel_rl_test/FrozenLake4x4-NotSlippery-v1"
if FROZEN_DET not in gym.registry:
    gym.register(
        FROZEN_DET,
        entry_point="gymnasium.envs.toy_text.frozen_lake:FrozenLakeEnv",
        kwargs={"map_name": "4x4", "is_slippery": False},
        max_episode_steps=100,
        reward_threshold=1.0,
    )


def test_learns_frozen_lake_without_twin() -> None:
    """Gymnasium's FrozenLake (4x4, not slippery; no twin): sparse reward 1 at the goal, holes end the episode.
    Solved = every one of 100 greedy episodes reaches the goal."""
    from envs import differentiable_ids

    assert FROZEN_DET not in differentiable_ids()
    hp = {"learning_starts": 1_000, "batch_size": 64, "train_freq": 2, "eval_every": 250, "net_arch": [32]}
    agent = make_agent("st-gumbel-critic", FROZEN_DET, seed=0, target_entropy=0.5, **hp)
    agent.learn(6_000, callback=StopTrainingOnSolved())
    assert agent.solved and agent.last_eval.mean == 1.0
    assert agent.episodes > 100


def _rollout(env_id: str, steps: int, n_envs: int = 1, seed: int = 0) -> CriticAgent:
    """Random-action rollout (no updates: learning_starts beyond the rollout)."""
    agent = make_agent(
        "st-gumbel-critic",
        env_id,
        seed=seed,
        n_envs=n_envs,
        learning_starts=10**6,
        eval_every=10**6,
        buffer_size=10_000,
    )
    agent.learn(steps)
    return agent


def test_buffer_holds_real_transitions_terminated_vs_truncated() -> None:
    """EmptyRoom (32-step limit) under random actions: both terminations and truncations occur. Every stored
    transition is one real step of the exact model (none crosses a reset), done=1 exactly for terminations."""
    agent = _rollout(EMPTY, 1_500)
    buf, model = agent.buffer, gym.make(EMPTY).unwrapped
    n = buf.size
    assert n == agent.num_env_steps == 1_500  # every env step stored, and nothing else
    obs, act, rew, nxt, done = (t[:n].numpy() for t in (buf.obs, buf.action, buf.reward, buf.next_obs, buf.terminated))
    for s, a, r, s2, d in zip(obs, act, rew, nxt, done, strict=True):
        ((prob, s_exp, r_exp, term_exp),) = model.P[s][a]  # deterministic map: one outcome
        assert (s2, d) == (s_exp, float(term_exp)) and r == pytest.approx(r_exp)
    # Walk the episodes in storage order: a new episode starts after a termination or the 32nd step.
    length, n_term, n_trunc = 0, 0, 0
    for t in range(n - 1):
        length += 1
        if done[t]:
            n_term, length = n_term + 1, 0
            assert obs[t + 1] == 0  # the next stored transition starts from the reset cell
        elif length == 32:
            n_trunc, length = n_trunc + 1, 0
            assert done[t] == 0.0 and obs[t + 1] == 0  # truncation: stored, not done, bootstraps
        else:
            assert obs[t + 1] == nxt[t]  # same episode continues
    assert n_term >= 5 and n_trunc >= 5
    assert agent.episodes == n_term + n_trunc + (1 if done[n - 1] or length + 1 == 32 else 0)


def test_buffer_cartpole_physics_two_envs() -> None:
    """CartPole with two copies: each stored next observation is CartPole's physics applied to (obs, action), and
    done is its termination rule -- so no reset observation is ever stored as a successor."""
    agent = _rollout("CartPole-v1", 400, n_envs=2)
    buf = agent.buffer
    assert buf.size == 400 and agent.episodes >= 10
    sim = gym.make("CartPole-v1").unwrapped
    sim.reset(seed=0)
    for i in range(buf.size):
        sim.state, sim.steps_beyond_terminated = buf.obs[i].double().numpy(), None
        s2, _, term, _, _ = sim.step(int(buf.action[i]))
        np.testing.assert_allclose(buf.next_obs[i].numpy(), s2, rtol=1e-5, atol=1e-6)
        assert buf.terminated[i].item() == float(term)
    assert buf.terminated[: buf.size].sum().item() == agent.episodes  # random play never reaches 500 steps


def test_n_step_returns_follow_each_episode() -> None:
    """Two copies (stride 2), capacity 6, after 4 steps (the first overwritten): copy 0 terminates at t=1, copy 1
    is truncated at t=2. Each 3-step sample sums its episode's discounted rewards up to the episode's end or the
    newest transition, and bootstraps from the last one followed (gamma = 0.5)."""
    from agents.critic import ReplayBuffer

    buf = ReplayBuffer(6, gym.spaces.Box(-100, 100, (1,)), torch.device("cpu"), stride=2)
    for t in range(4):
        buf.add(
            obs=np.array([[t], [10 + t]]),
            action=np.array([0, 1]),
            reward=np.array([1.0, 2.0]),
            next_obs=np.array([[t + 1], [11 + t]]),
            terminated=np.array([t == 1, False]),
            done=np.array([t == 1, t == 2]),
        )
    # obs -> (n-step reward, next obs, terminated, discount)
    expected = {
        1: (1.0, 2, 1.0, 0.5),  # terminated here: nothing follows
        2: (1.0 + 0.5, 4, 0.0, 0.25),  # t=3 is the newest transition of copy 0
        3: (1.0, 4, 0.0, 0.5),
        11: (2.0 + 0.5 * 2.0, 13, 0.0, 0.25),  # truncated at t=2: stops there, bootstraps from 13
        12: (2.0, 13, 0.0, 0.5),
        13: (2.0, 14, 0.0, 0.5),
    }
    gen = torch.Generator().manual_seed(0)
    obs, _, reward, next_obs, terminated, discount = buf.sample(300, gen, n_step=3, gamma=0.5)
    seen = set()
    for o, *got in torch.stack([obs[:, 0], reward, next_obs[:, 0], terminated, discount], 1).tolist():
        seen.add(int(o))
        assert got == pytest.approx(expected[int(o)]), o
    assert seen == set(expected)  # 0 and 10 were overwritten
    # n_step = 1: the stored transitions, discount left to the caller.
    obs, _, reward, next_obs, _, discount = buf.sample(50, gen)
    assert discount is None and torch.equal(next_obs, obs + 1) and torch.equal(reward, 1.0 + (obs[:, 0] >= 10))


def test_actor_gradient_only_through_action() -> None:
    agent = make_agent("st-gumbel-critic", EMPTY, seed=3, learning_starts=100, batch_size=32, eval_every=10**6)
    agent.learn(300)  # fills the buffer and makes a few updates
    features = agent._features(agent.buffer.sample(32, agent.generator)[0])
    critic_before = [p.detach().clone() for p in agent.critic_params]
    grads_before = [None if p.grad is None else p.grad.clone() for p in agent.critic_params]
    policy_before = [p.detach().clone() for p in agent.actor_params]
    agent._actor_step(features, tau=1.0)
    # The critic is untouched: same weights, same gradients, still trainable afterwards.
    for p, w, g in zip(agent.critic_params, critic_before, grads_before, strict=True):
        assert torch.equal(p, w) and p.requires_grad
        assert (p.grad is None and g is None) or torch.equal(p.grad, g)
    assert any(not torch.equal(p, w) for p, w in zip(agent.actor_params, policy_before, strict=True))
    # Cut the action out of the critic (zero its input weights): then the actor gets no gradient at all.
    with torch.no_grad():
        agent.critic.weights[0][:, agent.policy.obs_dim :, :] = 0.0
    logits = agent.policy(features)
    from gumbel_rl.estimators import sample_action

    for estimator in PATHWISE_ESTIMATORS:
        agent.policy.zero_grad()
        a = sample_action(agent.policy(features), estimator, 1.0, generator=agent.generator)
        (-agent.critic(features, a).amin(0).mean()).backward()
        assert all(p.grad is None or not p.grad.any() for p in agent.actor_params), estimator
    assert logits.requires_grad


def _weights(agent: Agent) -> list[torch.Tensor]:
    return [*agent.policy.state_dict().values(), *agent.critic.state_dict().values()]


def _record(agent: Agent) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "wall_s"} for row in agent.record]


def test_same_seed_same_results() -> None:
    runs = [make_agent("st-gumbel-critic", EMPTY, seed=7, **FAST).learn(600) for _ in range(2)]
    assert _record(runs[0]) == _record(runs[1])
    assert all(torch.equal(a, b) for a, b in zip(_weights(runs[0]), _weights(runs[1]), strict=True))
    other = make_agent("st-gumbel-critic", EMPTY, seed=8, **FAST).learn(600)
    assert not all(torch.equal(a, b) for a, b in zip(_weights(runs[0]), _weights(other), strict=True))


def test_checkpoint_resume_is_exact(tmp_path) -> None:
    """CartPole, two copies, saved mid-episode: load + continue == uninterrupted (weights, buffer, record)."""
    hp = {
        "n_envs": 2,
        "learning_starts": 100,
        "batch_size": 32,
        "train_freq": 2,
        "eval_every": 300,
        "ent_coef": 0.01,
        "n_step": 3,
        "tau": {"kind": "linear", "tau0": 2.0, "tau_end": 0.5, "steps": 600},
    }
    full = make_agent("reinmax-critic", "CartPole-v1", seed=5, **hp).learn(600)
    part = make_agent("reinmax-critic", "CartPole-v1", seed=5, **hp).learn(300)
    assert any(len(a) > 0 for a in part.episode_actions)  # mid-episode: the replay has work to do
    path = part.save(tmp_path / "ckpt.pt")
    resumed = Agent.load(path)
    assert isinstance(resumed, CriticAgent) and resumed.num_env_steps == 300
    resumed.learn(600)
    assert _record(resumed) == _record(full)
    assert all(torch.equal(a, b) for a, b in zip(_weights(resumed), _weights(full), strict=True))
    for key in ("obs", "action", "reward", "next_obs", "terminated", "done"):
        assert torch.equal(getattr(resumed.buffer, key), getattr(full.buffer, key)), key
    assert np.array_equal(resumed.obs, full.obs)


def test_resume_detects_mismatched_environment(tmp_path) -> None:
    agent = make_agent("st-gumbel-critic", "CartPole-v1", seed=1, learning_starts=10**6, eval_every=10**6)
    agent.learn(30)
    state = agent._training_state()
    state["episode_seeds"] = [s + 1 for s in state["episode_seeds"]]
    with pytest.raises(ValueError, match="cannot resume"):
        agent._load_training_state(state)


@pytest.mark.parametrize(
    ("hp", "name"),
    [
        ({"actor_lr": -1e-3}, "actor_lr"),
        ({"critic_lr": 0}, "critic_lr"),
        ({"tau": 0.0}, "tau"),
        ({"tau": {"kind": "cosine"}}, "tau"),
        ({"gamma": 1.5}, "gamma"),
        ({"n_step": 0}, "n_step"),
        ({"n_step": 2.5}, "n_step"),
        ({"polyak": 0}, "polyak"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"critic_arch": [64, -1]}, "critic_arch"),
        ({"critic_activation": "sigmoid"}, "critic_activation"),
        ({"ent_coef": -0.1}, "ent_coef"),
        ({"ent_coef": "auto_x"}, "ent_coef"),
        ({"ent_coef": "auto_0"}, "ent_coef"),
        ({"target_entropy": 1.5}, "target_entropy"),
        ({"soft_target": "yes"}, "soft_target"),
    ],
)
def test_bad_hyperparameters_are_named(hp: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        make_agent("st-gumbel-critic", EMPTY, **hp)


def test_methods_registered_without_twin() -> None:
    from agents.registry import METHODS, methods_for

    names = [f"{e}-critic" for e in PATHWISE_ESTIMATORS]
    assert all(METHODS[n].agent_cls is CriticAgent and not METHODS[n].needs_twin for n in names)
    assert set(names) <= set(methods_for("FrozenLake-v1"))
    agent = make_agent("gumbel-rao-critic", EMPTY, learning_starts=10**6, eval_every=10**6)
    assert agent.estimator == "gumbel-rao" and agent.policy.estimator == "gumbel-rao"
