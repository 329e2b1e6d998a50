"""GridWorld: a Gymnasium environment built from an ASCII map, with an exact toy-text model.

Map characters (one string per row, all rows the same length):

======  ==========================================================================
``#``   wall: cannot be entered (moving into it leaves the agent in place)
``.``   floor
``S``   start (one or more; the start cell is drawn uniformly among them)
``G``   goal (one or more): entering it ends the episode (terminated) with ``goal_reward``
``T``   trap: entering it ends the episode (terminated) with ``trap_reward``
======  ==========================================================================

Actions, ``Discrete(4)``: ``0`` up, ``1`` right, ``2`` down, ``3`` left (clockwise from up). Moving into a
wall or off the map leaves the agent in place. With probability ``slip`` the move goes sideways instead:
``slip / 2`` to the left of the intended direction (``(a - 1) % 4``) and ``slip / 2`` to its right
(``(a + 1) % 4``).

Reward of one step: ``step_cost`` on every step, plus ``goal_reward`` / ``trap_reward`` on the step that
enters a goal / trap (so entering a goal pays ``goal_reward + step_cost``). Truncation is left to
Gymnasium's ``TimeLimit`` (``max_episode_steps`` at registration).

Observations (``obs_mode``): ``"discrete"`` -> ``Discrete(rows * cols)`` with cell index
``row * ncols + col`` (walls included, never occupied), as FrozenLake; ``"onehot"`` ->
``Box(0, 1, (rows * cols,), float32)``, the one-hot of that index; ``"rowcol"`` -> ``Box`` holding
``(row, col)`` as float32.

Exact model, in the toy-text format read by ``envs.tabular``: ``P[s][a] = [(prob, next_s, reward,
terminated), ...]`` for every cell ``s`` (one entry per slip outcome with non-zero probability, in the order
intended, left, right; entries may share ``next_s``), and ``initial_state_distrib`` (float64, over cells).
Goal and trap cells map to themselves with reward 0 and ``terminated=True``; walls map to themselves with
reward 0 (never reached).

Randomness is replayable (see ``envs.gridworld_twin``): every draw is a Gumbel-Max argmax over uniforms from
``self.np_random``. ``reset`` draws ``n_cells`` uniforms and picks ``argmax(log initial_state_distrib + g)``.
``step`` always draws 3 uniforms (even when ``slip == 0``, so the streams stay aligned) for the outcomes
(intended, left, right) and picks ``argmax(log p + g)`` with ``p = (1 - slip, slip / 2, slip / 2)``. Here
``g = -log(-log(u))`` with ``u`` clipped into the open interval (0, 1). The uniforms are returned as
``info["start_uniforms"]`` by ``reset`` and ``info["uniforms"]`` by ``step`` (float64 arrays, before clipping;
two keys, because Gymnasium's vector envs stack each info key into one array, so a key must keep its shape);
``step`` also returns ``info["outcome"]`` (0 intended, 1 left, 2 right) and ``info["prob"]`` (the probability
of that outcome).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

VALID_CHARS = "#.SGT"
"""The map characters GridWorld understands (see the module docstring)."""

ACTION_NAMES = ("up", "right", "down", "left")
"""Name of each action index."""

MOVES = np.array([[-1, 0], [0, 1], [1, 0], [0, -1]], dtype=np.int64)
"""(d_row, d_col) of each action / direction: up, right, down, left."""

SLIP_OFFSETS = (0, -1, 1)
"""Direction offset of each slip outcome: intended, left of intended, right of intended."""

OBS_MODES = ("discrete", "onehot", "rowcol")
RENDER_MODES = ("ansi", "rgb_array")
CELL_PX = 16
"""Side of one cell in pixels in ``rgb_array`` renders."""

_COLOURS = {
    "#": (64, 64, 64),
    ".": (235, 235, 235),
    "S": (170, 200, 255),
    "G": (60, 180, 75),
    "T": (220, 50, 47),
}
_AGENT_COLOUR = (30, 60, 200)
_U_LOW = np.finfo(np.float64).tiny
_U_HIGH = np.nextafter(1.0, 0.0)


def clip_uniforms(u: np.ndarray) -> np.ndarray:
    """``u`` clipped into the open interval (0, 1), so that ``-log(-log(u))`` is finite."""
    clipped: np.ndarray = np.clip(u, _U_LOW, _U_HIGH)
    return clipped


def gumbel_argmax(log_p: np.ndarray, u: np.ndarray) -> int:
    """Gumbel-Max sample ``argmax(log_p - log(-log(u)))``; ``log_p`` is ``-inf`` for impossible outcomes."""
    return int(np.argmax(log_p - np.log(-np.log(clip_uniforms(u)))))


def parse_map(grid: str | Sequence[str]) -> np.ndarray:
    """The map as a 2-D array of single characters, shape (rows, cols), validated.

    ``grid`` is a list of row strings or one multi-line string (blank leading/trailing lines and the
    indentation of each line are ignored).

    Raises:
        ValueError: empty map, ragged rows, an unknown character (named with its row/col), no ``S``, no
            ``G``, a start from which no goal can be reached, or a goal that no start can reach (BFS through
            floor and start cells; goals and traps end the episode so paths do not pass through them).
    """
    if isinstance(grid, str):
        rows = [line.strip() for line in grid.strip().splitlines()]
    else:
        rows = [str(r) for r in grid]
    if not rows or not all(rows):
        raise ValueError(f"map must have at least one row and no empty rows; got {rows!r}")
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        lengths = [len(r) for r in rows]
        raise ValueError(f"map rows must all have the same length; got row lengths {lengths}")
    for i, row in enumerate(rows):
        for j, ch in enumerate(row):
            if ch not in VALID_CHARS:
                raise ValueError(
                    f"unknown map character {ch!r} at row {i}, col {j}; valid characters are {VALID_CHARS!r} "
                    "(# wall, . floor, S start, G goal, T trap)"
                )
    desc = np.array([list(r) for r in rows], dtype="<U1")
    if not (desc == "S").any():
        raise ValueError("map has no start cell 'S'; it needs at least one")
    if not (desc == "G").any():
        raise ValueError("map has no goal cell 'G'; it needs at least one")
    _check_reachable(desc)
    return desc


def _check_reachable(desc: np.ndarray) -> None:
    """Raise ValueError unless every start reaches a goal and every goal is reached from a start."""
    nrows, ncols = desc.shape
    starts = [tuple(int(x) for x in rc) for rc in np.argwhere(desc == "S")]
    goals = {tuple(int(x) for x in rc) for rc in np.argwhere(desc == "G")}
    reached_goals: set[tuple[int, int]] = set()
    for start in starts:
        seen = {start}
        queue = deque([start])
        found = False
        while queue:
            r, c = queue.popleft()
            for dr, dc in MOVES:
                nr, nc = r + int(dr), c + int(dc)
                if not (0 <= nr < nrows and 0 <= nc < ncols) or (nr, nc) in seen:
                    continue
                ch = desc[nr, nc]
                if ch == "#":
                    continue
                seen.add((nr, nc))
                if ch == "G":
                    reached_goals.add((nr, nc))
                    found = True
                elif ch in ".S":
                    queue.append((nr, nc))
        if not found:
            raise ValueError(f"no goal is reachable from the start at row {start[0]}, col {start[1]}")
    unreached = sorted(goals - reached_goals)
    if unreached:
        r, c = unreached[0]
        raise ValueError(f"the goal at row {r}, col {c} is unreachable from every start")


class GridWorld(gym.Env):
    """Grid navigation from an ASCII map; see the module docstring for characters, actions, rewards and model.

    Args:
        map: list of row strings, or one multi-line string.
        slip: probability in [0, 1) that a move goes sideways (``slip / 2`` to each side of the intended
            move).
        step_cost: reward added on every step (e.g. -0.01).
        goal_reward: reward added on the step that enters a goal.
        trap_reward: reward added on the step that enters a trap.
        obs_mode: ``"discrete"``, ``"onehot"`` or ``"rowcol"``.
        render_mode: ``None``, ``"ansi"`` or ``"rgb_array"``.

    Raises:
        ValueError: bad map (see ``parse_map``), ``slip`` outside [0, 1), unknown ``obs_mode`` or
            ``render_mode``.
    """

    metadata = {"render_modes": list(RENDER_MODES), "render_fps": 4}

    def __init__(
        self,
        map: str | Sequence[str],
        slip: float = 0.0,
        step_cost: float = 0.0,
        goal_reward: float = 1.0,
        trap_reward: float = -1.0,
        obs_mode: str = "discrete",
        render_mode: str | None = None,
    ) -> None:
        self.desc = parse_map(map)
        if not 0.0 <= float(slip) < 1.0:
            raise ValueError(f"slip must be a probability in [0, 1); got {slip!r}")
        if obs_mode not in OBS_MODES:
            raise ValueError(f"obs_mode must be one of {OBS_MODES}; got {obs_mode!r}")
        if render_mode is not None and render_mode not in RENDER_MODES:
            raise ValueError(f"render_mode must be None or one of {RENDER_MODES}; got {render_mode!r}")
        self.slip = float(slip)
        self.step_cost = float(step_cost)
        self.goal_reward = float(goal_reward)
        self.trap_reward = float(trap_reward)
        self.obs_mode = obs_mode
        self.render_mode = render_mode

        self.nrow, self.ncol = self.desc.shape
        self.n_cells = self.nrow * self.ncol
        flat = self.desc.ravel()
        self.goal_mask = flat == "G"
        self.trap_mask = flat == "T"
        self.wall_mask = flat == "#"
        self.terminal_mask = self.goal_mask | self.trap_mask
        self.slip_probs = np.array([1.0 - self.slip, self.slip / 2, self.slip / 2])
        with np.errstate(divide="ignore"):
            self._slip_log_p = np.log(self.slip_probs)
            start = (flat == "S").astype(np.float64)
            self.initial_state_distrib = start / start.sum()
            self._start_log_p = np.log(self.initial_state_distrib)

        # next_cell[s, d]: the cell reached from s by moving in direction d; absorbing cells stay put.
        self.next_cell = np.empty((self.n_cells, 4), dtype=np.int64)
        for s in range(self.n_cells):
            r, c = divmod(s, self.ncol)
            for d, (dr, dc) in enumerate(MOVES):
                nr, nc = r + int(dr), c + int(dc)
                stay = self.terminal_mask[s] or self.wall_mask[s]
                blocked = not (0 <= nr < self.nrow and 0 <= nc < self.ncol) or self.desc[nr, nc] == "#"
                self.next_cell[s, d] = s if stay or blocked else nr * self.ncol + nc
        # Reward of entering each cell from a live cell (step cost included).
        self.enter_reward = np.full(self.n_cells, self.step_cost)
        self.enter_reward[self.goal_mask] += self.goal_reward
        self.enter_reward[self.trap_mask] += self.trap_reward

        self.P: dict[int, dict[int, list[tuple[float, int, float, bool]]]] = {}
        for s in range(self.n_cells):
            self.P[s] = {}
            for a in range(4):
                if self.terminal_mask[s] or self.wall_mask[s]:
                    self.P[s][a] = [(1.0, s, 0.0, bool(self.terminal_mask[s]))]
                    continue
                entries = []
                for k, off in enumerate(SLIP_OFFSETS):
                    p = float(self.slip_probs[k])
                    if p > 0.0:
                        ns = int(self.next_cell[s, (a + off) % 4])
                        entries.append((p, ns, float(self.enter_reward[ns]), bool(self.terminal_mask[ns])))
                self.P[s][a] = entries

        self.action_space = spaces.Discrete(4)
        if obs_mode == "discrete":
            self.observation_space = spaces.Discrete(self.n_cells)
        elif obs_mode == "onehot":
            self.observation_space = spaces.Box(0.0, 1.0, (self.n_cells,), np.float32)
        else:
            high = np.array([self.nrow - 1, self.ncol - 1], dtype=np.float32)
            self.observation_space = spaces.Box(np.zeros(2, np.float32), high, (2,), np.float32)
        self.s: int | None = None
        self.lastaction: int | None = None

    def _obs(self) -> Any:
        assert self.s is not None
        if self.obs_mode == "discrete":
            return int(self.s)
        if self.obs_mode == "onehot":
            obs = np.zeros(self.n_cells, dtype=np.float32)
            obs[self.s] = 1.0
            return obs
        return np.array(divmod(self.s, self.ncol), dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Start an episode; ``info["start_uniforms"]`` holds the ``n_cells`` uniforms the start was drawn from."""
        super().reset(seed=seed)
        u = self.np_random.random(self.n_cells)
        self.s = gumbel_argmax(self._start_log_p, u)
        self.lastaction = None
        return self._obs(), {"start_uniforms": u, "prob": float(self.initial_state_distrib[self.s])}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """One move; ``info["uniforms"]`` holds the 3 uniforms of the slip draw (intended, left, right).

        Raises:
            ValueError: ``action`` is not an integer in {0, 1, 2, 3}.
            RuntimeError: ``step`` before ``reset``.
        """
        if not self.action_space.contains(action):
            raise ValueError(
                f"action {action!r} is not in the action space Discrete(4); valid actions are integers 0..3 "
                "(0 up, 1 right, 2 down, 3 left)"
            )
        if self.s is None:
            raise RuntimeError("call reset() before step()")
        a = int(action)
        u = self.np_random.random(3)
        outcome = gumbel_argmax(self._slip_log_p, u)
        s = self.s
        if self.terminal_mask[s]:
            reward, terminated = 0.0, True
        else:
            ns = int(self.next_cell[s, (a + SLIP_OFFSETS[outcome]) % 4])
            reward, terminated = float(self.enter_reward[ns]), bool(self.terminal_mask[ns])
            self.s = ns
        self.lastaction = a
        info = {"uniforms": u, "outcome": outcome, "prob": float(self.slip_probs[outcome])}
        return self._obs(), reward, terminated, False, info

    def render(self) -> str | np.ndarray | None:
        """``"ansi"``: the map as text, agent shown as ``A``; ``"rgb_array"``: uint8 (rows*16, cols*16, 3)."""
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='ansi' or 'rgb_array'")
            return None
        if self.render_mode == "ansi":
            chars = self.desc.copy()
            if self.s is not None:
                chars[divmod(self.s, self.ncol)] = "A"
            text = "\n".join("".join(row) for row in chars) + "\n"
            if self.lastaction is not None:
                text += f"({ACTION_NAMES[self.lastaction]})\n"
            return text
        img = np.zeros((self.nrow * CELL_PX, self.ncol * CELL_PX, 3), dtype=np.uint8)
        for (r, c), ch in np.ndenumerate(self.desc):
            img[r * CELL_PX : (r + 1) * CELL_PX, c * CELL_PX : (c + 1) * CELL_PX] = _COLOURS[str(ch)]
        img[::CELL_PX, :] = 0  # grid lines
        img[:, ::CELL_PX] = 0
        if self.s is not None:
            r, c = divmod(self.s, self.ncol)
            m, px = CELL_PX // 4, CELL_PX
            img[r * px + m : (r + 1) * px - m, c * px + m : (c + 1) * px - m] = _AGENT_COLOUR
        return img
