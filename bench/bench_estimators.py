"""Benchmark: every gradient estimator against exact (gridworld), reference (CartPole) and closed-form (toy) gradients.

One command regenerates the figures ``docs/estimators_*.png`` and the tables of ``docs/estimators.md`` (between its
``<!-- bench:start -->`` / ``<!-- bench:end -->`` markers)::

    python bench/bench_estimators.py            # full run (~15 min on the shared 2-core machine)
    python bench/bench_estimators.py --quick    # a fast subset (40-80 s); writes to /tmp, leaves docs/ alone

Settings (see ``agents/gradient_study.py`` for the estimators, objectives and statistics):

- gridworlds ``EmptyRoom-5x5`` and ``Cliff-4x12``, each with a ``GumbelPolicy`` (64, 64) tanh network over the
  one-hot cell and a tabular (n_cells, 4) logits policy, partially trained by exact-gradient Adam ascent
  (:func:`experiments.gradient_study.exact_ascent`) from their initialisation (network: ``torch.manual_seed(0)``; table:
  zeros) to a quarter of the way from the initial policy's return to the optimal return;
- CartPole: a (64, 64) network (seed 0) partially trained by REINFORCE
  (:func:`experiments.gradient_study.cartpole_ascent`) until the objective -- the shaped reward summed over 100
  steps without termination, at most 100 -- reaches 50,
  against a 100,000-episode REINFORCE reference (with a fitted state baseline);
- the REBAR/RELAX toy ``E[(b - 0.45)^2]``.

N-sweep: N in {1, 10, 100, 1000} episodes per estimate at tau = 1 with R = 1000, 300, 100, 20 repetitions.
Temperature sweep: tau in {0.1, 0.3, 1, 3, 10} at N = 100 with R = 50 (tau = 1 is the N-sweep's cell, R = 100).
CIs: percentile bootstrap over repetitions, 1000 resamples. One torch thread.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import gymnasium as gym  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from envs.maps import optimal_return  # noqa: E402
from experiments import gradient_study as gs  # noqa: E402
from gumbel_rl.estimators import PATHWISE_ESTIMATORS  # noqa: E402
from gumbel_rl.policy import GumbelPolicy  # noqa: E402

DOC = ROOT / "docs" / "estimators.md"
MARK_START, MARK_END = "<!-- bench:start -->", "<!-- bench:end -->"
SEED = 0
DPI = 130


@dataclass(frozen=True)
class Plan:
    """What one run measures."""

    maps: tuple[str, ...]
    kinds: tuple[str, ...]
    n_reps: dict[int, int]
    taus: tuple[float, ...]
    tau_reps: int
    tau_n: int
    ref_batches: int
    ref_episodes: int
    toy_thetas: int
    toy_samples: int
    toy_taus: tuple[float, ...]
    n_boot: int
    cartpole: bool
    ascent_episodes: int


FULL = Plan(
    maps=("gumbel_rl/EmptyRoom-5x5-v0", "gumbel_rl/Cliff-4x12-v0"),
    kinds=("network", "tabular"),
    n_reps={1: 1000, 10: 300, 100: 100, 1000: 20},
    taus=(0.1, 0.3, 1.0, 3.0, 10.0),
    tau_reps=50,
    tau_n=100,
    ref_batches=25,
    ref_episodes=4000,
    toy_thetas=41,
    toy_samples=20_000,
    toy_taus=(0.3, 1.0, 3.0),
    n_boot=1000,
    cartpole=True,
    ascent_episodes=2000,
)
QUICK = Plan(
    maps=("gumbel_rl/EmptyRoom-5x5-v0",),
    kinds=("tabular", "network"),
    n_reps={1: 200, 10: 50, 100: 20},
    taus=(0.3, 1.0, 3.0),
    tau_reps=20,
    tau_n=100,
    ref_batches=10,
    ref_episodes=1000,
    toy_thetas=17,
    toy_samples=4000,
    toy_taus=(1.0,),
    n_boot=300,
    cartpole=True,
    ascent_episodes=500,
)
CARTPOLE_TARGET = 50.0
"""CartPole's partial training stops once the objective (at most 100) reaches this."""
ZERO_VARIANCE = 1e-20
"""A variance below this times ||reference||^2 is rounding noise between identical estimates (argmax)."""
ASCENT_FRACTION = 0.25
"""Partial training stops a quarter of the way from the initial return to the optimal one."""

