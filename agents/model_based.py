"""Policy learning in a learned model of the environment: ``<estimator>-model`` and ``reinforce-model``.

For any Gymnasium environment with a ``Discrete`` action space and a ``Box`` or ``Discrete`` observation space. The
agent acts in the real environment, learns a differentiable model of it (``agents.world_model``: an MLP ensemble for
``Box`` observations, a categorical count model for ``Discrete`` ones) and trains the policy in imagination, with
the **same** SHAC window (``agents.pathwise.shac_window``) that trains the twin methods: the model implements the
``envs.DifferentiableEnv`` protocol. The estimator is the only difference between ``st-gumbel-model`` and its
siblings; ``reinforce-model`` trains the same actor in the same model by the score function (DreamerV3's choice for
discrete actions). One iteration (Dreamer / MBPO style):

1. **Act** ``train_freq`` vector steps in ``n_envs`` real environments: uniform actions for the first
   ``learning_starts`` env steps, then exact samples of the policy (Gumbel-Max). Store every transition in the
   replay buffer and in the model's statistics (normalisers or counts), and the reset observations as starts.
2. **Fit the model**: ``model_gradient_steps`` Adam steps of :func:`agents.world_model.ensemble_model_loss`, each
   member on its own random minibatch of ``model_batch_size`` replayed transitions (the count model is exact: its
   counts are already updated).
3. **Imagine** ``gradient_steps`` times: ``imagined_envs`` rollouts of ``H = imagination_horizon`` steps started
   from replayed real observations. With ``c_t`` the model's probability that the episode still runs after step
   ``t`` and ``w_t = prod_{j<t} c_j``:

   - pathwise actor: ``shac_window`` and ``shac_actor_loss``, ``J = sum_t gamma^t w_t r~_t + gamma^H w_H V(s_H)``
     with ``r~ = r + model_bonus * bonus`` (the exploration bonus, see ``agents.world_model``); the gradient flows
     through the estimator's actions, the model's dynamics, rewards and continuations. The loss is
     ``L = -mean_b J / H - alpha mean_{t,b} B(s_t)`` with the regulariser ``B(s) = mean_a log pi(a|s)`` (the
     log-barrier, see below; ``policy_regulariser="entropy"``: ``B = H(pi(.|s))``, SHAC's entropy term).
   - score-function actor (``reinforce-model``): the same window without a graph (hard sampled actions; nothing
     flows through the model), ``L = -mean_t w_t log pi(a_t | s_t) A_t - alpha mean_t B(s_t)`` with
     ``A_t = (G_t - V(s_t)) / max(1, P95(G) - P5(G))`` (DreamerV3's return normalisation; with the entropy as
     ``B`` it is weighted by ``w_t`` as the score term).
   - critic: ``V`` (an MLP for ``Box`` observations, a table for ``Discrete`` ones: see ``critic_arch``) regresses,
     ``critic_epochs`` full-batch Adam steps per window, the imagined TD(lambda) targets
     ``G_t = r~_t + gamma c_t ((1 - lambda) V(s_{t+1}) + lambda G_{t+1})`` (:func:`imagination_lambda_returns`,
     ``agents.returns.lambda_returns`` with a soft continuation), weighted by ``w_t``.

Entropy, the policy's regulariser and exploration, one generic setting (measured with ``st-gumbel-model``):

- The entropy weight ``alpha`` is learned (``ent_coef="auto"``, SAC's ``agents.critic.temperature_loss``) so that
  the imagined policy's entropy tracks ``target_entropy * log(n)``; ``reinforce-model`` uses the same weight. With
  a fixed weight the pathwise actor collapsed on ``gumbel_rl/FourRooms-11x11-v0``: with a table critic the
  one-step pathwise gradient is the exact ``Q(s, b)`` of every action, so the policy followed the (optimistic)
  values greedily, its entropy fell to ~0.01 within 3k real steps, and at a saturated softmax no estimator's
  gradient could move it again (0.01: greedy never reached the goal in 20k; 0.03: collapsed too; 0.1: near
  uniform, greedy 0.818 at 11k, under the 0.821 threshold). A fixed weight means something else on every reward
  scale and at every stage of learning; a target entropy means the same everywhere.
- What ``alpha`` weighs is the log-barrier ``mean_a log pi(a|s)`` (:func:`log_barrier`, ``policy_regulariser``),
  not the entropy (``alpha`` is still learned from the entropy). The entropy's gradient in a logit vanishes with
  that action's probability, and the policy is one network over all states: an action that it learns to avoid
  where it is catastrophic is turned off everywhere and can never come back. On ``CliffWalking-v1`` (-100 for a
  step off the edge, which runs along the start's row) the entropy-regularised policy put logits of -6 to -8 on
  "right" and "down" in every cell against +5 on "up" and "left", while the model's values said "right" along
  the edge and "down" into the goal (the model had seen both): the greedy policy never reached the goal (seed 0,
  unsolved at 9.2k real steps). The barrier's gradient ``1/n - pi(a|s)`` does not vanish (Agarwal et al. 2021,
  sec. 5.2): greedy -13 (solved) at 9k. Measured by the bench protocol (100-episode solve check every 512 /
  1,024 / 2,048 real steps), entropy vs barrier, real steps to solve: FourRooms-11x11 seeds 0-2 2,564 / 1,028,
  1,540 / 1,540, 1,028 / 1,028; Maze-16x16 seeds 0-2 14,852 / 4,612, 9,220 / 3,588, 17,412 / 3,588;
  CartPole-v1 seeds 0-2 6,148 / 4,100, 8,196 / 2,052, 2,052 / 6,148; Acrobot-v1 seeds 0-2 2,052 / 2,052, 4,100
  / 6,148, 8,196 / 4,100; FrozenLake-v1 seeds 0, 1 5,124 / 8,196, unsolved in 30k / 18,436; CliffWalking-v1
  seeds 0, 1: barrier 11,780, 10,756. (FrozenLake's threshold 0.70 is 94% of the optimum's 0.744 success: an
  entropy-regularised run of 40k steps settled on a greedy policy that succeeds 0.639 of the time, exact.)
- The exploration bonus is weighted in reward units (``model_bonus`` times the RMS of the random phase's
  rewards), as the critic family normalises its rewards. A bonus that is large against the rewards competes with
  the goal: reaching a goal ends the episode and with it the stream of bonuses, so the imagined optimum avoids the
  goal (learned alpha, bonus weight 0.1 raw = 10 step costs: FourRooms greedy -0.8 for 15k steps and training
  episodes stopped reaching the goal; 0.01 raw: FourRooms solved at 4k, Maze-16x16 unsolved in 15k; 0: FourRooms
  at 2k, Maze at 10.5k). The default 0.1 reward units is 0.001 on the gridworlds' -0.01 step cost, and unchanged
  (0.1) on CartPole's +1.

With these defaults, before the barrier (real env steps to solve by greedy 10-episode checks every 1,000
steps, 1,500 on the Maze, 2,000 on CartPole; seeds 0, 1, 2): FourRooms-11x11 4k, 3k, 1k; Maze-16x16 9k, 7.5k, 9k;
CartPole-v1 4k, 4k, 2k (with a fixed ``ent_coef`` 0.01: 2k, 18k, 14k); FrozenLake-v1 (slippery) 16k, 18k (seeds
0, 1); ``reinforce-model``: FourRooms 1k, Maze 9k (seed 0).

Wall-clock (cProfile of 1,000 real CartPole steps, one iteration = 4 real steps): fitting the model 34% (its
backward the most), the imagined window 33% and the actor's and critic's backward and Adam steps the rest. Timed
apart (CartPole, medians, one loaded core): the model's four fitting steps 31-47 ms, the 16-step window 32 ms
without a graph and 67 ms with the actor's backward, the critic's four epochs 13 ms. Most of it is flops of the
ensemble, which evaluates every member on every imagined row (for the disagreement bonus), and of its fitting:
one batched one-step window from all ``T * B`` imagined states (the same objective when ``actor_horizon`` is 1)
costs as much as the ``T`` graph-carrying steps (63 vs 67 ms), foreach Adam and gradient clipping gain nothing,
and a (64, 64) model fits in 27 ms instead of 47. The model takes an iteration's transitions in one update of its
statistics (not one per real step), and a model's ``reset_done`` returns the state untouched when nothing ended
(always, in a model). Taking 8 real steps per iteration with 128 imagined rollouts (the same imagined steps per
real step, half the updates) halves the seconds per real step but not the seconds to solve: FourRooms seeds 0-2
then needed 2,056, 2,568, 2,056 real steps (with the barrier and 4 / 64: 1,028, 1,540, 1,028), CartPole seeds
0-2 2,056, 4,104, 24,584.

Counting stays honest: ``time/total_timesteps`` counts real environment steps only; imagined steps are reported as
``train/imagined_steps`` (cumulative) and the seconds spent fitting the model and imagining as
``time/imagination_seconds`` (cumulative, part of ``time/train_seconds``).

Real environments: an ``agents.real_envs.SeededVectorEnv`` (autoreset disabled, one seed per episode; a checkpoint
keeps per copy the episode seed and the actions taken since, and ``load`` replays them, so resuming is exact). The
checkpoint also holds the model, the critic, the optimisers, the replay buffer and the generator.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from agents.base import Agent, Config, check_choice, check_fraction, check_layers, check_positive
from agents.critic import initial_alpha, reward_scale, temperature_loss
from agents.pathwise import shac_actor_loss, shac_window, value
from agents.real_envs import SeededVectorEnv
from agents.registry import register_method
from agents.replay import ReplayBuffer
from agents.world_model import CountModel, EnsembleModel, ensemble_model_loss
from gumbel_rl.estimators import PATHWISE_ESTIMATORS, Estimator
from gumbel_rl.gumbel import gumbel_max
from gumbel_rl.policy import ACTIVATIONS, mlp
from gumbel_rl.schedules import make_schedule

MODEL_SUFFIX = "-model"
MODEL_ESTIMATORS: tuple[str, ...] = (*PATHWISE_ESTIMATORS, Estimator.REINFORCE.value)
"""The estimators of the ``<estimator>-model`` methods: every pathwise one, and ``reinforce``."""
POLICY_REGULARISERS = ("log_barrier", "entropy")
"""The choices of ``ModelConfig.policy_regulariser``."""


@dataclass
class ModelConfig(Config):
    """Hyperparameters of the model-based methods (``<estimator>-model``), the same generic set for every env."""

    n_envs: int = 1
    """Real environment copies stepped together (one vectorised step = ``n_envs`` env steps)."""
    train_freq: int = 4
    """Vectorised real steps per iteration (each iteration then fits the model and updates actor and critic)."""
    learning_starts: int = 256
    """Real env steps of uniformly random actions before the policy acts and the updates start."""
    buffer_size: int = 100_000
    """Replay buffer capacity in real transitions."""
    model_ensemble: int = 5
    """Members of the MLP ensemble (``Box`` observations)."""
    model_arch: tuple[int, ...] = (128, 128)
    """Hidden layer sizes of each member and of the termination classifier (``Box`` observations)."""
    model_activation: str = "elu"
    """Activation of the model's networks (tanh, relu, elu, gelu)."""
    model_learning_rate: float = 1e-3
    """Adam learning rate of the model (``Box`` observations)."""
    model_batch_size: int = 256
    """Replayed transitions per member per model gradient step."""
    model_gradient_steps: int = 4
    """Model gradient steps per iteration (``Box`` observations; the count model is exact)."""
    model_prior: float = 0.1
    """Dirichlet pseudo-count of the categorical model on "stay put" for an untried (cell, action) pair."""
    model_bonus: float = 0.1
    """Weight of the exploration bonus in the imagined reward, in reward units (the RMS of the random phase's
    rewards, so that it means the same on a -0.01 and a -1 step cost): the count bonus ``1 / (N(s, a) + 1)`` of
    the categorical model, the ensemble's disagreement for ``Box`` observations. 0 turns exploration off."""
    imagined_envs: int = 64
    """Imagined rollouts per actor update, started from replayed real observations."""
    imagination_horizon: int = 16
    """Steps of each imagined rollout (the SHAC window ``H``)."""
    actor_horizon: int = 1
    """Truncated-backprop length of the actor's gradient inside the window (0: the whole window; see
    ``agents.pathwise``). 1: each imagined action is credited with ``r + gamma c V(s')`` through the model, the
    one-step lookahead; the critic still learns from the whole window. (Seed 0, 3,000 real steps, with an MLP critic
    on EmptyRoom: solved at 1,284 with 1, unsolved with 0; CartPole solved at 2,004 with 1.)"""
    gradient_steps: int = 1
    """Actor and critic updates (each on a fresh imagined window) per iteration."""
    gamma: float = 0.99
    """Discount factor in [0, 1)."""
    gae_lambda: float = 0.95
    """Lambda of the critic's imagined TD(lambda) targets."""
    learning_rate: float = 1e-3
    """Adam learning rate of the policy."""
    critic_learning_rate: float = 1e-3
    """Adam learning rate of the critic."""
    critic_arch: tuple[int, ...] = (64, 64)
    """Hidden layer sizes of the critic ``V`` for ``Box`` observations. For ``Discrete`` ones ``V`` is always a
    table (linear in the one-hot), because the model's state is a distribution over cells and the value of a
    distribution is the expectation of the cells' values: an MLP is not linear off the one-hots, so the pathwise
    gradient through ``V(dist')`` (its linearisation at the sampled next cell, in the direction of another
    action's next-cell distribution) would not be the difference of expected values."""
    critic_epochs: int = 4
    """Adam steps of the critic on each imagined window (full batch, the same targets)."""
    ent_coef: float | str = "auto"
    """Weight ``alpha`` of the policy's regulariser (``policy_regulariser``) in the actor loss (pathwise and score
    function alike): a number >= 0 (fixed; 0: none), ``"auto"`` (learned so that the imagined entropy tracks
    ``target_entropy``, starting at ``alpha = 0.1``; ``agents.critic.temperature_loss``) or
    ``"auto_<initial alpha>"``. A fixed weight collapsed FourRooms (see the module docstring)."""
    policy_regulariser: str = "log_barrier"
    """What ``alpha`` weighs in the actor loss (pathwise and score function alike): ``"log_barrier"``
    (:func:`log_barrier`, ``mean_a log pi(a|s)``) or ``"entropy"`` (``H(pi(.|s))``). Either way ``alpha`` is
    learned from the entropy (``target_entropy``). See the module docstring for why the barrier."""
    target_entropy: float = 0.5
    """Entropy the learned ``alpha`` aims at, as a fraction of ``log(n_actions)`` (the uniform policy's)."""
    ent_coef_learning_rate: float = 1e-2
    """Adam learning rate of ``log(alpha)`` when ``ent_coef`` is learned."""
    max_grad_norm: float = 1.0
    """Clip the policy's and the critic's gradient to this global L2 norm."""
    tau: Any = 1.0
    """Gumbel-Softmax temperature over real env steps: a number or a ``gumbel_rl.schedules`` spec."""
    gumbel_k: int = 10
    """Conditional Gumbel draws of the ``gumbel-rao`` estimator."""

    def validate(self) -> None:
        super().validate()
        counts = ("n_envs", "train_freq", "buffer_size", "model_ensemble", "model_batch_size", "imagined_envs")
        for name in (*counts, "imagination_horizon", "gradient_steps", "critic_epochs", "gumbel_k"):
            check_positive(name, getattr(self, name), integer=True)
        for name in ("learning_starts", "model_gradient_steps", "actor_horizon"):
            check_positive(name, getattr(self, name), integer=True, allow_zero=True)
        if self.actor_horizon > self.imagination_horizon:
            raise ValueError(
                f"hyperparameter actor_horizon must be between 0 (= imagination_horizon) and imagination_horizon "
                f"({self.imagination_horizon}), got {self.actor_horizon}"
            )
        check_layers("model_arch", self.model_arch, allow_empty=False)
        check_layers("critic_arch", self.critic_arch)
        check_choice("model_activation", self.model_activation, ACTIVATIONS)
        check_choice("policy_regulariser", self.policy_regulariser, POLICY_REGULARISERS)
        for name in ("model_learning_rate", "model_prior", "learning_rate", "critic_learning_rate", "max_grad_norm"):
            check_positive(name, getattr(self, name))
        check_positive("model_bonus", self.model_bonus, allow_zero=True)
        check_positive("ent_coef_learning_rate", self.ent_coef_learning_rate)
        check_fraction("target_entropy", self.target_entropy)
        try:
            initial_alpha(self.ent_coef)
        except ValueError as exc:
            raise ValueError(f"hyperparameter ent_coef: {exc}") from None
        check_fraction("gamma", self.gamma, closed_high=False)
        check_fraction("gae_lambda", self.gae_lambda)
        try:
            make_schedule(self.tau)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"hyperparameter tau: {exc}") from None


