"""Learning-curve figures: one run's ``curve.png`` and a comparison's ``curves.png`` (median and IQR over seeds).

Both are drawn on a bare ``matplotlib.figure.Figure`` (no pyplot, so no GUI backend: works on a headless machine)
and written atomically (a temporary PNG renamed over the target), so a crash never leaves a half-written image.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agents.base import EVAL_MEAN, EVAL_STD, SECONDS, STEPS
from gumbel_rl.files import atomic_path


def _figure(ncols: int, width: float):
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure state

    fig = Figure(figsize=(width, 4.0), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def _save(fig: Any, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return Path(path)


def eval_points(record: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """The evaluation rows of a record (rows with ``eval/mean_reward``) as arrays, one entry per evaluation:
    ``time/total_timesteps``, ``time/train_seconds`` (NaN where missing), ``eval/mean_reward`` and
    ``eval/std_reward`` (0 where missing)."""
    rows = [r for r in record if r.get(EVAL_MEAN) is not None]
    return {
        STEPS: np.array([float(r[STEPS]) for r in rows]),
        SECONDS: np.array([float(r.get(SECONDS, np.nan)) for r in rows]),
        EVAL_MEAN: np.array([float(r[EVAL_MEAN]) for r in rows]),
        EVAL_STD: np.array([float(r.get(EVAL_STD) or 0.0) for r in rows]),
    }


def plot_learning_curve(
    record: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    title: str,
    threshold: float | None = None,
    solve_env_steps: int | None = None,
    final: tuple[int, float, float, int] | None = None,
) -> Path:
    """Write ``curve.png``: greedy evaluation return (mean +- std over the eval episodes) against env steps, with
    the reward threshold as a dashed line, the solve point marked, and ``final = (env_steps, mean, std, episodes)``
    (the final evaluation) as a point with an error bar."""
    pts = eval_points(record)
    fig, (ax,) = _figure(1, 6.4)
    steps, mean, std = pts[STEPS], pts[EVAL_MEAN], pts[EVAL_STD]
    if len(mean):
        ax.plot(steps, mean, marker="o", markersize=3, color="C0", label="eval return (greedy)")
        ax.fill_between(steps, mean - std, mean + std, color="C0", alpha=0.2, lw=0)
    if final is not None:
        f_steps, f_mean, f_std, episodes = final
        ax.errorbar(
            [f_steps],
            [f_mean],
            yerr=[f_std],
            fmt="*",
            ms=10,
            color="C3",
            capsize=3,
            label=f"final ({episodes} episodes)",
        )
    if threshold is not None:
        ax.axhline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:g}")
    if solve_env_steps is not None:
        ax.axvline(solve_env_steps, color="C2", ls=":", lw=1.2, label=f"solved at {solve_env_steps:,} steps")
    ax.set_xlabel("env steps")
    ax.set_ylabel("return")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return _save(fig, path)


def median_iqr(
    curves: Sequence[tuple[np.ndarray, np.ndarray]], points: int = 200
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Median and interquartile range across runs of curves sampled at different x.

    Each curve ``(x, y)`` (x increasing) is linearly interpolated onto a common grid of ``points`` values from the
    smallest first x to the largest last x. Before its first x a run has no value; after its last x it keeps its
    last value (a run that finished sooner -- e.g. on the wall clock -- stays at its final performance). Returns
    ``(grid, median, q25, q75)`` over the grid points covered by at least one run.
    """
    curves = [(np.asarray(x, float), np.asarray(y, float)) for x, y in curves if len(x)]
    if not curves:
        empty = np.zeros(0)
        return empty, empty, empty, empty
    lo = min(float(x[0]) for x, _ in curves)
    hi = max(float(x[-1]) for x, _ in curves)
    grid = np.linspace(lo, hi, points) if hi > lo else np.array([lo])
    ys = np.full((len(curves), len(grid)), np.nan)
    for i, (x, y) in enumerate(curves):
        started = grid >= x[0]
        ys[i, started] = np.interp(grid[started], x, y)
    covered = np.isfinite(ys).any(axis=0)
    ys, grid = ys[:, covered], grid[covered]
    med = np.nanmedian(ys, axis=0)
    q25, q75 = np.nanpercentile(ys, [25, 75], axis=0)
    return grid, med, q25, q75


def plot_comparison(
    curves: Mapping[str, Sequence[Mapping[str, np.ndarray]]],
    path: str | os.PathLike,
    title: str,
    threshold: float | None = None,
) -> Path:
    """Write ``curves.png``: per method (one colour each), the median across seeds of the greedy evaluation
    return with its IQR shaded, against env steps (left) and training wall-clock seconds (right).

    Args:
        curves: method -> one :func:`eval_points` dict per seed (``time/total_timesteps``, ``time/train_seconds``,
            ``eval/mean_reward`` used).
    """
    fig, axes = _figure(2, 11.0)
    for i, (method, runs) in enumerate(curves.items()):
        color = f"C{i % 10}"
        for ax, xkey in zip(axes, (STEPS, SECONDS), strict=True):
            grid, med, q25, q75 = median_iqr([(r[xkey], r[EVAL_MEAN]) for r in runs])
            if not len(grid):
                continue
            ax.plot(grid, med, color=color, lw=1.6, label=f"{method} (n={len(runs)})")
            ax.fill_between(grid, q25, q75, color=color, alpha=0.2, lw=0)
    for ax, xlabel in zip(axes, ("env steps", "training wall-clock (s)"), strict=True):
        if threshold is not None:
            ax.axhline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:g}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("return (median, IQR shaded)")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)
