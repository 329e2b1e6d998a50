"""Benchmark for a machine with a GPU: the CartPole twin's throughput from 2^10 to 2^22 environments, and the time
for one seed and for 1,000 batched seeds of ``st-gumbel`` to solve CartPole-v1; writes a markdown table and JSON.

One command, unattended, under a hard overall time budget (``--budget``, 450 s by default) that it enforces itself:

    python bench/bench_gpu.py                     # on the GPU machine (--device auto picks CUDA)
    python bench/bench_gpu.py --device cpu --min-log2 4 --max-log2 10 --seeds-batch 4 --steps 2048 \\
        --no-compile --budget 60                  # CPU smoke check of the same code

Sections, in this order, each with a slice of the budget (twin 40%, one seed 12%, many seeds the rest but 3%):

1. **Twin throughput** (``envs.make_differentiable("CartPole-v1")`` with the tuned training objective), env steps
   per second at ``n = 2^k`` environments, ``k`` from ``--min-log2`` to ``--max-log2``, four series measured
   side by side at each size:

   - ``forward``: hard one-hot actions under ``torch.no_grad()``, one ``twin.step`` and ``twin.reset_done`` of the
     finished envs per step (``bench_envs.TwinForwardRunner``);
   - ``fwd+bwd``: a window of the tuned SHAC horizon (8 steps for CartPole-v1) with autograd on: the one-hot
     actions (the forward values of straight-through actions) are a leaf requiring grad, the window's training
     objective (rewards weighted by the survival so far, as ``agents.pathwise.shac_window``) is differentiated
     w.r.t. them, then the finished envs are re-drawn (``bench_envs.TwinForwardBackwardRunner``);
   - each again with its step (window) function under ``torch.compile(dynamic=True)``, compiled once per series
     and reused at every size; ``twin.reset_done`` stays eager. A compile failure is recorded, not raised; the
     compiled values are checked against eager ones on the first size (max abs difference recorded).

   Per size and series: a warm-up call (timed: it includes the compilation), a calibration to >= ``--min-time``
   s per timed block (``bench_envs.calibrate``), then ``--repeats`` timed blocks with the series interleaved in
   rotating order; the median is reported. CUDA blocks are bracketed by ``torch.cuda.synchronize``. Peak memory:
   ``torch.cuda.max_memory_allocated`` during the series' warm-up and calibration, minus what was allocated
   before it (CUDA only). A series stops growing the batch when it runs out of memory (recorded), when its next
   size (estimated at twice the last one's time) would overrun its share of the section, or at the section's end.

2. **One seed** of ``--method`` (``make_agent(method, "CartPole-v1", seed=0, device=...)``, the tuned defaults)
   trained until the package's standard evaluation calls it solved (the periodic check, then 100 greedy episodes
   of the real Gymnasium env reaching 475) or ``--steps`` env steps or the section's end.
3. **Many seeds**: ``--seeds-batch`` seeds (0..N-1) in one batch (``agents.many_seeds.ManySeeds.make``), each
   stopping when solved, until all are solved or ``--steps`` or the section's end.

   Reported for 2 and 3: seeds solved, setup seconds (building the agents), train seconds until the last seed
   solved (the package's ``solve_wall_s``: training only), elapsed seconds of ``learn`` (training, the batched
   evaluations in the real env, bookkeeping), total (setup + elapsed), median env steps to solve, and the devices
   the twin state, policy and critic live on.

Outputs (written after every measurement, so an interrupted run leaves what it measured): ``--out`` (markdown,
default ``bench/results/gpu.md``) and the same path with ``.json``: the machine (GPU name, torch and CUDA
versions, CPU, load), the arguments, every measurement and why each series or section stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_envs import (  # noqa: E402
    Runner,
    TwinForwardBackwardRunner,
    TwinForwardRunner,
    calibrate,
    cpu_model,
    make_twin,
    timed,
    twin_forward_step,
    twin_window_objective,
)

from agents import make_agent  # noqa: E402
from agents.callbacks import BaseCallback  # noqa: E402
from agents.many_seeds import ManySeeds, batched_methods  # noqa: E402
from agents.registry import resolve  # noqa: E402
from gumbel_rl.policy import resolve_device  # noqa: E402

ENV_ID = "CartPole-v1"
SECTIONS = ("twin", "one-seed", "many-seeds")
SECTION_END = {"twin": 0.40, "one-seed": 0.52, "many-seeds": 0.97}
"""When each section must end, as a fraction of the budget from the start (time a section leaves flows on)."""
FORWARD_GOAL = 1e9
"""Twin forward env steps/s at the best batch size (goal on a GPU)."""
MANY_SEEDS_GOAL_S = 60.0
"""Seconds for 1,000 seeds to all solve (goal on a GPU)."""


class BudgetExceeded(BaseException):
    """Raised by the overall-budget alarm (a ``BaseException``, so that no ``except Exception`` swallows it)."""


@dataclass
class Clock:
    """The overall budget: ``start`` (``time.perf_counter``) and ``budget`` seconds."""

    budget: float
    start: float = field(default_factory=time.perf_counter)

    def now(self) -> float:
        return time.perf_counter() - self.start

    def section_end(self, section: str) -> float:
        """The ``perf_counter`` time at which ``section`` must end."""
        return self.start + self.budget * SECTION_END[section]


@contextlib.contextmanager
def hard_budget(seconds: float) -> Iterator[None]:
    """Raise :class:`BudgetExceeded` in the main thread after ``seconds`` (SIGALRM); nothing where there is no
    SIGALRM or off the main thread. The previous handler is restored on exit."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise BudgetExceeded(f"overall budget of {seconds:g} s reached")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError))


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ---- 1. twin throughput -----------------------------------------------------------------------------------------


