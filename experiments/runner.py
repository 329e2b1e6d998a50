"""One training run, from settings to a directory of results -- the engine behind ``train.py train``.

A run directory holds:

- ``config.json``: every setting (env, method, seed, step budget, device, resolved hyperparameters and the
  overrides given, the packages imported to register the env: ``gym_packages``), the evaluation protocol, and the
  versions of gumbel_rl, torch, gymnasium, SB3, numpy, Python, the platform and the device;
- ``metrics.csv``: the agent's record, one row per training iteration (``time/total_timesteps``,
  ``time/train_seconds``, ``rollout/...``, ``train/...``, and ``eval/...`` on the rows that evaluated), written
  through the agent's SB3 logger as training runs (``experiments.run_log``);
- ``policy.pt``: the trained policy (``GumbelPolicy.load`` reads it; its metadata names the env -- a ``module:id`` id
  as given -- the method, and ``gym_packages`` when the run imported any);
- ``curve.png``: greedy evaluation return against env steps, with the reward threshold;
- ``result.json``: the outcome (see :func:`finish_run`);
- ``checkpoint.pt``: the full agent (``Agent.save``), written every ``CheckpointPolicy`` interval (env steps and
  wall clock), on Ctrl-C / SIGTERM and at the end, so ``--resume`` can continue an interrupted or killed run (at
  most one interval of work lost) or extend a finished one to more steps;
- ``tb/``: TensorBoard logs, when ``tensorboard`` is installed (optional);
- ``.lock``: the directory's lock (``experiments.locks``): one process writes a run directory at a time.

Protocol: a run trains to its whole step budget (unless ``stop_on_solved``) and reports *when* it first solved
(``solve_env_steps``/``solve_wall_s``, from the agent's periodic 100-episode check), then a final evaluation of
``FINAL_EVAL_EPISODES`` deterministic episodes (and as many stochastic ones) in the real Gymnasium env, on env seed
:data:`EVAL_SEED` for every run so that methods and seeds are scored on the same start states.

Functions raise ``ValueError`` / ``FileNotFoundError`` with one-line messages for bad input (unknown method or
env, bad hyperparameter, a directory that already holds a run or is a file or cannot be written, a directory
another process writes, a missing, corrupt or mismatched checkpoint or config), *before* they write a run file;
failures during training propagate unchanged. Environment ids may be Gymnasium's ``module:id``; packages in
``RunSettings.gym_packages`` are imported before the id is resolved, recorded in ``config.json`` and imported again
by :func:`open_resume` (and by compare's worker processes), so that neither needs the option repeated. Agents are
built with ``n_threads=None``: a run uses the process's torch threads (``train.py --threads``, one per compare
worker). A :class:`Run` (from :func:`start_run` or :func:`open_resume`) holds
the directory's lock and the agent until it is closed (it is a context manager).

Runs of one twin method (pathwise, or ``reinforce`` on twin rollouts) at one env step can train together
(:func:`train_runs_batched`, ``agents.many_seeds.ManySeeds``; ``train.py compare``'s default ``batched`` backend):
every run directory then gets the same files as from :func:`train_run`, its final evaluations made for all runs in
one vector env (:func:`final_evaluations_batched`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import importlib.metadata
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.logger import Logger

import gumbel_rl
from agents.base import Agent, Config
from agents.callbacks import BaseCallback, StopTrainingOnSolved
from agents.evaluation import EvalResult, evaluate, import_gym_packages, is_solved, make_env, reward_threshold
from agents.registry import METHODS, MethodInfo, check_env_id, resolve
from envs.maps import SUITE
from experiments.locks import DirectoryLock
from experiments.plots import plot_learning_curve
from experiments.run_callbacks import CheckpointCallback, ProgressBarCallback, StopFlag, StopRequestCallback
from experiments.run_log import configure_run_logger, write_metrics_csv
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
    """Training was interrupted (Ctrl-C or SIGTERM); the checkpoint and metrics so far are saved in ``run_dir``.
    ``signum`` is the signal (SIGINT for a KeyboardInterrupt); ``exit_code`` is 128 + signum (130, 143)."""

    def __init__(self, run_dir: Path, env_steps: int, target: int, signum: int = signal.SIGINT) -> None:
        super().__init__(f"interrupted at {env_steps} of {target} env steps; checkpoint in {run_dir}")
        self.run_dir, self.env_steps, self.target, self.signum = run_dir, env_steps, target, int(signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


DEFAULT_CHECKPOINT_FRACTION = 0.1
DEFAULT_CHECKPOINT_SECONDS = 300.0


@dataclass(frozen=True)
class CheckpointPolicy:
    """When a run saves ``checkpoint.pt`` while it trains (besides on interruption and at the end).

    ``every_steps``: env steps between checkpoints (None: a tenth of the step budget); ``every_seconds``: wall-clock
    seconds between checkpoints (default 300); 0 disables either. One checkpoint is one atomic ``Agent.save``.
    """

    every_steps: int | None = None
    every_seconds: float = DEFAULT_CHECKPOINT_SECONDS

    def validate(self) -> None:
        """Raise ``ValueError`` (one line) for a negative or non-numeric interval."""
        steps_ok = self.every_steps is None or (
            isinstance(self.every_steps, int) and not isinstance(self.every_steps, bool) and self.every_steps >= 0
        )
        if not steps_ok:
            raise ValueError(f"--checkpoint-every-steps must be an integer >= 0, got {self.every_steps!r}")
        seconds = self.every_seconds
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds >= 0:
            raise ValueError(f"--checkpoint-every-seconds must be a number >= 0, got {seconds!r}")

    def callback(self, path: Path, budget: int) -> CheckpointCallback:
        """The callback that applies this policy to a run of ``budget`` env steps saving to ``path``."""
        steps = self.every_steps if self.every_steps is not None else max(1, int(budget * DEFAULT_CHECKPOINT_FRACTION))
        return CheckpointCallback(path, steps or None, float(self.every_seconds) or None)


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
    gym_packages: list[str] = field(default_factory=list)
    """Packages imported before ``env_id`` is resolved (they register it with Gymnasium)."""

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
    info: dict[str, Any] = {
        "gumbel_rl": gumbel_rl.__version__,
        "torch": torch.__version__,
        "gymnasium": gym.__version__,
        "stable_baselines3": _version("stable-baselines3"),
        "numpy": np.__version__,
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


def holds_run(run_dir: str | os.PathLike) -> bool:
    """True when ``run_dir`` contains any of a run's files."""
    run_dir = Path(run_dir)
    return any((run_dir / name).exists() for name in RUN_FILES)


