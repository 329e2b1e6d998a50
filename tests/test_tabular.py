"""Tests of envs.tabular: exact models, value iteration and differentiable exact returns.

Reference numbers (computed with this module, gymnasium 1.4, float64; printed by the tests with ``-s``):

* FrozenLake-v1 4x4 slippery, undiscounted optimal success probability
  - within its 100-step TimeLimit (``horizon=100`` backward induction): 0.7441902878 (registry comment: 0.74);
  - without a limit (``horizon=None``, gamma=1): 0.8235294118 (= 14/17 to ~1e-15 by policy evaluation).
* CliffWalking-v1, undiscounted optimal return from the start: -13 (exactly).
* Taxi-v4, undiscounted optimal return averaged over the initial distribution: 7.93 (exactly 19 minus the mean
  BFS distance taxi -> passenger -> destination, checked independently below).
"""

from __future__ import annotations

from collections import deque

import gymnasium as gym
import numpy as np
import pytest
import torch

from envs import TabularModel, ValueIterationResult, policy_return, value_iteration
from envs.gridworld import GridWorld

FROZEN_LAKE_H100 = 0.7441902878292695
FROZEN_LAKE_INF = 0.8235294117647088


class FakeToyText:
    """Minimal env in the toy-text format: just ``P`` and ``initial_state_distrib``."""

    def __init__(self, P: dict, initial: list[float]) -> None:
        self.P = P
        self.initial_state_distrib = np.asarray(initial, dtype=np.float64)


def corridor_env() -> FakeToyText:
    """1x4 corridor: states 0..3, start 0, goal 3; actions 0 left, 1 right; reward -1 per step.

    Moving right is written as two half-probability entries to the same next state (to test merging).
    """
    P: dict = {}
    for s in range(4):
        if s == 3:
            P[s] = {a: [(1.0, 3, 0.0, True)] for a in range(2)}
            continue
        left, right = max(s - 1, 0), s + 1
        P[s] = {
            0: [(1.0, left, -1.0, False)],
            1: [(0.5, right, -1.0, right == 3), (0.5, right, -1.0, right == 3)],
        }
    return FakeToyText(P, [1.0, 0.0, 0.0, 0.0])


@pytest.fixture(scope="module")
def frozen_lake() -> TabularModel:
    return TabularModel.from_env(gym.make("FrozenLake-v1"))


@pytest.fixture(scope="module")
def taxi_env() -> gym.Env:
    return gym.make("Taxi-v4")


@pytest.fixture(scope="module")
def taxi(taxi_env: gym.Env) -> TabularModel:
    return TabularModel.from_env(taxi_env)


def softmax_policy(theta: torch.Tensor) -> torch.Tensor:
    return torch.softmax(theta, dim=-1)


def central_fd(f, theta: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    grad = torch.zeros_like(theta)
    flat = theta.detach().clone().reshape(-1)
    for i in range(flat.numel()):
        plus, minus = flat.clone(), flat.clone()
        plus[i] += eps
        minus[i] -= eps
        grad.view(-1)[i] = (f(plus.view_as(theta)) - f(minus.view_as(theta))) / (2 * eps)
    return grad


def autograd_grad(f, theta: torch.Tensor) -> torch.Tensor:
    th = theta.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(th), th)
    return g


# --- model construction -------------------------------------------------------------------------------------


def test_corridor_model_merges_duplicates_and_marks_terminal() -> None:
    m = TabularModel.from_env(corridor_env())
    assert (m.n_states, m.n_actions) == (4, 2)
    assert m.P.dtype == torch.float64 and m.R.dtype == torch.float64
    assert m.P[0, 1, 1].item() == 1.0 and m.P[2, 1, 3].item() == 1.0
    assert m.R[0, 1].item() == -1.0 and m.R[3, 0].item() == 0.0
    assert m.terminal.tolist() == [False, False, False, True]
    assert m.initial.tolist() == [1.0, 0.0, 0.0, 0.0]


