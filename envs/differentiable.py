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
    """What every differentiable environment provides; training code relies on exactly this and probes nothing.

    The twins in this package (``CartPoleTwin``, ``GridWorldTwin``) implement it, and so must anything else that
    stands in for an environment in a pathwise method, for example a learned model of an environment's dynamics
    (a network mapping (state, action) to the next state and reward): everything below is stated in terms of
    batched tensors so that such a model can implement it later without touching the training code.

    ``State`` is an implementation's own ``NamedTuple`` of batched tensors (first dimension ``batch``) with at
    least a field ``t``: a (batch,) long tensor counting the steps since the last reset. Gradients flow through
    the floating fields of a state, from ``step``'s outputs back to its ``state`` and ``action`` inputs.

    Attributes (read-only):
        env_id: the Gymnasium id this environment reproduces (``""`` when it reproduces none).
        obs_dim: length of an observation, ``observe(state).shape == (batch, obs_dim)``.
        n_actions: number of discrete actions; actions are (batch, n_actions) one-hot or soft weights.
        max_episode_steps: the step count at which ``step`` reports ``truncated``, or None for no limit.
    """

    @property
    def env_id(self) -> str: ...

    @property
    def obs_dim(self) -> int: ...

    @property
    def n_actions(self) -> int: ...

    @property
    def max_episode_steps(self) -> int | None: ...

    def reset(self, batch: int, generator: torch.Generator | None = None) -> Any:
        """Fresh states for ``batch`` environments (``t`` = 0), drawn like the Gymnasium env's reset.

        ``generator``: a ``torch.Generator`` on the environment's device for reproducible draws (None: torch's
        global generator).
        """
        ...

    def reset_done(self, state: Any, done: torch.Tensor, generator: torch.Generator | None = None) -> Any:
        """``state`` with the environments where ``done`` ((batch,) bool) is True replaced by fresh starts.

        Out of place: the kept rows keep their gradients; the fresh rows carry none.
        """
        ...

    def step(
        self, state: Any, action: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step of every environment: ``(next_state, reward, terminated, truncated)``.

        Args:
            state: batched state.
            action: (batch, n_actions) floating tensor, one-hot or soft weights (rows summing to 1).
            generator: source of the step's randomness (slips, noise); deterministic environments accept and
                ignore it.

        Returns:
            ``next_state``; ``reward``: (batch,) floating, the environment's own reward; ``terminated`` and
            ``truncated``: (batch,) bool, as Gymnasium's ``step`` reports them.
        """
        ...

    def observe(self, state: Any) -> torch.Tensor:
        """The observation the policy sees, shape (batch, obs_dim), differentiable in the state."""
        ...

    def continuation(self, state: Any) -> torch.Tensor:
        """The probability that the episode is still running in ``state``, given that it was running one step
        before: shape (batch,), floating, in [0, 1], differentiable in the state.

        Exact twins report termination through ``step``'s ``terminated`` and return ones here (multiplying by
        exactly 1 changes nothing). A learned model, which cannot know termination for sure, returns its predicted
        probability (Dreamer's continuation flag) and never reports ``terminated``; a pathwise method weights
        every later reward and the bootstrapped value by the product of these probabilities.
        """
        ...

    def training_reward(self, state: Any, action: torch.Tensor, next_state: Any, reward: torch.Tensor) -> torch.Tensor:
        """What a pathwise method maximises for the transition ``state --action--> next_state``, shape (batch,).

        ``reward`` is the (batch,) reward ``step`` returned. An environment whose own reward carries a useful
        gradient returns it unchanged; one whose reward does not (CartPole's constant 1) returns a differentiable
        surrogate, stated in its docstring. Always finite for finite inputs.
        """
        ...


@runtime_checkable
class CountableEnv(DifferentiableEnv, Protocol):
    """A :class:`DifferentiableEnv` with cells to count: the optional extension a count-based exploration bonus
    needs (``agents.pathwise``'s ``explore_bonus``). The gridworld and MiniGrid twins implement it.
    """

    def visit_distribution(self, state: Any) -> torch.Tensor:
        """The distribution of ``state`` over the environment's ``n_cells`` countable cells, shape (batch, n_cells),
        floating, rows summing to 1, differentiable in the state (so that a bonus linear in it, ``visits . b``,
        carries a pathwise gradient to the actions). ``n_cells`` is fixed per environment; a point mass gives a
        one-hot row.
        """
        ...


@runtime_checkable
class PreDrawnNoiseEnv(DifferentiableEnv, Protocol):
    """A :class:`DifferentiableEnv` whose randomness can be drawn apart from its dynamics: the optional extension that
    lets many seeds draw their own noise while one ``step`` / ``reset_done`` runs over all of them
    (``agents.many_seeds``). The gridworld and CartPole twins implement it.

    ``step_noise`` and ``reset_noise`` draw from ``generator`` exactly what ``step`` / ``reset_done`` would draw
    (same numbers, same order, same generator state afterwards), and ``step(..., noise=...)`` /
    ``reset_done(..., noise=...)`` consume it instead of drawing (they then draw nothing). So ``step(state, action,
    generator=g)`` and ``step(state, action, noise=step_noise(batch, g))`` are the same step, bit for bit.

    The noise is a tensor with one row per environment (or per environment that ``reset_done`` re-draws) in row
    order, so the noise of consecutive blocks of environments is the blocks' noise concatenated on dim 0.
    """

    def step_noise(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor | None:
        """The noise ``step`` of ``batch`` environments draws from ``generator``; None if ``step`` draws none."""
        ...

    def reset_noise(self, done: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor | None:
        """The noise ``reset_done(state, done)`` draws from ``generator`` (``done``: (batch,) bool); None if it draws
        none."""
        ...

    def step(
        self,
        state: Any,
        action: torch.Tensor,
        generator: torch.Generator | None = None,
        *,
        noise: torch.Tensor | None = None,
    ) -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``DifferentiableEnv.step``; ``noise``: a ``step_noise`` result to consume instead of drawing."""
        ...

    def reset_done(
        self,
        state: Any,
        done: torch.Tensor,
        generator: torch.Generator | None = None,
        *,
        noise: torch.Tensor | None = None,
    ) -> Any:
        """``DifferentiableEnv.reset_done``; ``noise``: a ``reset_noise`` result to consume instead of drawing."""
        ...


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
