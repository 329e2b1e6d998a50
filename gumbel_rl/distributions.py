"""A policy distribution over one-hot actions whose ``rsample`` uses a chosen gradient estimator.

:class:`GumbelCategorical` is ``torch.distributions.OneHotCategorical`` (same ``log_prob``, ``entropy``, ``mode``,
``probs``) plus a temperature and an estimator, so that ``rsample()`` returns the action one-hot carrying that
estimator's gradient (:func:`gumbel_rl.estimators.sample_action`), and ``sample()`` draws by Gumbel-Max with an
optional generator. ``relaxed`` gives the matching ``torch.distributions.RelaxedOneHotCategorical`` (the Concrete
distribution), whose density is what the ``relaxed`` estimator samples from.
"""

from __future__ import annotations

from typing import cast

import torch
from torch.distributions import OneHotCategorical, RelaxedOneHotCategorical

from gumbel_rl.estimators import check_estimator, sample_action
from gumbel_rl.gumbel import _check_tau, _one_hot, check_logits, gumbel_max

_Size = torch.Size | list[int] | tuple[int, ...]
"""A sample or batch shape, as ``torch.distributions`` accepts it."""


class GumbelCategorical(OneHotCategorical):
    """Categorical distribution over one-hot vectors with a pathwise ``rsample`` per estimator.

    Args:
        logits: (..., n) action logits.
        tau: temperature > 0 of the relaxation.
        estimator: a name from :data:`gumbel_rl.ESTIMATORS` (default ``st-gumbel``).
        k: conditional draws for ``gumbel-rao``.
        generator: optional torch generator used by ``sample`` and ``rsample``.
    Raises:
        ValueError: bad logits, tau <= 0 or an unknown estimator.
    """

    has_rsample = True

    def __init__(
        self,
        logits: torch.Tensor,
        tau: float = 1.0,
        estimator: str = "st-gumbel",
        k: int = 10,
        generator: torch.Generator | None = None,
        validate_args: bool | None = None,
    ) -> None:
        check_logits(logits)
        _check_tau(tau)
        self.estimator = check_estimator(estimator)
        self.tau = float(tau)
        self.k = k
        self.generator = generator
        super().__init__(logits=logits, validate_args=validate_args)

    def _expanded_logits(self, sample_shape: _Size) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        return self.logits.expand(shape)

    def sample(self, sample_shape: _Size = ()) -> torch.Tensor:
        """Exact one-hot samples (Gumbel-Max), without gradient."""
        with torch.no_grad():
            logits = self._expanded_logits(sample_shape)
            index = gumbel_max(logits, generator=self.generator, validate=False).unsqueeze(-1)
            return _one_hot(index, logits, -1)

    def rsample(self, sample_shape: _Size = ()) -> torch.Tensor:
        """One-hot (soft for ``relaxed``) samples carrying the estimator's gradient to ``logits``."""
        return sample_action(
            self._expanded_logits(sample_shape),
            self.estimator,
            self.tau,
            k=self.k,
            generator=self.generator,
            validate=False,
        )

    @property
    def relaxed(self) -> RelaxedOneHotCategorical:
        """The Concrete / Gumbel-Softmax distribution at this temperature (``torch.distributions``)."""
        temperature = torch.tensor(self.tau, dtype=self.logits.dtype, device=self.logits.device)
        return RelaxedOneHotCategorical(temperature, logits=self.logits)

    def expand(self, batch_shape: _Size, _instance: GumbelCategorical | None = None) -> GumbelCategorical:
        """The same distribution over a larger batch shape (the contract of ``torch.distributions``)."""
        # torch leaves these two untyped; they return a GumbelCategorical here.
        new = self._get_checked_instance(GumbelCategorical, _instance)  # type: ignore[no-untyped-call]
        new = cast(GumbelCategorical, super().expand(batch_shape, _instance=new))  # type: ignore[no-untyped-call]
        new.estimator, new.tau, new.k, new.generator = self.estimator, self.tau, self.k, self.generator
        return new

    def __repr__(self) -> str:
        return (
            f"GumbelCategorical(logits: {tuple(self.logits.shape)}, tau: {self.tau:g}, estimator: {self.estimator!r})"
        )
