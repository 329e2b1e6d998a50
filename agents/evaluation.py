"""Evaluation in the real Gymnasium environment, the same for every method.

Returns are measured with Stable-Baselines3's ``evaluate_policy`` (which splits the episodes evenly over the
vectorised copies, so short episodes are not over-counted) on ``gymnasium.make(env_id)``: Gymnasium's own
CartPole-v1, or our registered gridworlds -- never a twin. "Solved" means the mean return over 100 deterministic
episodes reaches the environment's ``reward_threshold``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

import envs  # noqa: F401  (registers the gumbel_rl/ gridworlds)

SOLVE_EPISODES = 100
"""Episodes of the deterministic evaluation that decides "solved"."""


@dataclass(frozen=True)
class EvalResult:
    """Mean and standard deviation of the episode return over ``episodes`` episodes."""

    mean: float
    std: float
    episodes: int
    deterministic: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def reward_threshold(env_id: str) -> float | None:
    """The ``reward_threshold`` registered for ``env_id`` (None if it has none)."""
    return gym.spec(env_id).reward_threshold


def evaluate(
    policy: Any, env_id: str, episodes: int = 10, deterministic: bool = True, seed: int = 0, n_envs: int = 4
) -> EvalResult:
    """Return statistics of ``policy`` (anything with SB3's ``predict``) in ``gymnasium.make(env_id)``.

    Args:
        episodes: number of episodes (>= 1).
        deterministic: greedy actions if True, sampled actions otherwise.
        seed: seed of the evaluation environments (copy i gets seed + i); fixed so that methods are compared on
            the same start states.
    Raises:
        ValueError: episodes < 1.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    venv = make_vec_env(env_id, n_envs=min(n_envs, episodes), seed=seed)
    try:
        returns, _ = evaluate_policy(
            policy, venv, n_eval_episodes=episodes, deterministic=deterministic, return_episode_rewards=True
        )
    finally:
        venv.close()
    returns = np.asarray(returns, dtype=np.float64)
    return EvalResult(float(returns.mean()), float(returns.std()), len(returns), deterministic)


def is_solved(result: EvalResult, env_id: str) -> bool:
    """True when ``result`` is a deterministic evaluation of >= 100 episodes reaching the reward threshold."""
    threshold = reward_threshold(env_id)
    if threshold is None or math.isnan(result.mean):
        return False
    return result.deterministic and result.episodes >= SOLVE_EPISODES and result.mean >= threshold
