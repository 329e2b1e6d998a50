"""Differentiable, batched torch twin of Farama's MiniGrid (``minigrid`` 3.x): Empty, DoorKey, LavaGap, FourRooms,
LavaCrossing and SimpleCrossing.

Every environment of a batch has its own layout, generated in torch with the distribution of ``minigrid``'s
``_gen_grid`` (:meth:`MiniGridTwin.reset`) or copied from a real env (:func:`state_from_env`, for lock-step checks).
Coordinates are ``minigrid``'s: ``x`` the column (0 .. width-1), ``y`` the row, tensors indexed ``[b, x, y]``;
directions 0 right, 1 down, 2 left, 3 up (``DIR_TO_VEC``); actions 0 left, 1 right, 2 forward, 3 pickup, 4 drop,
5 toggle, 6 done (``minigrid.core.actions.Actions``).

State (:class:`MiniGridState`), a factorised ("mean-field") distribution over ``minigrid``'s state:

- ``pose`` (batch, W, H, 4): distribution over the agent's cell and direction.
- ``grid`` (batch, W, H, K): for each cell a distribution over the K = 8 contents :data:`CELL_NAMES` (empty, wall,
  goal, lava, key, open / closed / locked door). Key and door take the env's ``color`` ((batch,) long, colour index
  of ``minigrid``; yellow in DoorKey), so a key always fits the door.
- ``carry`` (batch,): probability that the agent carries the key; ``t`` (batch,) long: ``step_count``.

With one-hot ``pose`` / ``grid`` and ``carry`` in {0, 1} (every :meth:`~MiniGridTwin.reset`) and one-hot actions the
state is exactly ``minigrid``'s and stays one-hot. A step with action weights ``w`` (batch, 7) is
``s' = sum_a w_a f_a(s)``, where each ``f_a`` is ``minigrid``'s ``step`` written as a multilinear function of the
factors (the relaxation): with ``A`` the pose mass not on a goal / lava cell (terminal cells absorb their mass) and
``M[c]`` the mass of agents facing cell ``c``,

- left / right: ``A`` rotated by -1 / +1 in the direction axis;
- forward: from each pose the mass moves to the front cell with the probability ``q[c]`` that the cell is passable
  (empty, goal, lava, open door), else stays;
- pickup: ``M[c] * grid[c, key] * (1 - carry)`` moves from ``grid[c, key]`` to ``grid[c, empty]`` and to ``carry``;
  drop: ``M[c] * grid[c, empty] * carry`` the other way;
- toggle: ``M[c] * grid[c, locked] * carry`` unlocks-and-opens, ``M[c] * grid[c, closed]`` opens, ``M[c] *
  grid[c, open]`` closes; done: nothing.

The products treat pose, carry and cells as independent, which is exact for a point mass and a relaxation (a
product of marginals) for soft actions. Everything is polynomial in (state, action), hence differentiable.
Rewards: ``w_forward * (mass entering a goal cell) * (1 - 0.9 * t' / max_steps)`` (``MiniGridEnv._reward`` with
``t' = step_count`` after the step, computed in float64); ``terminated`` when the mass on goal / lava cells is at
least ``1 - 1e-6``; ``truncated`` when ``t' >= max_steps`` -- as ``minigrid``, whether or not the step also
terminated. Memory per env: ``12 * W * H + 1`` floats of state (1.2 kB for 5x5, 17 kB for FourRooms' 19x19 in
float32). When nothing needs a gradient and the state is a point mass acted on by one-hot actions, ``step`` and
``observe`` take an index fast path with the same values (the tests run both against ``minigrid``): ``step`` reads
and rewrites only the agent's and the faced cell, and ``observe`` runs ``process_vis`` on 7-bit rows.

Observation (:meth:`MiniGridTwin.observe`), shape (batch, 147): exactly ``minigrid.wrappers.ImgObsWrapper``
followed by ``gymnasium.wrappers.FlattenObservation`` -- the 7x7 egocentric view encoded as (object, colour, state)
per cell, flattened in ``[x, y, channel]`` order -- from a pose, with ``minigrid``'s occlusion
(``Grid.process_vis``, unless the id sees through walls, as Empty does) computed on the cell distributions (``a or
b`` as ``a + b - a b``) and each visible cell's code the expectation of its contents' codes; averaged over the
pose's mass on the successors of the last step's pose (the remainder looks from the most probable pose), which is
the expected view after one soft step from a point mass (:meth:`MiniGridTwin.observe`). Cost: five views per env.
A policy trained on the twin therefore acts on ``FlattenObservation(ImgObsWrapper(gymnasium.make(id)))``: the
package's agents build their real envs so (``agents.evaluation.make_env``), and a loop of one's own wraps its env
the same way (``gymnasium.make(id)`` alone gives ``minigrid``'s Dict observation).
"""

from __future__ import annotations

import functools
import importlib.util
import math
import operator
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from envs.differentiable import register_twin

CELL_NAMES = ("empty", "wall", "goal", "lava", "key", "door_open", "door_closed", "door_locked")
EMPTY, WALL, GOAL, LAVA, KEY, OPEN, CLOSED, LOCKED = range(len(CELL_NAMES))
N_CELL = len(CELL_NAMES)
# minigrid's OBJECT_TO_IDX / COLOR_TO_IDX / door states for each cell content; key and door take the env's colour.
_TYPE_IDX = (1, 2, 8, 9, 5, 4, 4, 4)
_FIXED_COLOR = (0, 5, 1, 0, 0, 0, 0, 0)  # empty none, wall grey, goal green, lava red
_STATE_IDX = (0, 0, 0, 0, 0, 0, 1, 2)
_COLORED = (KEY, OPEN, CLOSED, LOCKED)
_PASSABLE = (EMPTY, GOAL, LAVA, OPEN)
_OPAQUE = (WALL, CLOSED, LOCKED)
YELLOW = 4
DIR_TO_VEC = ((1, 0), (0, 1), (-1, 0), (0, -1))
N_ACTIONS = 7
VIEW = 7
OBS_DIM = VIEW * VIEW * 3
TERMINATED_ATOL = 1e-6
EXTRA_HINT = 'MiniGrid ids need the minigrid extra: pip install -e ".[minigrid]"'