# ---- the losses ------------------------------------------------------------------------------------------------


def imagination_lambda_returns(
    rewards: torch.Tensor, next_values: torch.Tensor, continuation: torch.Tensor, gamma: float, lam: float
) -> torch.Tensor:
    """TD(lambda) targets of an imagined window with soft terminations (no gradient), (T, B) each:

    ``G_t = r_t + gamma c_t ((1 - lam) V(s_{t+1}) + lam G_{t+1})``, ``G_{T-1} = r_{T-1} + gamma c_{T-1} V(s_T)``,

    with ``c_t`` the probability that the episode still runs after step ``t``. With ``c`` in {0, 1} it is
    ``agents.returns.lambda_returns`` with ``terminated = done = (c == 0)``.
    """
    with torch.no_grad():
        out = torch.empty_like(rewards)
        nxt = next_values[-1]
        for t in range(rewards.shape[0] - 1, -1, -1):
            out[t] = rewards[t] + gamma * continuation[t] * ((1.0 - lam) * next_values[t] + lam * nxt)
            nxt = out[t]
    return out


def continuation_weights(continuation: torch.Tensor) -> torch.Tensor:
    """``w_t = prod_{j<t} c_j`` (``w_0 = 1``): the probability that the episode still runs at step ``t`` of a window,
    (T, B) -> (T, B), without gradient."""
    with torch.no_grad():
        ones = torch.ones_like(continuation[:1])
        return torch.cat([ones, continuation[:-1]]).cumprod(0)