@dataclass
class Series:
    """One column of the throughput table: ``kind`` ``forward`` or ``fwd+bwd``, eager or compiled."""

    kind: str
    compiled: bool
    fn: Callable[..., Any]
    twin: Any
    spent: float = 0.0
    stopped: str | None = None
    check: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return f"{self.kind}{', compiled' if self.compiled else ''}"


def build_series(device: torch.device, objective: str | None, use_compile: bool) -> list[Series]:
    out = []
    for kind in ("forward", "fwd+bwd"):
        for compiled in (False, True) if use_compile else (False,):
            twin = make_twin(device, objective)
            fn: Callable[..., Any] = twin_forward_step(twin) if kind == "forward" else twin_window_objective(twin)
            if compiled:
                fn = torch.compile(fn, dynamic=True)
            out.append(Series(kind, compiled, fn, twin))
    return out


def compile_series(
    series: Series, device: torch.device, n: int, window: int, sync: Callable[[], None]
) -> dict[str, Any]:
    """Compile ``series.fn``: two calls of a runner of ``n`` envs (dynamo compiles on the first and once more on the
    second, whose inputs come from the twin's own steps; later calls and sizes reuse both), timed as
    ``compile_s``; then the max abs difference to the eager function on one input (forward: the next state;
    fwd+bwd: the objective per env step, and the action gradient)."""
    t0 = time.perf_counter()
    make_runner(series, n, device, window).run(2)
    sync()
    out: dict[str, Any] = {"compile_s": time.perf_counter() - t0}
    twin = series.twin
    state = twin.reset(n, torch.Generator(device=device).manual_seed(1))
    idx = torch.randint(0, 2, (window, n), generator=torch.Generator().manual_seed(1))
    actions = torch.nn.functional.one_hot(idx, 2).to(device=device, dtype=torch.float32)
    if series.kind == "forward":
        eager = twin_forward_step(twin)
        with torch.no_grad():
            got, want = series.fn(state.x, state.t, actions[0])[0], eager(state.x, state.t, actions[0])[0]
        out["max_abs_diff_state"] = float((got - want).abs().max())
        return out
    results = []
    for fn in (series.fn, twin_window_objective(twin)):
        leaf = actions.clone().requires_grad_()
        total, *_ = fn(state.x, state.t, leaf)
        results.append((total.detach(), torch.autograd.grad(total, leaf)[0]))
    (total, grad), (total2, grad2) = results
    out["max_abs_diff_objective_per_step"] = float((total - total2).abs()) / (n * window)
    out["max_abs_diff_grad"] = float((grad - grad2).abs().max())
    return out


def make_runner(series: Series, n: int, device: torch.device, window: int) -> Runner:
    if series.kind == "forward":
        return TwinForwardRunner(n, device, twin=series.twin, step=series.fn)
    return TwinForwardBackwardRunner(n, device, twin=series.twin, objective=series.fn, window=window)


