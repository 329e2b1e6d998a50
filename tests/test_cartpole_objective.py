"""CartPole-v1's own objective on the twin (``CartPoleTwin(objective="env")``) and its ``objective`` hyperparameter.

The relaxed return a pathwise method maximises, ``sum_t r_t prod_{j<t} c(s_{j+1})`` (Gymnasium's reward 1 per step,
``c`` the straight-through survival), must equal Gymnasium's return for hard actions: checked in lock-step against
``gymnasium.make("CartPole-v1")`` from the same float64 state with the same actions, both directly and as
``shac_window`` builds it (which also ends episodes on ``terminated``: nothing may be counted twice or dropped).
Values are compared exactly (they are sums of 1.0s and of the critic's value); gradients in float64 with a relative
tolerance of 1e-9.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

import agents
import envs
from agents.pathwise import shac_window
from agents.registry import hyperparameter_docs
from envs.cartpole_twin import CartPoleState, CartPoleTwin

F64 = torch.float64
THETA_MAX = 12 * 2 * math.pi / 360


class ScriptedPolicy:
    """Plays a fixed (H, B) table of actions as one-hots (what ``shac_window`` calls: ``act``)."""

    def __init__(self, actions: np.ndarray) -> None:
        self.actions = torch.as_tensor(actions)
        self.t = 0

    def act(self, obs: torch.Tensor, tau: float, estimator: str, generator: torch.Generator | None = None):
        action = nn.functional.one_hot(self.actions[self.t], 2).to(obs.dtype)
        self.t += 1
        return action, torch.zeros_like(action)


class ConstantCritic(nn.Module):
    def __init__(self, v: float) -> None:
        super().__init__()
        self.v = v

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.full((obs.shape[0], 1), self.v, dtype=obs.dtype)


def gym_episode(seed: int, policy: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float, bool]:
    """One Gymnasium episode: (float64 start state, actions, return, terminated). policy "random" (seeded) or
    "balance" (``theta + 0.5 theta_dot > 0`` on the observation)."""
    env = gym.make("CartPole-v1")
    obs, _ = env.reset(seed=seed)
    start = np.array(env.unwrapped.state, dtype=np.float64)
    actions, ret, terminated, truncated = [], 0.0, False, False
    while not (terminated or truncated):
        a = int(rng.integers(0, 2)) if policy == "random" else int(obs[2] + 0.5 * obs[3] > 0)
        obs, reward, terminated, truncated, _ = env.step(a)
        actions.append(a)
        ret += float(reward)
    env.close()
    return start, np.array(actions), ret, bool(terminated)


def relaxed_return(twin: CartPoleTwin, state: CartPoleState, actions: torch.Tensor) -> torch.Tensor:
    """``sum_t r_t prod_{j<t} c(s_{j+1})`` over the (H, B, 2) actions, without resets (termination absorbs)."""
    alive = torch.ones(state.x.shape[0], dtype=state.x.dtype)
    total = torch.zeros_like(alive)
    for a in actions:
        next_state, reward, _, _ = twin.step(state, a)
        total = total + alive * twin.training_reward(state, a, next_state, reward)
        alive = alive * twin.continuation(next_state)
        state = next_state
    return total


@pytest.mark.parametrize("policy", ["random", "balance"])
def test_relaxed_return_is_gymnasiums_return_for_hard_actions(policy: str) -> None:
    """Random play terminates (returns 9-60 here); the balancing controller stays in bounds until truncation at
    500. Actions continue past Gymnasium's termination (random ones): the relaxation must not count them."""
    twin = CartPoleTwin(dtype=F64, objective="env")
    rng = np.random.default_rng(7)
    seeds = list(range(12)) if policy == "random" else [1000, 1001, 1002]
    for seed in seeds:
        start, actions, ret, terminated = gym_episode(seed, policy, rng)
        assert terminated == (policy == "random") and (ret == 500) == (policy == "balance")
        extra = rng.integers(0, 2, size=20) if terminated else np.zeros(0, dtype=np.int64)
        played = torch.as_tensor(np.concatenate([actions, extra]))
        one_hot = nn.functional.one_hot(played, 2).to(F64)[:, None]
        state = CartPoleState(torch.tensor(start[None]), torch.zeros(1, dtype=torch.long))
        assert relaxed_return(twin, state, one_hot).item() == ret, f"seed {seed}"


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_shac_window_counts_the_real_return_once(gamma: float) -> None:
    """``shac_window`` on the "env" twin, hard actions replayed from Gymnasium, a constant critic V = 7:

    - an episode that terminates at the window's last step: ``sum_{t<T} gamma^t`` (no value after termination: the
      twin's ``terminated`` and the survival's exact 0 do not add or cut anything twice);
    - an in-bounds window of T < 500 steps: ``sum_{t<T} gamma^t + gamma^T V`` (the closing value, weighted by
      survivals of exactly 1);
    - an episode truncated at 500 (the window's end): ``sum_{t<500} gamma^t + gamma^500 V`` (the bootstrap once).
    """
    twin = CartPoleTwin(dtype=F64, objective="env")
    critic = ConstantCritic(7.0)
    rng = np.random.default_rng(11)
    cases = []
    for seed in range(6):
        start, actions, ret, _ = gym_episode(seed, "random", rng)
        cases.append((start, actions, sum(gamma**t for t in range(len(actions))), True))
    start, actions, ret, _ = gym_episode(1000, "balance", rng)
    cases.append((start, actions[:40], sum(gamma**t for t in range(40)) + gamma**40 * 7.0, False))
    cases.append((start, actions, sum(gamma**t for t in range(500)) + gamma**500 * 7.0, False))
    for start, actions, expected, terminates in cases:
        state = CartPoleState(torch.tensor(start[None]), torch.zeros(1, dtype=torch.long))
        kw = dict(horizon=len(actions), actor_horizon=0, gamma=gamma, tau=1.0, estimator="st-gumbel")
        w = shac_window(ScriptedPolicy(actions[:, None]), twin, state, critic, **kw)
        assert w.objective.item() == pytest.approx(expected, rel=1e-12, abs=0)
        # The continuation the window used is exactly 1 - terminated, and only the last step can end the episode.
        assert torch.equal(w.continuation, 1.0 - w.terminated.to(F64))
        assert w.terminated[:-1].sum() == 0 and bool(w.terminated[-1]) == terminates
        if gamma == 1.0 and terminates:
            assert w.objective.item() == len(actions)  # Gymnasium's return, exactly


