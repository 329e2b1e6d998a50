"""Pathwise policy gradients through a differentiable twin of the environment (SHAC-style short-horizon rollouts).

One class, :class:`PathwiseAgent`, registered under ``relaxed``, ``st-gumbel``, ``argmax``, ``reinmax`` and
``gumbel-rao``: the method name is the Gumbel gradient estimator the policy acts with, and nothing else differs.

One iteration (Xu et al. 2022, "Accelerated Policy Learning with Parallel Differentiable Simulation"; Brax APG):

1. ``n_envs`` twin environments advance ``horizon`` steps in one batch: observe -> ``policy.act(obs, tau,
   estimator)`` -> ``twin.step(state, action)``. Soft (``relaxed``) actions go into the twin as they are; the
   other estimators feed one-hots that carry their gradient. The state at the window start is detached
   (truncated backprop: no gradient crosses a window boundary); the state itself carries over.
2. Actor loss, per environment: the discounted sum of training rewards over the window, split at episode ends;
   a segment that reaches the window end is closed with ``gamma^k V(s_H)``, a truncated episode with ``gamma^k
   V(final obs)`` (the twin returns the state before reset) and a terminated one with nothing. The loss is minus
   the sum of those returns, averaged over environments and divided by ``horizon`` (as SHAC does, so that the
   scale does not grow with the window), minus ``entropy_coef`` times the mean policy entropy. Finished
   environments are re-drawn with ``twin.reset_done`` (the fresh rows carry no gradient). Gradient-norm clipping,
   then Adam. With ``actor_horizon`` k < ``horizon`` the same happens every k steps inside the window: running
   segments are closed with ``gamma^j V(s)`` and the state is detached, so the actor's gradient spans k steps
   while the critic still learns from the whole window (k = 1: each action is credited with ``r + gamma V(s')``
   through the twin; the gridworld default, where replaying the later actions from another cell is the wrong
   counterfactual).
3. The critic ``V`` (its own MLP and Adam) regresses TD(lambda) targets computed from the window's detached
   rewards and values, ``critic_epochs`` passes of ``critic_minibatches`` minibatches.

Training rewards: CartPole-v1 uses the twin's ``shaped_reward`` of the next state (Gymnasium's constant 1 carries
no gradient); gridworlds use the twin's own reward. The record still reports real returns: the base class
evaluates the greedy policy in the real Gymnasium environment. Each iteration consumes ``n_envs * horizon`` env
steps.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import torch
from torch import nn

import envs
from agents.base import Agent, Config, check_fraction, check_positive
from agents.registry import register_method
from gumbel_rl.policy import GumbelPolicy, mlp
from gumbel_rl.schedules import make_schedule

PATHWISE_METHODS: dict[str, str] = {
    "relaxed": "pathwise gradient through the twin with soft Gumbel-Softmax actions (biased, low variance)",
    "st-gumbel": "pathwise gradient through the twin with straight-through Gumbel-Softmax (hard sampled actions)",
    "argmax": "pathwise gradient through the twin with greedy one-hot actions and a softmax straight-through",
    "reinmax": "pathwise gradient through the twin with ReinMax (second-order straight-through, Liu et al. 2023)",
    "gumbel-rao": "pathwise gradient through the twin with Gumbel-Rao (k conditional Gumbels, Paulus et al. 2021)",
}


@dataclass
class PathwiseConfig(Config):
    """Hyperparameters of the pathwise (twin) agents."""

    n_envs: int = 64
    """Twin environments simulated in parallel in one batch."""
    horizon: int = 32
    """Steps per window; one iteration consumes ``n_envs * horizon`` env steps and makes one actor update."""
    actor_horizon: int = 0
    """Truncated-backprop length of the actor's gradient: every ``actor_horizon`` steps the running segments are
    closed with ``gamma^k V(s)`` and the state is detached. 0 means ``horizon`` (SHAC: one segment per window).
    1 makes the gradient of each action ``r + gamma V(s')`` alone, the one-step lookahead through the twin."""
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
    tau_schedule: Any = field(default_factory=lambda: {"kind": "constant", "tau": 1.0})
    """Gumbel-Softmax temperature as a function of env steps: a number, or a ``gumbel_rl.schedules`` spec such as
    ``{"kind": "linear", "tau0": 2.0, "tau_end": 0.5, "steps": 100000}``."""
    entropy_coef: float = 0.0
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
        check_positive("entropy_coef", self.entropy_coef, allow_zero=True)
        check_fraction("gamma", self.gamma, closed_high=False)
        check_fraction("gae_lambda", self.gae_lambda)
        check_fraction("lr_final_fraction", self.lr_final_fraction)
        if not isinstance(self.critic_arch, tuple) or any(
            not isinstance(h, int) or isinstance(h, bool) or h <= 0 for h in self.critic_arch
        ):
            raise ValueError(
                f"hyperparameter critic_arch must be a list of positive integers (may be empty), got "
                f"{self.critic_arch!r}"
            )
        if not isinstance(self.randomize_start_t, bool):
            raise ValueError(f"hyperparameter randomize_start_t must be true or false, got {self.randomize_start_t!r}")
        try:
            make_schedule(self.tau_schedule)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"hyperparameter tau_schedule {self.tau_schedule!r} is invalid: {exc}") from None