def measure_twin(
    device: torch.device, args: argparse.Namespace, clock: Clock, report: dict[str, Any], save: Callable[[], None]
) -> None:
    """Section 1: fills ``report["twin"]``."""
    _, config = resolve(args.method, ENV_ID, {})
    window, objective = int(config.horizon), config.objective
    section = report["twin"] = {
        "window": window,
        "objective": objective,
        "compile": bool(args.compile),
        "rows": [],
        "series": {},
        "stopped": None,
    }
    end = clock.section_end("twin")
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    series = build_series(device, objective, args.compile)
    for s in series:
        section["series"][s.name] = {"stopped": None, "check": None}
        if s.compiled and end - time.perf_counter() < 0.5 * clock.budget * SECTION_END["twin"]:
            s.stopped = "not compiled: earlier compilations took half of the section's time"
            section["series"][s.name]["stopped"] = s.stopped
        elif s.compiled:  # compile first, so that the series share what time is left after it
            try:
                s.check = compile_series(s, device, 1 << args.min_log2, window, sync)
                section["series"][s.name]["check"] = s.check
            except BudgetExceeded:
                raise
            except Exception as exc:  # noqa: BLE001 - recorded, not raised
                s.stopped = ("out of memory while compiling: " if is_oom(exc) else "compile failed: ") + one_line(exc)
                section["series"][s.name]["stopped"] = s.stopped
                free_memory(device)
            save()
    active = [s for s in series if s.stopped is None]
    share = max(end - time.perf_counter(), 0.0) / max(len(active), 1)
    for log2 in range(args.min_log2, args.max_log2 + 1):
        n = 1 << log2
        if time.perf_counter() >= end:
            section["stopped"] = f"section time slice ended before 2^{log2}"
            break
        active = [s for s in series if s.stopped is None]
        if not active:
            break
        row: dict[str, Any] = {"envs": n, "log2": log2, "cells": {}}
        section["rows"].append(row)
        runners: dict[str, tuple[Series, Runner, int]] = {}
        runner: Runner | None = None
        cost: dict[str, float] = {}  # seconds each series spent at this size, compilation excluded
        for s in active:
            cell: dict[str, Any] = {}
            row["cells"][s.name] = cell
            try:
                t0 = time.perf_counter()
                before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                runner = make_runner(s, n, device, window)
                w0 = time.perf_counter()
                runner.run(1)
                sync()
                cell["first_call_s"] = time.perf_counter() - w0
                iters = calibrate(runner, args.min_time, sync)
                if device.type == "cuda":
                    cell["peak_mib"] = (torch.cuda.max_memory_allocated(device) - before) / 2**20
                runners[s.name] = (s, runner, iters)
            except BudgetExceeded:
                raise
            except Exception as exc:  # noqa: BLE001 - recorded: OOM, compile failures, anything else
                runners.pop(s.name, None)
                if is_oom(exc):
                    cell["status"] = "out of memory"
                    s.stopped = f"out of memory at 2^{log2}"
                else:
                    cell["status"] = ("compile failed: " if s.compiled else "failed: ") + one_line(exc)
                    s.stopped = cell["status"]
                free_memory(device)
            cost[s.name] = time.perf_counter() - t0
            s.spent += cost[s.name]
            save()
        rates: dict[str, list[float]] = {name: [] for name in runners}
        order = list(runners)
        try:
            for rep in range(args.repeats):
                for j in range(len(order)):
                    name = order[(j + rep) % len(order)]
                    s, runner, iters = runners[name]
                    t0 = time.perf_counter()
                    rates[name].append(timed(runner, iters, sync))
                    cost[name] += time.perf_counter() - t0
                    s.spent += time.perf_counter() - t0
        except BudgetExceeded:
            raise
        except Exception as exc:  # noqa: BLE001
            why = "out of memory" if is_oom(exc) else f"failed: {one_line(exc)}"
            for name in order:
                runners[name][0].stopped = f"{why} while timing at 2^{log2}"
                row["cells"][name]["status"] = why
            free_memory(device)
            rates = {}
        for name, values in rates.items():
            s, runner, _ = runners[name]
            cell = row["cells"][name]
            cell["steps_per_s"] = statistics.median(values)
            cell["steps_per_s_repeats"] = values
            if isinstance(runner, TwinForwardBackwardRunner):
                cell["grad_finite"] = bool(torch.isfinite(runner.last_grad).all())
            # The next size is estimated at twice this one's time.
            if s.stopped is None and s.spent + 2 * cost[name] > share:
                s.stopped = f"time slice: next size 2^{log2 + 1} would overrun the series' {share:.0f} s"
        done_cells = ", ".join(f"{k} {c.get('status') or rate(c.get('steps_per_s'))}" for k, c in row["cells"].items())
        print(f"  2^{log2}: {done_cells} (t = {clock.now():.0f} s)", flush=True)
        runners.clear()
        runner = None  # the last runner too: its tensors must not outlive this size
        free_memory(device)
        for s in series:
            section["series"][s.name]["stopped"] = s.stopped
            section["series"][s.name]["seconds"] = s.spent
        save()
    if section["stopped"] is None:
        done = all(s.stopped is not None for s in series)
        section["stopped"] = "every series stopped" if done else f"done: largest size 2^{args.max_log2} reached"


