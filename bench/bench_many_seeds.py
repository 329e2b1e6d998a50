"""Many seeds in one process against one PPO seed: wall-clock until every seed has solved, on one torch thread.

Competitors, timed in one run, interleaved (round-robin per repeat), each until every seed's periodic 100-episode
greedy check reaches the threshold (then that seed stops) or the budget runs out:

- ``batched``: ``N`` seeds of ``--method`` trained together (``agents.many_seeds.ManySeeds``, seeds 0..N-1);
- ``ppo``: one seed of SB3 PPO with the package's tuned (rl-baselines3-zoo) hyperparameters (seed 0);
- ``separate``: the same ``N`` seeds of ``--method`` trained one after the other, one agent each;
- ``batched-big``: ``--big-seeds`` seeds trained together (optional, 0 = skip).

Reported per competitor: ``train_s`` -- training seconds until the last seed solved (the package's
``solve_wall_s``, evaluation excluded; for ``separate`` the sum over its seeds), and ``elapsed_s`` -- the whole
wall-clock including the periodic evaluations in the real environment; the ratios to PPO's; env steps to solve.
``--gridworlds`` also trains ``N`` seeds of every ``gumbel_rl/`` map in one process (batched per map, one map after
the other) and reports the same for the suite against one PPO seed per map.

``--iteration-times ENV`` instead times training iterations alone (no evaluation) on ``ENV``, interleaved per
repeat: ``N`` seeds batched as ``ManySeeds`` trains them (a twin with pre-drawn noise, ``envs.differentiable
.PreDrawnNoiseEnv``, steps all seeds at once, only its draws per seed), the same ``N`` seeds with the twin called once
per seed for its noisy calls (``per-seed-twin``: the path of twins without pre-drawn noise), and one seed alone;
it reports the median seconds per iteration and checks that the two batched paths trained the same weights.
``--method reinforce`` times its twin-rollout seeds batched (``agents.many_seeds.ManyReinforceSeeds``) the same way.

    python bench/bench_many_seeds.py --seeds 10 --big-seeds 100 --repeats 1 --json out.json
    python bench/bench_many_seeds.py --seeds 10 --iteration-times gumbel_rl/FourRooms-11x11-v0 --repeats 7
    python bench/bench_many_seeds.py --method reinforce --seeds 10 --iteration-times CartPole-v1 --repeats 7
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import envs  # noqa: E402
from agents import make_agent  # noqa: E402
from agents.callbacks import StopTrainingOnSolved  # noqa: E402
from agents.many_seeds import ManySeeds  # noqa: E402

CARTPOLE = "CartPole-v1"
EVAL_EVERY = 4_096
"""Evaluation period of every competitor on CartPole-v1 (as ``bench/bench_agents.py``), so that steps to solve have
one resolution."""


def _outcome(agents: list[Any], elapsed: float, train_s: float) -> dict[str, Any]:
    solved = [a.solved for a in agents]
    return {
        "seeds": len(agents),
        "solved": int(sum(solved)),
        "train_s": train_s if all(solved) else None,
        "elapsed_s": elapsed if all(solved) else None,
        "elapsed_total_s": elapsed,
        "solve_env_steps": [a.solve_env_steps for a in agents],
        "solve_wall_s": [a.solve_wall_s for a in agents],
    }


def run_batched(method: str, env_id: str, seeds: int, budget: int, eval_every: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    group = ManySeeds.make(method, env_id, range(seeds), device="cpu", eval_every=eval_every)
    group.learn(budget, callbacks=[StopTrainingOnSolved() for _ in range(seeds)])
    elapsed = time.perf_counter() - t0
    times = [a.solve_wall_s for a in group.agents if a.solve_wall_s is not None]
    return _outcome(group.agents, elapsed, max(times) if times else float("nan"))


def run_separate(method: str, env_id: str, seeds: int, budget: int, eval_every: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    agents = []
    for seed in range(seeds):
        agent = make_agent(method, env_id, seed=seed, device="cpu", eval_every=eval_every)
        agent.learn(budget, callback=StopTrainingOnSolved())
        agents.append(agent)
    elapsed = time.perf_counter() - t0
    return _outcome(agents, elapsed, sum(a.solve_wall_s or a.train_wall_s for a in agents))


def run_ppo(env_id: str, budget: int, eval_every: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    agent = make_agent("ppo", env_id, seed=0, device="cpu", eval_every=eval_every)
    try:
        agent.learn(budget, callback=StopTrainingOnSolved())
    finally:
        agent.close()
    elapsed = time.perf_counter() - t0
    return _outcome([agent], elapsed, agent.solve_wall_s or float("nan"))


def time_iterations(method: str, env_id: str, seeds: int, iterations: int, repeats: int) -> dict[str, Any]:
    """Median seconds per training iteration of the competitors described in the module docstring, timed
    ``iterations`` iterations at a time, round-robin over ``repeats`` rounds (after one warm-up iteration each)."""
    predrawn = ManySeeds.make(method, env_id, range(seeds), device="cpu")
    per_seed = ManySeeds.make(method, env_id, range(seeds), device="cpu")
    per_seed.twin.predrawn = False  # every noisy twin call once per seed, with the seed's generator
    single = make_agent(method, env_id, seed=0, device="cpu")
    competitors: dict[str, Any] = {
        "batched": predrawn._train_iteration,
        "per-seed-twin": per_seed._train_iteration,
        "single": single._train_iteration,
    }
    times: dict[str, list[float]] = {name: [] for name in competitors}
    for fn in competitors.values():
        fn()
    for _ in range(repeats):
        for name, fn in competitors.items():
            t0 = time.perf_counter()
            for _ in range(iterations):
                fn()
            times[name].append((time.perf_counter() - t0) / iterations)
    same = all(
        torch.equal(a, b)
        for a, b in zip(predrawn.policy.net.parameters(), per_seed.policy.net.parameters(), strict=True)
    )
    med = {name: statistics.median(ts) for name, ts in times.items()}
    return {
        "env_id": env_id,
        "seeds": seeds,
        "n_envs": single.config.n_envs,
        "horizon": getattr(single.config, "horizon", None),  # pathwise methods
        "n_steps": getattr(single.config, "n_steps", None),  # reinforce
        "iterations_per_round": iterations,
        "rounds": repeats,
        "seconds_per_iteration": times,
        "median_s": med,
        "per_seed_twin_vs_batched": med["per-seed-twin"] / med["batched"],
        "batched_vs_single": med["batched"] / med["single"],
        "batched_paths_identical": same,
    }


def machine() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "loadavg_at_start": load,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def _ratio(a: Any, b: Any) -> float | None:
    return None if a is None or b is None else a / b


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", default="st-gumbel")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--big-seeds", type=int, default=0, help="also this many seeds batched (0: skip)")
    p.add_argument("--repeats", type=int, default=1, help="interleaved rounds; medians over them are reported")
    p.add_argument("--budget", type=int, default=200_000, help="env steps per seed at most")
    p.add_argument("--ppo-budget", type=int, default=100_000)
    p.add_argument("--no-separate", action="store_true", help="skip the separate runs")
    p.add_argument("--gridworlds", action="store_true", help="also the gridworld suite, N seeds per map")
    p.add_argument("--grid-budget", type=int, default=100_000, help="env steps per seed at most on a gridworld")
    p.add_argument("--no-cartpole", action="store_true", help="skip CartPole-v1 (e.g. with --gridworlds)")
    p.add_argument("--iteration-times", metavar="ENV", default=None, help="only time training iterations on ENV")
    p.add_argument("--iterations", type=int, default=5, help="iterations per round with --iteration-times")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.iteration_times is not None:
        out = time_iterations(args.method, args.iteration_times, args.seeds, args.iterations, args.repeats)
        out["machine"] = machine() | {"loadavg_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None}
        for name, med in out["median_s"].items():
            print(f"{name:<14} {1e3 * med:8.1f} ms per iteration (median of {args.repeats} rounds)")
        print(
            f"per-seed-twin / batched {out['per_seed_twin_vs_batched']:.2f}; batched / single "
            f"{out['batched_vs_single']:.2f}; batched paths identical: {out['batched_paths_identical']}"
        )
        if args.json is not None:
            args.json.write_text(json.dumps(out, indent=2) + "\n")
        return 0
    report: dict[str, Any] = {"machine": machine(), "args": vars(args) | {"json": str(args.json)}, "cartpole": {}}
    rounds: dict[str, list[dict[str, Any]]] = {}
    for r in range(0 if args.no_cartpole else args.repeats):
        todo = [("batched", lambda: run_batched(args.method, CARTPOLE, args.seeds, args.budget, EVAL_EVERY))]
        todo.append(("ppo", lambda: run_ppo(CARTPOLE, args.ppo_budget, EVAL_EVERY)))
        if not args.no_separate:
            todo.append(("separate", lambda: run_separate(args.method, CARTPOLE, args.seeds, args.budget, EVAL_EVERY)))
        if args.big_seeds:
            todo.append(
                ("batched-big", lambda: run_batched(args.method, CARTPOLE, args.big_seeds, args.budget, EVAL_EVERY))
            )
        for name, fn in todo:
            out = fn()
            rounds.setdefault(name, []).append(out)
            print(
                f"round {r} {name}: {json.dumps({k: out[k] for k in ('seeds', 'solved', 'train_s', 'elapsed_s')})}",
                flush=True,
            )
    summary = {}
    for name, outs in rounds.items():
        tr = [o["train_s"] for o in outs if o["train_s"] is not None]
        el = [o["elapsed_s"] for o in outs if o["elapsed_s"] is not None]
        summary[name] = {
            "seeds": outs[0]["seeds"],
            "all_solved_rounds": len(el),
            "train_s_median": statistics.median(tr) if len(tr) == len(outs) else None,
            "elapsed_s_median": statistics.median(el) if len(el) == len(outs) else None,
            "solve_env_steps_median": statistics.median(
                [s for o in outs for s in o["solve_env_steps"] if s is not None] or [float("nan")]
            ),
        }
    ppo = summary.get("ppo", {"train_s_median": None, "elapsed_s_median": None})
    for row in summary.values():
        row["train_vs_ppo"] = _ratio(row["train_s_median"], ppo["train_s_median"])
        row["elapsed_vs_ppo"] = _ratio(row["elapsed_s_median"], ppo["elapsed_s_median"])
    report["cartpole"] = {"rounds": rounds, "summary": summary}
    print("\nCartPole-v1 (medians over rounds)")
    print(f"{'competitor':<14}{'seeds':>6}{'train s':>10}{'elapsed s':>11}{'train/PPO':>11}{'elapsed/PPO':>13}")
    for name, row in summary.items():
        f = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
        print(
            f"{name:<14}{row['seeds']:>6}{f(row['train_s_median'], '.1f'):>10}{f(row['elapsed_s_median'], '.1f'):>11}"
            f"{f(row['train_vs_ppo'], '.2f'):>11}{f(row['elapsed_vs_ppo'], '.2f'):>13}"
        )
    if args.gridworlds:
        grid: dict[str, Any] = {}
        for env_id in envs.GRIDWORLD_IDS:
            eval_every = 2_048
            b = run_batched(args.method, env_id, args.seeds, args.grid_budget, eval_every)
            q = run_ppo(env_id, args.grid_budget, eval_every)
            grid[env_id] = {"batched": b, "ppo": q}
            print(f"{env_id}: batched {b['solved']}/{b['seeds']} train {b['train_s']} elapsed {b['elapsed_s']}; "
                  f"ppo solved {q['solved']} train {q['train_s']} elapsed {q['elapsed_s']}", flush=True)  # fmt: skip
        report["gridworlds"] = grid
        for kind in ("train_s", "elapsed_s"):
            b_sum = sum(g["batched"][kind] or float("nan") for g in grid.values())
            q_sum = sum(g["ppo"][kind] or float("nan") for g in grid.values())
            print(f"suite {kind}: batched {b_sum:.1f}, ppo {q_sum:.1f}, ratio {b_sum / q_sum:.2f}")
    report["machine"]["loadavg_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
