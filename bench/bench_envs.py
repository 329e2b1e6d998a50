"""Benchmark: CartPole environment steps per second, differentiable twin vs Gymnasium's ``CartPoleVectorEnv``.

Three ways to step ``n`` CartPole-v1 environments with random hard actions (pre-drawn pools, so drawing actions is
not timed), at n in {1, 256, 4096, 65536}:

- ``gym``: ``gymnasium.envs.classic_control.cartpole.CartPoleVectorEnv(num_envs=n).step(actions)`` (numpy float64,
  autoresets finished envs on the next step, checks the action with ``action_space.contains``), always on CPU;
- ``twin fwd``: the twin (``envs.make_differentiable("CartPole-v1")``) stepped under ``torch.no_grad()``
  (``twin_forward_step``) followed by ``reset_done(state, terminated | truncated)`` (so finished envs are re-drawn,
  as the vector env does); one step = n env steps;
- ``twin fwd+bwd``: a 32-step window through the twin with autograd on (``twin_window_objective``): the (32, n, 2)
  one-hot actions are a leaf requiring grad, the loss is the window's training objective (here the default
  ``"shaped"`` one: the sum of ``shaped_reward``), and ``torch.autograd.grad`` takes its gradient w.r.t. the
  actions; then the finished envs are re-drawn. One window = 32 * n env steps.

The twin runners and functions are shared with ``bench/bench_gpu.py`` (sizes up to 2^22, ``torch.compile``).

Method: every runner is warmed up, then calibrated so a timed block lasts >= ``--min-time`` s; within each repeat
the three runners alternate (rotating the order) so load from other processes on the machine hits all alike. The
figure is the median steps/s over ``--repeats``; the ratio twin/gym is the median of the per-repeat paired ratios
(> 1: twin faster). On CUDA each timed block is bracketed by ``torch.cuda.synchronize()``; Gymnasium stays on CPU.

Threads: by default torch runs on 1 intra-op thread, like numpy in the vector env, so both sides use one core.
``--threads 0`` leaves torch's own choice (one per core); on a machine shared with other jobs that can be far
slower (OpenMP workers waiting on descheduled threads), see docs/benchmarks.md.

Run ``python bench/bench_envs.py`` (~30 s on 2 CPU cores) or ``--quick``. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import gymnasium
import numpy as np
import torch
from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import envs  # noqa: E402
from envs.cartpole_twin import CartPoleState, CartPoleTwin  # noqa: E402

SIZES: tuple[int, ...] = (1, 256, 4096, 65536)
WINDOW = 32
POOL = 16  # distinct pre-drawn action sets cycled through (forward runners)
SEED = 0


class Runner:
    """Something that advances ``n`` environments ``iters`` times; ``run`` returns the env steps taken."""

    name = ""

    def run(self, iters: int) -> int:
        raise NotImplementedError


class GymRunner(Runner):
    name = "gym"

    def __init__(self, n: int) -> None:
        self.n = n
        self.env = CartPoleVectorEnv(num_envs=n)
        self.env.reset(seed=SEED)
        self.actions = list(np.random.default_rng(SEED).integers(0, 2, size=(POOL, n)))
        self.i = 0

    def run(self, iters: int) -> int:
        step, actions = self.env.step, self.actions
        for _ in range(iters):
            step(actions[self.i % POOL])
            self.i += 1
        return iters * self.n


def twin_forward_step(twin: CartPoleTwin) -> Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``step(x, t, action) -> (next x, next t, done)``: one ``twin.step`` of a batch as a function of tensors alone
    (``x`` (n, 4), ``t`` (n,), ``action`` (n, 2); ``done = terminated | truncated``), so that ``torch.compile`` can
    take it whole. Build it once per twin and reuse it for every batch size: a compiled copy then compiles once."""

    def step(x: torch.Tensor, t: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s, _, terminated, truncated = twin.step(CartPoleState(x, t), action)
        return s.x, s.t, terminated | truncated

    return step


def twin_window_objective(
    twin: CartPoleTwin,
) -> Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``window(x, t, actions) -> (objective, end x, end t, done)``: a window of ``W`` steps of the twin from state
    ``(x, t)`` under ``actions`` (W, n, 2), the twin's training objective summed over steps and envs -- each step's
    ``training_reward`` weighted by the product of ``continuation`` so far, as ``agents.pathwise.shac_window``
    weights it (without the policy, the critic and the discount) -- and ``done`` (n,), any env that terminated or
    truncated in the window. Under the ``"shaped"`` objective this is the sum of ``shaped_reward``."""

    def window(
        x: torch.Tensor, t: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        per_step = actions.unbind(0)  # one unbind: its backward is one stack, not W zero-filled copies
        s = CartPoleState(x, t)
        done = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        alive = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
        total = torch.zeros((), dtype=x.dtype, device=x.device)
        for action in per_step:
            nxt, reward, terminated, truncated = twin.step(s, action)
            total = total + (alive * twin.training_reward(s, action, nxt, reward)).sum()
            alive = alive * twin.continuation(nxt)
            done = done | terminated | truncated
            s = nxt
        return total, s.x, s.t, done

    return window


class TwinForwardRunner(Runner):
    """``n`` twin envs, hard one-hot actions, no autograd; finished envs re-drawn after every step.

    ``twin`` (default: ``envs.make_differentiable("CartPole-v1", device=device)``) and ``step`` (default:
    ``twin_forward_step(twin)``, or a compiled copy of it) are shared between runners of different sizes."""

    name = "twin fwd"

    def __init__(
        self,
        n: int,
        device: torch.device,
        twin: CartPoleTwin | None = None,
        step: Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None,
    ) -> None:
        self.n = n
        self.twin = twin if twin is not None else make_twin(device)
        self.step = step if step is not None else twin_forward_step(self.twin)
        self.gen = torch.Generator(device=device).manual_seed(SEED)
        self.state = self.twin.reset(n, self.gen)
        idx = torch.randint(0, 2, (POOL, n), generator=torch.Generator().manual_seed(SEED))
        self.actions = torch.nn.functional.one_hot(idx, 2).to(device=device, dtype=torch.float32).unbind(0)
        self.i = 0

    def run(self, iters: int) -> int:
        twin, state, actions, gen, step = self.twin, self.state, self.actions, self.gen, self.step
        with torch.no_grad():
            for _ in range(iters):
                x, t, done = step(state.x, state.t, actions[self.i % POOL])
                state = twin.reset_done(CartPoleState(x, t), done, gen)
                self.i += 1
        self.state = state
        return iters * self.n


class TwinForwardBackwardRunner(Runner):
    """``n`` twin envs through a ``window``-step window with autograd: the (window, n, 2) one-hot actions are a leaf
    requiring grad (the forward values of straight-through actions), ``torch.autograd.grad`` takes the gradient of
    the window's objective (``twin_window_objective``, or ``objective``, a compiled copy of it) w.r.t. them, then the
    finished envs are re-drawn. ``twin`` as for :class:`TwinForwardRunner`."""

    name = "twin fwd+bwd"

    def __init__(
        self,
        n: int,
        device: torch.device,
        twin: CartPoleTwin | None = None,
        objective: Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] | None = None,
        window: int = WINDOW,
    ) -> None:
        self.n = n
        self.window = window
        self.twin = twin if twin is not None else make_twin(device)
        self.objective = objective if objective is not None else twin_window_objective(self.twin)
        self.gen = torch.Generator(device=device).manual_seed(SEED)
        self.state = self.twin.reset(n, self.gen)
        idx = torch.randint(0, 2, (2, window, n), generator=torch.Generator().manual_seed(SEED))
        pool = torch.nn.functional.one_hot(idx, 2).to(device=device, dtype=torch.float32)
        self.actions = [a.requires_grad_() for a in pool.unbind(0)]  # two (window, n, 2) leaves
        self.i = 0
        self.last_grad = torch.zeros(0)

    def run(self, iters: int) -> int:
        twin, state, gen = self.twin, self.state, self.gen
        for _ in range(iters):
            actions = self.actions[self.i % 2]
            total, x, t, done = self.objective(state.x, state.t, actions)
            (grad,) = torch.autograd.grad(total, actions)
            with torch.no_grad():
                state = twin.reset_done(CartPoleState(x.detach(), t), done, gen)
            self.i += 1
        self.state = state
        self.last_grad = grad
        return iters * self.window * self.n


def make_twin(device: torch.device, objective: str | None = None) -> CartPoleTwin:
    """``envs.make_differentiable("CartPole-v1", device=device)`` (with ``objective`` when given)."""
    kwargs = {} if objective is None else {"objective": objective}
    twin = envs.make_differentiable("CartPole-v1", device=device, **kwargs)
    assert isinstance(twin, CartPoleTwin)
    return twin


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if available else cpu. Raises ValueError for cuda without a CUDA device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but torch.cuda.is_available() is False; use cpu or auto")
    return torch.device(name)


def timed(runner: Runner, iters: int, sync: Callable[[], None]) -> float:
    """Env steps per second of ``runner.run(iters)``."""
    sync()
    t0 = time.perf_counter()
    steps = runner.run(iters)
    sync()
    return steps / (time.perf_counter() - t0)


def calibrate(runner: Runner, min_time: float, sync: Callable[[], None]) -> int:
    """Warm up, then the number of iterations that takes >= ``min_time`` seconds."""
    runner.run(3 if isinstance(runner, TwinForwardBackwardRunner) else 20)  # warm-up (allocator, caches)
    iters = 1
    while True:
        sync()
        t0 = time.perf_counter()
        runner.run(iters)
        sync()
        dt = time.perf_counter() - t0
        if dt >= min_time / 4 or iters >= 1 << 20:
            return max(1, math.ceil(iters * min_time / dt))
        iters *= 4


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown CPU"


def fmt(v: float) -> str:
    return f"{v / 1e6:.2f} M" if v >= 1e6 else f"{v / 1e3:.1f} k"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="device of the twin")
    p.add_argument("--repeats", type=int, default=7, help="timed repeats per cell; the median is reported")
    p.add_argument("--min-time", type=float, default=0.3, help="seconds per timed block (default 0.3)")
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="numbers of environments")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch.set_num_threads (default 1: like numpy's single-threaded vector env; 0 = torch's own choice)",
    )
    p.add_argument("--quick", action="store_true", help="3 repeats of 0.05 s blocks")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.min_time = 3, 0.05
    if args.repeats < 1 or args.min_time <= 0 or any(n < 1 for n in args.sizes):
        p.error("--repeats and --sizes must be >= 1 and --min-time > 0")
    if args.threads < 0:
        p.error("--threads must be >= 0 (0 = torch's own choice)")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    started = time.perf_counter()
    print(f"# CartPole-v1 env steps/s: twin on {device} vs Gymnasium CartPoleVectorEnv (CPU)")
    print(
        f"# {cpu_model()}, {torch.get_num_threads()} torch intra-op threads (os.cpu_count {os.cpu_count()})"
        f"; torch {torch.__version__}, numpy {np.__version__}, gymnasium {gymnasium.__version__}, "
        f"python {platform.python_version()}"
    )
    if device.type == "cuda":
        print(f"# GPU: {torch.cuda.get_device_name(device)}")
    print(f"# repeats {args.repeats}, >= {args.min_time} s per timed block, fwd+bwd window {WINDOW} steps\n")
    print(
        f"| envs | Gymnasium vector env | twin forward | twin/gym | twin fwd+bwd ({WINDOW}-step window) | fwd+bwd/gym |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for n in args.sizes:
        runners: list[Runner] = [GymRunner(n), TwinForwardRunner(n, device), TwinForwardBackwardRunner(n, device)]
        iters = [calibrate(r, args.min_time, sync) for r in runners]
        rates: dict[str, list[float]] = {r.name: [] for r in runners}
        for rep in range(args.repeats):
            for j in range(len(runners)):
                k = (j + rep) % len(runners)
                rates[runners[k].name].append(timed(runners[k], iters[k], sync))
        grad = runners[2].last_grad
        if not bool(torch.isfinite(grad).all()):
            raise RuntimeError(f"non-finite action gradient at n={n}")
        gym_r, fwd_r, bwd_r = rates["gym"], rates["twin fwd"], rates["twin fwd+bwd"]
        ratio_fwd = statistics.median(f / g for f, g in zip(fwd_r, gym_r, strict=True))
        ratio_bwd = statistics.median(b / g for b, g in zip(bwd_r, gym_r, strict=True))
        print(
            f"| {n} | {fmt(statistics.median(gym_r))} | {fmt(statistics.median(fwd_r))} | {ratio_fwd:.2f} | "
            f"{fmt(statistics.median(bwd_r))} | {ratio_bwd:.2f} |",
            flush=True,
        )
    print(f"\n# steps/s (k = 1e3, M = 1e6); total time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
