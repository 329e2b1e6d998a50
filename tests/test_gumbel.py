"""The Gumbel maths: distribution, Gumbel-Max, Gumbel-Softmax (relaxed and straight-through), numerical safety.

Statistical tests use fixed seeds and alpha = 1e-3 (chi-square / KS), or 5 standard errors for means.
"""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from gumbel_rl import EULER_GAMMA, gumbel_cdf, gumbel_max, gumbel_noise, gumbel_pdf, gumbel_softmax

ALPHA = 1e-3
LOGITS = torch.tensor([0.5, -0.3, 1.2, 0.0, -2.0])


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_seed_notes_softmax_example():
    v = torch.tensor([-20.0, 10.0, 9.6, 6.2], dtype=torch.float64)
    p = torch.softmax(v, dim=0).numpy()
    np.testing.assert_array_equal(np.round(p, 3), [0.000, 0.591, 0.396, 0.013])
    assert p.argmax() == 1  # the argmax view: action 1, whatever the margin


def test_gumbel_max_frequencies_match_softmax():
    n = 200_000
    idx = gumbel_max(LOGITS.expand(n, -1), generator=gen(1))
    counts = torch.bincount(idx, minlength=5).numpy()
    expected = torch.softmax(LOGITS.double(), 0).numpy() * n
    assert stats.chisquare(counts, expected).pvalue > ALPHA


def test_gumbel_noise_matches_analytic_cdf_mean_and_variance():
    n = 1_000_000
    g = gumbel_noise((n,), dtype=torch.float64, generator=gen(2))
    # KS against our CDF exp(-exp(-x)) on a subsample (KS on 1e6 points is slow and over-powered for float rounding).
    sub = g[:100_000].numpy()
    assert stats.kstest(sub, lambda x: gumbel_cdf(torch.from_numpy(x)).numpy()).pvalue > ALPHA
    # Mean: Euler's constant; SE = sqrt(pi^2/6 / n). Variance pi^2/6; Var(s^2) ~ sigma^4 (kurtosis - 1) / n with
    # the Gumbel's kurtosis 5.4.
    var = math.pi**2 / 6
    assert abs(g.mean().item() - EULER_GAMMA) < 5 * math.sqrt(var / n)
    assert abs(g.var().item() - var) < 5 * var * math.sqrt(4.4 / n)


@pytest.mark.parametrize("mu,beta", [(0.0, 1.0), (1.0, 2.0), (-3.0, 0.5)])
def test_location_scale_samples_match_cdf(mu, beta):
    x = mu + beta * gumbel_noise((50_000,), dtype=torch.float64, generator=gen(3))
    assert stats.kstest(x.numpy(), lambda v: gumbel_cdf(torch.from_numpy(v), mu, beta).numpy()).pvalue > ALPHA
    assert abs(x.mean().item() - (mu + EULER_GAMMA * beta)) < 5 * beta * math.sqrt(math.pi**2 / 6 / 50_000)


def test_gumbel_noise_agrees_with_torch_distributions_gumbel():
    ours = gumbel_noise((40_000,), dtype=torch.float64, generator=gen(4)).numpy()
    torch.manual_seed(5)
    theirs = torch.distributions.Gumbel(torch.tensor(0.0), torch.tensor(1.0)).sample((40_000,)).numpy()
    assert stats.ks_2samp(ours, theirs).pvalue > ALPHA


