"""Compare methods on one environment over seeds (0..N-1, or a list) -- the engine behind ``train.py compare``.

Every (method, seed) pair is one run (``experiments.runner``), written to ``DIR/<method>__s<seed>/`` with the same files
as a single run. Runs execute in parallel: local processes (``concurrent.futures`` with the "spawn" context, one
torch thread each) or Ray tasks (``backend="ray"``; ``ray.init()`` starts a local cluster, or joins the one named by
``RAY_ADDRESS`` -- the package must then be installed on its nodes and ``DIR`` be on a filesystem they share).
The ``"batched"`` backend (``train.py compare``'s default) is the local one except that the seeds of each method
that trains through a twin (the pathwise ones, and ``reinforce`` on twin rollouts:
``agents.many_seeds.trains_batched``) train in one process as one batched computation
(``experiments.runner.train_runs_batched``, ``agents.many_seeds.ManySeeds``): each seed still gets its own run
directory with the same files, and its result is the one it would get with any other companions. Its wall-clock
columns are the batch's: a seed's ``solve_wall_s`` is the time the whole batch had trained when that seed solved,
so they compare a method's N seeds in one process with other methods' seeds in one process each.
:func:`run_comparison`'s own default stays ``"local"`` (the benchmarks that time methods run by run).

Then ``DIR/summary.json``, ``DIR/summary.csv`` (one row per method, :data:`SUMMARY_COLUMNS`) and ``DIR/curves.png``.
Per method, over its seeds:

- ``success_rate``: fraction of runs that solved (the periodic 100-episode greedy check reached the threshold);
- ``solve_env_steps_median`` / ``solve_wall_s_median``: median over *all* runs of when they solved, a run that
  never solved counting as infinitely late -- so it is null (empty in the CSV) when half the runs or more never
  solved;
- ``final_return_iqm`` and its 95% stratified-bootstrap interval ``final_return_ci_low/high`` (``experiments.stats``,
  rliable's method; fixed bootstrap seed) of the final 100-episode deterministic evaluation return;
- ``wall_s_median``: median training seconds (evaluation excluded).

A comparison interrupted (Ctrl-C, SIGTERM) or killed and rerun with the same command skips the runs that finished
(their ``result.json`` exists), resumes the ones that left a checkpoint (runs checkpoint periodically, see
``experiments.runner.CheckpointPolicy``), and starts the rest; asking for more seeds or methods later reuses the
runs already there. ``DIR`` is locked while a comparison writes it
(``experiments.locks``), and every run directory while its run writes it.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import math
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import torch

from agents.base import EVAL_MEAN, SECONDS, STEPS
from agents.evaluation import reward_threshold
from experiments.locks import DirectoryLock
from experiments.plots import eval_points, plot_comparison
from experiments.run_callbacks import StopFlag
from experiments.run_log import csv_text, read_metrics_csv
from experiments.runner import (
    CHECKPOINT,
    CONFIG,
    DEFAULT_STEPS,
    METRICS,
    RESULT,
    CheckpointPolicy,
    MissingExtraError,
    RunExistsError,
    RunSettings,
    TrainingInterrupted,
    check_output_dir,
    check_run_settings,
    deferred_interrupts,
    environment_versions,
    open_resume,
    read_json,
    remove_temporary_files,
    sanitize,
    start_run,
    train_run,
    train_runs_batched,
    write_json,
)
from experiments.stats import BOOTSTRAP_REPS, median_or_none, stratified_bootstrap_iqm
from gumbel_rl.files import atomic_write_text

COMPARISON = "comparison.json"
SUMMARY_JSON, SUMMARY_CSV, CURVES = "summary.json", "summary.csv", "curves.png"
SUMMARY_COLUMNS = (
    "method",
    "seeds",
    "success_rate",
    "solve_env_steps_median",
    "solve_wall_s_median",
    "final_return_iqm",
    "final_return_ci_low",
    "final_return_ci_high",
    "wall_s_median",
)
WALL_CLOCK_COLUMNS = ("solve_wall_s_median", "wall_s_median")
"""Summary columns that depend on the machine's speed (everything else is a function of the seeds)."""
BACKENDS = ("batched", "local", "ray")
"""``batched``: local processes, the seeds of each twin method (pathwise, or ``reinforce`` on the twin) together
in one (``train.py compare``'s default); ``local``: one process per run; ``ray``: one Ray task per run."""
BOOTSTRAP_SEED = 0