COLORS = {
    "relaxed": "tab:blue",
    "st-gumbel": "tab:orange",
    "argmax": "tab:red",
    "reinmax": "tab:purple",
    "gumbel-rao": "tab:brown",
    "reinforce": "tab:gray",
    "reinforce-baseline": "tab:green",
}


def short(env_id: str) -> str:
    return env_id.split("/")[-1].removesuffix("-v0")


def study_policy(env_id: str, kind: str) -> tuple[gs.Policy, dict[str, float]]:
    """The partially trained policy of a gridworld setting, and its returns (initial, trained, optimal)."""
    env = gym.make(env_id)
    if kind == "network":
        with torch.random.fork_rng():
            torch.manual_seed(SEED)
            policy: gs.Policy = GumbelPolicy(env.observation_space, env.action_space)
        lr = 1e-3
    else:
        policy = torch.zeros(env.observation_space.n, env.action_space.n)
        lr = 0.05
    _, j0 = gs.exact_gradient(policy, env_id)
    opt = optimal_return(env_id)
    policy, j, steps = gs.exact_ascent(policy, env_id, target=j0 + ASCENT_FRACTION * (opt - j0), lr=lr)
    return policy, {"initial": j0, "trained": j, "optimal": opt, "ascent_steps": steps}


def log_row(row: gs.StudyRow) -> None:
    tau = "-" if row.tau is None else f"{row.tau:g}"
    print(
        f"  {row.setting[-22:]:>22} {row.policy:8} {row.estimator:18} tau={tau:>4} N={row.n_episodes:<5} "
        f"R={row.repetitions:<5} bias {row.bias:.3g} [{row.bias_ci[0]:.3g}, {row.bias_ci[1]:.3g}] "
        f"var {row.variance:.3g} mse {row.mse:.3g} cos {row.cos_mean:+.3f} ({row.seconds:.1f}s)",
        flush=True,
    )


def run_setting(measure, plan: Plan, seed: int) -> list[gs.StudyRow]:
    """N-sweep at tau = 1 for every estimator, then the temperature sweep at N = tau_n (tau = 1 reused)."""
    rows = measure(
        estimators=gs.STUDY_ESTIMATORS,
        n_episodes=tuple(plan.n_reps),
        repetitions=plan.n_reps,
        taus=(1.0,),
        seed=seed,
        n_boot=plan.n_boot,
        progress=log_row,
    )
    rows += measure(
        estimators=PATHWISE_ESTIMATORS,
        n_episodes=(plan.tau_n,),
        repetitions=plan.tau_reps,
        taus=tuple(t for t in plan.taus if t != 1.0),
        seed=seed,
        n_boot=plan.n_boot,
        progress=log_row,
    )
    return rows


# ---------------------------------------------------------------------------------------------- toy
def run_toy(plan: Plan, seed: int) -> dict:
    theta = torch.linspace(-4.0, 4.0, plan.toy_thetas, dtype=torch.float64)
    exact = gs.toy_exact_gradient(theta)
    curves = {}
    for est in gs.STUDY_ESTIMATORS:
        for tau in (None,) if est in gs.SCORE_ESTIMATORS else plan.toy_taus:
            g = gs.toy_gradients(
                est, theta, plan.toy_samples, 1.0 if tau is None else tau, seed=gs._cell_seed(seed, "toy", est, tau)
            )
            mean, se = g.mean(1), g.std(1) / math.sqrt(plan.toy_samples)
            curves[(est, tau)] = {"mean": mean, "se": se, "var": g.var(1)}
    return {"theta": theta, "exact": exact, "curves": curves}


def wrong_sign_ranges(theta: torch.Tensor, exact: torch.Tensor, mean: torch.Tensor, se: torch.Tensor) -> str:
    """Theta ranges where the 95% interval of the mean lies entirely on the other side of zero from the exact."""
    wrong = (torch.sign(exact) * (mean + torch.sign(exact) * 1.96 * se) < 0).tolist()
    runs, start = [], None
    for i, w in enumerate([*wrong, False]):
        if w and start is None:
            start = i
        if not w and start is not None:
            runs.append(f"[{theta[start]:.1f}, {theta[i - 1]:.1f}]")
            start = None
    return ", ".join(runs) if runs else "none"


