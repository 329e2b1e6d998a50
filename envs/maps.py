"""The registered GridWorld suite: its ASCII maps, settings and Gymnasium registration (``gumbel_rl/...``).

Every map uses ``step_cost = -0.01``, ``goal_reward = 1`` and ``trap_reward = -1`` (see ``envs.gridworld``).
``optimal_return`` is the optimal expected return from the start distribution, computed by finite-horizon
(horizon = ``max_episode_steps``), undiscounted value iteration on the env's exact model (``envs.tabular``);
``tests/test_gridworld.py`` recomputes it. ``reward_threshold`` sits just under it:

- deterministic maps: ``optimal_return - 0.01 + 0.001``, i.e. a policy is "solved" when its mean return is
  within 0.9 of a step of the optimum (it tolerates fewer than one extra step per episode on average);
- slippery maps: ``optimal_return - 0.05``, about one standard error of a 100-episode mean (returns there have a
  standard deviation of about 0.45), so that the best policy passes most 100-episode checks.

The policies trained here observe their cell only, not the time left, so they are stationary. Every threshold must
be reachable by one: the time limit is long enough that the best stationary policy is within a fraction of the
margin of the (time-dependent) finite-horizon optimum, which the tests check.

``threshold_margin`` is the distance allowed below the optimum: the test checks
``optimal - margin <= reward_threshold < optimal``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

NAMESPACE = "gumbel_rl"
STEP_COST = -0.01


@dataclass(frozen=True)
class GridSpec:
    """One registered map: Gymnasium id, layout, env kwargs, time limit and solved threshold."""

    env_id: str
    layout: tuple[str, ...]
    max_episode_steps: int
    optimal_return: float
    reward_threshold: float
    threshold_margin: float
    env_kwargs: dict[str, Any] = field(default_factory=dict)

    def kwargs(self) -> dict[str, Any]:
        """The ``GridWorld`` constructor kwargs registered for this id."""
        return {"map": list(self.layout), "step_cost": STEP_COST, **self.env_kwargs}


EMPTY_ROOM_5X5 = (
    "S....",
    ".....",
    ".....",
    ".....",
    "....G",
)

# Two starts (top-left and bottom-left rooms); doors at (2, 5), (8, 5), (5, 1), (5, 6).
FOUR_ROOMS_11X11 = (
    "S....#.....",
    ".....#.....",
    "...........",
    ".....#.....",
    ".....#.....",
    "#.####.####",
    ".....#.....",
    ".....#.....",
    "...........",
    ".....#.....",
    "S....#....G",
)

# Depth-first maze on an 8x8 cell lattice (numpy default_rng(5)), 3 extra openings, walled right and bottom.
MAZE_16X16 = (
    "S....#.....#...#",
    "####.#.#.#.###.#",
    ".#...#.#.#.....#",
    ".#.#####.###.#.#",
    ".#.....#.#.....#",
    ".#####.#.#.###.#",
    "...#...#.#...#.#",
    ".###.###.#.###.#",
    "...#.#...#...#.#",
    "##.#.#.#####.#.#",
    "...#...#.....#.#",
    ".#.#####.###.#.#",
    ".#.#.........#.#",
    ".###.#####.###.#",
    ".........#....G#",
    "################",
)

# CliffWalking's layout: the bottom row between start and goal is a cliff of traps.
CLIFF_4X12 = (
    "............",
    "............",
    "............",
    "STTTTTTTTTTG",
)

SLIPPERY_8X8 = (
    "S...#...",
    ".T..#.T.",
    "........",
    "..T..#..",
    "#...T...",
    "..#.....",
    ".T...#T.",
    "...#...G",
)

SUITE: tuple[GridSpec, ...] = (
    GridSpec(f"{NAMESPACE}/EmptyRoom-5x5-v0", EMPTY_ROOM_5X5, 32, 0.92, 0.911, 0.01),
    GridSpec(f"{NAMESPACE}/FourRooms-11x11-v0", FOUR_ROOMS_11X11, 80, 0.83, 0.821, 0.01),
    GridSpec(f"{NAMESPACE}/Maze-16x16-v0", MAZE_16X16, 224, 0.44, 0.431, 0.01),
    GridSpec(f"{NAMESPACE}/Cliff-4x12-v0", CLIFF_4X12, 52, 0.87, 0.861, 0.01),
    # 128 steps, not 4x the shortest path (56): under a 64-step limit the slips make the optimum time-dependent
    # (0.542) and the best stationary policy reached only 0.484, below that limit's threshold of 0.492.
    GridSpec(f"{NAMESPACE}/Slippery-8x8-v0", SLIPPERY_8X8, 128, 0.5627, 0.5127, 0.05, {"slip": 0.2}),
)
"""The suite, in registration order: id, layout, max_episode_steps (4x to 4.6x the shortest path; 9x on the
slippery map),
optimal_return (value iteration, rounded to 4 places), reward_threshold, threshold_margin, extra kwargs."""

GRIDWORLD_IDS: tuple[str, ...] = tuple(spec.env_id for spec in SUITE)
"""Every registered GridWorld id."""


def grid_spec(env_id: str) -> GridSpec:
    """The ``GridSpec`` of a suite id.

    Raises:
        ValueError: ``env_id`` is not in the suite; the message lists the suite's ids.
    """
    for spec in SUITE:
        if spec.env_id == env_id:
            return spec
    raise ValueError(f"{env_id!r} is not a GridWorld suite id; ids: {', '.join(GRIDWORLD_IDS)}")


def register_gridworlds() -> None:
    """Register every suite id with Gymnasium; ids already registered are left alone (safe to call twice)."""
    for spec in SUITE:
        if spec.env_id in gym.registry:
            continue
        gym.register(
            id=spec.env_id,
            entry_point="envs.gridworld:GridWorld",
            max_episode_steps=spec.max_episode_steps,
            reward_threshold=spec.reward_threshold,
            kwargs=spec.kwargs(),
        )


def optimal_return(env_id: str) -> float:
    """Optimal expected return of a suite id: finite-horizon (``max_episode_steps``), undiscounted value
    iteration (``envs.tabular``) on the env's exact model, averaged over the start distribution.

    Raises:
        ValueError: ``env_id`` is not in the suite.
    """
    from envs.gridworld import GridWorld
    from envs.tabular import TabularModel, value_iteration

    spec = grid_spec(env_id)
    model = TabularModel.from_env(GridWorld(**spec.kwargs()))
    return value_iteration(model, gamma=1.0, horizon=spec.max_episode_steps).expected_return
