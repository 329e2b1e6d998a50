"""Differentiable twin of ``envs.gridworld.GridWorld``: the same dynamics as batched torch functions.

The state of each environment is a distribution ``dist`` over the ``n_cells = rows * cols`` cells (cell
index ``row * ncols + col``, as the Gymnasium env's ``Discrete`` observation). A fresh start is one-hot; soft
actions spread the mass. ``observe(state)`` returns ``dist`` itself, which for a one-hot state is exactly the
one-hot a policy makes of the env's ``Discrete(n_cells)`` observation, so a policy trained on the twin acts on
the env.

Dynamics of one ``step`` for an action ``action`` of shape (batch, 4), one-hot or probabilities:

- The slip outcome ``o`` in {intended, left, right} is ONE draw per environment, by Gumbel-Max over
  ``log(1 - slip, slip / 2, slip / 2)`` with the uniforms ``uniforms`` (batch, 3) when given, else drawn from
  ``generator``. Action ``a`` then moves in direction ``dir(a, o) = (a + (0, -1, +1)[o]) % 4``.
- Mass on the active cells (floor and start) moves: ``moved = sum_a action_a * (active @ T[dir(a, o)])`` where
  ``T[d]`` is the 0/1 matrix of "move in direction d" (walls and the map edge leave the agent in place; stored
  as an index table, see ``transition_matrices`` for the dense form). Mass already on goal/trap cells (and on
  walls, which a valid state never holds) stays where it is: terminal cells absorb.
- ``reward = moved @ enter_reward`` with ``enter_reward[c] = step_cost + goal_reward [c is a goal]
  + trap_reward [c is a trap]``: the step cost on the mass that was still alive, plus the goal/trap reward
  on the mass entering those cells; absorbed mass earns nothing. It is linear, so differentiable, in both
  ``dist`` and ``action`` (rows of ``action`` should sum to 1; otherwise moved mass is scaled by the row sum).
- ``terminated = (mass on goal/trap cells >= 1 - 1e-6)``; ``t`` counts steps; ``truncated = (t >=
  max_episode_steps) & ~terminated``. Note: Gymnasium's ``TimeLimit`` reports ``truncated=True`` also when the
  last allowed step terminates; the twin then reports only ``terminated``.

With a one-hot state, a one-hot action and the env's ``info["uniforms"]`` (and its reset ``info["start_uniforms"]``
for ``reset``), the twin reproduces the Gymnasium env exactly: the same cells, rewards, and termination step.
All Gumbel-Max draws are computed in float64 whatever ``dtype`` is, with the same clipping as the env.

The noise can be drawn apart from the dynamics (``envs.differentiable.PreDrawnNoiseEnv``): ``step_noise(batch, g)``
is the (batch, 3) float64 slip uniforms ``step`` draws from ``g``, ``reset_noise(done, g)`` the (batch, n_cells)
start uniforms ``reset_done`` draws (a whole batch whatever ``done``), and ``step(..., noise=...)`` /
``reset_done(..., noise=...)`` consume them: the same step, bit for bit, as drawing inside.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import gymnasium as gym
import torch

from envs.differentiable import register_twin
from envs.gridworld import SLIP_OFFSETS, GridWorld

_U_LOW = torch.finfo(torch.float64).tiny
_U_HIGH = math.nextafter(1.0, 0.0)
TERMINATED_ATOL = 1e-6
"""A state is terminated when its mass on goal/trap cells is at least ``1 - TERMINATED_ATOL``."""


class GridState(NamedTuple):
    """Batched twin state.

    Attributes:
        dist: (batch, n_cells) distribution over cells, floating.
        t: (batch,) long, steps taken since the last reset.
        done: (batch,) bool, terminated or truncated at the last step.
    """

    dist: torch.Tensor
    t: torch.Tensor
    done: torch.Tensor


def _gumbel_argmax(log_p: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Row-wise ``argmax(log_p - log(-log(u)))`` in float64; ``log_p`` broadcasts against ``u``."""
    u = u.to(torch.float64).clamp(_U_LOW, _U_HIGH)
    return torch.argmax(log_p - torch.log(-torch.log(u)), dim=-1)


