"""The development suite of issue 12 as a benchmark: every method family against SB3 PPO and DQN, per environment.

    python bench/bench_suite.py --workers 2                                   # the whole sweep (long; resumable)
    python bench/bench_suite.py --envs CartPole-v1 --methods st-gumbel-model ppo dqn --workers 2
    python bench/bench_suite.py --report-only --markdown suite.md            # the tables of what finished
    python bench/bench_suite.py --envs CartPole-v1 FrozenLake-v1 --methods ppo st-gumbel-critic \\
        --seeds 1 --budget-scale 0.02 --workers 1                            # a smoke test (a minute or two)

Environments (Gymnasium's own, or our registered maps; never a twin: the ``-model`` and ``-critic`` methods have
none, ``reinforce`` runs with ``rollout="gym"``), one budget of REAL env steps and one evaluation period per env,
the same for every method (every run stops when the periodic 100-episode greedy check reaches the env's
``reward_threshold``):

=============================  =========  ==========  ==================================================================
env                            budget     eval every  why this budget
=============================  =========  ==========  ==================================================================
CartPole-v1                    100,000    2,048       rl-baselines3-zoo's PPO n_timesteps (its DQN's is 5e4: DQN's
                                                      epsilon schedule is rescaled to reach its final value at the zoo's
                                                      absolute step, see :func:`method_hyperparameters`)
Acrobot-v1                     100,000    2,048       the zoo's tuned DQN n_timesteps (its PPO entry's 1e6 is an
                                                      untuned, normalised one; SB3 PPO solves in 33k-45k, issue 12)
FrozenLake-v1                  200,000    1,024       not in the zoo: 2,000 episodes of its 100-step time limit (the
                                                      gumbel_rl/ maps' rule in bench_agents.py)
CliffWalking-v1                104,000    512         not in the zoo: the budget of gumbel_rl/Cliff-4x12-v0, the same
                                                      4x12 map (its 1,000-step default limit would give 2e6)
gumbel_rl/FourRooms-11x11-v0   160,000    512         2,000 episodes of its 80-step limit (docs/benchmarks.md)
gumbel_rl/Maze-16x16-v0        448,000    512         2,000 episodes of its 224-step limit (docs/benchmarks.md)
=============================  =========  ==========  ==================================================================

Methods and seeds: ``st-gumbel-model`` 10; ``st-gumbel-critic``, ``reinforce-model``, ``reinforce``, ``ppo``,
``dqn`` 5 (on every env); the other estimators of both families (``relaxed-``, ``argmax-``, ``reinmax-``,
``gumbel-rao-`` with ``-model`` and ``-critic``) 3, on CartPole-v1, Acrobot-v1 and FrozenLake-v1 only. Every method
uses its tuned defaults (``agents.hyperparams``: rl-baselines3-zoo's for PPO/DQN where the zoo has the id, one
generic set for the ``-model`` and ``-critic`` families).

Each (env, method) is one ``experiments.compare`` comparison in ``OUT/<env>/<method>/`` (one run directory per
seed, parallel processes of one torch thread each). Interrupt it (Ctrl-C: the running runs checkpoint) and rerun
the same command to continue: finished runs are skipped, checkpointed ones resume. Several invocations with
disjoint ``--envs`` may run at once (each comparison directory is locked while written). ``--budget-scale`` runs
shorter budgets (a smoke test) into ``OUT-scale<x>`` by default, so they never mix with the real sweep.

Results outlive the machine through a records file (``--records``, default ``bench/records/suite.jsonl``,
committed): every finished run is added to it as one JSON line (env, method, seed, budget, evaluation period, its
``result.json`` and its imagined steps to solve), and a run found there is neither run again nor needs its
directory, so a sweep continues on a fresh clone and ``--report-only`` prints the tables from the records alone.
Runs stopped before their end (interrupted, checkpointed) are listed under their env's table with the env steps they
reached and their last greedy evaluation.

The report, per env: seeds solved; median REAL env steps to solve and its ratio to the best SB3 baseline (PPO or
DQN, whichever has the lower median); median training seconds to solve (evaluation excluded) and its ratio to the
best baseline in seconds; median imagined steps to solve (``train/imagined_steps`` of the model methods' records
at the solving evaluation); the IQM of the final 100-episode greedy return with its 95% stratified-bootstrap CI
(``experiments.compare.summarise``). Medians count a run that never solved as infinitely late ("--" when half the
runs or more never solved). Then each goal of issue 12 marked met / not met / not measured.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from bench_agents import fmt, machine, ratio  # noqa: E402

from agents.base import EVAL_MEAN, STEPS  # noqa: E402
from agents.evaluation import reward_threshold  # noqa: E402
from agents.hyperparams import default_hyperparameters  # noqa: E402
from experiments.compare import CompareSettings, load_finished, run_comparison, run_dir_for, summarise  # noqa: E402
from experiments.run_log import read_metrics_csv  # noqa: E402
from experiments.runner import METRICS, RESULT  # noqa: E402
from experiments.stats import median_or_none  # noqa: E402
from gumbel_rl.estimators import PATHWISE_ESTIMATORS  # noqa: E402


@dataclass(frozen=True)
class EnvBudget:
    """One env's budget (real env steps), evaluation period (env steps) and why that budget."""

    steps: int
    eval_every: int
    why: str


