"""Differentiable, batched twin of Gymnasium's ``CartPole-v1`` (registered as ``make_differentiable("CartPole-v1")``).

The dynamics are those of ``gymnasium/envs/classic_control/cartpole.py`` (gymnasium 1.4), read from the installed
source: the same constants (``polemass_length = masspole * length`` with ``length = 0.5`` the *half* pole length),
the same equations evaluated in the same operation order, and the default ``"euler"`` integrator, which advances
positions with the *old* velocities (``x += tau * x_dot`` before ``x_dot += tau * xacc``).

Precision: Gymnasium keeps the state as float64 (numpy float64 maths, ``np_random.uniform`` draws float64) and only
hands out a float32 copy as the observation. A twin built with ``dtype=torch.float64`` therefore mirrors it exactly
in arithmetic; the only difference left is the last-ulp rounding of ``sin``/``cos`` (torch's vectorised kernels vs
the C library numpy calls), which matters only over long chaotic rollouts. The default ``float32`` twin runs the
same equations in float32 for speed (it is meant for training, not bit-exact replay).

Everything here is a pure function of tensors: batched over any number of environments, on any device, with
gradients flowing from the next state to the previous state and to the (one-hot or soft) action.

Training objectives (``CartPoleTwin(objective=...)``): what a pathwise method maximises through the twin.

- ``"env"``: Gymnasium's own return, relaxed only where it has no gradient. The reward is Gymnasium's 1 per step
  (``training_reward``), and ``continuation(s)``, the probability that the episode still runs in ``s``, is the
  *straight-through survival*: its value is the exact indicator ``|x| <= 2.4 and |theta| <= 12 deg`` (so that the
  objective of hard actions is the real return), its gradient that of the smooth margin
  ``sigmoid((1 - |x| / 2.4) / w) * sigmoid((1 - |theta| / 12deg) / w)`` (each factor a sigmoid of the distance to
  one bound in units of that bound, ``w = survival_width``), finite everywhere and largest at the bounds. No hand
  shaping: far from the bounds the margin's gradient vanishes and the learned value at the window's end carries
  the signal.
- ``"shaped"``: the hand-designed surrogate ``shaped_reward`` (an LQR-style cost on x and theta), with
  ``continuation`` 1 and termination from ``step`` alone.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from envs.differentiable import register_twin

__all__ = ["OBJECTIVES", "CartPoleState", "CartPoleTwin"]

OBJECTIVES = ("env", "shaped")
"""The twin's training objectives (see the module docstring)."""


def _check_reset_noise(noise: torch.Tensor, rows: int) -> None:
    if noise.shape != (rows, 4):
        raise ValueError(
            f"reset_done noise must have reset_noise's shape ({rows}, 4) (one row per re-drawn environment); "
            f"got {tuple(noise.shape)}"
        )


class CartPoleState(NamedTuple):
    """Batched CartPole state.

    Attributes:
        x: (batch, 4) float tensor ``[x, x_dot, theta, theta_dot]`` in m, m/s, rad, rad/s (Gymnasium's order).
            States made by the twin are the transpose of a contiguous (4, batch) buffer (strides (1, batch)), so
            each variable is contiguous for the maths; any (batch, 4) tensor is accepted as input.
        t: (batch,) long tensor, steps taken since the last reset (used for the 500-step truncation).
    """

    x: torch.Tensor
    t: torch.Tensor


