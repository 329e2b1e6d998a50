"""Returns and advantages of a batch of trajectories: TD(lambda) targets and GAE, one implementation for all methods.

With ``V`` a learned value, the TD(lambda) return of step ``t`` (Sutton and Barto, eq. 12.3, written recursively) is

    G_t = r_t + gamma * (1 - terminated_t) * ( V(s'_t)                               if the episode ended at t
                                               (1 - lambda) V(s'_t) + lambda G_{t+1}  otherwise )

with ``G_{T-1}`` bootstrapped on ``V(s'_{T-1})`` at the end of the batch. ``s'_t`` is the observation step ``t``
led to, *before* any reset, so an episode truncated by a time limit bootstraps on the value of its final
observation and a terminated one does not bootstrap at all. GAE(lambda) (Schulman et al. 2016) is the same thing
seen from the advantage side: ``A_t = G_t - V(s_t)``; ``lambda = 1`` gives the discounted return-to-go
bootstrapped at the batch's end, ``lambda = 0`` the one-step TD target.
"""

from __future__ import annotations

import torch


def lambda_returns(
    rewards: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    done: torch.Tensor,
    gamma: float,
    lam: float,
) -> torch.Tensor:
    """TD(lambda) targets ``G_t`` of a batch of ``T`` steps of ``B`` environments (no gradient).

    Args:
        rewards, next_values: (T, B) floating; ``next_values[t]`` is V of the observation after step t (before any
            reset).
        terminated, done: (T, B) bool; ``done = terminated | truncated`` (the episode ended at that step).
        gamma: discount in [0, 1]; lam: lambda in [0, 1].
    Returns:
        (T, B) targets, without gradient.
    """
    with torch.no_grad():
        horizon = rewards.shape[0]
        out = torch.empty_like(rewards)
        nxt = next_values[-1]
        not_term = (~terminated).to(rewards.dtype)
        for t in range(horizon - 1, -1, -1):
            blend = torch.where(done[t], next_values[t], (1.0 - lam) * next_values[t] + lam * nxt)
            out[t] = rewards[t] + gamma * not_term[t] * blend
            nxt = out[t]
    return out


def gae_advantages(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    done: torch.Tensor,
    gamma: float,
    lam: float,
) -> torch.Tensor:
    """GAE(lambda) advantages ``A_t = G_t - V(s_t)`` with ``G_t`` from :func:`lambda_returns` (no gradient).

    Args:
        values: (T, B) ``V(s_t)``; the other arguments as for :func:`lambda_returns`.
    Returns:
        (T, B) advantages, without gradient.
    """
    return lambda_returns(rewards, next_values, terminated, done, gamma, lam) - values.detach()


__all__ = ["gae_advantages", "lambda_returns"]
