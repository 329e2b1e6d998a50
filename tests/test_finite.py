"""The core stays finite for every floating dtype (issue 11, item 8).

The grid: dtype (float16, bfloat16, float32, float64) x tau (1e-6, 1e-2, 1, 100) x logit magnitude (0, 1, 1e4,
1e33; capped at a quarter of the dtype's largest finite value, so float16 gets +-16376) x without / with a -inf mask,
for every estimator of ``sample_action``, for ``gumbel_softmax`` (soft and hard) and ``gumbel_max``: the forward is
finite and of the input dtype, one-hot for hard estimators, on the simplex for ``relaxed``, masked classes get
exactly 0 and are never picked, and the gradient with respect to the logits is finite (0 on masked classes).
"""

from __future__ import annotations

import itertools

import gymnasium as gym
import numpy as np
import pytest
import torch

from gumbel_rl import ESTIMATORS, HARD_ESTIMATORS, GumbelPolicy, gumbel_max, gumbel_softmax, sample_action

DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
TAUS = (1e-6, 1e-2, 1.0, 100.0)
MAGNITUDES = (0.0, 1.0, 1e4, 1e33)
BATCH, N = 64, 5
# Sum-to-one tolerance of a relaxed sample returned in ``dtype`` (5 entries, each rounded once).
SIMPLEX_ATOL = {torch.float16: 5e-3, torch.bfloat16: 3e-2, torch.float32: 1e-5, torch.float64: 1e-12}


def _logits(dtype: torch.dtype, magnitude: float, masked: bool, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(BATCH, N) logits uniform in [-magnitude, magnitude] (float64 maths, then cast) and the (BATCH, N) mask.

    With ``masked``, about 40% of the entries are -inf and every row keeps at least one finite logit (row 0 keeps
    only its last class); without, the mask is all False.
    """
    g = torch.Generator().manual_seed(seed)
    mag = min(magnitude, torch.finfo(dtype).max / 4)
    logits = (torch.rand(BATCH, N, generator=g, dtype=torch.float64) * 2 - 1) * mag
    mask = torch.zeros(BATCH, N, dtype=torch.bool)
    if masked:
        mask = torch.rand(BATCH, N, generator=g) < 0.4
        mask[:, -1] &= mask[:, :-1].sum(1) < N - 1  # keep one finite class per row
        mask[0] = torch.tensor([True] * (N - 1) + [False])
        logits = logits.masked_fill(mask, -torch.inf)
    return logits.to(dtype), mask


def _check(action: torch.Tensor, logits: torch.Tensor, mask: torch.Tensor, hard: bool, what: str) -> None:
    assert action.dtype == logits.dtype and action.shape == logits.shape, what
    a = action.detach().double()
    assert bool(torch.isfinite(a).all()), f"{what}: non-finite forward"
    assert bool((a[mask] == 0).all()), f"{what}: mass on a masked class"
    if hard:
        assert bool(((a == 0) | (a == 1)).all()) and bool((a.sum(-1) == 1).all()), f"{what}: not one-hot"
    else:
        assert bool(((a >= 0) & (a <= 1)).all()), f"{what}: outside [0, 1]"
        torch.testing.assert_close(
            a.sum(-1), torch.ones(BATCH, dtype=torch.float64), atol=SIMPLEX_ATOL[logits.dtype], rtol=0
        )


def _check_grad(action: torch.Tensor, leaf: torch.Tensor, mask: torch.Tensor, what: str) -> None:
    w = torch.linspace(-1.0, 1.0, N, dtype=torch.float64).to(action.dtype)
    (grad,) = torch.autograd.grad((action * w).sum(), leaf)
    assert grad.dtype == leaf.dtype, what
    assert bool(torch.isfinite(grad).all()), f"{what}: non-finite gradient"
    assert bool((grad[mask] == 0).all()), f"{what}: gradient on a masked class"


@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize("magnitude", MAGNITUDES)
@pytest.mark.parametrize("tau", TAUS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_core_finite_grid(dtype: torch.dtype, tau: float, magnitude: float, masked: bool) -> None:
    logits, mask = _logits(dtype, magnitude, masked)
    # validate=False takes the guard that needs no host read of the row maxima.
    for estimator, validate in itertools.product(ESTIMATORS, (True, False)):
        what = f"sample_action({estimator}, validate={validate})"
        leaf = logits.clone().requires_grad_(True)
        action = sample_action(leaf, estimator, tau, generator=torch.Generator().manual_seed(1), validate=validate)
        _check(action, logits, mask, hard=estimator in HARD_ESTIMATORS, what=what)
        if estimator != "reinforce":  # reinforce's action carries no gradient by design
            _check_grad(action, leaf, mask, what)
        if estimator in ("st-gumbel", "reinmax", "gumbel-rao"):  # exact samples: never a masked class
            assert bool((action.detach().argmax(-1) != N).all())
    for hard in (False, True):
        what = f"gumbel_softmax(hard={hard})"
        leaf = logits.clone().requires_grad_(True)
        y = gumbel_softmax(leaf, tau, hard=hard, generator=torch.Generator().manual_seed(2))
        _check(y, logits, mask, hard=hard, what=what)
        _check_grad(y, leaf, mask, what)
    index = gumbel_max(logits, generator=torch.Generator().manual_seed(3))
    assert index.shape == (BATCH,) and not bool(mask.gather(1, index[:, None]).any()), (
        "gumbel_max picked a masked class"
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_half_precision_zero_logits_tiny_tau_reproduces_issue(dtype: torch.dtype) -> None:
    """The issue's first reproduction: all-zero logits at tau 1e-6 gave NaN in float16."""
    leaf = torch.zeros(8, 3, dtype=dtype, requires_grad=True)
    for estimator in ("relaxed", "st-gumbel", "argmax", "gumbel-rao", "reinmax"):
        action = sample_action(leaf, estimator, 1e-6, generator=torch.Generator().manual_seed(0))
        (grad,) = torch.autograd.grad(action.double().pow(2).sum() + action[:, 0].double().sum(), leaf)
        assert bool(torch.isfinite(action).all()) and bool(torch.isfinite(grad).all()), estimator


def test_huge_logits_give_the_limit_answer() -> None:
    """+-1e33 logits at tau 1e-6 (float32): the relaxed sample is the one-hot of the largest logit (the limit)."""
    logits = torch.tensor([[1e33, -1e33, 2e33], [-1e33, -2e33, -3e33]])
    y = gumbel_softmax(logits, 1e-6, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(y, torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]), atol=0, rtol=0)


