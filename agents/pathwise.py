"""Pathwise policy gradients through a differentiable twin of the environment (SHAC-style short-horizon rollouts).

One agent, :class:`PathwiseAgent`, registered under each pathwise estimator of ``gumbel_rl.estimators``
(``relaxed``, ``st-gumbel``, ``argmax``, ``reinmax``, ``gumbel-rao``): the method name is the Gumbel gradient
estimator the policy acts with, and nothing else differs.

The algorithm (Xu et al. 2022, "Accelerated Policy Learning with Parallel Differentiable Simulation" (SHAC);
Brax's APG), one iteration:

1. **Window** (:func:`shac_window`). ``n_envs`` twin environments advance ``H = horizon`` steps in one batch,
   ``a_t = policy.act(o_t, tau, estimator)``, ``s_{t+1} = twin.step(s_t, a_t)``. Soft (``relaxed``) actions go
   into the twin as they are; the other estimators feed one-hots that carry their gradient. The start state
   ``s_0`` is detached (truncated backprop: no gradient crosses a window boundary); the state itself carries over
   to the next window. Finished environments are re-drawn with ``twin.reset_done`` (fresh rows carry no gradient).
2. **Actor** (:func:`shac_actor_loss`). The window is cut into the actor's segments of ``k = actor_horizon``
   steps (0 means ``k = H``: one segment, SHAC; the last segment is shorter when ``k`` does not divide ``H``).
   Per environment the objective is the sum over segments ``[t0, t1)`` of their discounted training rewards,
   closed with the critic's value at the cut:

       J = sum_segments ( sum_{t0 <= t < t1} gamma^(t - t0) r_t  +  gamma^(t1 - t0) V(s_t1) )

   An episode that ends at step ``t`` inside a segment ends the segment there: a terminated episode adds nothing
   after ``r_t``, a truncated one adds ``gamma^(t + 1 - t0) V(final obs)`` (the observation before the reset),
   and a new segment starts at the fresh state with ``gamma^0``. At every cut the state is detached, so the
   actor's gradient spans at most ``k`` steps while the critic still learns from the whole window (``k = 1``:
   each action is credited with ``r + gamma V(s')`` through the twin; the gridworld default, where replaying
   later actions from another cell is the wrong counterfactual). The loss divides by ``H`` as SHAC does, so that
   its scale does not grow with the window, and subtracts an entropy bonus:

       L_actor = -mean_envs(J) / H  -  ent_coef * sum_t mean_envs(entropy(softmax(logits_t))) / H

   followed by gradient-norm clipping (``max_grad_norm``) and Adam. A learned model, which only predicts the
   probability ``c_t = twin.continuation(s_{t+1})`` that the episode still runs, gets every later term weighted
   by the product of those probabilities (Dreamer's continuation): ``gamma^k`` above is really
   ``prod_{j<k} gamma c_j``. Exact twins return ``c = 1`` and end episodes through ``terminated``.
3. **Critic** (:func:`critic_loss`). ``V`` (its own MLP and Adam) regresses the TD(lambda) targets ``G_t`` of
   ``agents.returns.lambda_returns`` computed from the window's detached rewards and values,
   ``L_V = mean_t (V(s_t) - G_t)^2``, ``critic_epochs`` passes of ``critic_minibatches`` minibatches.

The rewards maximised are ``twin.training_reward``, weighted by ``twin.continuation``: the twin's training objective
(``objective``; CartPole-v1: Gymnasium's reward of 1 per step times a straight-through survival probability, or a
hand-shaped reward; gridworlds: the env reward itself). The record still reports real returns: ``rollout/ep_rew_mean``
from the twin's env rewards, and the base class evaluates the greedy policy in the real Gymnasium environment. Each
iteration consumes ``n_envs * horizon`` env steps.

Exploration (``explore_bonus``, off by default; twins with cells to count, ``envs.differentiable.CountableEnv``):
each training reward gets a count bonus on the next cell, ``r~_t = r_t + beta u / sqrt(max(N(s_{t+1}), 1))``, with
``N`` the expected visits of each cell over all windows so far and ``u`` the RMS of the first window's training
rewards. The twin gives each state's distribution over its cells, ``twin.visit_distribution(s)`` (the gridworld
twins: the observation itself; MiniGrid: the agent's position times carrying the key), so the bonus is linear in it
(``p(s') . b``) and the pathwise gradient carries it to the actions like the reward itself; the critic learns the
bonus too. Measured on
``gumbel_rl/Maze-16x16-v0`` (the tuned Maze entry, eval every 512 steps, see ``docs/benchmarks.md``): with
``beta = 1`` st-gumbel solved the three seeds that never solved without it (0, 7, 9: at 46,848, 33,024 and
40,192 env steps; 10/10 seeds at a median 34,304 against 7/10 at 41,472 without it), and ``reinmax`` and
``gumbel-rao`` solve 2 of seeds 0-2 each with it. It does not rescue the two estimators that fail there (200k
steps, seeds 0-2): ``argmax`` 0/3 at ``beta`` 0, 1 and 10 -- its deterministic policy saturates (entropy 1e-7
by 80k steps), where no bonus gradient passes the softmax; ``relaxed`` 0/3 at 0 and 1, 1/3 at 10 -- its soft
actions keep the policy near uniform (entropy 1.37 of log 4 = 1.39) and the state a diffuse distribution. On
MiniGrid (cells: position times carrying the key) it does not clearly help st-gumbel within 40k steps (LavaGapS5
6/10 seeds at ``beta = 0.1`` against 5/10 without, DoorKey-5x5 0/3 either way; ``agents/hyperparams.py``).

Nothing here knows which twin it drives: any :class:`envs.DifferentiableEnv` (a learned model too) works.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn

import envs
from agents.base import Agent, Config, check_bool, check_choice, check_fraction, check_layers, check_positive
from agents.critic import count_bonus, reward_scale
from agents.episodes import EpisodeReturns
from agents.evaluation import make_env
from agents.registry import register_method
from agents.returns import lambda_returns
from envs import DifferentiableEnv
from envs.differentiable import CountableEnv
from gumbel_rl.estimators import PATHWISE_ESTIMATORS, Estimator
from gumbel_rl.policy import GumbelPolicy, mlp
from gumbel_rl.schedules import make_schedule

TRAINING_OBJECTIVES = ("env", "shaped")
"""Values of the ``objective`` hyperparameter (each twin that offers a choice accepts these)."""


@dataclass
class PathwiseConfig(Config):
    """Hyperparameters of the pathwise (twin) agents."""

    n_envs: int = 64
    """Twin environments simulated in parallel in one batch."""
    horizon: int = 32
    """Steps per window; one iteration consumes ``n_envs * horizon`` env steps and makes one actor update."""
    actor_horizon: int = 0
    """Truncated-backprop length of the actor's gradient: every ``actor_horizon`` steps (and at the window end) the
    running segments are closed with ``gamma^k V(s)`` and the state is detached. 0 means ``horizon`` (SHAC: one
    segment per window). 1 makes the gradient of each action ``r + gamma V(s')`` alone, the one-step lookahead
    through the twin."""
    objective: str | None = None
    """The twin's training objective, for twins that offer a choice (CartPole-v1's: ``"env"``, Gymnasium's return
    through a straight-through survival probability, or ``"shaped"``, a hand-designed reward; see
    ``envs/cartpole_twin.py``). None: the twin's own default; the other twins have one objective and refuse it."""
    gamma: float = 0.99
    """Discount factor in [0, 1)."""
    gae_lambda: float = 0.95
    """Lambda of the critic's TD(lambda) targets."""
    learning_rate: float = 2e-3
    """Adam learning rate of the policy."""
    critic_learning_rate: float = 2e-3
    """Adam learning rate of the critic."""
    lr_decay_steps: int = 0
    """0: constant learning rates; else both decay linearly to ``lr_final_fraction`` of their value over this many
    env steps (constant afterwards)."""
    lr_final_fraction: float = 0.0
    """Fraction of the learning rates left at the end of the linear decay."""
    max_grad_norm: float = 1.0
    """Clip the policy's gradient to this global L2 norm (the critic's too)."""
    tau: Any = 1.0
    """Gumbel-Softmax temperature as a function of env steps: a number, or a ``gumbel_rl.schedules`` spec such as
    ``{"kind": "linear", "tau0": 2.0, "tau_end": 0.5, "steps": 100000}``."""
    ent_coef: float = 0.0
    """Weight of the policy entropy bonus (mean entropy of softmax(logits) over the window's states)."""
    gumbel_k: int = 10
    """Conditional Gumbel draws of the ``gumbel-rao`` estimator (unused by the others)."""
    critic_arch: tuple[int, ...] = (64, 64)
    """Hidden layer sizes of the critic (``()``: a linear critic, i.e. a table of cell values on one-hot states)."""
    critic_epochs: int = 4
    """Passes over the window's states per critic update."""
    critic_minibatches: int = 4
    """Minibatches per critic pass."""
    randomize_start_t: bool = True
    """Start each twin environment at a random step counter in [0, max_episode_steps) so that time-limit
    truncations are not synchronised across environments (first episodes only)."""
    explore_bonus: float = 0.0
    """Weight ``beta`` of a count-based exploration bonus ``beta * u / sqrt(max(N(s'), 1))`` added to each training
    reward, ``N`` the visits of the next cell so far and ``u`` the RMS of the first window's training rewards (so
    that it means the same on any reward scale). Only for twins with cells to count (``envs.differentiable.
    CountableEnv``: the gridworld and MiniGrid twins), which give each state's distribution over cells: the bonus is
    then linear in it, ``p(s') . b``, and the pathwise gradient carries it to the actions. 0 (the default) turns it
    off."""

    def __post_init__(self) -> None:
        if isinstance(self.critic_arch, list):
            self.critic_arch = tuple(self.critic_arch)

    def validate(self) -> None:
        super().validate()
        for name in ("n_envs", "horizon", "gumbel_k", "critic_epochs", "critic_minibatches"):
            check_positive(name, getattr(self, name), integer=True)
        check_positive("actor_horizon", self.actor_horizon, integer=True, allow_zero=True)
        if self.actor_horizon > self.horizon:
            raise ValueError(
                f"hyperparameter actor_horizon must be between 0 (= horizon) and horizon ({self.horizon}), "
                f"got {self.actor_horizon}"
            )
        check_positive("lr_decay_steps", self.lr_decay_steps, integer=True, allow_zero=True)
        for name in ("learning_rate", "critic_learning_rate", "max_grad_norm"):
            check_positive(name, getattr(self, name))
        check_positive("ent_coef", self.ent_coef, allow_zero=True)
        check_fraction("gamma", self.gamma, closed_high=False)
        check_fraction("gae_lambda", self.gae_lambda)
        check_fraction("lr_final_fraction", self.lr_final_fraction)
        check_layers("critic_arch", self.critic_arch)
        check_bool("randomize_start_t", self.randomize_start_t)
        check_positive("explore_bonus", self.explore_bonus, allow_zero=True)
        if self.objective is not None:
            check_choice("objective", self.objective, TRAINING_OBJECTIVES)
        try:
            make_schedule(self.tau)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"hyperparameter tau: {exc}") from None