SUITE: dict[str, EnvBudget] = {
    "CartPole-v1": EnvBudget(100_000, 2_048, "zoo PPO n_timesteps (zoo DQN 5e4, epsilon schedule rescaled)"),
    "Acrobot-v1": EnvBudget(100_000, 2_048, "zoo DQN n_timesteps (tuned); zoo PPO's 1e6 is untuned"),
    "FrozenLake-v1": EnvBudget(200_000, 1_024, "not in the zoo: 2,000 episodes of its 100-step limit"),
    "CliffWalking-v1": EnvBudget(104_000, 512, "not in the zoo: gumbel_rl/Cliff-4x12-v0's budget (same map)"),
    "gumbel_rl/FourRooms-11x11-v0": EnvBudget(160_000, 512, "2,000 episodes of its 80-step limit"),
    "gumbel_rl/Maze-16x16-v0": EnvBudget(448_000, 512, "2,000 episodes of its 224-step limit"),
}
"""The development suite (issue 12), in report order."""

ZOO_BUDGETS: dict[tuple[str, str], int] = {
    ("ppo", "CartPole-v1"): 100_000,
    ("dqn", "CartPole-v1"): 50_000,
    ("ppo", "Acrobot-v1"): 1_000_000,
    ("dqn", "Acrobot-v1"): 100_000,
}
"""rl-baselines3-zoo's n_timesteps (hyperparams/ppo.yml, dqn.yml) for the suite's ids it has."""

BASELINES = ("ppo", "dqn")
MODEL, CRITIC = "st-gumbel-model", "st-gumbel-critic"
OTHER_ESTIMATORS = tuple(e for e in PATHWISE_ESTIMATORS if e != "st-gumbel")
OTHER_ENVS = ("CartPole-v1", "Acrobot-v1", "FrozenLake-v1")
"""Where the other estimators run (3 seeds)."""

SEEDS: dict[str, int] = {
    MODEL: 10,
    CRITIC: 5,
    "reinforce-model": 5,
    "reinforce": 5,
    "ppo": 5,
    "dqn": 5,
    **{f"{e}-{family}": 3 for family in ("model", "critic") for e in OTHER_ESTIMATORS},
}
"""Seeds per method (seeds 0..n-1), in report order."""

METHOD_HYPERPARAMETERS: dict[str, dict[str, Any]] = {"reinforce": {"rollout": "gym"}}
"""Per-method overrides: REINFORCE on Gymnasium's env, never the twin (issue 12: no twin in this suite)."""

IMAGINED = "train/imagined_steps"
DEFAULT_OUT = "bench/results/suite"
DEFAULT_RECORDS = "bench/records/suite.jsonl"


@dataclass(frozen=True)
class PlanItem:
    """One comparison: ``method`` on ``env_id`` for ``seeds``, ``budget`` real env steps, evaluation every
    ``eval_every`` env steps, with ``hyperparameters`` (``eval_every`` included) applied on top of the tuned
    defaults."""

    env_id: str
    method: str
    seeds: tuple[int, ...]
    budget: int
    eval_every: int
    hyperparameters: dict[str, Any] = field(default_factory=dict)

    def out_dir(self, root: str | os.PathLike) -> Path:
        """``root/<env with / as _>/<method>``."""
        return Path(root) / self.env_id.replace("/", "_") / self.method


