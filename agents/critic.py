"""Pathwise policy gradients through a learned critic: an off-policy actor-critic for any Discrete-action env.

Methods ``<estimator>-critic`` (``relaxed-critic``, ``st-gumbel-critic``, ``argmax-critic``, ``reinmax-critic``,
``gumbel-rao-critic``) learn from real Gymnasium steps; no differentiable twin is needed. In the spirit of
DDPG/TD3/SAC with the discrete action relaxed by a Gumbel estimator:

- Critic: two MLPs ``Q_i(s, a)`` on ``[features(s), a]`` with ``a`` the action one-hot (or soft) vector, trained
  on replayed transitions towards ``y = r + gamma * (1 - terminated) * V_targ(s')`` with
  ``V_targ(s') = sum_a' pi(a'|s') * min_i Q_targ_i(s', e_a') + alpha * H(pi(.|s'))`` (SAC's soft value; the
  entropy term is dropped with ``soft_target=False``) -- the expectation over
  the next action is computed exactly by summing over the ``n`` actions (no sampled next action). With
  ``n_step > 1`` the target sums that many replayed rewards of the episode before bootstrapping. Targets are
  Polyak averages of the critics (rate ``polyak``). Truncated transitions bootstrap; terminated ones do not.
- Actor (the ``GumbelPolicy``): loss ``-min_i Q_i(s, a~) - alpha * H(pi(.|s))`` with ``a~ =
  sample_action(logits, estimator, tau)``; the critic is frozen during this step, so the policy's gradient comes
  only through the action ``a~`` (the estimator) and the exact categorical entropy ``H``. Temperature ``tau``
  follows a ``gumbel_rl.schedules`` schedule over env steps.
- Entropy weight ``alpha`` (``ent_coef``): fixed, or learned as in SAC so that ``H`` tracks ``target_entropy *
  log(n)``. Without it the actor tends to collapse onto one action within a few hundred updates (seen on
  CartPole: the greedy policy then always pushes one way); at a saturated softmax every estimator's gradient
  vanishes, so the policy cannot recover, and the critic never sees the other action again.
- Acting: ``learning_starts`` uniformly random env steps, then exact samples of the policy (Gumbel-Max), a hard
  action in the real env for every estimator.

Environment handling (Gymnasium 1.x): a ``SyncVectorEnv`` of ``n_envs`` copies built by ``gymnasium.make_vec``
with autoreset **disabled**; the agent resets finished copies itself right after the step that ended them
(``reset(seed=..., options={"reset_mask": done})``). So no "reset step" (what the default NEXT_STEP mode would
return after a done) ever happens and nothing has to be filtered out of the buffer: every stored transition is
a real (s, a, r, s') of one episode, with ``s'`` the true final observation on termination or truncation. Each
episode is reset with its own seed drawn from the agent's NumPy generator; a checkpoint keeps, per copy, that seed
and the actions taken since, and ``Agent.load`` replays them (a bounded replay: one episode) to restore the
environments exactly, then checks that the replayed observation equals the saved one.

The checkpoint holds everything else needed for an exact resume: critics, targets, both optimisers, the replay
buffer (its filled part), the torch generator and the episode bookkeeping. The buffer is saved whole; for image
observations and large buffers that file would be large.
"""

from __future__ import annotations

import copy
import math
from collections import deque
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from torch import nn

from agents.base import Agent, Config, check_fraction, check_positive
from agents.registry import register_method
from gumbel_rl.estimators import PATHWISE_ESTIMATORS, sample_action
from gumbel_rl.gumbel import gumbel_max
from gumbel_rl.policy import ACTIVATIONS, GumbelPolicy, features_dim
from gumbel_rl.schedules import make_schedule

CRITIC_SUFFIX = "-critic"