# ---- the losses ------------------------------------------------------------------------------------------------


class Window(NamedTuple):
    """One SHAC window of ``H`` steps of ``B`` environments (:func:`shac_window`).

    Only ``objective`` and ``entropy`` carry a graph; everything else is detached data for the critic and the
    bookkeeping.
    """

    objective: torch.Tensor
    """(B,) the actor's objective ``J`` per environment: discounted training rewards of its segments, each closed
    with ``gamma^k V(s)``; differentiable in the policy's parameters."""
    entropy: torch.Tensor
    """() the sum over the window's steps of the mean policy entropy (nats); differentiable only if
    ``entropy_grad``."""
    observations: torch.Tensor
    """(H, B, obs_dim) the observation each step acted on."""
    rewards: torch.Tensor
    """(H, B) the training rewards (``twin.training_reward``)."""
    next_values: torch.Tensor
    """(H, B) ``V`` of the observation each step led to, before any reset."""
    terminated: torch.Tensor
    """(H, B) bool."""
    done: torch.Tensor
    """(H, B) bool, ``terminated | truncated``."""
    env_rewards: torch.Tensor
    """(H, B) the environment's own rewards (for the episode returns)."""
    next_state: Any
    """The twin state after the window (environments that finished already re-drawn), detached."""
    continuation: torch.Tensor | None = None
    """(H, B) ``twin.continuation`` of the state each step led to (ones for an exact twin): the probability that
    the episode still runs, which weights every later reward and the closing value."""
    actions: torch.Tensor | None = None
    """(H, B, n_actions) the actions fed to the twin, detached (for a score-function loss on the same window)."""
    cells: torch.Tensor | None = None
    """(H, B, n_cells) ``twin.visit_distribution`` of the state each step acted on, detached (only with
    ``count_cells``: the visits of a count bonus)."""