def _clear_run(run_dir: Path) -> None:
    for name in RUN_FILES:
        with contextlib.suppress(FileNotFoundError):
            (run_dir / name).unlink()
    shutil.rmtree(run_dir / TB_DIR, ignore_errors=True)


def remove_temporary_files(directory: str | os.PathLike) -> list[Path]:
    """Delete the leftovers of interrupted atomic writes (``.<name>.*.tmp``, ``gumbel_rl.files.atomic_path``) in
    ``directory``; call it only while holding the directory's lock. Returns the paths removed."""
    removed = []
    for path in Path(directory).glob(".*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


def check_output_dir(path: str | os.PathLike) -> Path:
    """``path`` as a directory to write into, if it can be: refuse (``ValueError``, one line) a path that names a
    file, or that lies under one. Writes nothing; whether the location is writable is known when its lock is taken
    (``experiments.locks.DirectoryLock``)."""
    path = Path(path)
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                raise ValueError(f"{path}: {p} is a file, not a directory; give another --out")
            break
    return path


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
    """Load a policy file and the env to score it in: ``env_id``, else the ``env_id`` in its metadata (a ``module:id``
    imports ``module``). The packages its metadata names (``extra["gym_packages"]``, written by a run that imported
    them) are imported first.

    Returns ``(policy, env_id, metadata)``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a corrupt or foreign file, no env id anywhere, an unknown env or unimportable package, or an env
            whose observation or action space does not fit the policy.
    """
    if Path(path).is_dir():
        raise ValueError(f"{path} is a directory, not a policy file")
    meta = GumbelPolicy.read_metadata(path)
    policy = GumbelPolicy.load(path, device=device)
    extra = meta.get("extra") or {}
    packages = extra.get("gym_packages") or []
    if not isinstance(packages, list):
        raise ValueError(f"{path}: gym_packages in its metadata must be a list of package names, found {packages!r}")
    import_gym_packages(packages, source=f"{path} (gym_packages in its metadata)")
    env_id = env_id or extra.get("env_id")
    if not env_id:
        raise ValueError(f"{path} does not name its environment; give --env ID")
    action_space = check_env_id(env_id)
    env = make_env(env_id)
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
def check_run_settings(settings: RunSettings) -> tuple[MethodInfo, Config]:
    """Validate a run's settings without building the agent: the budget, seed and device, and what ``make_agent``
    would refuse (``agents.registry.resolve``, whose method and config it returns).

    Raises:
        ValueError: unknown method or env, a twin-only method on an env without a twin, a bad hyperparameter,
            a bad device, or a step budget or seed that is not a non-negative integer.
    """
    if not isinstance(settings.steps, int) or isinstance(settings.steps, bool) or settings.steps < 1:
        raise ValueError(f"the step budget must be a positive integer, got {settings.steps!r}")
    if not isinstance(settings.seed, int) or isinstance(settings.seed, bool) or settings.seed < 0:
        raise ValueError(f"the seed must be a non-negative integer, got {settings.seed!r}")
    settings.gym_packages = import_gym_packages(settings.gym_packages)
    resolved = resolve(settings.method, settings.env_id, settings.hyperparameters)
    resolve_device(settings.device)
    return resolved


def settings_from_config(config: dict[str, Any], path: Path) -> RunSettings:
    """The :class:`RunSettings` recorded in a run's ``config.json`` (without hyperparameters: a resumed agent's
    come from its checkpoint), after importing its ``gym_packages``.

    Raises:
        ValueError: a missing field or one of the wrong type, or a package that cannot be imported (one line naming
            the file and the field).
    """
    kinds: dict[str, tuple[type, ...]] = {"env_id": (str,), "method": (str,), "seed": (int,), "steps": (int,)}
    for name, kind in kinds.items():
        value = config.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f"{path}: {name} must be {' or '.join(k.__name__ for k in kind)}, found {value!r}")
    if config["seed"] < 0 or config["steps"] < 1:
        raise ValueError(f"{path}: seed {config['seed']!r} / steps {config['steps']!r} out of range")
    stop = config.get("stop_on_solved", False)
    if not isinstance(stop, bool):
        raise ValueError(f"{path}: stop_on_solved must be true or false, found {stop!r}")
    if not isinstance(config.get("resumed", []), list):
        raise ValueError(f"{path}: resumed must be a list, found {config['resumed']!r}")
    packages = config.get("gym_packages", [])
    if not isinstance(packages, list):
        raise ValueError(f"{path}: gym_packages must be a list of package names, found {packages!r}")
    packages = import_gym_packages(packages, source=f"{path} (gym_packages)")
    return RunSettings(
        config["env_id"], config["method"], config["seed"], config["steps"], stop_on_solved=stop, gym_packages=packages
    )


