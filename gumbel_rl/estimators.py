"""Gradient estimators for discrete actions: what the environment sees forward, what flows back.

``sample_action(logits, estimator, tau)`` returns an action one-hot shaped like ``logits`` (classes on the last
dimension). Every estimator but ``relaxed`` feeds a hard one-hot forward; they differ in the gradient:

==============  ==================================================  =============================================
name            forward                                             backward (d action / d logits)
==============  ==================================================  =============================================
``relaxed``     ``y = softmax((o + g) / tau)`` (soft action)        exact gradient of ``y``
``st-gumbel``   one-hot ``argmax(o + g)`` (exact sample)             gradient of ``y`` for the same noise
``argmax``      one-hot ``argmax(o)`` (greedy, no noise)            gradient of ``softmax(o / tau)``
``reinmax``     one-hot ``argmax(o + g)`` (exact sample)             ReinMax, Heun's method (Liu et al. 2023)
``gumbel-rao``  one-hot ``argmax(o + g)`` (exact sample)             mean over ``k`` Gumbels drawn conditionally on
                                                                     the sample (Paulus et al. 2021)
``reinforce``   one-hot ``argmax(o + g)`` (exact sample)             none: use ``log_prob`` (score function)
==============  ==================================================  =============================================
"""

from __future__ import annotations

import enum
from typing import Any, cast

import torch

from gumbel_rl.gumbel import (
    _check_tau,
    _one_hot,
    _scaled,
    _upcast,
    check_logits,
    gumbel_max,
    gumbel_noise,
    gumbel_softmax,
    softmax_tau,
)
from gumbel_rl.gumbel import straight_through as _straight_through


class Estimator(str, enum.Enum):
    """The gradient estimators, the single source of their names (``Estimator("st-gumbel")``, ``.value``).

    Every method family takes its names from here: the pathwise methods are named after the estimator itself
    (``st-gumbel``), the critic methods ``<estimator>-critic``.
    """

    RELAXED = "relaxed"
    ST_GUMBEL = "st-gumbel"
    ARGMAX = "argmax"
    REINMAX = "reinmax"
    GUMBEL_RAO = "gumbel-rao"
    REINFORCE = "reinforce"

    @property
    def pathwise(self) -> bool:
        """True when the action carries a gradient (every estimator but ``reinforce``)."""
        return self is not Estimator.REINFORCE

    @property
    def hard(self) -> bool:
        """True when the forward action is an exact one-hot (every estimator but ``relaxed``)."""
        return self is not Estimator.RELAXED

    @property
    def description(self) -> str:
        """One line: what the environment sees and what flows back."""
        return _DESCRIPTIONS[self]

    def __str__(self) -> str:
        return self.value


_DESCRIPTIONS = {
    Estimator.RELAXED: "soft Gumbel-Softmax actions (biased, low variance)",
    Estimator.ST_GUMBEL: "straight-through Gumbel-Softmax (hard sampled actions, soft gradient)",
    Estimator.ARGMAX: "greedy one-hot actions with a softmax straight-through gradient",
    Estimator.REINMAX: "ReinMax (second-order straight-through, Liu et al. 2023)",
    Estimator.GUMBEL_RAO: "Gumbel-Rao (k conditional Gumbels, Paulus et al. 2021)",
    Estimator.REINFORCE: "exact samples without a pathwise gradient (score function)",
}

ESTIMATORS: tuple[str, ...] = tuple(e.value for e in Estimator)
"""Every estimator name that :func:`sample_action` accepts."""

PATHWISE_ESTIMATORS: tuple[str, ...] = tuple(e.value for e in Estimator if e.pathwise)
"""The estimators whose action carries a gradient (all but ``reinforce``)."""

HARD_ESTIMATORS: tuple[str, ...] = tuple(e.value for e in Estimator if e.hard)
"""The estimators whose forward action is an exact one-hot."""


def check_estimator(estimator: str | Estimator) -> str:
    """The name of ``estimator`` if it is a known one, else raise ``ValueError`` listing the valid names."""
    if isinstance(estimator, Estimator):
        return estimator.value
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; valid estimators: {', '.join(ESTIMATORS)}")
    return estimator


class _ReinMax(torch.autograd.Function):
    """ReinMax (Liu et al., NeurIPS 2023, Algorithm 2): forward the sample ``D``, backward
    ``2 J(pi_1)^T g - J(pi_0)^T g / 2`` with ``pi_0 = softmax(o)``, ``pi_1 = (D + softmax(o / tau)) / 2`` and
    ``J(p)^T g = p * (g - <p, g>)`` the softmax Jacobian-vector product.

    The backward runs in float32 for float16/bfloat16 logits and uses the overflow-safe ``softmax(o / tau)`` of
    :func:`gumbel_rl.gumbel.softmax_tau`, so the gradient is finite for any ``tau > 0``."""

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, index: torch.Tensor, tau: float) -> torch.Tensor:
        d = _one_hot(index, logits, -1)
        ctx.save_for_backward(logits, d)
        ctx.tau = tau
        return d

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        logits, d = ctx.saved_tensors
        dtype = logits.dtype
        logits, d, grad = _upcast(logits), _upcast(d), _upcast(grad)
        pi0 = torch.softmax(logits, dim=-1)
        pi1 = 0.5 * (softmax_tau(logits, ctx.tau) + d)
        g1 = pi1 * (grad - (pi1 * grad).sum(-1, keepdim=True))
        g0 = pi0 * (grad - (pi0 * grad).sum(-1, keepdim=True))
        out = 2.0 * g1 - 0.5 * g0
        if out.dtype != dtype:  # back to half precision, saturated rather than overflowing to inf
            fmax = torch.finfo(dtype).max
            out = out.clamp(-fmax, fmax).to(dtype)
        return out, None, None


