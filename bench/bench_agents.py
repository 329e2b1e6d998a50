"""Methods side by side: success over seeds, env steps and training seconds to solve, ratios to SB3 PPO.

Every (method, seed) run trains with the tuned defaults until the periodic 100-episode greedy evaluation in the
real Gymnasium environment reaches ``reward_threshold`` (then it stops) or its budget runs out. All runs of one
environment use the same evaluation period, so "env steps to solve" has the same resolution for every method.
Runs go through ``experiments.compare`` (parallel processes, one torch thread each), so each one also leaves its
usual run directory under ``--out``, and an interrupted benchmark rerun skips the runs that finished.

    python bench/bench_agents.py --suite cartpole --seeds 10      # the CartPole-v1 goals
    python bench/bench_agents.py --suite gridworlds --seeds 10    # every registered gridworld
    python bench/bench_agents.py --suite all --seeds 10 --markdown docs/agents_table.md

Budgets: rl-baselines3-zoo's for the SB3 agents on CartPole-v1 (PPO 1e5, DQN 5e4, A2C 5e5), 5e4 for the critic
methods (the issue's goal), 2e5 for the pathwise methods and REINFORCE; on gridworlds 20 times the map's time
limit times 100 (enough for every method we tuned). Medians count a run that never solved as infinitely late.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

import envs
from experiments.compare import CompareSettings, run_comparison

PATHWISE = ["st-gumbel", "relaxed", "argmax", "reinmax", "gumbel-rao"]
BASELINES = ["reinforce", "ppo", "a2c", "dqn"]
CARTPOLE_BUDGETS = {
    **{m: 200_000 for m in PATHWISE},
    "st-gumbel-critic": 50_000,
    "reinforce": 200_000,
    "ppo": 100_000,
    "a2c": 500_000,
    "dqn": 50_000,
}
CARTPOLE_EVAL_EVERY = 4_096


def gridworld_budget(env_id: str) -> int:
    return 100 * 20 * gym.spec(env_id).max_episode_steps


def suite_plan(
    suite: str, methods: list[str] | None, env_ids: list[str] | None = None
) -> list[tuple[str, str, int, int]]:
    """(env_id, method, budget, eval_every) for every comparison of ``suite``."""
    plan = []
    if suite in ("cartpole", "all"):
        for m, budget in CARTPOLE_BUDGETS.items():
            plan.append(("CartPole-v1", m, budget, CARTPOLE_EVAL_EVERY))
    if suite in ("gridworlds", "all"):
        for env_id in envs.GRIDWORLD_IDS:
            for m in [*PATHWISE, "st-gumbel-critic", *BASELINES]:
                plan.append((env_id, m, gridworld_budget(env_id), 512))
    if methods:
        plan = [p for p in plan if p[1] in methods]
    if env_ids:
        plan = [p for p in plan if p[0] in env_ids]
    return plan


def fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "--"
    if isinstance(x, float):
        return f"{x:,.{digits}g}" if abs(x) < 1000 else f"{x:,.0f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "--"
    return f"{a / b:.2f}"


def markdown(rows: list[dict[str, Any]]) -> str:
    """One table per environment; ratios are method / PPO (below 1: the method needs less)."""
    out = []
    for env_id in dict.fromkeys(r["env"] for r in rows):
        env_rows = [r for r in rows if r["env"] == env_id]
        ppo = next((r for r in env_rows if r["method"] == "ppo"), None)
        out.append(f"**{env_id}** (threshold {gym.spec(env_id).reward_threshold})\n")
        out.append(
            "| method | solved | env steps to solve (median) | vs PPO | train s to solve (median) | vs PPO "
            "| final return IQM [95% CI] | budget |"
        )
        out.append("|---|---:|---:|---:|---:|---:|---|---:|")
        for r in env_rows:
            steps, wall = r["solve_env_steps_median"], r["solve_wall_s_median"]
            ppo_steps = ppo["solve_env_steps_median"] if ppo else None
            ppo_wall = ppo["solve_wall_s_median"] if ppo else None
            out.append(
                f"| {r['method']} | {round(r['success_rate'] * r['seeds'])}/{r['seeds']} "
                f"| {fmt(steps)} | {ratio(steps, ppo_steps)} | {fmt(wall)} | {ratio(wall, ppo_wall)} "
                f"| {fmt(r['final_return_iqm'], 4)} [{fmt(r['final_return_ci_low'], 4)}, "
                f"{fmt(r['final_return_ci_high'], 4)}] | {r['budget']:,} |"
            )
        out.append("")
    return "\n".join(out)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        cpu = next((ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if ln.startswith("Model name")), cpu)
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", choices=["cartpole", "gridworlds", "all"], default="all")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--methods", nargs="*", help="only these methods (default: all of the suite)")
    parser.add_argument("--envs", nargs="*", help="only these environment ids (default: all of the suite)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default="bench/results/agents")
    parser.add_argument("--markdown", help="also write the tables to this file")
    args = parser.parse_args(argv)

    rows = []
    started = time.perf_counter()
    for env_id, method, budget, eval_every in suite_plan(args.suite, args.methods, args.envs):
        settings = CompareSettings(
            env_id=env_id,
            methods=[method],
            seeds=args.seeds,
            steps=budget,
            device="cpu",
            hyperparameters={"eval_every": eval_every},
            stop_on_solved=True,
        )
        out = Path(args.out) / env_id.replace("/", "_") / method
        t0 = time.perf_counter()
        outcome = run_comparison(settings, out, workers=args.workers, log=lambda s: None)
        if outcome.summary is None:
            print("interrupted; rerun the same command to continue", file=sys.stderr)
            return 130
        for row in outcome.summary["rows"]:
            rows.append({"env": env_id, "budget": budget, **row})
            print(
                f"{env_id:32s} {method:18s} solved {row['success_rate']:.0%} "
                f"steps {fmt(row['solve_env_steps_median'])} s {fmt(row['solve_wall_s_median'])} "
                f"({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
    table = markdown(rows)
    header = (
        f"Command: `python {' '.join(['bench/bench_agents.py', *(argv if argv is not None else sys.argv[1:])])}`; "
        f"{args.seeds} seeds; {machine()}; {args.workers} parallel runs of one torch thread each; "
        f"{time.perf_counter() - started:.0f} s in all.\n"
    )
    print("\n" + header + "\n" + table)
    (Path(args.out) / "rows.json").write_text(json.dumps(rows, indent=2))
    if args.markdown:
        Path(args.markdown).write_text(header + "\n" + table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