# ---------------------------------------------------------------------------------------------- figures
def plot_mse(groups: dict[str, list[gs.StudyRow]], path: Path) -> None:
    names = list(groups)
    cols = 3
    fig, axes = plt.subplots(math.ceil(len(names) / cols), cols, figsize=(15, 4.3 * math.ceil(len(names) / cols)))
    axes = np.atleast_1d(axes).ravel()
    for ax, name in zip(axes, names, strict=False):
        rows = [r for r in groups[name] if r.tau in (None, 1.0)]
        for est in gs.STUDY_ESTIMATORS:
            rs = sorted((r for r in rows if r.estimator == est), key=lambda r: r.n_episodes)
            if not rs:
                continue
            n = [r.n_episodes for r in rs]
            mse = np.array([r.mse for r in rs])
            lo = np.array([r.mse_ci[0] for r in rs])
            hi = np.array([r.mse_ci[1] for r in rs])
            yerr = [np.maximum(mse - lo, 0), np.maximum(hi - mse, 0)]  # ~0-width CIs can round to below 0
            ax.errorbar(n, mse, yerr=yerr, marker="o", ms=4, capsize=3, label=est, color=COLORS[est])
        ref2 = rows[0].reference_norm ** 2
        ax.axhline(ref2, color="k", ls=":", lw=1, label="||reference||^2 (zero gradient)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("episodes per estimate N")
        ax.set_ylabel("MSE  E||g - reference||^2")
        ax.set_title(name, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    for ax in axes[len(names) :]:
        ax.axis("off")
    axes[0].legend(fontsize=7)
    fig.suptitle("MSE of the gradient estimate against N (tau = 1); error bars: 95% bootstrap CI", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def plot_temperature(groups: dict[str, list[gs.StudyRow]], tau_n: int, path: Path) -> None:
    """Bias and variance against tau, log-log. A bias whose 95% CI reaches 0 is drawn as an open triangle at its
    upper bound ("no more than this"); a variance below 1e-20 ||reference||^2 (argmax on a deterministic map: no
    randomness at all) is left out and named in the legend."""
    names = list(groups)
    fig, axes = plt.subplots(len(names), 2, figsize=(11, 3.2 * len(names)), squeeze=False)
    for i, name in enumerate(names):
        rows = [r for r in groups[name] if r.n_episodes == tau_n]
        ref = rows[0].reference_norm
        for j, stat in enumerate(("bias", "variance")):
            ax = axes[i, j]
            for est in PATHWISE_ESTIMATORS:
                rs = sorted((r for r in rows if r.estimator == est), key=lambda r: r.tau)
                taus = np.array([r.tau for r in rs])
                val = np.array([getattr(r, stat) for r in rs])
                ci = np.array([getattr(r, stat + "_ci") for r in rs])
                if stat == "bias":
                    resolved = ci[:, 0] > 0
                    ax.plot(taus, np.where(resolved, val, ci[:, 1]), color=COLORS[est], lw=1, alpha=0.6)
                    yerr = np.clip([val - ci[:, 0], ci[:, 1] - val], 0, None)[:, resolved]
                    ax.errorbar(
                        taus[resolved], val[resolved], yerr=yerr, fmt="o", ms=4, capsize=2, color=COLORS[est], label=est
                    )
                    ax.plot(taus[~resolved], ci[~resolved, 1], "v", mfc="none", color=COLORS[est], ms=6)
                else:
                    keep = val > ZERO_VARIANCE * ref**2
                    label = est if keep.all() else f"{est} (0 where missing)"
                    ax.plot(taus[keep], val[keep], marker="o", ms=4, color=COLORS[est], label=label)
                    ax.fill_between(taus[keep], ci[keep, 0], ci[keep, 1], color=COLORS[est], alpha=0.15)
            for est, ls in zip(gs.SCORE_ESTIMATORS, ("--", "-."), strict=True):
                rs = [r for r in rows if r.estimator == est]
                if rs and stat == "variance":
                    ax.axhline(rs[0].variance, color=COLORS[est], ls=ls, lw=1, label=f"{est} (no tau)")
            if stat == "bias":
                ax.axhline(ref, color="k", ls=":", lw=1, label="||reference||")
                ax.set_title(f"{name}: bias norm, N = {tau_n} (open v: CI upper bound)", fontsize=9)
            else:
                ax.set_title(f"{name}: variance tr(Cov) of one estimate, N = {tau_n}", fontsize=9)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xticks(sorted({r.tau for r in rows if r.tau is not None}))
            ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            ax.set_xlabel("temperature tau")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def plot_toy(toy: dict, path: Path) -> None:
    theta, exact, curves = toy["theta"].numpy(), toy["exact"].numpy(), toy["curves"]
    fig, axes = plt.subplots(2, 4, figsize=(16, 7.5), sharex=True)
    axes = axes.ravel()
    for ax, est in zip(axes, gs.STUDY_ESTIMATORS, strict=False):
        ax.plot(theta, exact, color="k", lw=2, label="exact")
        taus = sorted((tau for (e, tau) in curves if e == est), key=lambda t: abs(math.log(t or 1.0)))
        for tau, alpha in zip(taus, (1.0, 0.55, 0.35), strict=False):  # tau = 1 (or none) boldest
            c = curves[(est, tau)]
            m, hw = c["mean"].numpy(), 1.96 * c["se"].numpy()
            label = "mean estimate" if tau is None else f"tau = {tau:g}"
            line = ax.plot(theta, m, color=COLORS[est], alpha=alpha, label=label)[0]
            ax.fill_between(theta, m - hw, m + hw, color=line.get_color(), alpha=0.2 * alpha)
        ax.axhline(0, color="gray", lw=0.8)
        ax.set_title(est)
        ax.set_xlabel("theta")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    axes[-1].axis("off")
    axes[-1].text(
        0.0,
        0.5,
        "d/dtheta E[(b - 0.45)^2],\nb ~ Bernoulli(sigmoid(theta))\n\nexact: sigmoid'(theta) * 0.1 > 0\n"
        "band: 95% CI of the mean\n(normal, 1.96 SE)",
        fontsize=11,
        va="center",
    )
    fig.suptitle("REBAR / RELAX toy: mean gradient estimate vs theta", fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- tables
def fmt(x: float) -> str:
    return f"{x:.3g}" if x != 0 else "0"


def fmt_ci(ci: tuple[float, float]) -> str:
    return f"[{fmt(ci[0])}, {fmt(ci[1])}]"


def rows_table(rows: list[gs.StudyRow], show_tau: bool = True) -> str:
    head = (
        "| estimator | tau | N | R | bias [95% CI] | bias / norm | noise floor | variance [95% CI] | MSE [95% CI] "
        "| cos(mean, e) | mean cos | P(ascent) |"
    )
    lines = [head, "|---|---:|---:|---:|---|---:|---:|---|---|---:|---:|---:|"]
    for r in rows:
        tau = "-" if r.tau is None else f"{r.tau:g}"
        if r.variance <= ZERO_VARIANCE * r.reference_norm**2:  # identical estimates up to rounding
            variance, floor = "0 (deterministic)", "0"
        else:
            variance, floor = f"{fmt(r.variance)} {fmt_ci(r.variance_ci)}", fmt(r.noise_floor)
        lines.append(
            f"| {r.estimator} | {tau} | {r.n_episodes} | {r.repetitions} | {fmt(r.bias)} {fmt_ci(r.bias_ci)} "
            f"| {r.bias / r.reference_norm:.3f} | {floor} | {variance} "
            f"| {fmt(r.mse)} {fmt_ci(r.mse_ci)} | {r.cos_mean:+.3f} | {r.mean_cos:+.3f} | {r.ascent:.2f} |"
        )
    return "\n".join(lines)


def toy_table(toy: dict) -> str:
    theta, exact, curves = toy["theta"], toy["exact"], toy["curves"]
    picks = [int(i) for i in torch.linspace(0, len(theta) - 1, 5).round().long()]
    cols = " | ".join(f"theta = {round(float(theta[i]), 2) + 0.0:g}" for i in picks)
    head = f"| estimator | tau | {cols} | wrong sign (95%) at theta in |"
    lines = [head, "|---|---:|" + "---:|" * len(picks) + "---|"]
    lines.append("| **exact** | - | " + " | ".join(f"{exact[i]:+.4f}" for i in picks) + " | - |")
    for (est, tau), c in curves.items():
        vals = " | ".join(f"{c['mean'][i]:+.4f} ± {1.96 * c['se'][i]:.4f}" for i in picks)
        t = "-" if tau is None else f"{tau:g}"
        lines.append(f"| {est} | {t} | {vals} | {wrong_sign_ranges(theta, exact, c['mean'], c['se'])} |")
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        cpu = re.search(r"Model name:\s*(.+)", out).group(1).strip()
    except (OSError, AttributeError, subprocess.SubprocessError):
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "?"
    load = ", ".join(f"{x:.1f}" for x in __import__("os").getloadavg())
    return (
        f"{cpu}; torch {torch.__version__}, Python {platform.python_version()}, 1 torch thread; "
        f"commit {commit}; load average at the end {load}"
    )


def report(plan: Plan, settings: dict, groups: dict, toy: dict, ref: gs.Reference | None, times: dict) -> str:
    out = [f"Run: `python bench/bench_estimators.py` (seed {SEED}); total {times['total']:.0f} s on {machine()}."]
    out.append("Section times: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items() if k != "total") + ".")
    out.append("")
    out.append("Policies (exact expected return J of the start distribution, finite horizon = time limit):")
    out.append("")
    out.append("| setting | D (parameters) | J initial | J studied | J optimal | ascent steps | norm of the gradient |")
    out.append("|---|---:|---:|---:|---:|---:|---:|")
    for name, s in settings.items():
        if "value_se" in s:  # CartPole: Monte Carlo values; the optimum is unknown (<= 100: upright and centred)
            j = f"{s['trained']:.1f} ± {1.96 * s['value_se']:.1f}"
            out.append(
                f"| {name} | {s['dim']} | {s['initial']:.0f} | {j} | <= {s['optimal']:.0f} | {s['ascent_steps']} "
                f"| {s['norm']:.4g} |"
            )
            continue
        out.append(
            f"| {name} | {s['dim']} | {s['initial']:.3f} | {s['trained']:.3f} | {s['optimal']:.3f} "
            f"| {s['ascent_steps']} | {s['norm']:.4g} |"
        )
    if ref is not None:
        out.append("")
        out.append(
            f"CartPole reference: {ref.episodes:,} episodes of `reinforce-baseline` in {ref.seconds:.0f} s; "
            f"||reference|| = {ref.gradient.norm():.4g}, its standard error (norm) {ref.se_norm:.3g} "
            f"({ref.se_norm / float(ref.gradient.norm()):.1%} of the norm)."
        )
    out.append("")
    out.append("### Every estimator at N = 100, tau = 1")
    for name, rows in groups.items():
        out.append("")
        out.append(f"**{name}**")
        out.append("")
        out.append(rows_table([r for r in rows if r.n_episodes == 100 and r.tau in (None, 1.0)]))
    out.append("")
    out.append("### N sweep (tau = 1)")
    for name, rows in groups.items():
        out.append("")
        out.append(f"<details><summary>{name}</summary>\n")
        out.append(
            rows_table(
                sorted(
                    (r for r in rows if r.tau in (None, 1.0)),
                    key=lambda r: (gs.STUDY_ESTIMATORS.index(r.estimator), r.n_episodes),
                )
            )
        )
        out.append("\n</details>")
    out.append("")
    out.append(f"### Temperature sweep (N = {plan.tau_n})")
    for name, rows in groups.items():
        out.append("")
        out.append(f"<details><summary>{name}</summary>\n")
        out.append(
            rows_table(
                sorted(
                    (r for r in rows if r.n_episodes == plan.tau_n and r.tau is not None),
                    key=lambda r: (gs.STUDY_ESTIMATORS.index(r.estimator), r.tau),
                )
            )
        )
        out.append("\n</details>")
    out.append("")
    out.append(f"### Toy: mean estimate ± 95% half-width ({plan.toy_samples:,} single-sample estimates per theta)")
    out.append("")
    out.append(toy_table(toy))
    return "\n".join(out)


def update_doc(text: str) -> None:
    doc = DOC.read_text()
    if MARK_START not in doc or MARK_END not in doc:
        raise SystemExit(f"{DOC} lacks the {MARK_START} / {MARK_END} markers; not updating it")
    head, rest = doc.split(MARK_START, 1)
    _, tail = rest.split(MARK_END, 1)
    DOC.write_text(f"{head}{MARK_START}\n{text}\n{MARK_END}{tail}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fast subset; writes to --out (default /tmp/...)")
    parser.add_argument("--out", type=Path, default=None, help="folder for the figures (default docs/)")
    parser.add_argument("--json", type=Path, default=None, help="also write every row to this JSON file")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite the tables in docs/estimators.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    plan = QUICK if args.quick else FULL
    out = args.out or (Path("/tmp/bench_estimators_quick") if args.quick else ROOT / "docs")
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    times: dict[str, float] = {}
    groups: dict[str, list[gs.StudyRow]] = {}
    settings: dict[str, dict] = {}

    for env_id in plan.maps:
        for kind in plan.kinds:
            t0 = time.perf_counter()
            name = f"{short(env_id)}, {kind}"
            policy, info = study_policy(env_id, kind)
            exact, _ = gs.exact_gradient(policy, env_id)
            settings[name] = {**info, "dim": exact.numel(), "norm": float(exact.norm())}
            print(
                f"{name}: J {info['initial']:.3f} -> {info['trained']:.3f} (optimal {info['optimal']:.3f}), "
                f"D = {exact.numel()}, ||exact|| = {float(exact.norm()):.4g}",
                flush=True,
            )
            groups[name] = run_setting(
                lambda **kw: gs.measure_estimators(policy, env_id, **kw),  # noqa: B023 (called in this iteration)
                plan,
                SEED,
            )
            times[name] = time.perf_counter() - t0

    ref = None
    if plan.cartpole:
        t0 = time.perf_counter()
        cp = gs.cartpole_policy(SEED)
        initial, _ = gs.cartpole_objective(cp, seed=SEED)
        _, ascent_steps = gs.cartpole_ascent(cp, CARTPOLE_TARGET, episodes=plan.ascent_episodes, seed=SEED)
        print(
            f"CartPole: objective {initial:.1f} -> {gs.cartpole_objective(cp, seed=SEED)[0]:.1f} "
            f"after {ascent_steps} REINFORCE steps",
            flush=True,
        )
        ref = gs.cartpole_reference(cp, plan.ref_episodes, plan.ref_batches)
        print(f"CartPole reference: ||ref|| {ref.gradient.norm():.4g}, SE {ref.se_norm:.3g} ({ref.seconds:.0f}s)")
        name = "CartPole-v1 shaped, network"
        value, value_se = gs.cartpole_objective(cp, seed=SEED)
        settings[name] = {
            "initial": initial,
            "trained": value,
            "optimal": float(gs.CARTPOLE_HORIZON),
            "ascent_steps": ascent_steps,
            "dim": ref.gradient.numel(),
            "norm": float(ref.gradient.norm()),
            "value_se": value_se,
        }
        groups[name] = run_setting(lambda **kw: gs.measure_cartpole(cp, ref, **kw), plan, SEED)
        times["CartPole"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    toy = run_toy(plan, SEED)
    times["toy"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    plot_mse(groups, out / "estimators_mse.png")
    plot_temperature(groups, plan.tau_n, out / "estimators_temperature.png")
    plot_toy(toy, out / "estimators_toy.png")
    times["figures"] = time.perf_counter() - t0
    times["total"] = time.perf_counter() - start

    text = report(plan, settings, groups, toy, ref, times)
    print()
    print(text)
    if args.json:
        args.json.write_text(json.dumps({name: [r.to_dict() for r in rows] for name, rows in groups.items()}, indent=1))
    if not args.quick and not args.no_doc and args.out is None:
        update_doc(text)
        print(f"\nupdated the tables in {DOC.relative_to(ROOT)}")
    print(f"figures in {out}; total {times['total']:.0f} s")


if __name__ == "__main__":
    main()
