"""Benchmark: the MiniGrid twin's fidelity to ``minigrid`` and its throughput against ``minigrid``'s vector env.

Fidelity (``fidelity``): for each id, ``--episodes`` random-action episodes (uniform over the 7 actions, numpy seed
0) run in lock-step on ``--lanes`` real envs (``ImgObsWrapper`` + ``FlattenObservation``, reset with seeds 0, 1,
2, ...) and one float64 twin batch whose rows are copied from the real envs at each reset
(``envs.minigrid_twin.state_from_env``); every step compares the observation, reward, ``terminated`` and
``truncated`` exactly. Reports steps compared and mismatches (steps, episodes).

Throughput (``throughput``), at n environments:

- ``minigrid``: ``gymnasium.vector.SyncVectorEnv`` of ``n`` wrapped envs (one process, its own autoreset) stepping
  random actions; measured up to ``--gym-max`` envs (it is one Python loop over envs, so its steps/s do not depend
  on n beyond a few envs; larger n use the figure at ``--gym-max``, marked ``*``);
- ``twin fwd``: ``step`` + ``observe`` + ``reset_done`` under ``torch.no_grad()`` with random one-hot actions;
- ``twin fwd+bwd``: a 16-step window with autograd on: the (16, n, 7) one-hot actions are a leaf requiring grad, the
  loss is the sum of rewards plus a fixed random linear function of every observation (standing in for a value),
  ``torch.autograd.grad`` w.r.t. the actions; then finished envs are re-drawn. One window = 16 n env steps. Up to
  ``--bwd-max`` envs (the window's graph holds every intermediate: memory grows as 16 n).

Each runner is warmed up and timed over a block of >= ``--min-time`` s; the runners alternate within each repeat
and the median over ``--repeats`` is reported, with the ratio twin / minigrid. Torch runs on 1 intra-op thread.

Learning (``learning``): each of ``--methods`` (default ``st-gumbel``; ``ppo`` is SB3 PPO with rl-baselines3-zoo's
MiniGrid settings) on each id for each ``--seeds``, with the tuned defaults (``agents.hyperparams``) overridden by
``--hp NAME=VALUE`` (as ``train.py``), for at most ``--budget`` env steps on 1 torch thread, stopping when solved:
the package's standard check (every ``eval_every`` steps a greedy evaluation in the real env, ``ImgObsWrapper`` +
``FlattenObservation``; at the threshold the 100-episode check decides). Every method gets the same ``eval_every``
(``--eval-every``, default 2,048), so that all are checked at the same env steps. The methods take turns seed by
seed (the order rotates with the seed), so that they share the machine's load. Reports per run the env steps to
solve (``--``: not solved), the last evaluation's mean return and the training seconds, then per id and method the
seeds solved, the median steps to solve (an unsolved run counts as infinitely late) and the median training seconds,
with their ratio to ``ppo``'s when it ran. ``--records FILE`` appends each finished run as a JSON line and skips the
runs already there (same id, method, seed, budget, evaluation period and overrides), so an interrupted sweep resumes.

Run ``python bench/bench_minigrid.py fidelity``, ``python bench/bench_minigrid.py throughput`` and
``python bench/bench_minigrid.py learning --ids MiniGrid-DoorKey-5x5-v0 --hp explore_bonus=0.3``. Prints markdown.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from envs.minigrid_twin import MINIGRID_IDS, MiniGridState, MiniGridTwin, cat_states, state_from_env  # noqa: E402
from experiments.stats import median_or_none  # noqa: E402

FIDELITY_IDS = (
    "MiniGrid-Empty-5x5-v0",
    "MiniGrid-Empty-Random-6x6-v0",
    "MiniGrid-Empty-8x8-v0",
    "MiniGrid-DoorKey-5x5-v0",
    "MiniGrid-DoorKey-8x8-v0",
    "MiniGrid-LavaGapS5-v0",
    "MiniGrid-LavaGapS7-v0",
    "MiniGrid-FourRooms-v0",
)
SIZES = (1, 64, 1024, 4096, 16384, 65536)
WINDOW = 16


def wrapped(env_id: str) -> gym.Env:  # type: ignore[type-arg]
    """``gymnasium.make(env_id)`` with ``ImgObsWrapper`` + ``FlattenObservation``, as ``agents.evaluation`` makes it."""
    from gymnasium.wrappers import FlattenObservation
    from minigrid.wrappers import ImgObsWrapper

    env = gym.make(env_id)
    if not isinstance(env.observation_space, gym.spaces.Box):  # not already wrapped by agents.evaluation
        env = FlattenObservation(ImgObsWrapper(env))
    return env


def _replace_row(state: MiniGridState, i: int, row: MiniGridState) -> MiniGridState:
    return MiniGridState(*(torch.cat([f[:i], r, f[i + 1 :]]) for f, r in zip(state, row, strict=True)))


def fidelity(env_id: str, episodes: int, lanes: int) -> dict[str, float]:
    """Lock-step comparison over ``episodes`` random-action episodes; returns counts."""
    lanes = min(lanes, episodes)
    real = [wrapped(env_id) for _ in range(lanes)]
    twin = MiniGridTwin(env_id, dtype=torch.float64)
    rng = np.random.default_rng(0)
    next_seed = 0
    for e in real:
        e.reset(seed=next_seed)
        next_seed += 1
    state = cat_states([state_from_env(e, torch.float64) for e in real])
    active = [True] * lanes
    bad_episode = [False] * lanes
    steps = mismatched_steps = finished = bad_episodes = 0
    while any(active):
        actions = rng.integers(0, 7, size=lanes)
        state, reward, terminated, truncated = twin.step(
            state, torch.nn.functional.one_hot(torch.as_tensor(actions), 7).double()
        )
        obs = twin.observe(state).numpy()
        for i, e in enumerate(real):
            if not active[i]:
                continue
            o, r, te, tr, _ = e.step(int(actions[i]))
            steps += 1
            same = (
                np.array_equal(obs[i], o)
                and float(reward[i]) == r
                and (bool(terminated[i]), bool(truncated[i])) == (te, tr)
            )
            if not same:
                mismatched_steps += 1
                bad_episode[i] = True
            if te or tr or not same:
                finished += 1
                bad_episodes += bad_episode[i]
                bad_episode[i] = False
                if next_seed < episodes:
                    e.reset(seed=next_seed)
                    next_seed += 1
                    state = _replace_row(state, i, state_from_env(e, torch.float64))
                else:
                    active[i] = False
    return {"episodes": finished, "steps": steps, "mismatched_steps": mismatched_steps, "bad_episodes": bad_episodes}


class GymRunner:
    def __init__(self, env_id: str, n: int) -> None:
        self.venv = gym.vector.SyncVectorEnv([lambda: wrapped(env_id) for _ in range(n)])
        self.venv.reset(seed=0)
        self.rng = np.random.default_rng(0)
        self.pool = [self.rng.integers(0, 7, size=n) for _ in range(16)]
        self.n, self.k = n, 0

    def run(self, iters: int) -> int:
        for _ in range(iters):
            self.venv.step(self.pool[self.k % 16])
            self.k += 1
        return iters * self.n


class TwinForward:
    def __init__(self, env_id: str, n: int, twin_cls: type = MiniGridTwin) -> None:
        self.twin = twin_cls(env_id)
        self.gen = torch.Generator().manual_seed(0)
        self.state = self.twin.reset(n, self.gen)
        self.pool = [
            torch.nn.functional.one_hot(torch.randint(0, 7, (n,), generator=self.gen), 7).float() for _ in range(16)
        ]
        self.n, self.k = n, 0

    def run(self, iters: int) -> int:
        with torch.no_grad():
            for _ in range(iters):
                self.state, _, te, tr = self.twin.step(self.state, self.pool[self.k % 16])
                self.twin.observe(self.state)
                self.state = self.twin.reset_done(self.state, te | tr, self.gen)
                self.k += 1
        return iters * self.n


class TwinBackward(TwinForward):
    def __init__(self, env_id: str, n: int, twin_cls: type = MiniGridTwin) -> None:
        super().__init__(env_id, n, twin_cls)
        self.value = torch.randn(147, generator=self.gen) / 147

    def run(self, iters: int) -> int:
        for _ in range(iters):
            idx = torch.randint(0, 7, (WINDOW, self.n), generator=self.gen)
            actions = torch.nn.functional.one_hot(idx, 7).float().requires_grad_(True)
            state, loss = self.state, torch.zeros(())
            for t in range(WINDOW):
                state, r, te, tr = self.twin.step(state, actions[t])
                loss = loss + r.sum() + (self.twin.observe(state) @ self.value).sum()
                state = self.twin.reset_done(state, te | tr, self.gen)
            torch.autograd.grad(loss, actions)
            self.state = type(state)(*(f.detach() for f in state))
        return iters * WINDOW * self.n


def timed(runner: GymRunner | TwinForward, iters: int) -> float:
    t0 = time.perf_counter()
    steps = runner.run(iters)
    return steps / (time.perf_counter() - t0)


def calibrate(runner: GymRunner | TwinForward, min_time: float) -> int:
    iters = 1
    while True:
        t0 = time.perf_counter()
        runner.run(iters)
        if time.perf_counter() - t0 >= min_time:
            return iters
        iters *= 2


def _load_twin_class(path: str) -> type:
    """``MiniGridTwin`` of the module file at ``path`` (an earlier version of envs/minigrid_twin.py)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("minigrid_twin_before", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"--before: cannot import {path!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.MiniGridTwin  # type: ignore[no-any-return]


def fmt(v: float) -> str:
    return f"{v:,.0f}"


def learning(method: str, env_id: str, seed: int, budget: int, hp: dict[str, Any]) -> dict[str, Any]:
    """One training run stopped when solved: steps to solve (None: not within ``budget``), last eval, seconds."""
    from agents import make_agent
    from agents.callbacks import StopTrainingOnSolved

    agent = make_agent(method, env_id, seed=seed, n_threads=1, **hp)
    try:
        agent.learn(budget, callback=StopTrainingOnSolved())
    finally:
        agent.close()
    last = agent.last_eval.mean if agent.last_eval is not None else float("nan")
    return {"solve_env_steps": agent.solve_env_steps, "last_eval": last, "train_s": agent.train_wall_s}


def _median_steps(steps: list[int | None]) -> str:
    """Median steps to solve, an unsolved run counting as infinitely late ("--" when half or more never solved)."""
    med = median_or_none([s if s is not None else math.inf for s in steps])
    return "--" if med is None else f"{med:,.0f}"


def run_key(env_id: str, method: str, seed: int, budget: int, hp: dict[str, Any]) -> str:
    """The identity of one learning run in a ``--records`` file."""
    return json.dumps([env_id, method, seed, budget, sorted(hp.items())], default=str)


def load_records(path: Path | None) -> dict[str, dict[str, Any]]:
    """The finished runs of a ``--records`` file (JSON lines) by :func:`run_key`; an absent file holds none.

    Raises:
        ValueError: ``path`` is a directory, or a line is not a run record (named by its line number).
    """
    if path is not None and path.is_dir():
        raise ValueError(f"--records {path}: is a directory; give a JSON-lines file")
    if path is None or not path.exists():
        return {}
    out = {}
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            out[rec["key"]] = rec
            rec["solve_env_steps"], rec["last_eval"], rec["train_s"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{i}: not a learning record ({exc})") from None
    return out


def learning_sweep(
    ids: list[str],
    methods: list[str],
    seeds: list[int],
    budget: int,
    hp: dict[str, Any],
    records: Path | None = None,
    run: Callable[[str, str, int, int, dict[str, Any]], dict[str, Any]] = learning,
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Every (id, seed, method) run, methods taking turns seed by seed; returns the results by (id, method).

    Runs already in ``records`` are not run again; each new one is appended to it as soon as it finishes."""
    done = load_records(records)
    results: dict[tuple[str, str], list[dict[str, Any]]] = {(e, m): [] for e in ids for m in methods}
    print("| id | method | seed | env steps to solve | last eval | train s |")
    print("|---|---|---:|---:|---:|---:|")
    for env_id in ids:
        for i, seed in enumerate(seeds):
            order = methods[i % len(methods) :] + methods[: i % len(methods)]
            for method in order:
                key = run_key(env_id, method, seed, budget, hp)
                if key in done:
                    res = done[key]
                else:
                    res = {"key": key, "id": env_id, "method": method, "seed": seed}
                    res.update(run(method, env_id, seed, budget, hp))
                    if records is not None:
                        with records.open("a") as f:
                            f.write(json.dumps(res) + "\n")
                results[env_id, method].append(res)
                n = res["solve_env_steps"]
                solved = "--" if n is None else f"{n:,}"
                print(
                    f"| {env_id} | {method} | {seed} | {solved} | {res['last_eval']:.3f} | {res['train_s']:.0f} |",
                    flush=True,
                )
    return results


def learning_summary(results: dict[tuple[str, str], list[dict[str, Any]]], budget: int) -> str:
    """Per id and method: seeds solved, env steps to solve (per seed and median) and median training seconds to
    solve, with ratios to ``ppo`` where it ran on the id (``--`` where half the seeds or more never solved)."""
    lines = [
        f"budget {budget:,} env steps; an unsolved run counts as infinitely late in the medians\n",
        "| id | method | solved | env steps to solve (per seed) | median | vs ppo | median train s to solve | vs ppo |",
        "|---|---|---:|---|---:|---:|---:|---:|",
    ]

    def med_of(runs: list[dict[str, Any]], key: str) -> float | None:
        return median_or_none([r[key] if r["solve_env_steps"] is not None else math.inf for r in runs])

    for (env_id, method), runs in results.items():
        steps = [r["solve_env_steps"] for r in runs]
        med, med_s = med_of(runs, "solve_env_steps"), med_of(runs, "train_s")
        ppo = results.get((env_id, "ppo"))
        vs = vs_s = "--"
        if ppo and method != "ppo":
            p_med, p_s = med_of(ppo, "solve_env_steps"), med_of(ppo, "train_s")
            if med is not None and p_med is not None:
                vs = f"{med / p_med:.2f}"
            if med_s is not None and p_s is not None:
                vs_s = f"{med_s / p_s:.2f}"
        per_seed = ", ".join("--" if s is None else f"{s:,}" for s in steps)
        n_solved = sum(s is not None for s in steps)
        lines.append(
            f"| {env_id} | {method} | {n_solved}/{len(runs)} | {per_seed} | {_median_steps(steps)} | {vs} | "
            f"{'--' if med_s is None else f'{med_s:.1f}'} | {vs_s} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["fidelity", "throughput", "learning"])
    p.add_argument(
        "--ids", nargs="+", default=None, help="env ids (default: fidelity FIDELITY_IDS, throughput DoorKey-5x5)"
    )
    p.add_argument("--episodes", type=int, default=1000, help="fidelity: episodes per id (default 1,000)")
    p.add_argument("--lanes", type=int, default=64, help="fidelity: real envs stepped side by side")
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    p.add_argument("--gym-max", type=int, default=1024, help="throughput: largest minigrid vector env measured")
    p.add_argument("--bwd-max", type=int, default=4096, help="throughput: largest batch for fwd+bwd (memory)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--min-time", type=float, default=0.5)
    p.add_argument(
        "--before",
        default=None,
        help="throughput: a file holding an earlier envs/minigrid_twin.py (git show REV:envs/minigrid_twin.py > F); "
        "its twin is timed too, interleaved, and the speedups of the current one over it reported",
    )
    p.add_argument(
        "--methods", "--method", nargs="+", default=["st-gumbel"], help="learning: the methods (default st-gumbel)"
    )
    p.add_argument(
        "--eval-every", type=int, default=2_048, help="learning: env steps between evaluations, every method"
    )
    p.add_argument("--records", default=None, help="learning: JSON-lines file of finished runs (resume; append)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="learning: seeds (default 0 1 2)")
    p.add_argument("--budget", type=int, default=40_000, help="learning: env steps per run at most (default 40,000)")
    p.add_argument("--hp", nargs="*", default=[], metavar="NAME=VALUE", help="learning: hyperparameter overrides")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    import agents.evaluation  # noqa: F401  (the same wrapped envs as training and evaluation)

    if args.what == "fidelity":
        ids = args.ids or list(FIDELITY_IDS)
        print("| id | episodes | steps compared | mismatched steps | episodes with a mismatch | seconds |")
        print("|---|---:|---:|---:|---:|---:|")
        for env_id in ids:
            t0 = time.perf_counter()
            res = fidelity(env_id, args.episodes, args.lanes)
            print(
                f"| {env_id} | {res['episodes']:,} | {res['steps']:,} | {res['mismatched_steps']} | "
                f"{res['bad_episodes']} | {time.perf_counter() - t0:.0f} |",
                flush=True,
            )
        return
    ids = args.ids or ["MiniGrid-DoorKey-5x5-v0"]
    before = _load_twin_class(args.before) if args.before else None
    if args.what == "learning":
        from agents.registry import resolve
        from experiments.runner import parse_hyperparameters

        records = Path(args.records) if args.records else None
        try:
            hp = {"eval_every": args.eval_every, **parse_hyperparameters(args.hp)}
            for env_id in ids:  # every refusal before the first run, not after an hour of them
                for method in args.methods:
                    resolve(method, env_id, hp)
            load_records(records)
        except ValueError as exc:
            p.error(str(exc))
        setting = " ".join(args.hp) or "tuned defaults"
        print(f"{', '.join(args.methods)}; {setting}; eval every {hp['eval_every']:,}; budget {args.budget:,}\n")
        results = learning_sweep(ids, args.methods, args.seeds, args.budget, hp, records)
        print("\n" + learning_summary(results, args.budget), flush=True)
        return
    for env_id in ids:
        if env_id not in MINIGRID_IDS:
            raise SystemExit(f"--ids: {env_id!r} has no twin; ids with one: {', '.join(MINIGRID_IDS)}")
        print(f"\n{env_id} (env steps/s, median of {args.repeats}; ratio twin / minigrid)\n")
        head = "| n envs | minigrid | twin fwd | ratio | twin fwd+bwd | ratio |"
        if before is not None:
            head += " before fwd | speedup | before fwd+bwd | speedup |"
        print(head)
        print("|---:" * (head.count("|") - 1) + "|")
        gym_rate = float("nan")
        for n in args.sizes:
            runners: dict[str, Callable[[], GymRunner | TwinForward]] = {"fwd": lambda n=n, e=env_id: TwinForward(e, n)}
            if n <= args.bwd_max:
                runners["bwd"] = lambda n=n, e=env_id: TwinBackward(e, n)
            if n <= args.gym_max:
                runners["gym"] = lambda n=n, e=env_id: GymRunner(e, n)
            if before is not None:
                runners["fwd0"] = lambda n=n, e=env_id: TwinForward(e, n, before)
                if n <= args.bwd_max:
                    runners["bwd0"] = lambda n=n, e=env_id: TwinBackward(e, n, before)
            built = {k: make() for k, make in runners.items()}
            iters = {k: calibrate(r, args.min_time) for k, r in built.items()}
            rates: dict[str, list[float]] = {k: [] for k in built}
            for rep in range(args.repeats):
                keys = list(built)
                keys = keys[rep % len(keys) :] + keys[: rep % len(keys)]
                for k in keys:
                    rates[k].append(timed(built[k], iters[k]))
            med = {k: statistics.median(v) for k, v in rates.items()}
            star = ""
            if "gym" in med:
                gym_rate = med["gym"]
            else:
                star = "*"
            bwd = f"{fmt(med['bwd'])} | {med['bwd'] / gym_rate:,.1f}" if "bwd" in med else "- | -"
            row = f"| {n:,} | {fmt(gym_rate)}{star} | {fmt(med['fwd'])} | {med['fwd'] / gym_rate:,.1f} | {bwd} |"
            if before is not None:
                row += f" {fmt(med['fwd0'])} | {med['fwd'] / med['fwd0']:.2f} |"
                row += f" {fmt(med['bwd0'])} | {med['bwd'] / med['bwd0']:.2f} |" if "bwd0" in med else " - | - |"
            print(row, flush=True)
            del built


if __name__ == "__main__":
    main()
