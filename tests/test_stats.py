"""Tests for experiments.stats: the IQM and its stratified bootstrap CI against numbers computed with rliable 1.2.0.

Reference: rliable 1.2.0 (arch 7.2.0, pandas 2), scores of shape (runs, tasks),
``rly.library.get_interval_estimates({"x": scores}, lambda s: np.array([rly.metrics.aggregate_iqm(s)]),
reps=50000)``.

Monte-Carlo tolerance of the CI bounds: 2% of the reference interval's width. Our bounds with bootstrap seeds
0..39 deviated from the reference by at most 1.05% (A) and 1.35% (B) of the width (the reference is itself one
Monte-Carlo draw; the bounds' standard deviation across our seeds is 0.17-0.19 for A, 0.42-0.70 for B).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from experiments.stats import IntervalEstimate, iqm, median_or_none, stratified_bootstrap_iqm

A = [
    [410.1, 389.4], [451.2, 408.4], [357.1, 428.9], [504.3, 475.8], [343.7, 298.8],
    [350.1, 403.3], [214.0, 382.5], [300.3, 341.4], [356.5, 374.7], [432.9, 483.4],
]  # fmt: skip
B = [[14.2, 62.1], [335.3, 323.6], [307.7, 191.8], [498.6, 490.4], [342.8, 325.2], [344.2, 194.5], [67.5, 360.7]]
REFERENCE = {"A": (A, 386.1, 357.74, 418.61), "B": (B, 295.6375, 189.9625, 361.6875)}
CI_TOLERANCE = 0.02  # fraction of the reference CI width


@pytest.mark.parametrize("name", ["A", "B"])
def test_iqm_matches_scipy_trim_mean_exactly_and_rliable(name):
    scores, ref_iqm, _, _ = REFERENCE[name]
    assert iqm(scores) == scipy.stats.trim_mean(np.asarray(scores), 0.25, axis=None)
    assert iqm(scores) == pytest.approx(ref_iqm, abs=1e-9)


@pytest.mark.parametrize("name", ["A", "B"])
def test_bootstrap_ci_agrees_with_rliable_within_monte_carlo_error(name):
    scores, ref_iqm, ref_low, ref_high = REFERENCE[name]
    est = stratified_bootstrap_iqm(scores, reps=50_000, seed=0)
    assert isinstance(est, IntervalEstimate)
    assert est.point == iqm(scores)
    width = ref_high - ref_low
    assert abs(est.low - ref_low) <= CI_TOLERANCE * width, (est.low, ref_low)
    assert abs(est.high - ref_high) <= CI_TOLERANCE * width, (est.high, ref_high)
    assert (est.size, est.reps) == (0.95, 50_000)


def test_bootstrap_equals_a_plain_loop_over_replicates():
    """The vectorised bootstrap is exactly the textbook loop: per replicate, per task, draw run indices with
    replacement (same generator stream), take scipy's trim_mean, then linear-interpolated 2.5/97.5 percentiles."""
    scores = np.asarray(B)
    runs, tasks = scores.shape
    reps = 300
    rng = np.random.default_rng(7)
    loop = []
    for _ in range(reps):
        idx = rng.integers(0, runs, size=(runs, tasks))
        loop.append(scipy.stats.trim_mean(scores[idx, np.arange(tasks)], 0.25, axis=None))
    low, high = np.percentile(loop, [2.5, 97.5])
    est = stratified_bootstrap_iqm(scores, reps=reps, seed=7)
    assert est.low == pytest.approx(low, abs=1e-12)
    assert est.high == pytest.approx(high, abs=1e-12)


def test_bootstrap_resamples_within_tasks():
    """Task 0 scores 0, task 1 scores 100 in every run: a stratified resample always keeps half of each, so the IQM
    never moves (an unstratified bootstrap over all 16 values would)."""
    scores = np.column_stack([np.zeros(8), np.full(8, 100.0)])
    est = stratified_bootstrap_iqm(scores, reps=2_000, seed=1)
    assert est.point == est.low == est.high == 50.0


def test_one_task_vector_same_as_column():
    x = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0])
    assert stratified_bootstrap_iqm(x, reps=1000, seed=3) == stratified_bootstrap_iqm(x[:, None], reps=1000, seed=3)
    assert iqm(x) == pytest.approx(np.mean([2.0, 3.0, 4.0, 5.0]))  # 8 values: drop 2 from each end


def test_bootstrap_is_reproducible_and_seed_dependent():
    a = stratified_bootstrap_iqm(A, reps=5_000, seed=11)
    assert a == stratified_bootstrap_iqm(A, reps=5_000, seed=11)
    assert a != stratified_bootstrap_iqm(A, reps=5_000, seed=12)
    assert a.low < a.point < a.high


def test_median_or_none_counts_inf_as_never():
    assert median_or_none([100.0, 300.0, np.inf]) == 300.0
    assert median_or_none([100.0, np.inf]) is None
    assert median_or_none([]) is None


@pytest.mark.parametrize(
    "scores, kwargs, match",
    [
        ([], {}, "non-empty"),
        ([1.0, np.nan], {}, "finite"),
        ([[[1.0]]], {}, "shape"),
        ([1.0, 2.0], {"reps": 0}, "reps"),
        ([1.0, 2.0], {"size": 1.0}, "size"),
    ],
)
def test_bad_input_raises_one_line_value_error(scores, kwargs, match):
    with pytest.raises(ValueError, match=match):
        stratified_bootstrap_iqm(scores, **kwargs)
