"""Differentiable twins of environments: the registry behind `envs.make_differentiable`.

A twin is the same dynamics as a Gymnasium environment, written as batched torch functions of
(state, action) so that gradients flow from rewards back through the (one-hot or soft) actions.
Each twin module registers a factory here under the Gymnasium id it reproduces.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class DifferentiableEnv(Protocol):
    """What every twin provides. ``State`` is a twin-specific NamedTuple of batched tensors."""

    env_id: str
    obs_dim: int
    n_actions: int

    def reset(self, batch: int, generator: torch.Generator | None = None) -> Any:
        """Fresh states for ``batch`` environments, drawn like the Gymnasium env's reset."""

    def step(
        self, state: Any, action: torch.Tensor, *args: Any
    ) -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(next_state, reward, terminated, truncated) for one-hot or soft ``action`` of shape (batch, n_actions)."""

    def observe(self, state: Any) -> torch.Tensor:
        """The observation the policy sees, shape (batch, obs_dim), differentiable in the state."""


_TWINS: dict[str, Callable[..., DifferentiableEnv]] = {}


def register_twin(env_id: str, factory: Callable[..., DifferentiableEnv]) -> None:
    """Make ``make_differentiable(env_id)`` return ``factory(**kwargs)``."""
    _TWINS[env_id] = factory


def differentiable_ids() -> list[str]:
    """The environment ids that have a differentiable twin, sorted."""
    return sorted(_TWINS)


def make_differentiable(env_id: str, **kwargs: Any) -> DifferentiableEnv:
    """The differentiable twin of ``env_id``.

    Raises:
        ValueError: if ``env_id`` has no twin; the message lists the ids that have one.
    """
    try:
        factory = _TWINS[env_id]
    except KeyError:
        raise ValueError(
            f"no differentiable twin for env id {env_id!r}; ids with a twin: {', '.join(differentiable_ids())}"
        ) from None
    return factory(**kwargs)
