"""Benchmark: bias and variance of every gradient estimator on a 4-class problem whose gradient is known exactly.

Problem: logits ``theta = [0.5, -0.3, 1.2, 0.0]`` (softmax ~ [0.246, 0.110, 0.495, 0.149]), payoff vector
``c = [1.0, -0.5, 0.3, 0.8]`` and two payoffs of an action ``a`` (a one-hot, or the soft sample for ``relaxed``):

- ``linear``:    ``f(a) = <c, a>``;
- ``quadratic``: ``f(a) = (<c, a> - 0.45)^2`` (0.45 ~ E[<c, a>], so straight-through's linearisation matters).

Target: the gradient of the *discrete* objective ``J(theta) = E_{a ~ softmax(theta)}[f(a)] = sum_i p_i f(e_i)``,
computed exactly by autograd through the 4-term sum. For ``relaxed`` this is not the objective it is unbiased for
(that is ``E_y[f(y)]`` with ``y`` the soft sample), so its bias here measures how far the relaxation is from the
discrete problem.

Per estimator in ``gumbel_rl.ESTIMATORS`` (and per tau in {0.1, 0.5, 1, 2, 5} for those with a temperature) it
draws N = 100,000 single-sample estimates as one batch (a ``(N, 4)`` logits tensor, one row per estimate; the
gradient of ``sum_rows f(a_row)`` gives every row's estimate at once). ``reinforce`` is the score-function estimate
``f(a) * grad log p(a)`` with ``GumbelCategorical(...).log_prob``. Reported: the mean estimate, the bias norm
``||mean - exact||`` with a 95% half-width ``1.96 * sqrt(sum_j SE_j^2)`` (``SE_j`` the standard error of the mean
of coordinate j over the N rows; roughly the norm a zero-bias estimator would show), the p-value of a chi-square
test of zero bias (``N * b^T pinv(Cov) b`` on rank(Cov) degrees of freedom), the variance ``trace(Cov)`` of one
estimate, and ``cos(mean, exact)``.

Run ``python bench/bench_estimator_bias.py`` (seeded; a few seconds) or with ``--n 20000`` for a quicker look.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from scipy.stats import chi2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import gumbel_rl  # noqa: E402

THETA: tuple[float, ...] = (0.5, -0.3, 1.2, 0.0)
C: tuple[float, ...] = (1.0, -0.5, 0.3, 0.8)
CENTER = 0.45
TAUS: tuple[float, ...] = (0.1, 0.5, 1.0, 2.0, 5.0)
NO_TEMPERATURE: tuple[str, ...] = ("reinforce",)
SEED = 0

Payoff = Callable[[torch.Tensor], torch.Tensor]


def linear_payoff(a: torch.Tensor) -> torch.Tensor:
    """``<c, a>`` per row: (..., 4) -> (...)."""
    return a @ torch.tensor(C, dtype=a.dtype)


def quadratic_payoff(a: torch.Tensor) -> torch.Tensor:
    """``(<c, a> - 0.45)^2`` per row: (..., 4) -> (...)."""
    return (linear_payoff(a) - CENTER) ** 2


PAYOFFS: dict[str, Payoff] = {"linear": linear_payoff, "quadratic": quadratic_payoff}


def exact_gradient(payoff: Payoff, theta: torch.Tensor) -> torch.Tensor:
    """Gradient of ``sum_i softmax(theta)_i f(e_i)`` w.r.t. ``theta``, by enumerating the outcomes. Shape (n,)."""
    theta = theta.detach().clone().requires_grad_()
    outcomes = torch.eye(theta.numel(), dtype=theta.dtype)
    (grad,) = torch.autograd.grad((torch.softmax(theta, -1) * payoff(outcomes)).sum(), theta)
    return grad


def per_row_estimates(
    estimator: str, payoff: Payoff, theta: torch.Tensor, tau: float, n: int, generator: torch.Generator
) -> torch.Tensor:
    """``n`` independent single-sample gradient estimates, shape (n, len(theta))."""
    logits = theta.detach().expand(n, -1).clone().requires_grad_()
    if estimator == "reinforce":
        a = gumbel_rl.sample_action(logits, "reinforce", generator=generator)
        log_p = gumbel_rl.GumbelCategorical(logits, estimator="reinforce").log_prob(a)
        surrogate = (payoff(a).detach() * log_p).sum()
    else:
        a = gumbel_rl.sample_action(logits, estimator, tau, generator=generator)
        surrogate = payoff(a).sum()
    (grad,) = torch.autograd.grad(surrogate, logits)
    return grad


@dataclass
class Row:
    """Statistics of one (objective, estimator, tau) cell."""

    objective: str
    estimator: str
    tau: float | None
    mean: torch.Tensor
    bias_norm: float
    half_width: float
    p_value: float
    variance: float
    cosine: float


def summarise(objective: str, estimator: str, tau: float | None, g: torch.Tensor, exact: torch.Tensor) -> Row:
    """Bias, its 95% half-width and chi-square p-value, variance and cosine of the estimates ``g`` (N, n)."""
    n = g.shape[0]
    mean = g.mean(0)
    bias = mean - exact
    cov = torch.cov(g.T)
    variance = float(cov.trace())
    half_width = 1.96 * math.sqrt(variance / n)
    bias_norm = float(bias.norm())
    if variance <= 1e-24:  # deterministic estimate (argmax): the bias is exact, no sampling noise.
        p_value = 0.0 if bias_norm > 1e-12 else 1.0
    else:
        rank = int(torch.linalg.matrix_rank(cov, rtol=1e-9))
        stat = float(n * bias @ torch.linalg.pinv(cov, rtol=1e-9) @ bias)
        p_value = float(chi2.sf(stat, rank))
    cosine = float(torch.nn.functional.cosine_similarity(mean, exact, dim=0))
    return Row(objective, estimator, tau, mean, bias_norm, half_width, p_value, variance, cosine)


def run(n: int, seed: int = SEED) -> tuple[dict[str, torch.Tensor], list[Row]]:
    """All cells: returns the exact gradients by objective and one :class:`Row` per cell."""
    theta = torch.tensor(THETA, dtype=torch.float64)
    exact = {name: exact_gradient(payoff, theta) for name, payoff in PAYOFFS.items()}
    rows = []
    for obj_idx, (objective, payoff) in enumerate(PAYOFFS.items()):
        for est_idx, estimator in enumerate(gumbel_rl.ESTIMATORS):
            taus: tuple[float | None, ...] = (None,) if estimator in NO_TEMPERATURE else TAUS
            for tau_idx, tau in enumerate(taus):
                gen = torch.Generator().manual_seed(seed + 10_000 * obj_idx + 100 * est_idx + tau_idx)
                g = per_row_estimates(estimator, payoff, theta, 1.0 if tau is None else tau, n, gen)
                rows.append(summarise(objective, estimator, tau, g, exact[objective]))
    return exact, rows


def fmt_vec(v: torch.Tensor) -> str:
    return "[" + ", ".join(f"{x:+.3f}" for x in v.tolist()) + "]"


def markdown_table(rows: list[Row]) -> str:
    lines = [
        "| objective | estimator | tau | mean estimate | bias norm | CI95 half-width | p (bias = 0) | variance "
        "| cos(mean, exact) |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        tau = "-" if r.tau is None else f"{r.tau:g}"
        lines.append(
            f"| {r.objective} | {r.estimator} | {tau} | {fmt_vec(r.mean)} | {r.bias_norm:.4f} | {r.half_width:.4f} "
            f"| {r.p_value:.2g} | {r.variance:.4g} | {r.cosine:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="single-sample estimates per cell (default 100000)")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    if args.n < 100:
        parser.error(f"--n must be >= 100, got {args.n}")
    start = time.perf_counter()
    exact, rows = run(args.n, args.seed)
    probs = torch.softmax(torch.tensor(THETA, dtype=torch.float64), -1)
    print(f"theta = {list(THETA)}, softmax = {fmt_vec(probs)}, c = {list(C)}, N = {args.n:,}, seed {args.seed}")
    for objective, grad in exact.items():
        print(f"exact gradient of E_a[f(a)], {objective}: {fmt_vec(grad)} (norm {float(grad.norm()):.4f})")
    print()
    print(markdown_table(rows))
    print()
    print(f"total time {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()
