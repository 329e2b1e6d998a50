"""How good is each gradient estimator? Bias, variance and error of policy gradients against a reference.

Three settings, one set of statistics (:func:`summarize`):

* **Gridworld** (exact reference): the gradient of the expected undiscounted return over the env's time limit ``H``,
  ``J = policy_return(model, softmax(logits of every cell), horizon=H)`` from ``envs.tabular``, differentiated by
  autograd w.r.t. the policy parameters (:func:`exact_gradient`). Each estimator's gradient comes from ``N``
  episodes of the differentiable twin (``envs.make_differentiable``), rolled ``H`` steps from ``twin.reset``
  (goal and trap cells are absorbing with zero reward, so ``H`` steps are exactly one time-limited episode):

  - pathwise (``relaxed``, ``st-gumbel``, ``argmax``, ``reinmax``, ``gumbel-rao``): actions from
    ``sample_action(logits, estimator, tau)`` go into the twin and autograd differentiates the mean episode return
    through the twin, the observations and the policy;
  - ``reinforce``: score function ``sum_t grad log pi(a_t|s_t) * G_t`` (``G_t`` the return-to-go), no baseline;
  - ``reinforce-baseline``: the same with ``G_t - V^pi_{H-t}(s_t)``, the *exact* value of the current policy with
    ``H - t`` steps left, from the tabular model (a state baseline: unbiased). Neither differentiates the twin.

* **CartPole** (no exact gradient): the objective is the expected sum of the twin's ``shaped_reward`` over a fixed
  horizon of ``H = 100`` steps *without termination or reset* (:func:`cartpole_gradients`). Gymnasium's reward is
  1 per step whatever the action, so its pathwise gradient is zero; the return depends on the policy only through
  *when* the episode terminates, a step function of the state with no useful derivative. The shaped reward is a
  smooth function of the state, so the pathwise estimators have something to differentiate. The reference is a
  very large ``reinforce-baseline`` estimate of the same objective (:func:`cartpole_reference`) whose standard
  error is reported and subtracted (in squares) from the bias and MSE. There is no exact value function, so the
  baseline is a per-step ridge regression of the return-to-go on quadratic features of the state, fitted on pilot
  episodes that the estimate does not reuse (unbiased, for every ``N``).

* **Toy** (REBAR, Tucker et al. 2017; RELAX, Grathwohl et al. 2018): minimise ``E_{b ~ Bernoulli(sigmoid(theta))}
  [(b - t)^2]`` with ``t = 0.45``; ``b`` is a 2-class categorical with logits ``(0, theta)`` and ``relaxed`` feeds
  the soft ``b = y[1]`` (:func:`toy_gradients`, :func:`toy_exact_gradient`).

Statistics of ``R`` independent estimates ``g_r`` (each from ``N`` episodes) against a reference ``e``: bias norm
``||mean - e||`` (reported debiased: ``sqrt(max(0, ||mean - e||^2 - tr(Cov) / R))``, since the mean's own noise adds
``tr(Cov) / R`` to the squared norm), variance ``tr(Cov)`` of one estimate, MSE ``mean ||g_r - e||^2``, cosine of the
mean with ``e`` and the mean per-estimate cosine, and the fraction of estimates with ``<g_r, e> > 0`` (a step along
``g_r`` increases ``J`` to first order). 95% confidence intervals are percentile bootstraps over the repetitions.

Everything runs in float64 (twins included) so that the only error left is Monte Carlo error.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch.func import functional_call, vmap

import envs
from envs.tabular import TabularModel, policy_return
from gumbel_rl.estimators import PATHWISE_ESTIMATORS, sample_action
from gumbel_rl.policy import GumbelPolicy

__all__ = [
    "CARTPOLE_HORIZON",
    "STUDY_ESTIMATORS",
    "TOY_TARGET",
    "Reference",
    "StudyRow",
    "cartpole_ascent",
    "cartpole_gradients",
    "cartpole_objective",
    "cartpole_policy",
    "default_repetitions",
    "cartpole_reference",
    "estimator_gradients",
    "exact_ascent",
    "exact_gradient",
    "expected_return",
    "measure_cartpole",
    "measure_estimators",
    "summarize",
    "tabular_model",
    "toy_exact_gradient",
    "toy_gradients",
]

STUDY_ESTIMATORS: tuple[str, ...] = (*PATHWISE_ESTIMATORS, "reinforce", "reinforce-baseline")
"""Estimators the study knows: the pathwise ones of ``gumbel_rl`` and REINFORCE without / with a baseline."""

SCORE_ESTIMATORS: tuple[str, ...] = ("reinforce", "reinforce-baseline")
"""Score-function estimators: no temperature, no backprop through the environment."""

CARTPOLE_HORIZON = 100
"""Steps of the CartPole objective (no termination, no reset)."""

TOY_TARGET = 0.45
"""``t`` of the toy objective ``E[(b - t)^2]``."""

DEFAULT_N_EPISODES: tuple[int, ...] = (1, 10, 100, 1000)
DEFAULT_MAX_BATCH = 2048
"""Episodes rolled in one batch (one backward); repetitions are split into chunks of at most this many episodes."""

Policy = GumbelPolicy | torch.Tensor
"""A ``GumbelPolicy`` or a tabular policy: a (n_states, n_actions) tensor of logits."""


# ---------------------------------------------------------------------------------------------- policy adapter
@dataclass
class _PolicyFn:
    """Float64 copies of a policy's parameters and a function ``(params, features (..., obs_dim)) -> logits``."""

    params: dict[str, torch.Tensor]
    fn: Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]
    kind: str

    @property
    def dim(self) -> int:
        return sum(p.numel() for p in self.params.values())

    def flat(self, grads: Sequence[torch.Tensor], batch: int | None = None) -> torch.Tensor:
        """Concatenate per-parameter gradients into (D,) or, with a leading batch dim, (batch, D)."""
        if batch is None:
            return torch.cat([g.reshape(-1) for g in grads])
        return torch.cat([g.reshape(batch, -1) for g in grads], dim=1)