def test_float32_results_unchanged_by_the_guard() -> None:
    """For ordinary float32 logits the guarded softmax is bit-identical to the plain ``softmax((o + g) / tau)``."""
    logits = torch.randn(256, 6, generator=torch.Generator().manual_seed(0))
    for tau in (0.3, 1.0, 2.5):
        y = gumbel_softmax(logits, tau, generator=torch.Generator().manual_seed(5))
        u = torch.rand(256, 6, generator=torch.Generator().manual_seed(5)).clamp_(min=torch.finfo(torch.float32).tiny)
        z = logits - u.log().neg().log()
        assert torch.equal(y, torch.softmax(z / tau, dim=-1)), tau


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_all_masked_row_still_refused(dtype: torch.dtype) -> None:
    logits = torch.zeros(3, 4, dtype=dtype)
    logits[1] = -torch.inf
    for estimator in ESTIMATORS:
        with pytest.raises(ValueError, match="every entry is -inf"):
            sample_action(logits, estimator, 1e-6)
    for hard in (False, True):
        with pytest.raises(ValueError, match="every entry is -inf"):
            gumbel_softmax(logits, 1e-6, hard=hard)
    with pytest.raises(ValueError, match="every entry is -inf"):
        gumbel_max(logits)


@pytest.mark.parametrize("tau", TAUS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_policy_act_finite(dtype: torch.dtype, tau: float) -> None:
    """``GumbelPolicy.act`` in every dtype, with ordinary and with large (1e4-scale) logits."""
    torch.manual_seed(0)
    policy = GumbelPolicy(gym.spaces.Box(-np.inf, np.inf, (3,), np.float32), gym.spaces.Discrete(4), net_arch=(8,))
    policy = policy.to(dtype)
    features = torch.randn(32, 3, generator=torch.Generator().manual_seed(1)).to(dtype)
    for scale in (1.0, 1e4 / 0.01):  # the output layer's gain is 0.01
        with torch.no_grad():
            policy.net[-1].weight.mul_(scale)
        for estimator in ESTIMATORS:
            action, logits = policy.act(features, tau=tau, estimator=estimator, generator=torch.Generator())
            assert action.dtype == dtype and bool(torch.isfinite(action).all()), (estimator, scale)
            if estimator != "reinforce":
                policy.zero_grad()
                (action.double() * torch.arange(4.0, dtype=torch.float64)).sum().backward()
                for p in policy.parameters():
                    assert p.grad is None or bool(torch.isfinite(p.grad).all()), (estimator, scale)
