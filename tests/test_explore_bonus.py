"""The count bonus of the pathwise methods (``explore_bonus``) through ``CountableEnv.visit_distribution``: the
MiniGrid twin's cells (position times carrying the key) with exact numbers, the bonus's gradient reaching the
actions, and the refusal for a twin without cells."""

from __future__ import annotations

import math

import gymnasium as gym
import pytest
import torch

pytest.importorskip("minigrid")

import agents  # noqa: E402
import envs  # noqa: E402
from agents.pathwise import shac_window  # noqa: E402
from envs.differentiable import CountableEnv  # noqa: E402
from envs.minigrid_twin import EMPTY, GOAL, KEY, LOCKED, WALL, MiniGridTwin, layouts_to_state  # noqa: E402
from gumbel_rl.policy import GumbelPolicy, mlp  # noqa: E402

DOORKEY = "MiniGrid-DoorKey-5x5-v0"
H = 5


def _cell(x: int, y: int, carrying: int) -> int:
    """Flat index of ``visit_distribution``'s cell (x, y, carrying) on a 5x5 grid."""
    return (x * H + y) * 2 + carrying


def _two_layouts() -> torch.Tensor:
    """Two DoorKey-5x5 layouts (walls around, a wall column at x = 2 with the locked door at (2, 1), the goal at
    (3, 3)): env 0 has the key at (1, 2), right below the agent; env 1 has it at (1, 3), with an empty cell between."""
    cells = torch.full((2, H, H), EMPTY, dtype=torch.long)
    cells[:, 0, :] = cells[:, -1, :] = cells[:, :, 0] = cells[:, :, -1] = WALL
    cells[:, 2, :] = WALL
    cells[:, 2, 1] = LOCKED
    cells[:, 3, 3] = GOAL
    cells[0, 1, 2] = KEY
    cells[1, 1, 3] = KEY
    return cells


def _start(dtype: torch.dtype = torch.float64):  # type: ignore[no-untyped-def]
    """Both agents at (1, 1) facing down (direction 1), not carrying."""
    ones = torch.ones(2, dtype=torch.long)
    return layouts_to_state(_two_layouts(), ones, ones, ones, torch.full((2,), 4), dtype=dtype)