def conditional_gumbel(
    logits: torch.Tensor, index: torch.Tensor, k: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``k`` draws of standard Gumbel noise ``g`` conditioned on ``argmax(logits + g) == index``.

    Exact (no rejection): the chosen class's perturbed logit is ``logZ + G`` (the maximum of all perturbed logits),
    the others are Gumbels truncated below it (Maddison et al. 2014; Paulus et al. 2021). Computed in log space.

    Args:
        logits: (..., n); ``index``: (..., 1) long.
    Returns:
        (k, ..., n) noise, without gradient; float32 for float16/bfloat16 logits, else their dtype.
    """
    with torch.no_grad():
        logits = _upcast(logits)  # float32 for half precision: the truncated Gumbels need the range
        shape = (k, *logits.shape)
        g = gumbel_noise(shape, dtype=logits.dtype, device=logits.device, generator=generator)
        log_z = torch.logsumexp(logits, dim=-1, keepdim=True)
        top = log_z + g.gather(-1, index.expand(k, *index.shape))  # perturbed logit of the chosen class
        # Others: Gumbel(logits_j) truncated at `top`: -log(exp(-(o_j + g_j)) + exp(-top)).
        others = -torch.logaddexp(-(logits + g), -top)
        perturbed = others.scatter(-1, index.expand(k, *index.shape), top)
        noise = perturbed - logits
        # Masked (-inf) logits: keep them at -inf after adding the noise rather than -inf - -inf = NaN.
        return torch.where(torch.isinf(logits), torch.zeros_like(noise), noise)


def sample_action(
    logits: torch.Tensor,
    estimator: str,
    tau: float = 1.0,
    *,
    k: int = 10,
    generator: torch.Generator | None = None,
    validate: bool = True,
) -> torch.Tensor:
    """The action the environment receives, carrying ``estimator``'s gradient.

    Args:
        logits: (..., n_actions) action logits; classes on the last dimension.
        estimator: one of :data:`ESTIMATORS`.
        tau: temperature > 0 of the relaxation (for ``argmax``, of the softmax in its backward; unused by
            ``reinforce``).
        k: number of conditional Gumbel draws for ``gumbel-rao`` (k=1 is ST-Gumbel in distribution).
        generator: optional torch generator for reproducible noise.
        validate: check the arguments (costs one reduction over the logits).
    Returns:
        Tensor shaped like ``logits``, of its dtype: a one-hot for every estimator but ``relaxed``, whose value is the
        soft sample. Values and gradients are finite for every floating dtype, every ``tau > 0`` and finite or
        ``-inf`` (masked) logits: half precision is computed in float32, and tiny temperatures are guarded against
        overflow (see :mod:`gumbel_rl.gumbel`); masked classes get 0 and are never sampled.
    Raises:
        ValueError: unknown estimator, tau <= 0, k < 1, NaN/+inf logits or a row of all -inf logits.
    """
    if validate:
        check_estimator(estimator)
        _check_tau(tau)
        if estimator == "gumbel-rao" and not (isinstance(k, int) and k >= 1):
            raise ValueError(f"k (conditional draws for gumbel-rao) must be an integer >= 1, got {k!r}")
    tau = float(tau)
    if estimator in ("relaxed", "st-gumbel"):
        return gumbel_softmax(logits, tau, hard=estimator == "st-gumbel", generator=generator, validate=validate)
    if estimator == "argmax":
        if validate:
            check_logits(logits)
        return _straight_through(logits, tau=tau)
    index = gumbel_max(logits, generator=generator, validate=validate).unsqueeze(-1)
    if estimator == "reinforce" or not (torch.is_grad_enabled() and logits.requires_grad):
        return _one_hot(index, logits.detach(), -1)
    if estimator == "reinmax":
        # torch types ``Function.apply`` as untyped (``*args: Any``); it returns forward's tensor.
        return cast(torch.Tensor, _ReinMax.apply(logits, index, tau))  # type: ignore[no-untyped-call]
    if estimator == "gumbel-rao":
        noise = conditional_gumbel(logits, index, k, generator)
        z = _upcast(logits) + noise  # (k, ..., n)
        surrogate = torch.softmax(_scaled(z, z.detach().amax(-1, keepdim=True), tau), dim=-1).mean(0)
        action = _one_hot(index, surrogate.detach(), -1) + (surrogate - surrogate.detach())
        return action if action.dtype == logits.dtype else action.to(logits.dtype)
    raise ValueError(f"unknown estimator {estimator!r}; valid estimators: {', '.join(ESTIMATORS)}")
