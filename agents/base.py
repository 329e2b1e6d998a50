"""What every training method shares: configuration, the learn loop, evaluation, the record, checkpoints.

A method is an :class:`Agent` subclass with a :class:`Config` subclass (its hyperparameters, with field comments
that explain them) and two hooks:

- ``_setup()``: build networks, optimisers and environments (``self.policy`` must be a ``GumbelPolicy``);
- ``_train_iteration() -> (env_steps, metrics)``: one update; returns how many environment transitions it
  consumed (simulated by a twin or not, each counts as one) and a dict of scalar losses/statistics, named with
  the prefixes below;

and, if it opens anything (environments), ``close()``. Agents are context managers (``with make_agent(...) as a:``).
A method registers its names with :func:`register_method` (the table :data:`METHODS`, which ``agents.registry``
reads to build agents and :meth:`Agent.load` reads to rebuild them).

Threads: ``learn`` and ``evaluate`` run with the agent's ``n_threads`` torch CPU threads (default 1: these small
networks are fastest on one thread, and several threads on a busy machine can be many times slower) and restore
torch's global setting afterwards (:func:`torch_threads`); ``n_threads=None`` leaves torch's setting alone.

The learn loop times training (excluding evaluation), evaluates the greedy policy in the real Gymnasium
environment every ``eval_every`` env steps, decides "solved" (mean over 100 deterministic episodes >=
``reward_threshold``), appends one row per iteration to ``record``, writes it to the agent's logger (Stable-Baselines3's
``Logger``: no output unless one is set with ``set_logger``; ``train.py`` writes CSV, TensorBoard and stdout), and
calls the callback, which may stop it.

Metric names, the same for every method (the SB3 / CleanRL convention):

- ``time/total_timesteps`` (env steps so far), ``time/train_seconds`` (training time, evaluation excluded),
  ``time/iterations``;
- ``rollout/ep_rew_mean`` (mean return of the last 100 finished training episodes, as SB3) and
  ``rollout/episodes``;
- ``train/...``: the method's losses and statistics (``train/actor_loss``, ``train/critic_loss``, ``train/entropy``,
  ``train/grad_norm``, ``train/tau``, ``train/learning_rate``, ...; the SB3 agents log SB3's own ``train/`` names);
- ``eval/mean_reward``, ``eval/std_reward``, ``eval/episodes``, ``eval/solved`` on the rows that evaluated.

Checkpoints (``save``/``load``) are plain data -- state dicts, RNG states and JSON metadata -- written
atomically and read with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

import numpy as np
import torch
from stable_baselines3.common.logger import Logger

from agents.callbacks import BaseCallback, as_callback
from agents.evaluation import SOLVE_EPISODES, EvalResult, evaluate, is_solved, reward_threshold
from gumbel_rl.files import atomic_torch_save, safe_torch_load
from gumbel_rl.policy import ACTIVATIONS, GumbelPolicy, resolve_device

CHECKPOINT_FORMAT = "gumbel-rl/AgentCheckpoint"
CHECKPOINT_VERSION = 2
"""2: one vocabulary of hyperparameters and prefixed metric names (version 1 checkpoints are refused)."""

STEPS, SECONDS, ITERATIONS = "time/total_timesteps", "time/train_seconds", "time/iterations"
EVAL_MEAN, EVAL_STD, EVAL_EPISODES, EVAL_SOLVED = "eval/mean_reward", "eval/std_reward", "eval/episodes", "eval/solved"
EP_REW_MEAN = "rollout/ep_rew_mean"


def check_positive(name: str, value: Any, integer: bool = False, allow_zero: bool = False) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is a finite number > 0 (>= 0 with ``allow_zero``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if integer:
        ok = ok and float(value).is_integer()
    if not ok:
        kind = "an integer" if integer else "a finite number"
        raise ValueError(f"hyperparameter {name} must be {kind} {'>= 0' if allow_zero else '> 0'}, got {value!r}")


def check_layers(name: str, value: Any, allow_empty: bool = True) -> None:
    """Raise ``ValueError`` unless ``value`` is a tuple or list of positive integers (non-empty unless
    ``allow_empty``): hidden layer sizes."""
    ok = isinstance(value, (tuple, list)) and (allow_empty or len(value) > 0)
    ok = ok and all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in value)
    if not ok:
        empty = " (may be empty)" if allow_empty else ""
        raise ValueError(f"hyperparameter {name} must be a list of positive integers{empty}, got {value!r}")


def check_choice(name: str, value: Any, choices: Any) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices`` (the message lists them)."""
    if value not in choices:
        raise ValueError(f"hyperparameter {name} must be one of {', '.join(map(str, choices))}; got {value!r}")


def check_bool(name: str, value: Any) -> None:
    """Raise ``ValueError`` unless ``value`` is True or False."""
    if not isinstance(value, bool):
        raise ValueError(f"hyperparameter {name} must be true or false, got {value!r}")


