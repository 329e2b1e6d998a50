"""Returns of the training episodes, tracked the same way for every method (``rollout/ep_rew_mean``).

Stable-Baselines3 reports the mean return of the last 100 finished training episodes; so does every gumbel-rl
method, whether its environments are Gymnasium vector envs (numpy) or batched twins (torch, on any device).
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import torch

WINDOW = 100
"""Finished episodes averaged in ``rollout/ep_rew_mean`` (as SB3's ``stats_window_size``)."""


class EpisodeReturns:
    """Running return of each of ``n_envs`` environments and the returns of the last ``WINDOW`` finished episodes.

    ``add(rewards, done)`` takes numpy arrays or tensors of shape (n_envs,). With tensors the running returns stay
    on their device and the finished ones are moved to the host once per :meth:`metrics` call, not per step.
    """

    def __init__(self, n_envs: int, device: torch.device | None = None) -> None:
        self.n_envs = int(n_envs)
        self.device = device
        self.running: Any = torch.zeros(n_envs, device=device) if device is not None else np.zeros(n_envs)
        self.recent: deque[float] = deque(maxlen=WINDOW)
        self.episodes = 0
        self._pending: list[tuple[Any, Any]] = []

    def add(self, rewards: Any, done: Any) -> None:
        """One step of every environment: add ``rewards``; the environments in ``done`` finish their episode."""
        if isinstance(self.running, torch.Tensor):
            self.running = self.running + rewards.detach()
            self._pending.append((self.running, done))
            self.running = self.running.masked_fill(done, 0.0)
        else:
            self.running = self.running + np.asarray(rewards, dtype=np.float64)
            done = np.asarray(done, dtype=bool)
            if done.any():
                self.recent.extend(self.running[done].tolist())
                self.episodes += int(done.sum())
                self.running = np.where(done, 0.0, self.running)

    def _flush(self) -> None:
        if not self._pending:
            return
        returns = torch.stack([r for r, _ in self._pending]).cpu()
        done = torch.stack([d for _, d in self._pending]).cpu()
        self._pending.clear()
        self.add_finished(returns, done)

    def add_finished(self, returns: torch.Tensor, done: torch.Tensor) -> None:
        """Record the episodes that ended: ``returns`` and ``done`` (T, B) time-major on the CPU, ``returns[t, b]``
        the running return of copy ``b`` at step ``t`` (kept where ``done``), in the order they finished."""
        finished = returns[done].tolist()
        self.recent.extend(finished)
        self.episodes += len(finished)

    def metrics(self) -> dict[str, float]:
        """``rollout/ep_rew_mean`` (once an episode has finished) and ``rollout/episodes``."""
        self._flush()
        out = {"rollout/episodes": float(self.episodes)}
        if self.recent:
            out["rollout/ep_rew_mean"] = float(np.mean(self.recent))
        return out

    def state_dict(self) -> dict[str, Any]:
        self._flush()
        running = self.running if isinstance(self.running, torch.Tensor) else torch.as_tensor(self.running)
        return {"running": running, "recent": list(self.recent), "episodes": self.episodes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if isinstance(self.running, torch.Tensor):
            self.running = state["running"].to(self.running.device, self.running.dtype)
        else:
            self.running = np.asarray(state["running"].cpu().numpy(), dtype=np.float64)
        self.recent = deque((float(x) for x in state["recent"]), maxlen=WINDOW)
        self.episodes = int(state["episodes"])


__all__ = ["WINDOW", "EpisodeReturns"]
