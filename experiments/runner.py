"""One training run, from settings to a directory of results -- the engine behind ``train.py train``.

A run directory holds:

- ``config.json``: every setting (env, method, seed, step budget, device, resolved hyperparameters and the
  overrides given), the evaluation protocol, and the versions of gumbel_rl, torch, gymnasium, SB3, numpy, Python,
  the platform and the device;
- ``metrics.csv``: the agent's record, one row per training iteration (``env_steps``, ``wall_s``, losses, and the
  periodic evaluation on the rows that evaluated) -- the union of the rows' keys as columns;
- ``policy.pt``: the trained policy (``GumbelPolicy.load`` reads it; its metadata names the env and method);
- ``curve.png``: greedy evaluation return against env steps, with the reward threshold;
- ``result.json``: the outcome (see :func:`finish_run`);
- ``checkpoint.pt``: the full agent (``Agent.save``), written at the end and on Ctrl-C, so ``--resume`` can
  continue an interrupted run or extend a finished one to more steps;
- ``tb/``: TensorBoard logs, when ``tensorboard`` is installed (optional).

Protocol: a run trains to its whole step budget (unless ``stop_on_solved``) and reports *when* it first solved
(``solve_env_steps``/``solve_wall_s``, from the agent's periodic 100-episode check), then a final evaluation of
``FINAL_EVAL_EPISODES`` deterministic episodes (and as many stochastic ones) in the real Gymnasium env, on env seed
:data:`EVAL_SEED` for every run so that methods and seeds are scored on the same start states.

Functions raise ``ValueError`` / ``FileNotFoundError`` with one-line messages for bad input (unknown method or
env, bad hyperparameter, a directory that already holds a run, a missing or corrupt checkpoint), *before* they
write anything; failures during training propagate unchanged.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime as _dt
import importlib.metadata
import io
import json
import math
import os
import platform
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

import envs
from agents.base import Agent, build_config
from agents.callbacks import BaseCallback, StopTrainingOnSolved
from agents.evaluation import EvalResult, evaluate, is_solved, reward_threshold
from agents.hyperparams import default_hyperparameters
from agents.registry import METHODS, check_env_id, make_agent, methods_for
from experiments.plots import plot_learning_curve
from experiments.run_callbacks import ProgressBarCallback, StopFlag, StopRequestCallback, TensorBoardCallback
from gumbel_rl.files import atomic_write_text
from gumbel_rl.policy import GumbelPolicy, resolve_device, space_to_dict

DEFAULT_ENV = "CartPole-v1"
DEFAULT_METHOD = "st-gumbel"
DEFAULT_STEPS = 100_000
"""Default step budget of ``train.py`` (env transitions; every method counts them the same way)."""
EVAL_SEED = 100_000
"""Env seed of the final evaluation of every run (copy i of the vectorised env gets EVAL_SEED + i); far from the
training seeds and from the agents' periodic-evaluation seeds (seed + 10000, seed + 20000)."""
FINAL_EVAL_EPISODES = 100
"""Episodes of the final deterministic (and stochastic) evaluation."""
FINAL_EVAL_ENVS = 20
"""Vectorised env copies of the final evaluation (5 episodes each): about twice as fast as 4 on CartPole, because
the policy then acts for 20 observations per call. ``train.py evaluate`` uses the same, so it reproduces the
numbers in ``result.json``."""

CONFIG, METRICS, POLICY, CURVE, RESULT, CHECKPOINT, TB_DIR = (
    "config.json",
    "metrics.csv",
    "policy.pt",
    "curve.png",
    "result.json",
    "checkpoint.pt",
    "tb",
)
RUN_FILES = (CONFIG, METRICS, POLICY, CURVE, RESULT, CHECKPOINT)


class RunExistsError(ValueError):
    """The output directory already holds a run (and neither ``force`` nor resuming was asked for)."""


class MissingExtraError(RuntimeError):
    """An optional dependency (a pyproject extra) is not installed; the message names the pip command."""