def test_corridor_value_iteration_shortest_path() -> None:
    m = TabularModel.from_env(corridor_env())
    res = value_iteration(m, gamma=1.0)
    assert isinstance(res, ValueIterationResult)
    assert res.V.tolist() == [-3.0, -2.0, -1.0, 0.0]
    assert res.policy[:3].tolist() == [1, 1, 1]
    assert res.expected_return == -3.0
    assert res.Q[0].tolist() == [-4.0, -3.0]  # left bumps into the wall: -1 then still 3 steps to go
    # Discounted: -(1 + 0.9 + 0.81).
    assert value_iteration(m, gamma=0.9).expected_return == pytest.approx(-2.71, abs=1e-9)
    # Time limits: two steps cannot reach the goal (-2); three can (-3).
    assert value_iteration(m, horizon=2).expected_return == -2.0
    assert value_iteration(m, horizon=3).expected_return == -3.0
    # Uniform random walk with a reflecting wall at 0: E[steps to 3 from 0] = 12 (E2 = 6, E1 = 10, E0 = 12).
    uniform = torch.full((4, 2), 0.5, dtype=torch.float64)
    assert policy_return(m, uniform).item() == pytest.approx(-12.0, abs=1e-12)


def test_direct_construction_enforces_absorbing_terminals() -> None:
    P = np.zeros((3, 2, 3))
    P[:, :, 0] = 1.0  # every state, even the terminal one, jumps to 0 ...
    R = np.ones((3, 2))
    m = TabularModel(P=P, R=R, terminal=[False, False, True], initial=[1.0, 0.0, 0.0])
    assert m.P[2].tolist() == [[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]  # ... but terminal states are absorbing
    assert m.R[2].tolist() == [0.0, 0.0]
    assert m.P[0, 0].tolist() == [1.0, 0.0, 0.0]  # non-terminal rows untouched


def test_gymnasium_terminal_states() -> None:
    fl = TabularModel.from_env(gym.make("FrozenLake-v1"))
    assert torch.nonzero(fl.terminal).flatten().tolist() == [5, 7, 11, 12, 15]  # holes and goal
    assert fl.max_episode_steps == 100
    cw = TabularModel.from_env(gym.make("CliffWalking-v1"))
    assert torch.nonzero(cw.terminal).flatten().tolist() == [47]
    # The env's P moves on from the goal (UP -> 35); the model makes it absorbing with zero reward.
    assert cw.P[47, 0, 47].item() == 1.0 and cw.R[47].abs().sum().item() == 0.0


def test_taxi_terminal_states_ignore_never_visited_states(taxi_env: gym.Env, taxi: TabularModel) -> None:
    # Terminal: passenger delivered, taxi on the destination (entered only by a successful drop-off).
    u = taxi_env.unwrapped
    expected = sorted(u.encode(*u.locs[d], d, d) for d in range(4))
    assert torch.nonzero(taxi.terminal).flatten().tolist() == expected
    assert taxi.initial.sum().item() == pytest.approx(1.0, abs=1e-15)
    assert int((taxi.initial > 0).sum()) == 300


def test_gridworld_model() -> None:
    env = GridWorld(["S..", ".#T", "..G"], slip=0.0, step_cost=-1.0, goal_reward=10.0, trap_reward=-5.0)
    m = TabularModel.from_env(env)
    assert m.terminal.numpy().tolist() == env.terminal_mask.tolist()
    res = value_iteration(m)
    # Shortest safe path S(0,0) -> down, down, right, right -> G(2,2): 4 steps of -1, +10 on entering G.
    assert res.expected_return == 6.0
    # Slippery: exact return of the greedy policy equals value iteration's, and beats the uniform policy.
    slippery = TabularModel.from_env(GridWorld(["S..", ".#T", "..G"], slip=0.2, step_cost=-1.0, goal_reward=10.0))
    r2 = value_iteration(slippery, gamma=1.0)
    assert policy_return(slippery, r2.policy_probs()).item() == pytest.approx(r2.expected_return, abs=1e-7)
    uniform = torch.full((9, 4), 0.25, dtype=torch.float64)
    assert policy_return(slippery, uniform).item() < r2.expected_return - 1.0


# --- optimal values of the Gymnasium toy-text envs ----------------------------------------------------------


def test_frozen_lake_optimal_success_probability(frozen_lake: TabularModel) -> None:
    """Undiscounted optimum of FrozenLake-v1 4x4 slippery: with the 100-step limit and without it."""
    limited = value_iteration(frozen_lake, gamma=1.0, horizon=100)
    unlimited = value_iteration(frozen_lake, gamma=1.0)
    print(f"\nFrozenLake-v1 optimal success: H=100 {limited.expected_return!r}, no limit {unlimited.expected_return!r}")
    assert round(limited.expected_return, 3) == 0.744
    assert round(unlimited.expected_return, 3) == 0.824
    assert limited.expected_return == pytest.approx(FROZEN_LAKE_H100, abs=1e-12)
    assert unlimited.expected_return == pytest.approx(FROZEN_LAKE_INF, abs=1e-7)
    # The greedy policies achieve exactly these values (time-dependent one for the finite horizon).
    assert limited.time_policy is not None and limited.time_policy.shape == (100, 16)
    exact_lim = policy_return(frozen_lake, limited.policy_probs(), gamma=1.0, horizon=100).item()
    exact_inf = policy_return(frozen_lake, unlimited.policy_probs(), gamma=1.0).item()
    assert exact_lim == pytest.approx(limited.expected_return, abs=1e-12)
    assert exact_inf == pytest.approx(unlimited.expected_return, abs=1e-7)
    assert exact_inf == pytest.approx(14 / 17, abs=1e-12)


def test_frozen_lake_gamma1_ties_broken_towards_termination() -> None:
    """Non-slippery FrozenLake, gamma=1: every safe action ties at V=1; plain argmax loops forever."""
    m = TabularModel.from_env(gym.make("FrozenLake-v1", is_slippery=False))
    res = value_iteration(m, gamma=1.0)
    assert res.expected_return == 1.0
    assert policy_return(m, res.policy_probs(), gamma=1.0).item() == pytest.approx(1.0, abs=1e-12)
    argmax = torch.nn.functional.one_hot(res.Q.argmax(dim=1), 4).double()  # LEFT at the start: stays put
    with pytest.raises(ValueError, match="never terminate"):
        policy_return(m, argmax, gamma=1.0)


def test_cliff_walking_optimal_return() -> None:
    env = gym.make("CliffWalking-v1")
    m = TabularModel.from_env(env)
    res = value_iteration(m, gamma=1.0)
    print(f"\nCliffWalking-v1 optimal return: {res.expected_return!r}")
    assert res.expected_return == -13.0
    assert policy_return(m, res.policy_probs(), gamma=1.0).item() == pytest.approx(-13.0, abs=1e-12)
    obs, _ = env.reset(seed=0)
    total, steps, done = 0.0, 0, False
    while not done and steps < 100:
        obs, r, term, trunc, _ = env.step(int(res.policy[obs]))
        total, steps, done = total + r, steps + 1, term or trunc
    assert (total, steps, term) == (-13.0, 13, True)


def _taxi_bfs_optimum(env: gym.Env) -> float:
    """Optimal undiscounted Taxi return averaged over starts, from BFS on the map alone (not from P).

    Optimal play: drive to the passenger (d1 moves of -1), pick up (-1), drive to the destination (d2 moves),
    drop off (+20): return 19 - d1 - d2.
    """
    u = env.unwrapped
    desc = u.desc

    def dist(src: tuple[int, int], dst: tuple[int, int]) -> int:
        seen, queue = {src: 0}, deque([src])
        while queue:
            r, c = queue.popleft()
            if (r, c) == dst:
                return seen[(r, c)]
            nbrs = [(min(r + 1, 4), c), (max(r - 1, 0), c)]
            if desc[1 + r, 2 * c + 2] == b":":
                nbrs.append((r, c + 1))
            if desc[1 + r, 2 * c] == b":":
                nbrs.append((r, c - 1))
            for n in nbrs:
                if n not in seen:
                    seen[n] = seen[(r, c)] + 1
                    queue.append(n)
        raise AssertionError("unreachable")

    returns, weights = [], []
    for s in np.flatnonzero(u.initial_state_distrib):
        row, col, pas, dest = u.decode(int(s))
        d1 = dist((row, col), u.locs[pas])
        d2 = dist(u.locs[pas], u.locs[dest])
        returns.append(19 - d1 - d2)
        weights.append(u.initial_state_distrib[s])
    return float(np.dot(returns, weights))


def test_taxi_optimal_return(taxi_env: gym.Env, taxi: TabularModel) -> None:
    res = value_iteration(taxi, gamma=1.0)
    bfs = _taxi_bfs_optimum(taxi_env)
    print(f"\nTaxi-v4 optimal mean return: VI {res.expected_return!r}, BFS {bfs!r}")
    assert res.expected_return == pytest.approx(bfs, abs=1e-12)
    assert res.expected_return == pytest.approx(7.93, abs=1e-12)
    # The 200-step limit never binds: finite-horizon optimum is the same.
    assert value_iteration(taxi, horizon=200).expected_return == pytest.approx(bfs, abs=1e-12)
    # Greedy rollouts in the real (deterministic) env achieve exactly V[start].
    for seed in range(8):
        obs, _ = taxi_env.reset(seed=seed)
        start, total, done = obs, 0.0, False
        while not done:
            obs, r, term, trunc, _ = taxi_env.step(int(res.policy[obs]))
            total, done = total + r, term or trunc
        assert term and total == res.V[start].item()


# --- policy_return ------------------------------------------------------------------------------------------


def test_policy_return_greedy_matches_value_iteration_discounted(taxi: TabularModel) -> None:
    res = value_iteration(taxi, gamma=0.99)
    assert policy_return(taxi, res.policy_probs(), gamma=0.99).item() == pytest.approx(res.expected_return, abs=1e-9)


def test_uniform_policy_matches_monte_carlo(frozen_lake: TabularModel) -> None:
    """Uniform policy on FrozenLake-v1 (TimeLimit 100): exact return vs 20k real episodes, within 4 SE."""
    uniform = torch.full((16, 4), 0.25, dtype=torch.float64)
    exact = policy_return(frozen_lake, uniform, gamma=1.0, horizon=100).item()
    env = gym.make("FrozenLake-v1")
    rng = np.random.default_rng(0)
    env.reset(seed=1234)
    n, successes = 20_000, 0.0
    for _ in range(n):
        env.reset()
        done = False
        while not done:
            _, r, term, trunc, _ = env.step(int(rng.integers(4)))
            done = term or trunc
        successes += r
    mc = successes / n
    se = np.sqrt(exact * (1 - exact) / n)
    print(f"\nFrozenLake uniform policy: exact {exact:.6f}, MC {mc:.6f} (SE {se:.6f})")
    assert abs(mc - exact) < 4 * se
    assert exact == pytest.approx(0.0139398, abs=1e-6)


def test_policy_return_finite_horizon_converges_to_infinite() -> None:
    g = torch.Generator().manual_seed(0)
    S, A = 7, 3
    P = torch.rand(S, A, S, generator=g, dtype=torch.float64)
    P = P / P.sum(-1, keepdim=True)
    R = torch.randn(S, A, generator=g, dtype=torch.float64)
    initial = torch.full((S,), 1 / S, dtype=torch.float64)
    m = TabularModel(P=P, R=R, terminal=torch.tensor([False] * 6 + [True]), initial=initial)
    pi = softmax_policy(torch.randn(S, A, generator=g, dtype=torch.float64))
    inf = policy_return(m, pi, gamma=0.9).item()
    assert policy_return(m, pi, gamma=0.9, horizon=400).item() == pytest.approx(inf, abs=1e-12)
    opt = value_iteration(m, gamma=0.9)
    assert policy_return(m, opt.policy_probs(), gamma=0.9).item() == pytest.approx(opt.expected_return, abs=1e-9)
    for _ in range(10):  # no policy beats the optimum
        other = softmax_policy(3 * torch.randn(S, A, generator=g, dtype=torch.float64))
        assert policy_return(m, other, gamma=0.9).item() <= opt.expected_return + 1e-9


@pytest.mark.parametrize(("gamma", "horizon"), [(1.0, 100), (1.0, None), (0.9, None), (0.95, 7)])
def test_exact_policy_gradient_matches_finite_differences(
    frozen_lake: TabularModel, gamma: float, horizon: int | None
) -> None:
    theta = torch.randn(16, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)

    def f(th: torch.Tensor) -> torch.Tensor:
        return policy_return(frozen_lake, softmax_policy(th), gamma=gamma, horizon=horizon)

    grad = autograd_grad(f, theta)
    fd = central_fd(f, theta)
    scale = grad.abs().max().item()
    assert scale > 1e-4
    assert (grad - fd).abs().max().item() <= 1e-6 * scale


def test_exact_policy_gradient_time_dependent_policy(frozen_lake: TabularModel) -> None:
    theta = torch.randn(5, 16, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)

    def f(th: torch.Tensor) -> torch.Tensor:
        return policy_return(frozen_lake, softmax_policy(th), gamma=1.0, horizon=5)

    grad = autograd_grad(f, theta)
    fd = central_fd(f, theta)
    assert (grad - fd).abs().max().item() <= 1e-6 * grad.abs().max().item()
    # A time-dependent policy that is the same at every step gives the stationary policy's return.
    same = softmax_policy(theta[0]).expand(5, 16, 4)
    assert f(theta[0].expand(5, 16, 4)).item() == pytest.approx(
        policy_return(frozen_lake, same[0], gamma=1.0, horizon=5).item(), abs=1e-15
    )


def test_exact_policy_gradient_through_policy_network(frozen_lake: TabularModel) -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.Tanh(), torch.nn.Linear(8, 4)).double()
    obs = torch.eye(16, dtype=torch.float64)
    params = list(net.parameters())

    def f(*ps: torch.Tensor) -> torch.Tensor:
        w1, b1, w2, b2 = ps
        logits = torch.tanh(obs @ w1.T + b1) @ w2.T + b2
        return policy_return(frozen_lake, torch.softmax(logits, dim=-1), gamma=1.0)

    inputs = tuple(p.detach().clone().requires_grad_(True) for p in params)
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-9, rtol=1e-6)