def test_shac_window_does_not_bootstrap_a_termination_on_the_time_limit_step() -> None:
    """At step 500 a pole that falls is both terminated and truncated (as Gymnasium's TimeLimit reports it): the
    episode's return ends with that step's reward, no value of the terminal state is added."""
    twin = CartPoleTwin(dtype=F64, objective="env")
    state = CartPoleState(torch.tensor([[0.0, 0.0, 0.2094, 2.0]], dtype=F64), torch.tensor([499]))
    kw = dict(horizon=1, actor_horizon=0, gamma=1.0, tau=1.0, estimator="st-gumbel")
    w = shac_window(ScriptedPolicy(np.array([[1]])), twin, state, ConstantCritic(7.0), **kw)
    assert bool(w.terminated[0, 0]) and bool(w.done[0, 0])
    _, _, terminated, truncated = twin.step(state, torch.tensor([[0.0, 1.0]], dtype=F64))
    assert bool(terminated[0]) and bool(truncated[0])
    assert w.objective.item() == 1.0


def test_survival_value_is_the_exact_indicator() -> None:
    """Forward: exactly ``1 - terminated`` as ``step`` decides it, also on the bounds themselves (Gymnasium
    terminates only past them) and far outside."""
    twin = CartPoleTwin(dtype=F64, objective="env")
    g = torch.Generator().manual_seed(0)
    x = torch.empty(4, 4096, dtype=F64).uniform_(-1.0, 1.0, generator=g)
    x[0] *= 3.0
    x[2] *= 0.3
    x[0, :4] = torch.tensor([2.4, -2.4, 0.0, 0.0], dtype=F64)
    x[2, :4] = torch.tensor([0.0, 0.0, THETA_MAX, -THETA_MAX], dtype=F64)
    state = CartPoleState(x.t(), torch.zeros(4096, dtype=torch.long))
    survival = twin.survival(state)
    terminated = (x[0].abs() > 2.4) | (x[2].abs() > THETA_MAX)
    assert torch.equal(survival, 1.0 - terminated.to(F64))
    assert survival[:4].tolist() == [1.0, 1.0, 1.0, 1.0]
    assert 0.3 < survival.mean().item() < 0.8  # both values occur
    # The "shaped" objective keeps its old contract: continuation 1, the shaped reward.
    shaped = CartPoleTwin(dtype=F64)
    assert shaped.objective == "shaped" and torch.equal(shaped.continuation(state), torch.ones(4096, dtype=F64))


def test_survival_gradient_at_and_near_the_bounds() -> None:
    """d survival / d theta on the angle bound (x = 0) is ``-sigmoid(1/w) / (4 w theta_max)`` (-11.94 for w = 0.1);
    finite and non-zero on both sides of the bound and at the x bound, non-zero but small far inside."""
    twin = CartPoleTwin(dtype=F64, objective="env")
    w = twin.survival_width
    rows = [
        [0.0, 0.0, THETA_MAX, 0.0],
        [0.0, 0.0, THETA_MAX + 0.01, 0.0],  # just out of bounds
        [0.0, 0.0, -(THETA_MAX - 0.01), 0.0],
        [2.35, 0.0, 0.0, 0.0],
        [0.1, 0.0, 0.01, 0.0],  # near the centre
    ]
    x = torch.tensor(rows, dtype=F64, requires_grad=True)
    survival = twin.survival(CartPoleState(x, torch.zeros(5, dtype=torch.long)))
    (grad,) = torch.autograd.grad(survival.sum(), x)
    sig = 1.0 / (1.0 + math.exp(-1.0 / w))
    assert grad[0, 2].item() == pytest.approx(-sig / (4 * w * THETA_MAX), rel=1e-9)
    assert torch.isfinite(grad).all()
    assert grad[1, 2] < 0 and grad[2, 2] > 0 and grad[3, 0] < 0  # each points away from the nearer bound
    assert grad[[0, 1, 2], 0].abs().max() < 1e-3 * grad[[0, 1, 2], 2].abs().min()  # the far bound hardly counts
    assert 0 < grad[4, 2].abs() < 1e-3 * grad[0, 2].abs()  # non-zero but small far inside