@dataclass
class CompareSettings:
    """A comparison: ``methods`` on ``env_id``, ``steps`` env steps each, for ``seeds``: a count N (seeds 0..N-1) or
    a list of seeds."""

    env_id: str
    methods: list[str]
    seeds: int | list[int]
    steps: int = DEFAULT_STEPS
    device: str = "auto"
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    """Overrides applied to every method (each must accept them)."""
    stop_on_solved: bool = False
    gym_packages: list[str] = field(default_factory=list)
    """Packages imported (here and in every worker) before ``env_id`` is resolved; recorded in each run."""

    @property
    def seed_list(self) -> list[int]:
        """The seeds, in order: ``0..seeds-1`` for a count, else the list given."""
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)

    def check_seeds(self) -> None:
        """Raise ``ValueError`` (one line) unless ``seeds`` is a count >= 1 or a list of distinct seeds >= 0."""
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, (int, list, tuple)):
            raise ValueError(f"seeds must be a count or a list of seeds, got {self.seeds!r}")
        if isinstance(self.seeds, int):
            if self.seeds < 1:
                raise ValueError(f"the number of seeds must be a positive integer, got {self.seeds!r}")
            return
        if not self.seeds:
            raise ValueError("give at least one seed")
        bad = [s for s in self.seeds if not isinstance(s, int) or isinstance(s, bool) or s < 0]
        if bad:
            raise ValueError(f"seeds must be non-negative integers, got {bad[0]!r}")
        repeated = sorted({s for s in self.seeds if list(self.seeds).count(s) > 1})
        if repeated:
            raise ValueError(f"seed(s) listed more than once: {', '.join(map(str, repeated))}")

    def run_settings(self, method: str, seed: int) -> RunSettings:
        return RunSettings(
            self.env_id,
            method,
            seed,
            self.steps,
            self.device,
            dict(self.hyperparameters),
            self.stop_on_solved,
            list(self.gym_packages),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RunTask:
    """One (method, seed) run for a worker: its settings, directory, whether to resume its checkpoint, and when to
    checkpoint."""

    settings: RunSettings
    run_dir: str
    resume: bool
    checkpoints: CheckpointPolicy = CheckpointPolicy()


@dataclass
class ComparisonPlan:
    """What :func:`plan_comparison` decided, per (method, seed) in order: a finished run directory (a ``Path``) or
    a :class:`RunTask`; it holds the comparison directory's lock until :meth:`close` (a context manager)."""

    items: list[RunTask | Path]
    lock: DirectoryLock

    def close(self) -> None:
        self.lock.release()

    def __enter__(self) -> ComparisonPlan:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@dataclass
class ComparisonOutcome:
    """What :func:`run_comparison` did: the summary (None if interrupted) and every run's payload."""

    summary: dict[str, Any] | None
    payloads: list[dict[str, Any]]
    interrupted: bool = False
    signum: int = signal.SIGINT
    """The signal that interrupted it (exit code 128 + signum)."""

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [p for p in self.payloads if p["status"] == "failed"]


def run_dir_for(out: str | os.PathLike, method: str, seed: int) -> Path:
    """``DIR/<method>__s<seed>``."""
    return Path(out) / f"{sanitize(method)}__s{seed}"


# ---- planning ---------------------------------------------------------------------------------------------------
def _comparison_key(settings: CompareSettings) -> dict[str, Any]:
    """The settings that finished runs must share to be reused (methods and seeds may grow)."""
    return {
        "env_id": settings.env_id,
        "steps": settings.steps,
        "hyperparameters": settings.hyperparameters,
        "stop_on_solved": settings.stop_on_solved,
    }


def plan_comparison(
    settings: CompareSettings,
    out: str | os.PathLike,
    force: bool = False,
    checkpoints: CheckpointPolicy = CheckpointPolicy(),  # noqa: B008 - frozen dataclass
) -> ComparisonPlan:
    """Validate everything, lock ``DIR`` and decide, per (method, seed) in order, between a finished run dir (a
    ``Path``) and a :class:`RunTask`. Writes ``DIR/comparison.json`` (and removes leftover temporary files);
    nothing else is written. Close the plan to release ``DIR``.

    Raises:
        ValueError: no or repeated methods, seeds < 1, a bad method/env/hyperparameter (see
            ``check_run_settings``), ``DIR`` a file or not writable, ``DIR`` holding a single run, or ``DIR``
            holding a comparison with other settings (:class:`RunExistsError`; ``force`` reruns everything instead).
        experiments.locks.DirectoryLockedError: another process writes ``DIR``.
    """
    checkpoints.validate()
    out = check_output_dir(out)
    if not settings.methods:
        raise ValueError("give at least one method (--methods M1 M2 ...)")
    repeated = sorted({m for m in settings.methods if settings.methods.count(m) > 1})
    if repeated:
        raise ValueError(f"method(s) listed more than once: {', '.join(repeated)}")
    settings.check_seeds()
    for method in settings.methods:
        check_run_settings(settings.run_settings(method, settings.seed_list[0]))
    if (out / CONFIG).exists():
        raise RunExistsError(f"{out} holds a single run ({CONFIG}); give compare another --out")
    key = _comparison_key(settings)

    def refuse_other_settings() -> None:
        if (out / COMPARISON).exists() and not force:
            old = read_json(out / COMPARISON)
            diff = [k for k in key if old.get(k) != key[k]]
            if diff:
                detail = ", ".join(f"{k} {old.get(k)!r} -> {key[k]!r}" for k in diff)
                raise RunExistsError(
                    f"{out} holds a comparison with other settings ({detail}); use --force to rerun it or another --out"
                )

    refuse_other_settings()
    lock = DirectoryLock(out)
    try:
        refuse_other_settings()  # again, now that no other process can write it
        items: list[RunTask | Path] = []
        for method in settings.methods:
            for seed in settings.seed_list:
                run_dir = run_dir_for(out, method, seed)
                if not force and (run_dir / RESULT).is_file():
                    items.append(run_dir)
                    continue
                resume = not force and (run_dir / CHECKPOINT).is_file() and (run_dir / CONFIG).is_file()
                task = RunTask(settings.run_settings(method, seed), str(run_dir.resolve()), resume, checkpoints)
                items.append(task)
        remove_temporary_files(out)
        write_json(
            out / COMPARISON,
            {
                **key,
                "methods": settings.methods,
                "seeds": settings.seed_list,
                "gym_packages": settings.gym_packages,
                "versions": environment_versions(),
            },
        )
    except BaseException:
        lock.release()
        raise
    return ComparisonPlan(items, lock)


# ---- one run in a worker ----------------------------------------------------------------------------------------
def _curve(record: Sequence[dict[str, Any]], result: dict[str, Any]) -> list[dict[str, Any]]:
    """The periodic evaluations of a run (record rows reduced to ``time/total_timesteps``, ``time/train_seconds``
    and ``eval/mean_reward``), then its final evaluation at the end of training (so that every curve reaches the
    run's last env step, whatever ``eval_every`` was)."""
    points = [{k: r.get(k) for k in (STEPS, SECONDS, EVAL_MEAN)} for r in record if r.get(EVAL_MEAN) is not None]
    if not points or result["env_steps"] > points[-1][STEPS]:
        points.append({STEPS: result["env_steps"], SECONDS: result["wall_s"], EVAL_MEAN: result["eval_return_mean"]})
    return points


def execute_task(task: RunTask, stop_flag: Any = None) -> dict[str, Any]:
    """Run one task with one torch thread; returns its payload (``status`` "done" with ``result`` and ``curve``,
    from the agent's record, or "interrupted" with ``env_steps``). Exceptions from training propagate."""
    torch.set_num_threads(1)
    s = task.settings
    payload: dict[str, Any] = {"method": s.method, "seed": s.seed, "run_dir": task.run_dir}
    run = open_resume(task.run_dir, steps=s.steps, device=s.device) if task.resume else start_run(s, task.run_dir, True)
    with run:
        try:
            result = train_run(run, stop_flag=stop_flag, tensorboard=True, checkpoints=task.checkpoints)
        except TrainingInterrupted as exc:
            return {**payload, "status": "interrupted", "env_steps": exc.env_steps}
        return {**payload, "status": "done", "result": result, "curve": _curve(run.agent.record, result)}


def execute_batch(tasks: Sequence[RunTask], stop_flag: Any = None) -> list[dict[str, Any]]:
    """Run tasks of one pathwise method with one torch thread as batched computations (runs at the same env step
    together: ``experiments.runner.train_runs_batched``); returns their payloads, as :func:`execute_task`'s.
    Exceptions from training propagate."""
    torch.set_num_threads(1)
    runs = []
    try:
        for task in tasks:
            s = task.settings
            runs.append(
                open_resume(task.run_dir, steps=s.steps, device=s.device)
                if task.resume
                else start_run(s, task.run_dir, True)
            )
        groups: dict[int, list[int]] = {}
        for i, run in enumerate(runs):
            groups.setdefault(run.agent.num_env_steps, []).append(i)
        payloads: list[dict[str, Any]] = []
        stopped = False
        for members in groups.values():
            group = [runs[i] for i in members]
            base = [
                {"method": r.settings.method, "seed": r.settings.seed, "run_dir": tasks[i].run_dir}
                for i, r in zip(members, group, strict=True)
            ]
            if stopped:
                payloads += [
                    {**b, "status": "interrupted", "env_steps": r.agent.num_env_steps}
                    for b, r in zip(base, group, strict=True)
                ]
                continue
            try:
                results = train_runs_batched(group, stop_flag=stop_flag, checkpoints=tasks[members[0]].checkpoints)
            except TrainingInterrupted as exc:
                stopped = True
                payloads += [{**b, "status": "interrupted", "env_steps": exc.env_steps} for b in base]
                continue
            payloads += [
                {**b, "status": "done", "result": res, "curve": _curve(r.agent.record, res)}
                for b, r, res in zip(base, group, results, strict=True)
            ]
        return payloads
    finally:
        for run in runs:
            run.close()


def batch_tasks(tasks: Sequence[RunTask]) -> list[RunTask | list[RunTask]]:
    """The tasks as the ``batched`` backend runs them: the tasks of each method whose seeds train in one batch
    (``agents.many_seeds.trains_batched``: the pathwise methods, ``reinforce`` on twin rollouts), two or more, as one
    list; the others alone."""
    from agents.many_seeds import trains_batched

    by_method: dict[str, list[RunTask]] = {}
    for task in tasks:
        by_method.setdefault(task.settings.method, []).append(task)
    items: list[RunTask | list[RunTask]] = []
    for method, group in by_method.items():
        first = group[0].settings
        if len(group) > 1 and trains_batched(method, first.env_id, first.hyperparameters):
            items.append(group)
        else:
            items.extend(group)
    return items


def load_finished(run_dir: Path) -> dict[str, Any]:
    """The payload of a finished run of an earlier comparison, from its directory (``result.json`` and
    ``metrics.csv``)."""
    result = read_json(run_dir / RESULT)
    record = read_metrics_csv(run_dir / METRICS)
    return {
        "method": result["method"],
        "seed": result["seed"],
        "run_dir": str(run_dir.resolve()),
        "status": "skipped",
        "result": result,
        "curve": _curve(record, result),
    }


# ---- backends ---------------------------------------------------------------------------------------------------
class _EitherFlag:
    """Set when the parent's stop event or this worker's own SIGTERM flag is set."""

    def __init__(self, event: Any, own: StopFlag) -> None:
        self.event, self.own = event, own

    def is_set(self) -> bool:
        return self.own.is_set() or (self.event is not None and self.event.is_set())

    @property
    def signum(self) -> int:
        return self.own.signum if self.own.is_set() else signal.SIGINT


_WORKER_STOP: Any = None


def _init_local_worker(stop_event: Any) -> None:
    """Worker start-up: one torch thread; Ctrl-C is left to the parent, which sets ``stop_event`` instead; a
    SIGTERM sent to the worker itself stops its run at the next iteration boundary (checkpointed)."""
    global _WORKER_STOP
    own = StopFlag()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: own.set(signum))
    torch.set_num_threads(1)
    _WORKER_STOP = _EitherFlag(stop_event, own)


