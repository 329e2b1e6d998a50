"""Callbacks that ``train.py`` attaches to a run: a progress bar, TensorBoard logging, and a polite stop request.

- :class:`ProgressBarCallback`: a tqdm bar over env steps with the latest evaluation return and the time left.
- :class:`TensorBoardCallback`: every record row as scalars against env steps, under ``charts/``, ``losses/`` and
  ``eval/`` (only when ``tensorboard`` is installed -- an optional extra, see :meth:`TensorBoardCallback.create`).
- :class:`StopRequestCallback`: raises ``KeyboardInterrupt`` at the next iteration boundary once a flag or a
  ``multiprocessing`` event is set, so that an interrupted run checkpoints a consistent state.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any, Protocol

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
        steps = min(int(metrics["env_steps"]), self.total)
        if steps > self.bar.n:
            self.bar.update(steps - self.bar.n)
        if "eval_return_mean" in metrics:
            self.postfix["eval"] = f"{metrics['eval_return_mean']:.4g}"
            if self.agent is not None and self.agent.solved:
                self.postfix["solved@"] = f"{self.agent.solve_env_steps}"
            self.bar.set_postfix(self.postfix, refresh=True)
        return True

    def _on_training_end(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def tensorboard_tag(key: str) -> str:
    """The TensorBoard tag of a record key: ``eval/...`` for evaluations, ``losses/...`` for losses, else
    ``charts/...`` (e.g. ``eval_return_mean`` -> ``eval/return_mean``, ``actor_loss`` -> ``losses/actor_loss``)."""
    if key.startswith("eval_"):
        return "eval/" + key[len("eval_") :]
    if key == "solved":
        return "eval/solved"
    if "loss" in key:
        return "losses/" + key
    return "charts/" + key


class TensorBoardCallback(BaseCallback):
    """Write each record row to TensorBoard against ``env_steps``; also ``charts/steps_per_second``.

    ``writer`` is anything with ``add_scalar(tag, value, global_step)``, ``flush()`` and ``close()`` (normally
    ``torch.utils.tensorboard.SummaryWriter``; build one with :meth:`create`).
    """

    def __init__(self, writer: Any) -> None:
        super().__init__()
        self.writer = writer
        self._last: tuple[int, float] | None = None

    @classmethod
    def create(cls, log_dir: str | os.PathLike) -> TensorBoardCallback | None:
        """A callback writing to ``log_dir``, or None when ``tensorboard`` is not installed (it is optional)."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None
        return cls(SummaryWriter(log_dir=str(log_dir)))

    def _on_step(self, metrics: dict[str, Any]) -> bool:
        step = int(metrics["env_steps"])
        for key, value in metrics.items():
            if key == "env_steps":
                continue
            if isinstance(value, bool):
                value = float(value)
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(tensorboard_tag(key), float(value), step)
        wall = metrics.get("wall_s")
        if isinstance(wall, (int, float)):
            if self._last is not None and wall > self._last[1]:
                sps = (step - self._last[0]) / (wall - self._last[1])
                self.writer.add_scalar("charts/steps_per_second", sps, step)
            self._last = (step, float(wall))
        return True

    def add_scalars(self, values: dict[str, float], step: int) -> None:
        """Log extra scalars (tags given in full, e.g. ``eval/final_return_mean``) at ``step``."""
        for tag, value in values.items():
            if value is not None and math.isfinite(float(value)):
                self.writer.add_scalar(tag, float(value), int(step))

    def _on_training_end(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


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
    """A settable flag with ``is_set()``: what a SIGINT handler flips (see ``experiments.runner.deferred_sigint``)."""

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set
