"""Tests of ``experiments.gradient_study``: exact gradients, unbiasedness of REINFORCE, and the study's statistics.

Statistical tests use fixed seeds. Where a mean is compared with an exact value, the test is stated next to it
(chi-square on the Mahalanobis distance, or |z| < 5 per coordinate); each is also run on an estimator known to be
biased, to show that it can fail.
"""

from __future__ import annotations

import math

import gymnasium as gym
import pytest
import torch
from scipy.stats import chi2

import envs
from experiments import gradient_study as gs
from gumbel_rl.policy import GumbelPolicy

EMPTY = "gumbel_rl/EmptyRoom-5x5-v0"
CLIFF = "gumbel_rl/Cliff-4x12-v0"


def random_table(n_states: int, seed: int, scale: float = 0.7) -> torch.Tensor:
    """A tabular policy away from uniform and away from any optimum."""
    return scale * torch.randn(n_states, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def network(env_id: str, seed: int = 0, net_arch=(16,)) -> GumbelPolicy:
    env = gym.make(env_id)
    torch.manual_seed(seed)
    return GumbelPolicy(env.observation_space, env.action_space, net_arch=net_arch)


def mahalanobis_p_value(g: torch.Tensor, target: torch.Tensor) -> float:
    """p-value of ``mean(g) == target``: ``R (m - t)^T pinv(Cov) (m - t) ~ chi2(rank Cov)`` (large-R Hotelling).

    Coordinates with zero variance are excluded from the test and must match the target to 1e-12 instead.
    """
    mean, cov = g.mean(0), torch.cov(g.T)
    d = mean - target
    zero = cov.diagonal() <= 1e-24
    assert torch.allclose(d[zero], torch.zeros_like(d[zero]), atol=1e-12), "a zero-variance coordinate is off"
    d, cov = d[~zero], cov[~zero][:, ~zero]
    rank = int(torch.linalg.matrix_rank(cov, rtol=1e-9))
    stat = float(g.shape[0] * d @ torch.linalg.pinv(cov, rtol=1e-9) @ d)
    return float(chi2.sf(stat, rank))


# ------------------------------------------------------------------------------------------ exact gradient
def test_exact_gradient_matches_central_differences_tabular():
    """Every coordinate of the exact gradient = (J(x + h) - J(x - h)) / 2h, h = 1e-5, float64 (rel. 1e-6)."""
    table = random_table(48, seed=1)
    grad, J = gs.exact_gradient(table, CLIFF)
    assert J == pytest.approx(gs.expected_return(table, CLIFF), abs=1e-14)
    model = gs.tabular_model(CLIFF)
    h = 1e-5
    fd = torch.empty(table.numel(), dtype=torch.float64)
    for i in range(table.numel()):
        step = torch.zeros(table.numel(), dtype=torch.float64)
        step[i] = h
        up = gs.expected_return(table + step.view_as(table), CLIFF, model=model)
        down = gs.expected_return(table - step.view_as(table), CLIFF, model=model)
        fd[i] = (up - down) / (2 * h)
    assert float(grad.norm()) > 0.01
    torch.testing.assert_close(grad, fd, rtol=1e-6, atol=1e-9)


def test_exact_gradient_matches_central_differences_network():
    """Directional derivatives of the exact return of a float64 network along 5 random directions (rel. 1e-6)."""
    policy = network(EMPTY, net_arch=(16, 16)).double()
    grad, _ = gs.exact_gradient(policy, EMPTY)
    params = list(policy.parameters())
    gen = torch.Generator().manual_seed(3)
    h = 1e-5
    for _ in range(5):
        direction = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in params]
        values = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                for p, v in zip(params, direction, strict=True):
                    p.add_(sign * h * v)
            values.append(gs.expected_return(policy, EMPTY))
            with torch.no_grad():
                for p, v in zip(params, direction, strict=True):
                    p.sub_(sign * h * v)
        fd = (values[0] - values[1]) / (2 * h)
        analytic = float(grad @ torch.cat([v.reshape(-1) for v in direction]))
        assert analytic == pytest.approx(fd, rel=1e-6, abs=1e-9)