def suite_methods(env_id: str) -> list[str]:
    """The methods benchmarked on ``env_id``, in report order."""
    return [m for m in SEEDS if env_id in OTHER_ENVS or not m.startswith(OTHER_ESTIMATORS)]


def method_hyperparameters(method: str, env_id: str, budget: int) -> dict[str, Any]:
    """Overrides for ``method`` on ``env_id`` with a ``budget`` (beyond ``eval_every``): ``rollout="gym"`` for
    ``reinforce``; for ``dqn`` where the zoo's budget differs, the exploration fraction that keeps the zoo's epsilon
    schedule in absolute env steps (``fraction * zoo_budget / budget``, at most 1), since SB3 decays epsilon over the
    fraction of the budget given to ``learn``."""
    hp = dict(METHOD_HYPERPARAMETERS.get(method, {}))
    zoo = ZOO_BUDGETS.get((method, env_id))
    if method == "dqn" and zoo is not None and zoo != budget:
        fraction = default_hyperparameters(method, env_id)["exploration_fraction"]
        hp["exploration_fraction"] = min(1.0, fraction * zoo / budget)
    return hp


def _check_choices(name: str, given: Sequence[str] | None, valid: Sequence[str]) -> None:
    bad = [g for g in given or () if g not in valid]
    if bad:
        raise ValueError(f"unknown {name} {bad[0]!r}; valid: {', '.join(valid)}")