def value(critic: nn.Module, obs: torch.Tensor) -> torch.Tensor:
    """``V(obs)``, shape (B,), from a critic that maps (B, obs_dim) to (B, 1)."""
    return critic(obs).squeeze(-1)


def detached(state: Any) -> Any:
    """The twin state (a NamedTuple of tensors) with every field detached from the graph."""
    return type(state)(*(x.detach() for x in state))


def shac_window(
    policy: GumbelPolicy,
    twin: DifferentiableEnv,
    state: Any,
    critic: nn.Module,
    *,
    horizon: int,
    actor_horizon: int,
    gamma: float,
    tau: float,
    estimator: str,
    generator: torch.Generator | None = None,
    entropy_grad: bool = False,
    bonus: torch.Tensor | None = None,
    count_cells: bool = False,
) -> Window:
    """Roll ``policy`` through ``twin`` for ``horizon`` steps from ``state`` and build the actor's objective.

    See the module docstring for ``J``. The start state is detached; every ``actor_horizon`` steps (0: only at
    the window end; always at the window end) the running segments are closed with ``gamma^k V(s)`` and the
    state is detached. Episodes that end inside the window restart from ``twin.reset_done``.

    Args:
        policy: acts with ``policy.act(obs, tau=tau, estimator=estimator, generator=generator)``.
        twin: any differentiable environment; ``state``: its batched state of ``B`` environments.
        critic: value network, (B, obs_dim) -> (B, 1); its parameters get no special treatment (restrict the
            backward to the policy's parameters).
        horizon: window length ``H`` >= 1; actor_horizon: segment length in [0, H] (0 = H).
        gamma: discount; tau: Gumbel-Softmax temperature; estimator: a pathwise estimator name.
        generator: the source of all twin and Gumbel noise (consumed in step order).
        entropy_grad: keep the entropy's graph (needed when its weight in the loss is not 0).
        bonus: None, or an exploration bonus per cell of ``twin.visit_distribution`` (a ``CountableEnv``),
            (n_cells,) without gradient: each step's training reward gets ``visit_distribution(s_{t+1}) . bonus``
            (the bonus of the next cell, or its expectation), differentiable in the next state.
        count_cells: record ``twin.visit_distribution`` of each state acted on in ``Window.cells``.
    Returns:
        the :class:`Window`.
    """
    cut = actor_horizon or horizon
    state = detached(state)  # truncated backprop: no gradient from earlier windows
    obs = twin.observe(state)
    discount = torch.ones(obs.shape[0], dtype=obs.dtype, device=obs.device)
    objective = torch.zeros_like(discount)
    entropy = torch.zeros((), dtype=obs.dtype, device=obs.device)
    obs_buf, rew_buf, env_rew_buf, nv_buf, term_buf, done_buf, cont_buf, act_buf = [], [], [], [], [], [], [], []
    cell_buf: list[torch.Tensor] = []
    for t in range(horizon):
        obs = twin.observe(state)
        if count_cells:
            cell_buf.append(twin.visit_distribution(state).detach())  # type: ignore[attr-defined]
        action, logits = policy.act(obs, tau=tau, estimator=estimator, generator=generator)
        next_state, env_reward, terminated, truncated = twin.step(state, action, generator=generator)
        reward = twin.training_reward(state, action, next_state, env_reward)
        done = terminated | truncated
        next_obs = twin.observe(next_state)
        if bonus is not None:
            reward = reward + twin.visit_distribution(next_state) @ bonus  # type: ignore[attr-defined]
        next_value = value(critic, next_obs)
        objective = objective + discount * reward
        # A truncated episode bootstraps on V(final obs); a terminated one is cut, also when the time limit falls on
        # the same step (Gymnasium's TimeLimit then reports both).
        objective = objective + discount * gamma * (truncated & ~terminated).to(reward.dtype) * next_value
        logp = torch.log_softmax(logits if entropy_grad else logits.detach(), dim=-1)
        entropy = entropy - (logp.exp() * logp).sum(-1).mean()
        obs_buf.append(obs.detach())
        rew_buf.append(reward.detach())
        env_rew_buf.append(env_reward.detach())
        nv_buf.append(next_value.detach())
        term_buf.append(terminated)
        done_buf.append(done)
        # Dreamer's continuation: the next step's reward and value count only if the episode still runs (exact
        # twins: times exactly 1).
        continuation = twin.continuation(next_state)
        cont_buf.append(continuation.detach())
        act_buf.append(action.detach())
        discount = torch.where(done, torch.ones_like(discount), discount * gamma * continuation)
        state = twin.reset_done(next_state, done, generator=generator)
        if (t + 1) % cut == 0 or t + 1 == horizon:
            # Segments still running close on gamma^k V(s) (k: their length so far), and the gradient is cut.
            live = 1.0 - done.to(discount.dtype)
            objective = objective + discount * value(critic, twin.observe(state)) * live
            state = detached(state)
            discount = torch.ones_like(discount)
    return Window(
        objective=objective,
        entropy=entropy,
        observations=torch.stack(obs_buf),
        rewards=torch.stack(rew_buf),
        next_values=torch.stack(nv_buf),
        terminated=torch.stack(term_buf),
        done=torch.stack(done_buf),
        env_rewards=torch.stack(env_rew_buf),
        next_state=state,
        continuation=torch.stack(cont_buf),
        actions=torch.stack(act_buf),
        cells=torch.stack(cell_buf) if count_cells else None,
    )