@pytest.mark.parametrize("mu,beta", [(0.0, 1.0), (0.0, 2.0), (1.0, 2.0), (3.0, 4.0), (-2.0, 0.3)])
def test_pdf_and_cdf_equal_scipy(mu, beta):
    x = torch.linspace(-10, 25, 1001, dtype=torch.float64)
    ref = stats.gumbel_r(loc=mu, scale=beta)
    np.testing.assert_allclose(gumbel_pdf(x, mu, beta).numpy(), ref.pdf(x.numpy()), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(gumbel_cdf(x, mu, beta).numpy(), ref.cdf(x.numpy()), rtol=1e-12, atol=1e-300)
    # The seed notes' typo exp(-exp(+z)) would be a decreasing "CDF": ours increases.
    assert (gumbel_cdf(x, mu, beta).diff() >= 0).all()


@pytest.mark.parametrize("tau", [0.1, 1.0, 10.0])
def test_hard_sample_is_one_hot_and_distributed_as_softmax(tau):
    n = 100_000
    y = gumbel_softmax(LOGITS.expand(n, -1), tau=tau, hard=True, generator=gen(6))
    assert set(y.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(y.sum(-1), torch.ones(n))
    counts = y.sum(0).numpy()
    assert stats.chisquare(counts, torch.softmax(LOGITS.double(), 0).numpy() * n).pvalue > ALPHA


def test_hard_sample_takes_argmax_of_the_relaxed_sample_for_the_same_noise():
    x = torch.randn(1000, 7, generator=gen(7))
    soft = gumbel_softmax(x, tau=0.3, generator=gen(8))
    hard = gumbel_softmax(x, tau=0.3, hard=True, generator=gen(8))
    assert torch.equal(hard.argmax(-1), soft.argmax(-1))


@pytest.mark.parametrize("tau", [0.2, 1.0, 5.0])
def test_straight_through_gradient_equals_relaxed_gradient(tau):
    x = torch.randn(64, 6, dtype=torch.float64, generator=gen(9), requires_grad=True)
    w = torch.randn(64, 6, dtype=torch.float64, generator=gen(10))
    (gumbel_softmax(x, tau, hard=True, generator=gen(11)) * w).sum().backward()
    g_hard, x.grad = x.grad.clone(), None
    (gumbel_softmax(x, tau, hard=False, generator=gen(11)) * w).sum().backward()
    torch.testing.assert_close(g_hard, x.grad, rtol=1e-12, atol=1e-12)


def test_relaxed_gradient_is_the_exact_jacobian():
    x = torch.randn(3, 4, dtype=torch.float64, generator=gen(12), requires_grad=True)

    def f(logits):
        return gumbel_softmax(logits, 0.7, generator=gen(13))

    assert torch.autograd.gradcheck(f, (x,))


def test_temperature_limits():
    x = torch.tensor([1.0, 0.0, -0.5, 2.0]).expand(20_000, -1)
    cold = gumbel_softmax(x, tau=0.01, generator=gen(14))
    assert cold.max(-1).values.mean() > 0.99  # near one-hot
    hot = gumbel_softmax(x, tau=1000.0, generator=gen(15))
    assert (hot - 0.25).abs().max() < 0.01  # near uniform: |logits + g| / tau is tiny
    mid = gumbel_softmax(x, tau=1.0, generator=gen(16)).max(-1).values.mean()
    assert 0.3 < mid < 0.99


def test_no_inf_or_nan_for_extreme_logits_and_temperature():
    # A million samples of logits up to +-1e4 at tau = 1e-3, forward and backward.
    n, k = 250_000, 4
    g = gen(17)
    x = (torch.rand(n, k, generator=g) * 2 - 1) * 1e4
    x[::3, 0] = 1e4
    x[::5, 1] = -1e4
    x.requires_grad_(True)
    for hard in (False, True):
        y = gumbel_softmax(x, tau=1e-3, hard=hard, generator=g)
        assert torch.isfinite(y).all()
        (y * torch.arange(k)).sum().backward()
        assert torch.isfinite(x.grad).all()
        x.grad = None


def test_noise_is_finite_and_bounded():
    g = gumbel_noise((5_000_000,), generator=gen(18))
    assert torch.isfinite(g).all()
    # u in [tiny, 1 - 2^-24]: g in [-log(-log(tiny)), -log(2^-24 approx)] = [-4.47, 16.64] in float32.
    assert g.min() >= -4.5 and g.max() <= 16.7


def test_masked_logits_are_never_sampled():
    x = torch.tensor([0.0, -math.inf, 1.0]).expand(10_000, -1)
    assert (gumbel_max(x, generator=gen(19)) != 1).all()
    y = gumbel_softmax(x, hard=True, generator=gen(20))
    assert y[:, 1].sum() == 0


@pytest.mark.parametrize("tau", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_tau_is_refused(tau):
    with pytest.raises(ValueError, match="tau must be a finite number > 0"):
        gumbel_softmax(torch.zeros(2, 3), tau=tau)


@pytest.mark.parametrize(
    "logits,message",
    [
        (torch.tensor([[0.0, float("nan")]]), "logits contain NaN"),
        (torch.tensor([[0.0, float("inf")]]), r"logits contain \+inf"),
        (torch.full((2, 3), -math.inf), "every entry is -inf"),
        (torch.tensor([[1, 2]]), "floating-point"),
        (torch.zeros(3, 0), "at least one class"),
    ],
)
def test_bad_logits_are_refused(logits, message):
    for fn in (lambda: gumbel_softmax(logits), lambda: gumbel_softmax(logits, hard=True), lambda: gumbel_max(logits)):
        with pytest.raises(ValueError, match=message):
            fn()


def test_bad_beta_is_refused():
    with pytest.raises(ValueError, match="beta"):
        gumbel_pdf(0.0, beta=0.0)
    with pytest.raises(ValueError, match="beta"):
        gumbel_cdf(0.0, beta=-1.0)


def test_generator_makes_samples_reproducible():
    x = torch.randn(100, 5)
    assert torch.equal(gumbel_softmax(x, generator=gen(21)), gumbel_softmax(x, generator=gen(21)))
    assert not torch.equal(gumbel_softmax(x, generator=gen(21)), gumbel_softmax(x, generator=gen(22)))