@dataclass(frozen=True)
class MiniGridSpec:
    """What the twin needs of a ``minigrid`` id: its generator family, size and ``MiniGridEnv`` settings."""

    family: str  # "empty", "empty-random", "doorkey", "lavagap", "fourrooms", "lavacrossing", "simplecrossing"
    size: int
    max_steps: int
    see_through_walls: bool
    num_crossings: int = 0


def _specs() -> dict[str, MiniGridSpec]:
    specs = {}
    for s in (5, 6, 8, 16):
        specs[f"MiniGrid-Empty-{s}x{s}-v0"] = MiniGridSpec("empty", s, 4 * s * s, True)
        specs[f"MiniGrid-DoorKey-{s}x{s}-v0"] = MiniGridSpec("doorkey", s, 10 * s * s, False)
    for s in (5, 6):
        specs[f"MiniGrid-Empty-Random-{s}x{s}-v0"] = MiniGridSpec("empty-random", s, 4 * s * s, True)
    for s in (5, 6, 7):
        specs[f"MiniGrid-LavaGapS{s}-v0"] = MiniGridSpec("lavagap", s, 4 * s * s, False)
    specs["MiniGrid-FourRooms-v0"] = MiniGridSpec("fourrooms", 19, 100, False)
    for s, n in ((9, 1), (9, 2), (9, 3), (11, 5)):
        specs[f"MiniGrid-LavaCrossingS{s}N{n}-v0"] = MiniGridSpec("lavacrossing", s, 4 * s * s, False, n)
        specs[f"MiniGrid-SimpleCrossingS{s}N{n}-v0"] = MiniGridSpec("simplecrossing", s, 4 * s * s, False, n)
    return specs


MINIGRID_SPECS: dict[str, MiniGridSpec] = _specs()
MINIGRID_IDS: tuple[str, ...] = tuple(sorted(MINIGRID_SPECS))
"""The ``minigrid`` ids with a twin."""


class MiniGridState(NamedTuple):
    """Batched twin state (see the module docstring).

    Attributes:
        pose: (batch, W, H, 4) floating, distribution over (x, y, direction).
        grid: (batch, W, H, K) floating, per-cell distribution over :data:`CELL_NAMES`.
        carry: (batch,) floating, probability of carrying the key.
        color: (batch,) long, ``minigrid`` colour index of the key and door.
        t: (batch,) long, steps since the last reset (``step_count``).
        done: (batch,) bool, terminated or truncated at the last step.
        prev: (batch,) long, flat index ``(x * H + y) * 4 + dir`` of the most probable pose before the last step
            (the start pose after a reset): the observation's candidate poses are its successors.
    """

    pose: torch.Tensor
    grid: torch.Tensor
    carry: torch.Tensor
    color: torch.Tensor
    t: torch.Tensor
    done: torch.Tensor
    prev: torch.Tensor


def minigrid_available() -> bool:
    """True when the ``minigrid`` package can be imported."""
    return importlib.util.find_spec("minigrid") is not None