# ---- Ctrl-C and SIGTERM ------------------------------------------------------------------------------------------
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def deferred_interrupts(notify: Callable[[int], None] | None = None) -> Iterator[StopFlag]:
    """Within the block, the first SIGINT (Ctrl-C) or SIGTERM only sets the yielded flag (with the signal's number;
    a :class:`StopRequestCallback` then stops training at the next iteration boundary, so the checkpoint is
    consistent); a second one raises ``KeyboardInterrupt`` at once. Outside the main thread it changes nothing
    (the flag is never set).

    Args:
        notify: called with the signal number on the first signal (e.g. to print "stopping...").
    """
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}

    def handler(signum: int, frame: Any) -> None:
        if flag.is_set():
            raise KeyboardInterrupt
        flag.set(signum)
        if notify is not None:
            notify(signum)

    for s in STOP_SIGNALS:
        signal.signal(s, handler)
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


# ---- a run ------------------------------------------------------------------------------------------------------
@dataclass
class Run:
    """An open run directory: the agent, the settings it trains to, and the directory's lock, held until
    :meth:`close` (which also closes the agent). Built by :func:`start_run` or :func:`open_resume`."""

    agent: Agent
    settings: RunSettings
    run_dir: Path
    lock: DirectoryLock

    def close(self) -> None:
        """Close the agent and release the directory (safe to call more than once)."""
        try:
            self.agent.close()
        finally:
            self.lock.release()

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def start_run(
    settings: RunSettings, run_dir: str | os.PathLike, force: bool = False, command: Sequence[str] | None = None
) -> Run:
    """Validate, lock ``run_dir`` (created), build the agent and write ``config.json``. Nothing is written on
    error (but the directory and its ``.lock`` when they had to be created).

    Raises:
        RunExistsError: ``run_dir`` already holds a run and ``force`` is False.
        experiments.locks.DirectoryLockedError: another process writes ``run_dir``.
        ValueError: bad settings (see :func:`check_run_settings`), or ``run_dir`` is a file or cannot be written.
    """
    run_dir = check_output_dir(run_dir)

    def refuse_existing() -> None:
        if holds_run(run_dir) and not force:
            raise RunExistsError(
                f"{run_dir} already holds a run; use --force to overwrite it, --resume {run_dir} to continue it, "
                "or another --out"
            )

    refuse_existing()
    info, agent_config = check_run_settings(settings)
    lock = DirectoryLock(run_dir)
    try:
        refuse_existing()  # again, now that no other process can write it
        if force:
            _clear_run(run_dir)
        remove_temporary_files(run_dir)
        agent = info.build(settings.env_id, agent_config, seed=settings.seed, device=settings.device, n_threads=None)
    except BaseException:
        lock.release()
        raise
    run = Run(agent, settings, run_dir, lock)
    try:
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
    except BaseException:
        run.close()
        raise
    return run


