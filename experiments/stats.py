"""Aggregate statistics over runs: the interquartile mean (IQM) and its stratified bootstrap confidence interval.

These follow rliable (Agarwal et al., "Deep Reinforcement Learning at the Edge of the Statistical Precipice",
NeurIPS 2021): the IQM is the mean of the middle 50% of all run scores (``scipy.stats.trim_mean(x, 0.25)`` over
every run of every task), and its 95% interval is a *stratified percentile bootstrap*: resample runs with
replacement independently within each task, recompute the IQM, take the 2.5th and 97.5th percentiles (linear
interpolation) of the replicates.

We do not depend on rliable itself: rliable 1.2.0 requires ``arch<8``; arch 7.2.0 fails to import with pandas 3
(``deprecate_kwarg() missing 1 required positional argument``) and arch 8 breaks rliable's bootstrap call
(``random_state`` of NoneType). The computation is small, so it is reimplemented here in vectorised numpy (50,000
replicates of a few dozen runs take milliseconds) and checked against numbers computed with rliable 1.2.0 in
``tests/test_stats.py``. NumPy only (no scipy), so ``train.py compare`` works on a core install.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

TRIM = 0.25
"""Fraction cut from each end for the interquartile mean."""
BOOTSTRAP_REPS = 50_000
"""Bootstrap replicates (rliable's default for ``get_interval_estimates``)."""
_CHUNK_ELEMENTS = 4_000_000
"""Resampled scores held in memory at once (float64: 32 MB)."""


@dataclass(frozen=True)
class IntervalEstimate:
    """A point estimate with a two-sided confidence interval ``[low, high]`` of coverage ``size``."""

    point: float
    low: float
    high: float
    size: float
    reps: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _as_scores(scores: Any) -> np.ndarray:
    """``scores`` as a float64 array of shape (runs, tasks); a 1-D input is one task."""
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.size == 0:
        raise ValueError(f"scores must be a non-empty array of shape (runs,) or (runs, tasks), got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("scores must be finite (no NaN or inf)")
    return x


def _trim_mean_rows(x: np.ndarray, proportion: float = TRIM) -> np.ndarray:
    """Trimmed mean of each row of ``x`` (shape (batch, n)) -> (batch,).

    Same operations as ``scipy.stats.trim_mean`` (partition at the two cut points, mean of the middle slice), so
    the result is bit-for-bit the same as scipy's on every row.
    """
    n = x.shape[-1]
    low = int(proportion * n)
    high = n - low
    part = np.partition(x, (low, high - 1), axis=-1)
    return np.mean(part[..., low:high], axis=-1)


def iqm(scores: Any) -> float:
    """Interquartile mean of all values in ``scores`` (any shape; typically (runs,) or (runs, tasks)).

    Equals ``scipy.stats.trim_mean(scores, 0.25, axis=None)``: sort the n values, drop ``int(0.25 n)`` from each
    end, average the rest.

    Raises:
        ValueError: empty input or a non-finite value.
    """
    x = _as_scores(np.ravel(np.asarray(scores, dtype=np.float64)))
    return float(_trim_mean_rows(x.ravel()[None, :])[0])


def stratified_bootstrap_iqm(
    scores: Any, reps: int = BOOTSTRAP_REPS, size: float = 0.95, seed: int | np.random.Generator | None = 0
) -> IntervalEstimate:
    """IQM of ``scores`` with its stratified percentile-bootstrap confidence interval (rliable's method).

    Args:
        scores: shape (runs, tasks) -- or (runs,) for one task -- of final scores (e.g. mean evaluation returns).
        reps: bootstrap replicates.
        size: coverage of the interval, in (0, 1); 0.95 gives the 2.5th and 97.5th percentiles.
        seed: seed (or Generator) of the resampling; fixed by default so that a summary is reproducible.
    Returns:
        ``IntervalEstimate(point=iqm(scores), low, high, size, reps)``.
    Raises:
        ValueError: empty or non-finite scores, ``reps < 1`` or ``size`` outside (0, 1).
    """
    x = _as_scores(scores)
    if not (isinstance(reps, (int, np.integer)) and reps >= 1):
        raise ValueError(f"reps must be an integer >= 1, got {reps!r}")
    if not 0.0 < float(size) < 1.0:
        raise ValueError(f"size must be in (0, 1), got {size!r}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    runs, tasks = x.shape
    task_index = np.arange(tasks)
    replicates = np.empty(int(reps), dtype=np.float64)
    chunk = max(1, _CHUNK_ELEMENTS // x.size)
    for start in range(0, int(reps), chunk):
        stop = min(int(reps), start + chunk)
        # Within each task (column) draw `runs` run indices with replacement, independently per task.
        idx = rng.integers(0, runs, size=(stop - start, runs, tasks))
        resampled = x[idx, task_index]  # (batch, runs, tasks)
        replicates[start:stop] = _trim_mean_rows(resampled.reshape(stop - start, runs * tasks))
    alpha = (1.0 - float(size)) / 2.0
    low, high = np.percentile(replicates, [100.0 * alpha, 100.0 * (1.0 - alpha)], method="linear")
    return IntervalEstimate(iqm(x), float(low), float(high), float(size), int(reps))


def median_or_none(values: Any) -> float | None:
    """Median of ``values`` where ``inf`` stands for "never" (e.g. a run that did not solve); None if the median
    itself is infinite (at least half the values are ``inf``) or there are no values."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return None
    m = float(np.median(v))
    return None if not np.isfinite(m) else m