class TrainingInterrupted(Exception):
    """Training was interrupted (Ctrl-C); the checkpoint and metrics so far are saved in ``run_dir``."""

    def __init__(self, run_dir: Path, env_steps: int, target: int) -> None:
        super().__init__(f"interrupted at {env_steps} of {target} env steps; checkpoint in {run_dir}")
        self.run_dir, self.env_steps, self.target = run_dir, env_steps, target


@dataclass
class RunSettings:
    """What one run trains: ``method`` on ``env_id`` with ``seed`` for ``steps`` env steps on ``device``."""

    env_id: str = DEFAULT_ENV
    method: str = DEFAULT_METHOD
    seed: int = 0
    steps: int = DEFAULT_STEPS
    device: str = "auto"
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    """Overrides of the tuned defaults (``agents.hyperparams``)."""
    stop_on_solved: bool = False
    """Stop as soon as the periodic check says solved, instead of training to the whole budget."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---- names, versions, files -------------------------------------------------------------------------------------
def sanitize(name: str) -> str:
    """``name`` made safe as one path component (``gumbel_rl/EmptyRoom-5x5-v0`` -> ``gumbel_rl-EmptyRoom-5x5-v0``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "run"


def default_run_dir(env_id: str, method: str, seed: int, root: str | os.PathLike = "runs") -> Path:
    """``runs/<env>__<method>__s<seed>__<timestamp>`` (microseconds, so that reruns never collide)."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return Path(root) / f"{sanitize(env_id)}__{sanitize(method)}__s{seed}__{stamp}"


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment_versions(device: torch.device | None = None) -> dict[str, Any]:
    """Versions of the software a run depends on, and the machine and device it ran on."""
    import gymnasium
    import numpy

    import gumbel_rl

    info: dict[str, Any] = {
        "gumbel_rl": gumbel_rl.__version__,
        "torch": torch.__version__,
        "gymnasium": gymnasium.__version__,
        "stable_baselines3": _version("stable-baselines3"),
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if device is not None:
        info["device"] = str(device)
        if device.type == "cuda":
            info["device_name"] = torch.cuda.get_device_name(device)
            info["cuda"] = torch.version.cuda
    return info


def _json_safe(obj: Any) -> Any:
    """Tuples to lists, non-finite floats to None, numpy scalars to Python numbers (strict JSON)."""
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", None) == 0:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """``obj`` as indented, strict JSON (NaN/inf become null), written atomically."""
    return atomic_write_text(path, json.dumps(_json_safe(obj), indent=2, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON object from ``path``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not valid JSON or not an object (one line naming the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a JSON object, found {type(obj).__name__}")
    return obj


def csv_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Rows as CSV text; columns: ``columns`` or the union of the rows' keys in first-seen order; missing cells
    (and None) empty."""
    if columns is None:
        seen: dict[str, None] = {}
        for row in rows:
            seen.update(dict.fromkeys(row))
        columns = list(seen)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buf.getvalue()


def write_metrics_csv(path: str | os.PathLike, record: Sequence[Mapping[str, Any]]) -> Path:
    """The record as ``metrics.csv`` (``env_steps`` and ``wall_s`` first), written atomically."""
    keys: dict[str, None] = {"env_steps": None, "wall_s": None}
    for row in record:
        keys.update(dict.fromkeys(row))
    return atomic_write_text(path, csv_text(record, list(keys)))


def _parse_cell(text: str) -> Any:
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def read_metrics_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a ``metrics.csv`` with numbers and booleans parsed; empty cells dropped."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [{k: parsed for k, v in row.items() if (parsed := _parse_cell(v)) is not None} for row in rows]


def holds_run(run_dir: str | os.PathLike) -> bool:
    """True when ``run_dir`` contains any of a run's files."""
    run_dir = Path(run_dir)
    return any((run_dir / name).exists() for name in RUN_FILES)


def _clear_run(run_dir: Path) -> None:
    for name in RUN_FILES:
        with contextlib.suppress(FileNotFoundError):
            (run_dir / name).unlink()
    shutil.rmtree(run_dir / TB_DIR, ignore_errors=True)


# ---- command-line helpers --------------------------------------------------------------------------------------
def parse_value(text: str) -> Any:
    """A ``--hp`` value: JSON (numbers, ``true``/``false``/``null``, lists, objects, quoted strings), Python's
    ``True``/``False``/``None``, else the text itself as a string (``relu`` -> ``"relu"``)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return {"True": True, "False": False, "None": None}.get(text, text)


def parse_hyperparameters(items: Sequence[str]) -> dict[str, Any]:
    """``["learning_rate=3e-4", "net_arch=[32,32]"]`` -> ``{"learning_rate": 0.0003, "net_arch": [32, 32]}``.

    Raises:
        ValueError: an item without ``=`` or with an empty name, or a name given twice.
    """
    out: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"--hp expects NAME=VALUE (e.g. --hp learning_rate=3e-4), got {item!r}")
        if name in out:
            raise ValueError(f"--hp {name} given more than once")
        out[name] = parse_value(text.strip())
    return out


_GRID_NOTES = {
    "EmptyRoom": "open room, start top-left, goal bottom-right",
    "FourRooms": "four rooms joined by doors, two starts",
    "Maze": "depth-first maze",
    "Cliff": "CliffWalking's layout, traps between start and goal",
    "Slippery": "traps, moves slip with probability 0.2",
}


def describe_environments() -> list[tuple[str, str]]:
    """(id, one-line description) of CartPole-v1 and the ``gumbel_rl/`` gridworlds."""
    from envs.maps import SUITE

    out = [
        (
            "CartPole-v1",
            "Gymnasium's cart-pole, 2 actions, 500 steps at most; solved at return >= 475",
        )
    ]
    for spec in SUITE:
        name = spec.env_id.split("/")[-1].split("-")[0]
        note = _GRID_NOTES.get(name, "gridworld")
        size = f"{len(spec.layout)}x{len(spec.layout[0])}"
        out.append(
            (
                spec.env_id,
                f"{size} gridworld: {note}; solved at return >= {spec.reward_threshold:g}",
            )
        )
    return out


def describe_methods() -> list[tuple[str, str]]:
    """(name, one-line description) of every registered method; twin-only ones are marked."""
    return [(m, info.description + (" [needs a twin]" if info.needs_twin else "")) for m, info in METHODS.items()]


def load_policy_for(
    path: str | os.PathLike, env_id: str | None = None, device: str = "cpu"
) -> tuple[GumbelPolicy, str, dict[str, Any]]:
    """Load a policy file and the env to score it in: ``env_id``, else the ``env_id`` in its metadata.

    Returns ``(policy, env_id, metadata)``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a corrupt or foreign file, no env id anywhere, an unknown env, or an env whose observation or
            action space does not fit the policy.
    """
    meta = GumbelPolicy.read_metadata(path)
    policy = GumbelPolicy.load(path, device=device)
    env_id = env_id or (meta.get("extra") or {}).get("env_id")
    if not env_id:
        raise ValueError(f"{path} does not name its environment; give --env ID")
    action_space = check_env_id(env_id)
    env = gym.make(env_id)
    try:
        obs_space = env.observation_space
    finally:
        env.close()
    mine, theirs = space_to_dict(policy.observation_space), _space_or_none(obs_space)
    same_obs = theirs is not None and mine["type"] == theirs["type"] and mine.get("shape") == theirs.get("shape")
    same_obs = same_obs and mine.get("n") == theirs.get("n")
    if not same_obs or int(policy.action_space.n) != int(action_space.n):
        raise ValueError(
            f"{path} was trained on observations {_space_str(policy.observation_space)} and actions "
            f"{_space_str(policy.action_space)}; {env_id} has {_space_str(obs_space)} and {_space_str(action_space)}"
        )
    return policy, env_id, meta


def _space_str(space: gym.Space) -> str:
    if isinstance(space, gym.spaces.Box):
        return f"Box{tuple(space.shape)}"
    return str(space)


def _space_or_none(space: gym.Space) -> dict[str, Any] | None:
    try:
        return space_to_dict(space)
    except ValueError:
        return None


# ---- validation -------------------------------------------------------------------------------------------------
def check_run_settings(settings: RunSettings) -> None:
    """Validate a run's settings without building the agent (what ``make_agent`` would refuse, plus the budget).

    Raises:
        ValueError: unknown method or env, a twin-only method on an env without a twin, a bad hyperparameter,
            a bad device, or a step budget or seed that is not a non-negative integer.
    """
    if not isinstance(settings.steps, int) or isinstance(settings.steps, bool) or settings.steps < 1:
        raise ValueError(f"the step budget must be a positive integer, got {settings.steps!r}")
    if not isinstance(settings.seed, int) or isinstance(settings.seed, bool) or settings.seed < 0:
        raise ValueError(f"the seed must be a non-negative integer, got {settings.seed!r}")
    if settings.method not in METHODS:
        raise ValueError(f"unknown method {settings.method!r}; valid methods: {', '.join(METHODS)}")
    check_env_id(settings.env_id)
    info = METHODS[settings.method]
    if info.needs_twin and settings.env_id not in envs.differentiable_ids():
        raise ValueError(
            f"method {settings.method!r} trains through a differentiable twin and {settings.env_id!r} has none; "
            f"methods that work on {settings.env_id!r}: {', '.join(methods_for(settings.env_id))}"
        )
    build_config(
        info.agent_cls.config_cls, default_hyperparameters(settings.method, settings.env_id), settings.hyperparameters
    )
    resolve_device(settings.device)


# ---- Ctrl-C -----------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def deferred_sigint(notify: Any = None) -> Iterator[StopFlag]:
    """Within the block, the first Ctrl-C only sets the yielded flag (a :class:`StopRequestCallback` then stops
    training at the next iteration boundary, so the checkpoint is consistent); a second one raises
    ``KeyboardInterrupt`` at once. Outside the main thread it changes nothing (the flag is never set).

    Args:
        notify: called with no argument on the first Ctrl-C (e.g. to print "stopping...").
    """
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        if flag.is_set():
            raise KeyboardInterrupt
        flag.set()
        if notify is not None:
            notify()

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


# ---- a run ------------------------------------------------------------------------------------------------------
def start_run(
    settings: RunSettings, run_dir: str | os.PathLike, force: bool = False, command: Sequence[str] | None = None
) -> Agent:
    """Validate, build the agent and write ``config.json`` in ``run_dir`` (created). Nothing is written on error.

    Raises:
        RunExistsError: ``run_dir`` already holds a run and ``force`` is False.
        ValueError: bad settings (see :func:`check_run_settings`).
    """
    run_dir = Path(run_dir)
    if holds_run(run_dir) and not force:
        raise RunExistsError(
            f"{run_dir} already holds a run; use --force to overwrite it, --resume {run_dir} to continue it, "
            "or another --out"
        )
    check_run_settings(settings)
    agent = make_agent(
        settings.method, settings.env_id, seed=settings.seed, device=settings.device, **settings.hyperparameters
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    if force:
        _clear_run(run_dir)
    config = {
        **settings.to_dict(),
        "hyperparameter_overrides": settings.hyperparameters,
        "hyperparameters": agent.config.to_dict(),
        "device_resolved": str(agent.device),
        "reward_threshold": reward_threshold(settings.env_id),
        "evaluation": {
            "final_episodes": FINAL_EVAL_EPISODES,
            "final_seed": EVAL_SEED,
            "final_envs": FINAL_EVAL_ENVS,
            "solved": f"mean return of {FINAL_EVAL_EPISODES} deterministic episodes >= reward_threshold",
        },
        "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": list(command) if command is not None else list(sys.argv),
        "versions": environment_versions(agent.device),
        "resumed": [],
    }
    write_json(run_dir / CONFIG, config)
    return agent


def open_resume(
    run_dir: str | os.PathLike, steps: int | None = None, device: str = "auto", command: Sequence[str] | None = None
) -> tuple[Agent, RunSettings]:
    """Load the checkpoint of ``run_dir`` to train on to ``steps`` (default: the run's own budget).

    ``config.json`` gains the new budget and an entry in ``resumed``.

    Raises:
        FileNotFoundError: ``run_dir`` has no ``config.json`` or no ``checkpoint.pt``.
        ValueError: a corrupt checkpoint or config, or ``steps`` below the env steps already trained.
    """
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).is_file():
        raise FileNotFoundError(f"{run_dir} holds no run to resume ({CONFIG} missing)")
    if not (run_dir / CHECKPOINT).is_file():
        raise FileNotFoundError(f"{run_dir} has no {CHECKPOINT} to resume from")
    config = read_json(run_dir / CONFIG)
    try:
        names = [f.name for f in dataclasses.fields(RunSettings)]
        settings = RunSettings(**{k: config[k] for k in names if k in config})
        settings.hyperparameters = dict(config.get("hyperparameter_overrides", {}))
    except (TypeError, AttributeError, ValueError) as exc:
        raise ValueError(f"{run_dir / CONFIG}: not a run configuration ({exc})") from None
    settings.device = device
    agent = Agent.load(run_dir / CHECKPOINT, device=device)
    if steps is not None:
        if steps < agent.num_env_steps:
            raise ValueError(f"--steps {steps} is below the {agent.num_env_steps} env steps {run_dir} already trained")
        settings.steps = int(steps)
    config["steps"] = settings.steps
    config.setdefault("resumed", []).append(
        {
            "at": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "from_env_steps": agent.num_env_steps,
            "to_steps": settings.steps,
            "device": str(agent.device),
            "command": list(command) if command is not None else list(sys.argv),
        }
    )
    write_json(run_dir / CONFIG, config)
    return agent, settings


def train_agent(
    agent: Agent,
    settings: RunSettings,
    run_dir: str | os.PathLike,
    progress: bool = False,
    callbacks: Sequence[BaseCallback] = (),
    stop_flag: Any = None,
    tensorboard: bool = True,
) -> dict[str, Any]:
    """Train ``agent`` to ``settings.steps`` env steps, then write every run file (see :func:`finish_run`).

    Args:
        progress: show a tqdm bar on stderr.
        callbacks: more callbacks (they run before the stop check).
        stop_flag: anything with ``is_set()``; once set, training stops at the next iteration boundary as if
            interrupted (see :func:`deferred_sigint`).
        tensorboard: log to ``run_dir/tb`` when tensorboard is installed.
    Returns:
        The contents of ``result.json``.
    Raises:
        TrainingInterrupted: on KeyboardInterrupt (or a set ``stop_flag``), after saving ``checkpoint.pt`` and
            ``metrics.csv``.
    """
    run_dir = Path(run_dir)
    tb = TensorBoardCallback.create(run_dir / TB_DIR) if tensorboard else None
    cbs: list[BaseCallback] = list(callbacks)
    if progress:
        cbs.append(ProgressBarCallback(settings.steps, desc=f"{settings.method} s{settings.seed}"))
    if tb is not None:
        cbs.append(tb)
    if settings.stop_on_solved:
        cbs.append(StopTrainingOnSolved())
    if stop_flag is not None:
        cbs.append(StopRequestCallback(stop_flag))
    try:
        try:
            agent.learn(settings.steps, callback=cbs)
        except KeyboardInterrupt:
            agent.save(run_dir / CHECKPOINT)
            write_metrics_csv(run_dir / METRICS, agent.record)
            raise TrainingInterrupted(run_dir, agent.num_env_steps, settings.steps) from None
        return finish_run(agent, settings, run_dir, tb)
    finally:
        if tb is not None:
            tb.close()


def final_evaluation(agent: Agent, deterministic: bool) -> EvalResult:
    """``FINAL_EVAL_EPISODES`` episodes on ``FINAL_EVAL_ENVS`` env copies seeded from ``EVAL_SEED``. Stochastic
    actions draw from torch's global generator seeded with ``EVAL_SEED`` inside a forked RNG state (training's RNG
    stream is left untouched)."""
    devices = [agent.device.index or 0] if agent.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(EVAL_SEED)
        return evaluate(
            agent.policy,
            agent.env_id,
            FINAL_EVAL_EPISODES,
            deterministic=deterministic,
            seed=EVAL_SEED,
            n_envs=FINAL_EVAL_ENVS,
        )


def finish_run(
    agent: Agent, settings: RunSettings, run_dir: str | os.PathLike, tb: TensorBoardCallback | None = None
) -> dict[str, Any]:
    """Save the checkpoint, evaluate, and write ``policy.pt``, ``metrics.csv``, ``curve.png`` and ``result.json``.

    ``result.json``: ``env``, ``method``, ``seed``, ``env_steps`` (trained), ``target_env_steps``, ``wall_s``
    (training seconds, evaluation excluded), ``iterations``, ``solved`` / ``solve_env_steps`` / ``solve_wall_s``
    (first time the periodic 100-episode check reached the threshold), ``reward_threshold``, the final
    deterministic evaluation ``eval_return_mean`` / ``eval_return_std`` / ``eval_episodes`` / ``eval_seed`` and
    whether it meets the threshold (``final_solved``), the stochastic one ``stochastic_eval_return_mean`` /
    ``..._std`` / ``..._episodes``, ``device``, and ``eval_wall_s`` (seconds of the final evaluation).
    """
    run_dir = Path(run_dir)
    agent.save(run_dir / CHECKPOINT)
    t0 = time.perf_counter()
    det = final_evaluation(agent, deterministic=True)
    sto = final_evaluation(agent, deterministic=False)
    eval_wall = time.perf_counter() - t0
    threshold = reward_threshold(settings.env_id)
    extra = {
        "env_id": settings.env_id,
        "method": settings.method,
        "seed": settings.seed,
        "env_steps": agent.num_env_steps,
        "eval_seed": EVAL_SEED,
        "hyperparameters": _json_safe(agent.config.to_dict()),
    }
    agent.policy.save(run_dir / POLICY, extra=extra)
    write_metrics_csv(run_dir / METRICS, agent.record)
    title = f"{settings.method} on {settings.env_id}, seed {settings.seed}"
    final = (agent.num_env_steps, det.mean, det.std, det.episodes)
    plot_learning_curve(agent.record, run_dir / CURVE, title, threshold, agent.solve_env_steps, final)
    result = {
        "env": settings.env_id,
        "method": settings.method,
        "seed": settings.seed,
        "env_steps": agent.num_env_steps,
        "target_env_steps": settings.steps,
        "wall_s": agent.train_wall_s,
        "iterations": agent.iterations,
        "solved": bool(agent.solved),
        "solve_env_steps": agent.solve_env_steps,
        "solve_wall_s": agent.solve_wall_s,
        "reward_threshold": threshold,
        "eval_return_mean": det.mean,
        "eval_return_std": det.std,
        "eval_episodes": det.episodes,
        "eval_seed": EVAL_SEED,
        "eval_envs": FINAL_EVAL_ENVS,
        "final_solved": is_solved(det, settings.env_id),
        "stochastic_eval_return_mean": sto.mean,
        "stochastic_eval_return_std": sto.std,
        "stochastic_eval_episodes": sto.episodes,
        "eval_wall_s": eval_wall,
        "device": str(agent.device),
    }
    write_json(run_dir / RESULT, result)
    if tb is not None:
        tb.add_scalars(
            {
                "eval/final_return_mean": det.mean,
                "eval/final_return_std": det.std,
                "eval/final_stochastic_return_mean": sto.mean,
            },
            agent.num_env_steps,
        )
    return result


def run_training(
    settings: RunSettings,
    run_dir: str | os.PathLike,
    force: bool = False,
    resume: bool = False,
    progress: bool = False,
    callbacks: Sequence[BaseCallback] = (),
    stop_flag: Any = None,
    tensorboard: bool = True,
) -> dict[str, Any]:
    """Start (or, with ``resume``, continue from ``run_dir``'s checkpoint to ``settings.steps``) and finish a run.

    Returns the contents of ``result.json``. Raises what :func:`start_run` / :func:`open_resume` and
    :func:`train_agent` raise.
    """
    if resume:
        agent, resumed = open_resume(run_dir, steps=settings.steps, device=settings.device)
        settings = resumed
    else:
        agent = start_run(settings, run_dir, force=force)
    return train_agent(agent, settings, run_dir, progress, callbacks, stop_flag, tensorboard)
