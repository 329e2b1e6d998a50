"""Exact tabular models of small discrete environments: optimal values and exact, differentiable returns.

Small gridworlds (FrozenLake, CliffWalking, Taxi, this project's ``GridWorld``) can be solved exactly. This
module turns any env in Gymnasium's toy-text format into dense tensors (``TabularModel``), computes optimal
values by value iteration (``value_iteration``) and the exact expected return of a stochastic policy
(``policy_return``), differentiable in the policy probabilities so that autograd gives the exact policy
gradient -- the ground truth against which gradient estimators are compared.

Conventions (all tensors float64, states and actions indexed as in the env):

* ``P[s, a, s']`` is the probability of moving to ``s'``; ``R[s, a]`` the expected reward of the step,
  ``sum_{entries} prob * reward`` (the reward of entering a terminal state is paid by the step entering it).
* Terminal states are absorbing with zero reward: ``P[s, a] = one_hot(s)``, ``R[s, a] = 0``. The model
  enforces this, whatever the env says about transitions *out of* a terminal state.
* Returns are ``sum_t gamma^t r_t`` from a state drawn from ``initial``. ``horizon=H`` means at most ``H``
  actions, which is what a Gymnasium ``TimeLimit(max_episode_steps=H)`` does; ``horizon=None`` means no limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["TabularModel", "ValueIterationResult", "policy_return", "value_iteration"]

_ROW_ATOL = 1e-9
"""How far from 1 a row of ``P`` or the initial distribution may sum (it is then renormalised exactly)."""

_POLICY_ATOL = 1e-6
"""How far from 1 a row of a policy may sum (float32 softmax rows are accepted)."""

_NEEDS = (
    "a toy-text env exposing env.unwrapped.P[s][a] = [(prob, next_state, reward, terminated), ...] "
    "and env.unwrapped.initial_state_distrib (like FrozenLake-v1, CliffWalking-v1, Taxi-v4 or envs.GridWorld)"
)


def _as_f64(x: Any, name: str) -> torch.Tensor:
    try:
        return torch.as_tensor(x, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{name} must be convertible to a float64 tensor; got {type(x).__name__}") from exc


def _states_list(mask: np.ndarray, limit: int = 8) -> str:
    idx = np.flatnonzero(mask)
    shown = ", ".join(str(int(i)) for i in idx[:limit])
    return shown + (f", ... ({len(idx)} in all)" if len(idx) > limit else "")


def _backward_closure(adj: np.ndarray, target: np.ndarray) -> np.ndarray:
    """States from which ``target`` is reachable along ``adj`` (``adj[s, t]``: edge s -> t), target too."""
    reach: np.ndarray = target.copy()
    while True:
        new = reach | adj[:, reach].any(axis=1)
        if np.array_equal(new, reach):
            return reach
        reach = new


def _forward_closure(adj: np.ndarray, start: np.ndarray) -> np.ndarray:
    """States reachable from ``start`` along ``adj``, start included."""
    reach: np.ndarray = start.copy()
    while True:
        new = reach | adj[reach].any(axis=0)
        if np.array_equal(new, reach):
            return reach
        reach = new


@dataclass(frozen=True, eq=False)
class TabularModel:
    """Exact finite MDP: dense transition tensor, expected rewards, terminal states, initial distribution.

    Attributes:
        P: transition probabilities, shape (S, A, S), float64, rows ``P[s, a]`` sum to 1.
        R: expected reward of taking ``a`` in ``s``, shape (S, A), float64 (reward units of the env).
        terminal: shape (S,) bool; terminal states are absorbing with zero reward (enforced on construction).
        initial: initial-state distribution, shape (S,), float64, sums to 1.
        max_episode_steps: the env's ``TimeLimit`` if ``from_env`` found one (use as ``horizon``), or None.

    Construction accepts numpy arrays or tensors; ``P``/``R`` rows of terminal states are overwritten to make
    them absorbing with zero reward, and rows that sum to within 1e-9 of 1 are renormalised exactly.

    Raises:
        ValueError: inconsistent shapes, negative or non-finite probabilities, a row of ``P`` or the initial
            distribution not summing to 1, or non-finite rewards.
    """

    P: torch.Tensor
    R: torch.Tensor
    terminal: torch.Tensor
    initial: torch.Tensor
    max_episode_steps: int | None = field(default=None)

    def __post_init__(self) -> None:
        P = _as_f64(self.P, "P")
        R = _as_f64(self.R, "R")
        initial = _as_f64(self.initial, "initial")
        terminal = torch.as_tensor(self.terminal, dtype=torch.bool)
        if P.dim() != 3 or P.shape[0] != P.shape[2]:
            raise ValueError(f"P must have shape (S, A, S); got {tuple(P.shape)}")
        S, A = P.shape[0], P.shape[1]
        if S == 0 or A == 0:
            raise ValueError(f"P needs at least one state and one action; got shape {tuple(P.shape)}")
        if tuple(R.shape) != (S, A):
            raise ValueError(f"R must have shape (S, A) = ({S}, {A}) to match P; got {tuple(R.shape)}")
        if tuple(terminal.shape) != (S,):
            raise ValueError(f"terminal must have shape (S,) = ({S},); got {tuple(terminal.shape)}")
        if tuple(initial.shape) != (S,):
            raise ValueError(f"initial must have shape (S,) = ({S},); got {tuple(initial.shape)}")
        with torch.no_grad():
            if not torch.isfinite(P).all() or (P < 0).any():
                raise ValueError("P must hold finite, non-negative probabilities")
            if not torch.isfinite(R).all():
                raise ValueError("R must hold finite rewards")
            sums = P.sum(dim=2)
            bad = (sums - 1.0).abs() > _ROW_ATOL
            if bad.any():
                s, a = (int(i) for i in torch.nonzero(bad)[0])
                raise ValueError(
                    f"each row P[s, a, :] must sum to 1; P[{s}, {a}, :] sums to {float(sums[s, a]):.12g} "
                    f"({int(bad.sum())} bad rows in all)"
                )
            if not torch.isfinite(initial).all() or (initial < 0).any():
                raise ValueError("initial must hold finite, non-negative probabilities")
            if abs(float(initial.sum()) - 1.0) > _ROW_ATOL:
                raise ValueError(f"initial must sum to 1; it sums to {float(initial.sum()):.12g}")
        P = P / sums.detach().unsqueeze(2)
        initial = initial / initial.detach().sum()
        if terminal.any():
            eye = torch.eye(S, dtype=torch.float64)
            P = torch.where(terminal[:, None, None], eye[:, None, :].expand(S, A, S), P)
            R = torch.where(terminal[:, None], torch.zeros((), dtype=torch.float64), R)
        object.__setattr__(self, "P", P)
        object.__setattr__(self, "R", R)
        object.__setattr__(self, "terminal", terminal)
        object.__setattr__(self, "initial", initial)

    @property
    def n_states(self) -> int:
        """Number of states S."""
        return int(self.P.shape[0])

    @property
    def n_actions(self) -> int:
        """Number of actions A."""
        return int(self.P.shape[1])

    @classmethod
    def from_env(cls, env: Any) -> TabularModel:
        """The exact model of a toy-text env (Gymnasium FrozenLake/CliffWalking/Taxi, ``envs.GridWorld``).

        Reads ``env.unwrapped.P[s][a] = [(prob, next_state, reward, terminated), ...]`` and
        ``env.unwrapped.initial_state_distrib``. Duplicate ``(s, a, s')`` entries are merged (probabilities
        summed); ``R[s, a] = sum prob * reward`` over the entries.

        Terminal states. Gymnasium flags termination on transitions, the model on states. A state is
        *live* if it can be visited and acted in: it has initial probability > 0 or is entered by a
        ``terminated=False`` transition (probability > 0) from a live state. A state is terminal if it is
        entered with ``terminated=True`` from a live state -- equivalently, every transition into it from a
        live state is flagged terminated, since a state both live and entered with ``terminated=True`` is an
        error.
        Transitions out of states that can never be visited are ignored for this (Taxi has such states, e.g.
        the passenger already at its destination); a never-visited state is terminal only if every transition
        into it is flagged terminated. Terminal states are then made absorbing with zero reward, so e.g.
        CliffWalking's goal, whose P rows move on, becomes absorbing.

        Raises:
            ValueError: the env has no ``P`` or ``initial_state_distrib`` (naming what is needed), states or
                actions not numbered 0..S-1 / 0..A-1, a next state out of range, a probability outside [0, 1],
                a row of ``P`` not summing to 1, a state entered both with and without ``terminated`` (or an
                initial state entered with ``terminated``), or dynamics outside ``P`` (Taxi's
                ``fickle_passenger``).
        """
        u = getattr(env, "unwrapped", env)
        P_raw = getattr(u, "P", None)
        if P_raw is None:
            raise ValueError(f"TabularModel.from_env needs {_NEEDS}; {type(u).__name__} has no attribute P")
        init_raw = getattr(u, "initial_state_distrib", None)
        if init_raw is None:
            raise ValueError(
                f"TabularModel.from_env needs {_NEEDS}; {type(u).__name__} has no attribute initial_state_distrib"
            )
        if getattr(u, "fickle_passenger", False):
            raise ValueError(
                "Taxi with fickle_passenger=True changes the destination inside step(), outside P; "
                "the tabular model needs fickle_passenger=False"
            )
        try:
            S = len(P_raw)
            if sorted(P_raw.keys() if isinstance(P_raw, dict) else range(S)) != list(range(S)):
                raise ValueError
            A = len(P_raw[0])
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(f"env.unwrapped.P must map every state 0..S-1 to its actions; needs {_NEEDS}") from exc
        P = np.zeros((S, A, S))
        R = np.zeros((S, A))
        enter_term = np.zeros((S, S), dtype=bool)  # enter_term[s, s']: some action moves s -> s' terminated
        enter_cont = np.zeros((S, S), dtype=bool)  # ... with terminated=False
        for s in range(S):
            acts = P_raw[s]
            keys = acts.keys() if isinstance(acts, dict) else range(len(acts))
            if sorted(keys) != list(range(A)):
                raise ValueError(f"state {s} has actions {sorted(keys)}; every state must have actions 0..{A - 1}")
            for a in range(A):
                for entry in acts[a]:
                    try:
                        prob, ns, rew, term = entry[0], entry[1], entry[2], entry[3]
                    except (TypeError, IndexError) as exc:
                        raise ValueError(
                            f"P[{s}][{a}] entry {entry!r} is not (prob, next_state, reward, terminated)"
                        ) from exc
                    prob, ns, rew = float(prob), int(ns), float(rew)
                    if not 0 <= ns < S:
                        raise ValueError(f"P[{s}][{a}] has next_state {ns}; states are 0..{S - 1}")
                    if not 0.0 <= prob <= 1.0:
                        raise ValueError(f"P[{s}][{a}] has probability {prob}; probabilities must be in [0, 1]")
                    P[s, a, ns] += prob
                    R[s, a] += prob * rew
                    if prob > 0.0:
                        (enter_term if bool(term) else enter_cont)[s, ns] = True
                total = P[s, a].sum()
                if abs(total - 1.0) > _ROW_ATOL:
                    raise ValueError(
                        f"probabilities in env P[{s}][{a}] sum to {total:.12g}; each P[s][a] must sum to 1"
                    )
        initial = np.asarray(init_raw, dtype=np.float64).reshape(-1)
        if initial.shape != (S,):
            raise ValueError(f"initial_state_distrib has {initial.size} entries; P has {S} states")

        live = _forward_closure(enter_cont, initial > 0)
        entered_terminated = enter_term[live].any(axis=0)
        clash = entered_terminated & live
        if clash.any():
            raise ValueError(
                f"states {_states_list(clash)} are entered both with terminated=True and as live states "
                "(terminated=False or initial); termination must be a property of the next state "
                "for a tabular model"
            )
        never_visited = ~live & ~entered_terminated
        only_terminated = enter_term.any(axis=0) & ~enter_cont.any(axis=0)
        terminal = entered_terminated | (never_visited & only_terminated)

        spec = getattr(env, "spec", None)
        max_steps = getattr(spec, "max_episode_steps", None)
        return cls(
            P=torch.from_numpy(P),
            R=torch.from_numpy(R),
            terminal=torch.from_numpy(terminal),
            initial=torch.from_numpy(initial),
            max_episode_steps=max_steps,
        )


@dataclass(frozen=True, eq=False)
class ValueIterationResult:
    """Optimal values and a greedy optimal policy.

    Attributes:
        V: optimal values at t=0, shape (S,), float64 (0 at terminal states).
        Q: optimal action values at t=0, shape (S, A), float64.
        policy: greedy action per state at t=0, shape (S,), int64.
        expected_return: ``initial @ V``, the optimal expected return from the initial distribution.
        gamma: discount used.
        horizon: number of steps (None: infinite horizon).
        iterations: sweeps done (``horizon`` for finite horizon).
        time_policy: finite horizon only: greedy action at each time step, shape (H, S), int64
            (``time_policy[t]`` is used when H - t steps remain); None for infinite horizon.
    """

    V: torch.Tensor
    Q: torch.Tensor
    policy: torch.Tensor
    expected_return: float
    gamma: float
    horizon: int | None
    iterations: int
    time_policy: torch.Tensor | None = None

    def policy_probs(self) -> torch.Tensor:
        """The greedy policy as one-hot probabilities for ``policy_return``: (S, A), or (H, S, A) if H set."""
        n_actions = self.Q.shape[1]
        acts = self.policy if self.time_policy is None else self.time_policy
        return torch.nn.functional.one_hot(acts, n_actions).to(torch.float64)


def _check_gamma_horizon(gamma: float, horizon: int | None) -> tuple[float, int | None]:
    gamma = float(gamma)
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1]; got {gamma}")
    if horizon is not None:
        if isinstance(horizon, bool) or int(horizon) != horizon or horizon < 1:
            raise ValueError(f"horizon must be a positive integer or None (infinite horizon); got {horizon!r}")
        horizon = int(horizon)
    return gamma, horizon


def _proper_greedy(P: np.ndarray, terminal: np.ndarray, q: np.ndarray, tie_tol: float) -> np.ndarray:
    """Greedy policy for gamma = 1 whose ties are broken towards termination.

    With gamma = 1 a plain argmax can pick a tied action that never ends the episode (FrozenLake's value
    ties), which is not optimal. States are levelled backwards from the terminal states; a state joins level
    k when one of its near-optimal actions (Q within ``tie_tol`` of the max) reaches level < k with positive
    probability, and takes the best such action. A policy greedy w.r.t. the optimal values that terminates
    with probability 1 is optimal (stochastic shortest paths). States never levelled keep the argmax.
    """
    policy: np.ndarray = q.argmax(axis=1)
    near_opt = q >= q.max(axis=1, keepdims=True) - tie_tol
    levelled = terminal.copy()
    while True:
        progress = near_opt & (P[:, :, levelled].sum(axis=2) > 0)
        new = ~levelled & progress.any(axis=1)
        if not new.any():
            break
        policy[new] = np.where(progress, q, -np.inf)[new].argmax(axis=1)
        levelled = levelled | new
    return policy


def value_iteration(
    model: TabularModel,
    gamma: float = 1.0,
    horizon: int | None = None,
    tol: float = 1e-10,
    max_iter: int = 100_000,
) -> ValueIterationResult:
    """Optimal values and a greedy optimal policy of ``model``.

    Args:
        model: the MDP.
        gamma: discount in [0, 1].
        horizon: None for the infinite horizon (Bellman optimality sweeps until the largest change of ``V``
            is below ``tol``; with gamma = 1 this relies on the absorbing terminal states). An integer H:
            exact backward induction over H steps (time-dependent policy, ``time_policy``), i.e. the optimum
            under a Gymnasium ``TimeLimit`` of H steps; ``tol`` and ``max_iter`` are then unused.
        tol: infinite horizon: stop when ``max_s |V_new(s) - V(s)| < tol`` (reward units).
        max_iter: infinite horizon: most sweeps before giving up.

    Returns:
        ValueIterationResult. For gamma = 1 and infinite horizon, ties among near-optimal actions (Q within
        ``1e3 * tol`` of the best, relative to the scale of Q) are broken towards termination so that the
        greedy policy is optimal and terminates where possible. ``V`` is accurate to about ``tol`` divided by
        the contraction gap (about 2e-9 for FrozenLake, gamma = 1); finite horizons are exact.

    Raises:
        ValueError: gamma outside [0, 1], horizon not a positive integer, tol <= 0 or max_iter < 1.
        RuntimeError: infinite horizon and no convergence within ``max_iter`` sweeps (e.g. gamma = 1 and
            states that collect non-zero reward forever without terminating).
    """
    gamma, horizon = _check_gamma_horizon(gamma, horizon)
    if not tol > 0:
        raise ValueError(f"tol must be > 0; got {tol}")
    if int(max_iter) < 1:
        raise ValueError(f"max_iter must be >= 1; got {max_iter}")
    S, A = model.n_states, model.n_actions
    # Plain numpy: no gradients are needed here, and numpy avoids torch's per-op threading overhead.
    P2 = model.P.detach().numpy().reshape(S * A, S)
    R = model.R.detach().numpy()
    initial = model.initial.detach().numpy()
    V = np.zeros(S)
    if horizon is not None:
        time_policy = np.empty((horizon, S), dtype=np.int64)
        for t in reversed(range(horizon)):
            Q = R + gamma * (P2 @ V).reshape(S, A)
            time_policy[t] = Q.argmax(axis=1)
            V = Q[np.arange(S), time_policy[t]]
        return ValueIterationResult(
            V=torch.from_numpy(V),
            Q=torch.from_numpy(Q),
            policy=torch.from_numpy(time_policy[0].copy()),
            expected_return=float(initial @ V),
            gamma=gamma,
            horizon=horizon,
            iterations=horizon,
            time_policy=torch.from_numpy(time_policy),
        )
    delta, it = float("inf"), 0
    while it < int(max_iter):
        V_new = (R + gamma * (P2 @ V).reshape(S, A)).max(axis=1)
        delta = float(np.abs(V_new - V).max())
        V, it = V_new, it + 1
        if delta < tol or not np.isfinite(delta):
            break
    if not delta < tol:
        raise RuntimeError(
            f"value iteration did not converge in {it} sweeps (last max change {delta:.3g}, tol {tol:g}) "
            f"with gamma={gamma}; with gamma=1 this means states that collect non-zero reward forever "
            "without terminating (unbounded values) or very slow convergence: use gamma < 1, a finite "
            "horizon or a larger max_iter"
        )
    Q = R + gamma * (P2 @ V).reshape(S, A)
    if gamma == 1.0:
        tie_tol = 1e3 * tol * max(1.0, float(np.abs(Q).max()))
        policy = _proper_greedy(P2.reshape(S, A, S), model.terminal.numpy(), Q, tie_tol)
    else:
        policy = Q.argmax(axis=1)
    return ValueIterationResult(
        V=torch.from_numpy(V),
        Q=torch.from_numpy(Q),
        policy=torch.from_numpy(policy),
        expected_return=float(initial @ V),
        gamma=gamma,
        horizon=None,
        iterations=it,
    )


def _check_policy(model: TabularModel, policy_probs_in: Any, horizon: int | None) -> torch.Tensor:
    policy_probs = (
        policy_probs_in if isinstance(policy_probs_in, torch.Tensor) else _as_f64(policy_probs_in, "policy_probs")
    )
    S, A = model.n_states, model.n_actions
    shape = tuple(policy_probs.shape)
    ok = shape == (S, A) or (horizon is not None and shape == (horizon, S, A))
    if not ok:
        allowed = f"(S, A) = ({S}, {A})" + (f" or (H, S, A) = ({horizon}, {S}, {A})" if horizon else "")
        raise ValueError(f"policy_probs must have shape {allowed}; got {shape}")
    pi = policy_probs.to(torch.float64)
    with torch.no_grad():
        if not torch.isfinite(pi).all() or (pi < 0).any():
            raise ValueError("policy_probs must hold finite, non-negative probabilities")
        err = (pi.sum(dim=-1) - 1.0).abs()
        if (err > _POLICY_ATOL).any():
            raise ValueError(
                f"each row of policy_probs must sum to 1 (over the {A} actions); "
                f"worst row is off by {float(err.max()):.3g}"
            )
    return pi


def policy_return(
    model: TabularModel,
    policy_probs: torch.Tensor,
    gamma: float = 1.0,
    horizon: int | None = None,
) -> torch.Tensor:
    """Exact expected return ``E[sum_t gamma^t r_t]`` of a stochastic policy from the initial distribution.

    Differentiable in ``policy_probs`` (autograd gives the exact policy gradient, also through a softmax or a
    policy network producing the probabilities).

    Args:
        model: the MDP.
        policy_probs: ``pi(a | s)``, shape (S, A), rows summing to 1 (within 1e-6); with a finite horizon
            also a time-dependent policy of shape (H, S, A), ``policy_probs[t]`` used at step t. Converted to
            float64.
        gamma: discount in [0, 1].
        horizon: None: infinite horizon, solved exactly as the linear system ``(I - gamma P_pi) v = r_pi`` on
            the non-terminal states (``torch.linalg.solve``). H: H steps of the Bellman expectation backup
            (the return under a Gymnasium ``TimeLimit`` of H steps).

    Returns:
        Scalar float64 tensor.

    With gamma = 1 and no horizon, states from which the policy (its support ``pi > 0``) fails to terminate
    with probability 1 have no finite value in general: if the initial distribution reaches one, ValueError;
    otherwise they are left out of the linear system, so the gradient with respect to zero-probability actions
    that lead into them is not meaningful (full-support policies, e.g. softmax, never hit this).

    Raises:
        ValueError: wrong shape, negative or non-finite probabilities, rows not summing to 1, gamma outside
            [0, 1], horizon not a positive integer, or (gamma = 1, no horizon) a policy that may never
            terminate.
    """
    gamma, horizon = _check_gamma_horizon(gamma, horizon)
    pi = _check_policy(model, policy_probs, horizon)
    S, A = model.n_states, model.n_actions
    P, R, initial = model.P, model.R, model.initial
    if horizon is not None:
        P2 = P.reshape(S * A, S)
        V = torch.zeros(S, dtype=torch.float64)
        for t in reversed(range(horizon)):
            pi_t = pi[t] if pi.dim() == 3 else pi
            Q = R + gamma * (P2 @ V).reshape(S, A)
            V = (pi_t * Q).sum(dim=1)
        return initial @ V

    keep = ~model.terminal.numpy()
    if gamma == 1.0:
        with torch.no_grad():
            adj = torch.einsum("sa,sat->st", (pi > 0).to(torch.float64), P.detach()).numpy() > 0
        terminal = model.terminal.numpy()
        trapped = ~_backward_closure(adj, terminal)
        improper = _backward_closure(adj, trapped)
        reached = _forward_closure(adj, initial.detach().numpy() > 0)
        if (improper & reached).any():
            raise ValueError(
                f"with gamma=1 and no horizon the policy may never terminate from states "
                f"{_states_list(improper & reached)} reachable from the initial distribution, so the "
                "undiscounted return is undefined; use gamma < 1 or a finite horizon"
            )
        keep &= ~improper
    idx = torch.from_numpy(np.flatnonzero(keep))
    if idx.numel() == 0:
        return (initial * 0.0).sum() + (pi * 0.0).sum()
    P_pi = torch.einsum("sa,sat->st", pi[idx], P[idx][:, :, idx])
    r_pi = (pi[idx] * R[idx]).sum(dim=1)
    M = torch.eye(idx.numel(), dtype=torch.float64) - gamma * P_pi
    v = torch.linalg.solve(M, r_pi)
    value: torch.Tensor = initial[idx] @ v
    return value