@dataclass
class CriticConfig(Config):
    """Hyperparameters of the critic methods (``<estimator>-critic``)."""

    n_envs: int = 1
    """Environment copies stepped together (one vectorised step = ``n_envs`` env steps)."""
    buffer_size: int = 100_000
    """Replay buffer capacity in transitions (oldest overwritten first)."""
    learning_starts: int = 1_000
    """Env steps of uniformly random actions before the policy acts and updates start."""
    batch_size: int = 256
    """Transitions per gradient step."""
    train_freq: int = 1
    """Vectorised env steps per training iteration."""
    gradient_steps: int = 1
    """Critic updates per training iteration."""
    policy_delay: int = 1
    """One actor update every this many critic updates (TD3's delay)."""
    gamma: float = 0.99
    """Discount factor."""
    n_step: int = 1
    """Bootstrap after this many real steps: ``y = r_t + gamma r_{t+1} + ... + gamma^(n-1) r_{t+n-1} + gamma^n
    V_targ(s_{t+n})``, cut short at the end of the episode (termination: no bootstrap; truncation: bootstrap from
    the final observation). 1: one-step TD. The replayed rewards come from older policies (no off-policy
    correction), a bias that small ``n`` keeps small; in exchange values propagate ``n`` times faster."""
    polyak: float = 0.005
    """Target critic update rate: ``target <- (1 - polyak) * target + polyak * critic`` after each critic update."""
    actor_lr: float = 3e-4
    """Adam learning rate of the policy."""
    critic_lr: float = 1e-3
    """Adam learning rate of the critics."""
    critic_arch: tuple[int, ...] = (64, 64)
    """Hidden layer sizes of each critic."""
    critic_activation: str = "relu"
    """Activation of the critics (tanh, relu, elu, gelu)."""
    ent_coef: float | str = "auto"
    """Weight ``alpha`` of the exact policy entropy in the actor loss and the soft value target: a number >= 0
    (fixed; 0: none), ``"auto"`` (learned, SAC-style, so that the entropy tracks ``target_entropy``; starts at
    ``alpha = 0.1``) or ``"auto_<initial alpha>"``."""
    target_entropy: float = 0.5
    """Entropy the learned ``alpha`` aims at, as a fraction of ``log(n_actions)`` (the uniform policy's)."""
    soft_target: bool = True
    """Add ``alpha * H(pi(.|s'))`` to the value target (SAC's soft Q); False: the entropy only regularises the
    actor. With a learned alpha the soft target can run away where episodes end early on a mistake (CartPole):
    the failing action also loses the future entropy bonus, so Q's action gaps grow with alpha as fast as the
    actor's entropy term, raising alpha does not raise the entropy, and alpha grows without bound (CartPole seed 5:
    alpha 250 after 4k steps, 9e5 after 45k, Q ~ 1e7; the greedy policy oscillates between 130 and 460)."""
    alpha_lr: float = 3e-3
    """Adam learning rate of ``log(alpha)`` when ``ent_coef`` is learned."""
    max_grad_norm: float = 10.0
    """Clip each network's gradient norm to this (0: no clipping)."""
    tau: Any = 1.0
    """Gumbel-Softmax temperature over env steps: a number (constant) or a ``gumbel_rl.schedules.make_schedule``
    mapping, e.g. ``{"kind": "linear", "tau0": 1.0, "tau_end": 0.5, "steps": 20000}``."""
    k: int = 10
    """Conditional Gumbel draws of the ``gumbel-rao`` estimator."""

    def __post_init__(self) -> None:
        if isinstance(self.critic_arch, list):
            self.critic_arch = tuple(self.critic_arch)

    def validate(self) -> None:
        super().validate()
        counts = ("n_envs", "buffer_size", "batch_size", "train_freq", "gradient_steps", "policy_delay", "n_step", "k")
        for name in counts:
            check_positive(name, getattr(self, name), integer=True)
        check_positive("learning_starts", self.learning_starts, integer=True, allow_zero=True)
        check_fraction("gamma", self.gamma)
        check_positive("polyak", self.polyak)
        check_fraction("polyak", self.polyak)
        check_positive("actor_lr", self.actor_lr)
        check_positive("critic_lr", self.critic_lr)
        check_positive("alpha_lr", self.alpha_lr)
        try:
            initial_alpha(self.ent_coef)
        except ValueError as exc:
            raise ValueError(f"hyperparameter ent_coef: {exc}") from None
        check_fraction("target_entropy", self.target_entropy)
        if not isinstance(self.soft_target, bool):
            raise ValueError(f"hyperparameter soft_target must be True or False, got {self.soft_target!r}")
        check_positive("max_grad_norm", self.max_grad_norm, allow_zero=True)
        if not self.critic_arch or any(not isinstance(h, int) or h <= 0 for h in self.critic_arch):
            raise ValueError(
                f"hyperparameter critic_arch must be a non-empty list of positive integers, got {self.critic_arch!r}"
            )
        if self.critic_activation not in ACTIVATIONS:
            raise ValueError(
                f"hyperparameter critic_activation must be one of {', '.join(ACTIVATIONS)}, "
                f"got {self.critic_activation!r}"
            )
        try:
            make_schedule(self.tau)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"hyperparameter tau: {exc}") from None


