"""The Gumbel distribution, the Gumbel-Max trick and the Gumbel-Softmax relaxation.

Notation follows the project's seed notes: logits ``o``, standard Gumbel noise ``g = -log(-log(eps))`` with
``eps ~ U(0, 1)``, Gumbel-Max ``argmax(o + g)`` (an exact Categorical(softmax(o)) sample), and Gumbel-Softmax
``softmax((o + g) / tau)`` (Jang et al. 2017; Maddison et al. 2017).

Numerical care, so that results are finite for every floating dtype, temperature and finite logit:

- ``eps`` is clamped into the open interval (0, 1) before the two logarithms, so the noise is always finite (at most
  about 16.6 and at least about -4.5 in float32), unlike ``torch.nn.functional.gumbel_softmax``, whose exponential
  draw can be 0 and give ``inf``/``NaN``.
- float16 and bfloat16 logits are computed in float32 internally (noise, softmax, gradients) and the result is
  returned in the input dtype: ``(o + g) / tau`` overflows float16 already at tau = 1e-3. Gradients, of order
  ``1 / tau`` near ties, are saturated to the input dtype's largest finite value rather than overflowing to inf.
- Dividing by a small ``tau`` can overflow even in float32 (logits of 1e33 at tau = 1e-6). Rows whose maximum
  ``max(o + g) / tau`` would overflow are shifted by that maximum first (softmax is shift-invariant); other rows are
  computed exactly as ``softmax((o + g) / tau)``, bit for bit.
- ``-inf`` logits (masked classes) get exactly 0 probability and are never sampled; a distribution whose every
  logit is ``-inf`` is refused.
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch

EULER_GAMMA = 0.5772156649015329
"""Euler-Mascheroni constant: the mean of the standard Gumbel distribution."""


def _check_tau(tau: float | torch.Tensor) -> None:
    if isinstance(tau, torch.Tensor):
        if tau.numel() != 1:
            raise ValueError(f"tau must be a single positive number, got a tensor of shape {tuple(tau.shape)}")
        tau = float(tau)
    if not (tau > 0 and math.isfinite(tau)):
        raise ValueError(f"tau must be a finite number > 0, got {tau}")


def _check_logits_meta(logits: torch.Tensor, dim: int) -> None:
    if not isinstance(logits, torch.Tensor):
        raise ValueError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating-point tensor, got dtype {logits.dtype}")
    if logits.dim() == 0 or logits.shape[dim] == 0:
        raise ValueError(f"logits must have at least one class along dim {dim}, got shape {tuple(logits.shape)}")


def _check_row_max(row_max: torch.Tensor, logits: torch.Tensor) -> None:
    """Raise unless every row maximum is finite. ``max`` propagates NaN, so this one check catches NaN, +inf and
    rows of all -inf in ``logits`` (or in ``logits`` plus finite noise); the diagnosis runs only on failure."""
    if bool(torch.isfinite(row_max).all()):
        return
    if bool(torch.isnan(logits).any()):
        raise ValueError("logits contain NaN")
    if bool(torch.isposinf(logits).any()):
        raise ValueError("logits contain +inf")
    raise ValueError("logits have a distribution whose every entry is -inf (all actions masked)")


def check_logits(logits: torch.Tensor, dim: int = -1) -> None:
    """Raise ``ValueError`` unless ``logits`` is a floating tensor usable as categorical logits along ``dim``.

    ``-inf`` entries are allowed (masked actions) as long as every distribution keeps one finite logit; ``NaN`` and
    ``+inf`` are refused.
    """
    _check_logits_meta(logits, dim)
    _check_row_max(logits.detach().amax(dim=dim), logits)


def _noise_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of internal computations for ``dtype`` inputs: float32 for float16/bfloat16 (whose range overflows
    at small temperatures and whose few representable uniforms would bias the noise's tails), else ``dtype``."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


class _SaturatingUpcast(torch.autograd.Function):
    """``x.to(dtype)`` forward; backward, the gradient cast back to ``x``'s dtype with values beyond its range
    saturated to its largest finite value (a gradient of order ``1 / tau`` overflows float16 for ``tau < 1e-4``)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        ctx.in_dtype = x.dtype
        return x.to(dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        fmax = torch.finfo(ctx.in_dtype).max
        return grad.clamp(-fmax, fmax).to(ctx.in_dtype), None


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """``x`` in the dtype of internal computations (a no-op for float32 and float64); for float16/bfloat16 the
    gradient flowing back is saturated to the input dtype's finite range instead of overflowing to inf."""
    nd = _noise_dtype(x.dtype)
    if nd == x.dtype:
        return x
    if torch.is_grad_enabled() and x.requires_grad:
        # torch types ``Function.apply`` as untyped (``*args: Any``); it returns forward's tensor.
        return cast(torch.Tensor, _SaturatingUpcast.apply(x, nd))  # type: ignore[no-untyped-call]
    return x.to(nd)


def _scaled(z: torch.Tensor, row_max: torch.Tensor, tau: float, peak: float | None = None) -> torch.Tensor:
    """``z / tau`` for ``softmax``, safe from overflow: rows whose maximum ``row_max / tau`` overflows are shifted
    by ``row_max`` first (softmax is shift-invariant). Other rows are ``z / tau`` bit for bit (``z - 0 == z``).

    ``row_max`` is the detached maximum of ``z`` along the softmax dimension, keepdim. ``peak``: the largest
    ``|row_max|`` when the caller has read it already (validation does); then the common case, where nothing can
    overflow, is a plain division. Without it the guard runs on the device, without a host synchronisation.
    """
    if tau == 1.0:
        return z  # softmax subtracts the row maximum itself
    if tau > 1.0 or (peak is not None and peak / tau < 0.5 * torch.finfo(z.dtype).max):  # margin: tau's rounding
        return z / tau  # cannot overflow: finite z shrinks, or the largest |row max| / tau is known to fit
    shift = torch.where(torch.isfinite(row_max / tau), 0.0, row_max)
    return (z - shift) / tau


def softmax_tau(z: torch.Tensor, tau: float, dim: int = -1, row_max: torch.Tensor | None = None) -> torch.Tensor:
    """``softmax(z / tau)`` along ``dim`` without overflow for any ``tau > 0`` and finite row maxima.

    Computed in float32 for float16/bfloat16 ``z`` and returned in that dtype; ``-inf`` entries get exactly 0.
    ``row_max``: the detached ``z.amax(dim, keepdim=True)`` when the caller has it already.
    """
    zc = _upcast(z)
    if row_max is None:
        row_max = zc.detach().amax(dim=dim, keepdim=True)
    y = torch.softmax(_scaled(zc, row_max.to(zc.dtype), tau), dim=dim)
    return y if y.dtype == z.dtype else y.to(z.dtype)


def gumbel_noise(
    shape: torch.Size | tuple[int, ...],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Standard Gumbel samples ``g = -log(-log(eps))``, ``eps ~ U(0, 1)`` clamped into the open interval.

    Always finite. Returns a tensor of ``shape`` and ``dtype`` on ``device``.
    """
    nd = _noise_dtype(dtype)
    u = torch.rand(shape, dtype=nd, device=device, generator=generator)
    # rand is in [0, 1): only 0 needs care (its largest value 1 - 2**-24 gives g ~= 16.6 in float32).
    g = u.clamp_(min=torch.finfo(nd).tiny).log_().neg_().log_().neg_()
    return g if nd == dtype else g.to(dtype)


def _perturb(logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """``logits + g`` with ``g`` standard Gumbel, drawn in place: ``logits - log(-log(u))``, in the internal dtype
    (float32 for float16/bfloat16 logits, so that ``logits + g`` cannot overflow).

    The same uniform stream as :func:`gumbel_noise` (``uniform_`` on an empty tensor is ``torch.rand``), two
    fewer kernels than building ``g`` and adding it.
    """
    nd = _noise_dtype(logits.dtype)
    u = torch.empty_like(logits, dtype=nd, memory_format=torch.legacy_contiguous_format).uniform_(generator=generator)
    log_neg_log_u = u.clamp_(min=torch.finfo(nd).tiny).log_().neg_().log_()
    return _upcast(logits) - log_neg_log_u


def _validate_row_max(row_max: torch.Tensor, logits: torch.Tensor, need_peak: bool = True) -> float | None:
    """Check that every row maximum is finite; return the largest ``|row_max|`` (host float) when ``need_peak``.

    One reduction and one host read (``amax`` and ``sum`` propagate NaN and inf); only a non-finite value runs the
    exact diagnosis. Without ``need_peak`` the reduction is a plain sum (one kernel fewer: at batch 1 the per-call
    cost is what counts); a sum that overflows on finite maxima only costs that exact check.
    """
    if not need_peak:
        if not math.isfinite(row_max.sum().item()):
            _check_row_max(row_max, logits)
        return None
    peak = row_max.abs().amax().item()
    if not math.isfinite(peak):
        _check_row_max(row_max, logits)
    return float(peak)


def _as_float_tensor(x: torch.Tensor | float) -> torch.Tensor:
    x = torch.as_tensor(x)
    return x if x.is_floating_point() else x.to(torch.get_default_dtype())


def gumbel_cdf(x: torch.Tensor | float, mu: float = 0.0, beta: float = 1.0) -> torch.Tensor:
    """CDF of Gumbel(mu, beta): ``exp(-exp(-(x - mu) / beta))``. Raises ``ValueError`` if ``beta <= 0``."""
    if not beta > 0:
        raise ValueError(f"beta (scale) must be > 0, got {beta}")
    z = (_as_float_tensor(x) - mu) / beta
    return torch.exp(-torch.exp(-z))


def gumbel_pdf(x: torch.Tensor | float, mu: float = 0.0, beta: float = 1.0) -> torch.Tensor:
    """PDF of Gumbel(mu, beta): ``exp(-(z + exp(-z))) / beta`` with ``z = (x - mu) / beta``.

    Raises ``ValueError`` if ``beta <= 0``.
    """
    if not beta > 0:
        raise ValueError(f"beta (scale) must be > 0, got {beta}")
    z = (_as_float_tensor(x) - mu) / beta
    return torch.exp(-(z + torch.exp(-z))) / beta


def gumbel_max(
    logits: torch.Tensor, dim: int = -1, *, generator: torch.Generator | None = None, validate: bool = True
) -> torch.Tensor:
    """Exact Categorical(softmax(logits)) samples by the Gumbel-Max trick: ``argmax(logits + g)``.

    Args:
        logits: unnormalised log-probabilities, any shape; classes along ``dim``.
        generator: optional torch generator for reproducible noise.
    Returns:
        Long tensor of class indices, ``logits`` shape without ``dim``.
    Raises:
        ValueError: NaN or +inf logits, or a distribution with every logit -inf.
    """
    if validate:
        _check_logits_meta(logits, dim)
    with torch.no_grad():
        row_max, index = _perturb(logits, generator).max(dim=dim)
    if validate:
        _validate_row_max(row_max, logits)
    return index


def _one_hot(index: torch.Tensor, like: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.zeros_like(like, memory_format=torch.legacy_contiguous_format).scatter_(dim, index, 1.0)


def straight_through(
    z: torch.Tensor, index: torch.Tensor | None = None, tau: float = 1.0, dim: int = -1
) -> torch.Tensor:
    """One-hot of ``index`` (default ``argmax(z)``, keepdim) forward; gradient of ``softmax(z / tau)`` backward.

    Built as ``(y - y.detach()) + one_hot`` from native ops: the forward value is exactly the one-hot (``y - y`` is
    exactly 0) and the backward is torch's fused softmax backward. The softmax is computed as :func:`softmax_tau`
    (float32 for half-precision ``z``, overflow-safe for tiny ``tau``); the result has ``z``'s dtype.
    """
    return _straight_through(z, index, float(tau), dim)


def _straight_through(
    z: torch.Tensor,
    index: torch.Tensor | None,
    tau: float,
    dim: int,
    row_max: torch.Tensor | None = None,
    peak: float | None = None,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """:func:`straight_through` for ``z`` that may already be upcast: ``row_max`` and ``peak`` as for
    :func:`_scaled` when known, ``out_dtype`` the dtype to return (default ``z``'s)."""
    out_dtype = z.dtype if out_dtype is None else out_dtype
    if index is None:
        index = z.detach().argmax(dim=dim, keepdim=True)
    if not (torch.is_grad_enabled() and z.requires_grad):
        return _one_hot(index, z.detach().to(out_dtype), dim)
    zc = _upcast(z)
    if row_max is None:
        row_max = zc.detach().amax(dim=dim, keepdim=True)
    y = torch.softmax(_scaled(zc, row_max.to(zc.dtype), tau, peak), dim=dim)
    out = (y - y.detach()).add_(_one_hot(index, y.detach(), dim))
    return out if out.dtype == out_dtype else out.to(out_dtype)


def gumbel_softmax(
    logits: torch.Tensor,
    tau: float = 1.0,
    hard: bool = False,
    dim: int = -1,
    *,
    generator: torch.Generator | None = None,
    validate: bool = True,
) -> torch.Tensor:
    """Gumbel-Softmax sample ``y = softmax((logits + g) / tau)``, or its straight-through one-hot.

    A drop-in for ``torch.nn.functional.gumbel_softmax`` that never produces inf/NaN (see the module docstring):
    finite values and gradients for every floating dtype, ``tau > 0`` and finite or ``-inf`` (masked) logits.

    Args:
        logits: unnormalised log-probabilities, classes along ``dim``.
        tau: temperature > 0. Small tau: ``y`` near one-hot; large tau: near uniform.
        hard: if True, return the one-hot of ``argmax(logits + g)`` (an exact categorical sample for any tau)
            whose gradient is that of the relaxed sample ``y`` for the same noise (straight-through).
        generator: optional torch generator for reproducible noise.
        validate: check logits and tau (one reduction over the logits); disable in hot loops you trust.
    Returns:
        Tensor shaped like ``logits``, of its dtype (computed in float32 for float16/bfloat16).
    Raises:
        ValueError: tau <= 0 or not finite; NaN or +inf logits; a distribution with every logit -inf.
    """
    if validate:
        _check_tau(tau)
        _check_logits_meta(logits, dim)
    tau = float(tau)
    z = _perturb(logits, generator)
    row_max, index = z.detach().max(dim=dim, keepdim=True)
    # The peak only decides how _scaled divides by tau < 1; a hard sample without a gradient never divides.
    needs_grad = torch.is_grad_enabled() and logits.requires_grad
    need_peak = tau < 1.0 and (needs_grad or not hard)
    peak = _validate_row_max(row_max, logits, need_peak) if validate else None
    if hard:
        return _straight_through(z, index, tau, dim, row_max, peak, out_dtype=logits.dtype)
    y = torch.softmax(_scaled(z, row_max, tau, peak), dim=dim)
    return y if y.dtype == logits.dtype else y.to(logits.dtype)