def check_fraction(name: str, value: Any, closed_high: bool = True) -> None:
    """Raise ``ValueError`` unless ``0 <= value <= 1`` (``< 1`` when not ``closed_high``)."""
    ok = isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value
    if not (ok and (value <= 1 if closed_high else value < 1)):
        raise ValueError(f"hyperparameter {name} must be in [0, 1{']' if closed_high else ')'}, got {value!r}")


@dataclass
class Config:
    """Hyperparameters every method has. Subclasses add theirs and extend ``validate``."""

    net_arch: tuple[int, ...] = (64, 64)
    """Hidden layer sizes of the policy network (``()``: a linear policy, a table of logits on one-hot states)."""
    activation: str = "tanh"
    """Activation of the policy network (tanh, relu, elu, gelu)."""
    eval_every: int = 5_000
    """Evaluate the greedy policy in the real Gymnasium env every this many env steps."""
    eval_episodes: int = 10
    """Episodes per periodic evaluation; a mean at the threshold triggers the 100-episode solve check."""

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad hyperparameter."""
        check_layers("net_arch", self.net_arch)
        check_choice("activation", self.activation, ACTIVATIONS)
        check_positive("eval_every", self.eval_every, integer=True)
        check_positive("eval_episodes", self.eval_episodes, integer=True)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def build_config(config_cls: type[Config], defaults: dict[str, Any], overrides: dict[str, Any]) -> Config:
    """``config_cls`` from its own defaults, then ``defaults`` (per method and env), then user ``overrides``.

    Raises:
        ValueError: an unknown hyperparameter name (the message lists the valid ones) or an invalid value.
    """
    names = [f.name for f in dataclasses.fields(config_cls)]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise ValueError(f"unknown hyperparameter(s) {', '.join(unknown)}; valid: {', '.join(names)}")
    values = {**defaults, **overrides}
    for name in ("net_arch", "critic_arch"):
        if isinstance(values.get(name), list):
            values[name] = tuple(values[name])
    cfg = config_cls(**values)
    cfg.validate()
    return cfg


@contextlib.contextmanager
def torch_threads(n_threads: int | None) -> Iterator[None]:
    """Within the block torch uses ``n_threads`` CPU threads (``torch.set_num_threads``); the previous setting is
    restored on leaving it. ``None`` changes nothing."""
    if n_threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def check_threads(n_threads: Any) -> None:
    """Raise ``ValueError`` unless ``n_threads`` is None or an integer >= 1."""
    if n_threads is not None and (not isinstance(n_threads, int) or isinstance(n_threads, bool) or n_threads < 1):
        raise ValueError(f"n_threads must be an integer >= 1 or None (torch's own setting), got {n_threads!r}")


def seed_everything(seed: int) -> None:
    """Seed Python's and torch's global generators (CPU and CUDA). NumPy: each agent has its own ``np_rng``."""
    random.seed(seed)
    torch.manual_seed(seed)


class Agent(ABC):
    """Base of every method. Build one with ``agents.make_agent(method, env_id, ...)``.

    Attributes:
        policy: the ``GumbelPolicy`` (use ``policy.predict``).
        num_env_steps: environment transitions consumed so far.
        train_wall_s: seconds spent training (evaluation excluded).
        record: one dict per iteration, keyed by the metric names above (``time/total_timesteps``, ...).
        logger: the Stable-Baselines3 ``Logger`` every row is written to (``set_logger``).
        solved, solve_env_steps, solve_wall_s: when the 100-episode deterministic evaluation first reached the
            environment's reward threshold.
        evaluations: periodic evaluations done so far (each one draws fresh episodes).
        n_threads: torch CPU threads of ``learn`` and ``evaluate`` (None: torch's global setting).
    """

    config_cls: ClassVar[type[Config]] = Config

    def __init__(
        self, method: str, env_id: str, config: Config, seed: int = 0, device: str = "auto", n_threads: int | None = 1
    ) -> None:
        check_threads(n_threads)
        self.method, self.env_id, self.config, self.seed = method, env_id, config, int(seed)
        self.n_threads = n_threads
        self.device = resolve_device(device)
        self.num_env_steps = 0
        self.iterations = 0
        self.train_wall_s = 0.0
        self.record: list[dict[str, Any]] = []
        self.solved = False
        self.solve_env_steps: int | None = None
        self.solve_wall_s: float | None = None
        self.last_eval: EvalResult | None = None
        self._next_eval = 0
        self.evaluations = 0
        self.threshold = reward_threshold(env_id)
        seed_everything(self.seed)
        self.np_rng = np.random.default_rng(self.seed)
        self.logger = Logger(folder=None, output_formats=[])
        self.policy: GumbelPolicy
        self._setup()

    def _make_policy(
        self, obs_space: Any, act_space: Any, estimator: str, tau: float = 1.0, gumbel_k: int = 10
    ) -> GumbelPolicy:
        """The policy network of the config's ``net_arch`` and ``activation`` for these spaces, acting with
        ``estimator`` at temperature ``tau`` (``gumbel_k`` draws for gumbel-rao), on the agent's device."""
        policy = GumbelPolicy(
            obs_space,
            act_space,
            net_arch=self.config.net_arch,
            activation=self.config.activation,
            estimator=estimator,
            tau=tau,
            k=gumbel_k,
        )
        return policy.to(self.device)

    def set_logger(self, logger: Logger) -> None:
        """Write every record row to ``logger`` (an SB3 ``Logger``: ``stable_baselines3.common.logger.configure``)."""
        self.logger = logger

    def close(self) -> None:  # noqa: B027 - optional hook: most agents open nothing
        """Release what the agent opened (training environments). Safe to call more than once."""

    def __enter__(self) -> Agent:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ---- hooks -------------------------------------------------------------------------------------------
    @abstractmethod
    def _setup(self) -> None:
        """Build ``self.policy`` and whatever the method trains with."""

    @abstractmethod
    def _train_iteration(self) -> tuple[int, dict[str, float]]:
        """One update: (env steps consumed, scalar metrics)."""

    def _training_state(self) -> dict[str, Any]:
        """Everything beyond the policy needed to resume (state dicts, tensors, numbers)."""
        return {}

    def _load_training_state(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Inverse of ``_training_state``."""

    # ---- learning ----------------------------------------------------------------------------------------
    def learn(self, total_env_steps: int, callback: Any = None) -> Agent:
        """Train until ``num_env_steps >= total_env_steps`` (an absolute count, so a resumed agent continues to
        the same target), or until the callback returns False. Returns ``self``."""
        check_positive("total_env_steps", total_env_steps, integer=True)
        with torch_threads(self.n_threads):
            cb = self._start_learning(callback)
            try:
                while self.num_env_steps < total_env_steps:
                    t0 = time.perf_counter()
                    steps, metrics = self._train_iteration()
                    self.train_wall_s += time.perf_counter() - t0
                    if not self._after_iteration(steps, metrics, cb):
                        break
            finally:
                cb.on_training_end()
        return self

    def _start_learning(self, callback: Any) -> BaseCallback:
        cb = as_callback(callback)
        cb.init_callback(self)
        return cb

    def _after_iteration(self, env_steps: int, metrics: dict[str, float], callback: BaseCallback) -> bool:
        """Count steps, evaluate when due, append the record row, call the callback. False: stop training."""
        self.num_env_steps += int(env_steps)
        self.iterations += 1
        row: dict[str, Any] = {
            STEPS: self.num_env_steps,
            SECONDS: round(self.train_wall_s, 4),
            ITERATIONS: self.iterations,
        }
        row.update({k: float(v) for k, v in metrics.items()})
        if self.num_env_steps >= self._next_eval:
            self._next_eval = self.num_env_steps + self.config.eval_every
            result = self.evaluate_progress()
            row.update({EVAL_MEAN: result.mean, EVAL_STD: result.std, EVAL_EPISODES: result.episodes})
            row[EVAL_SOLVED] = self.solved
        self.record.append(row)
        held = set(self.logger.name_to_value)  # recorded for this dump already (by SB3, perhaps with exclusions)
        for key, value in row.items():
            if key not in held:
                self.logger.record(key, int(value) if isinstance(value, bool) else value)
        self.logger.dump(step=self.num_env_steps)
        return callback.on_step(row)

    def evaluate_progress(self) -> EvalResult:
        """Periodic evaluation: ``eval_episodes`` greedy episodes; at the threshold, the 100-episode solve check."""
        episodes = self.config.eval_episodes
        # Fresh episodes at every evaluation (as SB3's EvalCallback, whose env runs on), reproducibly: the seeds
        # derive from (seed, evaluation index). With one fixed seed a stochastic env would replay the same
        # episodes, and a good policy whose draw was unlucky would fail every check.
        seeds = np.random.SeedSequence([self.seed, self.evaluations]).generate_state(2) >> 1
        check_seed, solve_seed = int(seeds[0]), int(seeds[1])
        self.evaluations += 1
        result = evaluate(self.policy, self.env_id, episodes, deterministic=True, seed=check_seed)
        if not self.solved and self.threshold is not None and result.mean >= self.threshold:
            full = evaluate(self.policy, self.env_id, SOLVE_EPISODES, deterministic=True, seed=solve_seed)
            if is_solved(full, self.env_id):
                self.solved = True
                self.solve_env_steps, self.solve_wall_s = self.num_env_steps, self.train_wall_s
            result = full
        self.last_eval = result
        return result

    def evaluate(self, episodes: int = SOLVE_EPISODES, deterministic: bool = True, seed: int = 0) -> EvalResult:
        """The policy's return in the real Gymnasium env (see ``agents.evaluation.evaluate``), with the agent's
        ``n_threads``."""
        with torch_threads(self.n_threads):
            return evaluate(self.policy, self.env_id, episodes, deterministic=deterministic, seed=seed)

    # ---- files -------------------------------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        """JSON-able description of the run so far."""
        return {
            "method": self.method,
            "env_id": self.env_id,
            "seed": self.seed,
            "hyperparameters": self.config.to_dict(),
            "num_env_steps": self.num_env_steps,
            "iterations": self.iterations,
            "train_wall_s": self.train_wall_s,
            "solved": self.solved,
            "solve_env_steps": self.solve_env_steps,
            "solve_wall_s": self.solve_wall_s,
            "next_eval": self._next_eval,
            "evaluations": self.evaluations,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write a checkpoint (policy, training state, RNG states, record) atomically to ``path``."""
        rng = {"torch": torch.get_rng_state(), "numpy": json.dumps(self.np_rng.bit_generator.state)}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        payload = {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_VERSION,
            "metadata": json.dumps(self.metadata()),
            "record": json.dumps(self.record),
            "policy_config": json.dumps(self.policy.config()),
            "policy": {k: v.detach().cpu() for k, v in self.policy.state_dict().items()},
            "training_state": _to_cpu(self._training_state()),
            "rng": rng,
        }
        return atomic_torch_save(payload, path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto", n_threads: int | None = 1) -> Agent:
        """Rebuild an agent from a checkpoint written by ``save`` (any registered method), ready to ``learn``
        further. An env id of the form ``module:id`` imports ``module``; an env registered by a package imported
        otherwise needs that package imported first.

        Raises:
            FileNotFoundError: no such file.
            ValueError: truncated, corrupt or foreign file, an unregistered method, or bad hyperparameters (one
                line naming the file).
        """
        payload = safe_torch_load(path, CHECKPOINT_FORMAT)
        version = payload.get("format_version")
        if version != CHECKPOINT_VERSION:
            raise ValueError(
                f"{path}: agent checkpoint format version {version}, this gumbel-rl reads version "
                f"{CHECKPOINT_VERSION} only (its hyperparameter and metric names changed); train the run again"
            )
        try:
            meta = json.loads(payload["metadata"])
            info = METHODS.get(meta["method"])
            if info is None:
                raise ValueError(f"unknown method {meta['method']!r}; valid methods: {', '.join(METHODS)}")
            config = build_config(info.agent_cls.config_cls, {}, meta["hyperparameters"])
            agent = info.build(meta["env_id"], config, seed=meta["seed"], device=device, n_threads=n_threads)
            agent.policy.load_state_dict(payload["policy"])
            agent._load_training_state(_to_device(payload["training_state"], agent.device))
            agent.record = json.loads(payload["record"])
        except (KeyError, TypeError, RuntimeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not a valid gumbel-rl agent checkpoint ({type(exc).__name__}: {exc})") from None
        except ValueError as exc:  # an unregistered method, bad hyperparameters, an unknown env
            raise ValueError(f"{path}: {exc}") from None
        for key in ("num_env_steps", "iterations", "train_wall_s", "solved", "solve_env_steps", "solve_wall_s"):
            setattr(agent, key, meta[key])
        agent._next_eval = meta["next_eval"]
        agent.evaluations = meta.get("evaluations", 0)
        torch.set_rng_state(payload["rng"]["torch"])
        agent.np_rng.bit_generator.state = json.loads(payload["rng"]["numpy"])
        if "cuda" in payload["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(payload["rng"]["cuda"])
        return agent


@dataclass(frozen=True)
class MethodInfo:
    """A registered method: its agent class, a one-line description, and whether it needs a twin."""

    name: str
    agent_cls: type[Agent]
    description: str
    needs_twin: bool

    def build(
        self, env_id: str, config: Config, seed: int = 0, device: str = "auto", n_threads: int | None = 1
    ) -> Agent:
        """The agent of this method on ``env_id`` with a validated config (``agents.registry.resolve``)."""
        return self.agent_cls(self.name, env_id, config, seed=seed, device=device, n_threads=n_threads)


METHODS: dict[str, MethodInfo] = {}
"""Every registered method by name, in registration order (filled by :func:`register_method`)."""


def register_method(name: str, description: str, needs_twin: bool = False) -> Callable[[type[Agent]], type[Agent]]:
    """Class decorator: register ``name`` for an ``Agent`` subclass (one class may serve several names)."""

    def deco(cls: type[Agent]) -> type[Agent]:
        METHODS[name] = MethodInfo(name, cls, description, needs_twin)
        return cls

    return deco


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj
