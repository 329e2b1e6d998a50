"""A user's own environment, registered by importing this module: ``audit/Corridor-v0``.

A corridor of ``LENGTH`` cells; the agent starts in cell 0 and moves left (action 0) or right (action 1). Reaching
the last cell ends the episode with reward 1 (every other step: 0); episodes are cut after ``MAX_STEPS`` steps.
The greedy policy "always right" scores exactly 1, the reward threshold. Observations: the cell, one-hot.

The tests name it the ways a user would: ``corridor_env:audit/Corridor-v0`` (Gymnasium's ``module:id``) or
``--gym-packages corridor_env`` with ``audit/Corridor-v0``, with ``tests/`` on ``PYTHONPATH``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

ENV_ID = "audit/Corridor-v0"
LENGTH = 5
MAX_STEPS = 20


class CorridorEnv(gym.Env[np.ndarray, np.int64]):
    """Move right to the end of the corridor."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(self, render_mode: str | None = None) -> None:
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(0.0, 1.0, (LENGTH,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.cell = 0

    def _obs(self) -> np.ndarray:
        obs = np.zeros(LENGTH, dtype=np.float32)
        obs[self.cell] = 1.0
        return obs

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.cell = 0
        return self._obs(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.cell = max(0, self.cell - 1) if int(action) == 0 else self.cell + 1
        done = self.cell == LENGTH - 1
        return self._obs(), float(done), done, False, {}

    def render(self) -> np.ndarray:
        frame = np.zeros((8, 8 * LENGTH, 3), dtype=np.uint8)
        frame[:, 8 * self.cell : 8 * self.cell + 8] = 255
        return frame


if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point=CorridorEnv, max_episode_steps=MAX_STEPS, reward_threshold=1.0)
