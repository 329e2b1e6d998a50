"""Benchmark the model-based methods (``<estimator>-model``) on the development suite of issue 12, with the generic
defaults: real env steps to solve, training seconds to solve, imagined steps, final greedy return.

    python bench/bench_model_based.py --methods st-gumbel-model --seeds 0 1 2 --out bench/results/model.jsonl
    python bench/bench_model_based.py --out bench/results/model.jsonl --table      # the table of what finished

Each (method, env, seed) run trains through ``agents.make_agent`` (never a twin) until the periodic 100-episode
greedy check reaches the env's ``reward_threshold`` or the budget runs out, then appends one JSON line to ``--out``.
Runs already in ``--out`` are skipped, so an interrupted sweep resumes by running the same command (a run that
was cut off midway restarts from scratch). One torch thread per run, runs one after another.

``CliffWalking-v1`` is left out of the default suite: Gymnasium registers it with neither a ``reward_threshold``
("solved" is undefined) nor a time limit (a greedy policy that loops never ends an evaluation episode).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from statistics import median
from typing import Any

import torch

import agents
from agents.callbacks import StopTrainingOnSolved

SUITE: dict[str, int] = {
    "CartPole-v1": 50_000,
    "Acrobot-v1": 100_000,
    "FrozenLake-v1": 100_000,
    "gumbel_rl/FourRooms-11x11-v0": 160_000,
    "gumbel_rl/Maze-16x16-v0": 448_000,
}
"""Env id -> budget in real env steps (the gridworld budgets of docs/benchmarks.md; Acrobot 2x PPO's 45k)."""

EVAL_EVERY = 1_000


def run_one(method: str, env_id: str, seed: int, budget: int, hyperparameters: dict[str, Any]) -> dict[str, Any]:
    """Train one run to solved or ``budget`` real env steps; its numbers as a JSON-able dict."""
    t0 = time.perf_counter()
    agent = agents.make_agent(method, env_id, seed=seed, device="cpu", eval_every=EVAL_EVERY, **hyperparameters)
    with agent:
        agent.learn(budget, callback=StopTrainingOnSolved())
        final = agent.last_eval
        return {
            "method": method,
            "env_id": env_id,
            "seed": seed,
            "budget": budget,
            "hyperparameters": hyperparameters,
            "solved": agent.solved,
            "solve_env_steps": agent.solve_env_steps,
            "solve_wall_s": agent.solve_wall_s,
            "env_steps": agent.num_env_steps,
            "train_seconds": agent.train_wall_s,
            "imagined_steps": getattr(agent, "imagined_steps", 0),
            "imagination_seconds": getattr(agent, "imagination_seconds", 0.0),
            "final_eval_mean": final.mean if final is not None else None,
            "final_eval_episodes": final.episodes if final is not None else None,
            "wall_s_total": time.perf_counter() - t0,
            "torch_threads": torch.get_num_threads(),
        }


def read_results(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def table(results: list[dict[str, Any]]) -> str:
    """Markdown: per (env, method) the seeds solved, the median real env steps / seconds to solve (over all runs,
    an unsolved run counting as infinitely late: '--' when half or more did not solve), the median imagined steps."""
    lines = [
        "| env | method | solved | env steps to solve (median) | train s to solve (median) | imagined steps (median) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    keys = sorted({(r["env_id"], r["method"]) for r in results})
    for env_id, method in keys:
        runs = [r for r in results if (r["env_id"], r["method"]) == (env_id, method)]
        solved = [r for r in runs if r["solved"]]

        def med(key: str, runs: list[dict[str, Any]] = runs) -> str:
            values = sorted((r[key] if r["solved"] else float("inf")) for r in runs)
            m = median(values)
            return "--" if m == float("inf") else f"{m:,.0f}" if key == "solve_env_steps" else f"{m:.1f}"

        imagined = median(r["imagined_steps"] for r in runs)
        lines.append(
            f"| {env_id} | {method} | {len(solved)}/{len(runs)} | {med('solve_env_steps')} | {med('solve_wall_s')} "
            f"| {imagined:,.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=["st-gumbel-model"])
    parser.add_argument("--envs", nargs="+", default=list(SUITE))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="budget for every env (default: the SUITE budgets)")
    parser.add_argument("--hp", nargs="*", default=[], help="name=value overrides (JSON values)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/model_based.jsonl"))
    parser.add_argument("--table", action="store_true", help="print the table of the finished runs and exit")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.table:
        print(table(read_results(args.out)))
        return
    hp = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.hp)}
    done = {
        (r["method"], r["env_id"], r["seed"], json.dumps(r["hyperparameters"], sort_keys=True))
        for r in read_results(args.out)
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for env_id in args.envs:
        budget = args.steps or SUITE.get(env_id, 100_000)
        for method in args.methods:
            for seed in args.seeds:
                if (method, env_id, seed, json.dumps(hp, sort_keys=True)) in done:
                    continue
                result = run_one(method, env_id, seed, budget, hp)
                with args.out.open("a") as f:
                    f.write(json.dumps(result) + "\n")
                print(
                    f"{method} {env_id} seed {seed}: solved={result['solved']} steps={result['solve_env_steps']} "
                    f"s={result['solve_wall_s']} imagined={result['imagined_steps']:,}",
                    flush=True,
                )
    print(table(read_results(args.out)))


if __name__ == "__main__":
    main()