def _local_task(task: RunTask | list[RunTask]) -> dict[str, Any] | list[dict[str, Any]]:
    if isinstance(task, list):
        return execute_batch(task, _WORKER_STOP)
    return execute_task(task, _WORKER_STOP)


def _failed(task: RunTask, exc: BaseException) -> dict[str, Any]:
    s = task.settings
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return {
        "method": s.method,
        "seed": s.seed,
        "run_dir": task.run_dir,
        "status": "failed",
        "error": f"{type(exc).__name__}: {reason}",
    }


def run_local(tasks: Sequence[RunTask | list[RunTask]], workers: int, stop_flag: Any) -> Iterator[dict[str, Any]]:
    """Yield each task's payload as it finishes, from ``workers`` spawned processes; a list of tasks is one batched
    task (:func:`execute_batch`) whose payloads come together. Once ``stop_flag`` is set, pending tasks are
    cancelled and running ones stop at their next iteration boundary (checkpointed)."""
    ctx = multiprocessing.get_context("spawn")
    stop_event = ctx.Event()
    executor = cf.ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_init_local_worker, initargs=(stop_event,)
    )
    try:
        futures = {executor.submit(_local_task, task): task for task in tasks}
        pending = set(futures)
        while pending:
            done, pending = cf.wait(pending, timeout=0.25, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                if fut.cancelled():
                    continue
                exc = fut.exception()
                task = futures[fut]
                if exc is not None:
                    yield from (_failed(t, exc) for t in (task if isinstance(task, list) else [task]))
                    continue
                result = fut.result()
                yield from (result if isinstance(result, list) else [result])
            if stop_flag.is_set() and not stop_event.is_set():
                stop_event.set()
                for fut in pending:
                    fut.cancel()
        executor.shutdown(wait=True)
    except BaseException:
        # A second Ctrl-C (or a failure here): give up on the workers now.
        executor.shutdown(wait=False, cancel_futures=True)
        for proc in list(getattr(executor, "_processes", {}).values()):
            proc.terminate()
        raise


def _ray_task(task: RunTask) -> dict[str, Any]:
    # ray.cancel interrupts the task through _thread.interrupt_main(), which calls the Python SIGINT handler:
    # deferring it stops the run at its next iteration boundary, as Ctrl-C does for a local run.
    with deferred_interrupts() as flag:
        return execute_task(task, flag)


def run_ray(tasks: Sequence[RunTask], workers: int | None, stop_flag: Any) -> Iterator[dict[str, Any]]:
    """Like :func:`run_local` with Ray tasks (one CPU each). Starts a local Ray cluster with ``workers`` CPUs
    unless one is running or ``RAY_ADDRESS`` names one. Stopping cancels the tasks (a running one then
    checkpoints, as on Ctrl-C).

    Raises:
        MissingExtraError: Ray is not installed.
    """
    try:
        import ray
    except ImportError:
        raise MissingExtraError('the ray backend needs Ray: pip install -e ".[ray]"') from None
    started = False
    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init()
        else:
            ray.init(num_cpus=workers, include_dashboard=False)
        started = True
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(_ray_task)
        refs = {remote.remote(task): task for task in tasks}
        pending = list(refs)
        cancelled = False
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=0.25)
            for ref in done:
                task = refs[ref]
                try:
                    yield ray.get(ref)
                except ray.exceptions.TaskCancelledError:
                    s = task.settings
                    yield {"method": s.method, "seed": s.seed, "run_dir": task.run_dir, "status": "interrupted"}
                except Exception as exc:  # a failed task: report it, go on with the others
                    yield _failed(task, getattr(exc, "cause", None) or exc)
            if stop_flag.is_set() and not cancelled:
                cancelled = True
                for ref in pending:
                    ray.cancel(ref)
    finally:
        if started:
            ray.shutdown()


