"""Benchmark: hard Gumbel-Softmax samples per second, ``gumbel_rl.gumbel_softmax`` vs ``torch.nn.functional``.

Both implementations draw ``hard=True`` (straight-through) samples of a ``(batch, classes)`` logit tensor at
``tau = 1``; ours runs with its default validation on, as users get it. Two modes:

- ``sample``: the logits do not require grad (what acting costs);
- ``train``: the logits require grad; forward plus backward of ``(y * w).sum()`` for a fixed random ``w``.

Method: for each shape the two implementations alternate within every repeat (A B, then B A, ...) so machine noise
hits both alike; each is warmed up, every timing runs enough calls to last >= ``--min-time`` seconds (default
0.02), and the reported figure is the median over the repeats (>= 5). The ratio ours/torch is the median of the
per-repeat paired ratios (> 1: ours is faster). On CUDA every timing is bracketed by ``torch.cuda.synchronize()``.

Outputs are checked for NaN/inf outside the timed region: every warm-up output and the last output of every timed
block (for the big shapes, where a block is one call, that is every draw).

Run ``python bench/bench_gumbel.py`` (full grid, ~5 minutes on 2 CPU cores), ``--quick`` for a subset,
``--device cpu|cuda|auto``, ``--threads N``, ``--json PATH`` to dump the raw timings.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import gumbel_rl  # noqa: E402

BATCHES: tuple[int, ...] = (1, 64, 4096, 65536)
CLASSES: tuple[int, ...] = (2, 16, 128, 1024)
QUICK_BATCHES: tuple[int, ...] = (1, 4096)
QUICK_CLASSES: tuple[int, ...] = (16, 1024)
MODES: tuple[str, ...] = ("sample", "train")
TAU = 1.0

Sampler = Callable[..., torch.Tensor]


IMPLEMENTATIONS: dict[str, Sampler] = {"ours": gumbel_rl.gumbel_softmax, "torch": F.gumbel_softmax}


@dataclass
class Cell:
    """Raw and summarised timings of one (batch, classes, mode) cell."""

    batch: int
    classes: int
    mode: str
    calls_per_timing: int
    seconds_per_call: dict[str, list[float]] = field(default_factory=dict)
    rows_checked: dict[str, int] = field(default_factory=dict)
    bad_rows: dict[str, int] = field(default_factory=dict)

    def median_seconds(self, name: str) -> float:
        return statistics.median(self.seconds_per_call[name])

    def samples_per_second(self, name: str) -> float:
        return self.batch / self.median_seconds(name)

    def paired_ratios(self, name: str = "ours") -> list[float]:
        """Per-repeat ``name``/torch throughput ratios (torch time / ``name``'s time)."""
        return [t / o for o, t in zip(self.seconds_per_call[name], self.seconds_per_call["torch"], strict=True)]

    def ratio(self, name: str = "ours") -> float:
        return statistics.median(self.paired_ratios(name))


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA if available, else CPU. Raises ``ValueError`` for ``cuda`` without a GPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but torch.cuda.is_available() is False; use cpu or auto")
    return torch.device(name)


def make_step(sampler: Sampler, logits: torch.Tensor, w: torch.Tensor, mode: str) -> Callable[[], torch.Tensor]:
    """A zero-argument callable doing one benchmarked call and returning the sample."""
    if mode == "sample":
        return lambda: sampler(logits, TAU, hard=True)

    def train_step() -> torch.Tensor:
        y = sampler(logits, TAU, hard=True)
        (y * w).sum().backward()
        logits.grad = None
        return y

    return train_step


def count_bad_rows(y: torch.Tensor) -> int:
    """Rows of ``y`` with any NaN or inf entry."""
    return int((~torch.isfinite(y.detach())).any(dim=-1).sum())


def time_block(step: Callable[[], torch.Tensor], calls: int, sync: Callable[[], None]) -> tuple[float, torch.Tensor]:
    """Seconds per call over ``calls`` back-to-back calls, and the last output."""
    sync()
    start = time.perf_counter()
    for _ in range(calls):
        y = step()
    sync()
    return (time.perf_counter() - start) / calls, y


def bench_cell(
    batch: int,
    classes: int,
    mode: str,
    device: torch.device,
    repeats: int,
    min_time: float,
    implementations: dict[str, Sampler],
) -> Cell:
    """Time the implementations on one shape and mode, interleaved; see the module docstring."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    gen = torch.Generator().manual_seed(1000 * batch + classes)
    logits = (2.0 * torch.randn(batch, classes, generator=gen)).to(device).requires_grad_(mode == "train")
    w = torch.randn(batch, classes, generator=gen).to(device)
    steps = {name: make_step(fn, logits, w, mode) for name, fn in implementations.items()}
    rows = {name: 0 for name in steps}
    bad = {name: 0 for name in steps}

    def check(name: str, y: torch.Tensor) -> None:
        rows[name] += y.shape[0]
        bad[name] += count_bad_rows(y)

    # Warm up, then estimate the cost of one call (the slower implementation's) to size the timed blocks.
    per_call = 0.0
    for name, step in steps.items():
        _, y = time_block(step, 2, sync)
        check(name, y)
        t, y = time_block(step, 3 if batch * classes < 1 << 22 else 1, sync)
        check(name, y)
        per_call = max(per_call, t)
    calls = max(1, math.ceil(min_time / per_call))
    cell = Cell(batch, classes, mode, calls, {name: [] for name in steps})
    names = list(steps)
    for r in range(repeats):
        # Rotate the order each repeat so that no implementation always runs right after the same one.
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t, y = time_block(steps[name], calls, sync)
            cell.seconds_per_call[name].append(t)
            check(name, y)
            del y
    cell.rows_checked, cell.bad_rows = rows, bad
    return cell


def git_state() -> str:
    """Commit of the checkout and whether ``gumbel_rl/`` has uncommitted changes (the code being timed)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "gumbel_rl"], cwd=ROOT, capture_output=True, text=True
        )
        return head.stdout.strip() + (" (gumbel_rl/ modified)" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def format_rate(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= 0.9995 * scale:  # so that 999.7k prints as 1M, not 1e+03k
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def markdown_table(cells: list[Cell]) -> str:
    """One row per cell: throughputs, the median paired ratio to torch and its range over the repeats."""
    others = [name for name in cells[0].seconds_per_call if name not in ("ours", "torch")]
    head = "| mode | batch | classes | ours samples/s | torch samples/s | ours/torch | paired range |"
    rule = "|---|---:|---:|---:|---:|---:|---|"
    for name in others:
        head += f" {name} samples/s | {name}/torch |"
        rule += "---:|---:|"
    lines = [head, rule]
    for c in cells:
        ratios = c.paired_ratios()
        line = (
            f"| {c.mode} | {c.batch} | {c.classes} | {format_rate(c.samples_per_second('ours'))} | "
            f"{format_rate(c.samples_per_second('torch'))} | **{c.ratio():.2f}** | "
            f"{min(ratios):.2f}-{max(ratios):.2f} |"
        )
        for name in others:
            line += f" {format_rate(c.samples_per_second(name))} | {c.ratio(name):.2f} |"
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[Cell]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--quick", action="store_true", help="batch {1, 4096} x classes {16, 1024} only")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved repeats per cell, >= 5 (default 7)")
    parser.add_argument("--min-time", type=float, default=0.02, help="seconds per timed block (default 0.02)")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw timings to this JSON file")
    args = parser.parse_args(argv)
    if args.repeats < 5:
        parser.error(f"--repeats must be >= 5, got {args.repeats}")
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    batches, classes = (QUICK_BATCHES, QUICK_CLASSES) if args.quick else (BATCHES, CLASSES)
    implementations = IMPLEMENTATIONS

    header = (
        f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else cpu_model()}), "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, python {platform.python_version()}, "
        f"gumbel_rl at {git_state()}, tau {TAU}"
    )
    print(header, flush=True)
    cells: list[Cell] = []
    start = time.perf_counter()
    for mode in MODES:
        for b in batches:
            for n in classes:
                # Each call of the biggest shapes takes seconds on a CPU: fewer repeats keep the run short.
                repeats = 5 if b * n >= 1 << 24 else args.repeats
                cell = bench_cell(b, n, mode, device, repeats, args.min_time, implementations)
                cells.append(cell)
                rates = "  ".join(
                    f"{name} {format_rate(cell.samples_per_second(name)):>7s}/s" for name in implementations
                )
                print(
                    f"  {mode:6s} {b:6d} x {n:5d}: {rates}  ratio {cell.ratio():.2f}  "
                    f"({cell.calls_per_timing} calls/timing, {repeats} repeats, "
                    f"{time.perf_counter() - start:.0f}s elapsed)",
                    flush=True,
                )
    print()
    print(header)
    print()
    print(markdown_table(cells))
    print()
    for name in [n for n in implementations if n != "torch"]:
        losses = [c for c in cells if c.ratio(name) < 1.0]
        print(f"{name} >= torch (median paired ratio >= 1) in {len(cells) - len(losses)} of {len(cells)} cells")
        for c in losses:
            print(f"  torch faster than {name}: {c.mode} {c.batch} x {c.classes}: ratio {c.ratio(name):.2f}")
    for name in implementations:
        rows = sum(c.rows_checked[name] for c in cells)
        bad = sum(c.bad_rows[name] for c in cells)
        elems = sum(c.rows_checked[name] * c.classes for c in cells)
        print(f"NaN/inf output rows, {name}: {bad} of {rows:,} rows checked ({elems:,} draws)")
    print(f"total time {time.perf_counter() - start:.0f}s")
    if args.json is not None:
        payload = {"header": header, "cells": [asdict(c) | {"ratio": c.ratio()} for c in cells]}
        args.json.write_text(json.dumps(payload, indent=1))
        print(f"raw timings written to {args.json}")
    return cells


if __name__ == "__main__":
    main()