def weighted_critic_loss(
    critic: nn.Module, obs: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """``mean w (V(obs) - G)^2`` over (N, obs_dim) observations, (N,) targets and weights (no gradient)."""
    return (weights * (value(critic, obs) - targets).pow(2)).mean()


def return_scale(returns: torch.Tensor) -> torch.Tensor:
    """DreamerV3's return scale ``max(1, P95(G) - P5(G))`` (percentiles over the whole batch), a scalar without
    gradient: dividing the advantages by it makes the entropy weight mean the same whatever the reward scale."""
    with torch.no_grad():
        q = torch.quantile(returns.flatten().float(), torch.tensor([0.05, 0.95], device=returns.device))
        return torch.clamp(q[1] - q[0], min=1.0)


def normalised_advantages(returns: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """DreamerV3's advantages ``(G - V) / return_scale(G)``, no gradient."""
    with torch.no_grad():
        return (returns - values) / return_scale(returns)


def log_barrier(logits: torch.Tensor) -> torch.Tensor:
    """``mean_s mean_a log pi(a | s)`` of (..., n) logits (a scalar with their graph): ``-KL(U || pi(.|s)) - log n``,
    the negated relative entropy from the uniform policy ``U`` (Agarwal et al. 2021, "On the theory of policy
    gradient methods", sec. 5.2). Its gradient in logit ``z_a`` is ``1/n - pi(a|s)``: unlike the entropy's
    (``-pi(a|s) (log pi(a|s) + H)``), it does not vanish as ``pi(a|s) -> 0``."""
    return torch.log_softmax(logits, -1).mean()


def reinforce_imagination_loss(
    logits: torch.Tensor, actions: torch.Tensor, advantages: torch.Tensor, weights: torch.Tensor, ent_coef: float
) -> torch.Tensor:
    """Score-function actor loss ``-mean_{t,b} w [log pi(a|s) A + ent_coef H(pi(.|s))]``.

    ``logits`` (T, B, n) with the policy's graph; ``actions`` (T, B, n) one-hot samples; ``advantages`` and
    ``weights`` (T, B) without gradient. Only ``logits`` receives a gradient: nothing flows through the model.
    """
    logp = torch.log_softmax(logits, -1)
    logp_a = (logp * actions).sum(-1)
    entropy = -(logp.exp() * logp).sum(-1)
    return -(weights * (logp_a * advantages + ent_coef * entropy)).mean()


# ---- the agent -------------------------------------------------------------------------------------------------


class ModelBasedAgent(Agent):
    """Acts in the real env, learns a model, trains the policy in imagination (see the module docstring).

    Attributes (beyond :class:`Agent`'s): ``model`` (an ``EnsembleModel`` or ``CountModel``), ``critic``,
    ``buffer`` (real transitions), ``generator`` (all torch randomness), ``imagined_steps`` and
    ``imagination_seconds`` (cumulative).
    """

    config_cls = ModelConfig
    config: ModelConfig

    def _setup(self) -> None:
        cfg = self.config
        estimator = self.method.removesuffix(MODEL_SUFFIX)
        if not self.method.endswith(MODEL_SUFFIX) or estimator not in MODEL_ESTIMATORS:
            valid = ", ".join(e + MODEL_SUFFIX for e in MODEL_ESTIMATORS)
            raise ValueError(f"unknown model-based method {self.method!r}; valid: {valid}")
        self.estimator = estimator
        self.pathwise = Estimator(estimator).pathwise
        self.schedule = make_schedule(cfg.tau)
        self.envs = SeededVectorEnv(self.env_id, cfg.n_envs, self.np_rng)
        obs_space, act_space = self.envs.observation_space, self.envs.action_space
        self.action_start = self.envs.action_start
        self.policy = self._make_policy(obs_space, act_space, self.estimator, self.schedule(0), cfg.gumbel_k)
        n_act, obs_dim = self.policy.n_actions, self.policy.obs_dim
        self.discrete = isinstance(obs_space, gym.spaces.Discrete)
        self.obs_start = int(obs_space.start) if self.discrete else 0
        self.model: CountModel | EnsembleModel
        if self.discrete:
            self.model = CountModel(obs_dim, n_act, cfg.model_prior, cfg.model_bonus, env_id=self.env_id)
        else:
            self.model = EnsembleModel(
                obs_dim, n_act, cfg.model_ensemble, cfg.model_arch, cfg.model_activation, cfg.model_bonus, self.env_id
            )
        self.model.to(self.device)
        self.model_params = list(self.model.parameters())
        self.model_opt = torch.optim.Adam(self.model_params, lr=cfg.model_learning_rate) if self.model_params else None
        # V starts at 0 everywhere (a random initial V would steer the one-step actor towards random cells).
        critic_arch = () if self.discrete else cfg.critic_arch
        self.critic = mlp(obs_dim, critic_arch, 1, cfg.activation, out_gain=0.0).to(self.device)
        self.actor_opt = torch.optim.Adam(self.policy.parameters(), lr=cfg.learning_rate)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_learning_rate)
        self.buffer = ReplayBuffer(cfg.buffer_size, obs_space, self.device, stride=cfg.n_envs)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(self.seed)
        self.eye = torch.eye(n_act, device=self.device)
        alpha, self.learn_alpha = initial_alpha(cfg.ent_coef)
        self.log_alpha = torch.tensor(math.log(alpha) if alpha > 0 else -math.inf, device=self.device)
        self.target_entropy = cfg.target_entropy * math.log(n_act)
        self.alpha_opt: torch.optim.Adam | None = None
        if self.learn_alpha:
            self.log_alpha.requires_grad_(True)
            self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.ent_coef_learning_rate)
        self.reward_unit = 0.0  # set when learning starts (0: not yet)
        self.imagined_steps = 0
        self.imagination_seconds = 0.0
        self.model.add_starts(self._obs_tensor(self.envs.reset()))

    def _obs_tensor(self, obs: Any) -> torch.Tensor:
        """Real observations as the model takes them: (N,) long cells or (N, obs_dim) float32."""
        if self.discrete:
            return torch.as_tensor(np.asarray(obs, dtype=np.int64) - self.obs_start, device=self.device)
        arr = np.asarray(obs, dtype=np.float32)
        return torch.as_tensor(arr.reshape(len(arr), -1), device=self.device)

    # ---- acting in the real environment --------------------------------------------------------------------
    def _act(self, random_phase: bool) -> np.ndarray:
        if random_phase:
            return self.np_rng.integers(0, self.policy.n_actions, size=self.config.n_envs) + self.action_start
        features, _ = self.policy.obs_to_tensor(self.envs.obs)
        with torch.no_grad():
            index = gumbel_max(self.policy(features), generator=self.generator, validate=False)
        return index.cpu().numpy().astype(np.int64) + self.action_start

    def _env_step(self, steps_so_far: int, pending: list[tuple[torch.Tensor, ...]]) -> int:
        """One vectorised real step: store the transitions in the buffer and in ``pending`` (for the model, which
        takes an iteration's transitions at once), reset finished copies."""
        t = self.envs.step(self._act(steps_so_far < self.config.learning_starts))
        index = t.actions - self.action_start
        self.buffer.add(t.obs, index, t.rewards, t.next_obs, t.terminated, t.done)
        pending.append(
            (
                self._obs_tensor(t.obs),
                torch.as_tensor(index, device=self.device),
                torch.as_tensor(np.asarray(t.rewards, dtype=np.float32), device=self.device),
                self._obs_tensor(t.next_obs),
                torch.as_tensor(np.asarray(t.terminated, dtype=np.float32), device=self.device),
            )
        )
        if t.done.any():  # the finished copies' new episodes start where their reset put them
            self.model.add_starts(self._obs_tensor(np.asarray(self.envs.obs)[t.done]))
        return self.config.n_envs

    # ---- learning ------------------------------------------------------------------------------------------
    def _train_iteration(self) -> tuple[int, dict[str, float]]:
        cfg = self.config
        steps = 0
        pending: list[tuple[torch.Tensor, ...]] = []
        for _ in range(cfg.train_freq):
            steps += self._env_step(self.num_env_steps + steps, pending)
        # The model's statistics (normalisers or counts) take the iteration's transitions in one update.
        self.model.add_transitions(*(torch.cat(parts) for parts in zip(*pending, strict=True)))
        total = self.num_env_steps + steps
        tau = float(self.schedule(total))
        self.policy.tau.fill_(tau)
        metrics: dict[str, float] = {"train/tau": tau}
        if total >= cfg.learning_starts:
            if self.reward_unit == 0.0:
                self._set_reward_unit(1.0 / reward_scale(self.buffer.reward[: self.buffer.size]))
            t0 = time.perf_counter()
            stats = self._fit_model()
            for _ in range(cfg.gradient_steps):
                stats.update(self._imagine_and_update(tau))
            metrics.update(
                {k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v) for k, v in stats.items()}
            )
            self.imagination_seconds += time.perf_counter() - t0
        metrics["train/imagined_steps"] = float(self.imagined_steps)
        metrics["time/imagination_seconds"] = self.imagination_seconds
        metrics.update(self.envs.metrics())
        return steps, metrics

    def _set_reward_unit(self, unit: float) -> None:
        """Fix the reward unit (the RMS of the random phase's rewards, 1.0 if they were all 0) and express the
        exploration bonus in it: ``bonus_coef = model_bonus * unit``."""
        self.reward_unit = unit
        self.model.bonus_coef = self.config.model_bonus * unit

    def _fit_model(self) -> dict[str, torch.Tensor]:
        """``model_gradient_steps`` Adam steps of the ensemble, each member on its own random minibatch."""
        cfg = self.config
        if self.model_opt is None or cfg.model_gradient_steps == 0 or not isinstance(self.model, EnsembleModel):
            return {}
        e, b = cfg.model_ensemble, cfg.model_batch_size
        stats: dict[str, torch.Tensor] = {}
        for _ in range(cfg.model_gradient_steps):
            s = self.buffer.sample(e * b, self.generator)
            obs, next_obs = s.obs.view(e, b, -1), s.next_obs.view(e, b, -1)
            loss, parts = ensemble_model_loss(
                self.model,
                obs,
                self.eye[s.action].view(e, b, -1),
                s.reward.view(e, b),
                next_obs,
                s.terminated.view(e, b),
            )
            self.model_opt.zero_grad(set_to_none=True)
            loss.backward()
            self.model_opt.step()
            stats = {"train/model_loss": loss.detach(), **{f"train/model_{k}": v for k, v in parts.items()}}
        return stats

    def _imagine_and_update(self, tau: float) -> dict[str, torch.Tensor]:
        """One imagined window from replayed real observations; one actor and one critic update."""
        cfg = self.config
        starts = self.buffer.sample(cfg.imagined_envs, self.generator).obs
        state = self.model.states_from(starts, self.generator)
        kw: dict[str, Any] = dict(
            horizon=cfg.imagination_horizon,
            actor_horizon=cfg.actor_horizon,
            gamma=cfg.gamma,
            tau=tau,
            estimator=self.estimator,
            generator=self.generator,
        )
        alpha = float(self.log_alpha.detach().exp())
        barrier = cfg.policy_regulariser == "log_barrier"
        if self.pathwise:
            entropy_grad = alpha > 0 and not barrier
            window = shac_window(self.policy, self.model, state, self.critic, entropy_grad=entropy_grad, **kw)
        else:
            with torch.no_grad():
                window = shac_window(self.policy, self.model, state, self.critic, **kw)
        assert window.continuation is not None and window.actions is not None
        targets = imagination_lambda_returns(
            window.rewards, window.next_values, window.continuation, cfg.gamma, cfg.gae_lambda
        )
        weights = continuation_weights(window.continuation)
        entropy_coef = 0.0 if barrier else alpha
        logits = self.policy(window.observations) if barrier or not self.pathwise else None
        if self.pathwise:
            actor_loss = shac_actor_loss(window, cfg.imagination_horizon, entropy_coef)
        else:
            assert logits is not None
            with torch.no_grad():
                values = value(self.critic, window.observations)
            advantages = normalised_advantages(targets, values)
            actor_loss = reinforce_imagination_loss(logits, window.actions, advantages, weights, entropy_coef)
        if barrier and alpha > 0:
            assert logits is not None
            actor_loss = actor_loss - alpha * log_barrier(logits)
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward(inputs=list(self.policy.parameters()))
        grad_norm = nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)
        self.actor_opt.step()
        entropy = window.entropy.detach() / cfg.imagination_horizon  # mean over the window's steps and rollouts
        if self.alpha_opt is not None:
            self.alpha_opt.zero_grad(set_to_none=True)
            temperature_loss(self.log_alpha, entropy, self.target_entropy).backward()
            self.alpha_opt.step()

        obs, targets, weights = window.observations.flatten(0, 1), targets.flatten(), weights.flatten()
        for _ in range(cfg.critic_epochs):
            loss_v = weighted_critic_loss(self.critic, obs, targets, weights)
            self.critic_opt.zero_grad(set_to_none=True)
            loss_v.backward()
            nn.utils.clip_grad_norm_(self.critic.parameters(), cfg.max_grad_norm)
            self.critic_opt.step()
        self.imagined_steps += cfg.imagined_envs * cfg.imagination_horizon
        return {
            "train/actor_loss": actor_loss.detach(),
            "train/critic_loss": loss_v.detach(),
            "train/grad_norm": grad_norm,
            "train/entropy": entropy,
            "train/ent_coef": torch.tensor(alpha),
            "train/imagined_reward": window.env_rewards.mean(),
            "train/continuation": window.continuation.mean(),
        }

    # ---- checkpoints ---------------------------------------------------------------------------------------
    def _training_state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "model_opt": self.model_opt.state_dict() if self.model_opt is not None else {},
            "critic": self.critic.state_dict(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "buffer": self.buffer.state_dict(),
            "generator": self.generator.get_state(),
            "log_alpha": self.log_alpha.detach(),
            "alpha_opt": self.alpha_opt.state_dict() if self.alpha_opt is not None else {},
            "reward_unit": self.reward_unit,
            "imagined_steps": self.imagined_steps,
            "imagination_seconds": self.imagination_seconds,
            "envs": self.envs.state_dict(),
        }

    def _load_training_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        if self.model_opt is not None:
            self.model_opt.load_state_dict(state["model_opt"])
        self.critic.load_state_dict(state["critic"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.buffer.load_state_dict(state["buffer"])
        self.generator.set_state(state["generator"].cpu())
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        if self.alpha_opt is not None:
            self.alpha_opt.load_state_dict(state["alpha_opt"])
        if float(state["reward_unit"]) > 0:
            self._set_reward_unit(float(state["reward_unit"]))
        self.imagined_steps = int(state["imagined_steps"])
        self.imagination_seconds = float(state["imagination_seconds"])
        self.envs.load_state_dict(state["envs"])  # raises ValueError if the replay does not reproduce them

    def metadata(self) -> dict[str, Any]:
        meta = super().metadata()
        meta["estimator"] = self.estimator
        meta["imagined_steps"] = self.imagined_steps
        meta["imagination_seconds"] = self.imagination_seconds
        return meta

    def close(self) -> None:
        """Close the real training environments (safe to call more than once)."""
        self.envs.close()


for _name in MODEL_ESTIMATORS:
    register_method(
        _name + MODEL_SUFFIX, f"{Estimator(_name).description}, in imagination through a learned model of the env"
    )(ModelBasedAgent)

__all__ = [
    "MODEL_ESTIMATORS",
    "ModelBasedAgent",
    "ModelConfig",
    "POLICY_REGULARISERS",
    "continuation_weights",
    "log_barrier",
    "imagination_lambda_returns",
    "normalised_advantages",
    "reinforce_imagination_loss",
    "return_scale",
    "weighted_critic_loss",
]