def _randint(
    low: torch.Tensor | int, high: torch.Tensor | int, batch: int, gen: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """(batch,) uniform integers in [low, high) (per-env bounds allowed)."""
    u = torch.rand(batch, generator=gen, dtype=torch.float64, device=device)
    low_t = torch.as_tensor(low, device=device)
    high_t = torch.as_tensor(high, device=device)
    return (low_t + torch.floor(u * (high_t - low_t))).long()


def _uniform_cell(allowed: torch.Tensor, gen: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """A uniform draw among the True cells of ``allowed`` (batch, W, H): the (x, y) of each env, (batch,) each.

    ``place_obj``'s rejection sampling draws uniformly over the cells it accepts; so does the argmax of i.i.d.
    uniforms restricted to them.
    """
    b, w, h = allowed.shape
    scores = torch.rand((b, w, h), generator=gen, dtype=torch.float64, device=allowed.device)
    idx = scores.masked_fill(~allowed, -1.0).flatten(1).argmax(1)
    return idx // h, idx % h


def generate_layouts(
    spec: MiniGridSpec, batch: int, generator: torch.Generator | None = None, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``batch`` layouts drawn as ``minigrid``'s ``_gen_grid`` of ``spec.family`` draws them.

    Returns:
        ``(cells, x, y, dir, color)``: ``cells`` (batch, W, H) long indices into :data:`CELL_NAMES`; the agent's
        start ``x``, ``y``, ``dir`` (batch,) long; ``color`` (batch,) long.
    """
    dev = device if device is not None else torch.device("cpu")
    s = spec.size
    ar = torch.arange(batch, device=dev)
    cells = torch.full((batch, s, s), EMPTY, dtype=torch.long, device=dev)
    cells[:, 0, :] = WALL
    cells[:, -1, :] = WALL
    cells[:, :, 0] = WALL
    cells[:, :, -1] = WALL
    xs = torch.arange(s, device=dev)[None, :, None]
    color = torch.full((batch,), YELLOW, dtype=torch.long, device=dev)
    if spec.family in ("empty", "empty-random", "lavagap"):
        cells[:, s - 2, s - 2] = GOAL
        if spec.family == "lavagap":
            gx = _randint(2, s - 2, batch, generator, dev)
            gy = _randint(1, s - 1, batch, generator, dev)
            ys = torch.arange(s, device=dev)[None, None, :]
            column = (xs == gx[:, None, None]) & (ys >= 1) & (ys <= s - 2)
            cells = cells.masked_fill(column, LAVA)
            cells[ar, gx, gy] = EMPTY
        if spec.family == "empty-random":
            x, y = _uniform_cell(cells == EMPTY, generator)
            d = _randint(0, 4, batch, generator, dev)
        else:
            x = torch.ones(batch, dtype=torch.long, device=dev)
            y, d = x.clone(), torch.zeros_like(x)
    elif spec.family == "doorkey":
        cells[:, s - 2, s - 2] = GOAL
        split = _randint(2, s - 2, batch, generator, dev)
        cells = cells.masked_fill(xs == split[:, None, None], WALL)
        left = (cells == EMPTY) & (xs < split[:, None, None])
        x, y = _uniform_cell(left, generator)
        d = _randint(0, 4, batch, generator, dev)
        door_y = _randint(1, s - 2, batch, generator, dev)
        cells[ar, split, door_y] = LOCKED
        left[ar, x, y] = False
        kx, ky = _uniform_cell(left, generator)
        cells[ar, kx, ky] = KEY
    elif spec.family in ("lavacrossing", "simplecrossing"):
        cells = _crossing(cells, spec, generator)
        x = torch.ones(batch, dtype=torch.long, device=dev)
        y, d = x.clone(), torch.zeros_like(x)
    elif spec.family == "fourrooms":
        half = s // 2
        cells[:, half, :] = WALL
        cells[:, :, half] = WALL
        cells[ar, half, _randint(1, half, batch, generator, dev)] = EMPTY
        cells[ar, _randint(1, half, batch, generator, dev), half] = EMPTY
        cells[ar, _randint(half + 1, 2 * half, batch, generator, dev), half] = EMPTY
        cells[ar, half, _randint(half + 1, 2 * half, batch, generator, dev)] = EMPTY
        x, y = _uniform_cell(cells == EMPTY, generator)
        d = _randint(0, 4, batch, generator, dev)
        free = cells == EMPTY
        free[ar, x, y] = False
        gx, gy = _uniform_cell(free, generator)
        cells[ar, gx, gy] = GOAL
    else:  # pragma: no cover - MINIGRID_SPECS holds only the families above
        raise ValueError(f"unknown MiniGrid family {spec.family!r}")
    return cells, x, y, d, color


def _crossing(cells: torch.Tensor, spec: MiniGridSpec, gen: torch.Generator | None) -> torch.Tensor:
    """``CrossingEnv._gen_grid`` for a batch: ``num_crossings`` rivers drawn without replacement among the vertical
    (x = 2, 4, ...) and horizontal (y = 2, 4, ...) candidates, a uniformly shuffled path of crossings from the top-left
    room to the goal's, and one uniform gap per crossing in the wall of the room being left."""
    b, s, _ = cells.shape
    dev = cells.device
    ar = torch.arange(b, device=dev)
    obstacle = LAVA if spec.family == "lavacrossing" else WALL
    cells[:, s - 2, s - 2] = GOAL
    pos = torch.arange(2, s - 2, 2, device=dev)  # candidate river positions, the same list for both orientations
    n_cand = 2 * len(pos)
    order = torch.rand((b, n_cand), generator=gen, dtype=torch.float64, device=dev).argsort(1)
    chosen = torch.zeros((b, n_cand), dtype=torch.bool, device=dev)
    chosen[ar[:, None], order[:, : spec.num_crossings]] = True
    vert, horz = chosen[:, : len(pos)], chosen[:, len(pos) :]  # vertical rivers: columns x; horizontal: rows y
    inner = torch.arange(s, device=dev)
    inside = (inner >= 1) & (inner <= s - 2)
    col = (vert[:, :, None] & (inner[None, None, :] == pos[None, :, None])).any(1)  # (B, s): x is a river column
    row = (horz[:, :, None] & (inner[None, None, :] == pos[None, :, None])).any(1)
    river = (col[:, :, None] & inside[None, None, :]) | (row[:, None, :] & inside[None, :, None])
    cells = cells.masked_fill(river, obstacle)
    big = s - 1  # padding of the sorted river lists: limits[k] = s - 1 beyond the last river
    lim_v = torch.cat(
        [
            torch.zeros((b, 1), dtype=torch.long, device=dev),
            torch.where(vert, pos, big).sort(1).values,
            torch.full((b, 1), big, dtype=torch.long, device=dev),
        ],
        1,
    )
    lim_h = torch.cat(
        [
            torch.zeros((b, 1), dtype=torch.long, device=dev),
            torch.where(horz, pos, big).sort(1).values,
            torch.full((b, 1), big, dtype=torch.long, device=dev),
        ],
        1,
    )
    n_h_moves = vert.sum(1)  # one horizontal move across each vertical river
    steps = spec.num_crossings
    keys = torch.rand((b, steps), generator=gen, dtype=torch.float64, device=dev).argsort(1)
    is_h = keys < n_h_moves[:, None]  # a uniform arrangement of n_h_moves h's among the path's steps
    room_i = torch.zeros(b, dtype=torch.long, device=dev)
    room_j = torch.zeros(b, dtype=torch.long, device=dev)
    for k in range(steps):
        h_move = is_h[:, k]
        lo_x, hi_x = lim_v.gather(1, room_i[:, None])[:, 0] + 1, lim_v.gather(1, (room_i + 1)[:, None])[:, 0]
        lo_y, hi_y = lim_h.gather(1, room_j[:, None])[:, 0] + 1, lim_h.gather(1, (room_j + 1)[:, None])[:, 0]
        gx = torch.where(h_move, hi_x, _randint(lo_x, hi_x, b, gen, dev))
        gy = torch.where(h_move, _randint(lo_y, hi_y, b, gen, dev), hi_y)
        cells[ar, gx, gy] = EMPTY
        room_i = room_i + h_move.long()
        room_j = room_j + (~h_move).long()
    return cells


def layouts_to_state(
    cells: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    d: torch.Tensor,
    color: torch.Tensor,
    carry: torch.Tensor | None = None,
    t: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> MiniGridState:
    """A point-mass :class:`MiniGridState` from hard layouts (the shapes :func:`generate_layouts` returns)."""
    b, w, h = cells.shape
    dev = cells.device
    grid = torch.nn.functional.one_hot(cells, N_CELL).to(dtype)
    pose = torch.zeros((b, w, h, 4), dtype=dtype, device=dev)
    pose[torch.arange(b, device=dev), x, y, d] = 1.0
    carry_t = torch.zeros(b, dtype=dtype, device=dev) if carry is None else carry.to(dtype)
    t_t = torch.zeros(b, dtype=torch.long, device=dev) if t is None else t.long()
    prev = (x.long() * h + y.long()) * 4 + d.long()
    done = torch.zeros(b, dtype=torch.bool, device=dev)
    return MiniGridState(pose, grid, carry_t, color.long(), t_t, done, prev)


def state_from_env(
    env: Any, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> MiniGridState:
    """The point-mass state (batch 1) of a real ``minigrid`` env (wrapped or not) as it is now.

    Raises:
        ValueError: the grid holds an object the twin does not model (ball, box, floor, a second colour).
    """
    u = env.unwrapped
    w, h = u.grid.width, u.grid.height
    cells = torch.zeros((1, w, h), dtype=torch.long)
    colors = set()
    for i in range(w):
        for j in range(h):
            obj = u.grid.get(i, j)
            if obj is None:
                continue
            kind = obj.type
            if kind == "door":
                kind = "door_open" if obj.is_open else ("door_locked" if obj.is_locked else "door_closed")
            if kind not in CELL_NAMES:
                raise ValueError(
                    f"the MiniGrid twin models {', '.join(CELL_NAMES)}; cell ({i}, {j}) holds {obj.type!r}"
                )
            cells[0, i, j] = CELL_NAMES.index(kind)
            if kind in ("key", "door_open", "door_closed", "door_locked"):
                colors.add(obj.color)
    carry = 0.0
    if u.carrying is not None:
        if u.carrying.type != "key":
            raise ValueError(f"the MiniGrid twin models a carried key only; the agent carries {u.carrying.type!r}")
        carry = 1.0
        colors.add(u.carrying.color)
    if len(colors) > 1:
        raise ValueError(f"the MiniGrid twin models one key/door colour per env; found {sorted(colors)}")
    from minigrid.core.constants import COLOR_TO_IDX

    color = COLOR_TO_IDX[colors.pop()] if colors else YELLOW
    ax, ay = (int(v) for v in u.agent_pos)
    state = layouts_to_state(
        cells,
        torch.tensor([ax]),
        torch.tensor([ay]),
        torch.tensor([int(u.agent_dir)]),
        torch.tensor([color]),
        torch.tensor([carry]),
        torch.tensor([int(u.step_count)]),
        dtype,
    )
    dev = torch.device(device) if device is not None else torch.device("cpu")
    return MiniGridState(*(f.to(dev) for f in state))


def cat_states(states: list[MiniGridState]) -> MiniGridState:
    """One batch from several states of the same grid size."""
    return MiniGridState(*(torch.cat(fields) for fields in zip(*states, strict=True)))


def _shift(x: torch.Tensor, dx: int, dy: int, fill: float) -> torch.Tensor:
    """``out[:, i, j] = x[:, i + dx, j + dy]`` over dims 1, 2 (``fill`` outside the grid); |dx|, |dy| <= 1."""
    pad = [0, 0] * (x.dim() - 3) + [1, 1, 1, 1]
    xp = torch.nn.functional.pad(x, pad, value=fill)
    w, h = x.shape[1], x.shape[2]
    return xp[:, 1 + dx : 1 + dx + w, 1 + dy : 1 + dy + h]


def _or(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a + b - a * b


def _propagate_visibility(
    see_behind: torch.Tensor,
    and_: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    or_: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """``Grid.process_vis``'s sweep over the (B, 7, 7) view, from the agent's cell outwards, with the logic given:
    ``&``/``|`` on booleans, or ``*``/:func:`_or` on probabilities. Returns the (B, 7, 7) mask."""
    sb = [[see_behind[:, i, j] for j in range(VIEW)] for i in range(VIEW)]
    zero = torch.zeros_like(see_behind[:, 0, 0])
    mask = [[zero for _ in range(VIEW)] for _ in range(VIEW)]
    mask[VIEW // 2][VIEW - 1] = torch.ones_like(zero)
    for j in reversed(range(VIEW)):
        for rows, step in ((range(VIEW - 1), 1), (reversed(range(1, VIEW)), -1)):
            for i in rows:
                s = and_(mask[i][j], sb[i][j])
                mask[i + step][j] = or_(mask[i + step][j], s)
                if j > 0:
                    mask[i + step][j - 1] = or_(mask[i + step][j - 1], s)
                    mask[i][j - 1] = or_(mask[i][j - 1], s)
    return torch.stack([torch.stack(col, -1) for col in mask], 1)


def _fill(gen: torch.Tensor, pro: torch.Tensor, shift: Callable[[torch.Tensor, int], torch.Tensor]) -> torch.Tensor:
    """Kogge-Stone occluded fill of 7-bit rows: the bits reachable from ``gen`` by repeated ``shift`` by one through
    bits of ``pro`` only (``gen`` itself included)."""
    gen = gen | (pro & shift(gen, 1))
    pro = pro & shift(pro, 1)
    gen = gen | (pro & shift(gen, 2))
    pro = pro & shift(pro, 2)
    return gen | (pro & shift(gen, 4))


def _visibility_bits(see_behind: torch.Tensor) -> torch.Tensor:
    """:func:`_propagate_visibility` with boolean logic, on bit rows: (B, 7, 7) bool see-behind to the (B, 7, 7) bool
    mask. Row ``j`` is a 7-bit integer over ``i``; its rightward sweep is an occluded fill of the seen see-through
    cells (``e``, the cells that pass sight on: ``i <= 5``), its leftward sweep the same to the left (``i >= 1``),
    and row ``j - 1`` starts with ``e | e << 1`` and ``f | f >> 1`` -- what ``process_vis``'s loops set, in a
    handful of integer operations per row instead of dozens."""
    dev = see_behind.device
    bit = 1 << torch.arange(VIEW, device=dev)
    rows = (see_behind.long() * bit[None, :, None]).sum(1)  # (B, 7): row j's bits over i
    right_ok, left_ok = (1 << (VIEW - 1)) - 1, (1 << VIEW) - 2  # bits the rightward / leftward loops visit
    masks = []
    mask = torch.full_like(rows[:, 0], 1 << (VIEW // 2))  # the agent's cell (VIEW // 2, VIEW - 1)
    for j in reversed(range(VIEW)):
        pro = rows[:, j]
        e = _fill(mask & pro, pro, operator.lshift) & right_ok
        mask = mask | (e << 1)
        f = _fill(mask & pro, pro, operator.rshift) & left_ok
        masks.append(mask | (f >> 1))
        mask = e | (e << 1) | f | (f >> 1)  # row j - 1
    out = torch.stack(masks[::-1], 1)  # (B, 7) over j
    return (out[:, None, :] & bit[None, :, None]) != 0


def _view_offsets() -> torch.Tensor:
    """(4, 7, 7, 2) long: the world offset of view cell (vx, vy) from the agent, per direction.

    Inverts ``MiniGridEnv.get_view_coords``: with forward ``f = DIR_TO_VEC[d]`` and right ``r = (-f_y, f_x)``,
    world = agent + f (sz - 1) - r hs + vx r - vy f.
    """
    sz, hs = VIEW, VIEW // 2
    out = torch.zeros((4, sz, sz, 2), dtype=torch.long)
    for d, (fx, fy) in enumerate(DIR_TO_VEC):
        rx, ry = -fy, fx
        for vx in range(sz):
            for vy in range(sz):
                out[d, vx, vy, 0] = fx * (sz - 1) - rx * hs + vx * rx - vy * fx
                out[d, vx, vy, 1] = fy * (sz - 1) - ry * hs + vx * ry - vy * fy
    return out


class MiniGridTwin:
    """Batched, differentiable twin of one ``minigrid`` id, with the ``DifferentiableEnv`` protocol.

    Args:
        env_id: one of :data:`MINIGRID_IDS`.
        device: torch device of all tensors.
        dtype: floating dtype of the state, observations and rewards (float64 reproduces ``minigrid``'s Python-float
            rewards bit for bit; float32 rounds them).

    Raises:
        ValueError: an id without a twin (the message lists them), or a non-floating ``dtype``.
    """

    n_actions = N_ACTIONS
    obs_dim = OBS_DIM

    def __init__(
        self, env_id: str, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> None:
        if env_id not in MINIGRID_SPECS:
            raise ValueError(f"no MiniGrid twin for {env_id!r}; ids with one: {', '.join(MINIGRID_IDS)}")
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating torch dtype (e.g. torch.float32); got {dtype}")
        self.env_id = env_id
        self.spec = MINIGRID_SPECS[env_id]
        self.max_episode_steps: int | None = self.spec.max_steps
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype
        dev = self.device
        self._type = torch.tensor(_TYPE_IDX, dtype=dtype, device=dev)
        self._fixed_color = torch.tensor(_FIXED_COLOR, dtype=dtype, device=dev)
        self._state_idx = torch.tensor(_STATE_IDX, dtype=dtype, device=dev)
        self._colored = torch.zeros(N_CELL, dtype=dtype, device=dev)
        self._colored[list(_COLORED)] = 1.0
        self._passable = torch.zeros(N_CELL, dtype=dtype, device=dev)
        self._passable[list(_PASSABLE)] = 1.0
        self._opaque = torch.zeros(N_CELL, dtype=dtype, device=dev)
        self._opaque[list(_OPAQUE)] = 1.0
        self._wall_feats = torch.tensor([_TYPE_IDX[WALL], _FIXED_COLOR[WALL], 0, 0], dtype=dtype, device=dev)
        self._view_tables: dict[tuple[int, int], torch.Tensor] = {}
        self._agent_cell = torch.zeros(VIEW * VIEW, dtype=torch.bool, device=dev)
        self._agent_cell[(VIEW // 2) * VIEW + VIEW - 1] = True  # view cell (VIEW // 2, VIEW - 1)
        self._dir_vec = torch.tensor(DIR_TO_VEC, device=dev)
        self._terminal_cell = torch.zeros(N_CELL, dtype=torch.bool, device=dev)
        self._terminal_cell[[GOAL, LAVA]] = True
        self._passable_cell = self._passable.bool()
        self._cell_index = torch.arange(N_CELL, dtype=dtype, device=dev)
        self._has_objects = self.spec.family == "doorkey"

    # --- reset -----------------------------------------------------------------------------------------------------
    def reset(self, batch: int, generator: torch.Generator | None = None) -> MiniGridState:
        """Fresh point-mass states, each env's layout drawn as ``minigrid``'s generator draws it."""
        layout = generate_layouts(self.spec, batch, generator, self.device)
        return layouts_to_state(*layout, dtype=self.dtype)

    def reset_done(
        self, state: MiniGridState, done: torch.Tensor, generator: torch.Generator | None = None
    ) -> MiniGridState:
        """``state`` with the envs where ``done`` ((batch,) bool) is True replaced by fresh layouts (out of place:
        the kept rows keep their gradients). Only the finished envs get layouts drawn (one host sync)."""
        rows = done.to(device=self.device, dtype=torch.bool).nonzero().squeeze(1)
        if rows.numel() == 0:
            return state
        fresh = self.reset(int(rows.numel()), generator)
        return MiniGridState(*(f.index_put((rows,), g) for f, g in zip(state, fresh, strict=True)))

    # --- dynamics --------------------------------------------------------------------------------------------------
    def step(
        self, state: MiniGridState, action: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[MiniGridState, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step of every env (the relaxation is in the module docstring); ``minigrid`` is deterministic, so
        ``generator`` is accepted and ignored.

        Args:
            state: current :class:`MiniGridState`.
            action: (batch, 7) floating, one-hot or weights over (left, right, forward, pickup, drop, toggle, done).

        Returns:
            ``(next_state, reward, terminated, truncated)``; reward (batch,) in ``dtype``, flags (batch,) bool.

        Raises:
            ValueError: ``action`` not a floating tensor of shape (batch, 7).
        """
        pose, grid, carry = state.pose, state.grid, state.carry
        batch = pose.shape[0]
        if not isinstance(action, torch.Tensor) or not action.is_floating_point() or action.shape != (batch, 7):
            got = (
                f"{action.dtype} tensor of shape {tuple(action.shape)}"
                if isinstance(action, torch.Tensor)
                else (type(action).__name__)
            )
            raise ValueError(
                f"action must be a floating tensor of shape (batch, 7) = ({batch}, 7), one-hot or weights over "
                f"(left, right, forward, pickup, drop, toggle, done); got {got}"
            )
        w = action.to(self.dtype)
        needs_grad = torch.is_grad_enabled() and any(f.requires_grad for f in (pose, grid, carry, w))
        if not needs_grad:
            hard = self._hard_step(state, w)
            if hard is not None:
                return hard
        return self._step_soft(state, w)

    def _hard_step(
        self, state: MiniGridState, w: torch.Tensor
    ) -> tuple[MiniGridState, torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """:meth:`_step_soft` on indices when ``w`` is one-hot, the pose a point mass, ``carry`` 0 or 1 and the two
        cells the step reads (the agent's and the one it faces) one-hot; None otherwise. Those are all a point mass
        acted on by a one-hot action touches: every other cell of ``grid`` is passed on as it is (so another soft
        cell is no obstacle), and the faced cell is rewritten when a pickup, drop or toggle changes it. Same values
        as :meth:`_step_soft` (minigrid's ``step`` written for a batch), several times faster."""
        pose, grid = state.pose, state.grid
        if not (
            bool(((w == 0) | (w == 1)).all() and (w.sum(1) == 1).all())
            and bool(((state.carry == 0) | (state.carry == 1)).all())
        ):
            return None
        b, w_, h, _ = grid.shape
        # One-hot rows: the index as a dot product, checked by its entry being 1 and by b nonzeros in all.
        flat_pose = pose.flatten(1)
        idx = (flat_pose @ torch.arange(flat_pose.shape[1], dtype=pose.dtype, device=self.device)).long()
        if not (
            bool((flat_pose.gather(1, idx.clamp(0, flat_pose.shape[1] - 1)[:, None]) == 1).all())
            and int(torch.count_nonzero(pose)) == b
        ):
            return None
        ar = torch.arange(b, device=self.device)
        x, y, d = idx // (h * 4), (idx // 4) % h, idx % 4
        vec = self._dir_vec[d]
        fx, fy = (x + vec[:, 0]).clamp(0, w_ - 1), (y + vec[:, 1]).clamp(0, h - 1)
        base = ar * (w_ * h)
        cell_rows = grid.reshape(b * w_ * h, N_CELL)
        read = cell_rows.index_select(0, torch.cat([base + x * h + y, base + fx * h + fy])).reshape(2, b, N_CELL)
        if not bool(((read == 0) | (read == 1)).all() and (read.sum(-1) == 1).all()):
            return None
        here, front = (read @ self._cell_index).long().unbind(0)
        act = w.argmax(1)
        carry = state.carry == 1
        active = ~self._terminal_cell[here]
        is_a = [(act == i) & active for i in range(N_ACTIONS)]
        moves = is_a[2] & self._passable_cell[front]
        nd = torch.where(is_a[0], (d - 1) % 4, torch.where(is_a[1], (d + 1) % 4, d))
        nx, ny = torch.where(moves, fx, x), torch.where(moves, fy, y)
        pick = is_a[3] & (front == KEY) & ~carry
        drop = is_a[4] & (front == EMPTY) & carry
        unlock = is_a[5] & (front == LOCKED) & carry
        opening = is_a[5] & (front == CLOSED)
        closing = is_a[5] & (front == OPEN)
        new_front = torch.where(pick, EMPTY, front)
        new_front = torch.where(drop, KEY, new_front)
        new_front = torch.where(unlock | opening, OPEN, new_front)
        new_front = torch.where(closing, CLOSED, new_front)
        changed = (new_front != front).nonzero().squeeze(1)
        if changed.numel():
            grid = grid.clone()
            grid[changed, fx[changed], fy[changed]] = torch.nn.functional.one_hot(new_front[changed], N_CELL).to(
                grid.dtype
            )
        next_carry = ((carry | pick) & ~drop).to(self.dtype)
        t = state.t + 1
        factor = 1.0 - 0.9 * (t.to(torch.float64) / float(self.spec.max_steps))
        reward = torch.where(moves & (front == GOAL), factor, 0.0).to(self.dtype)
        landed = grid.reshape(b * w_ * h, N_CELL).index_select(0, base + nx * h + ny)
        terminated = self._terminal_cell[(landed @ self._cell_index).long()]
        truncated = t >= self.spec.max_steps
        prev = (x * h + y) * 4 + d
        next_pose = torch.zeros_like(pose)
        next_pose[ar, nx, ny, nd] = 1.0
        next_state = MiniGridState(next_pose, grid, next_carry, state.color, t, terminated | truncated, prev)
        return next_state, reward, terminated, truncated

    def _step_soft(
        self, state: MiniGridState, w: torch.Tensor
    ) -> tuple[MiniGridState, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The relaxed step of the module docstring, for any state and action weights (differentiable)."""
        pose, grid, carry = state.pose, state.grid, state.carry
        terminal = grid[..., GOAL] + grid[..., LAVA]  # (B, W, H)
        active = pose * (1.0 - terminal)[..., None]
        absorbed = pose - active
        passable = grid @ self._passable  # (B, W, H)
        fwd_dirs, facing_dirs = [], []
        for d, (dx, dy) in enumerate(DIR_TO_VEC):
            a_d = active[..., d]
            facing = _shift(a_d, -dx, -dy, 0.0)  # mass of agents with direction d facing each cell
            fwd_dirs.append(a_d * (1.0 - _shift(passable, dx, dy, 0.0)) + facing * passable)
            facing_dirs.append(facing)
        facing = torch.stack(facing_dirs, 0).sum(0)  # (B, W, H)
        moved = torch.stack(fwd_dirs, -1)
        wb = w[:, :, None, None, None]
        stay = wb[:, 3] + wb[:, 4] + wb[:, 5] + wb[:, 6]
        next_pose = (
            absorbed
            + wb[:, 0] * torch.roll(active, -1, dims=-1)
            + wb[:, 1] * torch.roll(active, 1, dims=-1)
            + wb[:, 2] * moved
            + stay * active
        )
        next_grid, next_carry = grid, carry
        if self._has_objects:
            cb = carry[:, None, None]
            pick = facing * grid[..., KEY] * (1.0 - cb)
            drop = facing * grid[..., EMPTY] * cb
            unlock = facing * grid[..., LOCKED] * cb
            opening = facing * grid[..., CLOSED]
            closing = facing * grid[..., OPEN]
            w3, w4, w5 = (w[:, i, None, None] for i in (3, 4, 5))
            zero = torch.zeros_like(pick)
            delta = torch.stack(
                [
                    w3 * pick - w4 * drop,
                    zero,
                    zero,
                    zero,
                    w4 * drop - w3 * pick,
                    w5 * (unlock + opening - closing),
                    w5 * (closing - opening),
                    -w5 * unlock,
                ],
                -1,
            )
            next_grid = grid + delta
            next_carry = carry + w[:, 3] * pick.sum((1, 2)) - w[:, 4] * drop.sum((1, 2))
        t = state.t + 1
        factor = 1.0 - 0.9 * (t.to(torch.float64) / float(self.spec.max_steps))
        entered_goal = (facing * grid[..., GOAL]).sum((1, 2))
        reward = w[:, 2] * entered_goal * factor.to(self.dtype)
        terminated = (next_pose.sum(-1) * terminal).sum((1, 2)) >= 1.0 - TERMINATED_ATOL
        truncated = t >= self.spec.max_steps
        prev = pose.flatten(1).argmax(1)
        next_state = MiniGridState(next_pose, next_grid, next_carry, state.color, t, terminated | truncated, prev)
        return next_state, reward, terminated, truncated

    # --- observation -----------------------------------------------------------------------------------------------
    def agent_pose(self, state: MiniGridState) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The most probable pose: ``(x, y, dir)``, (batch,) long each."""
        h = state.pose.shape[2]
        idx = state.pose.flatten(1).argmax(1)
        return idx // (h * 4), (idx // 4) % h, idx % 4

    def _candidates(self, state: MiniGridState) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The poses the observation looks from: (x, y, dir), each (batch, 5) long -- the four successors of
        ``state.prev`` (stay, turned left, turned right, one cell ahead) and, last, the most probable pose."""
        h = state.pose.shape[2]
        px, py, pd = state.prev // (h * 4), (state.prev // 4) % h, state.prev % 4
        vec = torch.tensor(DIR_TO_VEC, device=self.device)[pd]
        w = state.pose.shape[1]
        ax, ay, ad = self.agent_pose(state)
        x = torch.stack([px, px, px, (px + vec[:, 0]).clamp(0, w - 1), ax], 1)
        y = torch.stack([py, py, py, (py + vec[:, 1]).clamp(0, h - 1), ay], 1)
        d = torch.stack([pd, (pd - 1) % 4, (pd + 1) % 4, pd, ad], 1)
        return x, y, d

    def observe(self, state: MiniGridState) -> torch.Tensor:
        """``ImgObsWrapper`` + ``FlattenObservation``'s observation, (batch, 147) in ``dtype``.

        ``sum_c pose[c] * view(c) + (1 - sum_c pose[c]) * view(mode)`` over the four candidate poses ``c`` (the
        successors of ``state.prev``) and the most probable pose: after a step from a point mass -- any action,
        soft included -- the pose's mass lies on the candidates, so this is the expected view, and its gradient
        with respect to the action is the difference of the views the actions lead to. A point mass gives exactly
        ``minigrid``'s observation. ``view`` is the module docstring's encoding with occlusion.
        """
        grid, pose = state.grid, state.pose
        b, w, h, _ = grid.shape
        flat_pose = pose.flatten(1)
        needs_grad = torch.is_grad_enabled() and any(f.requires_grad for f in (pose, grid, state.carry))
        point = False
        if not needs_grad:
            mode_mass, mode = flat_pose.max(1)
            point = bool((mode_mass == 1).all())
        if point:
            # a point mass without gradient: the expectation is the mode's view alone (same value, a fifth the work)
            x, y, d = mode[:, None] // (h * 4), (mode[:, None] // 4) % h, mode[:, None] % 4
        else:
            x, y, d = self._candidates(state)  # (B, 5)
        n_views = x.shape[1]
        # Per-cell features, linear in the cell distribution: object, colour, state codes and see-behind, one plane
        # each over every env's cells, then one wall cell for the view cells outside the grid (minigrid's slice).
        colored = (grid @ self._colored) * state.color.to(self.dtype)[:, None, None]
        feats = torch.stack(
            [grid @ self._type, grid @ self._fixed_color + colored, grid @ self._state_idx, 1.0 - grid @ self._opaque]
        ).reshape(4, b * w * h)
        feats = torch.cat([feats, self._wall_feats[:, None]], 1)
        cells = self._view_cells(w, h).index_select(0, ((x * h + y) * 4 + d).flatten())  # (B * n_views, 49)
        base = torch.arange(0, b * w * h, w * h, device=self.device).repeat_interleave(n_views)[:, None]
        flat = torch.where(cells < 0, b * w * h, cells + base)
        view = feats.index_select(1, flat.flatten()).reshape(4, b, n_views, VIEW * VIEW)
        # The agent's own cell shows what it carries (minigrid's gen_obs_grid): a key, else empty.
        carry = state.carry
        agent_code = torch.stack([1.0 + 4.0 * carry, carry * state.color.to(self.dtype), torch.zeros_like(carry)])
        code = torch.where(self._agent_cell, agent_code[:, :, None, None], view[:3])
        if not self.spec.see_through_walls:
            code = code * self._visibility(view[3].reshape(b * n_views, VIEW, VIEW)).reshape(1, b, n_views, -1)
        code = code.permute(1, 2, 3, 0)  # (B, n_views, 49, 3): minigrid's [x, y, channel] order
        if n_views == 1:
            return code.reshape(b, OBS_DIM)
        p = flat_pose.gather(1, ((x * h + y) * 4 + d)[:, :4])  # (B, 4) mass on the candidates
        coef = torch.cat([p, (flat_pose.sum(1) - p.sum(1))[:, None]], 1)
        return (coef[:, :, None, None] * code.contiguous()).sum(1).reshape(b, OBS_DIM)

    def _view_cells(self, w: int, h: int) -> torch.Tensor:
        """(W * H * 4, 49) long: for each pose ``(x * H + y) * 4 + dir`` the flat index ``x' * H + y'`` of each view
        cell (``[vx, vy]`` order, ``MiniGridEnv.get_view_coords`` inverted), -1 outside the grid. Cached per size."""
        table = self._view_tables.get((w, h))
        if table is None:
            offsets = _view_offsets().to(self.device)  # (4, 7, 7, 2)
            xs = torch.arange(w, device=self.device)[:, None, None, None, None]
            ys = torch.arange(h, device=self.device)[None, :, None, None, None]
            gx, gy = xs + offsets[..., 0], ys + offsets[..., 1]  # (W, H, 4, 7, 7)
            inside = (gx >= 0) & (gx < w) & (gy >= 0) & (gy < h)
            table = torch.where(inside, gx * h + gy, -1).reshape(w * h * 4, VIEW * VIEW)
            self._view_tables[(w, h)] = table
        return table

    def _visibility(self, see_behind: torch.Tensor) -> torch.Tensor:
        """``Grid.process_vis`` on the view: (B, 7, 7) mask from (B, 7, 7) see-behind probabilities; boolean logic
        when they are all 0 or 1 and need no gradient, else ``a or b = a + b - a b`` and ``a and b = a b`` (the same
        on 0 and 1)."""
        if not see_behind.requires_grad and bool(((see_behind == 0) | (see_behind == 1)).all()):
            return _visibility_bits(see_behind == 1).to(self.dtype)
        return _propagate_visibility(see_behind, operator.mul, _or)

    def visit_distribution(self, state: MiniGridState) -> torch.Tensor:
        """The cells a count bonus counts (``envs.differentiable.CountableEnv``): the agent's position times whether
        it carries the key, (batch, 2 W H), flat index ``(x * H + y) * 2 + carrying``; the product of the pose's
        (x, y) marginal and ``carry``, as the state itself is a product of marginals.

        Carrying is in the cell because it is the one step of DoorKey that moves no position: with the position
        alone, picking up the key lands on a counted cell and earns no bonus, while here it lands on an unseen one
        (and its gradient reaches the pickup action's weight through ``carry``); the door needs nothing more, since
        opening it makes the cells behind it reachable, and those are unseen. The direction is left out: it
        multiplies the cells by 4 without marking progress (a turn would look as new as a room).
        """
        cell = state.pose.sum(-1).flatten(1)  # (B, W * H)
        carry = state.carry[:, None]
        return torch.stack([cell * (1.0 - carry), cell * carry], -1).flatten(1)

    def continuation(self, state: MiniGridState) -> torch.Tensor:
        """Ones, (batch,): the twin is exact, so termination is reported by ``step`` alone."""
        return torch.ones(state.pose.shape[0], dtype=state.pose.dtype, device=state.pose.device)

    def training_reward(
        self, state: MiniGridState, action: torch.Tensor, next_state: MiniGridState, reward: torch.Tensor
    ) -> torch.Tensor:
        """The env reward itself, (batch,): it is linear in the forward weight and the pose mass, so it carries
        the gradient (the other arguments are accepted for the protocol and unused)."""
        return reward


# --- optimal returns (for the "solved" thresholds) ------------------------------------------------------------------
def optimal_steps(cells: torch.Tensor, x: int, y: int, d: int) -> int | None:
    """Fewest steps from the pose (x, y, d) to a goal in the hard layout ``cells`` (W, H) (None: unreachable).

    Breadth-first search over (x, y, dir, carrying the key, door open) with left, right, forward, pickup and toggle
    (dropping never shortens a path in these layouts); lava ends the episode without reward, so it is impassable.
    """
    c = cells.tolist()
    w, h = len(c), len(c[0])
    start = (x, y, d, False, False)
    seen = {start}
    queue = deque([(start, 0)])
    while queue:
        (px, py, pd, key, door), n = queue.popleft()
        fx, fy = px + DIR_TO_VEC[pd][0], py + DIR_TO_VEC[pd][1]
        front = c[fx][fy] if 0 <= fx < w and 0 <= fy < h else WALL
        if front == KEY and key:
            front = EMPTY
        if front == LOCKED and door:
            front = OPEN
        nexts = [(px, py, (pd - 1) % 4, key, door), (px, py, (pd + 1) % 4, key, door)]
        if front == GOAL:
            return n + 1
        if front in (EMPTY, OPEN):
            nexts.append((fx, fy, pd, key, door))
        if front == KEY and not key:
            nexts.append((px, py, pd, True, door))
        if front == LOCKED and key:
            nexts.append((px, py, pd, key, True))
        for s in nexts:
            if s not in seen:
                seen.add(s)
                queue.append((s, n + 1))
    return None


def optimal_return_stats(env_id: str, n_layouts: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Mean and standard deviation of the optimal return ``1 - 0.9 * n* / max_steps`` over ``n_layouts`` layouts
    drawn by the twin's generator (seed ``seed``), ``n*`` from :func:`optimal_steps` (0 when unreachable)."""
    spec = MINIGRID_SPECS[env_id]
    gen = torch.Generator().manual_seed(seed)
    cells, x, y, d, _ = generate_layouts(spec, n_layouts, gen)
    rets = []
    for i in range(n_layouts):
        n = optimal_steps(cells[i], int(x[i]), int(y[i]), int(d[i]))
        rets.append(0.0 if n is None else 1.0 - 0.9 * n / spec.max_steps)
    mean = sum(rets) / len(rets)
    return mean, math.sqrt(sum((r - mean) ** 2 for r in rets) / len(rets))


def _factory(env_id: str, **kwargs: Any) -> MiniGridTwin:
    if not minigrid_available():
        raise ValueError(f"{env_id!r}: {EXTRA_HINT}")
    return MiniGridTwin(env_id, **kwargs)


def register_minigrid_twins() -> None:
    """Register :class:`MiniGridTwin` under every id of :data:`MINIGRID_IDS`; without ``minigrid`` installed
    ``make_differentiable`` refuses them with one line naming the extra."""
    for env_id in MINIGRID_IDS:
        register_twin(env_id, functools.partial(_factory, env_id))
