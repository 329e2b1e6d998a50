"""The method registry behind ``agents.make_agent``: one name per training method, with clear refusals.

Method names:
- ``relaxed``, ``st-gumbel``, ``argmax``, ``reinmax``, ``gumbel-rao``: pathwise gradients through a differentiable
  twin of the environment (``envs.make_differentiable``); the estimator is the only difference between them.
- ``<estimator>-critic`` (e.g. ``st-gumbel-critic``): pathwise gradients through a learned critic Q(s, a); works on
  any Gymnasium environment with a ``Discrete`` action space.
- ``<estimator>-model`` (e.g. ``st-gumbel-model``) and ``reinforce-model``: the policy trained in imagination
  through a learned differentiable model of the environment (``agents.world_model``) by the same SHAC window as the
  twin methods (or by the score function); works on any ``Discrete``-action env with ``Box`` or ``Discrete``
  observations.
- ``reinforce``: score-function policy gradient with a learned value baseline.
- ``ppo``, ``a2c``, ``dqn``: Stable-Baselines3's agents.

The table itself (:data:`METHODS`, :class:`MethodInfo`, :func:`register_method`) lives in ``agents.base``, so that
``Agent.load`` rebuilds agents from it without importing this module; it is re-exported here. Environment ids may
be Gymnasium's ``module:id`` (``module`` is imported first; ``agents.evaluation.env_spec``).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

import envs
from agents.base import METHODS, Agent, Config, MethodInfo, build_config, check_threads, register_method
from agents.evaluation import env_spec, make_env
from agents.hyperparams import HyperparameterDoc, default_hyperparameters, describe_hyperparameters

__all__ = [
    "METHODS",
    "MethodInfo",
    "check_env_id",
    "hyperparameter_docs",
    "make_agent",
    "methods_for",
    "register_method",
    "resolve",
]


def methods_for(env_id: str) -> list[str]:
    """The method names that can train on ``env_id``."""
    has_twin = env_id in envs.differentiable_ids()
    return [m for m, info in METHODS.items() if has_twin or not info.needs_twin]


def check_env_id(env_id: str) -> gym.spaces.Discrete:
    """The action space of ``env_id`` if it is a registered Gymnasium id (or ``module:id``, importing ``module``)
    with a ``Discrete`` action space.

    Raises:
        ValueError: unknown id (naming some valid ones), an unimportable module, or a non-Discrete action space.
    """
    env_spec(env_id)
    env = make_env(env_id)
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


def make_agent(
    method: str, env_id: str, seed: int = 0, device: str = "auto", n_threads: int | None = 1, **hyperparameters: Any
) -> Agent:
    """Build the agent for ``method`` on ``env_id`` with the tuned defaults, overridden by ``hyperparameters``.

    Args:
        env_id: a Gymnasium id, or ``module:id`` to import ``module`` (which registers ``id``) first.
        n_threads: torch CPU threads while the agent learns and evaluates (default 1, as ``train.py``: these small
            networks are fastest on one thread); torch's global setting is restored afterwards. ``None`` leaves
            torch's setting alone.
    Raises:
        ValueError: what :func:`resolve` refuses, or a bad ``n_threads``.
    """
    check_threads(n_threads)
    info, config = resolve(method, env_id, hyperparameters)
    return info.build(env_id, config, seed=seed, device=device, n_threads=n_threads)


def hyperparameter_docs(method: str, env_id: str) -> list[HyperparameterDoc]:
    """Every hyperparameter of ``method`` with its default on ``env_id`` (tuned table merged) and its docstring.

    Raises:
        ValueError: what :func:`resolve` refuses.
    """
    _, config = resolve(method, env_id, {})
    return describe_hyperparameters(config, tuned=default_hyperparameters(method, env_id))