def open_resume(
    run_dir: str | os.PathLike, steps: int | None = None, device: str = "auto", command: Sequence[str] | None = None
) -> Run:
    """Lock ``run_dir`` and load its checkpoint to train on to ``steps`` (default: the run's own budget).

    The agent -- its method, env, seed and hyperparameters -- comes from ``checkpoint.pt``; ``config.json`` gives the
    budget and ``stop_on_solved``, must name the same method, env and seed, and gains the new budget and an entry
    in ``resumed``. ``metrics.csv`` is rewritten from the checkpoint's record (rows logged after the checkpoint by a
    run that was killed are dropped), and leftover temporary files are removed.

    Raises:
        FileNotFoundError: ``run_dir`` has no ``config.json`` or no ``checkpoint.pt``.
        experiments.locks.DirectoryLockedError: another process writes ``run_dir``.
        ValueError: a corrupt checkpoint, a ``config.json`` with missing or mistyped fields, a checkpoint and
            config from different runs, or ``steps`` below the env steps already trained. Nothing is written then.
    """
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).is_file():
        raise FileNotFoundError(f"{run_dir} holds no run to resume ({CONFIG} missing)")
    if not (run_dir / CHECKPOINT).is_file():
        raise FileNotFoundError(f"{run_dir} has no {CHECKPOINT} to resume from")
    config = read_json(run_dir / CONFIG)
    settings = settings_from_config(config, run_dir / CONFIG)
    settings.device = device
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
        raise ValueError(f"the step budget must be a positive integer, got {steps!r}")
    lock = DirectoryLock(run_dir)
    try:
        agent = Agent.load(run_dir / CHECKPOINT, device=device, n_threads=None)
    except BaseException:
        lock.release()
        raise
    run = Run(agent, settings, run_dir, lock)
    try:
        mine = (settings.method, settings.env_id, settings.seed)
        theirs = (agent.method, agent.env_id, agent.seed)
        if mine != theirs:
            raise ValueError(
                f"{run_dir}: {CONFIG} is method {mine[0]} on {mine[1]} seed {mine[2]} but {CHECKPOINT} holds method "
                f"{theirs[0]} on {theirs[1]} seed {theirs[2]}; they come from different runs"
            )
        if steps is not None:
            if steps < agent.num_env_steps:
                raise ValueError(
                    f"--steps {steps} is below the {agent.num_env_steps} env steps {run_dir} already trained"
                )
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
        remove_temporary_files(run_dir)
        write_metrics_csv(run_dir / METRICS, agent.record)
        write_json(run_dir / CONFIG, config)
    except BaseException:
        run.close()
        raise
    return run