def test_twin_returns_match_exact_return():
    """Sanity link between the two sides: the twin's mean episode return (20,000 episodes) is within 4 SE of J."""
    table = random_table(25, seed=2)
    twin = envs.make_differentiable(EMPTY, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    state = twin.reset(20_000, generator=gen)
    total = torch.zeros(20_000, dtype=torch.float64)
    probs = torch.softmax(table, -1)
    for _ in range(twin.max_episode_steps):
        action = torch.nn.functional.one_hot(torch.multinomial(state.dist @ probs, 1, generator=gen)[:, 0], 4)
        state, reward, _, _ = twin.step(state, action.double(), generator=gen)
        total += reward
    se = float(total.std()) / math.sqrt(total.numel())
    assert abs(float(total.mean()) - gs.expected_return(table, EMPTY)) < 4 * se


# ------------------------------------------------------------------------------------------ unbiasedness
@pytest.mark.parametrize("estimator", ["reinforce", "reinforce-baseline"])
def test_reinforce_is_unbiased_on_a_gridworld(estimator):
    """Chi-square test (Mahalanobis distance of the mean of 1500 estimates from the exact gradient, rank(Cov)
    degrees of freedom): p > 0.001. Zero-variance coordinates (walls, goal) must match exactly."""
    table = random_table(25, seed=4)
    exact, _ = gs.exact_gradient(table, EMPTY)
    g = gs.estimator_gradients(table, EMPTY, estimator, n_episodes=4, repetitions=1500, seed=11)
    assert mahalanobis_p_value(g, exact) > 1e-3


def test_the_unbiasedness_test_rejects_a_biased_estimator():
    """Same test, same budget, st-gumbel at tau = 1 (biased on the discrete objective): p < 1e-6."""
    table = random_table(25, seed=4)
    exact, _ = gs.exact_gradient(table, EMPTY)
    g = gs.estimator_gradients(table, EMPTY, "st-gumbel", n_episodes=4, repetitions=1500, seed=11)
    assert mahalanobis_p_value(g, exact) < 1e-6


def test_value_baseline_reduces_variance():
    """Same seed, same episodes: the exact-value baseline cuts the trace of the covariance by more than 10%."""
    table = random_table(25, seed=4)
    plain = gs.estimator_gradients(table, EMPTY, "reinforce", 4, 600, seed=5)
    based = gs.estimator_gradients(table, EMPTY, "reinforce-baseline", 4, 600, seed=5)
    assert float(based.var(0).sum()) < 0.9 * float(plain.var(0).sum())


def test_reinforce_is_unbiased_on_the_toy():
    """|mean - exact| < 5 SE at each of 9 thetas (20,000 single-sample estimates each), both REINFORCE variants."""
    theta = torch.linspace(-4, 4, 9, dtype=torch.float64)
    exact = gs.toy_exact_gradient(theta)
    for est in ("reinforce", "reinforce-baseline"):
        g = gs.toy_gradients(est, theta, 20_000, seed=1)
        z = (g.mean(1) - exact) / (g.std(1) / math.sqrt(g.shape[1]))
        assert z.abs().max() < 5, (est, z)


def test_toy_sign_errors_and_reinmax():
    """The REBAR/RELAX case: at theta = -2 the exact gradient is positive but relaxed, st-gumbel, gumbel-rao and
    argmax (tau = 1) have a mean more than 5 SE below zero; ReinMax at tau = 1 is unbiased for this quadratic
    payoff (|z| < 5 at 9 thetas)."""
    theta = torch.tensor([-2.0], dtype=torch.float64)
    assert float(gs.toy_exact_gradient(theta)) > 0.01
    for est in ("relaxed", "st-gumbel", "gumbel-rao", "argmax"):
        g = gs.toy_gradients(est, theta, 20_000, seed=2)
        se = float(g.std()) / math.sqrt(g.numel())
        assert float(g.mean()) + 5 * se < 0, est
    thetas = torch.linspace(-4, 4, 9, dtype=torch.float64)
    g = gs.toy_gradients("reinmax", thetas, 20_000, seed=3)
    z = (g.mean(1) - gs.toy_exact_gradient(thetas)) / (g.std(1) / math.sqrt(g.shape[1]))
    assert z.abs().max() < 5, z


def test_straight_through_equals_relaxed_on_a_linear_payoff():
    """For f(b) = 3 b both straight-through and relaxed backpropagate 3 * d y_1 / d theta with the same noise:
    identical estimates sample by sample (same seed), hence identical means."""
    theta = torch.linspace(-2, 2, 5, dtype=torch.float64)
    st = gs.toy_gradients("st-gumbel", theta, 1000, tau=0.5, seed=4, payoff=lambda b: 3 * b)
    soft = gs.toy_gradients("relaxed", theta, 1000, tau=0.5, seed=4, payoff=lambda b: 3 * b)
    torch.testing.assert_close(st, soft, rtol=1e-12, atol=1e-12)


def test_gumbel_rao_keeps_straight_through_mean_with_less_variance():
    """Rao-Blackwellisation through the twin: |z| < 5 per coordinate between the means of gumbel-rao (k = 10)
    and st-gumbel (1000 estimates each, independent seeds), and gumbel-rao's variance trace is smaller."""
    table = random_table(25, seed=6)
    st = gs.estimator_gradients(table, EMPTY, "st-gumbel", 1, 1000, tau=0.5, seed=21)
    rao = gs.estimator_gradients(table, EMPTY, "gumbel-rao", 1, 1000, tau=0.5, seed=22)
    se = (st.var(0) / st.shape[0] + rao.var(0) / rao.shape[0]).sqrt()
    live = se > 1e-12
    z = (st.mean(0) - rao.mean(0))[live] / se[live]
    assert z.abs().max() < 5
    assert float(rao.var(0).sum()) < float(st.var(0).sum())


# ------------------------------------------------------------------------------------------ argmax
def test_argmax_has_zero_variance_on_a_deterministic_map():
    """EmptyRoom has one start cell and no slip; argmax feeds the greedy action: every repetition and every
    episode gives the same gradient (to 1e-12 relative)."""
    policy = network(EMPTY)
    g = gs.estimator_gradients(policy, EMPTY, "argmax", n_episodes=3, repetitions=6, seed=0)
    assert float(g[0].norm()) > 0
    torch.testing.assert_close(g, g[:1].expand_as(g), rtol=1e-12, atol=1e-15)
    single = gs.estimator_gradients(policy, EMPTY, "argmax", n_episodes=1, repetitions=2, seed=9)
    torch.testing.assert_close(single, g[:2], rtol=1e-12, atol=1e-15)
    row = gs.summarize(g, gs.exact_gradient(policy, EMPTY)[0], n_boot=50)
    assert row.variance < 1e-20 and row.bias_ci[0] == pytest.approx(row.bias_ci[1], rel=1e-9)


# ------------------------------------------------------------------------------------------ statistics
def test_summarize_recovers_known_bias_and_variance():
    """Synthetic estimates g = e + b + noise, D = 40, R = 3000, noise N(0, 0.25 I): variance 10, ||b|| = 0.2,
    MSE 10.04. The point estimates are within 5% (bias 10%) and each 95% CI contains the truth."""
    gen = torch.Generator().manual_seed(0)
    D, R = 40, 3000
    e = torch.randn(D, generator=gen, dtype=torch.float64)
    b = torch.zeros(D, dtype=torch.float64)
    b[:4] = 0.1
    g = e + b + 0.5 * torch.randn(R, D, generator=gen, dtype=torch.float64)
    row = gs.summarize(g, e, n_boot=500, seed=1)
    for value, ci, truth, rel in (
        (row.variance, row.variance_ci, 10.0, 0.05),
        (row.bias, row.bias_ci, 0.2, 0.1),
        (row.mse, row.mse_ci, 10.04, 0.05),
    ):
        assert value == pytest.approx(truth, rel=rel)
        assert ci[0] <= truth <= ci[1]
    assert row.noise_floor == pytest.approx(math.sqrt(10 / R), rel=0.05)


def test_summarize_debiases_an_unbiased_estimator_to_near_zero():
    """No bias: the raw ||mean - e|| sits at the noise floor, the debiased bias CI starts at 0."""
    gen = torch.Generator().manual_seed(1)
    e = torch.randn(30, generator=gen, dtype=torch.float64)
    g = e + torch.randn(200, 30, generator=gen, dtype=torch.float64)
    row = gs.summarize(g, e, n_boot=500)
    assert row.bias_raw == pytest.approx(row.noise_floor, rel=0.3)
    assert row.bias_ci[0] == 0.0 and row.bias < row.noise_floor


def test_measure_estimators_rows():
    """The driver's rows: one per (estimator, tau, N), R from a dict, the exact norm, reinforce without tau."""
    table = random_table(25, seed=7)
    rows = gs.measure_estimators(
        table,
        EMPTY,
        estimators=("relaxed", "reinforce"),
        n_episodes=(1, 5),
        repetitions={1: 20, 5: 10},
        taus=(0.5, 2.0),
        n_boot=50,
    )
    assert [(r.estimator, r.tau, r.n_episodes, r.repetitions) for r in rows] == [
        ("relaxed", 0.5, 1, 20),
        ("relaxed", 0.5, 5, 10),
        ("relaxed", 2.0, 1, 20),
        ("relaxed", 2.0, 5, 10),
        ("reinforce", None, 1, 20),
        ("reinforce", None, 5, 10),
    ]
    norm = float(gs.exact_gradient(table, EMPTY)[0].norm())
    assert all(r.reference_norm == pytest.approx(norm) and r.policy == "tabular" for r in rows)
    # The relaxed estimate averages N i.i.d. episode gradients: variance ~ 1/N (5x less at N = 5, within 2.5x).
    v1, v5 = rows[0].variance, rows[1].variance
    assert 2.0 < v1 / v5 < 12.5


# ------------------------------------------------------------------------------------------ CartPole
def test_cartpole_reinforce_variants_agree():
    """Both REINFORCE variants are unbiased for the shaped 30-step objective: |z| < 5 per coordinate between their
    means (small (8,) network, 300 estimates of 10 episodes each); the fitted state baseline cuts the variance by
    more than half (about 3x here)."""
    policy = gs.cartpole_policy(seed=1, net_arch=(8,))
    plain = gs.cartpole_gradients(policy, "reinforce", 10, 300, seed=1, horizon=30)
    based = gs.cartpole_gradients(policy, "reinforce-baseline", 10, 300, seed=2, horizon=30)
    se = (plain.var(0) / 300 + based.var(0) / 300).sqrt()
    assert ((plain.mean(0) - based.mean(0)) / se).abs().max() < 5
    assert float(based.var(0).sum()) < 0.5 * float(plain.var(0).sum())


def test_cartpole_reference_standard_error():
    """The reference's SE norm is sqrt(tr(Cov) / batches) of its batch estimates (here 4 batches of 50)."""
    policy = gs.cartpole_policy(seed=1, net_arch=(8,))
    ref = gs.cartpole_reference(policy, episodes_per_batch=50, batches=4, seed=3, horizon=20)
    g = gs.cartpole_gradients(policy, "reinforce-baseline", 50, 4, seed=3, horizon=20)
    torch.testing.assert_close(ref.gradient, g.mean(0))
    assert ref.se_norm == pytest.approx(math.sqrt(float(g.var(0).sum()) / 4))
    assert ref.episodes == 200


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"estimator": "gumbel"}, "unknown estimator 'gumbel'; valid estimators: relaxed"),
        ({"repetitions": 1}, "repetitions must be an integer >= 2"),
        ({"n_episodes": 0}, "n_episodes must be an integer >= 1"),
        ({"tau": 0.0}, "tau must be a finite number > 0"),
        ({"env_id": "CartPole-v1"}, "is not a gridworld id"),
        ({"policy": torch.zeros(24, 4)}, r"shape \(n_states, n_actions\) = \(25, 4\)"),
    ],
)
def test_bad_input_is_a_one_line_value_error(kwargs, match):
    args = {
        "policy": torch.zeros(25, 4),
        "env_id": EMPTY,
        "estimator": "relaxed",
        "n_episodes": 2,
        "repetitions": 2,
        "tau": 1.0,
        **kwargs,
    }
    with pytest.raises(ValueError, match=match):
        gs.estimator_gradients(**args)


def test_network_that_does_not_fit_the_env():
    with pytest.raises(ValueError, match="the environment needs 48 -> 4"):
        gs.exact_gradient(network(EMPTY), CLIFF)
    with pytest.raises(TypeError, match="GumbelPolicy or a"):
        gs.exact_gradient([[0.0] * 4] * 25, EMPTY)


def test_exact_ascent_reaches_its_target():
    """Partial training stops at the first step whose exact return reaches the target, and reports that return."""
    table, J, steps = gs.exact_ascent(torch.zeros(25, 4), EMPTY, target=0.2, lr=0.05)
    assert J >= 0.2 and 1 <= steps < 50
    assert gs.expected_return(table, EMPTY) == pytest.approx(J, abs=1e-12)
    _, j_before, _ = gs.exact_ascent(torch.zeros(25, 4), EMPTY, target=0.2, lr=0.05, max_steps=steps - 1)
    assert j_before < 0.2
