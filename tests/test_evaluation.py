"""Environments registered without a time limit or a reward threshold (Gymnasium's CliffWalking-v1): every method
and the evaluation get the package's default time limit, and the computed threshold is the optimal return."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import agents
from agents.evaluation import (
    COMPUTED_THRESHOLDS,
    DEFAULT_EPISODE_LIMIT,
    evaluate,
    make_kwargs,
    reward_threshold,
)
from envs import TabularModel, value_iteration

CLIFF = "CliffWalking-v1"


def test_cliff_walking_has_no_limit_or_threshold_registered_so_the_package_supplies_both():
    spec = gym.spec(CLIFF)
    assert spec.max_episode_steps is None and spec.reward_threshold is None  # what makes the defaults needed
    assert make_kwargs(CLIFF) == {"max_episode_steps": DEFAULT_EPISODE_LIMIT}
    assert make_kwargs("CartPole-v1") == {}  # a registered limit is kept
    assert reward_threshold(CLIFF) == COMPUTED_THRESHOLDS[CLIFF]
    assert reward_threshold("CartPole-v1") == 475.0


@pytest.mark.parametrize("env_id", sorted(COMPUTED_THRESHOLDS))
def test_computed_threshold_is_the_optimal_return_under_the_default_limit(env_id):
    env = gym.make(env_id, **make_kwargs(env_id))
    try:
        model = TabularModel.from_env(env)
    finally:
        env.close()
    optimum = value_iteration(model, gamma=1.0, horizon=DEFAULT_EPISODE_LIMIT).expected_return
    assert optimum == pytest.approx(COMPUTED_THRESHOLDS[env_id], abs=1e-9)


class _AlwaysUp:
    """A greedy policy that never reaches CliffWalking's goal (action 0 is 'up')."""

    def predict(self, obs, state=None, episode_start=None, deterministic=True):
        return np.zeros(len(obs), dtype=np.int64), None


def test_an_evaluation_of_a_policy_that_never_finishes_ends_at_the_limit():
    result = evaluate(_AlwaysUp(), CLIFF, episodes=3)
    assert result.mean == -float(DEFAULT_EPISODE_LIMIT) and result.std == 0.0


@pytest.mark.parametrize("method", ["st-gumbel-critic", "reinforce", "ppo"])
def test_every_family_trains_an_env_without_a_limit_in_truncated_episodes(method):
    with agents.make_agent(method, CLIFF, eval_every=10**9, n_envs=1) as agent:
        agent.learn(2 * DEFAULT_EPISODE_LIMIT + 256)
        # Each of the first episodes ends at the limit at the latest, so some have finished by now.
        assert agent.record[-1]["rollout/episodes"] >= 1
        # Step 0's evaluation ended (each episode truncated at the limit at the latest): all its episodes were
        # scored, each between the cliff's worst (-100 per step for the whole limit) and the optimum.
        first = agent.record[0]
        assert first["eval/episodes"] == agent.config.eval_episodes
        assert -100 * DEFAULT_EPISODE_LIMIT <= first["eval/mean_reward"] <= COMPUTED_THRESHOLDS[CLIFF]