def train_run(
    run: Run,
    progress: bool = False,
    callbacks: Sequence[BaseCallback] = (),
    stop_flag: Any = None,
    tensorboard: bool = True,
    verbose: bool = False,
    checkpoints: CheckpointPolicy = CheckpointPolicy(),  # noqa: B008 - frozen dataclass
) -> dict[str, Any]:
    """Train ``run.agent`` to ``run.settings.steps`` env steps, logging every record row to ``metrics.csv`` (and
    TensorBoard, and stdout with ``verbose``) as it goes and checkpointing per ``checkpoints``, then write every run
    file (see :func:`finish_run`). The run stays open (close it).

    Args:
        progress: show a tqdm bar on stderr.
        callbacks: more callbacks (they run before the checkpoint and the stop check).
        stop_flag: anything with ``is_set()`` (and optionally ``signum``); once set, training stops at the next
            iteration boundary as if interrupted (see :func:`deferred_interrupts`).
        tensorboard: log to ``run_dir/tb`` when tensorboard is installed.
        verbose: also print SB3's table of every row on stdout.
    Returns:
        The contents of ``result.json``.
    Raises:
        TrainingInterrupted: on KeyboardInterrupt (or a set ``stop_flag``), after saving ``checkpoint.pt``.
    """
    agent, settings, run_dir = run.agent, run.settings, run.run_dir
    checkpoints.validate()
    cbs: list[BaseCallback] = list(callbacks)
    if progress:
        cbs.append(ProgressBarCallback(settings.steps, desc=f"{settings.method} s{settings.seed}"))
    if settings.stop_on_solved:
        cbs.append(StopTrainingOnSolved())
    cbs.append(checkpoints.callback(run_dir / CHECKPOINT, settings.steps))
    if stop_flag is not None:
        cbs.append(StopRequestCallback(stop_flag))
    logger = configure_run_logger(run_dir / METRICS, run_dir / TB_DIR if tensorboard else None, verbose=verbose)
    agent.set_logger(logger)
    try:
        try:
            agent.learn(settings.steps, callback=cbs)
        except KeyboardInterrupt:
            agent.save(run_dir / CHECKPOINT)
            signum = getattr(stop_flag, "signum", signal.SIGINT) if stop_flag is not None else signal.SIGINT
            raise TrainingInterrupted(run_dir, agent.num_env_steps, settings.steps, signum) from None
        return finish_run(agent, settings, run_dir, logger)
    finally:
        logger.close()
        agent.set_logger(Logger(folder=None, output_formats=[]))


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
    agent: Agent,
    settings: RunSettings,
    run_dir: str | os.PathLike,
    logger: Logger | None = None,
    evaluations: tuple[EvalResult, EvalResult, float] | None = None,
) -> dict[str, Any]:
    """Save the checkpoint, evaluate, and write ``policy.pt``, ``curve.png`` and ``result.json`` (``metrics.csv`` is
    written as training runs); the final evaluation also goes to ``logger`` (not to its CSV) as
    ``eval/final_mean_reward``, ``eval/final_std_reward`` and ``eval/final_stochastic_mean_reward``.

    ``result.json``: ``env``, ``method``, ``seed``, ``env_steps`` (trained), ``target_env_steps``, ``wall_s``
    (training seconds, evaluation excluded), ``iterations``, ``solved`` / ``solve_env_steps`` / ``solve_wall_s``
    (first time the periodic 100-episode check reached the threshold), ``reward_threshold``, the final
    deterministic evaluation ``eval_return_mean`` / ``eval_return_std`` / ``eval_episodes`` / ``eval_seed`` and
    whether it meets the threshold (``final_solved``), the stochastic one ``stochastic_eval_return_mean`` /
    ``..._std`` / ``..._episodes``, ``device``, and ``eval_wall_s`` (seconds of the final evaluation).

    ``evaluations``: the final (deterministic, stochastic) evaluations and their seconds when already made (by
    :func:`train_runs_batched`, for many runs at once); None makes them here (:func:`final_evaluation`).
    """
    run_dir = Path(run_dir)
    agent.save(run_dir / CHECKPOINT)
    if evaluations is None:
        t0 = time.perf_counter()
        det = final_evaluation(agent, deterministic=True)
        sto = final_evaluation(agent, deterministic=False)
        eval_wall = time.perf_counter() - t0
    else:
        det, sto, eval_wall = evaluations
    threshold = reward_threshold(settings.env_id)
    extra = {
        "env_id": settings.env_id,
        "method": settings.method,
        "seed": settings.seed,
        "env_steps": agent.num_env_steps,
        "eval_seed": EVAL_SEED,
        "hyperparameters": _json_safe(agent.config.to_dict()),
    }
    if settings.gym_packages:
        extra["gym_packages"] = list(settings.gym_packages)
    agent.policy.save(run_dir / POLICY, extra=extra)
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
    if logger is not None:
        finals = {"final_mean_reward": det.mean, "final_std_reward": det.std, "final_stochastic_mean_reward": sto.mean}
        for key, value in finals.items():
            logger.record(f"eval/{key}", value, exclude="csv")
        logger.dump(step=agent.num_env_steps)
    return result


