"""Temperature schedules for Gumbel-Softmax: ``schedule(step) -> tau``.

- :class:`ConstantSchedule`: ``tau`` at every step.
- :class:`ExponentialSchedule`: ``tau = max(tau_min, tau0 * exp(-rate * step))``, Jang et al. (2017) with
  ``tau0 = 1`` (they anneal every N steps with ``rate`` in [1e-5, 1e-4] and ``tau_min = 0.5``).
- :class:`LinearSchedule`: from ``tau0`` to ``tau_end`` over ``steps`` steps, then constant.

Each is a small frozen dataclass, so it can be written to a run's config (``to_dict``) and rebuilt
(:func:`make_schedule`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any


def _positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


@dataclass(frozen=True)
class ConstantSchedule:
    """The same temperature at every step."""

    tau: float = 1.0

    def __post_init__(self) -> None:
        _positive("tau", self.tau)

    def __call__(self, step: int) -> float:
        return float(self.tau)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "constant", **asdict(self)}


@dataclass(frozen=True)
class ExponentialSchedule:
    """``tau = max(tau_min, tau0 * exp(-rate * step))`` (Jang et al. 2017, Sec. 4)."""

    tau0: float = 1.0
    rate: float = 1e-4
    tau_min: float = 0.5

    def __post_init__(self) -> None:
        _positive("tau0", self.tau0)
        _positive("tau_min", self.tau_min)
        if not (math.isfinite(self.rate) and self.rate >= 0):
            raise ValueError(f"rate must be a finite number >= 0, got {self.rate!r}")

    def __call__(self, step: int) -> float:
        return max(self.tau_min, self.tau0 * math.exp(-self.rate * step))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "exponential", **asdict(self)}


@dataclass(frozen=True)
class LinearSchedule:
    """Linear interpolation from ``tau0`` at step 0 to ``tau_end`` at ``steps``, constant afterwards."""

    tau0: float = 1.0
    tau_end: float = 0.5
    steps: int = 100_000

    def __post_init__(self) -> None:
        _positive("tau0", self.tau0)
        _positive("tau_end", self.tau_end)
        _positive("steps", self.steps)

    def __call__(self, step: int) -> float:
        frac = min(max(step, 0) / self.steps, 1.0)
        return self.tau0 + frac * (self.tau_end - self.tau0)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "linear", **asdict(self)}


Schedule = ConstantSchedule | ExponentialSchedule | LinearSchedule
SCHEDULES: dict[str, type[Schedule]] = {
    "constant": ConstantSchedule,
    "exponential": ExponentialSchedule,
    "linear": LinearSchedule,
}


def make_schedule(kind: str | float | dict[str, Any] | Schedule, **kwargs: Any) -> Schedule:
    """Build a schedule from a kind name and its fields, a number (constant), or a ``to_dict()`` mapping.

    Raises:
        ValueError: unknown kind (the message lists the kinds) or an unknown / invalid field.
    """
    if isinstance(kind, (ConstantSchedule, ExponentialSchedule, LinearSchedule)):
        return kind
    if isinstance(kind, (int, float)) and not isinstance(kind, bool):
        return ConstantSchedule(float(kind))
    if isinstance(kind, dict):
        kwargs = {**{k: v for k, v in kind.items() if k != "kind"}, **kwargs}
        kind = kind.get("kind", "constant")
    if kind not in SCHEDULES:
        raise ValueError(f"unknown temperature schedule {kind!r}; valid schedules: {', '.join(SCHEDULES)}")
    cls = SCHEDULES[kind]
    valid = [f.name for f in fields(cls)]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(f"unknown field(s) {unknown} for the {kind} schedule; valid fields: {', '.join(valid)}")
    return cls(**kwargs)