# ---- 2 and 3. time to solve -------------------------------------------------------------------------------------


class StopWhenSolved(BaseCallback):
    """Stop when the agent's standard evaluation has solved the env, or at ``deadline`` (``time.perf_counter``)."""

    def __init__(self, deadline: float) -> None:
        super().__init__()
        self.deadline = deadline
        self.out_of_time = False

    def _on_step(self, metrics: dict[str, Any]) -> bool:
        if self.agent is not None and self.agent.solved:
            return False
        if time.perf_counter() >= self.deadline:
            self.out_of_time = True
            return False
        return True


def outcome(agents: list[Any], setup_s: float, elapsed_s: float) -> dict[str, Any]:
    solved = [a for a in agents if a.solved]
    steps = [a.solve_env_steps for a in solved]
    return {
        "seeds": len(agents),
        "solved": len(solved),
        "setup_s": setup_s,
        "elapsed_s": elapsed_s,
        "total_s": setup_s + elapsed_s,
        "all_solved": len(solved) == len(agents),
        "train_s_last_solve": max(a.solve_wall_s for a in solved) if solved else None,
        "median_solve_env_steps": statistics.median(steps) if steps else None,
        "max_env_steps": max(a.num_env_steps for a in agents),
        # Where the time went: training iterations (the package's train seconds) and the rest of ``learn``
        # (the periodic evaluations in the real env, bookkeeping, callbacks).
        "train_s": max(a.train_wall_s for a in agents),
        "other_s": elapsed_s - max(a.train_wall_s for a in agents),
        "iterations": max(a.iterations for a in agents),
        "evaluations": max(a.evaluations for a in agents),
    }


def time_to_solve(
    device: torch.device, args: argparse.Namespace, clock: Clock, report: dict[str, Any], many: bool
) -> None:
    """Sections 2 (``many`` False: one seed, ``make_agent``) and 3 (``ManySeeds``); fills ``report[section]``."""
    name = "many-seeds" if many else "one-seed"
    end = clock.section_end(name)
    section: dict[str, Any] = {"method": args.method, "env": ENV_ID, "device": str(device), "steps": args.steps}
    report[name] = section
    if time.perf_counter() >= end:
        section["stopped"] = "no time left in the budget"
        return
    t0 = time.perf_counter()
    try:
        if many:
            group = ManySeeds.make(args.method, ENV_ID, range(args.seeds_batch), device=str(device))
            agents = group.agents
        else:
            agents = [make_agent(args.method, ENV_ID, seed=0, device=str(device))]
        setup_s = time.perf_counter() - t0
        first = agents[0]
        section["devices"] = {
            "agent": str(first.device),
            "twin_state": str(first.twin_state.x.device),
            "policy": str(next(first.policy.parameters()).device),
            "critic": str(next(first.critic.parameters()).device),
        }
        if many:
            section["devices"]["stacked_policy"] = str(group.policy.net.weights[0].device)
            section["devices"]["stacked_critic"] = str(group.critic.weights[0].device)
            section["devices"]["stacked_twin_state"] = str(group.twin_state.x.device)
        callbacks = [StopWhenSolved(end) for _ in agents]
        t1 = time.perf_counter()
        try:
            if many:
                group.learn(args.steps, callbacks=callbacks)
            else:
                first.learn(args.steps, callback=callbacks[0])
        finally:
            elapsed = time.perf_counter() - t1
            section.update(outcome(agents, setup_s, elapsed))
        if section["all_solved"]:
            section["stopped"] = "done: every seed solved"
        elif any(cb.out_of_time for cb in callbacks):
            section["stopped"] = "section time slice ended"
        else:
            section["stopped"] = f"step budget of {args.steps} env steps reached"
        for a in agents:
            a.close()
    except BudgetExceeded as exc:
        section["stopped"] = f"stopped: {exc}"
        raise
    except Exception as exc:  # noqa: BLE001
        section["stopped"] = ("out of memory: " if is_oom(exc) else "failed: ") + one_line(exc)
    finally:
        free_memory(device)
        summary = {k: section.get(k) for k in ("solved", "seeds", "train_s", "elapsed_s", "stopped")}
        print(f"  {name}: {summary}", flush=True)