def initial_alpha(ent_coef: float | str) -> tuple[float, bool]:
    """``(initial alpha, learned?)`` from an ``ent_coef`` setting: a number >= 0, ``"auto"`` or ``"auto_<x>"``.

    Raises:
        ValueError: anything else (a negative or non-finite number, a malformed string, alpha <= 0 for auto).
    """
    if isinstance(ent_coef, str) and ent_coef.startswith("auto"):
        rest = ent_coef[len("auto") :]
        try:
            alpha = 0.1 if rest == "" else float(rest.removeprefix("_")) if rest.startswith("_") else math.nan
        except ValueError:
            alpha = math.nan
        if not (math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"expected 'auto' or 'auto_<initial alpha > 0>', got {ent_coef!r}")
        return alpha, True
    if isinstance(ent_coef, bool) or not isinstance(ent_coef, (int, float)):
        raise ValueError(f"must be a number >= 0, 'auto' or 'auto_<initial alpha>', got {ent_coef!r}")
    if not (math.isfinite(ent_coef) and ent_coef >= 0):
        raise ValueError(f"must be a finite number >= 0, 'auto' or 'auto_<initial alpha>', got {ent_coef!r}")
    return float(ent_coef), False


class EnsembleQ(nn.Module):
    """``n`` independent MLP critics evaluated together (one batched matmul per layer).

    ``forward(features (B, obs_dim), action (B, n_actions)) -> (n, B)``.
    """

    def __init__(self, in_dim: int, hidden: tuple[int, ...], activation: str, n: int = 2) -> None:
        super().__init__()
        sizes = [in_dim, *hidden, 1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
            w = torch.empty(n, fan_in, fan_out)
            bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default initialisation, per member
            nn.init.uniform_(w, -bound, bound)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(torch.empty(n, 1, fan_out).uniform_(-bound, bound)))
        self.act = ACTIVATIONS[activation]()

    def forward(self, features: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        x = torch.cat([features, action], dim=-1).unsqueeze(0)  # (1, B, in)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = torch.baddbmm(b, x.expand(w.shape[0], -1, -1) if i == 0 else x, w)
            if i < last:
                x = self.act(x)
        return x.squeeze(-1)


class ReplayBuffer:
    """Ring buffer of transitions as tensors on ``device``: raw observations (indices for Discrete spaces),
    action indices, rewards, next observations, ``terminated`` flags (1.0 only for true terminations) and ``done``
    flags (terminated or truncated: the episode ended there).

    ``stride``: the distance in the buffer between an env copy's consecutive transitions (``n_envs``, as every
    ``add`` appends one transition per copy), which lets ``sample`` follow an episode for n-step returns.
    """

    def __init__(self, capacity: int, observation_space: gym.Space, device: torch.device, stride: int = 1) -> None:
        self.capacity, self.device, self.stride = int(capacity), device, int(stride)
        self.discrete = isinstance(observation_space, gym.spaces.Discrete)
        self.obs_start = int(observation_space.start) if self.discrete else 0
        obs_shape: tuple[int, ...] = () if self.discrete else (features_dim(observation_space),)
        obs_dtype = torch.long if self.discrete else torch.float32
        self.obs = torch.zeros((self.capacity, *obs_shape), dtype=obs_dtype, device=device)
        self.next_obs = torch.zeros_like(self.obs)
        self.action = torch.zeros(self.capacity, dtype=torch.long, device=device)
        self.reward = torch.zeros(self.capacity, dtype=torch.float32, device=device)
        self.terminated = torch.zeros(self.capacity, dtype=torch.float32, device=device)
        self.done = torch.zeros(self.capacity, dtype=torch.bool, device=device)
        self.pos = 0
        self.size = 0

    def _obs_tensor(self, obs: np.ndarray) -> torch.Tensor:
        if self.discrete:
            return torch.as_tensor(np.asarray(obs, dtype=np.int64) - self.obs_start, device=self.device)
        return torch.as_tensor(np.asarray(obs, dtype=np.float32).reshape(len(obs), -1), device=self.device)

    def add(
        self,
        obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
        done: np.ndarray | None = None,
    ) -> None:
        """Append a batch of ``m`` transitions (numpy arrays with leading dimension ``m``); ``done`` (terminated or
        truncated) defaults to ``terminated``."""
        m = len(action)
        idx = (self.pos + torch.arange(m)) % self.capacity
        idx = idx.to(self.device)
        self.obs[idx] = self._obs_tensor(obs)
        self.next_obs[idx] = self._obs_tensor(next_obs)
        self.action[idx] = torch.as_tensor(np.asarray(action, dtype=np.int64), device=self.device)
        self.reward[idx] = torch.as_tensor(np.asarray(reward, dtype=np.float32), device=self.device)
        self.terminated[idx] = torch.as_tensor(np.asarray(terminated, dtype=np.float32), device=self.device)
        done = terminated if done is None else done
        self.done[idx] = torch.as_tensor(np.asarray(done, dtype=bool), device=self.device)
        self.pos = (self.pos + m) % self.capacity
        self.size = min(self.size + m, self.capacity)

    def sample(
        self, batch: int, generator: torch.Generator, n_step: int = 1, gamma: float = 1.0
    ) -> tuple[torch.Tensor, ...]:
        """``batch`` uniform draws (with replacement): (obs, action, reward, next_obs, terminated, discount).

        ``n_step == 1``: the stored transitions, and ``discount`` is None (the caller's ``gamma``). Otherwise each
        draw ``t`` follows its episode up to ``n_step`` transitions (fewer where the episode ended or the newer
        ones are not written yet): ``reward = sum_k gamma^k r_{t+k}``, ``next_obs``/``terminated`` those of the
        last transition followed, ``discount = gamma^(transitions followed)``.
        """
        i = torch.randint(self.size, (batch,), device=self.device, generator=generator)
        if n_step == 1:
            return self.obs[i], self.action[i], self.reward[i], self.next_obs[i], self.terminated[i], None
        newer = (self.pos - 1 - i) % self.capacity  # transitions written after i (the ring's newest is pos - 1)
        reward = self.reward[i].clone()
        last, alive, followed = i, ~self.done[i], torch.ones(batch, device=self.device)
        for k in range(1, n_step):
            alive = alive & (newer >= k * self.stride)
            j = (i + k * self.stride) % self.capacity
            reward = reward + (gamma**k) * self.reward[j] * alive
            last = torch.where(alive, j, last)
            followed = followed + alive
            alive = alive & ~self.done[j]
        discount = torch.pow(torch.full_like(followed, gamma), followed)
        return self.obs[i], self.action[i], reward, self.next_obs[last], self.terminated[last], discount

    def state_dict(self) -> dict[str, Any]:
        """The filled part of the buffer, in storage order, with the write position."""
        n = self.size
        return {
            "obs": self.obs[:n].clone(),
            "next_obs": self.next_obs[:n].clone(),
            "action": self.action[:n].clone(),
            "reward": self.reward[:n].clone(),
            "terminated": self.terminated[:n].clone(),
            "done": self.done[:n].clone(),
            "pos": self.pos,
            "size": self.size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        n = int(state["size"])
        for key in ("obs", "next_obs", "action", "reward", "terminated"):
            getattr(self, key)[:n] = state[key].to(self.device)
        # Checkpoints from before n-step returns have no "done": their terminations are the best lower bound.
        self.done[:n] = state["done"].to(self.device) if "done" in state else state["terminated"].to(self.device) > 0
        self.pos, self.size = int(state["pos"]), n


@register_method("relaxed-critic", "relaxed Gumbel-Softmax actions through a learned critic Q(s, a)")
@register_method("st-gumbel-critic", "straight-through Gumbel-Softmax through a learned critic Q(s, a)")
@register_method("argmax-critic", "greedy straight-through (softmax backward) through a learned critic Q(s, a)")
@register_method("reinmax-critic", "ReinMax gradients through a learned critic Q(s, a)")
@register_method("gumbel-rao-critic", "Gumbel-Rao (conditional-noise) gradients through a learned critic Q(s, a)")
class CriticAgent(Agent):
    """Off-policy actor-critic whose actor learns through ``sample_action`` into a learned ``Q(s, a)``.

    The estimator is the method name without ``-critic``. See the module docstring for the algorithm.
    """

    config_cls = CriticConfig
    config: CriticConfig

    # ---- construction --------------------------------------------------------------------------------------
    def _setup(self) -> None:
        cfg = self.config
        if not self.method.endswith(CRITIC_SUFFIX) or self.method[: -len(CRITIC_SUFFIX)] not in PATHWISE_ESTIMATORS:
            valid = ", ".join(e + CRITIC_SUFFIX for e in PATHWISE_ESTIMATORS)
            raise ValueError(f"unknown critic method {self.method!r}; valid: {valid}")
        self.estimator = self.method[: -len(CRITIC_SUFFIX)]
        self.schedule = make_schedule(cfg.tau)

        self.envs = gym.make_vec(
            self.env_id,
            num_envs=cfg.n_envs,
            vectorization_mode="sync",
            vector_kwargs={"autoreset_mode": AutoresetMode.DISABLED},
        )
        obs_space, act_space = self.envs.single_observation_space, self.envs.single_action_space
        self.action_start = int(act_space.start)
        self.policy = GumbelPolicy(
            obs_space,
            act_space,
            net_arch=cfg.net_arch,
            activation=cfg.activation,
            estimator=self.estimator,
            tau=self.schedule(0),
            k=cfg.k,
        ).to(self.device)
        n_act = self.policy.n_actions
        self.critic = EnsembleQ(self.policy.obs_dim + n_act, cfg.critic_arch, cfg.critic_activation).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_params = list(self.policy.parameters())
        self.critic_params = list(self.critic.parameters())
        self.target_params = list(self.critic_target.parameters())
        self.actor_opt = torch.optim.Adam(self.actor_params, lr=cfg.actor_lr, foreach=True)
        self.critic_opt = torch.optim.Adam(self.critic_params, lr=cfg.critic_lr, foreach=True)
        self.buffer = ReplayBuffer(cfg.buffer_size, obs_space, self.device, stride=cfg.n_envs)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(self.seed)
        alpha, self.learn_alpha = initial_alpha(cfg.ent_coef)
        self.log_alpha = torch.tensor(math.log(alpha) if alpha > 0 else -math.inf, device=self.device)
        self.target_entropy = cfg.target_entropy * math.log(n_act)
        if self.learn_alpha:
            self.log_alpha.requires_grad_(True)
            self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.alpha_lr)
        self.eye = torch.eye(n_act, device=self.device)
        self.eye_obs = torch.eye(self.policy.obs_dim, device=self.device) if self.buffer.discrete else None
        self.n_updates = 0

        # Episode bookkeeping: per copy, the seed its episode was reset with and the actions taken since.
        self.episode_seeds = self._draw_seeds(cfg.n_envs)
        self.episode_actions: list[list[int]] = [[] for _ in range(cfg.n_envs)]
        self.episode_returns = np.zeros(cfg.n_envs)
        self.episode_lengths = np.zeros(cfg.n_envs, dtype=np.int64)
        self.recent_returns: deque[float] = deque(maxlen=100)
        self.episodes = 0
        self.obs, _ = self.envs.reset(seed=self.episode_seeds)

    def _draw_seeds(self, n: int) -> list[int]:
        return [int(s) for s in self.np_rng.integers(0, 2**31 - 1, size=n)]

    def _features(self, stored: torch.Tensor) -> torch.Tensor:
        """Network input (B, obs_dim) from buffer observations (indices for Discrete spaces, as obs_to_tensor)."""
        return self.eye_obs[stored] if self.buffer.discrete else stored

    # ---- acting --------------------------------------------------------------------------------------------
    def _act(self, random_phase: bool) -> np.ndarray:
        """Env actions for the current observations: uniform during ``learning_starts``, else a policy sample."""
        n = self.config.n_envs
        if random_phase:
            return self.np_rng.integers(0, self.policy.n_actions, size=n) + self.action_start
        features, _ = self.policy.obs_to_tensor(self.obs)
        with torch.no_grad():
            index = gumbel_max(self.policy(features), generator=self.generator, validate=False)
        return index.cpu().numpy().astype(np.int64) + self.action_start

    def _env_step(self, steps_so_far: int) -> int:
        """One vectorised step; stores every transition and resets the copies that finished. Returns n_envs."""
        actions = self._act(steps_so_far < self.config.learning_starts)
        next_obs, rewards, terminated, truncated, _ = self.envs.step(actions)
        done = np.logical_or(terminated, truncated)
        self.buffer.add(self.obs, actions - self.action_start, rewards, next_obs, terminated, done)
        for i, a in enumerate(actions):
            self.episode_actions[i].append(int(a))
        self.episode_returns += rewards
        self.episode_lengths += 1
        if done.any():
            self.recent_returns.extend(self.episode_returns[done].tolist())
            self.episodes += int(done.sum())
            self.episode_returns[done] = 0.0
            self.episode_lengths[done] = 0
            seeds = self._draw_seeds(int(done.sum()))
            full = list(self.episode_seeds)
            for i, s in zip(np.flatnonzero(done), seeds, strict=True):
                full[i] = s
                self.episode_actions[i] = []
            self.episode_seeds = full
            reset_obs, _ = self.envs.reset(seed=full, options={"reset_mask": done})
            next_obs = np.where(done.reshape(-1, *[1] * (np.ndim(next_obs) - 1)), reset_obs, next_obs)
        self.obs = next_obs
        return self.config.n_envs

    # ---- learning ------------------------------------------------------------------------------------------
    def _train_iteration(self) -> tuple[int, dict[str, float]]:
        cfg = self.config
        steps = 0
        for _ in range(cfg.train_freq):
            steps += self._env_step(self.num_env_steps + steps)
        total = self.num_env_steps + steps
        tau = self.schedule(total)
        self.policy.tau.fill_(tau)
        metrics: dict[str, float] = {"tau": tau}
        if total >= cfg.learning_starts and self.buffer.size >= cfg.batch_size:
            stats = [self._update(tau) for _ in range(cfg.gradient_steps)][-1]
            names = list(stats)
            values = torch.stack([stats[k] for k in names]).tolist()  # one host sync per iteration
            metrics.update(zip(names, values, strict=True))
        if self.recent_returns:
            metrics["ep_return_mean"] = float(np.mean(self.recent_returns))
        return steps, metrics

    def _clip(self, params: list[nn.Parameter]) -> None:
        if self.config.max_grad_norm > 0:
            nn.utils.clip_grad_norm_(params, self.config.max_grad_norm, foreach=True)

    def _update(self, tau: float) -> dict[str, torch.Tensor]:
        """One critic update, an actor update every ``policy_delay``, then the Polyak step of the targets."""
        cfg = self.config
        obs, action, reward, next_obs, terminated, discount = self.buffer.sample(
            cfg.batch_size, self.generator, cfg.n_step, cfg.gamma
        )
        f, f_next = self._features(obs), self._features(next_obs)
        n_act, batch = self.policy.n_actions, f.shape[0]

        with torch.no_grad():
            logits_next = self.policy(f_next)
            probs_next = torch.softmax(logits_next, -1)
            all_actions = self.eye.repeat(batch, 1)  # (B * n, n): every action for every next state
            q_next = self.critic_target(f_next.repeat_interleave(n_act, 0), all_actions).amin(0).view(batch, n_act)
            v_next = (probs_next * q_next).sum(-1)
            if cfg.soft_target:
                v_next = v_next + self.log_alpha.exp() * _entropy(logits_next)
            target = reward + (cfg.gamma if discount is None else discount) * (1.0 - terminated) * v_next
        q = self.critic(f, self.eye[action])
        critic_loss = 0.5 * (q - target).pow(2).mean(-1).sum()
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self._clip(self.critic_params)
        self.critic_opt.step()
        self.n_updates += 1
        stats = {"critic_loss": critic_loss.detach(), "q_mean": q.detach().mean()}

        if self.n_updates % cfg.policy_delay == 0:
            stats.update(self._actor_step(f, tau))
        with torch.no_grad():
            torch._foreach_lerp_(self.target_params, self.critic_params, cfg.polyak)
        return stats

    def _actor_step(self, features: torch.Tensor, tau: float) -> dict[str, torch.Tensor]:
        """Actor update: the policy's gradient flows only through the estimator's action (critic frozen)."""
        cfg = self.config
        for p in self.critic_params:
            p.requires_grad_(False)
        try:
            logits = self.policy(features)
            a = sample_action(logits, self.estimator, tau, k=cfg.k, generator=self.generator, validate=False)
            q = self.critic(features, a).amin(0)
            entropy = _entropy(logits)
            alpha = self.log_alpha.detach().exp()
            actor_loss = -(q + alpha * entropy).mean()
            self.actor_opt.zero_grad(set_to_none=True)
            actor_loss.backward()
        finally:
            for p in self.critic_params:
                p.requires_grad_(True)
        self._clip(self.actor_params)
        self.actor_opt.step()
        stats = {"actor_loss": actor_loss.detach(), "entropy": entropy.detach().mean(), "alpha": alpha}
        if self.learn_alpha:
            # d loss / d log_alpha = H - target: alpha shrinks while the entropy is above its target, grows below.
            alpha_loss = self.log_alpha * (entropy.detach().mean() - self.target_entropy)
            self.alpha_opt.zero_grad(set_to_none=True)
            alpha_loss.backward()
            self.alpha_opt.step()
        return stats

    # ---- checkpoints ---------------------------------------------------------------------------------------
    def _training_state(self) -> dict[str, Any]:
        return {
            "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "buffer": self.buffer.state_dict(),
            "generator": self.generator.get_state(),
            "n_updates": self.n_updates,
            "log_alpha": self.log_alpha.detach(),
            "alpha_opt": self.alpha_opt.state_dict() if self.learn_alpha else {},
            "episode_seeds": list(self.episode_seeds),
            "episode_actions": [list(a) for a in self.episode_actions],
            "episode_returns": self.episode_returns.tolist(),
            "episode_lengths": self.episode_lengths.tolist(),
            "recent_returns": list(self.recent_returns),
            "episodes": self.episodes,
            "obs": torch.as_tensor(np.asarray(self.obs)),
        }

    def _load_training_state(self, state: dict[str, Any]) -> None:
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.buffer.load_state_dict(state["buffer"])
        self.generator.set_state(state["generator"].cpu())
        self.n_updates = int(state["n_updates"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        if self.learn_alpha:
            self.alpha_opt.load_state_dict(state["alpha_opt"])
        self.episode_returns = np.asarray(state["episode_returns"], dtype=np.float64)
        self.episode_lengths = np.asarray(state["episode_lengths"], dtype=np.int64)
        self.recent_returns = deque(state["recent_returns"], maxlen=100)
        self.episodes = int(state["episodes"])
        self._replay_episodes(state["episode_seeds"], state["episode_actions"], state["obs"].cpu().numpy())

    def _replay_episodes(self, seeds: list[int], actions: list[list[int]], expected_obs: np.ndarray) -> None:
        """Restore each env copy to where the checkpoint left it: reset with its episode seed, replay its actions.

        Raises:
            ValueError: the replayed observations differ from the saved ones (an env that is not deterministic
                given its reset seed and actions cannot be resumed exactly).
        """
        obs, _ = self.envs.reset(seed=list(seeds))
        obs = np.array(obs, copy=True)
        for i, env in enumerate(self.envs.envs):
            for a in actions[i]:
                o, *_ = env.step(a)
                obs[i] = o
        if not np.array_equal(obs, expected_obs):
            raise ValueError(
                f"cannot resume {self.env_id!r} exactly: replaying the saved episode seeds and actions does not "
                "reproduce the saved observations (is the environment deterministic given its seed?)"
            )
        self.episode_seeds = list(seeds)
        self.episode_actions = [list(a) for a in actions]
        self.obs = obs

    def metadata(self) -> dict[str, Any]:
        meta = super().metadata()
        meta["estimator"] = self.estimator
        return meta

    def close(self) -> None:
        """Close the training environments."""
        self.envs.close()


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    """Exact entropy (nats) of ``Categorical(softmax(logits))`` along the last dimension."""
    logp = torch.log_softmax(logits, -1)
    return -(logp.exp() * logp).sum(-1)


__all__ = ["CriticAgent", "CriticConfig", "EnsembleQ", "ReplayBuffer"]