# ---- summary ----------------------------------------------------------------------------------------------------
def summarise(
    payloads: Sequence[dict[str, Any]], methods: Sequence[str], reps: int = BOOTSTRAP_REPS
) -> list[dict[str, Any]]:
    """One row per method (in ``methods`` order) from the finished runs' payloads; see the module docstring."""
    rows = []
    for method in methods:
        results = sorted((p["result"] for p in payloads if p["method"] == method and "result" in p), key=_by_seed)
        if not results:
            continue
        never = math.inf
        final = np.array([r["eval_return_mean"] for r in results], dtype=np.float64)
        ci = stratified_bootstrap_iqm(final, reps=reps, seed=BOOTSTRAP_SEED)
        rows.append(
            {
                "method": method,
                "seeds": len(results),
                "success_rate": float(np.mean([bool(r["solved"]) for r in results])),
                "solve_env_steps_median": median_or_none(
                    [r["solve_env_steps"] if r["solved"] else never for r in results]
                ),
                "solve_wall_s_median": median_or_none([r["solve_wall_s"] if r["solved"] else never for r in results]),
                "final_return_iqm": ci.point,
                "final_return_ci_low": ci.low,
                "final_return_ci_high": ci.high,
                "wall_s_median": float(np.median([r["wall_s"] for r in results])),
            }
        )
    return rows


