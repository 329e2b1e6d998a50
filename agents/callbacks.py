"""Callbacks in the spirit of Stable-Baselines3's: called during ``Agent.learn``, able to stop training.

``on_step(metrics)`` is called after every training iteration (one update, or one SB3 rollout) with the latest
row of the agent's record; returning False stops training. Subclass :class:`BaseCallback` and override
``_on_step``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agents.base import Agent


class BaseCallback:
    """Base class: ``agent`` is set by ``init_callback``; ``n_calls`` counts ``on_step`` calls."""

    def __init__(self) -> None:
        self.agent: Agent | None = None
        self.n_calls = 0

    def init_callback(self, agent: Agent) -> None:
        self.agent = agent
        self._on_training_start()

    def on_step(self, metrics: dict[str, Any]) -> bool:
        self.n_calls += 1
        return bool(self._on_step(metrics))

    def on_training_end(self) -> None:
        self._on_training_end()

    def _on_training_start(self) -> None:
        pass

    def _on_step(self, metrics: dict[str, Any]) -> bool:
        return True

    def _on_training_end(self) -> None:
        pass


class CallbackList(BaseCallback):
    """Several callbacks; training stops as soon as one returns False."""

    def __init__(self, callbacks: Sequence[BaseCallback]) -> None:
        super().__init__()
        self.callbacks = list(callbacks)

    def _on_training_start(self) -> None:
        for cb in self.callbacks:
            cb.init_callback(self.agent)

    def _on_step(self, metrics: dict[str, Any]) -> bool:
        return all([cb.on_step(metrics) for cb in self.callbacks])

    def _on_training_end(self) -> None:
        for cb in self.callbacks:
            cb.on_training_end()


class FunctionCallback(BaseCallback):
    """Wrap ``fn(agent, metrics) -> bool | None`` (None counts as "go on")."""

    def __init__(self, fn: Callable[[Agent, dict[str, Any]], bool | None]) -> None:
        super().__init__()
        self.fn = fn

    def _on_step(self, metrics: dict[str, Any]) -> bool:
        out = self.fn(self.agent, metrics)
        return True if out is None else bool(out)


class StopTrainingOnSolved(BaseCallback):
    """Stop as soon as the agent's periodic evaluation has solved the environment."""

    def _on_step(self, metrics: dict[str, Any]) -> bool:
        return not (self.agent is not None and self.agent.solved)


def as_callback(callback: BaseCallback | Sequence[BaseCallback] | Callable | None) -> BaseCallback:
    """Normalise ``learn``'s ``callback`` argument into one :class:`BaseCallback`."""
    if callback is None:
        return BaseCallback()
    if isinstance(callback, BaseCallback):
        return callback
    if isinstance(callback, Sequence):
        return CallbackList([as_callback(cb) for cb in callback])
    if callable(callback):
        return FunctionCallback(callback)
    raise ValueError(f"callback must be a BaseCallback, a list of them, or a function; got {type(callback).__name__}")