def _table_logits(params: dict[str, torch.Tensor], features: torch.Tensor) -> torch.Tensor:
    return features @ params["logits"]


def _policy_fn(policy: Policy, obs_dim: int, n_actions: int) -> _PolicyFn:
    """Adapter for a ``GumbelPolicy`` (all its parameters) or a (obs_dim, n_actions) logits table.

    Raises:
        ValueError: a table of the wrong shape, or a policy whose observation / action sizes do not fit.
        TypeError: anything else.
    """
    if isinstance(policy, GumbelPolicy):
        if policy.obs_dim != obs_dim or policy.n_actions != n_actions:
            raise ValueError(
                f"policy maps {policy.obs_dim} features to {policy.n_actions} actions; "
                f"the environment needs {obs_dim} -> {n_actions}"
            )
        params = {name: p.detach().to(torch.float64, copy=True) for name, p in policy.named_parameters()}
        return _PolicyFn(params, lambda p, x: functional_call(policy, p, (x,)), "network")
    if isinstance(policy, torch.Tensor):
        if tuple(policy.shape) != (obs_dim, n_actions) or not policy.is_floating_point():
            raise ValueError(
                f"a tabular policy must be a floating tensor of logits of shape (n_states, n_actions) = "
                f"({obs_dim}, {n_actions}); got {policy.dtype} of shape {tuple(policy.shape)}"
            )
        if not torch.isfinite(policy).all():
            raise ValueError("a tabular policy must hold finite logits")
        return _PolicyFn({"logits": policy.detach().to(torch.float64, copy=True)}, _table_logits, "tabular")
    raise TypeError(
        f"policy must be a GumbelPolicy or a (n_states, n_actions) logits tensor; got {type(policy).__name__}"
    )


def _check_estimator(estimator: str) -> str:
    if estimator not in STUDY_ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; valid estimators: {', '.join(STUDY_ESTIMATORS)}")
    return estimator


