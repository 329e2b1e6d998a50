"""Callbacks that ``experiments.runner`` attaches to a run: a progress bar, periodic checkpoints, a polite stop.

- :class:`ProgressBarCallback`: a tqdm bar over env steps with the latest evaluation return and the time left.
- :class:`CheckpointCallback`: ``agent.save`` (one atomic write) every so many env steps and every so many
  seconds, so a run killed outright (SIGKILL, a crash, a lost machine) loses at most one interval of work.
- :class:`StopRequestCallback`: raises ``KeyboardInterrupt`` at the next iteration boundary once a flag or a
  ``multiprocessing`` event is set, so that an interrupted run checkpoints a consistent state.

Metrics (record rows, TensorBoard, stdout) are not callbacks: the agent writes every row to its SB3 logger
(``experiments.run_log``).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from agents.base import EVAL_MEAN, STEPS
from agents.callbacks import BaseCallback


class _Flag(Protocol):
    def is_set(self) -> bool: ...


class ProgressBarCallback(BaseCallback):
    """A tqdm progress bar over env steps, ``total`` the step budget (absolute: a resumed run starts part-way)."""

    def __init__(self, total: int, desc: str = "", file: Any = None) -> None:
        super().__init__()
        self.total, self.desc, self.file = int(total), desc, file
        self.bar: Any = None
        self.postfix: dict[str, str] = {}

    def _on_training_start(self) -> None:
        from tqdm.auto import tqdm

        start = min(self.agent.num_env_steps, self.total) if self.agent is not None else 0
        self.bar = tqdm(
            total=self.total,
            initial=start,
            desc=self.desc,
            unit="step",
            unit_scale=True,
            dynamic_ncols=True,
            file=self.file or sys.stderr,
            smoothing=0.1,
        )

    def _on_step(self, metrics: dict[str, Any]) -> bool:
        if self.bar is None:
            return True
        steps = min(int(metrics[STEPS]), self.total)
        if steps > self.bar.n:
            self.bar.update(steps - self.bar.n)
        if EVAL_MEAN in metrics:
            self.postfix["eval"] = f"{metrics[EVAL_MEAN]:.4g}"
            if self.agent is not None and self.agent.solved:
                self.postfix["solved@"] = f"{self.agent.solve_env_steps}"
            self.bar.set_postfix(self.postfix, refresh=True)
        return True

    def _on_training_end(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class CheckpointCallback(BaseCallback):
    """``agent.save(path)`` after the iteration that completes ``every_steps`` env steps, or ``every_seconds``
    seconds (wall clock, evaluation included), since the last save or the start of training; ``None`` disables
    either. The record row of that iteration is already logged, so ``metrics.csv`` then holds the checkpoint's
    record (and maybe rows after it, which a resume drops)."""

    def __init__(
        self,
        path: str | os.PathLike,
        every_steps: int | None,
        every_seconds: float | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self.every_steps, self.every_seconds, self.clock = every_steps, every_seconds, clock
        self.saves = 0
        self._steps = 0
        self._time = 0.0

    def _on_training_start(self) -> None:
        self._steps = self.agent.num_env_steps if self.agent is not None else 0
        self._time = self.clock()

    def _on_step(self, metrics: dict[str, Any]) -> bool:
        assert self.agent is not None
        due_steps = self.every_steps is not None and self.agent.num_env_steps - self._steps >= self.every_steps
        due_time = self.every_seconds is not None and self.clock() - self._time >= self.every_seconds
        if due_steps or due_time:
            self.agent.save(self.path)
            self.saves += 1
            self._steps, self._time = self.agent.num_env_steps, self.clock()
        return True


class StopRequestCallback(BaseCallback):
    """Raise ``KeyboardInterrupt`` after the current iteration once ``flag.is_set()`` (a ``threading.Event``, a
    ``multiprocessing`` event, or :class:`StopFlag`): the interruption then lands on an iteration boundary."""

    def __init__(self, flag: _Flag) -> None:
        super().__init__()
        self.flag = flag

    def _on_step(self, metrics: dict[str, Any]) -> bool:
        if self.flag.is_set():
            raise KeyboardInterrupt
        return True


class StopFlag:
    """A settable flag with ``is_set()``: what a SIGINT / SIGTERM handler flips (see
    ``experiments.runner.deferred_interrupts``); ``signum`` is the signal that set it (SIGINT by default)."""

    def __init__(self) -> None:
        self._set = False
        self.signum: int = signal.SIGINT

    def set(self, signum: int = signal.SIGINT) -> None:
        if not self._set:
            self.signum = signum
        self._set = True

    def is_set(self) -> bool:
        return self._set