def test_relaxed_return_gradient_is_finite_and_non_zero_near_the_bounds() -> None:
    """From a state near the angle bound, 4 hard pushes: one run that stays in bounds (the value 4, Gymnasium's
    return for 4 steps) and one that terminates at step 2 (value 2, as Gymnasium); the gradients with respect to
    the start state and the actions are finite and non-zero, and pushing the pole further out lowers the return."""
    twin = CartPoleTwin(dtype=F64, objective="env")
    for start, actions, expected in (
        ([0.0, 0.0, 0.19, 0.0], [1, 1, 1, 1], 4.0),  # pushing right tips the pole back (left)
        ([0.0, 0.0, 0.19, 0.6], [0, 0, 0, 0], 2.0),  # pushing left tips it further right: out at step 2
    ):
        env = gym.make("CartPole-v1")
        env.reset(seed=0)
        env.unwrapped.state = np.array(start, dtype=np.float64)
        gym_return = 0.0
        for a in actions:
            _, reward, terminated, truncated, _ = env.step(a)
            gym_return += float(reward)
            if terminated or truncated:
                break
        env.close()
        assert gym_return == expected
        x0 = torch.tensor([start], dtype=F64, requires_grad=True)
        a = nn.functional.one_hot(torch.tensor(actions), 2).to(F64)[:, None].requires_grad_(True)
        value = relaxed_return(twin, CartPoleState(x0, torch.zeros(1, dtype=torch.long)), a)
        assert value.item() == expected
        gx, ga = torch.autograd.grad(value.sum(), (x0, a))
        assert torch.isfinite(gx).all() and torch.isfinite(ga).all()
        assert gx[0, 2] < 0 and gx[0, 3] < 0  # a larger (or faster growing) angle: a shorter episode
        assert ga.abs().sum() > 0
        # The force is force_mag * (a_right - a_left): its two entries have opposite gradients.
        torch.testing.assert_close(ga[..., 0], -ga[..., 1], rtol=1e-12, atol=0)


def test_objective_hyperparameter_reaches_the_twin_and_bad_values_are_refused() -> None:
    for objective in ("env", "shaped"):
        agent = agents.make_agent("st-gumbel", "CartPole-v1", seed=0, n_envs=2, horizon=2, objective=objective)
        assert isinstance(agent.twin, CartPoleTwin) and agent.twin.objective == objective
    docs = {d.name: d for d in hyperparameter_docs("st-gumbel", "CartPole-v1")}
    assert docs["objective"].default in ("env", "shaped") and docs["objective"].tuned
    for bad in ("true", True, "Shaped"):
        with pytest.raises(ValueError, match=r"hyperparameter objective must be one of env, shaped; got"):
            agents.make_agent("st-gumbel", "CartPole-v1", objective=bad)
    # A twin with a single objective refuses the option in one line, naming what to do.
    with pytest.raises(ValueError, match=r"objective: the twin of 'gumbel_rl/EmptyRoom-5x5-v0' has a single"):
        agents.make_agent("st-gumbel", "gumbel_rl/EmptyRoom-5x5-v0", objective="env")
    with pytest.raises(ValueError, match=r"CartPoleTwin objective must be one of env, shaped; got 'true'"):
        envs.make_differentiable("CartPole-v1", objective="true")
    with pytest.raises(ValueError, match=r"survival_width must be a positive number"):
        CartPoleTwin(objective="env", survival_width=0.0)


def test_st_gumbel_learns_from_the_env_objective_alone() -> None:
    """A smoke check that the relaxation carries a learning signal: 24 updates (12,288 env steps of 64 envs x 8-step
    windows, under a second) of st-gumbel on the "env" objective raise the greedy return in the real env from 9.3
    (the untrained policy, seed 0) to over 200 (measured: 500; bench/bench_objective.py has the runs to solved)."""
    agent = agents.make_agent(
        "st-gumbel", "CartPole-v1", seed=0, objective="env", n_envs=64, horizon=8, eval_every=10**9
    )
    before = agent.evaluate(episodes=10, seed=1).mean
    agent.learn(12_288)
    after = agent.evaluate(episodes=10, seed=1).mean
    assert before < 30 and after > 200, (before, after)
