"""Replay buffer of real environment transitions, sampled with n-step returns that stop at episode ends.

The buffer is a ring of ``capacity`` transitions (oldest overwritten first) held as tensors on one device.
Transitions arrive ``stride`` at a time (one per copy of a vector env), so an env copy's next transition sits
``stride`` slots later; :meth:`ReplayBuffer.sample` follows that chain to build the n-step return

    R_t = sum_{k<m} gamma^k r_{t+k},   bootstrapped with   discount_t * V(s_{t+m}),   discount_t = gamma^m,

where ``m <= n`` is cut short where the episode ended (``done``: terminated or truncated) or where the newer
transitions are not written yet. Whether the target bootstraps at all is the last followed transition's
``terminated`` flag (a truncation bootstraps from its final observation; a termination does not).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch

from gumbel_rl.policy import features_dim


class ReplaySample(NamedTuple):
    """``batch`` sampled transitions, each tensor with leading dimension ``batch``.

    ``obs``/``next_obs``: raw observations, float (batch, obs_dim) for Box spaces, long indices (batch,) for
    Discrete ones; ``action``: long action indices (from 0); ``reward``: the n-step discounted reward sum;
    ``terminated``: 1.0 where the last followed transition terminated the episode (no bootstrap);
    ``discount``: ``gamma^m`` with ``m`` the transitions followed, what multiplies the bootstrapped value.
    """

    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor
    discount: torch.Tensor


class ReplayBuffer:
    """Ring buffer of transitions as tensors on ``device``: raw observations (indices for Discrete spaces),
    action indices, rewards, next observations, ``terminated`` flags (1.0 only for true terminations) and ``done``
    flags (terminated or truncated: the episode ended there).

    ``stride``: the distance in the buffer between an env copy's consecutive transitions (``n_envs``, as every
    ``add`` appends one transition per copy), which lets ``sample`` follow an episode for n-step returns.
    """

    def __init__(self, capacity: int, observation_space: gym.Space, device: torch.device, stride: int = 1) -> None:
        self.capacity, self.device, self.stride = int(capacity), device, int(stride)
        self.discrete = isinstance(observation_space, gym.spaces.Discrete)
        self.obs_start = int(observation_space.start) if self.discrete else 0
        obs_shape: tuple[int, ...] = () if self.discrete else (features_dim(observation_space),)
        obs_dtype = torch.long if self.discrete else torch.float32
        self.obs = torch.zeros((self.capacity, *obs_shape), dtype=obs_dtype, device=device)
        self.next_obs = torch.zeros_like(self.obs)
        self.action = torch.zeros(self.capacity, dtype=torch.long, device=device)
        self.reward = torch.zeros(self.capacity, dtype=torch.float32, device=device)
        self.terminated = torch.zeros(self.capacity, dtype=torch.float32, device=device)
        self.done = torch.zeros(self.capacity, dtype=torch.bool, device=device)
        self.pos = 0
        self.size = 0

    def _obs_tensor(self, obs: np.ndarray) -> torch.Tensor:
        if self.discrete:
            return torch.as_tensor(np.asarray(obs, dtype=np.int64) - self.obs_start, device=self.device)
        return torch.as_tensor(np.asarray(obs, dtype=np.float32).reshape(len(obs), -1), device=self.device)

    def add(
        self,
        obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
        done: np.ndarray | None = None,
    ) -> torch.Tensor:
        """Append a batch of ``m`` transitions (numpy arrays with leading dimension ``m``; ``action`` as indices from
        0); ``done`` (terminated or truncated) defaults to ``terminated``. Returns the ``m`` slots written (long)."""
        m = len(action)
        idx = ((self.pos + torch.arange(m)) % self.capacity).to(self.device)
        self.obs[idx] = self._obs_tensor(obs)
        self.next_obs[idx] = self._obs_tensor(next_obs)
        self.action[idx] = torch.as_tensor(np.asarray(action, dtype=np.int64), device=self.device)
        self.reward[idx] = torch.as_tensor(np.asarray(reward, dtype=np.float32), device=self.device)
        self.terminated[idx] = torch.as_tensor(np.asarray(terminated, dtype=np.float32), device=self.device)
        done = terminated if done is None else done
        self.done[idx] = torch.as_tensor(np.asarray(done, dtype=bool), device=self.device)
        self.pos = (self.pos + m) % self.capacity
        self.size = min(self.size + m, self.capacity)
        return idx

    def sample(
        self,
        batch: int,
        generator: torch.Generator,
        n_step: int = 1,
        gamma: float = 1.0,
        reward_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> ReplaySample:
        """``batch`` uniform draws (with replacement), each followed along its episode for up to ``n_step``
        transitions (fewer where the episode ended or the newer ones are not written yet): ``reward = sum_k gamma^k
        r_{t+k}``, ``next_obs``/``terminated`` those of the last transition followed, ``discount = gamma^(transitions
        followed)`` (``gamma`` everywhere when ``n_step == 1``).

        ``reward_fn``: the per-transition reward ``r`` used in the sum, computed now from the slots (long, (batch,))
        -> (batch,) float; default the stored reward. It lets a learner rescale rewards or add a bonus that changes
        as it learns (e.g. one that shrinks with visit counts) without rewriting the buffer."""
        rew: Callable[[torch.Tensor], torch.Tensor] = (lambda j: self.reward[j]) if reward_fn is None else reward_fn
        i = torch.randint(self.size, (batch,), device=self.device, generator=generator)
        newer = (self.pos - 1 - i) % self.capacity  # transitions written after i (the ring's newest is pos - 1)
        reward = rew(i).clone()
        last, alive, followed = i, ~self.done[i], torch.ones(batch, device=self.device)
        for k in range(1, n_step):
            alive = alive & (newer >= k * self.stride)
            j = (i + k * self.stride) % self.capacity
            reward = reward + (gamma**k) * rew(j) * alive
            last = torch.where(alive, j, last)
            followed = followed + alive
            alive = alive & ~self.done[j]
        discount = torch.pow(torch.full_like(followed, gamma), followed)
        return ReplaySample(self.obs[i], self.action[i], reward, self.next_obs[last], self.terminated[last], discount)

    def state_dict(self) -> dict[str, Any]:
        """The filled part of the buffer, in storage order, with the write position."""
        n = self.size
        state: dict[str, Any] = {key: getattr(self, key)[:n].clone() for key in _STORED}
        return {**state, "pos": self.pos, "size": self.size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        n = int(state["size"])
        for key in _STORED:
            getattr(self, key)[:n] = state[key].to(self.device)
        self.pos, self.size = int(state["pos"]), n


_STORED = ("obs", "next_obs", "action", "reward", "terminated", "done")

__all__ = ["ReplayBuffer", "ReplaySample"]