def test_twins_with_cells_implement_the_protocol_and_cartpole_does_not() -> None:
    assert isinstance(MiniGridTwin(DOORKEY), CountableEnv)
    assert isinstance(envs.make_differentiable("gumbel_rl/EmptyRoom-5x5-v0"), CountableEnv)
    assert not isinstance(envs.make_differentiable("CartPole-v1"), CountableEnv)
    grid = envs.make_differentiable("gumbel_rl/EmptyRoom-5x5-v0")
    state = grid.reset(3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(grid.visit_distribution(state), grid.observe(state))  # the gridworlds count their observation


def test_minigrid_visit_distribution_is_position_times_carrying_with_exact_numbers() -> None:
    twin = MiniGridTwin(DOORKEY, dtype=torch.float64)
    state = _start()
    v = twin.visit_distribution(state)
    assert v.shape == (2, 2 * H * H)
    expected = torch.zeros(2, 2 * H * H, dtype=torch.float64)
    expected[:, _cell(1, 1, 0)] = 1.0
    assert torch.equal(v, expected)
    # Hard pickup: env 0 faces the key and now carries it (same position, the other cell); env 1 faces an empty cell.
    pickup = torch.nn.functional.one_hot(torch.tensor([3, 3]), 7).double()
    after, *_ = twin.step(state, pickup)
    hard = twin.visit_distribution(after)
    assert hard[0, _cell(1, 1, 1)] == 1.0 and hard[1, _cell(1, 1, 0)] == 1.0 and torch.equal(hard.sum(1), torch.ones(2))
    # Soft action 0.5 left + 0.3 forward + 0.2 pickup: env 0's forward is blocked by the key, so its mass stays at
    # (1, 1) and 0.2 of it carries; env 1 moves 0.3 of its mass to (1, 2) and picks up nothing.
    w = torch.tensor([[0.5, 0.0, 0.3, 0.2, 0.0, 0.0, 0.0]] * 2, dtype=torch.float64)
    soft, *_ = twin.step(state, w)
    v = twin.visit_distribution(soft)
    expected = torch.zeros(2, 2 * H * H, dtype=torch.float64)
    expected[0, _cell(1, 1, 0)], expected[0, _cell(1, 1, 1)] = 0.8, 0.2
    expected[1, _cell(1, 1, 0)], expected[1, _cell(1, 2, 0)] = 0.7, 0.3
    assert torch.allclose(v, expected, rtol=0, atol=1e-15)


def test_bonus_gradient_reaches_the_pickup_and_forward_weights() -> None:
    """``d (p(s') . b) / d w`` at the uniform soft action ``w = 1/7``, with ``b`` a fixed per-cell bonus.

    Env 1 (facing an empty cell): ``p(s') . b = b(1,2) w_fwd + b(1,1) (1 - w_fwd)`` in the step's linear form
    ``sum_a w_a f_a(s)``, so the gradient is the next cell's bonus of each action, ``b(1,2)`` on forward and ``b(1,1)``
    elsewhere. Env 0 (facing the key): position (1, 1) with mass ``sum_a w_a`` times carrying ``w_pick``, so
    ``p(s') . b = (sum_a w_a) (b0 (1 - w_pick) + b1 w_pick)`` with ``b0, b1`` the bonus of (1, 1) without / with the
    key: ``b0 + (b1 - b0) / 7`` on every action, plus ``b1 - b0`` on pickup."""
    twin = MiniGridTwin(DOORKEY, dtype=torch.float64)
    bonus = torch.linspace(0.0, 0.98, 2 * H * H, dtype=torch.float64)
    w = torch.full((2, 7), 1.0 / 7, dtype=torch.float64, requires_grad=True)
    nxt, *_ = twin.step(_start(), w)
    (grad,) = torch.autograd.grad((twin.visit_distribution(nxt) @ bonus).sum(), w)
    b0, b1 = bonus[_cell(1, 1, 0)], bonus[_cell(1, 1, 1)]
    expected = torch.stack([(b0 + (b1 - b0) / 7).expand(7), b0.expand(7)]).clone()
    expected[0, 3] += b1 - b0
    expected[1, 2] = bonus[_cell(1, 2, 0)]
    assert torch.allclose(grad, expected, rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(
        lambda a: twin.visit_distribution(twin.step(_start(), a)[0]), (w.detach().clone().requires_grad_(True),)
    )


def test_shac_window_adds_the_next_cells_bonus_and_its_gradient_reaches_the_policy() -> None:
    """One step from each layout with the ``argmax`` estimator and ``V = 0``: each training reward is the env's
    (0 here) plus ``b(cell')``, and the gradient of the objective w.r.t. the policy's logits is the softmax Jacobian
    times ``b(cell'_a)`` over the 7 actions -- nonzero only through the actions that change the cell."""
    twin = MiniGridTwin(DOORKEY)
    state = _start(torch.float32)
    obs = twin.observe(state)
    policy = GumbelPolicy(
        gym.spaces.Box(0, 10, (147,), "uint8"), gym.spaces.Discrete(7), net_arch=(), estimator="argmax"
    )
    critic = mlp(twin.obs_dim, (), 1, "tanh", 0.0)  # V = 0
    bonus = torch.linspace(0.0, 0.98, 2 * H * H)
    kw = dict(horizon=1, actor_horizon=1, gamma=0.9, tau=1.0, estimator="argmax")
    plain = shac_window(policy, twin, state, critic, **kw)
    win = shac_window(policy, twin, state, critic, bonus=bonus, count_cells=True, **kw)
    assert win.cells is not None and torch.equal(win.cells[0], twin.visit_distribution(state))
    logits = policy.net[0](obs).detach()
    # Next cell of each action from (1, 1) facing down: forward moves env 1 to (1, 2); pickup makes env 0 carry.
    nxt = torch.tensor([[_cell(1, 1, 0)] * 7, [_cell(1, 1, 0)] * 7])
    nxt[0, 3], nxt[1, 2] = _cell(1, 1, 1), _cell(1, 2, 0)
    chosen = logits.argmax(1)
    assert torch.equal(plain.rewards, torch.zeros(1, 2))
    assert torch.equal(win.rewards[0], bonus[nxt[torch.arange(2), chosen]])
    for i in range(2):
        (grad,) = torch.autograd.grad(win.objective[i], policy.net[0].bias, retain_graph=True)
        p = torch.softmax(logits[i], -1)
        assert torch.allclose(grad, (torch.diag(p) - torch.outer(p, p)) @ bonus[nxt[i]], atol=1e-7)


def test_agent_counts_minigrid_cells_and_refuses_a_twin_without_cells() -> None:
    kw = dict(seed=0, n_envs=4, horizon=8, eval_every=10**6, explore_bonus=0.3)
    agent = agents.make_agent("st-gumbel", "MiniGrid-Empty-5x5-v0", **kw).learn(64)
    v = agent.visits.view(H, H, 2)
    assert math.isclose(float(agent.visits.sum()), 64.0, rel_tol=1e-6)  # one unit per (step, env)
    assert float(v[..., 1].sum()) == 0.0  # Empty has no key
    assert float(v[0].sum() + v[-1].sum() + v[:, 0].sum() + v[:, -1].sum()) == 0.0  # never inside a wall
    assert float(agent.reward_unit) == 1.0  # no goal reached in the first window: rewards all 0, unit 1
    with pytest.raises(ValueError, match=r"explore_bonus needs a twin with cells to count.*CartPole-v1") as err:
        agents.make_agent("st-gumbel", "CartPole-v1", explore_bonus=0.5)
    assert "\n" not in str(err.value)
