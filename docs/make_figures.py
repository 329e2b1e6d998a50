"""Draw the seed note's two figures into ``docs/``: the Gumbel PDF and Gumbel-Softmax samples by temperature.

Run ``python docs/make_figures.py`` (from anywhere; it writes next to itself):

- ``gumbel_pdf.png``: ``gumbel_rl.gumbel_pdf`` for several (mu, beta), with a histogram of
  ``gumbel_rl.gumbel_noise`` samples overlaid on the standard curve, so the figure also checks sampler vs formula.
- ``gumbel_softmax_temperatures.png``: for two logit vectors (the seed's nearly deterministic
  ``[-20, 10, 9.6, 6.2]`` and the milder ``log([0.1, 0.2, 0.3, 0.4])``) and tau in {0.1, 0.5, 1, 2, 10}, the mean
  Gumbel-Softmax sample (its expected value) against the softmax probabilities, and three individual samples.

Fixed seed, Agg backend, 150 dpi.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import gumbel_rl  # noqa: E402

HERE = Path(__file__).resolve().parent
SEED = 0
DPI = 150

PDF_PARAMS: tuple[tuple[float, float], ...] = ((0.0, 1.0), (0.0, 2.0), (1.0, 2.0), (3.0, 4.0))
"""(mu, beta) pairs drawn in the PDF figure; the first is the standard Gumbel."""

TAUS: tuple[float, ...] = (0.1, 0.5, 1.0, 2.0, 10.0)
LOGIT_VECTORS: tuple[tuple[str, list[float]], ...] = (
    ("seed logits v = [-20, 10, 9.6, 6.2]", [-20.0, 10.0, 9.6, 6.2]),
    ("logits log([0.1, 0.2, 0.3, 0.4])", [math.log(p) for p in (0.1, 0.2, 0.3, 0.4)]),
)
N_MEAN_DRAWS = 20_000
N_SHOWN_SAMPLES = 3


def plot_gumbel_pdf(path: Path, n_samples: int = 200_000) -> Path:
    """Write the PDF figure to ``path`` (PNG) and return ``path``."""
    generator = torch.Generator().manual_seed(SEED)
    x = torch.linspace(-5.0, 20.0, 1001, dtype=torch.float64)
    fig, ax = plt.subplots(figsize=(7.0, 4.3))
    colors = plt.get_cmap("tab10").colors
    g = gumbel_rl.gumbel_noise((n_samples,), dtype=torch.float64, generator=generator).numpy()
    ax.hist(
        g,
        bins=np.arange(-5.0, 20.0 + 1e-9, 0.25),
        density=True,
        color=colors[0],
        alpha=0.25,
        label=f"histogram of {n_samples:,} gumbel_noise samples (mu=0, beta=1)",
    )
    for i, (mu, beta) in enumerate(PDF_PARAMS):
        y = gumbel_rl.gumbel_pdf(x, mu=mu, beta=beta).numpy()
        ax.plot(x.numpy(), y, color=colors[i], lw=2.0, label=f"gumbel_pdf, mu={mu:g}, beta={beta:g}")
    ax.set_xlim(-5.0, 20.0)
    ax.set_ylim(0.0, 0.42)
    ax.set_xlabel("x")
    ax.set_ylabel("density f(x; mu, beta)")
    ax.set_title("Gumbel PDF  f = exp(-(z + exp(-z))) / beta,  z = (x - mu) / beta")
    ax.text(
        0.98,
        0.55,
        f"sample mean {g.mean():.4f} (Euler gamma {gumbel_rl.EULER_GAMMA:.4f})\n"
        f"sample variance {g.var():.4f} (pi^2/6 = {math.pi**2 / 6:.4f})",
        transform=ax.transAxes,
        ha="right",
        va="top",
        fontsize=8.5,
    )
    ax.legend(fontsize=8.5, loc="upper right", frameon=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_gumbel_softmax_temperatures(path: Path) -> Path:
    """Write the temperature figure to ``path`` (PNG) and return ``path``.

    Layout: for each logit vector two rows; the first shows the mean of ``N_MEAN_DRAWS`` relaxed samples (bars) and
    ``softmax(logits)`` (black ticks), the second ``N_SHOWN_SAMPLES`` individual samples (grouped bars, the same
    noise at every temperature so the columns differ only by tau).
    """
    fig = plt.figure(figsize=(13.0, 9.6))
    subfigs = fig.subfigures(len(LOGIT_VECTORS), 1, hspace=0.04)
    sample_colors = ("#d62728", "#2ca02c", "#9467bd")
    for v_idx, (name, values) in enumerate(LOGIT_VECTORS):
        sub = subfigs[v_idx]
        axes = sub.subplots(2, len(TAUS), sharey=True, sharex=True)
        logits = torch.tensor(values, dtype=torch.float64)
        n = logits.numel()
        classes = np.arange(n)
        probs = torch.softmax(logits, -1)
        generator = torch.Generator().manual_seed(SEED + v_idx)
        # Same noise for every tau: y(tau) = softmax((logits + g) / tau).
        noise = gumbel_rl.gumbel_noise((N_MEAN_DRAWS, n), dtype=torch.float64, generator=generator)
        for t_idx, tau in enumerate(TAUS):
            y = torch.softmax((logits + noise) / tau, dim=-1).numpy()
            ax = axes[0, t_idx]
            ax.bar(classes, y.mean(0), width=0.7, color="#1f77b4", alpha=0.8, label="mean sample E[y]")
            ax.scatter(
                classes,
                probs.numpy(),
                marker="_",
                s=600,
                linewidths=2.5,
                color="black",
                zorder=3,
                label="softmax(logits)",
            )
            ax.set_title(f"tau = {tau:g}", fontsize=11)
            ax = axes[1, t_idx]
            width = 0.8 / N_SHOWN_SAMPLES
            for s in range(N_SHOWN_SAMPLES):
                offset = (s - (N_SHOWN_SAMPLES - 1) / 2) * width
                ax.bar(classes + offset, y[s], width=width, color=sample_colors[s], label=f"sample {s + 1}")
        axes[0, 0].set_ylabel(f"mean of {N_MEAN_DRAWS:,}")
        axes[1, 0].set_ylabel(f"{N_SHOWN_SAMPLES} single samples")
        for ax in axes.flat:
            ax.set_xticks(classes)
            ax.set_ylim(0.0, 1.05)
            ax.set_yticks([0.0, 0.25, 0.5, 0.75, 1.0])
            ax.grid(axis="y", alpha=0.3)
        for ax in axes[-1]:
            ax.set_xlabel("class")
        probs_text = ", ".join(f"{p:.3f}" for p in probs.tolist())
        sub.suptitle(f"{name}   (softmax = [{probs_text}])", fontsize=12, fontweight="bold")
        if v_idx == 0:
            handles, labels = axes[0, 0].get_legend_handles_labels()
            h2, l2 = axes[1, 0].get_legend_handles_labels()
    fig.legend(handles + h2, labels + l2, loc="lower center", ncol=5, frameon=False, fontsize=10)
    for sub in subfigs:
        sub.subplots_adjust(
            left=0.06, right=0.99, top=0.88, bottom=0.17 if sub is subfigs[-1] else 0.08, hspace=0.25, wspace=0.08
        )
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def main() -> None:
    """Write both figures into the directory of this script and print their paths and sizes."""
    for path in (
        plot_gumbel_pdf(HERE / "gumbel_pdf.png"),
        plot_gumbel_softmax_temperatures(HERE / "gumbel_softmax_temperatures.png"),
    ):
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