def lambda_returns(
    rewards: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    done: torch.Tensor,
    gamma: float,
    lam: float,
) -> torch.Tensor:
    """TD(lambda) targets for the states of a window (no gradient).

    ``G_t = r_t + gamma * (1 - terminated_t) * (V(s'_t) if done_t else (1 - lam) V(s'_t) + lam G_{t+1})`` with
    ``G_H = V(s'_{H-1})``: episodes that end inside the window are cut, truncated ones bootstrap on the value of
    their final observation.

    Args:
        rewards, next_values: (H, n_envs) float; ``next_values[t]`` is V of the observation after step t (before
            any reset).
        terminated, done: (H, n_envs) bool; ``done = terminated | truncated``.
    Returns:
        (H, n_envs) targets.
    """
    horizon = rewards.shape[0]
    out = torch.empty_like(rewards)
    nxt = next_values[-1]
    not_term = (~terminated).to(rewards.dtype)
    for t in range(horizon - 1, -1, -1):
        blend = torch.where(done[t], next_values[t], (1.0 - lam) * next_values[t] + lam * nxt)
        out[t] = rewards[t] + gamma * not_term[t] * blend
        nxt = out[t]
    return out


def _detached(state: Any) -> Any:
    """The twin state (a NamedTuple of tensors) with every field detached from the graph."""
    return type(state)(*(x.detach() for x in state))


def _state_to_dict(state: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in state._asdict().items()}