def _check_counts(n_episodes: int, repetitions: int) -> None:
    for name, value, low in (("n_episodes", n_episodes, 1), ("repetitions", repetitions, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")


def _check_tau(tau: float) -> float:
    if not (isinstance(tau, int | float) and math.isfinite(tau) and tau > 0):
        raise ValueError(f"tau must be a finite number > 0; got {tau!r}")
    return float(tau)


def _cell_seed(seed: int, *parts: Any) -> int:
    """A stable seed per cell (Python's ``hash`` of strings changes between runs; crc32 does not)."""
    return (int(seed) * 1_000_003 + zlib.crc32("|".join(map(str, parts)).encode())) % (2**63)


# ---------------------------------------------------------------------------------------------- gridworld
def tabular_model(env_id: str) -> TabularModel:
    """The exact model of a gridworld id (``TabularModel.from_env(gym.make(env_id))``, time limit included).

    Raises:
        ValueError: ``env_id`` is not a gridworld suite id (the message lists them).
    """
    if env_id not in envs.GRIDWORLD_IDS:
        raise ValueError(f"{env_id!r} is not a gridworld id; ids: {', '.join(envs.GRIDWORLD_IDS)}")
    return TabularModel.from_env(gym.make(env_id))


def _horizon(model: TabularModel, horizon: int | None) -> int:
    horizon = model.max_episode_steps if horizon is None else horizon
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise ValueError(f"horizon must be a positive integer (default: the env's max_episode_steps); got {horizon!r}")
    return horizon


def exact_gradient(
    policy: Policy, env_id: str, horizon: int | None = None, model: TabularModel | None = None
) -> tuple[torch.Tensor, float]:
    """Exact gradient of the expected undiscounted ``horizon``-step return from the start distribution.

    ``J = policy_return(model, softmax(logits of every cell), horizon=H)``, differentiated by autograd w.r.t. the
    policy parameters (all parameters of a ``GumbelPolicy`` in ``named_parameters`` order, or the logits table),
    in float64.

    Args:
        policy: a ``GumbelPolicy`` over the one-hot cell observation with 4 actions, or a (n_cells, 4) logits table.
        env_id: a gridworld id (``envs.GRIDWORLD_IDS``).
        horizon: steps per episode; default the env's ``max_episode_steps``.
        model: the env's ``TabularModel`` if already built (saves rebuilding it).
    Returns:
        ``(gradient (D,) float64, J)`` with ``J`` in reward units.
    Raises:
        ValueError: unknown env id, a policy that does not fit the env, a bad horizon.
    """
    model = tabular_model(env_id) if model is None else model
    pf = _policy_fn(policy, model.n_states, model.n_actions)
    params = {k: v.clone().requires_grad_() for k, v in pf.params.items()}
    J = _exact_return(pf, params, model, horizon)
    grads = torch.autograd.grad(J, list(params.values()))
    return pf.flat(grads), float(J.detach())


def expected_return(
    policy: Policy, env_id: str, horizon: int | None = None, model: TabularModel | None = None
) -> float:
    """The exact ``J`` of :func:`exact_gradient` alone (float64, no gradient), in reward units."""
    model = tabular_model(env_id) if model is None else model
    pf = _policy_fn(policy, model.n_states, model.n_actions)
    with torch.no_grad():
        return float(_exact_return(pf, pf.params, model, horizon))


def _exact_return(
    pf: _PolicyFn, params: dict[str, torch.Tensor], model: TabularModel, horizon: int | None
) -> torch.Tensor:
    probs = torch.softmax(pf.fn(params, torch.eye(model.n_states, dtype=torch.float64)), dim=-1)
    return policy_return(model, probs, horizon=_horizon(model, horizon))


def exact_ascent(
    policy: Policy, env_id: str, target: float, lr: float = 0.02, max_steps: int = 500
) -> tuple[Policy, float, int]:
    """Partially train a policy by Adam ascent on the exact return until ``J >= target`` (a fixed, seedless path).

    A ``GumbelPolicy`` is updated in place; a logits table is copied. Used to put the study's policies somewhere
    between random and optimal, where every estimator has something to find.

    Returns:
        ``(policy, J, steps taken)``.
    Raises:
        ValueError: as :func:`exact_gradient`; lr <= 0 or max_steps < 0.
    """
    if not lr > 0 or max_steps < 0:
        raise ValueError(f"lr must be > 0 and max_steps >= 0; got lr={lr!r}, max_steps={max_steps!r}")
    model = tabular_model(env_id)
    H = _horizon(model, None)
    _policy_fn(policy, model.n_states, model.n_actions)  # type and shape check
    if isinstance(policy, GumbelPolicy):
        params = list(policy.parameters())
    else:
        policy = policy.detach().clone().requires_grad_()
        params = [policy]
    eye = torch.eye(model.n_states)
    opt = torch.optim.Adam(params, lr=lr)
    steps = 0
    while True:
        logits = policy(eye) if isinstance(policy, GumbelPolicy) else policy
        J = policy_return(model, torch.softmax(logits.double(), dim=-1), horizon=H)
        if float(J.detach()) >= target or steps >= max_steps:
            break
        opt.zero_grad()
        (-J).backward()
        opt.step()
        steps += 1
    if isinstance(policy, torch.Tensor):
        policy = policy.detach()
    return policy, float(J.detach()), steps


def _time_values(model: TabularModel, probs: torch.Tensor, horizon: int) -> torch.Tensor:
    """``V[k, s]``: expected return of ``probs`` from ``s`` with ``k`` steps left, k = 0..horizon. (H+1, S)."""
    S, A = model.n_states, model.n_actions
    P2 = model.P.reshape(S * A, S)
    values = [torch.zeros(S, dtype=torch.float64)]
    for _ in range(horizon):
        q = model.R + (P2 @ values[-1]).reshape(S, A)
        values.append((probs * q).sum(dim=1))
    return torch.stack(values)


def _stacked(params: dict[str, torch.Tensor], copies: int) -> dict[str, torch.Tensor]:
    """``copies`` independent leaf copies of every parameter, stacked on a new first dim (one per repetition)."""
    return {k: v.expand(copies, *v.shape).clone().requires_grad_() for k, v in params.items()}


def _chunks(repetitions: int, n_episodes: int, max_batch: int) -> Iterable[int]:
    per_chunk = max(1, max_batch // n_episodes)
    done = 0
    while done < repetitions:
        c = min(per_chunk, repetitions - done)
        yield c
        done += c


def _score_surrogate(log_probs: torch.Tensor, rewards: torch.Tensor, baselines: torch.Tensor | None) -> torch.Tensor:
    """Per-episode REINFORCE surrogate ``sum_t log pi_t * (G_t - b_t)``; inputs (T, batch), returns (batch,).

    Steps after an episode's end need no mask: their rewards, returns-to-go and values are all zero.
    """
    returns_to_go = rewards.flip(0).cumsum(0).flip(0)
    advantages = returns_to_go if baselines is None else returns_to_go - baselines
    return (log_probs * advantages.detach()).sum(0)


def estimator_gradients(
    policy: Policy,
    env_id: str,
    estimator: str,
    n_episodes: int,
    repetitions: int,
    tau: float = 1.0,
    seed: int = 0,
    *,
    k: int = 10,
    horizon: int | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    model: TabularModel | None = None,
) -> torch.Tensor:
    """``repetitions`` independent gradient estimates of ``J`` (see :func:`exact_gradient`), each from ``n_episodes``.

    All repetitions of a chunk roll in one twin batch of ``chunk * n_episodes`` episodes with one copy of the
    parameters per repetition, and one backward gives every repetition's gradient (of the mean return of its own
    episodes, or of the mean REINFORCE surrogate).

    Args:
        policy, env_id, horizon, model: as for :func:`exact_gradient`.
        estimator: one of :data:`STUDY_ESTIMATORS` (see the module docstring).
        n_episodes: episodes per estimate (>= 1). repetitions: independent estimates (>= 2).
        tau: temperature > 0 (ignored by the score-function estimators).
        seed: seeds the twin's starts, slips and the action noise.
        k: conditional Gumbel draws of ``gumbel-rao``.
        max_batch: most episodes per rollout batch (memory: about 0.5 kB per episode and step for a small MLP).
    Returns:
        (repetitions, D) float64 tensor of estimates, D as in :func:`exact_gradient`.
    Raises:
        ValueError: unknown estimator or env id, n_episodes < 1, repetitions < 2, tau <= 0, a policy that does not
            fit the env.
    """
    _check_estimator(estimator)
    _check_counts(n_episodes, repetitions)
    tau = _check_tau(tau)
    model = tabular_model(env_id) if model is None else model
    H = _horizon(model, horizon)
    pf = _policy_fn(policy, model.n_states, model.n_actions)
    twin = envs.make_differentiable(env_id, dtype=torch.float64)
    gen = torch.Generator().manual_seed(int(seed))
    batched_fn = vmap(pf.fn)
    values = None
    if estimator == "reinforce-baseline":
        with torch.no_grad():
            probs = torch.softmax(pf.fn(pf.params, torch.eye(model.n_states, dtype=torch.float64)), dim=-1)
            values = _time_values(model, probs, H)
    out = []
    for c in _chunks(repetitions, n_episodes, max_batch):
        params = _stacked(pf.params, c)
        state = twin.reset(c * n_episodes, generator=gen)
        if estimator in SCORE_ESTIMATORS:
            log_probs, rewards, baselines = [], [], []
            for t in range(H):
                obs = twin.observe(state)
                logits = batched_fn(params, obs.view(c, n_episodes, -1)).reshape(c * n_episodes, -1)
                action = sample_action(logits.detach(), "reinforce", generator=gen)
                log_probs.append((torch.log_softmax(logits, dim=-1) * action).sum(-1))
                if values is not None:
                    baselines.append(obs @ values[H - t])
                state, reward, _, _ = twin.step(state, action, generator=gen)
                rewards.append(reward)
            surrogate = _score_surrogate(
                torch.stack(log_probs), torch.stack(rewards), torch.stack(baselines) if baselines else None
            )
        else:
            surrogate = torch.zeros(c * n_episodes, dtype=torch.float64)
            for _ in range(H):
                logits = batched_fn(params, twin.observe(state).view(c, n_episodes, -1))
                action = sample_action(logits, estimator, tau, k=k, generator=gen)
                state, reward, _, _ = twin.step(state, action.reshape(c * n_episodes, -1), generator=gen)
                surrogate = surrogate + reward
        objective = surrogate.view(c, n_episodes).mean(1).sum()  # sum over repetitions of each one's mean
        grads = torch.autograd.grad(objective, list(params.values()))
        out.append(pf.flat(grads, batch=c))
    return torch.cat(out)


# ---------------------------------------------------------------------------------------------- CartPole
def cartpole_policy(seed: int = 0, net_arch: Sequence[int] = (64, 64)) -> GumbelPolicy:
    """A randomly initialised ``GumbelPolicy`` for CartPole-v1 (``torch.manual_seed(seed)`` before building)."""
    env = gym.make("CartPole-v1")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return GumbelPolicy(env.observation_space, env.action_space, net_arch=net_arch)


def _cartpole_rollout(
    twin: Any, pf: _PolicyFn, episodes: int, horizon: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Episodes with exact sampled actions, no gradient: the states acted in (H, episodes, 4) and the shaped rewards
    (H, episodes) of the states reached."""
    states, rewards = [], []
    with torch.no_grad():
        state = twin.reset(episodes, generator=gen)
        for _ in range(horizon):
            states.append(twin.observe(state))
            action = sample_action(pf.fn(pf.params, states[-1]), "reinforce", generator=gen)
            state, _, _, _ = twin.step(state, action)
            rewards.append(twin.shaped_reward(state))
    return torch.stack(states), torch.stack(rewards)


def _quadratic_features(x: torch.Tensor) -> torch.Tensor:
    """``[1, x, x_i x_j (i <= j)]``: (..., 4) -> (..., 15)."""
    i, j = torch.triu_indices(x.shape[-1], x.shape[-1])
    return torch.cat([torch.ones_like(x[..., :1]), x, x[..., i] * x[..., j]], dim=-1)


def _fit_state_baseline(twin: Any, pf: _PolicyFn, horizon: int, episodes: int, gen: torch.Generator) -> torch.Tensor:
    """Per-step ridge regression of the return-to-go on quadratic state features, fitted on ``episodes`` pilot
    episodes of their own: weights (H, 15). Independent of the episodes it is later used on, so unbiased."""
    states, rewards = _cartpole_rollout(twin, pf, episodes, horizon, gen)
    X = _quadratic_features(states)  # (H, M, F)
    y = rewards.flip(0).cumsum(0).flip(0)  # returns-to-go (H, M)
    gram = X.transpose(1, 2) @ X
    ridge = 1e-8 * gram.diagonal(dim1=1, dim2=2).mean(1)[:, None, None] * torch.eye(X.shape[-1], dtype=X.dtype)
    return torch.linalg.solve(gram + ridge, (X.transpose(1, 2) @ y[..., None]))[..., 0]


def cartpole_gradients(
    policy: GumbelPolicy,
    estimator: str,
    n_episodes: int,
    repetitions: int,
    tau: float = 1.0,
    seed: int = 0,
    *,
    k: int = 10,
    horizon: int = CARTPOLE_HORIZON,
    max_batch: int = DEFAULT_MAX_BATCH,
    baseline_episodes: int = 2000,
) -> torch.Tensor:
    """Estimates of the gradient of ``E[sum_{t=1..H} shaped_reward(s_t)]`` on the CartPole twin (float64).

    ``H`` steps from ``twin.reset``, no termination and no reset (the physics run on past the thresholds);
    ``s_t`` is the state after the t-th action. ``reinforce-baseline``'s baseline ``b_t(s)`` is a per-step ridge
    regression of the return-to-go on quadratic features of the state, fitted on ``baseline_episodes`` pilot episodes
    of its own (drawn first from ``seed``, never reused), so it is unbiased for every ``n_episodes``.

    Returns:
        (repetitions, D) float64, D the policy's parameter count.
    Raises:
        ValueError: unknown estimator, bad counts, tau <= 0, horizon < 1, or a policy that is not for CartPole.
    """
    _check_estimator(estimator)
    _check_counts(n_episodes, repetitions)
    tau = _check_tau(tau)
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise ValueError(f"horizon must be a positive integer; got {horizon!r}")
    twin = envs.make_differentiable("CartPole-v1", dtype=torch.float64)
    if not isinstance(policy, GumbelPolicy):
        raise TypeError(f"policy must be a GumbelPolicy for CartPole-v1; got {type(policy).__name__}")
    pf = _policy_fn(policy, twin.obs_dim, twin.n_actions)
    gen = torch.Generator().manual_seed(int(seed))
    batched_fn = vmap(pf.fn)
    score = estimator in SCORE_ESTIMATORS
    weights = None
    if estimator == "reinforce-baseline":
        weights = _fit_state_baseline(twin, pf, horizon, baseline_episodes, gen)
    out = []
    for c in _chunks(repetitions, n_episodes, max_batch):
        params = _stacked(pf.params, c)
        state = twin.reset(c * n_episodes, generator=gen)
        log_probs, rewards, baselines = [], [], []
        for t in range(horizon):
            obs = twin.observe(state)
            if score:
                obs = obs.detach()
            logits = batched_fn(params, obs.view(c, n_episodes, -1)).reshape(c * n_episodes, -1)
            if score:
                action = sample_action(logits.detach(), "reinforce", generator=gen)
                log_probs.append((torch.log_softmax(logits, dim=-1) * action).sum(-1))
                if weights is not None:
                    baselines.append(_quadratic_features(obs) @ weights[t])
            else:
                action = sample_action(logits, estimator, tau, k=k, generator=gen)
            state, _, _, _ = twin.step(state, action)
            rewards.append(twin.shaped_reward(state))
        rewards_t = torch.stack(rewards)
        if score:
            surrogate = _score_surrogate(
                torch.stack(log_probs), rewards_t.detach(), torch.stack(baselines) if baselines else None
            )
        else:
            surrogate = rewards_t.sum(0)
        objective = surrogate.view(c, n_episodes).mean(1).sum()
        grads = torch.autograd.grad(objective, list(params.values()))
        out.append(pf.flat(grads, batch=c))
    return torch.cat(out)


def cartpole_objective(
    policy: GumbelPolicy, episodes: int = 10_000, seed: int = 0, horizon: int = CARTPOLE_HORIZON
) -> tuple[float, float]:
    """Monte Carlo value of the CartPole objective ``E[sum_{t=1..H} shaped_reward(s_t)]`` (exact sampled actions, no
    termination): ``(mean, standard error)`` over ``episodes`` episodes, in shaped-reward units."""
    twin = envs.make_differentiable("CartPole-v1", dtype=torch.float64)
    pf = _policy_fn(policy, twin.obs_dim, twin.n_actions)
    total = _cartpole_rollout(twin, pf, episodes, horizon, torch.Generator().manual_seed(int(seed)))[1].sum(0)
    return float(total.mean()), float(total.std()) / math.sqrt(episodes)


def cartpole_ascent(
    policy: GumbelPolicy,
    target: float,
    lr: float = 3e-3,
    max_steps: int = 60,
    episodes: int = 2000,
    seed: int = 0,
    horizon: int = CARTPOLE_HORIZON,
) -> tuple[float, int]:
    """Partially train ``policy`` in place on the CartPole objective: Adam steps along ``reinforce-baseline``
    estimates from ``episodes`` episodes (unbiased), until the Monte Carlo value (``episodes`` fresh episodes) reaches
    ``target`` or ``max_steps`` steps are done. Fixed seeds: the same call gives the same policy.

    Returns:
        ``(objective value reached, steps taken)``.
    """
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    params = list(policy.parameters())
    steps = 0
    while True:
        value, _ = cartpole_objective(policy, episodes, seed=_cell_seed(seed, "value", steps), horizon=horizon)
        if value >= target or steps >= max_steps:
            return value, steps
        g = cartpole_gradients(
            policy, "reinforce-baseline", episodes // 2, 2, seed=_cell_seed(seed, "step", steps), horizon=horizon
        ).mean(0)
        opt.zero_grad()
        for p, flat in zip(params, torch.split(g, [p.numel() for p in params]), strict=True):
            p.grad = -flat.view_as(p).to(p.dtype)  # ascent
        opt.step()
        steps += 1


@dataclass
class Reference:
    """A Monte Carlo reference gradient: the mean of ``batches`` independent large estimates.

    Attributes:
        gradient: (D,) float64 mean.
        se_norm: ``sqrt(sum_j SE_j^2)``, the expected norm of ``gradient - true gradient`` (SE_j from the spread of
            the batch estimates), same units as the gradient.
        episodes: episodes used in all.
        seconds: wall time.
    """

    gradient: torch.Tensor
    se_norm: float
    episodes: int
    seconds: float


def cartpole_reference(
    policy: GumbelPolicy, episodes_per_batch: int = 4000, batches: int = 25, seed: int = 12345, **kwargs: Any
) -> Reference:
    """Reference gradient for :func:`cartpole_gradients`: ``batches`` ``reinforce-baseline`` estimates of
    ``episodes_per_batch`` episodes each, averaged; ``kwargs`` go to :func:`cartpole_gradients`."""
    start = time.perf_counter()
    g = cartpole_gradients(policy, "reinforce-baseline", episodes_per_batch, batches, seed=seed, **kwargs)
    se_norm = math.sqrt(float(g.var(0).sum()) / batches)
    return Reference(g.mean(0), se_norm, episodes_per_batch * batches, time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------- toy
def toy_exact_gradient(theta: torch.Tensor, target: float = TOY_TARGET) -> torch.Tensor:
    """``d/dtheta E_{b ~ Bernoulli(sigmoid(theta))}[(b - t)^2] = sigmoid'(theta) * ((1 - t)^2 - t^2)``, shaped like
    ``theta``."""
    s = torch.sigmoid(theta)
    return s * (1 - s) * ((1 - target) ** 2 - target**2)


def toy_gradients(
    estimator: str,
    theta: torch.Tensor,
    n_samples: int,
    tau: float = 1.0,
    target: float = TOY_TARGET,
    seed: int = 0,
    *,
    k: int = 10,
    payoff: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Single-sample gradient estimates of ``E[f(b)]`` w.r.t. each ``theta``, ``f(b) = (b - target)^2``.

    ``b`` is a 2-class categorical with logits ``(0, theta)`` (so ``P(b = 1) = sigmoid(theta)``); every estimator
    feeds ``b = action[..., 1]`` (the soft ``y[1]`` for ``relaxed``). ``reinforce`` is ``f(b) * d log p(b) /
    dtheta``; ``reinforce-baseline`` subtracts the leave-one-out mean payoff of the other samples at the same theta.

    Args:
        theta: (T,) logits. n_samples: estimates per theta (>= 2). payoff: replaces ``f`` (maps b to a payoff,
            elementwise).
    Returns:
        (T, n_samples) float64 estimates.
    Raises:
        ValueError: unknown estimator, n_samples < 2, tau <= 0.
    """
    _check_estimator(estimator)
    _check_counts(1, n_samples)
    tau = _check_tau(tau)
    f = payoff if payoff is not None else (lambda b: (b - target) ** 2)
    gen = torch.Generator().manual_seed(int(seed))
    theta = torch.as_tensor(theta, dtype=torch.float64).reshape(-1)
    th = theta[:, None].expand(-1, n_samples).clone().requires_grad_()
    logits = torch.stack([torch.zeros_like(th), th], dim=-1)
    if estimator in SCORE_ESTIMATORS:
        action = sample_action(logits.detach(), "reinforce", generator=gen)
        fb = f(action[..., 1])
        if estimator == "reinforce-baseline":
            fb = fb - (fb.sum(1, keepdim=True) - fb) / (n_samples - 1)
        surrogate = (fb.detach() * (torch.log_softmax(logits, -1) * action).sum(-1)).sum()
    else:
        surrogate = f(sample_action(logits, estimator, tau, k=k, generator=gen)[..., 1]).sum()
    (grad,) = torch.autograd.grad(surrogate, th)
    return grad


# ---------------------------------------------------------------------------------------------- statistics
@dataclass
class StudyRow:
    """Statistics of one (setting, policy, estimator, tau, N) cell; ``*_ci`` are 95% bootstrap intervals.

    Attributes:
        setting: env id (or a name). policy: ``network`` / ``tabular``. estimator, tau (None: no temperature),
        n_episodes: episodes per estimate N. repetitions: independent estimates R.
        reference_norm: ``||e||``. reference_se: ``sqrt(sum_j SE_j^2)`` of the reference (0 when exact).
        bias: debiased bias norm ``sqrt(max(0, ||mean - e||^2 - tr(Cov)/R - reference_se^2))``.
        bias_raw: ``||mean - e||``. noise_floor: ``sqrt(tr(Cov)/R + reference_se^2)``, what ``bias_raw`` is on
            average for an unbiased estimator.
        variance: ``tr(Cov)`` of one N-episode estimate. mse: ``mean ||g - e||^2 - reference_se^2``.
        cos_mean: ``cos(mean, e)``. mean_cos: mean over estimates of ``cos(g, e)``. ascent: fraction of estimates
            with ``<g, e> > 0``. seconds: wall time of the estimates.
    """

    setting: str
    policy: str
    estimator: str
    tau: float | None
    n_episodes: int
    repetitions: int
    reference_norm: float
    reference_se: float
    bias: float
    bias_ci: tuple[float, float]
    bias_raw: float
    noise_floor: float
    variance: float
    variance_ci: tuple[float, float]
    mse: float
    mse_ci: tuple[float, float]
    cos_mean: float
    cos_mean_ci: tuple[float, float]
    mean_cos: float
    mean_cos_ci: tuple[float, float]
    ascent: float
    ascent_ci: tuple[float, float]
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine of (..., D) against (D,); 0 where a row is zero."""
    denom = a.norm(dim=-1) * b.norm()
    return torch.where(denom > 0, (a @ b) / denom.clamp_min(1e-300), torch.zeros_like(denom))


def _stats(d: torch.Tensor, tr: torch.Tensor, reference: torch.Tensor, R: int, ref_var: float) -> dict[str, Any]:
    """Mean-based statistics from ``d = mean - e`` (..., D) and ``tr = tr(Cov)`` (...): the debiased squared bias
    norm and the cosine of the mean with the reference."""
    return {"bias_sq": (d * d).sum(-1) - tr / R - ref_var, "cos_mean": _cosine(d + reference, reference)}


def summarize(
    grads: torch.Tensor,
    reference: torch.Tensor,
    reference_se: float = 0.0,
    n_boot: int = 1000,
    seed: int = 0,
    **labels: Any,
) -> StudyRow:
    """Bias, variance, MSE and cosines of estimates ``grads`` (R, D) against ``reference`` (D,), with 95% CIs.

    CIs: percentile bootstrap over the R repetitions (``n_boot`` resamples), re-centred on the point estimate. The
    bootstrap resamples the estimates and recomputes every statistic, mean and covariance included (one
    (n_boot, R) @ (R, D) product). The bias interval is that of the debiased squared norm, square-rooted (its lower
    end is 0 when no bias is resolved). With a noisy
    reference (``reference_se > 0``, see :class:`Reference`) its expected squared error is subtracted from the
    squared bias and the MSE; the CIs do not include the reference's own uncertainty.

    Args:
        labels: the :class:`StudyRow` fields ``setting, policy, estimator, tau, n_episodes, seconds``.
    Raises:
        ValueError: fewer than 2 estimates, shape mismatch, or non-finite estimates.
    """
    g = torch.as_tensor(grads, dtype=torch.float64)
    e = torch.as_tensor(reference, dtype=torch.float64).reshape(-1)
    if g.dim() != 2 or g.shape[0] < 2 or g.shape[1] != e.numel():
        raise ValueError(f"grads must have shape (R >= 2, D = {e.numel()}); got {tuple(g.shape)}")
    if not torch.isfinite(g).all():
        raise ValueError("grads hold non-finite values (an estimator diverged); cannot summarise")
    R = g.shape[0]
    ref_var = float(reference_se) ** 2
    mean = g.mean(0)
    gc = g - mean
    sq = (gc * gc).sum(1)  # ||g_r - mean||^2
    tr = sq.sum() / (R - 1)
    per_est = {
        "mse": ((g - e) ** 2).sum(1) - ref_var,
        "mean_cos": _cosine(g, e),
        "ascent": ((g @ e) > 0).to(torch.float64),
    }
    point = _stats(mean - e, tr, e, R, ref_var)

    rng = np.random.default_rng(seed)
    boot: dict[str, list[torch.Tensor]] = {name: [] for name in ("bias_sq", "cos_mean", "variance", *per_est)}
    chunk = max(1, min(n_boot, 2**24 // max(1, g.shape[1])))
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        w = torch.from_numpy(rng.multinomial(R, np.full(R, 1.0 / R), size=b)).to(torch.float64) / R  # (b, R)
        delta = w @ gc  # resampled mean minus the sample mean
        tr_b = (w @ sq - (delta * delta).sum(1)) * R / (R - 1)
        for name, v in _stats(mean - e + delta, tr_b, e, R, ref_var).items():
            boot[name].append(v)
        boot["variance"].append(tr_b)
        for name, v in per_est.items():
            boot[name].append(w @ v)

    # Percentile intervals re-centred on the point estimates: the resamples scatter around the plug-in values of
    # the resampled data, which are biased for some statistics (||mean - e||^2 carries an extra tr(Cov)/R, the
    # variance of a resample is (1 - 1/R) tr(Cov) on average, the cosine of a noisier mean is smaller); shifting the
    # percentiles by (point - mean of the resamples) removes that first-order bias.
    points = {"bias_sq": float(point["bias_sq"]), "cos_mean": float(point["cos_mean"]), "variance": float(tr)}
    points.update({name: float(v.mean()) for name, v in per_est.items()})
    bounds = {"cos_mean": (-1.0, 1.0), "mean_cos": (-1.0, 1.0), "ascent": (0.0, 1.0), "variance": (0.0, math.inf)}
    quantiles = torch.tensor([0.025, 0.975], dtype=torch.float64)

    def ci(name: str) -> tuple[float, float]:
        samples = torch.cat(boot[name])
        lo, hi = (torch.quantile(samples, quantiles) + points[name] - samples.mean()).tolist()
        low, high = bounds.get(name, (-math.inf, math.inf))
        return min(max(lo, low), high), min(max(hi, low), high)

    bias_sq = points["bias_sq"]
    lo_sq, hi_sq = ci("bias_sq")

    return StudyRow(
        setting=str(labels.get("setting", "")),
        policy=str(labels.get("policy", "")),
        estimator=str(labels.get("estimator", "")),
        tau=labels.get("tau"),
        n_episodes=int(labels.get("n_episodes", 1)),
        repetitions=R,
        reference_norm=float(e.norm()),
        reference_se=float(reference_se),
        bias=math.sqrt(max(0.0, bias_sq)),
        bias_ci=(math.sqrt(max(0.0, lo_sq)), math.sqrt(max(0.0, hi_sq))),
        bias_raw=float((mean - e).norm()),
        noise_floor=math.sqrt(float(tr) / R + ref_var),
        variance=float(tr),
        variance_ci=ci("variance"),
        mse=float(per_est["mse"].mean()),
        mse_ci=ci("mse"),
        cos_mean=float(point["cos_mean"]),
        cos_mean_ci=ci("cos_mean"),
        mean_cos=float(per_est["mean_cos"].mean()),
        mean_cos_ci=ci("mean_cos"),
        ascent=float(per_est["ascent"].mean()),
        ascent_ci=ci("ascent"),
        seconds=float(labels.get("seconds", 0.0)),
    )


# ---------------------------------------------------------------------------------------------- drivers
Repetitions = int | Mapping[int, int] | Callable[[int], int]


def _repetitions_for(repetitions: Repetitions, n: int) -> int:
    if callable(repetitions):
        return int(repetitions(n))
    if isinstance(repetitions, Mapping):
        if n not in repetitions:
            raise ValueError(f"repetitions has no entry for n_episodes={n}; it covers {sorted(repetitions)}")
        return int(repetitions[n])
    return int(repetitions)


def default_repetitions(n: int, budget: int = 20_000, low: int = 30, high: int = 1000) -> int:
    """``budget / n`` repetitions, clipped to [low, high]: 1000, 1000, 200, 30 for N = 1, 10, 100, 1000."""
    return int(min(high, max(low, budget // n)))


def _cells(
    estimators: Sequence[str], n_episodes: Sequence[int], taus: Sequence[float]
) -> list[tuple[str, float | None, int]]:
    cells = []
    for est in estimators:
        _check_estimator(est)
        for tau in (None,) if est in SCORE_ESTIMATORS else taus:
            for n in n_episodes:
                cells.append((est, tau, int(n)))
    return cells


def _measure(
    estimate: Callable[[str, int, int, float, int], torch.Tensor],
    reference: torch.Tensor,
    reference_se: float,
    setting: str,
    kind: str,
    estimators: Sequence[str],
    n_episodes: Sequence[int],
    repetitions: Repetitions,
    taus: Sequence[float],
    seed: int,
    n_boot: int,
    progress: Callable[[StudyRow], None] | None,
) -> list[StudyRow]:
    """One :class:`StudyRow` per (estimator, tau, N) cell: ``estimate(estimator, N, R, tau, cell seed)`` summarised
    against ``reference``."""
    for tau in taus:
        _check_tau(tau)
    rows = []
    for est, tau, n in _cells(estimators, n_episodes, taus):
        start = time.perf_counter()
        g = estimate(
            est,
            n,
            _repetitions_for(repetitions, n),
            1.0 if tau is None else tau,
            _cell_seed(seed, setting, est, tau, n),
        )
        row = summarize(
            g,
            reference,
            reference_se,
            n_boot=n_boot,
            seed=_cell_seed(seed, "boot", est, tau, n),
            setting=setting,
            policy=kind,
            estimator=est,
            tau=tau,
            n_episodes=n,
            seconds=time.perf_counter() - start,
        )
        rows.append(row)
        if progress is not None:
            progress(row)
    return rows


def measure_estimators(
    policy: Policy,
    env_id: str,
    estimators: Sequence[str] = STUDY_ESTIMATORS,
    n_episodes: Sequence[int] = DEFAULT_N_EPISODES,
    repetitions: Repetitions = default_repetitions,
    taus: Sequence[float] = (1.0,),
    seed: int = 0,
    *,
    n_boot: int = 1000,
    k: int = 10,
    max_batch: int = DEFAULT_MAX_BATCH,
    progress: Callable[[StudyRow], None] | None = None,
) -> list[StudyRow]:
    """Every estimator's bias, variance, MSE and cosines against the exact gradient on a gridworld.

    For each estimator, temperature (pathwise estimators only) and N in ``n_episodes``: ``R`` estimates from
    :func:`estimator_gradients` (``R`` from ``repetitions``: an int, a dict N -> R, or a function of N) summarised
    by :func:`summarize` against :func:`exact_gradient`. Seeds are derived from ``seed`` and the cell, so a cell's
    numbers do not depend on which other cells are run.

    Args:
        policy: a ``GumbelPolicy`` (one-hot cell observations, 4 actions) or a (n_cells, 4) logits table.
        env_id: a gridworld id. progress: called with each row as it is done.
    Returns:
        One :class:`StudyRow` per cell (``policy`` field ``network`` or ``tabular``).
    Raises:
        ValueError: unknown estimator or env id, bad counts or temperatures, a policy that does not fit.
    """
    model = tabular_model(env_id)
    exact, _ = exact_gradient(policy, env_id, model=model)

    def estimate(est: str, n: int, R: int, tau: float, cell_seed: int) -> torch.Tensor:
        return estimator_gradients(policy, env_id, est, n, R, tau, cell_seed, k=k, max_batch=max_batch, model=model)

    kind = "network" if isinstance(policy, GumbelPolicy) else "tabular"
    return _measure(
        estimate, exact, 0.0, env_id, kind, estimators, n_episodes, repetitions, taus, seed, n_boot, progress
    )


def measure_cartpole(
    policy: GumbelPolicy,
    reference: Reference,
    estimators: Sequence[str] = STUDY_ESTIMATORS,
    n_episodes: Sequence[int] = DEFAULT_N_EPISODES,
    repetitions: Repetitions = default_repetitions,
    taus: Sequence[float] = (1.0,),
    seed: int = 0,
    *,
    n_boot: int = 1000,
    k: int = 10,
    horizon: int = CARTPOLE_HORIZON,
    max_batch: int = DEFAULT_MAX_BATCH,
    progress: Callable[[StudyRow], None] | None = None,
) -> list[StudyRow]:
    """As :func:`measure_estimators`, on the CartPole shaped-reward objective against a :class:`Reference`."""

    def estimate(est: str, n: int, R: int, tau: float, cell_seed: int) -> torch.Tensor:
        return cartpole_gradients(policy, est, n, R, tau, cell_seed, k=k, horizon=horizon, max_batch=max_batch)

    return _measure(
        estimate,
        reference.gradient,
        reference.se_norm,
        "CartPole-v1",
        "network",
        estimators,
        n_episodes,
        repetitions,
        taus,
        seed,
        n_boot,
        progress,
    )
