"""CartPole-v1 on its own objective: st-gumbel trained on Gymnasium's return against the hand-shaped reward and PPO.

Rows (each with its tuned defaults from ``agents.hyperparams`` unless said):

- ``st-gumbel (env)``: the pathwise method on the twin's ``objective="env"`` (Gymnasium's reward of 1 per step
  times the straight-through survival, ``envs/cartpole_twin.py``);
- ``st-gumbel (shaped)``: the same hyperparameters with ``objective="shaped"`` (the hand-designed reward);
- ``st-gumbel (shaped, horizon 32)``: the shaped reward with the window the earlier CartPole defaults used;
- ``ppo``: SB3 PPO with rl-baselines3-zoo's hyperparameters and budget, on Gymnasium's reward;
- ``ppo (shaped)``: the control, the same PPO trained on the shaped reward (:class:`ShapedReward` replaces
  Gymnasium's reward in its training environments by the twin's ``shaped_reward`` formula; its evaluation, like
  every row's, is in the real ``CartPole-v1``).

Every run stops when the package's solve check passes (the periodic greedy evaluation every ``--eval-every`` env
steps, then the 100-episode greedy evaluation in the real env reaching the threshold 475; ``Agent.learn`` with
``StopTrainingOnSolved``, as ``train.py --stop-on-solved``). The runs are interleaved (seed by seed, every row in
turn) in one process with one torch thread, so that every row sees the same machine load. Reported per row: seeds
solved, median real env steps and median training seconds to solve (evaluation excluded: ``Agent.solve_wall_s``)
and the wall seconds to solve including the evaluations, each with its ratio to PPO's median; a run that never
solved counts as infinitely late ("--" when half the runs or more never solved).

    python bench/bench_objective.py --seeds 10 --markdown /tmp/objective.md
    python bench/bench_objective.py --seeds 5 --goal-seeds 10      # 10 seeds for st-gumbel (env) and ppo only
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
import torch

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from bench_agents import CARTPOLE_BUDGETS, fmt, machine, ratio  # noqa: E402

from agents import Agent, make_agent  # noqa: E402
from agents.callbacks import StopTrainingOnSolved  # noqa: E402
from envs.cartpole_twin import CartPoleTwin  # noqa: E402
from experiments.stats import median_or_none  # noqa: E402

ENV_ID = "CartPole-v1"


class ShapedReward(gym.Wrapper):
    """Replaces CartPole's reward by ``CartPoleTwin.shaped_reward`` of the new state,
    ``1 - 0.5 (theta / 12deg)^2 - 0.5 (x / 2.4)^2`` (computed from the env's float64 state); termination and
    truncation are Gymnasium's."""

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, _, terminated, truncated, info = self.env.step(action)
        x, _, theta, _ = self.env.unwrapped.state  # type: ignore[attr-defined]
        shaped = (
            1.0 - 0.5 * (theta / CartPoleTwin.theta_threshold_radians) ** 2 - 0.5 * (x / CartPoleTwin.x_threshold) ** 2
        )
        return obs, float(shaped), terminated, truncated, info


def shape_ppo_rewards(agent: Agent) -> Agent:
    """Wrap each training environment of an SB3 agent (its ``DummyVecEnv`` copies) in :class:`ShapedReward`.

    The SB3 ``Monitor`` inside keeps counting Gymnasium's returns (``rollout/ep_rew_mean``); only the reward PPO
    learns from changes. For benchmarking in-process only (the wrapper is not saved in checkpoints)."""
    venv = agent.venv  # type: ignore[attr-defined]
    venv.envs = [ShapedReward(env) for env in venv.envs]
    return agent


@dataclass(frozen=True)
class Row:
    """One benchmarked variant: ``method`` with ``hyperparameters`` over the tuned defaults, ``budget`` env steps."""

    name: str
    method: str
    budget: int
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    shaped_ppo: bool = False
    goal: bool = False
    """A row of the goal (run for ``--goal-seeds`` seeds)."""


ROWS = (
    Row("st-gumbel (env)", "st-gumbel", CARTPOLE_BUDGETS["st-gumbel"], {"objective": "env"}, goal=True),
    Row("st-gumbel (shaped)", "st-gumbel", CARTPOLE_BUDGETS["st-gumbel"], {"objective": "shaped"}),
    Row(
        "st-gumbel (shaped, horizon 32)",
        "st-gumbel",
        CARTPOLE_BUDGETS["st-gumbel"],
        {"objective": "shaped", "horizon": 32},
    ),
    Row("ppo", "ppo", CARTPOLE_BUDGETS["ppo"], goal=True),
    Row("ppo (shaped)", "ppo", CARTPOLE_BUDGETS["ppo"], shaped_ppo=True),
)


def run_one(row: Row, seed: int, eval_every: int) -> dict[str, Any]:
    """Train ``row`` with ``seed`` until solved or out of budget; the run's numbers."""
    t0 = time.perf_counter()
    agent = make_agent(row.method, ENV_ID, seed=seed, n_threads=1, eval_every=eval_every, **row.hyperparameters)
    if row.shaped_ppo:
        shape_ppo_rewards(agent)
    with agent:
        agent.learn(row.budget, StopTrainingOnSolved())
    wall = time.perf_counter() - t0
    return {
        "row": row.name,
        "seed": seed,
        "solved": agent.solved,
        "solve_env_steps": agent.solve_env_steps,
        "solve_train_s": agent.solve_wall_s,
        "wall_s": wall,
        "env_steps": agent.num_env_steps,
        "last_eval": agent.last_eval.mean if agent.last_eval is not None else None,
    }


def summary(name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Seeds solved and the medians (never-solved runs count as infinitely late)."""

    def med(key: str) -> float | None:
        return median_or_none([r[key] if r["solved"] else math.inf for r in runs])

    return {
        "row": name,
        "seeds": len(runs),
        "solved": sum(r["solved"] for r in runs),
        "steps": med("solve_env_steps"),
        "train_s": med("solve_train_s"),
        "wall_s": med("wall_s"),
        "steps_each": [r["solve_env_steps"] if r["solved"] else None for r in runs],
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    ppo = next(r for r in rows if r["row"] == "ppo")
    out = [
        "| method (training objective) | solved | env steps to solve (median) | vs PPO | train s to solve (median) "
        "| vs PPO | wall s to solve incl. evaluation (median) | vs PPO | env steps to solve, by seed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        each = ", ".join("--" if s is None else f"{s / 1000:.1f}k" for s in r["steps_each"])
        out.append(
            f"| {r['row']} | {r['solved']}/{r['seeds']} | {fmt(r['steps'])} | {ratio(r['steps'], ppo['steps'])} "
            f"| {fmt(r['train_s'])} | {ratio(r['train_s'], ppo['train_s'])} | {fmt(r['wall_s'])} "
            f"| {ratio(r['wall_s'], ppo['wall_s'])} | {each} |"
        )
    return "\n".join(out)


def load() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return f"load average {os.getloadavg()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..n-1 for every row")
    parser.add_argument(
        "--goal-seeds", type=int, default=None, help="more seeds for the goal rows (st-gumbel env, ppo)"
    )
    parser.add_argument("--eval-every", type=int, default=2_048, help="evaluation period (env steps), every row")
    parser.add_argument("--rows", nargs="*", help=f"only these rows (default all): {', '.join(r.name for r in ROWS)}")
    parser.add_argument("--markdown", help="also write the table to this file")
    parser.add_argument("--json", help="also write every run's numbers to this file")
    args = parser.parse_args(argv)
    names = [r.name for r in ROWS]
    for bad in set(args.rows or ()) - set(names):
        parser.error(f"unknown row {bad!r}; valid: {', '.join(names)}")
    rows = [r for r in ROWS if not args.rows or r.name in args.rows]
    goal_seeds = max(args.seeds, args.goal_seeds or 0)
    torch.set_num_threads(1)
    before = load()
    started = time.perf_counter()
    runs: list[dict[str, Any]] = []
    for seed in range(goal_seeds):
        for row in rows:
            if seed >= args.seeds and not row.goal:
                continue
            run = run_one(row, seed, args.eval_every)
            runs.append(run)
            print(
                f"{row.name:32s} seed {seed}: solved {run['solved']!s:5s} at {fmt(run['solve_env_steps'])} steps, "
                f"{fmt(run['solve_train_s'])} train s, {run['wall_s']:.1f} wall s",
                flush=True,
            )
    table = [summary(r.name, [x for x in runs if x["row"] == r.name]) for r in rows]
    command = " ".join(["python bench/bench_objective.py", *(argv if argv is not None else sys.argv[1:])])
    header = (
        f"Command: `{command}`; {machine()}; one process, one torch thread, rows interleaved seed by seed; "
        f"evaluation every {args.eval_every:,} env steps; {time.perf_counter() - started:.0f} s in all.\n"
        f"Load before: `{before}`; after: `{load()}`.\n"
    )
    text = header + "\n" + markdown(table)
    print("\n" + text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "rows": table}, indent=2, default=_json_default))
    return 0


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


if __name__ == "__main__":
    raise SystemExit(main())