class PathwiseAgent(Agent):
    """SHAC-style short-horizon pathwise policy gradients through ``envs.make_differentiable(env_id)``.

    Attributes (beyond :class:`Agent`'s):
        twin: the differentiable environment; ``twin_state``: its current batched state (no gradient).
        critic: the value MLP; ``actor_opt`` / ``critic_opt``: their Adam optimisers.
        generator: the ``torch.Generator`` (on ``device``) of all twin and Gumbel noise.
    """

    config_cls = PathwiseConfig
    config: PathwiseConfig

    def _setup(self) -> None:
        cfg = self.config
        self.estimator = self.method
        self.twin = envs.make_differentiable(self.env_id, device=self.device)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(self.seed)
        self.schedule = make_schedule(cfg.tau_schedule)
        env = gym.make(self.env_id)
        try:
            obs_space, act_space = env.observation_space, env.action_space
        finally:
            env.close()
        self.policy = GumbelPolicy(
            obs_space,
            act_space,
            net_arch=cfg.net_arch,
            activation=cfg.activation,
            estimator=self.estimator,
            tau=self.schedule(0),
            k=cfg.gumbel_k,
        ).to(self.device)
        if self.policy.obs_dim != self.twin.obs_dim or self.policy.n_actions != self.twin.n_actions:
            raise ValueError(f"the twin of {self.env_id!r} does not match the env's spaces")  # a bug, not user input
        # With no hidden layer the critic is a table of values over one-hot states: start it at zero everywhere.
        out_gain = 1.0 if cfg.critic_arch else 0.0
        self.critic = mlp(self.twin.obs_dim, cfg.critic_arch, 1, cfg.activation, out_gain).to(self.device)
        self.actor_opt = torch.optim.Adam(self.policy.parameters(), lr=cfg.learning_rate)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_learning_rate)
        # Training reward: CartPole's shaped surrogate (the env reward is a constant 1), else the twin's own.
        shaped = getattr(self.twin, "shaped_reward", None)
        self._reward_fn: Callable[[Any, torch.Tensor], torch.Tensor] = (
            (lambda next_state, env_reward: shaped(next_state)) if shaped is not None else (lambda _s, r: r)
        )
        step_params = inspect.signature(self.twin.step).parameters
        self._step_kwargs = {"generator": self.generator} if "generator" in step_params else {}
        self.twin_state = self._initial_state()
        self._episode_return = torch.zeros(cfg.n_envs, device=self.device)

    def _initial_state(self) -> Any:
        state = self.twin.reset(self.config.n_envs, generator=self.generator)
        max_t = getattr(self.twin, "max_episode_steps", None)
        if self.config.randomize_start_t and max_t:
            t = torch.randint(0, int(max_t), state.t.shape, generator=self.generator, device=self.device)
            state = state._replace(t=t)
        return state

    # ---- helpers ---------------------------------------------------------------------------------------------
    def _value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)

    def _set_learning_rates(self) -> float:
        cfg = self.config
        frac = 1.0
        if cfg.lr_decay_steps > 0:
            progress = min(self.num_env_steps / cfg.lr_decay_steps, 1.0)
            frac = 1.0 - (1.0 - cfg.lr_final_fraction) * progress
        for opt, lr in ((self.actor_opt, cfg.learning_rate), (self.critic_opt, cfg.critic_learning_rate)):
            for group in opt.param_groups:
                group["lr"] = lr * frac
        return cfg.learning_rate * frac

    # ---- one iteration ---------------------------------------------------------------------------------------
    def _train_iteration(self) -> tuple[int, dict[str, float]]:
        cfg = self.config
        n, horizon, gamma = cfg.n_envs, cfg.horizon, cfg.gamma
        tau = float(self.schedule(self.num_env_steps))
        self.policy.tau.fill_(tau)
        lr = self._set_learning_rates()

        # Truncated backprop: the window starts from a detached state.
        state = _detached(self.twin_state)
        discount = torch.ones(n, device=self.device)
        objective = torch.zeros(n, device=self.device)
        entropy = torch.zeros((), device=self.device)
        obs_buf, rew_buf, nv_buf, term_buf, done_buf = [], [], [], [], []
        ep_return = self._episode_return
        finished_sum = torch.zeros((), device=self.device)
        finished_count = torch.zeros((), device=self.device)
        cut = cfg.actor_horizon or horizon
        for t in range(horizon):
            obs = self.twin.observe(state)
            action, logits = self.policy.act(obs, tau=tau, estimator=self.estimator, generator=self.generator)
            next_state, env_reward, terminated, truncated = self.twin.step(state, action, **self._step_kwargs)
            reward = self._reward_fn(next_state, env_reward)
            done = terminated | truncated
            next_value = self._value(self.twin.observe(next_state))
            objective = objective + discount * reward
            # Truncated episodes bootstrap on V(final obs); terminated ones are cut.
            objective = objective + discount * gamma * truncated.to(reward.dtype) * next_value
            logp = torch.log_softmax(logits if cfg.entropy_coef > 0 else logits.detach(), dim=-1)
            entropy = entropy - (logp.exp() * logp).sum(-1).mean()
            obs_buf.append(obs.detach())
            rew_buf.append(reward.detach())
            nv_buf.append(next_value.detach())
            term_buf.append(terminated)
            done_buf.append(done)
            ep_return = ep_return + env_reward.detach()
            finished_sum = finished_sum + (ep_return * done).sum()
            finished_count = finished_count + done.sum()
            ep_return = ep_return.masked_fill(done, 0.0)
            discount = torch.where(done, torch.ones_like(discount), discount * gamma)
            state = self.twin.reset_done(next_state, done, self.generator)
            if (t + 1) % cut == 0:
                # Segments still running bootstrap on V(s) (gamma^k, k their length so far); the actor's gradient
                # is cut here (at the window end, and every actor_horizon steps inside it).
                live = 1.0 - done.to(discount.dtype)
                objective = objective + discount * self._value(self.twin.observe(state)) * live
                state = _detached(state)
                discount = torch.ones_like(discount)
        actor_loss = -objective.mean() / horizon - cfg.entropy_coef * entropy / horizon

        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward(inputs=list(self.policy.parameters()))
        grad_norm = nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)
        self.actor_opt.step()
        self.twin_state = state
        self._episode_return = ep_return

        critic_loss = self._update_critic(obs_buf, rew_buf, nv_buf, term_buf, done_buf)
        metrics = {
            "actor_loss": actor_loss.detach(),
            "critic_loss": critic_loss,
            "tau": tau,
            "learning_rate": lr,
            "grad_norm": grad_norm,
            "window_reward": torch.stack(rew_buf).mean(),
            "entropy": entropy.detach() / horizon,
        }
        out = {k: float(v) for k, v in metrics.items()}
        count = int(finished_count)
        if count:
            out["episode_return"] = float(finished_sum) / count
            out["episodes"] = float(count)
        return n * horizon, out

    def _update_critic(
        self,
        obs_buf: list[torch.Tensor],
        rew_buf: list[torch.Tensor],
        nv_buf: list[torch.Tensor],
        term_buf: list[torch.Tensor],
        done_buf: list[torch.Tensor],
    ) -> torch.Tensor:
        """TD(lambda) regression of the critic on the window's states; returns the last epoch's mean loss."""
        cfg = self.config
        targets = lambda_returns(
            torch.stack(rew_buf),
            torch.stack(nv_buf),
            torch.stack(term_buf),
            torch.stack(done_buf),
            cfg.gamma,
            cfg.gae_lambda,
        ).reshape(-1)
        obs = torch.cat(obs_buf)
        size = obs.shape[0]
        batch = max(1, size // cfg.critic_minibatches)
        last = torch.zeros((), device=self.device)
        for _ in range(cfg.critic_epochs):
            perm = torch.randperm(size, generator=self.generator, device=self.device)
            total = torch.zeros((), device=self.device)
            for i in range(cfg.critic_minibatches):
                idx = perm[i * batch : (i + 1) * batch]
                loss = (self._value(obs[idx]) - targets[idx]).pow(2).mean()
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
            "twin_state": _state_to_dict(self.twin_state),
            "episode_return": self._episode_return,
        }

    def _load_training_state(self, state: dict[str, Any]) -> None:
        self.critic.load_state_dict(state["critic"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.generator.set_state(state["generator"].cpu())
        self.twin_state = type(self.twin_state)(**state["twin_state"])
        self._episode_return = state["episode_return"]


for _name in PATHWISE_METHODS:
    register_method(_name, PATHWISE_METHODS[_name], needs_twin=True)(PathwiseAgent)
