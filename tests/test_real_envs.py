"""agents.real_envs.SeededVectorEnv: real transitions only, one seed per episode, exact replay on load."""

from __future__ import annotations

import numpy as np
import pytest

from agents.real_envs import SEED_HIGH, SeededVectorEnv, Transition

FROZEN_HOLES_AND_GOAL = {5, 7, 11, 12, 15}  # FrozenLake-v1's default 4x4 map


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _random_steps(envs: SeededVectorEnv, actions: np.random.Generator, steps: int) -> list[Transition]:
    n = int(envs.action_space.n)
    return [envs.step(actions.integers(0, n, size=envs.n_envs) + envs.action_start) for _ in range(steps)]


def _same(a: Transition, b: Transition) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("env_id", ["CartPole-v1", "FrozenLake-v1"])
def test_replay_restores_envs_exactly(env_id: str) -> None:
    """Three copies, 300 random steps with many resets, then a checkpoint mid-episode: a fresh instance loaded from
    it continues with exactly the same transitions as the original (FrozenLake-v1 is slippery: the replay must
    also restore each copy's internal np_random)."""
    rng = _rng(0)
    envs = SeededVectorEnv(env_id, 3, rng)
    first = envs.reset()
    assert envs.episode_seeds == [int(s) for s in _rng(0).integers(0, SEED_HIGH, size=3)]
    assert np.array_equal(first, envs.obs)
    actions = _rng(1)
    _random_steps(envs, actions, 300)
    assert envs.returns.episodes >= 10 and any(envs.episode_actions)  # resets happened; mid-episode now
    state = envs.state_dict()
    rng_state = rng.bit_generator.state
    actions_state = actions.bit_generator.state

    resumed_rng = _rng(99)
    resumed_rng.bit_generator.state = rng_state
    resumed = SeededVectorEnv(env_id, 3, resumed_rng)
    resumed.load_state_dict(state)
    assert np.array_equal(resumed.obs, envs.obs)
    assert resumed.episode_seeds == envs.episode_seeds and resumed.episode_actions == envs.episode_actions
    replay_actions = _rng(1)
    replay_actions.bit_generator.state = actions_state
    ahead = _random_steps(envs, actions, 200)
    again = _random_steps(resumed, replay_actions, 200)
    assert sum(int(t.done.sum()) for t in ahead) >= 5  # the continuation crosses resets too
    assert all(_same(a, b) for a, b in zip(ahead, again, strict=True))
    assert envs.metrics() == resumed.metrics()
    envs.close()
    resumed.close()


def test_transitions_are_real_and_resets_use_fresh_seeds() -> None:
    """FrozenLake-v1, two copies, 1,500 random steps (a few reach the goal): a finished copy's ``next_obs`` is its
    final cell (a hole or the goal, reward 1 only there), the copy restarts at cell 0 with a new seed from the
    shared generator, and the episode returns add up."""
    rng = _rng(3)
    envs = SeededVectorEnv("FrozenLake-v1", 2, rng)
    envs.reset()
    expected_seeds = _rng(3)
    expected = [int(s) for s in expected_seeds.integers(0, SEED_HIGH, size=2)]
    assert envs.episode_seeds == expected
    actions, returns, finished = _rng(4), np.zeros(2), []
    for _ in range(1_500):
        seeds_before = list(envs.episode_seeds)
        t = _random_steps(envs, actions, 1)[0]
        assert np.array_equal(t.done, t.terminated | t.truncated)
        returns += t.rewards
        for i in range(2):
            if t.terminated[i]:
                assert t.next_obs[i] in FROZEN_HOLES_AND_GOAL and t.rewards[i] == float(t.next_obs[i] == 15)
            if t.done[i]:
                finished.append(returns[i])
                returns[i] = 0.0
                assert envs.obs[i] == 0 and envs.episode_actions[i] == []
            else:
                assert envs.obs[i] == t.next_obs[i] and envs.episode_seeds[i] == seeds_before[i]
        if t.done.any():  # one new seed per finished copy, in copy order, from the same stream
            new = [int(s) for s in expected_seeds.integers(0, SEED_HIGH, size=int(t.done.sum()))]
            assert [envs.episode_seeds[i] for i in np.flatnonzero(t.done)] == new
    assert len(finished) >= 20 and 0 < sum(finished) < len(finished)
    metrics = envs.metrics()
    assert metrics["rollout/episodes"] == len(finished)
    assert metrics["rollout/ep_rew_mean"] == pytest.approx(np.mean(finished[-100:]))
    envs.close()


@pytest.mark.parametrize("tamper", ["seed", "action"])
def test_load_refuses_a_replay_that_diverges(tamper: str) -> None:
    envs = SeededVectorEnv("CartPole-v1", 2, _rng(0))
    envs.reset()
    _random_steps(envs, _rng(1), 30)
    state = envs.state_dict()
    if tamper == "seed":
        state["episode_seeds"] = [s + 1 for s in state["episode_seeds"]]
    else:
        copy = next(i for i, a in enumerate(state["episode_actions"]) if a)
        state["episode_actions"][copy][0] = 1 - state["episode_actions"][copy][0]
    fresh = SeededVectorEnv("CartPole-v1", 2, _rng(0))
    with pytest.raises(ValueError, match="cannot resume 'CartPole-v1' exactly"):
        fresh.load_state_dict(state)
    fresh.close()
    envs.close()


def test_close_twice() -> None:
    envs = SeededVectorEnv("CartPole-v1", 2, _rng(0))
    envs.reset()
    envs.close()
    assert envs.vec.closed
    envs.close()  # a no-op
