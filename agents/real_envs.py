"""Real Gymnasium environments that an off-policy agent can checkpoint and resume exactly: :class:`SeededVectorEnv`.

Used by the methods that learn from real steps of any Gymnasium env (``agents.critic``, ``agents.model_based``).
The design, and why:

- **Autoreset disabled.** Gymnasium 1.x's default ``NEXT_STEP`` mode resets a finished copy on its *next* step,
  which then returns the reset observation with a dummy reward -- a "reset step" that is no transition of any
  episode and would have to be filtered out of a replay buffer. Here ``autoreset_mode=DISABLED`` and
  :meth:`SeededVectorEnv.step` resets the copies that finished right after the step that ended them
  (``reset(seed=..., options={"reset_mask": done})``). So every :class:`Transition` is a real ``(s, a, r, s')`` of
  one episode, with ``s'`` the true final observation on termination or truncation.
- **One seed per episode.** Each episode of each copy is reset with its own seed, drawn from the agent's NumPy
  generator when the episode starts. An episode is then a pure function of its seed and its actions, for any env
  that is deterministic given ``reset(seed=...)`` (every Gymnasium env, stochastic ones like slippery FrozenLake
  included: their randomness comes from ``np_random``, which the seed fixes).
- **Replay on load.** So a checkpoint need not pickle the envs: :meth:`SeededVectorEnv.state_dict` keeps, per copy,
  the current episode's seed and the actions taken since its reset (at most one episode), plus the current
  observations and the episode returns. :meth:`SeededVectorEnv.load_state_dict` resets each copy with its seed,
  replays its actions and checks that the replayed observations equal the saved ones (``ValueError`` otherwise: an
  env that is not deterministic given its seed cannot be resumed exactly). With the agent's generators restored,
  training then continues bit-identically to an uninterrupted run.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from agents.episodes import EpisodeReturns
from agents.evaluation import env_wrappers, make_kwargs

SEED_HIGH = 2**31 - 1
"""Episode seeds are drawn uniformly from ``[0, SEED_HIGH)``."""


class Transition(NamedTuple):
    """One vectorised step of ``n_envs`` copies (numpy arrays, first axis ``n_envs``).

    ``obs`` the observations the actions were taken in; ``actions`` the env actions (int64); ``rewards`` (float);
    ``next_obs`` the observations the step returned (the final ones of the copies that finished: never a reset
    observation); ``terminated``, ``truncated`` and ``done = terminated | truncated`` (bool).
    """

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_obs: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    done: np.ndarray


class SeededVectorEnv:
    """``n_envs`` copies of ``env_id`` in a ``SyncVectorEnv`` without autoreset, one seed per episode.

    See the module docstring for the exact-resume design. ``rng`` is the agent's NumPy generator (shared, not
    copied): the episode seeds are drawn from it, one per copy at :meth:`reset` and one per finished copy in
    :meth:`step`, in copy order. Nothing else is drawn from it.

    Attributes: ``env_id``, ``n_envs``, ``vec`` (the ``SyncVectorEnv``), ``observation_space`` and ``action_space``
    (of one copy), ``action_start`` (the first action of the ``Discrete`` space, else 0), ``obs`` (the current
    observations, None before :meth:`reset`), ``episode_seeds`` and ``episode_actions`` (per copy: the current
    episode's seed and the env actions taken since its reset), ``returns`` (:class:`EpisodeReturns`).
    """

    def __init__(self, env_id: str, n_envs: int, rng: np.random.Generator) -> None:
        self.env_id = env_id
        self.n_envs = int(n_envs)
        self.rng = rng
        vec = gym.make_vec(
            env_id,
            num_envs=self.n_envs,
            vectorization_mode="sync",
            vector_kwargs={"autoreset_mode": AutoresetMode.DISABLED},
            wrappers=env_wrappers(env_id),
            **make_kwargs(env_id),
        )
        assert isinstance(vec, SyncVectorEnv)
        self.vec: SyncVectorEnv = vec
        self.observation_space = self.vec.single_observation_space
        self.action_space = self.vec.single_action_space
        self.action_start = int(getattr(self.action_space, "start", 0))
        self.obs: Any = None
        self.episode_seeds: list[int] = []
        self.episode_actions: list[list[int]] = [[] for _ in range(self.n_envs)]
        self.returns = EpisodeReturns(self.n_envs)
        self._closed = False

    def _draw_seeds(self, n: int) -> list[int]:
        return [int(s) for s in self.rng.integers(0, SEED_HIGH, size=n)]

    def reset(self) -> Any:
        """Start a new episode in every copy, each with a fresh seed; returns the observations (n_envs, ...)."""
        self.episode_seeds = self._draw_seeds(self.n_envs)
        self.episode_actions = [[] for _ in range(self.n_envs)]
        self.obs, _ = self.vec.reset(seed=list(self.episode_seeds))
        return self.obs

    def step(self, actions: np.ndarray) -> Transition:
        """Step every copy with its env action (n_envs,), then reset (with new seeds) the copies that finished.

        Stores nothing but the bookkeeping for the resume and the episode returns; afterwards :attr:`obs` holds the
        reset observation of each finished copy and the returned ``next_obs`` its final one.
        """
        obs = self.obs
        next_obs, rewards, terminated, truncated, _ = self.vec.step(actions)
        done = np.logical_or(terminated, truncated)
        self.returns.add(rewards, done)
        for i, a in enumerate(actions):
            self.episode_actions[i].append(int(a))
        current = next_obs
        if done.any():
            for copy_index, seed in zip(np.flatnonzero(done), self._draw_seeds(int(done.sum())), strict=True):
                self.episode_seeds[copy_index] = seed
                self.episode_actions[copy_index] = []
            reset_obs, _ = self.vec.reset(seed=list(self.episode_seeds), options={"reset_mask": done})
            current = np.where(done.reshape(-1, *[1] * (np.ndim(next_obs) - 1)), reset_obs, next_obs)
        self.obs = current
        return Transition(obs, np.asarray(actions), rewards, next_obs, terminated, truncated, done)

    def metrics(self) -> dict[str, float]:
        """``rollout/ep_rew_mean`` (once an episode has finished) and ``rollout/episodes``."""
        return self.returns.metrics()

    def state_dict(self) -> dict[str, Any]:
        """Per copy the episode seed and the actions since its reset, the observations and the episode returns."""
        return {
            "episode_seeds": list(self.episode_seeds),
            "episode_actions": [list(a) for a in self.episode_actions],
            "obs": torch.as_tensor(np.asarray(self.obs)),
            "returns": self.returns.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore every copy exactly: reset it with its saved episode seed and replay its saved actions.

        Raises:
            ValueError: the replayed observations differ from the saved ones (an env that is not deterministic
                given its reset seed and actions cannot be resumed exactly).
        """
        seeds = [int(s) for s in state["episode_seeds"]]
        actions = [[int(a) for a in copy_actions] for copy_actions in state["episode_actions"]]
        obs, _ = self.vec.reset(seed=list(seeds))
        obs = np.array(obs, copy=True)
        for i, env in enumerate(self.vec.envs):
            for a in actions[i]:
                obs[i], *_ = env.step(a)
        if not np.array_equal(obs, state["obs"].cpu().numpy()):
            raise ValueError(
                f"cannot resume {self.env_id!r} exactly: replaying the saved episode seeds and actions does not "
                "reproduce the saved observations (is the environment deterministic given its seed?)"
            )
        self.episode_seeds, self.episode_actions, self.obs = seeds, actions, obs
        self.returns.load_state_dict(state["returns"])

    def close(self) -> None:
        """Close the environments (safe to call more than once)."""
        if not self._closed:
            self._closed = True
            self.vec.close()


__all__ = ["SEED_HIGH", "SeededVectorEnv", "Transition"]
