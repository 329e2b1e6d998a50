"""The method registry behind ``agents.make_agent``: one name per training method, with clear refusals.

Method names:
- ``relaxed``, ``st-gumbel``, ``argmax``, ``reinmax``, ``gumbel-rao``: pathwise gradients through a differentiable
  twin of the environment (``envs.make_differentiable``); the estimator is the only difference between them.
- ``<estimator>-critic`` (e.g. ``st-gumbel-critic``): pathwise gradients through a learned critic Q(s, a); works on
  any Gymnasium environment with a ``Discrete`` action space.
- ``reinforce``: score-function policy gradient with a learned value baseline.
- ``ppo``, ``a2c``, ``dqn``: Stable-Baselines3's agents.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym

import envs
from agents.base import Agent, Config, build_config
from agents.hyperparams import HyperparameterDoc, default_hyperparameters, describe_hyperparameters


@dataclass(frozen=True)
class MethodInfo:
    """A registered method: its agent class, a one-line description, and whether it needs a twin."""

    name: str
    agent_cls: type[Agent]
    description: str
    needs_twin: bool

    def build(self, env_id: str, config: Config, seed: int = 0, device: str = "auto") -> Agent:
        """The agent of this method on ``env_id`` with a config from :func:`resolve`."""
        return self.agent_cls(self.name, env_id, config, seed=seed, device=device)


METHODS: dict[str, MethodInfo] = {}


def register_method(name: str, description: str, needs_twin: bool = False) -> Callable[[type[Agent]], type[Agent]]:
    """Class decorator: register ``name`` for an ``Agent`` subclass (one class may serve several names)."""

    def deco(cls: type[Agent]) -> type[Agent]:
        METHODS[name] = MethodInfo(name, cls, description, needs_twin)
        return cls

    return deco


def methods_for(env_id: str) -> list[str]:
    """The method names that can train on ``env_id``."""
    has_twin = env_id in envs.differentiable_ids()
    return [m for m, info in METHODS.items() if has_twin or not info.needs_twin]


def check_env_id(env_id: str) -> gym.spaces.Discrete:
    """The action space of ``env_id`` if it is a registered Gymnasium id with a ``Discrete`` action space.

    Raises:
        ValueError: unknown id (naming some valid ones) or a non-Discrete action space.
    """
    if env_id not in gym.registry:
        known = ", ".join(["CartPole-v1", *envs.GRIDWORLD_IDS])
        raise ValueError(f"unknown environment id {env_id!r}; for example: {known} (or any Gymnasium id)")
    env = gym.make(env_id)
    try:
        space = env.action_space
    finally:
        env.close()
    if not isinstance(space, gym.spaces.Discrete):
        raise ValueError(
            f"environment {env_id!r} has a {type(space).__name__} action space; gumbel-rl methods need a Discrete one"
        )
    return space


def resolve(method: str, env_id: str, hyperparameters: dict[str, Any]) -> tuple[MethodInfo, Config]:
    """The registered method and its validated config for ``env_id``: the tuned defaults overridden by
    ``hyperparameters``. Builds nothing else; every refusal of :func:`make_agent` is made here.

    Raises:
        ValueError: unknown method (listing them), unknown env id, a non-Discrete action space, a twin-only method
            on an id without a twin (naming the methods that work there), or a bad hyperparameter (naming it).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")
    check_env_id(env_id)
    info = METHODS[method]
    if info.needs_twin and env_id not in envs.differentiable_ids():
        raise ValueError(
            f"method {method!r} trains through a differentiable twin and {env_id!r} has none "
            f"(twins: {', '.join(envs.differentiable_ids())}); methods that work on {env_id!r}: "
            f"{', '.join(methods_for(env_id))}"
        )
    config = build_config(info.agent_cls.config_cls, default_hyperparameters(method, env_id), hyperparameters)
    return info, config


def make_agent(method: str, env_id: str, seed: int = 0, device: str = "auto", **hyperparameters: Any) -> Agent:
    """Build the agent for ``method`` on ``env_id`` with the tuned defaults, overridden by ``hyperparameters``.

    Raises:
        ValueError: what :func:`resolve` refuses.
    """
    info, config = resolve(method, env_id, hyperparameters)
    return info.build(env_id, config, seed=seed, device=device)


def hyperparameter_docs(method: str, env_id: str) -> list[HyperparameterDoc]:
    """Every hyperparameter of ``method`` with its default on ``env_id`` (tuned table merged) and its docstring.

    Raises:
        ValueError: what :func:`resolve` refuses.
    """
    _, config = resolve(method, env_id, {})
    return describe_hyperparameters(config, tuned=default_hyperparameters(method, env_id))