def final_evaluations_batched(agents: Sequence[Agent]) -> list[tuple[EvalResult, EvalResult, float]]:
    """:func:`final_evaluation` (deterministic and stochastic) of many agents of one env at once, in one vector env
    each (``agents.many_seeds.evaluate_policies``): the same episodes and env seeds as one run's, and per agent a
    sampling generator seeded :data:`EVAL_SEED` (the stream one run draws from torch's global generator). The
    seconds are the batch's, shared by every agent."""
    from agents.many_seeds import evaluate_policies

    policies = [a.policy for a in agents]
    first = agents[0]
    t0 = time.perf_counter()
    out = []
    for deterministic in (True, False):
        out.append(
            evaluate_policies(
                policies,
                first.policy,
                first.env_id,
                FINAL_EVAL_EPISODES,
                [EVAL_SEED] * len(agents),
                deterministic=deterministic,
                n_envs=FINAL_EVAL_ENVS,
                noise_seed=EVAL_SEED,
            )
        )
    seconds = time.perf_counter() - t0
    return [(det, sto, seconds) for det, sto in zip(out[0], out[1], strict=True)]


def train_runs_batched(
    runs: Sequence[Run],
    stop_flag: Any = None,
    tensorboard: bool = True,
    checkpoints: CheckpointPolicy = CheckpointPolicy(),  # noqa: B008 - frozen dataclass
) -> list[dict[str, Any]]:
    """:func:`train_run` for runs of one twin method (pathwise, or ``reinforce`` on the twin) at one env step
    (distinct seeds), trained as one batched computation (``agents.many_seeds.ManySeeds``): each run logs its rows to
    its own ``metrics.csv``, checkpoints per ``checkpoints``, stops on solved if its settings say so, and gets the
    same files as from :func:`train_run`; the final evaluations of all runs are made together
    (:func:`final_evaluations_batched`). The runs stay open.

    Returns:
        Each run's ``result.json`` contents, in order.
    Raises:
        ValueError: runs that cannot train together (``agents.many_seeds.check_batchable``) or have different step
            budgets.
        TrainingInterrupted: on KeyboardInterrupt (or a set ``stop_flag``), after saving every run's checkpoint;
            it names the first run.
    """
    from agents.many_seeds import ManySeeds

    checkpoints.validate()
    if len({r.settings.steps for r in runs}) != 1:
        raise ValueError("runs trained together must have one step budget")
    group = ManySeeds([r.agent for r in runs], n_threads=None)  # type: ignore[misc]
    loggers, callbacks = [], []
    for r in runs:
        cbs: list[BaseCallback] = []
        if r.settings.stop_on_solved:
            cbs.append(StopTrainingOnSolved())
        cbs.append(checkpoints.callback(r.run_dir / CHECKPOINT, r.settings.steps))
        if stop_flag is not None:
            cbs.append(StopRequestCallback(stop_flag))
        callbacks.append(cbs)
        logger = configure_run_logger(r.run_dir / METRICS, r.run_dir / TB_DIR if tensorboard else None)
        r.agent.set_logger(logger)
        loggers.append(logger)
    steps = runs[0].settings.steps
    try:
        try:
            group.learn(steps, callbacks=callbacks)
        except KeyboardInterrupt:
            for r in runs:
                r.agent.save(r.run_dir / CHECKPOINT)
            signum = getattr(stop_flag, "signum", signal.SIGINT) if stop_flag is not None else signal.SIGINT
            raise TrainingInterrupted(runs[0].run_dir, runs[0].agent.num_env_steps, steps, signum) from None
        evaluations = final_evaluations_batched([r.agent for r in runs])
        return [
            finish_run(r.agent, r.settings, r.run_dir, logger, ev)
            for r, logger, ev in zip(runs, loggers, evaluations, strict=True)
        ]
    finally:
        for r, logger in zip(runs, loggers, strict=True):
            logger.close()
            r.agent.set_logger(Logger(folder=None, output_formats=[]))


def run_training(
    settings: RunSettings,
    run_dir: str | os.PathLike,
    force: bool = False,
    resume: bool = False,
    progress: bool = False,
    callbacks: Sequence[BaseCallback] = (),
    stop_flag: Any = None,
    tensorboard: bool = True,
    verbose: bool = False,
    checkpoints: CheckpointPolicy = CheckpointPolicy(),  # noqa: B008 - frozen dataclass
) -> dict[str, Any]:
    """Start (or, with ``resume``, continue from ``run_dir``'s checkpoint to ``settings.steps``) and finish a run,
    closing it (agent and lock) whatever happens.

    Returns the contents of ``result.json``. Raises what :func:`start_run` / :func:`open_resume` and
    :func:`train_run` raise.
    """
    if resume:
        run = open_resume(run_dir, steps=settings.steps, device=settings.device)
    else:
        run = start_run(settings, run_dir, force=force)
    with run:
        return train_run(run, progress, callbacks, stop_flag, tensorboard, verbose, checkpoints)
