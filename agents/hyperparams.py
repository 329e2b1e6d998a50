"""Tuned default hyperparameters, per method and environment, in one readable place.

``default_hyperparameters(method, env_id)`` merges, in order: the method family's defaults for every
environment, then those for the environment family (``CartPole-v1`` or ``gridworld`` for the ``gumbel_rl/``
suite). Anything not set here takes the agent's ``Config`` default. Users override any of them through
``make_agent(..., **hyperparameters)`` or ``train.py --hp name=value``.
"""

from __future__ import annotations

from typing import Any

PATHWISE = ("relaxed", "st-gumbel", "argmax", "reinmax", "gumbel-rao")

# family -> env family ("*" for all) -> hyperparameters
DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "pathwise": {"*": {}, "CartPole-v1": {}, "gridworld": {}},
    "critic": {"*": {}, "CartPole-v1": {}, "gridworld": {}},
    "reinforce": {"*": {}, "CartPole-v1": {}, "gridworld": {}},
    "ppo": {"*": {}, "CartPole-v1": {}, "gridworld": {}},
    "a2c": {"*": {}, "CartPole-v1": {}, "gridworld": {}},
    "dqn": {"*": {}, "CartPole-v1": {}, "gridworld": {}},
}


def method_family(method: str) -> str:
    """``pathwise`` for the twin estimators, ``critic`` for ``<estimator>-critic``, else the method itself."""
    if method in PATHWISE:
        return "pathwise"
    if method.endswith("-critic"):
        return "critic"
    return method


def env_family(env_id: str) -> str:
    """``gridworld`` for the ``gumbel_rl/`` suite, else the id itself."""
    return "gridworld" if env_id.startswith("gumbel_rl/") else env_id


def default_hyperparameters(method: str, env_id: str) -> dict[str, Any]:
    """The tuned defaults for ``method`` on ``env_id`` (a fresh dict)."""
    table = DEFAULTS.get(method_family(method), {})
    return {**table.get("*", {}), **table.get(env_family(env_id), {})}