def _by_seed(result: dict[str, Any]) -> int:
    return int(result["seed"])


def _fmt(value: Any, column: str) -> str:
    if value is None:
        return "-"
    if column in ("method", "seeds"):
        return str(value)
    if column == "success_rate":
        return f"{value:.0%}"
    if column == "solve_env_steps_median":
        return f"{value:,.0f}"
    if column.endswith("wall_s_median"):
        return f"{value:.1f}"
    return f"{value:.4g}"


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The summary rows as an aligned text table."""
    headers = {
        "method": "method",
        "seeds": "seeds",
        "success_rate": "solved",
        "solve_env_steps_median": "solve steps (med)",
        "solve_wall_s_median": "solve s (med)",
        "final_return_iqm": "final IQM",
        "final_return_ci_low": "95% CI low",
        "final_return_ci_high": "95% CI high",
        "wall_s_median": "train s (med)",
    }
    cells = [[headers[c] for c in SUMMARY_COLUMNS]] + [[_fmt(r.get(c), c) for c in SUMMARY_COLUMNS] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(SUMMARY_COLUMNS))]
    lines = []
    for j, row in enumerate(cells):
        padded = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(padded))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_summary(
    out: str | os.PathLike, settings: CompareSettings, payloads: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """Write ``summary.json``, ``summary.csv`` and ``curves.png`` for the finished runs; returns the summary."""
    out = Path(out)
    finished = [p for p in payloads if "result" in p]
    rows = summarise(finished, settings.methods)
    threshold = reward_threshold(settings.env_id)
    runs = []
    for p in sorted(finished, key=lambda p: (settings.methods.index(p["method"]), p["seed"])):
        r = p["result"]
        runs.append(
            {
                "method": p["method"],
                "seed": p["seed"],
                "run_dir": os.path.relpath(p["run_dir"], out.resolve()),
                **{
                    k: r.get(k)
                    for k in (
                        "solved",
                        "solve_env_steps",
                        "solve_wall_s",
                        "env_steps",
                        "wall_s",
                        "eval_return_mean",
                        "eval_return_std",
                        "stochastic_eval_return_mean",
                    )
                },
            }
        )
    summary = {
        "env_id": settings.env_id,
        "steps": settings.steps,
        "seeds": settings.seed_list,
        "methods": settings.methods,
        "hyperparameters": settings.hyperparameters,
        "reward_threshold": threshold,
        "bootstrap": {"statistic": "IQM", "reps": BOOTSTRAP_REPS, "size": 0.95, "seed": BOOTSTRAP_SEED},
        "rows": rows,
        "runs": runs,
    }
    write_json(out / SUMMARY_JSON, summary)
    atomic_write_text(out / SUMMARY_CSV, csv_text(rows, SUMMARY_COLUMNS))
    curves: dict[str, list[dict[str, np.ndarray]]] = {}
    for method in settings.methods:
        for p in finished:
            if p["method"] == method:
                curves.setdefault(method, []).append(eval_points(p["curve"]))
    n_seeds = len(settings.seed_list)
    title = f"{settings.env_id}: {len(settings.methods)} method(s) x {n_seeds} seed(s), {settings.steps:,} steps"
    plot_comparison(curves, out / CURVES, title, threshold)
    return summary


def check_backend(backend: str, workers: int | None = None) -> None:
    """Raise ``ValueError`` for an unknown backend or workers < 1, ``MissingExtraError`` for Ray missing."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 1):
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    if backend == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise MissingExtraError('the ray backend needs Ray: pip install -e ".[ray]"') from None