def shac_actor_loss(window: Window, horizon: int, ent_coef: float) -> torch.Tensor:
    """SHAC's actor loss ``-mean_envs(J) / H - ent_coef * entropy / H`` (a scalar with the window's graph)."""
    return -window.objective.mean() / horizon - ent_coef * window.entropy / horizon


def critic_loss(critic: nn.Module, obs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Value regression ``mean (V(obs) - targets)^2``; obs (N, obs_dim), targets (N,) without gradient."""
    return (value(critic, obs) - targets).pow(2).mean()


# ---- the agent -------------------------------------------------------------------------------------------------


class PathwiseAgent(Agent):
    """SHAC-style short-horizon pathwise policy gradients through ``envs.make_differentiable(env_id)``.

    Attributes (beyond :class:`Agent`'s):
        twin: the differentiable environment; ``twin_state``: its current batched state (no gradient).
        critic: the value MLP; ``actor_opt`` / ``critic_opt``: their Adam optimisers.
        generator: the ``torch.Generator`` (on ``device``) of all twin and Gumbel noise.
        episodes: the returns of the training episodes (``rollout/ep_rew_mean``).
    """

    config_cls = PathwiseConfig
    config: PathwiseConfig

    def _setup(self) -> None:
        cfg = self.config
        self.estimator = self.method
        self.twin = self._make_twin()
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(self.seed)
        self.schedule = make_schedule(cfg.tau)
        env = make_env(self.env_id)
        try:
            obs_space, act_space = env.observation_space, env.action_space
        finally:
            env.close()
        self.policy = self._make_policy(obs_space, act_space, self.estimator, self.schedule(0), cfg.gumbel_k)
        if self.policy.obs_dim != self.twin.obs_dim or self.policy.n_actions != self.twin.n_actions:
            raise ValueError(f"the twin of {self.env_id!r} does not match the env's spaces")  # a bug, not user input
        # With no hidden layer the critic is a table of values over one-hot states: start it at zero everywhere.
        out_gain = 1.0 if cfg.critic_arch else 0.0
        self.critic = mlp(self.twin.obs_dim, cfg.critic_arch, 1, cfg.activation, out_gain).to(self.device)
        self.actor_opt = torch.optim.Adam(self.policy.parameters(), lr=cfg.learning_rate)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_learning_rate)
        self.twin_state = self._initial_state()
        self.episodes = EpisodeReturns(cfg.n_envs, device=self.device)
        if cfg.explore_bonus > 0 and not isinstance(self.twin, CountableEnv):
            raise ValueError(
                f"hyperparameter explore_bonus needs a twin with cells to count (visit_distribution: the gridworld "
                f"and MiniGrid twins), and the twin of {self.env_id!r} has none; use explore_bonus=0"
            )
        # Exploration bonus state: expected visits per cell, and the reward unit (0 until the first window).
        n_cells = self.twin.visit_distribution(self.twin_state).shape[1] if cfg.explore_bonus > 0 else 0
        self.visits = torch.zeros(n_cells, device=self.device)
        self.reward_unit = torch.zeros((), device=self.device)

    def _make_twin(self) -> DifferentiableEnv:
        """``envs.make_differentiable(env_id)`` with the config's ``objective`` where it is set."""
        if self.config.objective is None:
            return envs.make_differentiable(self.env_id, device=self.device)
        try:
            return envs.make_differentiable(self.env_id, device=self.device, objective=self.config.objective)
        except TypeError as exc:
            if "objective" not in str(exc):
                raise
            raise ValueError(
                f"hyperparameter objective: the twin of {self.env_id!r} has a single training objective and takes "
                f"no objective option; leave objective unset (None)"
            ) from None

    def _initial_state(self) -> Any:
        state = self.twin.reset(self.config.n_envs, generator=self.generator)
        max_t = self.twin.max_episode_steps
        if self.config.randomize_start_t and max_t:
            t = torch.randint(0, int(max_t), state.t.shape, generator=self.generator, device=self.device)
            state = state._replace(t=t)
        return state

    def _set_learning_rates(self) -> float:
        """Apply the linear learning-rate decay at the current step; returns the policy's learning rate."""
        cfg = self.config
        frac = 1.0
        if cfg.lr_decay_steps > 0:
            progress = min(self.num_env_steps / cfg.lr_decay_steps, 1.0)
            frac = 1.0 - (1.0 - cfg.lr_final_fraction) * progress
        for opt, lr in ((self.actor_opt, cfg.learning_rate), (self.critic_opt, cfg.critic_learning_rate)):
            for group in opt.param_groups:
                group["lr"] = lr * frac
        return cfg.learning_rate * frac

    def _train_iteration(self) -> tuple[int, dict[str, float]]:
        cfg = self.config
        tau = float(self.schedule(self.num_env_steps))
        self.policy.tau.fill_(tau)
        lr = self._set_learning_rates()

        window = shac_window(
            self.policy,
            self.twin,
            self.twin_state,
            self.critic,
            horizon=cfg.horizon,
            actor_horizon=cfg.actor_horizon,
            gamma=cfg.gamma,
            tau=tau,
            estimator=self.estimator,
            generator=self.generator,
            entropy_grad=cfg.ent_coef > 0,
            bonus=self._exploration_bonus(),
            count_cells=cfg.explore_bonus > 0,
        )
        if cfg.explore_bonus > 0:
            self._count_visits(window)
        actor_loss = shac_actor_loss(window, cfg.horizon, cfg.ent_coef)
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward(inputs=list(self.policy.parameters()))
        grad_norm = nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)
        self.actor_opt.step()
        self.twin_state = window.next_state
        for env_reward, done in zip(window.env_rewards, window.done, strict=True):
            self.episodes.add(env_reward, done)

        targets = lambda_returns(
            window.rewards, window.next_values, window.terminated, window.done, cfg.gamma, cfg.gae_lambda
        )
        loss_v = self._update_critic(window.observations.flatten(0, 1), targets.reshape(-1))
        metrics: dict[str, float | torch.Tensor] = {
            "train/actor_loss": actor_loss.detach(),
            "train/critic_loss": loss_v,
            "train/tau": tau,
            "train/learning_rate": lr,
            "train/grad_norm": grad_norm,
            "train/window_reward": window.rewards.mean(),
            "train/entropy": window.entropy.detach() / cfg.horizon,
        }
        return cfg.n_envs * cfg.horizon, {**{k: float(v) for k, v in metrics.items()}, **self.episodes.metrics()}

    def _exploration_bonus(self) -> torch.Tensor | None:
        """The per-cell bonus ``beta * u / sqrt(max(N, 1))`` for the next window, (n_cells,); None while off (and
        for the first window, which sets the reward unit ``u``)."""
        beta = self.config.explore_bonus
        if beta <= 0 or not self.reward_unit > 0:
            return None
        return count_bonus(self.visits, beta) * self.reward_unit

    def _count_visits(self, window: Window) -> None:
        """Add the window's (expected) cell visits (``window.cells``); the first window also fixes the reward unit
        ``u`` (the RMS of its training rewards)."""
        assert window.cells is not None  # the window was rolled with count_cells
        self.visits += window.cells.sum((0, 1))
        if not self.reward_unit > 0:
            self.reward_unit.fill_(1.0 / reward_scale(window.rewards))

    def _update_critic(self, obs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``critic_epochs`` passes of ``critic_minibatches`` Adam steps on :func:`critic_loss` over the window's
        states (obs (N, obs_dim), targets (N,)); returns the last pass's mean loss."""
        cfg = self.config
        size = obs.shape[0]
        batch = max(1, size // cfg.critic_minibatches)
        last = torch.zeros((), device=self.device)
        for _ in range(cfg.critic_epochs):
            perm = torch.randperm(size, generator=self.generator, device=self.device)
            total = torch.zeros((), device=self.device)
            for i in range(cfg.critic_minibatches):
                idx = perm[i * batch : (i + 1) * batch]
                loss = critic_loss(self.critic, obs[idx], targets[idx])
                self.critic_opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.critic.parameters(), cfg.max_grad_norm)
                self.critic_opt.step()
                total = total + loss.detach()
            last = total / cfg.critic_minibatches
        return last

    # ---- checkpoints -----------------------------------------------------------------------------------------
    def _training_state(self) -> dict[str, Any]:
        return {
            "critic": self.critic.state_dict(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "generator": self.generator.get_state(),
            "twin_state": {k: v.detach() for k, v in self.twin_state._asdict().items()},
            "episodes": self.episodes.state_dict(),
            "visits": self.visits,
            "reward_unit": self.reward_unit,
        }

    def _load_training_state(self, state: dict[str, Any]) -> None:
        self.critic.load_state_dict(state["critic"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.generator.set_state(state["generator"].cpu())
        self.twin_state = type(self.twin_state)(**state["twin_state"])
        self.episodes.load_state_dict(state["episodes"])
        if "visits" in state:  # checkpoints written before the exploration bonus existed have none
            self.visits = state["visits"]
            self.reward_unit = state["reward_unit"]


for _name in PATHWISE_ESTIMATORS:
    register_method(_name, f"pathwise gradient through the twin with {Estimator(_name).description}", needs_twin=True)(
        PathwiseAgent
    )