class CartPoleTwin:
    """Batched torch re-implementation of ``gymnasium.make("CartPole-v1")``.

    Args:
        device: where states live (``"cpu"``, ``"cuda"``, a ``torch.device``); default CPU.
        dtype: floating dtype of the state; float32 by default, float64 to mirror Gymnasium's own precision
            (and for ``torch.autograd.gradcheck``).
        objective: the training objective, ``"shaped"`` (default) or ``"env"``.
        survival_width: ``w`` of the ``"env"`` objective's survival margin, as a fraction of each termination
            bound (0.1: the margin's gradient is largest within 0.24 m of |x| = 2.4 m and 1.2 deg of 12 deg).

    Training objective (``training_reward`` and ``continuation``), chosen by ``objective``:

    - ``"env"``: Gymnasium's return. ``training_reward`` is Gymnasium's reward (1.0 per step, the terminating
      step included) and ``continuation`` the straight-through survival (:meth:`survival`): exactly 1 in bounds
      and 0 out of bounds, with the gradient of a smooth margin to the bounds. A pathwise method that weights
      each later reward by the product of continuations maximises the real return for hard actions.
    - ``"shaped"``: the hand-designed surrogate ``shaped_reward(next_state)``, which rewards keeping the pole
      upright and the cart centred. It is **not** Gymnasium's reward; ``continuation`` is 1.

    Under both, ``step`` returns Gymnasium's reward and termination, for counting episode returns.

    Raises:
        ValueError: if ``dtype`` is not a floating-point dtype, ``objective`` is not one of ``OBJECTIVES`` or
            ``survival_width`` is not positive.
    """

    env_id = "CartPole-v1"
    obs_dim = 4
    n_actions = 2
    max_episode_steps = 500

    # Constants exactly as CartPoleEnv.__init__ computes them (Python float64).
    gravity = 9.8
    masscart = 1.0
    masspole = 0.1
    total_mass = masspole + masscart
    length = 0.5  # half the pole's length
    polemass_length = masspole * length
    force_mag = 10.0
    tau = 0.02  # seconds between state updates
    theta_threshold_radians = 12 * 2 * math.pi / 360
    x_threshold = 2.4
    reset_low = -0.05
    reset_high = 0.05

    def __init__(
        self,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
        objective: str = "shaped",
        survival_width: float = 0.1,
    ) -> None:
        if not dtype.is_floating_point:
            raise ValueError(f"CartPoleTwin dtype must be a floating-point dtype (e.g. torch.float32), got {dtype}")
        if objective not in OBJECTIVES:
            raise ValueError(f"CartPoleTwin objective must be one of {', '.join(OBJECTIVES)}; got {objective!r}")
        if isinstance(survival_width, bool) or not isinstance(survival_width, (int, float)) or not survival_width > 0:
            raise ValueError(f"CartPoleTwin survival_width must be a positive number, got {survival_width!r}")
        self.dtype = dtype
        self.objective = objective
        self.survival_width = float(survival_width)
        # |x| and |theta| limits, (2, 1), applied to the rows (x, theta) of the (4, batch) state view in one go.
        self._thresholds_col = torch.tensor(
            [[self.x_threshold], [self.theta_threshold_radians]], dtype=dtype, device=device
        )
        self.device = self._thresholds_col.device  # resolved ("cuda" -> "cuda:0"), so comparisons are exact
        # The constants as 0-dim tensors of the state dtype: the same values torch would use for Python floats
        # (rounded to ``dtype``), but without the per-call scalar wrapping, which is half the cost of an op on a
        # small batch.
        c = {
            name: torch.tensor(getattr(self, name), dtype=dtype, device=self.device)
            for name in ("gravity", "masspole", "total_mass", "length", "polemass_length", "force_mag", "tau")
        }
        c["four_thirds"] = torch.tensor(4.0 / 3.0, dtype=dtype, device=self.device)
        c["max_steps"] = torch.tensor(self.max_episode_steps, device=self.device)
        c["one_step"] = torch.tensor(1, device=self.device)
        c["zero_step"] = torch.tensor(0, device=self.device)
        self._c = c

    def __repr__(self) -> str:
        return f"CartPoleTwin(device={str(self.device)!r}, dtype={self.dtype}, objective={self.objective!r})"

    # ------------------------------------------------------------------ episode start
    def reset(self, batch: int, generator: torch.Generator | None = None) -> CartPoleState:
        """Fresh states for ``batch`` environments: each of the 4 state entries uniform in [-0.05, 0.05).

        Args:
            batch: number of environments (>= 1).
            generator: optional ``torch.Generator`` on the twin's device, for reproducible draws.

        Raises:
            ValueError: if ``batch`` is not a positive int.
        """
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be a positive int, got {batch!r}")
        xt = torch.empty((4, batch), dtype=self.dtype, device=self.device)
        xt.uniform_(self.reset_low, self.reset_high, generator=generator)
        return CartPoleState(xt.t(), torch.zeros(batch, dtype=torch.long, device=self.device))

    def reset_noise(self, done: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The fresh states ``reset_done(state, done)`` draws from ``generator`` (``envs.differentiable
        .PreDrawnNoiseEnv``): on CPU (k, 4), one row per done environment in row order (none drawn when k = 0);
        on other devices (batch, 4), a full batch."""
        if self.device.type == "cpu":
            fresh = torch.empty((4, int(np.count_nonzero(done.numpy()))), dtype=self.dtype)
            if fresh.shape[1] == 0:
                return fresh.t()
        else:
            fresh = torch.empty((4, done.shape[0]), dtype=self.dtype, device=self.device)
        fresh.uniform_(self.reset_low, self.reset_high, generator=generator)
        return fresh.t()

    def reset_done(
        self,
        state: CartPoleState,
        done: torch.Tensor,
        generator: torch.Generator | None = None,
        *,
        noise: torch.Tensor | None = None,
    ) -> CartPoleState:
        """Re-draw the environments where ``done`` is True (as ``reset`` would), keep the others unchanged.

        Out of place, so gradients still flow through the kept rows. On CPU only the done rows consume random
        numbers; on other devices a full batch is drawn (to avoid a host sync), so the streams differ by device.

        Args:
            state: batched state.
            done: (batch,) bool mask, typically ``terminated | truncated`` from ``step``.
            generator: optional ``torch.Generator`` on the twin's device.
            noise: a ``reset_noise(done, ...)`` result to use as the fresh states instead of drawing.

        Raises:
            ValueError: if ``done`` is not a (batch,) bool tensor, or ``noise`` has not ``reset_noise``'s shape.
        """
        batch = state.x.shape[0]
        if done.dtype != torch.bool or done.shape != (batch,):
            raise ValueError(
                f"done must be a bool tensor of shape (batch,) = ({batch},), "
                f"got dtype {done.dtype} and shape {tuple(done.shape)}"
            )
        xt = state.x.t()
        if noise is None:
            noise = self.reset_noise(done, generator)
        if xt.device.type == "cpu":
            # Only the finished rows are touched and consume random numbers. numpy's flatnonzero is ~2x faster
            # than torch.nonzero here.
            idx = torch.from_numpy(np.flatnonzero(done.numpy()))
            _check_reset_noise(noise, idx.numel())
            if idx.numel() == 0:
                return state
            return CartPoleState(xt.index_copy(1, idx, noise.t()).t(), state.t.index_fill(0, idx, 0))
        # On an accelerator, counting the done rows would stall on a host sync: a full batch is drawn instead.
        _check_reset_noise(noise, batch)
        t = torch.where(done, self._c["zero_step"], state.t)
        return CartPoleState(torch.where(done, noise.t(), xt).t(), t)

    # ------------------------------------------------------------------ dynamics
    def step_noise(self, batch: int, generator: torch.Generator | None = None) -> None:
        """None: ``step`` draws no noise (``envs.differentiable.PreDrawnNoiseEnv``)."""
        return None

    def step(
        self,
        state: CartPoleState,
        action: torch.Tensor,
        generator: torch.Generator | None = None,
        *,
        noise: torch.Tensor | None = None,
    ) -> tuple[CartPoleState, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One Euler step of 0.02 s for every environment in the batch.

        Args:
            state: batched state (``x`` of shape (batch, 4)).
            action: (batch, 2) floating tensor, one-hot (0 = push left, 1 = push right) or soft weights. The force is
                ``force_mag * (action[:, 1] - action[:, 0])`` N, i.e. exactly Gymnasium's -10 / +10 N for one-hot
                actions and 0 N for [0.5, 0.5].
            generator: accepted for the ``DifferentiableEnv`` protocol and ignored: CartPole's dynamics are
                deterministic.
            noise: accepted for the ``PreDrawnNoiseEnv`` protocol; must be None (``step_noise`` is None).

        Returns:
            ``(next_state, reward, terminated, truncated)``: ``reward`` is Gymnasium's, 1.0 for every step
            (including the terminating one; state dtype, shape (batch,), no gradient); ``terminated`` (batch,) bool
            when the new |x| > 2.4 m or |theta| > 12 deg; ``truncated`` (batch,) bool when the new step count
            reaches 500. Stepping an already terminated environment is outside Gymnasium's contract: the
            physics simply continue; use ``reset_done``.

        Raises:
            TypeError: if ``action`` is not a tensor.
            ValueError: if ``action`` does not have shape (batch, 2) or is not floating point, or ``state.x`` is not
                (batch, 4) of the twin's dtype and device, or ``noise`` is given.
        """
        if noise is not None:
            raise ValueError("CartPole's step draws no noise: pass noise=None (step_noise returns None)")
        x = state.x
        if x.dim() != 2 or x.shape[1] != 4:
            raise ValueError(f"state.x must have shape (batch, 4), got {tuple(x.shape)}")
        if not isinstance(action, torch.Tensor):
            raise TypeError(f"action must be a torch.Tensor of shape (batch, 2), got {type(action).__name__}")
        batch = x.shape[0]
        if action.shape != (batch, 2):
            raise ValueError(
                f"action must have shape (batch, n_actions) = ({batch}, 2) (one-hot or soft), got {tuple(action.shape)}"
            )
        if not action.is_floating_point():
            raise ValueError(
                f"action must be a floating-point tensor of shape ({batch}, 2) (one-hot or soft weights), "
                f"got dtype {action.dtype}; e.g. torch.nn.functional.one_hot(a, 2).to({x.dtype})"
            )
        if x.dtype != self.dtype or x.device != self.device:
            raise ValueError(
                f"state.x must have this twin's dtype {self.dtype} on {self.device}, got {x.dtype} on {x.device}"
            )
        if action.dtype != x.dtype:
            action = action.to(x.dtype)

        # Work on the (4, batch) row view: each state variable contiguous (a strided column makes torch's sin/cos
        # hundreds of times slower). States made by this class are stored that way already, so this is free.
        xt = x.t()
        if not xt.is_contiguous():
            xt = xt.contiguous()
        if torch.is_grad_enabled() and (xt.requires_grad or action.requires_grad):
            xt_next = self._euler_step(xt, action)
        else:
            xt_next = self._euler_step_no_grad(xt, action)
        out = xt_next[::2].abs() > self._thresholds_col  # (2, batch): |x| > 2.4, |theta| > 12 deg
        terminated = out[0] | out[1]
        t_next = state.t + self._c["one_step"]
        truncated = t_next >= self._c["max_steps"]
        reward = torch.ones(batch, dtype=x.dtype, device=x.device)
        return CartPoleState(xt_next.t(), t_next), reward, terminated, truncated

    def _euler_step(self, xt: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """(4, batch) state rows -> next rows, out of place (autograd records it)."""
        # Same expressions, same evaluation order as CartPoleEnv.step (bit-exact in float64 up to sin/cos).
        # Divisions stay divisions and no fused multiply-add is used, for the same reason.
        c = self._c
        _, x_dot, theta, theta_dot = xt.unbind(0)  # one unbind: its backward is one stack, not 3 zero-filled copies
        push_left, push_right = action.unbind(1)
        force = (push_right - push_left) * c["force_mag"]
        costheta = torch.cos(theta)
        sintheta = torch.sin(theta)
        temp = (force + c["polemass_length"] * (theta_dot * theta_dot) * sintheta) / c["total_mass"]
        thetaacc = (c["gravity"] * sintheta - costheta * temp) / (
            c["length"] * (c["four_thirds"] - c["masspole"] * (costheta * costheta) / c["total_mass"])
        )
        xacc = temp - c["polemass_length"] * thetaacc * costheta / c["total_mass"]
        # Euler: [x, x_dot, theta, theta_dot] + tau * [x_dot, xacc, theta_dot, thetaacc] (old velocities first).
        return xt + c["tau"] * torch.stack((x_dot, xacc, theta_dot, thetaacc))

    def _euler_step_no_grad(self, xt: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``_euler_step`` with in-place ops on its own temporaries: ~1.5-2x faster for large batches.

        Bit-identical to ``_euler_step`` (IEEE ``+`` and ``*`` commute and ``a - b == a + (-b)``, so each line
        rounds exactly like its out-of-place twin; a test checks it). Inputs are never modified.
        """
        c = self._c
        _, x_dot, theta, theta_dot = xt.unbind(0)
        push_left, push_right = action.unbind(1)
        force = torch.sub(push_right, push_left).mul_(c["force_mag"])
        costheta = torch.cos(theta)
        sintheta = torch.sin(theta)
        # temp = (force + pml * theta_dot^2 * sin) / total_mass
        temp = torch.mul(theta_dot, theta_dot).mul_(c["polemass_length"]).mul_(sintheta).add_(force)
        temp.div_(c["total_mass"])
        # thetaacc = (g * sin - cos * temp) / (length * (4/3 - masspole * cos^2 / total_mass))
        denom = torch.mul(costheta, costheta).mul_(c["masspole"]).div_(c["total_mass"])
        denom.neg_().add_(c["four_thirds"]).mul_(c["length"])
        thetaacc = torch.mul(sintheta, c["gravity"]).sub_(torch.mul(costheta, temp)).div_(denom)
        # xacc = temp - pml * thetaacc * cos / total_mass
        xacc = torch.mul(thetaacc, c["polemass_length"]).mul_(costheta).div_(c["total_mass"]).neg_().add_(temp)
        return torch.stack((x_dot, xacc, theta_dot, thetaacc)).mul_(c["tau"]).add_(xt)

    def observe(self, state: CartPoleState) -> torch.Tensor:
        """The observation the policy sees: ``state.x`` itself, (batch, 4), differentiable.

        Gymnasium returns ``float32(state)``; with the default float32 twin this is the same tensor layout and dtype.
        (For a float64 twin, ``observe(state).float()`` is Gymnasium's observation.)
        """
        return state.x

    # ------------------------------------------------------------------ training objectives
    def shaped_reward(self, state: CartPoleState) -> torch.Tensor:
        """Smooth per-step training surrogate, hand-designed, **not** Gymnasium's reward (a constant 1.0, no gradient).

        ``r = 1 - 0.5 * (theta / 12deg)^2 - 0.5 * (x / 2.4 m)^2``, shape (batch,), state dtype.

        It is 1 with the pole upright and the cart centred, falls quadratically towards the termination thresholds
        (0.5 when either |theta| or |x| sits on its threshold, 0 when both do) and keeps falling beyond them. Each
        term is normalised by its own threshold so angle and position count alike in "distance to failure". A
        quadratic (an LQR-style cost) rather than a bounded bump: its gradient grows with the deviation and never
        vanishes, so trajectories heading out of bounds are still pushed back. It uses the next state a ``step``
        returns, so it reaches the action through the dynamics (the action moves theta_dot and x_dot first, then,
        one step later, theta and x).
        """
        pos, _, theta, _ = state.x.t().unbind(0)
        return 1.0 - 0.5 * (theta / self.theta_threshold_radians) ** 2 - 0.5 * (pos / self.x_threshold) ** 2

    def survival(self, state: CartPoleState) -> torch.Tensor:
        """Straight-through probability that the episode still runs in ``state``, shape (batch,), state dtype.

        Value: exactly ``1.0`` where ``|x| <= 2.4`` and ``|theta| <= 12 deg`` and ``0.0`` elsewhere (the complement
        of ``step``'s ``terminated``, bit for bit). Gradient: that of the smooth margin
        ``m = sigmoid((1 - |x| / 2.4) / w) * sigmoid((1 - |theta| / 12deg) / w)``, ``w = survival_width``: each factor
        is a sigmoid of the distance to one bound in units of that bound (their product is close to the sigmoid of
        the nearest bound's distance), so the gradient is finite everywhere, points away from the nearer bound,
        and is largest on it (``1 / (4 w)`` per unit of normalised distance) and small far inside
        (``sigmoid'(1 / w) / w``, 4.5e-4 at the centre for ``w = 0.1``).

        In ``agents.pathwise.shac_window`` (which multiplies every later reward and the closing value by the
        continuations so far, and restarts the product at 1 where ``step`` reports ``terminated | truncated``), the
        value of a terminating step's survival (0) is never used, since the episode ends there anyway, and nothing
        is counted twice; its gradient is dropped with it. The survival's gradient therefore acts through the
        in-bounds states of an episode (weighted by the rewards and closing value that follow each of them).
        """
        pos, _, theta, _ = state.x.t().unbind(0)
        in_bounds = (pos.abs() <= self.x_threshold) & (theta.abs() <= self.theta_threshold_radians)
        margin = torch.sigmoid((1.0 - pos.abs() / self.x_threshold) / self.survival_width) * torch.sigmoid(
            (1.0 - theta.abs() / self.theta_threshold_radians) / self.survival_width
        )
        # (margin - margin.detach()) is exactly 0 with margin's gradient: the value stays the exact indicator.
        return in_bounds.to(pos.dtype) + (margin - margin.detach())

    def continuation(self, state: CartPoleState) -> torch.Tensor:
        """The probability that the episode still runs in ``state``, (batch,): ``survival(state)`` under the
        ``"env"`` objective; ones under ``"shaped"`` (termination is then reported by ``step`` alone)."""
        if self.objective == "env":
            return self.survival(state)
        return torch.ones(state.x.shape[0], dtype=state.x.dtype, device=state.x.device)

    def training_reward(
        self, state: CartPoleState, action: torch.Tensor, next_state: CartPoleState, reward: torch.Tensor
    ) -> torch.Tensor:
        """What a pathwise method maximises, shape (batch,), state dtype.

        ``"env"``: ``reward`` itself, Gymnasium's 1.0 per step (the gradient comes from ``continuation``).
        ``"shaped"``: ``shaped_reward(next_state)``, a hand-designed surrogate; ``reward``, ``state`` and ``action``
        are then not used (the action reaches the surrogate through ``next_state``).
        """
        if self.objective == "env":
            return reward
        return self.shaped_reward(next_state)


register_twin("CartPole-v1", CartPoleTwin)