# ---- the whole thing --------------------------------------------------------------------------------------------
def run_comparison(
    settings: CompareSettings,
    out: str | os.PathLike,
    workers: int | None = None,
    backend: str = "local",
    force: bool = False,
    progress: bool = False,
    log: Callable[[str], None] = print,
    stop_flag: Any = None,
    plan: ComparisonPlan | None = None,
    checkpoints: CheckpointPolicy = CheckpointPolicy(),  # noqa: B008 - frozen dataclass
) -> ComparisonOutcome:
    """Plan, run the missing runs in parallel, and write the summary (see the module docstring).

    Args:
        workers: parallel runs (default: CPU count, at most the number of runs).
        backend: "local" (one process per run, the default), "batched" (processes, each twin method's
            seeds (pathwise, or ``reinforce`` on the twin) in one batched process; ``train.py compare``'s default)
            or "ray".
        progress: a tqdm bar over the runs on stderr.
        log: where one-line messages go ("skipped ...", failures).
        stop_flag: anything with ``is_set()``; when None, Ctrl-C and SIGTERM are deferred with
            ``deferred_interrupts`` (first: stop and checkpoint the running runs; second: quit at once).
        plan: the result of :func:`plan_comparison` when the caller validated already (then
            :func:`check_backend` is the caller's job too, and closing the plan is the caller's).
        checkpoints: when the runs checkpoint (used when planning here).
    Raises:
        ValueError: bad settings (see :func:`plan_comparison`), an unknown backend, workers < 1.
        MissingExtraError: ``backend="ray"`` without Ray.
    """
    if plan is None:
        check_backend(backend, workers)
        with plan_comparison(settings, out, force=force, checkpoints=checkpoints) as own_plan:
            return run_comparison(settings, out, workers, backend, force, progress, log, stop_flag, own_plan)
    payloads = []
    tasks: list[RunTask] = []
    for item in plan.items:
        if isinstance(item, Path):
            payloads.append(load_finished(item))
            log(f"skipped {item.name}: finished already ({RESULT} exists)")
        else:
            tasks.append(item)
            if item.resume:
                log(f"resuming {Path(item.run_dir).name} from its {CHECKPOINT}")
    interrupted, signum = False, signal.SIGINT
    if tasks:
        items: list[RunTask | list[RunTask]] = batch_tasks(tasks) if backend == "batched" else list(tasks)
        n = min(workers or os.cpu_count() or 1, len(items))
        notice = "stopping the running runs at their next iteration (checkpointed); a second signal quits now"
        guard = (
            contextlib.nullcontext(stop_flag)
            if stop_flag is not None
            else deferred_interrupts(lambda signum: log(f"{signal.Signals(signum).name}: {notice}"))
        )
        with guard as flag:
            bar = _bar(len(tasks), progress)
            stream = run_ray(tasks, n, flag) if backend == "ray" else run_local(items, n, flag)
            for payload in stream:
                payloads.append(payload)
                name = f"{payload['method']}__s{payload['seed']}"
                if payload["status"] == "failed":
                    log(f"run {name} failed: {payload['error']}")
                elif payload["status"] == "done" and bar is not None:
                    bar.set_postfix_str(f"{name}: return {payload['result']['eval_return_mean']:.4g}")
                if bar is not None:
                    bar.update(1)
            if bar is not None:
                bar.close()
            interrupted = flag.is_set() or any(p["status"] == "interrupted" for p in payloads)
            signum = getattr(flag, "signum", signal.SIGINT) if flag.is_set() else signal.SIGINT
    if interrupted:
        return ComparisonOutcome(None, payloads, interrupted=True, signum=signum)
    return ComparisonOutcome(write_summary(out, settings, payloads), payloads)


def _bar(total: int, progress: bool) -> Any:
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="runs", unit="run", dynamic_ncols=True)