# --- bad input ----------------------------------------------------------------------------------------------


def test_env_without_p_is_rejected() -> None:
    msg = r"needs a toy-text env exposing env\.unwrapped\.P.*CartPoleEnv has no attribute P"
    with pytest.raises(ValueError, match=msg):
        TabularModel.from_env(gym.make("CartPole-v1"))
    env = corridor_env()
    del env.initial_state_distrib
    with pytest.raises(ValueError, match="no attribute initial_state_distrib"):
        TabularModel.from_env(env)


def test_rows_not_summing_to_one_are_rejected() -> None:
    env = corridor_env()
    env.P[1][0] = [(0.7, 0, -1.0, False)]
    with pytest.raises(ValueError, match=r"P\[1\]\[0\] sum to 0\.7; each P\[s\]\[a\] must sum to 1"):
        TabularModel.from_env(env)
    P = np.full((2, 1, 2), 0.4)
    with pytest.raises(ValueError, match=r"P\[0, 0, :\] sums to 0\.8"):
        TabularModel(P=P, R=np.zeros((2, 1)), terminal=[False, False], initial=[1.0, 0.0])
    with pytest.raises(ValueError, match="initial must sum to 1"):
        TabularModel(P=np.full((2, 1, 2), 0.5), R=np.zeros((2, 1)), terminal=[False, True], initial=[0.5, 0.0])