class GridWorldTwin:
    """Batched, differentiable GridWorld with the protocol of ``envs.differentiable.DifferentiableEnv``.

    Args:
        map, slip, step_cost, goal_reward, trap_reward: as for ``GridWorld`` (the map is validated the same
            way; ``obs_mode`` and ``render_mode`` are accepted and ignored, the twin observes ``dist``).
        max_episode_steps: steps after which ``truncated`` is set; ``None`` never truncates.
        env_id: the Gymnasium id this twin reproduces (informational).
        device: torch device of all tensors.
        dtype: floating dtype of ``dist``, actions and rewards (default float32).

    Training objective (``training_reward``): the env reward itself, which is linear in the state distribution
    and the action and so differentiable; a pathwise method maximises the expected return of the Gymnasium env.

    Raises:
        ValueError: bad map or parameters (from ``GridWorld``), non-floating ``dtype``.
    """

    n_actions = 4

    def __init__(
        self,
        map: str | Sequence[str],
        slip: float = 0.0,
        step_cost: float = 0.0,
        goal_reward: float = 1.0,
        trap_reward: float = -1.0,
        obs_mode: str = "discrete",
        render_mode: str | None = None,
        *,
        max_episode_steps: int | None = None,
        env_id: str = "",
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating torch dtype (e.g. torch.float32); got {dtype}")
        env = GridWorld(map, slip, step_cost, goal_reward, trap_reward)
        self.env_id = env_id
        self.max_episode_steps = max_episode_steps
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype
        self.nrow, self.ncol, self.n_cells = env.nrow, env.ncol, env.n_cells
        self.obs_dim = env.n_cells
        self.slip = env.slip
        dev = self.device
        # Log-probabilities computed by numpy exactly as the env does: Gumbel-Max draws agree bit for bit.
        self._slip_log_p = torch.as_tensor(env._slip_log_p, dtype=torch.float64, device=dev)
        self._start_log_p = torch.as_tensor(env._start_log_p, dtype=torch.float64, device=dev)
        self._offsets = torch.as_tensor(SLIP_OFFSETS, dtype=torch.long, device=dev)
        self.next_cell = torch.as_tensor(env.next_cell, dtype=torch.long, device=dev)  # (n_cells, 4)
        # dest[d * n_cells + s] = next_cell[s, d]: direction-major, as the (batch, 4, n_cells) mass layout.
        self._dest = self.next_cell.T.reshape(-1).contiguous()
        self.terminal_mask = torch.as_tensor(env.terminal_mask, device=dev)
        self.active_mask = torch.as_tensor(~(env.terminal_mask | env.wall_mask), device=dev)
        self._terminal = self.terminal_mask.to(dtype)
        self._active = self.active_mask.to(dtype)
        self.enter_reward = torch.as_tensor(env.enter_reward, dtype=dtype, device=dev)

    @classmethod
    def from_env_id(
        cls, env_id: str, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> GridWorldTwin:
        """The twin of a registered GridWorld id, built from its spec's kwargs and ``max_episode_steps``.

        Raises:
            ValueError: ``env_id`` is registered but is not a GridWorld.
        """
        spec = gym.spec(env_id)
        entry = spec.entry_point if isinstance(spec.entry_point, str) else getattr(spec.entry_point, "__name__", "")
        if not str(entry).endswith("GridWorld"):
            raise ValueError(f"{env_id!r} is not a GridWorld env (entry point {spec.entry_point!r})")
        return cls(**spec.kwargs, max_episode_steps=spec.max_episode_steps, env_id=env_id, device=device, dtype=dtype)

    def transition_matrices(self) -> torch.Tensor:
        """Dense 0/1 matrices ``T`` of shape (4, n_cells, n_cells): ``T[d, s, s'] = 1`` iff moving in
        direction ``d`` from ``s`` lands on ``s'`` (absorbing cells map to themselves)."""
        eye = torch.eye(self.n_cells, dtype=self.dtype, device=self.device)
        return torch.stack([eye[self.next_cell[:, d]] for d in range(4)])

    def _draw_uniforms(self, shape: tuple[int, int], generator: torch.Generator | None) -> torch.Tensor:
        return torch.rand(shape, generator=generator, dtype=torch.float64, device=self.device)

    def reset(
        self, batch: int, generator: torch.Generator | None = None, *, uniforms: torch.Tensor | None = None
    ) -> GridState:
        """Fresh one-hot states, the start drawn by Gumbel-Max from the env's start distribution.

        Args:
            batch: number of environments.
            generator: source of the uniforms when ``uniforms`` is None.
            uniforms: (batch, n_cells) uniforms in [0, 1) to replay, e.g. the env's reset
                ``info["start_uniforms"]``.

        Raises:
            ValueError: ``uniforms`` of the wrong shape.
        """
        if uniforms is None:
            uniforms = self._draw_uniforms((batch, self.n_cells), generator)
        else:
            uniforms = torch.as_tensor(uniforms, device=self.device)
            if uniforms.shape != (batch, self.n_cells):
                raise ValueError(
                    f"reset uniforms must have shape (batch, n_cells) = ({batch}, {self.n_cells}); "
                    f"got {tuple(uniforms.shape)}"
                )
        cell = _gumbel_argmax(self._start_log_p, uniforms)
        dist = torch.nn.functional.one_hot(cell, self.n_cells).to(self.dtype)
        t = torch.zeros(batch, dtype=torch.long, device=self.device)
        return GridState(dist, t, torch.zeros(batch, dtype=torch.bool, device=self.device))

    def step_noise(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """The slip uniforms ``step`` of ``batch`` environments draws from ``generator``: (batch, 3) float64."""
        return self._draw_uniforms((batch, 3), generator)

    def reset_noise(self, done: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The start uniforms ``reset_done(state, done)`` draws from ``generator``: (batch, n_cells) float64, a whole
        batch whatever ``done`` holds."""
        return self._draw_uniforms((done.shape[0], self.n_cells), generator)

    def reset_done(
        self,
        state: GridState,
        done: torch.Tensor,
        generator: torch.Generator | None = None,
        *,
        noise: torch.Tensor | None = None,
    ) -> GridState:
        """``state`` with the environments where ``done`` ((batch,) bool, e.g. ``state.done``) is True replaced by
        fresh starts.

        Fresh starts are drawn for the whole batch and selected with ``torch.where`` (no host sync on CUDA); with
        ``noise`` (a ``reset_noise`` result, (batch, n_cells) uniforms) they are computed from it and nothing is
        drawn.

        Raises:
            ValueError: ``noise`` of the wrong shape.
        """
        mask = done.to(device=self.device, dtype=torch.bool)
        fresh = self.reset(state.dist.shape[0], generator, uniforms=noise)
        return GridState(
            torch.where(mask[:, None], fresh.dist, state.dist),
            torch.where(mask, fresh.t, state.t),
            torch.where(mask, fresh.done, state.done),
        )

    def step(
        self,
        state: GridState,
        action: torch.Tensor,
        generator: torch.Generator | None = None,
        *,
        uniforms: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> tuple[GridState, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step of every environment (see the module docstring for the exact convention).

        Args:
            state: current ``GridState``.
            action: (batch, 4) floating, one-hot or probabilities over (up, right, down, left); cast to
                ``dtype``.
            generator: torch generator on ``device``, the source of the slip uniforms when ``uniforms`` is None.
            uniforms: (batch, 3) uniforms for the slip outcome (intended, left, right), e.g. the env's
                ``info["uniforms"]``; drawn from ``generator`` when None.
            noise: the same uniforms as a ``step_noise`` result (the ``PreDrawnNoiseEnv`` name); give at most one
                of ``uniforms`` and ``noise``.

        Returns:
            ``(next_state, reward, terminated, truncated)``: ``reward`` (batch,) in ``dtype``; the flags
            (batch,) bool.

        Raises:
            ValueError: ``action`` not a floating tensor of shape (batch, 4); ``uniforms`` not (batch, 3); both
                ``uniforms`` and ``noise`` given.
        """
        dist = state.dist
        batch = dist.shape[0]
        if not isinstance(action, torch.Tensor) or not action.is_floating_point() or action.shape != (batch, 4):
            got = (
                f"{action.dtype} tensor of shape {tuple(action.shape)}"
                if isinstance(action, torch.Tensor)
                else type(action).__name__
            )
            raise ValueError(
                f"action must be a floating tensor of shape (batch, 4) = ({batch}, 4), one-hot or "
                f"probabilities over (up, right, down, left); got {got}"
            )
        if noise is not None:
            if uniforms is not None:
                raise ValueError("give the step's slip uniforms once: uniforms= or noise=, not both")
            uniforms = noise
        if uniforms is None:
            uniforms = self._draw_uniforms((batch, 3), generator)
        else:
            uniforms = torch.as_tensor(uniforms, device=self.device)
            if uniforms.shape != (batch, 3):
                raise ValueError(
                    f"step uniforms must have shape (batch, 3) = ({batch}, 3); got {tuple(uniforms.shape)}"
                )
        outcome = _gumbel_argmax(self._slip_log_p, uniforms)  # (batch,)
        # Weight of direction d is the action that moves in d under this outcome: a = (d - offset) % 4.
        dirs = torch.arange(4, device=self.device)
        src_action = (dirs[None, :] - self._offsets[outcome][:, None]) % 4
        w = action.to(self.dtype).gather(1, src_action)  # (batch, 4 directions)
        active = dist * self._active
        mass = (w[:, :, None] * active[:, None, :]).reshape(batch, 4 * self.n_cells)
        moved = torch.zeros_like(dist).index_add(1, self._dest, mass)
        next_dist = moved + (dist - active)
        reward = moved @ self.enter_reward
        t = state.t + 1
        terminated = (next_dist * self._terminal).sum(1) >= 1.0 - TERMINATED_ATOL
        if self.max_episode_steps is None:
            truncated = torch.zeros_like(terminated)
        else:
            truncated = (t >= self.max_episode_steps) & ~terminated
        return GridState(next_dist, t, terminated | truncated), reward, terminated, truncated

    def observe(self, state: GridState) -> torch.Tensor:
        """The observation (batch, n_cells): ``state.dist`` itself, the one-hot of the env's cell index."""
        return state.dist

    def visit_distribution(self, state: GridState) -> torch.Tensor:
        """The cells a count bonus counts (``envs.differentiable.CountableEnv``), (batch, n_cells): ``state.dist``,
        the observation itself."""
        return state.dist

    def continuation(self, state: GridState) -> torch.Tensor:
        """Ones, (batch,): the twin is exact, so termination is reported by ``step`` alone."""
        return torch.ones(state.dist.shape[0], dtype=state.dist.dtype, device=state.dist.device)

    def training_reward(
        self, state: GridState, action: torch.Tensor, next_state: GridState, reward: torch.Tensor
    ) -> torch.Tensor:
        """What a pathwise method maximises: the env reward ``reward`` itself, (batch,), unchanged.

        The gridworld reward is linear in ``dist`` and ``action``, so it already carries the gradient; ``state``,
        ``action`` and ``next_state`` are accepted for the ``DifferentiableEnv`` protocol and not used.
        """
        return reward


def register_gridworld_twins(env_ids: Sequence[str]) -> None:
    """Register ``GridWorldTwin.from_env_id`` as the twin of each id.

    ``make_differentiable(env_id, device=..., dtype=...)`` then builds the twin from the registered spec.
    """
    for env_id in env_ids:
        register_twin(env_id, functools.partial(GridWorldTwin.from_env_id, env_id))