def plan(
    methods: Sequence[str] | None = None,
    env_ids: Sequence[str] | None = None,
    max_seeds: int | None = None,
    budget_scale: float = 1.0,
) -> list[PlanItem]:
    """Every comparison of the suite, env by env in :data:`SUITE` order, methods in :data:`SEEDS` order.

    Args:
        methods, env_ids: only these (None: all).
        max_seeds: at most this many seeds per method (its first ones).
        budget_scale: multiplies every budget (rounded, at least 1); the evaluation period is capped at an eighth
            of the budget (so that a short run still evaluates along the way).
    Raises:
        ValueError: an unknown method or env id, ``max_seeds < 1`` or ``budget_scale <= 0``.
    """
    _check_choices("method", methods, list(SEEDS))
    _check_choices("env", env_ids, list(SUITE))
    if max_seeds is not None and max_seeds < 1:
        raise ValueError(f"max_seeds must be a positive integer, got {max_seeds!r}")
    if not (budget_scale > 0 and math.isfinite(budget_scale)):
        raise ValueError(f"budget_scale must be a positive number, got {budget_scale!r}")
    items = []
    for env_id, spec in SUITE.items():
        if env_ids and env_id not in env_ids:
            continue
        budget = max(1, round(spec.steps * budget_scale))
        eval_every = min(spec.eval_every, max(1, budget // 8))
        for method in suite_methods(env_id):
            if methods and method not in methods:
                continue
            n = SEEDS[method] if max_seeds is None else min(SEEDS[method], max_seeds)
            hp = {"eval_every": eval_every, **method_hyperparameters(method, env_id, budget)}
            items.append(PlanItem(env_id, method, tuple(range(n)), budget, eval_every, hp))
    return items


# ---- the numbers of one method on one env ------------------------------------------------------------------------
def imagined_steps_to_solve(record: Sequence[dict[str, Any]], result: dict[str, Any]) -> float | None:
    """``train/imagined_steps`` on the last record row at or before the run's solving evaluation; ``inf`` when the
    run never solved; None when the record has no imagined steps (a method without a model)."""
    if not any(IMAGINED in row for row in record):
        return None
    if not result["solved"]:
        return math.inf
    rows = [row for row in record if IMAGINED in row and row.get(STEPS, 0) <= result["solve_env_steps"]]
    return float(rows[-1][IMAGINED]) if rows else 0.0


def method_row(item: PlanItem, payloads: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The summary row of one comparison's finished runs (``experiments.compare.summarise``) plus ``env``,
    ``budget``, ``planned_seeds``, ``solved`` (count) and ``imagined_steps_median`` (None for methods without a
    model, or when half the runs or more never solved); None when no run finished."""
    finished = [p for p in payloads if "result" in p]
    rows = summarise(finished, [item.method])
    if not rows:
        return None
    imagined = [payload_imagined(p) for p in finished]
    has_model = any(v is not None for v in imagined)
    return {
        **rows[0],
        "env": item.env_id,
        "budget": item.budget,
        "planned_seeds": len(item.seeds),
        "solved": sum(bool(p["result"]["solved"]) for p in finished),
        "imagined_steps_median": median_or_none([v for v in imagined if v is not None]) if has_model else None,
        "has_model": has_model,
    }


def payload_imagined(payload: dict[str, Any]) -> float | None:
    """A finished run's imagined steps to solve: from its record, else from its directory's ``metrics.csv``."""
    if "imagined_to_solve" in payload:
        return payload["imagined_to_solve"]  # type: ignore[no-any-return]
    metrics = Path(payload["run_dir"]) / METRICS
    record = read_metrics_csv(metrics) if metrics.is_file() else []
    return imagined_steps_to_solve(record, payload["result"])


def finished_payloads(item: PlanItem, root: str | os.PathLike) -> list[dict[str, Any]]:
    """Payloads of the runs of ``item`` that finished (their ``result.json`` exists) under ``root``."""
    dirs = [run_dir_for(item.out_dir(root), item.method, seed) for seed in item.seeds]
    return [load_finished(d) for d in dirs if (d / RESULT).is_file()]


def unfinished_runs(item: PlanItem, root: str | os.PathLike, skip: Sequence[int] = ()) -> list[dict[str, Any]]:
    """The runs of ``item`` started but not finished under ``root`` (a ``metrics.csv`` and no ``result.json``), seeds
    in ``skip`` left out: seed, env steps reached and the last greedy evaluation's mean return (None before one)."""
    out = []
    for seed in item.seeds:
        d = run_dir_for(item.out_dir(root), item.method, seed)
        if seed in skip or (d / RESULT).is_file() or not (d / METRICS).is_file():
            continue
        record = read_metrics_csv(d / METRICS)
        evals = [row[EVAL_MEAN] for row in record if row.get(EVAL_MEAN) is not None]
        steps = int(record[-1][STEPS]) if record else 0
        out.append({"seed": seed, "steps": steps, "last_eval": evals[-1] if evals else None})
    return out


# ---- the records file --------------------------------------------------------------------------------------------
RecordKey = tuple[str, str, int, int, int]


def record_key(env_id: str, method: str, seed: int, budget: int, eval_every: int) -> RecordKey:
    """What identifies a finished run in the records: the same run under another budget or evaluation period is
    another run."""
    return (env_id, method, int(seed), int(budget), int(eval_every))


def load_records(path: str | os.PathLike | None) -> dict[RecordKey, dict[str, Any]]:
    """The records file's runs by :func:`record_key` (none when ``path`` is None or absent).

    Raises:
        ValueError: ``path`` is a directory, or a line is not a record (named by its line number).
    """
    if path is not None and Path(path).is_dir():
        raise ValueError(f"--records {path}: is a directory; give a JSON-lines file (or 'none')")
    if path is None or not Path(path).is_file():
        return {}
    out = {}
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            key = record_key(rec["env"], rec["method"], rec["seed"], rec["budget"], rec["eval_every"])
            rec["result"]["solved"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{i}: not a suite record ({exc})") from None
        out[key] = rec
    return out


def save_records(path: str | os.PathLike, records: dict[RecordKey, dict[str, Any]]) -> None:
    """Write the records (sorted, one JSON line each) atomically: a temporary file renamed over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    lines = [json.dumps(records[k], sort_keys=True, default=str) for k in sorted(records)]
    tmp.write_text("".join(line + "\n" for line in lines))
    os.replace(tmp, path)


def make_record(item: PlanItem, payload: dict[str, Any]) -> dict[str, Any]:
    """The record of one finished run of ``item``."""
    return {
        "env": item.env_id,
        "method": item.method,
        "seed": int(payload["result"]["seed"]),
        "budget": item.budget,
        "eval_every": item.eval_every,
        "result": payload["result"],
        "imagined_to_solve": payload_imagined(payload),
    }


def record_runs(
    records: dict[RecordKey, dict[str, Any]],
    path: str | os.PathLike | None,
    item: PlanItem,
    payloads: Sequence[dict[str, Any]],
) -> None:
    """Add the finished runs among ``payloads`` to ``records`` and save them to ``path`` (nothing when None)."""
    finished = [p for p in payloads if "result" in p]
    if path is None or not finished:
        return
    for p in finished:
        records[record_key(item.env_id, item.method, p["result"]["seed"], item.budget, item.eval_every)] = make_record(
            item, p
        )
    save_records(path, records)


def recorded_payloads(item: PlanItem, records: dict[RecordKey, dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Payloads (by seed) of the runs of ``item`` found in the records."""
    out = {}
    for seed in item.seeds:
        rec = records.get(record_key(item.env_id, item.method, seed, item.budget, item.eval_every))
        if rec is not None:
            out[seed] = {
                "method": item.method,
                "seed": seed,
                "run_dir": None,
                "status": "recorded",
                "result": rec["result"],
                "imagined_to_solve": rec["imagined_to_solve"],
            }
    return out


# ---- best baseline, goals, tables --------------------------------------------------------------------------------
def _inf(value: float | None) -> float:
    return math.inf if value is None else float(value)


def best_baseline(rows: dict[str, dict[str, Any]], column: str) -> str | None:
    """The SB3 baseline (PPO or DQN) with the lower median ``column`` (None counting as never; PPO on a tie);
    None when neither has a row."""
    present = [m for m in BASELINES if m in rows]
    return min(present, key=lambda m: _inf(rows[m][column])) if present else None


@dataclass(frozen=True)
class Goal:
    """One performance goal of issue 12 on one env: ``mark`` is "met", "not met" or "not measured"."""

    name: str
    mark: str
    detail: str


MET, NOT_MET, NOT_MEASURED = "met", "not met", "not measured"


def _at_most(a: float | None, factor: float, b: float | None) -> bool:
    """a <= factor * b, with None meaning never (infinitely late): never <= anything is False, a finite a <= never
    is True."""
    if a is None:
        return False
    return b is None or a <= factor * b


def goals(rows: dict[str, dict[str, Any]], scaled: bool = False) -> list[Goal]:
    """The goals of issue 12 on one env from its rows (method -> :func:`method_row`), marked. A goal is "not
    measured" when the budget was scaled, its method has fewer finished seeds than the goal needs, or both
    baselines are missing -- except that a goal on how many seeds solve is decided as soon as the finished seeds
    decide it: "not met" once more seeds failed (ran to the budget unsolved) than the goal allows, whatever the
    unfinished ones do, and (the critic's goal, which is that count alone) "met" once enough seeds solved."""
    out = []
    base_steps, base_wall = best_baseline(rows, "solve_env_steps_median"), best_baseline(rows, "solve_wall_s_median")

    def decided_by_count(name: str, method: str, need: int) -> Goal | None:
        row = rows.get(method)
        if scaled or row is None or row["seeds"] >= SEEDS[method]:
            return None
        failed, total = row["seeds"] - row["solved"], SEEDS[method]
        detail = f"{row['solved']}/{row['seeds']} finished seeds solved, {total - row['seeds']} unfinished"
        if failed > total - need:
            return Goal(name, NOT_MET, f"{detail}: at most {total - failed}/{total} can solve")
        if method == CRITIC and row["solved"] >= need:
            return Goal(name, MET, detail)
        return None

    def unmeasured(name: str, method: str) -> Goal | None:
        if scaled:
            return Goal(name, NOT_MEASURED, "budget scaled")
        row = rows.get(method)
        if row is None or row["seeds"] < SEEDS[method]:
            return Goal(name, NOT_MEASURED, f"{row['seeds'] if row else 0}/{SEEDS[method]} {method} seeds finished")
        if base_steps is None:
            return Goal(name, NOT_MEASURED, "no SB3 baseline finished")
        return None

    name = f"{MODEL} solves on >= 9/10 seeds, median real steps <= 0.5x best SB3"
    goal = decided_by_count(name, MODEL, 9) or unmeasured(name, MODEL)
    if goal is None:
        row = rows[MODEL]
        mine, base = row["solve_env_steps_median"], rows[base_steps]["solve_env_steps_median"]
        ok = row["solved"] >= 9 and _at_most(mine, 0.5, base)
        detail = f"{row['solved']}/{row['seeds']} solved, {fmt(mine)} vs {base_steps} {fmt(base)} ({ratio(mine, base)})"
        goal = Goal(name, MET if ok else NOT_MET, detail)
    out.append(goal)

    name = f"{CRITIC} solves on >= 4/5 seeds within the budget"
    goal = decided_by_count(name, CRITIC, 4) or unmeasured(name, CRITIC)
    if goal is None:
        row = rows[CRITIC]
        goal = Goal(name, MET if row["solved"] >= 4 else NOT_MET, f"{row['solved']}/{row['seeds']} solved")
    out.append(goal)

    for method in (MODEL, CRITIC):
        name = f"{method} median train s to solve <= 2x best SB3"
        goal = unmeasured(name, method)
        if goal is None:
            assert base_wall is not None
            mine, base = rows[method]["solve_wall_s_median"], rows[base_wall]["solve_wall_s_median"]
            ok = _at_most(mine, 2.0, base)
            goal = Goal(
                name, MET if ok else NOT_MET, f"{fmt(mine)} s vs {base_wall} {fmt(base)} s ({ratio(mine, base)})"
            )
        out.append(goal)
    return out


def unfinished_markdown(unfinished: Sequence[dict[str, Any]]) -> list[str]:
    """Lines listing runs stopped before their end (``method``, ``seed``, ``steps``, ``budget``, ``last_eval``)."""
    lines = []
    for u in unfinished:
        last = "none yet" if u["last_eval"] is None else fmt(u["last_eval"], 4)
        lines.append(
            f"- unfinished: {u['method']} seed {u['seed']} stopped at {u['steps']:,} of {u['budget']:,} env steps, "
            f"not solved by then (last greedy evaluation {last}); the same command resumes it"
        )
    return lines


def env_markdown(
    env_id: str, rows: dict[str, dict[str, Any]], scaled: bool = False, unfinished: Sequence[dict[str, Any]] = ()
) -> str:
    """One env's table (rows in the given order), its goals and its unfinished runs, as markdown."""
    if not rows:
        return "\n".join([f"**{env_id}** (no finished run)", "", *unfinished_markdown(unfinished), ""])
    any_row = next(iter(rows.values()))
    base_steps, base_wall = best_baseline(rows, "solve_env_steps_median"), best_baseline(rows, "solve_wall_s_median")
    steps_ref = rows[base_steps]["solve_env_steps_median"] if base_steps else None
    wall_ref = rows[base_wall]["solve_wall_s_median"] if base_wall else None
    lines = [
        f"**{env_id}** (threshold {reward_threshold(env_id)}; budget {any_row['budget']:,} real env steps; "
        f"best SB3 baseline by steps: {base_steps or '--'}, by seconds: {base_wall or '--'})",
        "",
        "| method | solved | real env steps to solve (median) | vs best SB3 | train s to solve (median) | vs best SB3 "
        "| imagined steps to solve (median) | final return IQM [95% CI] |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for method, r in rows.items():
        steps, wall = r["solve_env_steps_median"], r["solve_wall_s_median"]
        imagined = fmt(r["imagined_steps_median"]) if r["has_model"] else "n/a"
        seeds = f"{r['solved']}/{r['seeds']}" + (
            f" (of {r['planned_seeds']})" if r["seeds"] < r["planned_seeds"] else ""
        )
        lines.append(
            f"| {method} | {seeds} | {fmt(steps)} | {ratio(steps, steps_ref)} | {fmt(wall)} | {ratio(wall, wall_ref)} "
            f"| {imagined} | {fmt(r['final_return_iqm'], 4)} [{fmt(r['final_return_ci_low'], 4)}, "
            f"{fmt(r['final_return_ci_high'], 4)}] |"
        )
    lines.append("")
    for goal in goals(rows, scaled):
        lines.append(f"- {goal.name}: **{goal.mark}** ({goal.detail})")
    lines += unfinished_markdown(unfinished)
    lines.append("")
    return "\n".join(lines)


def report(all_rows: Sequence[dict[str, Any]], scaled: bool = False, unfinished: Sequence[dict[str, Any]] = ()) -> str:
    """Every env's :func:`env_markdown`, envs in the order of their first row (or unfinished run); ``unfinished``
    holds the runs stopped before their end, each with its ``env``."""
    parts = []
    for env_id in dict.fromkeys([*(r["env"] for r in all_rows), *(u["env"] for u in unfinished)]):
        rows = {r["method"]: r for r in all_rows if r["env"] == env_id}
        parts.append(env_markdown(env_id, rows, scaled, [u for u in unfinished if u["env"] == env_id]))
    return "\n".join(parts)


# ---- command line ------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", help=f"only these methods (default: all: {', '.join(SEEDS)})")
    parser.add_argument("--envs", nargs="+", help="only these env ids (default: the whole suite)")
    parser.add_argument("--seeds", type=int, help="at most this many seeds per method (its first ones)")
    parser.add_argument("--budget-scale", type=float, default=1.0, help="multiply every budget (smoke tests)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel runs per comparison")
    parser.add_argument("--device", default="cpu", help="torch device of every run (default cpu)")
    parser.add_argument("--out", help=f"results root (default {DEFAULT_OUT}, or {DEFAULT_OUT}-scale<x> when scaled)")
    parser.add_argument("--report-only", action="store_true", help="train nothing: the tables of the finished runs")
    parser.add_argument("--markdown", help="also write the tables to this file")
    parser.add_argument(
        "--records",
        help=f"JSON-lines file of finished runs, read and extended (default {DEFAULT_RECORDS}; with --budget-scale "
        "none unless given); 'none' turns it off",
    )
    args = parser.parse_args(argv)
    try:
        items = plan(args.methods, args.envs, args.seeds, args.budget_scale)
    except ValueError as exc:
        parser.error(str(exc))
    scaled = args.budget_scale != 1.0
    out = Path(args.out or (DEFAULT_OUT if not scaled else f"{DEFAULT_OUT}-scale{args.budget_scale:g}"))
    records_path = args.records or (None if scaled else DEFAULT_RECORDS)
    if records_path == "none":
        records_path = None
    try:
        records = load_records(records_path)
    except ValueError as exc:
        parser.error(str(exc))
    torch.set_num_threads(1)
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    unfinished: list[dict[str, Any]] = []
    failed: list[str] = []
    for item in items:
        recorded = recorded_payloads(item, records)
        if args.report_only:
            payloads = [p for p in finished_payloads(item, out) if p["seed"] not in recorded]
        else:
            to_run = [seed for seed in item.seeds if seed not in recorded]
            payloads = []
            t0 = time.perf_counter()
            if to_run:
                settings = CompareSettings(
                    env_id=item.env_id,
                    methods=[item.method],
                    seeds=to_run,
                    steps=item.budget,
                    device=args.device,
                    hyperparameters=item.hyperparameters,
                    stop_on_solved=True,
                )
                outcome = run_comparison(settings, item.out_dir(out), workers=args.workers, log=lambda s: None)
                payloads = [p for p in outcome.payloads if "result" in p]
                record_runs(records, records_path, item, payloads)
                if outcome.interrupted:
                    print("interrupted; rerun the same command to continue", file=sys.stderr)
                    return 128 + int(outcome.signum)
                failed += [f"{item.env_id} {p['method']} s{p['seed']}: {p['error']}" for p in outcome.failed]
        if args.report_only:
            record_runs(records, records_path, item, payloads)  # directories a sweep of an older checkout left
        payloads = sorted([*payloads, *recorded.values()], key=lambda p: int(p["seed"]))
        unfinished += [
            {**u, "env": item.env_id, "method": item.method, "budget": item.budget}
            for u in unfinished_runs(item, out, skip=list(recorded))
        ]
        row = method_row(item, payloads)
        if row is None:
            continue
        rows.append(row)
        if not args.report_only:
            print(
                f"{item.env_id:30s} {item.method:18s} solved {row['solved']}/{row['seeds']} "
                f"steps {fmt(row['solve_env_steps_median'])} s {fmt(row['solve_wall_s_median'])} "
                f"imagined {fmt(row['imagined_steps_median']) if row['has_model'] else 'n/a'} "
                f"({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
    command = " ".join(["python bench/bench_suite.py", *(argv if argv is not None else sys.argv[1:])])
    runs = "tables of earlier runs" if args.report_only else f"{args.workers} parallel runs of one torch thread each"
    header = (
        f"Command: `{command}`; budgets x{args.budget_scale:g}; {machine()}; {runs}; "
        f"{time.perf_counter() - started:.0f} s in all.\n"
    )
    text = header + "\n" + report(rows, scaled, unfinished)
    print("\n" + text)
    for line in failed:
        print(f"failed: {line}", file=sys.stderr)
    if rows:
        out.mkdir(parents=True, exist_ok=True)
        (out / "rows.json").write_text(json.dumps(rows, indent=2, default=str))
    if args.markdown:
        Path(args.markdown).write_text(text)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