def test_inconsistent_termination_is_rejected() -> None:
    env = corridor_env()
    env.P[0][0] = [(1.0, 1, -1.0, True)]  # 0 -> 1 terminated by "left", but "right" moves on from 1
    with pytest.raises(ValueError, match=r"states 1 are entered both with terminated=True and as live states"):
        TabularModel.from_env(env)


def test_bad_policies_are_rejected(frozen_lake: TabularModel) -> None:
    with pytest.raises(ValueError, match=r"policy_probs must have shape \(S, A\) = \(16, 4\); got \(4, 16\)"):
        policy_return(frozen_lake, torch.full((4, 16), 1 / 16, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"or \(H, S, A\) = \(3, 16, 4\); got \(2, 16, 4\)"):
        policy_return(frozen_lake, torch.full((2, 16, 4), 0.25, dtype=torch.float64), horizon=3)
    with pytest.raises(ValueError, match="each row of policy_probs must sum to 1"):
        policy_return(frozen_lake, torch.full((16, 4), 0.3, dtype=torch.float64))
    with pytest.raises(ValueError, match="non-negative"):
        policy_return(frozen_lake, torch.tensor([[1.5, -0.5, 0.0, 0.0]] * 16, dtype=torch.float64))
    uniform = torch.full((16, 4), 0.25, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"gamma must be in \[0, 1\]"):
        policy_return(frozen_lake, uniform, gamma=1.5)
    with pytest.raises(ValueError, match="horizon must be a positive integer"):
        value_iteration(frozen_lake, horizon=0)


def test_value_iteration_non_convergence_raises() -> None:
    # One state, one action, reward +1 forever, no terminal: the undiscounted value is infinite.
    m = TabularModel(P=np.ones((1, 1, 1)), R=np.ones((1, 1)), terminal=[False], initial=[1.0])
    with pytest.raises(RuntimeError, match="did not converge in 500 sweeps"):
        value_iteration(m, gamma=1.0, max_iter=500)
    assert value_iteration(m, gamma=0.5).expected_return == pytest.approx(2.0, abs=1e-9)
    assert value_iteration(m, gamma=1.0, horizon=10).expected_return == 10.0