# ---- report -----------------------------------------------------------------------------------------------------


def machine(device: torch.device) -> dict[str, Any]:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    info: dict[str, Any] = {
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "gymnasium": gymnasium.__version__,
        "commit": commit,
        "loadavg_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        info["gpu_memory_gib"] = torch.cuda.get_device_properties(device).total_memory / 2**30
    return info


def rate(v: float | None) -> str:
    if v is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= scale:
            return f"{v / scale:.2f} {unit}"
    return f"{v:.0f}"


def seconds(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def render(report: dict[str, Any]) -> str:
    """The markdown for ``docs/benchmarks.md``."""
    m = report["machine"]
    lines = [
        "## GPU: CartPole twin throughput and time to solve",
        "",
        f"Device: {m['gpu'] or 'CPU (' + m['cpu'] + ')'} ({m['device']}); torch {m['torch']}, CUDA {m['cuda']}, "
        f"gymnasium {m['gymnasium']}, Python {m['python']}; CPU {m['cpu']} x {m['cpu_count']}, "
        f"{m['torch_threads']} torch thread(s); load average at start {m['loadavg_at_start']}; commit {m['commit']}.",
        f"Command: `{report['command']}` ({report['elapsed_s']:.0f} s of a {report['args']['budget']:g} s budget).",
        "",
    ]
    twin = report.get("twin")
    if twin:
        names = list(twin["series"])
        lines += [
            f"### Twin env steps/s (`{ENV_ID}`, objective {twin['objective']!r}, fwd+bwd over {twin['window']}-step "
            "windows)",
            "",
            "| envs | " + " | ".join(names) + " | " + " | ".join(f"peak MiB, {n}" for n in names) + " |",
            "|---:|" + "---:|" * (2 * len(names)),
        ]
        for row in twin["rows"]:
            cells = [row["cells"].get(n, {}) for n in names]
            rates_ = [c.get("status") or rate(c.get("steps_per_s")) if c else "-" for c in cells]
            peaks = [f"{c['peak_mib']:.0f}" if "peak_mib" in c else "-" for c in cells]
            lines.append(f"| 2^{row['log2']} | " + " | ".join(rates_) + " | " + " | ".join(peaks) + " |")
        lines.append("")
        best = best_forward(twin)
        if best is not None:
            met = "met" if best[0] >= FORWARD_GOAL else "not met"
            if m["gpu"] is None:
                met += "** (a CPU smoke check: the goal is for a GPU)"
            else:
                met += "**"
            lines.append(
                f"Best forward: {rate(best[0])} env steps/s at 2^{best[1]} envs ({best[2]}); goal >= 1e9: **{met}."
            )
        for n, s in twin["series"].items():
            extra = ""
            if s.get("check"):
                extra = "; compiled vs eager: " + ", ".join(
                    f"{k} {v:.3g}" for k, v in s["check"].items() if isinstance(v, float)
                )
            lines.append(f"- {n}: {s.get('stopped') or 'ran every size'}{extra}")
        lines += ["", "(steps/s; k = 1e3, M = 1e6, G = 1e9)", ""]
    solve = [(k, report[k]) for k in ("one-seed", "many-seeds") if k in report]
    if solve:
        lines += [
            f"### Time to solve `{ENV_ID}` ({solve[0][1]['method']}, the package's standard evaluation)",
            "",
            "| run | seeds solved | setup s | train s to last solve | elapsed s (learn) | of which training s | "
            "total s | median env steps to solve | stopped |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for key, s in solve:
            label = "one seed (`make_agent`)" if key == "one-seed" else "batched seeds (`ManySeeds`)"
            if "seeds" not in s:
                lines.append(f"| {label} | - | - | - | - | - | - | - | {s.get('stopped')} |")
                continue
            steps = s["median_solve_env_steps"]
            lines.append(
                f"| {label} | {s['solved']}/{s['seeds']} | {seconds(s['setup_s'])} | "
                f"{seconds(s['train_s_last_solve'])} | {seconds(s['elapsed_s'])} | {seconds(s['train_s'])} | "
                f"{seconds(s['total_s'])} | "
                f"{'-' if steps is None else f'{steps:,.0f}'} | {s.get('stopped')} |"
            )
        many = report.get("many-seeds")
        if many and many.get("seeds", 0) >= 1000:
            met = "met" if many["all_solved"] and many["total_s"] < MANY_SEEDS_GOAL_S else "not met"
            lines.append("")
            lines.append(f"Goal: {many['seeds']} seeds all solved in under 60 s (total): **{met}**.")
        lines.append("")
        for key, s in solve:
            if "devices" in s:
                lines.append(f"- {key} devices: " + ", ".join(f"{k} {v}" for k, v in s["devices"].items()))
        lines.append("")
    return "\n".join(lines)


def best_forward(twin: dict[str, Any]) -> tuple[float, int, str] | None:
    best = None
    for row in twin["rows"]:
        for name, cell in row["cells"].items():
            v = cell.get("steps_per_s")
            if name.startswith("forward") and v is not None and (best is None or v > best[0]):
                best = (v, row["log2"], name)
    return best


# ---- main -------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N (default auto)")
    p.add_argument("--budget", type=float, default=450.0, help="overall seconds, enforced (default 450)")
    p.add_argument("--min-log2", type=int, default=10, help="smallest batch 2^k of the twin section (default 10)")
    p.add_argument("--max-log2", type=int, default=22, help="largest batch 2^k of the twin section (default 22)")
    p.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=True, help="also the torch.compile series"
    )
    p.add_argument("--repeats", type=int, default=3, help="timed blocks per size and series (median reported)")
    p.add_argument("--min-time", type=float, default=0.2, help="seconds per timed block (default 0.2)")
    p.add_argument("--method", default="st-gumbel", help="a batched pathwise method (default st-gumbel)")
    p.add_argument("--seeds-batch", type=int, default=1000, help="seeds trained in one batch (default 1000)")
    p.add_argument("--steps", type=int, default=100_000, help="env steps per seed at most (default 100000)")
    p.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS, help="what to run")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu.md", help="markdown output")
    args = p.parse_args(argv)
    if not 0 <= args.min_log2 <= args.max_log2 <= 30:
        p.error(f"need 0 <= --min-log2 <= --max-log2 <= 30, got {args.min_log2} and {args.max_log2}")
    if args.budget <= 0 or args.min_time <= 0:
        p.error("--budget and --min-time must be > 0")
    if args.repeats < 1 or args.seeds_batch < 1 or args.steps < 1 or args.threads < 1:
        p.error("--repeats, --seeds-batch, --steps and --threads must be >= 1")
    pathwise = [m for m in batched_methods() if m != "reinforce"]
    if args.method not in pathwise:
        p.error(f"--method {args.method!r} is not a batched pathwise method; choose one of {', '.join(pathwise)}")
    try:
        args.device_resolved = resolve_device(args.device)
    except ValueError as exc:
        p.error(str(exc))
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns the report (also written to ``--out`` and its ``.json``)."""
    args = parse_args(argv)
    clock = Clock(args.budget)
    torch.set_num_threads(args.threads)
    device: torch.device = args.device_resolved
    command = "python bench/bench_gpu.py " + " ".join(sys.argv[1:] if argv is None else argv)
    report: dict[str, Any] = {
        "command": command.strip(),
        "args": {k: (str(v) if isinstance(v, (Path, torch.device)) else v) for k, v in vars(args).items()},
        "machine": machine(device),
        "elapsed_s": 0.0,
    }
    out_json = args.out.with_suffix(".json")
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        report["elapsed_s"] = clock.now()
        out_json.write_text(json.dumps(report, indent=2) + "\n")
        args.out.write_text(render(report))

    save()
    with hard_budget(args.budget):
        try:
            for name in SECTIONS:
                if name not in args.sections:
                    continue
                print(f"# {name} (t = {clock.now():.0f} s)", flush=True)
                if name == "twin":
                    measure_twin(device, args, clock, report, save)
                else:
                    time_to_solve(device, args, clock, report, many=name == "many-seeds")
                save()
        except BudgetExceeded as exc:
            report["stopped"] = str(exc)
            if isinstance(report.get(name), dict) and not report[name].get("stopped"):
                report[name]["stopped"] = f"stopped: {exc}"
    report["machine"]["loadavg_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    save()
    print(render(report))
    print(f"# wrote {args.out} and {out_json}")
    return report


if __name__ == "__main__":
    main()
