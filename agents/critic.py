"""Pathwise policy gradients through a learned critic: an off-policy actor-critic for any Discrete-action env.

Methods ``<estimator>-critic`` (one per pathwise estimator: ``st-gumbel-critic``, ``reinmax-critic``, ...) learn
from real Gymnasium steps; no differentiable twin is needed. DDPG/TD3/SAC with the discrete action relaxed by a
Gumbel estimator. Per gradient step, on a replayed batch (``e_a``: the one-hot of action ``a``):

- Critic (:func:`soft_q_target`, :func:`critic_loss`): two MLPs ``Q_i(s, a)`` on ``[features(s), a]`` regress

      y = R + discount * (1 - terminated) * V_targ(s'),
      V_targ(s') = sum_a' pi(a'|s') min_i Q_targ_i(s', e_a') + alpha H(pi(.|s'))

  (SAC's soft value; the entropy term is dropped with ``soft_target=False``). The expectation over the next action
  is exact, a sum over the ``n`` actions, not a sampled next action. With ``n_step = 1``, ``R = r`` and
  ``discount = gamma``; with ``n_step > 1``, ``R`` sums up to that many discounted replayed rewards of the episode
  and ``discount = gamma^m`` for the ``m`` steps followed (``agents.replay``). ``Q_targ`` are Polyak averages of
  the critics (rate ``polyak``). Truncated transitions bootstrap; terminated ones do not.
- The bonus's value (``explore_bonus > 0``, ``episodic_bonus=False``; :func:`n_step_return`, :func:`untried_bonus`):
  two more members ``Q_int_i`` learn the count bonus ``b = beta / sqrt(N(s'))`` as a *continuing* task, each env
  copy followed across episode ends, and nothing terminal:

      y_int = sum_{k<m} gamma^k b_{t+k} + gamma^m V_int(s_{t+m}),
      V_int(s) = sum_a pi(a|s) [min_i Q_int_targ_i(s, e_a) + U(s, a)],   U(s, a) = optimism * beta / sqrt(N(s, a) + 1)

  (``s_{t+m}`` the observation the copy was reset to when the window ends on an episode's end, ``N(s, a)`` the
  tries of ``a`` in the cell of ``s``); the return's members then regress ``y`` with the stored rewards alone.
- Actor (:func:`pathwise_actor_loss`, the ``GumbelPolicy``): ``-min_i Q_i(s, a~) - alpha H(pi(.|s))`` with
  ``a~ = sample_action(logits, estimator, tau)``; with the bonus's value ``-[min_i Q_i(s, a~) + min_i Q_int_i(s, a~)
  + a~ . U(s, .)] - alpha H``. The critic is held fixed, so the policy's gradient comes only
  through the action ``a~`` (the estimator) and the exact categorical entropy ``H``. The temperature ``tau``
  follows a ``gumbel_rl.schedules`` schedule over env steps.
- Entropy weight ``alpha`` (``ent_coef``; :func:`temperature_loss`): fixed, or learned as in SAC so that ``H``
  tracks ``target_entropy * log(n)``. Without it the actor collapses onto one action within a few hundred updates
  (CartPole: the greedy policy then always pushes one way); at a saturated softmax every estimator's gradient
  vanishes, so the policy cannot recover, and the critic never sees the other action again.
- Acting: ``learning_starts`` uniformly random env steps, then exact samples of the policy (Gumbel-Max), a hard
  action in the real env for every estimator.

One generic set of defaults for every environment (issue 12). What it needed, measured with ``st-gumbel-critic``:

- Value propagation (``n_step=3``, ``polyak=0.05``, ``train_freq=1``): with one-step targets and ``polyak=0.005``
  Acrobot's ``Q`` was still -38 after 20k steps (its fixed point is about -100 at gamma 0.99), the action- and
  state-dependent parts (0.07 and 0.3) buried under the slowly filling offset. (With ``polyak=0.05`` and
  ``decoupled`` one-step targets solved Acrobot at 3k steps as well; see ``decoupled`` below.)
- Directed exploration (``explore_bonus``): where no episode reaches the goal the true ``Q`` *is* flat -- every
  Acrobot state is worth -100 under any policy that never swings up -- so no estimator can give the actor a
  signal, the entropy stays at ``log n`` and the learned alpha decays to 0 (1e-33 after 50k steps). With the
  value fixes alone 0 of 40 Acrobot episodes reached the goal in 20k steps. A count bonus ``beta / sqrt(N(s'))``
  (cells: Discrete states, or a SimHash of the observation) makes novel states worth visiting; with it Acrobot's
  goal was reached from the first thousand steps on.
- Rewards in one unit (``normalize_reward``): the bonus and the learning rates must mean the same on a -0.01 step
  cost (the gridworlds) and a -1 step cost (Acrobot), so rewards are divided by the RMS of the random phase's.
- A critic linear in the action (``critic_head="per_action"``): ``dQ/da`` is then exactly the action values, not
  the concat-MLP's linearisation around the sampled one-hot (FrozenLake-v1: greedy 0.0-0.1 after 20k steps with
  the concat critic, 0.5 after 12k with this one).
- ``soft_target=False``: with a learned alpha SAC's soft target ran away on CartPole, where episodes end on mistakes
  (see the field note).
- The bonus's value across episode ends (``episodic_bonus=False``): with the bonus added to the rewards, CliffWalking-v1
  (seed 0, 20k steps) never reached the goal: every training episode ran into the 1,000-step limit at a return of
  exactly -1000 (never the cliff, never the goal) and ``Q`` stayed positive (+0.5 to +8), because the bonus
  (0.04-0.1 per step in the normalised unit) outweighed the step cost (-0.032): living paid, and the goal's
  termination, which also ends every future bonus, was the worst action there. A bonus whose return is not cut by
  terminations (RND's non-episodic intrinsic return, Burda et al. 2019) removes that penalty; alone it still
  left 20 of 20 episodes at -1000 in 20k steps.
- Optimism for untried actions (``optimism``): the visit counts after 6k steps showed why -- the two cells next to
  the goal never entered (N = 0) beside cells visited 81 times. The bonus pays a transition only once it is stored,
  and the critic's value of an action never tried is a generalisation from the tried ones (there lower: ``Q_int``
  7.3 against 9.6 at visited cells), so the policy never tried "down" there. ``U(s, a)`` values an untried
  action at ``beta`` more than a well-tried one, exactly and per cell (MBIE-EB's bonus on the state-action count),
  in the actor's loss and in ``V_int``. With both: the goal first reached at 4-6k steps, 245 of the 249 episodes
  of the first 12k steps ended at it.

- Not a default yet -- an explorer apart from the evaluated policy (``decoupled=True``) with ``n_step=1``: with the two
  changes above CliffWalking-v1 and FrozenLake-v1 still failed (numbers below) because the evaluated greedy policy
  was the exploring one, maximising ``Q + Q_int + U``: in Cliff's unit a step costs 0.032 and the bonus's action
  gaps are larger, so the greedy path took a detour (-17). A second policy now acts on ``Q + Q_int + U`` while the
  evaluated one maximises the return's ``Q`` alone, bootstrapped from the greedy action (Q-learning; the
  decoupling of DEEP, Whitney et al. 2021, and DeRL, Schafer et al. 2022). With ``n_step=3`` this gave -17 (the
  explorer's falls into the cliff, replayed as 3-step returns, made the edge look dangerous); with ``n_step=1``
  -13, the optimum, at 12k steps (seed 0).

Measured with the defaults before the decoupling (``st-gumbel-critic``, one seed each unless stated, greedy = 20
greedy episodes; solved = the 100-episode check; short runs, not the suite's budgets), before -> after the bonus
changes:
CartPole-v1 seeds 0, 1: solved at 6k steps each (before: 10 of 10 seeds, median 8.2k); Acrobot-v1: solved at 3k
(-87.6; before -77 to -85 at 2.5k); gumbel_rl/FourRooms-11x11-v0: solved at 4k (0.832; before stuck at 0.81);
FrozenLake-v1: greedy 0.20 / 0.75 (100 episodes: 0.62) / 0.50 / 0.35 at 4k / 8k / 12k / 16k, not solved (threshold
0.70; before 0.5 at 12k); CliffWalking-v1: greedy -17 / -15 / -17 at 6k / 10k / 12k, not solved (threshold -13,
the optimum; before -1000). What remains on the last two: the greedy policy is the exploring one (the actor
maximises ``Q + Q_int + U``), and in Cliff's normalised unit a step costs 0.032 while the bonus's action gaps are
larger, so the two-step detour along the cliff's far side is not resolved; bootstrapping the return from the
greedy action (Q-learning's max, to value the evaluated policy) did not help (Cliff greedy -17 / -1000 at 10k /
12k, FrozenLake 0.30 at 16k) and a lower ``target_entropy`` (0.2) neither (FrozenLake 0.50, Cliff -1000 at 12k).
With ``decoupled=True, n_step=1`` (seed 0): CartPole-v1 solved at 8k; Acrobot-v1 at 3k (-98.4); FrozenLake-v1 at
8k (100 episodes: 0.71; 20-episode greedy 0.90 / 0.80 / 0.55 / 0.70 at 4k-16k); CliffWalking-v1 at 12k (-13);
gumbel_rl/FourRooms-11x11-v0 at 8k (0.832) -- but gumbel_rl/Maze-16x16-v0 reached its goal once in 12k steps
(greedy -2.24) where the defaults solved it at 12k (72 episodes to the goal), so these are not the defaults: the
one-step bonus values propagate too slowly along the maze's corridors: with the bonus's returns over 3 steps
(``bonus_n_step=3``, the return's over 1) Maze was solved at 12k (76 episodes to the goal) and CliffWalking-v1 at
6k (-13). These are the defaults: ``decoupled=True``, ``n_step=1``, ``bonus_n_step=3``. Measured with them
(first 100-episode solve, checked every 2k-4k steps): CartPole-v1 seeds 0, 1 at 8k (500, 494); Acrobot-v1 seed 0
at 8k (-80.9; -100.2 at 3k, just short); FrozenLake-v1 seed 0 at 16k (0.71), seed 1 not in 12k (greedy 0.55);
CliffWalking-v1 seed 0 at 6k (-13); gumbel_rl/FourRooms-11x11-v0 seed 0 at 4k (0.832); Maze seed 0 at 12k.

Environments: ``n_envs`` copies in an ``agents.real_envs.SeededVectorEnv`` (autoreset disabled, one seed per
episode), so every stored transition is a real (s, a, r, s') of one episode, with ``s'`` the true final
observation on termination or truncation, and ``Agent.load`` restores the environments exactly by replaying the
current episodes (see that module). The checkpoint also holds critics, targets, optimisers, the replay buffer (its
filled part, saved whole: large for image observations and big buffers) and the torch generator.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from agents.base import Agent, Config, check_bool, check_choice, check_fraction, check_layers, check_positive
from agents.real_envs import SeededVectorEnv
from agents.registry import register_method
from agents.replay import ReplayBuffer
from gumbel_rl.estimators import PATHWISE_ESTIMATORS, Estimator, sample_action
from gumbel_rl.gumbel import gumbel_max
from gumbel_rl.policy import ACTIVATIONS
from gumbel_rl.schedules import make_schedule

CRITIC_SUFFIX = "-critic"
CRITIC_HEADS = ("concat", "per_action")
MAX_HASH_BITS = 24
"""Largest ``hash_bits``: the count table has ``2^hash_bits`` entries (64 MiB of int32 at 24)."""


@dataclass
class CriticConfig(Config):
    """Hyperparameters of the critic methods (``<estimator>-critic``)."""

    n_envs: int = 1
    """Environment copies stepped together (one vectorised step = ``n_envs`` env steps)."""
    buffer_size: int = 100_000
    """Replay buffer capacity in transitions (oldest overwritten first)."""
    learning_starts: int = 1_000
    """Env steps of uniformly random actions before the policy acts and updates start."""
    batch_size: int = 128
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
    polyak: float = 0.05
    """Target critic update rate: ``target <- (1 - polyak) * target + polyak * critic`` after each critic update."""
    learning_rate: float = 1e-3
    """Adam learning rate of the policy (the actor)."""
    critic_learning_rate: float = 2e-3
    """Adam learning rate of the critics."""
    critic_arch: tuple[int, ...] = (128, 128)
    """Hidden layer sizes of each critic (at least one layer)."""
    critic_activation: str = "relu"
    """Activation of the critics (tanh, relu, elu, gelu)."""
    critic_head: str = "per_action"
    """How each critic sees the action: ``"concat"`` (``Q = MLP([s, a])``) or ``"per_action"`` (``Q = a . MLP(s)``,
    linear in the action, so the estimators' gradients see the exact action gaps; see ``EnsembleQ``)."""
    ent_coef: float | str = "auto"
    """Weight ``alpha`` of the exact policy entropy in the actor loss and the soft value target: a number >= 0
    (fixed; 0: none), ``"auto"`` (learned, SAC-style, so that the entropy tracks ``target_entropy``; starts at
    ``alpha = 0.1``) or ``"auto_<initial alpha>"``."""
    target_entropy: float = 0.5
    """Entropy the learned ``alpha`` aims at, as a fraction of ``log(n_actions)`` (the uniform policy's)."""
    soft_target: bool = False
    """Add ``alpha * H(pi(.|s'))`` to the value target (SAC's soft Q); False: the entropy only regularises the
    actor. With a learned alpha the soft target can run away where episodes end early on a mistake (CartPole):
    the failing action also loses the future entropy bonus, so Q's action gaps grow with alpha as fast as the
    actor's entropy term, raising alpha does not raise the entropy, and alpha grows without bound (CartPole seed 5:
    alpha 250 after 4k steps, 9e5 after 45k, Q ~ 1e7; the greedy policy oscillates between 130 and 460)."""
    ent_coef_learning_rate: float = 1e-2
    """Adam learning rate of ``log(alpha)`` when ``ent_coef`` is learned."""
    max_grad_norm: float = 10.0
    """Clip each network's gradient norm to this (0: no clipping)."""
    tau: Any = 1.0
    """Gumbel-Softmax temperature over env steps: a number (constant) or a ``gumbel_rl.schedules.make_schedule``
    mapping, e.g. ``{"kind": "linear", "tau0": 1.0, "tau_end": 0.5, "steps": 20000}``."""
    gumbel_k: int = 10
    """Conditional Gumbel draws of the ``gumbel-rao`` estimator."""
    normalize_reward: bool = True
    """Learn from ``r / RMS(r)``, the RMS of the rewards seen during ``learning_starts`` (fixed from then on; 1 if
    they were all 0), so that one set of defaults (learning rates, ``explore_bonus``) fits rewards of any unit: a
    -0.01 step cost and a -1 step cost both become -1. ``train/q_mean`` is then in these units."""
    explore_bonus: float = 1.0
    """Weight ``beta`` of a count-based exploration bonus ``beta / sqrt(N(s'))`` added to each replayed reward (in
    the normalised units), ``N`` the visits so far to the next state's cell (0: none). Recomputed at every
    sample, so it shrinks as the cell is visited. Cells: the observation itself for Discrete spaces, else a
    SimHash of ``hash_bits`` random hyperplanes through the standardised observation (Tang et al. 2017)."""
    episodic_bonus: bool = False
    """How the bonus's value is learned. False: by two more critic members of their own, ``Q_int``, whose target
    follows each env copy *through* episode ends into the next episode and never stops at a termination
    (``y_int = sum_k gamma^k b_{t+k} + gamma^m V_int(s_{t+m})``, ``s_{t+m}`` the reset observation after a
    termination), as RND's intrinsic returns; the actor maximises ``Q + Q_int``. True: the bonus is added to the
    replayed rewards and cut by terminations like them (one critic pair). See the module docstring for why."""
    optimism: float = 1.0
    """Weight of the optimism for untried actions, ``U(s, a) = optimism * beta / sqrt(N(s, a) + 1)`` with ``N(s, a)``
    the tries of action ``a`` in the cell of ``s`` (0: none): added to the bonus's action values in the actor's loss
    and in its target's next-state value (with ``episodic_bonus`` to the return's)."""
    bonus_n_step: int = 3
    """``n`` of the bonus's continuing n-step returns (0: ``n_step``)."""
    decoupled: bool = True
    """With the bonus's own value: act with a second policy, the explorer, that maximises ``Q + Q_int + U``,
    while the policy that is evaluated and saved maximises the return's ``Q`` alone, bootstrapped from the greedy
    action (``V(s') = max_a' min_i Q_targ_i(s', e_a')``, Q-learning, off-policy since the explorer acts); the
    learned alpha follows the explorer's entropy and weights both. False: one policy acts and is evaluated."""
    hash_bits: int = 16
    """Bits of the SimHash that groups Box observations into ``2^hash_bits`` cells for the visit counts."""

    def validate(self) -> None:
        super().validate()
        counts = ("n_envs", "buffer_size", "batch_size", "train_freq", "gradient_steps", "policy_delay", "n_step")
        for name in (*counts, "gumbel_k"):
            check_positive(name, getattr(self, name), integer=True)
        check_positive("learning_starts", self.learning_starts, integer=True, allow_zero=True)
        check_fraction("gamma", self.gamma)
        check_positive("polyak", self.polyak)
        check_fraction("polyak", self.polyak)
        for name in ("learning_rate", "critic_learning_rate", "ent_coef_learning_rate"):
            check_positive(name, getattr(self, name))
        try:
            initial_alpha(self.ent_coef)
        except ValueError as exc:
            raise ValueError(f"hyperparameter ent_coef: {exc}") from None
        check_fraction("target_entropy", self.target_entropy)
        check_bool("soft_target", self.soft_target)
        check_bool("normalize_reward", self.normalize_reward)
        check_bool("episodic_bonus", self.episodic_bonus)
        check_bool("decoupled", self.decoupled)
        check_positive("bonus_n_step", self.bonus_n_step, integer=True, allow_zero=True)
        check_positive("explore_bonus", self.explore_bonus, allow_zero=True)
        check_positive("optimism", self.optimism, allow_zero=True)
        check_positive("hash_bits", self.hash_bits, integer=True)
        if self.hash_bits > MAX_HASH_BITS:
            raise ValueError(f"hyperparameter hash_bits must be at most {MAX_HASH_BITS}, got {self.hash_bits!r}")
        check_positive("max_grad_norm", self.max_grad_norm, allow_zero=True)
        check_layers("critic_arch", self.critic_arch, allow_empty=False)
        check_choice("critic_activation", self.critic_activation, ACTIVATIONS)
        check_choice("critic_head", self.critic_head, CRITIC_HEADS)
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

    ``forward(features (B, obs_dim), action (B, n_actions)) -> (n, B)``, with one of two heads:

    - ``"concat"``: ``Q(s, a) = MLP([s, a])``, the action an input (DDPG's critic);
    - ``"per_action"``: ``Q(s, a) = a . MLP(s)``, one output per action (DQN's head), linear in ``a``. Then
      ``dQ/da_k = Q(s, e_k)`` exactly, so a straight-through or relaxed action's gradient sees the true action gaps,
      not a linearisation of the MLP around the sampled one-hot; a relaxed action is valued at its expectation.
    """

    def __init__(
        self, obs_dim: int, n_actions: int, hidden: tuple[int, ...], activation: str, n: int = 2, head: str = "concat"
    ) -> None:
        super().__init__()
        check_choice("critic_head", head, CRITIC_HEADS)
        self.per_action = head == "per_action"
        self.obs_dim, self.n_actions = obs_dim, n_actions
        sizes = [obs_dim, *hidden, n_actions] if self.per_action else [obs_dim + n_actions, *hidden, 1]
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
        if self.per_action:
            return (self.every_action(features) * action).sum(-1)
        if not features.is_floating_point():
            features = self._one_hot(features)
        return self._mlp(torch.cat([features, action], dim=-1).unsqueeze(0)).squeeze(-1)

    def every_action(self, features: torch.Tensor) -> torch.Tensor:
        """``Q_i(s_b, e_a)`` for every member, state and action at once: (n, B, n_actions). With the per-action head
        one pass of the MLP gives them all (each value exactly what ``forward`` gives for that one-hot action); with
        ``"concat"``, one pass per action."""
        if self.per_action:
            if features.is_floating_point():
                return self._mlp(features.unsqueeze(0))
            # Integer features are the indices of one-hot inputs (Discrete observations): the first layer is then
            # a row lookup, the same numbers as the matmul with the one-hot rows at a fraction of its cost.
            return self._mlp(self.weights[0].index_select(1, features) + self.biases[0], first=1)
        batch, n_act = features.shape[0], self.n_actions
        every = torch.eye(n_act, device=features.device).repeat(batch, 1)  # (B * n, n)
        return self(features.repeat_interleave(n_act, 0), every).view(-1, batch, n_act)

    def _one_hot(self, index: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(index, self.obs_dim).to(self.weights[0].dtype)

    def _mlp(self, x: torch.Tensor, first: int = 0) -> torch.Tensor:
        """Layers ``first:`` of every member on ``x`` ((1 or n, B, in) -> (n, B, out)); layer ``first - 1``'s
        pre-activation is ``x`` when ``first > 0``."""
        last = len(self.weights) - 1
        if first > 0:
            x = self.act(x)
        for i in range(first, last + 1):
            w, b = self.weights[i], self.biases[i]
            x = torch.baddbmm(b, x.expand(w.shape[0], -1, -1) if i == 0 else x, w)
            if i < last:
                x = self.act(x)
        return x


# ---- the losses ----------------------------------------------------------------------------------------------


def categorical_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Exact entropy (nats) of ``Categorical(softmax(logits))`` along the last dimension: (..., n) -> (...)."""
    logp = torch.log_softmax(logits, -1)
    return -(logp.exp() * logp).sum(-1)


@torch.no_grad()
def soft_q_target(
    critic_target: nn.Module,
    policy_logits_next: torch.Tensor,
    features_next: torch.Tensor,
    reward: torch.Tensor,
    discount: torch.Tensor,
    terminated: torch.Tensor,
    alpha: torch.Tensor,
    soft: bool,
) -> torch.Tensor:
    """The critics' regression target ``y = r + discount (1 - terminated) V_targ(s')`` (no gradient), with

    ``V_targ(s') = sum_a' pi(a'|s') min_i Q_targ_i(s', e_a') [+ alpha H(pi(.|s')) if soft]``,

    the expectation over the next action exact (every action evaluated). Shapes: ``critic_target(features (N, d),
    one-hot (N, n)) -> (members, N)``; ``policy_logits_next`` (B, n); ``features_next`` (B, d); ``reward``,
    ``discount``, ``terminated`` (B,); ``alpha`` a scalar tensor. Returns (B,).
    """
    v_next = policy_value(critic_target, policy_logits_next, features_next)
    if soft:
        v_next = v_next + alpha * categorical_entropy(policy_logits_next)
    return reward + discount * (1.0 - terminated) * v_next


@torch.no_grad()
def policy_value(
    critic: nn.Module,
    logits: torch.Tensor,
    features: torch.Tensor,
    members: slice = slice(None),
    extra: torch.Tensor | None = None,
    greedy: bool = False,
) -> torch.Tensor:
    """``V(s) = sum_a pi(a|s) min_{i in members} Q_i(s, e_a)`` (no gradient), every action evaluated: ``critic(features
    (N, d), one-hot (N, n)) -> (all members, N)``, ``logits`` (B, n), ``features`` (B, d); ``members`` selects the
    ensemble members minimised over; ``extra`` (B, n), if given, is added to the action values. ``greedy``: the
    greedy action's value ``max_a min_i Q_i(s, e_a)`` instead (Q-learning's; ``logits`` unused). Returns (B,)."""
    batch, n_act = logits.shape
    if isinstance(critic, EnsembleQ):
        q = critic.every_action(features)[members].amin(0)
    else:
        every_action = torch.eye(n_act, device=logits.device).repeat(batch, 1)  # (B * n, n)
        q = critic(features.repeat_interleave(n_act, 0), every_action)[members].amin(0).view(batch, n_act)
    if extra is not None:
        q = q + extra
    return q.amax(-1) if greedy else (torch.softmax(logits, -1) * q).sum(-1)


def critic_loss(
    critic: nn.Module, features: torch.Tensor, action_onehot: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The critics' TD loss ``sum_i 0.5 * mean_b (Q_i(s_b, a_b) - y_b)^2`` (each ensemble member ``i`` regresses the
    same target) and the values ``Q_i(s_b, a_b)`` (members, B), detached, for the statistics (no second forward).

    ``features`` (B, d), ``action_onehot`` (B, n), ``target`` (B,) from :func:`soft_q_target`.
    """
    q = critic(features, action_onehot)
    return 0.5 * (q - target).pow(2).mean(-1).sum(), q.detach()


def pathwise_actor_loss(
    critic: nn.Module,
    logits: torch.Tensor,
    features: torch.Tensor,
    estimator: str,
    tau: float,
    gumbel_k: int,
    generator: torch.Generator | None,
    alpha: torch.Tensor,
    streams: int = 1,
    action_bonus: torch.Tensor | None = None,
    stream_weights: tuple[float, ...] | None = None,
    every_action: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The actor's loss ``-mean_b [min_i Q_i(s_b, a~_b) + alpha H(pi(.|s_b))]``, ``a~ = sample_action(logits,
    estimator, tau)``, and the per-state entropy ``H`` (B,). With ``streams > 1`` the members split into that many
    equal consecutive groups (value streams: the return, the bonus) and ``min_i Q_i`` becomes the sum over groups
    of each group's minimum, weighted by ``stream_weights`` (one per stream) if given. ``action_bonus`` (B, n), if
    given, adds ``a~ . action_bonus`` (linear in the action, so its gradient is exactly ``action_bonus``).

    The critic is held fixed (evaluated with detached parameters: none of them receives a gradient), so the
    gradient reaches ``logits`` only through the estimator's action and the exact entropy. ``logits`` (B, n),
    ``features`` (B, d), ``alpha`` a scalar tensor (treated as a constant). ``every_action`` (members, B, n), if
    given, is the fixed critic's ``Q_i(s_b, e_a)`` already computed (``EnsembleQ.every_action``, detached) for a
    critic linear in the action (the per-action head): ``Q_i(s_b, a~_b) = every_action . a~`` then, the same numbers
    without evaluating the critic again (two actors on one batch share it).
    """
    action = sample_action(logits, estimator, tau, k=gumbel_k, generator=generator, validate=False)
    if every_action is not None:
        q = (every_action.detach() * action).sum(-1)
    else:
        fixed = {name: p.detach() for name, p in critic.named_parameters()}
        q = torch.func.functional_call(critic, fixed, (features, action))
    q = q.view(streams, -1, q.shape[-1]).amin(1)
    if stream_weights is not None:
        q = q * torch.tensor(stream_weights, dtype=q.dtype, device=q.device).unsqueeze(-1)
    q = q.sum(0)
    if action_bonus is not None:
        q = q + (action * action_bonus).sum(-1)
    h = categorical_entropy(logits)
    return -(q + alpha.detach() * h).mean(), h


def temperature_loss(log_alpha: torch.Tensor, entropy: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """SAC's temperature loss ``log_alpha * (mean H - target)``: its gradient ``H - target`` shrinks alpha while
    the entropy (B,) is above its target (nats) and grows it below. Only ``log_alpha`` receives a gradient."""
    return log_alpha * (entropy.detach().mean() - target_entropy)


def n_step_return(
    buffer: ReplayBuffer,
    slots: torch.Tensor,
    n_step: int,
    gamma: float,
    reward_fn: Callable[[torch.Tensor], torch.Tensor],
    continuing: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """n-step returns from the stored transitions ``slots`` (long, (B,)), each env copy followed for up to
    ``n_step`` transitions, ``R = sum_k gamma^k reward_fn(slot_{t+k})``; transitions not written yet stop it.

    Episodic (``continuing=False``): as ``ReplayBuffer.sample``, an episode's end stops it. Continuing: it goes on
    *across* episode ends (the copy's next stored transition after a reset starts its next episode), so nothing is
    terminal -- a return that is not cut by terminations, as RND's intrinsic one.

    Returns ``(R, discount, bootstrap observation, terminated)``, shapes (B,), (B,), one stored observation per row
    (as ``buffer.obs``), (B,): ``discount = gamma^m`` for the ``m`` transitions followed; the bootstrap observation
    is the next observation of the last one -- continuing, the observation the copy was reset to where that one
    ended its episode and the copy's next transition is stored (a terminal observation has no value of its own
    in a continuing task); ``terminated`` that of the last one (episodic) or all 0 (continuing)."""
    cap, stride = buffer.capacity, buffer.stride
    newer = (buffer.pos - 1 - slots) % cap  # transitions written after each slot (the ring's newest is pos - 1)
    reward = reward_fn(slots).clone()
    last, followed = slots, torch.ones(len(slots), device=slots.device)
    alive = torch.ones_like(slots, dtype=torch.bool) if continuing else ~buffer.done[slots]
    for k in range(1, n_step):
        alive = alive & (newer >= k * stride)
        j = (slots + k * stride) % cap
        reward = reward + (gamma**k) * reward_fn(j) * alive
        last = torch.where(alive, j, last)
        followed = followed + alive
        if not continuing:
            alive = alive & ~buffer.done[j]
    discount = torch.pow(torch.full_like(followed, gamma), followed)
    if not continuing:
        return reward, discount, buffer.next_obs[last], buffer.terminated[last]
    reset = buffer.done[last] & ((buffer.pos - 1 - last) % cap >= stride)
    shape = (-1,) + (1,) * (buffer.obs.dim() - 1)
    boot = torch.where(reset.view(shape), buffer.obs[(last + stride) % cap], buffer.next_obs[last])
    return reward, discount, boot, torch.zeros_like(discount)


# ---- exploration: reward scale and visit counts ------------------------------------------------------------


def reward_scale(rewards: torch.Tensor) -> float:
    """``1 / sqrt(mean r^2)`` of the rewards (any shape), or 1.0 when there are none or all are 0."""
    rms = rewards.double().pow(2).mean().sqrt().item() if rewards.numel() else 0.0
    return 1.0 / rms if rms > 0 else 1.0


def simhash(x: torch.Tensor, planes: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """SimHash cell of each row of ``x`` (B, d): bit ``i`` is ``planes_i . x + offsets_i > 0`` (``planes`` (k, d),
    ``offsets`` (k,)), the code ``sum_i bit_i 2^i``. Returns (B,) long in ``[0, 2^k)``. Nearby points share a cell
    unless a hyperplane separates them (Charikar 2002; Tang et al. 2017, "#Exploration")."""
    bits = (x @ planes.T + offsets > 0).long()
    return (bits << torch.arange(planes.shape[0], device=x.device)).sum(-1)


def untried_bonus(pair_counts: torch.Tensor, scale: float) -> torch.Tensor:
    """The optimism ``U(s, a) = scale / sqrt(N(s, a) + 1)`` of state-action visit counts (any shape): largest,
    ``scale``, for an action never tried in that cell, so that an untried action looks worth trying although no
    transition of it was ever stored (the critic's value of it is only a generalisation from the tried ones)."""
    return scale * (pair_counts.to(torch.float32) + 1.0).rsqrt()


def count_bonus(counts: torch.Tensor, beta: float) -> torch.Tensor:
    """The exploration bonus ``beta / sqrt(max(N, 1))`` of visit counts ``N`` (any shape): it shrinks as
    ``1 / sqrt(N)``, the width of a confidence interval after ``N`` samples (MBIE-EB, Strehl & Littman 2008)."""
    return beta * counts.clamp(min=1).to(torch.float32).rsqrt()


class VisitCounts:
    """Visit counts of observation cells, for :func:`count_bonus`.

    Observations come as the replay buffer stores them: long indices (B,) for a Discrete space of ``obs_dim``
    states (each its own cell), float rows (B, obs_dim) for a Box space. A Box observation is standardised with the mean
    and standard deviation of the observations given to :meth:`fit` (the random phase), then hashed by
    :func:`simhash` with ``bits`` hyperplanes of random unit directions and N(0, 1) offsets drawn from ``seed``.
    """

    def __init__(
        self, discrete: bool, obs_dim: int, bits: int, seed: int, device: torch.device, n_actions: int = 0
    ) -> None:
        self.discrete = discrete
        gen = torch.Generator().manual_seed(seed)
        planes = torch.randn(bits, obs_dim, generator=gen)
        self.planes = (planes / planes.norm(dim=1, keepdim=True)).to(device)
        self.offsets = torch.randn(bits, generator=gen).to(device)
        self.mean = torch.zeros(obs_dim, device=device)
        self.std = torch.ones(obs_dim, device=device)
        self.counts = torch.zeros(obs_dim if discrete else 2**bits, dtype=torch.int32, device=device)
        self.pairs = torch.zeros(len(self.counts), n_actions, dtype=torch.int32, device=device)
        """Visits of (cell, action) pairs (cells, n_actions), counted by :meth:`add_pairs` (none when 0 actions)."""

    def fit(self, obs: torch.Tensor) -> None:
        """Standardise later Box observations (N, obs_dim) by these ones' mean and std (floored at 1e-3)."""
        if not self.discrete and len(obs):
            self.mean = obs.mean(0)
            self.std = obs.std(0, correction=0).clamp(min=1e-3)

    def cells(self, obs: torch.Tensor) -> torch.Tensor:
        """The cell (long, (B,)) of each stored observation."""
        return obs if self.discrete else simhash((obs - self.mean) / self.std, self.planes, self.offsets)

    def add(self, obs: torch.Tensor) -> None:
        """Count one visit to each observation's cell."""
        self.counts.index_add_(0, self.cells(obs), torch.ones(len(obs), dtype=torch.int32, device=obs.device))

    def add_pairs(self, obs: torch.Tensor, actions: torch.Tensor) -> None:
        """Count one try of each action (long, (B,), from 0) in its observation's cell."""
        flat = self.cells(obs) * self.pairs.shape[1] + actions
        ones = torch.ones(len(actions), dtype=torch.int32, device=actions.device)
        self.pairs.view(-1).index_add_(0, flat, ones)

    def pair_counts(self, obs: torch.Tensor) -> torch.Tensor:
        """``N(cell(s), a)`` for every action of each observation: (B, n_actions) int32."""
        return self.pairs[self.cells(obs)]

    def bonus(self, obs: torch.Tensor, beta: float) -> torch.Tensor:
        """:func:`count_bonus` of each observation's cell (B,)."""
        return count_bonus(self.counts[self.cells(obs)], beta)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean, "std": self.std, "counts": self.counts, "pairs": self.pairs}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for key in ("mean", "std", "counts", "pairs"):
            setattr(self, key, state[key].to(self.counts.device))


# ---- the agent -------------------------------------------------------------------------------------------------


class CriticAgent(Agent):
    """Off-policy actor-critic whose actor learns through ``sample_action`` into a learned ``Q(s, a)``.

    The estimator is the method name without ``-critic``. See the module docstring for the algorithm.
    """

    config_cls = CriticConfig
    config: CriticConfig

    def _setup(self) -> None:
        cfg = self.config
        estimator = self.method.removesuffix(CRITIC_SUFFIX)
        if not self.method.endswith(CRITIC_SUFFIX) or estimator not in PATHWISE_ESTIMATORS:
            valid = ", ".join(e + CRITIC_SUFFIX for e in PATHWISE_ESTIMATORS)
            raise ValueError(f"unknown critic method {self.method!r}; valid: {valid}")
        self.estimator = estimator
        self.schedule = make_schedule(cfg.tau)

        self.envs = SeededVectorEnv(self.env_id, cfg.n_envs, self.np_rng)
        obs_space, act_space = self.envs.observation_space, self.envs.action_space
        self.action_start = self.envs.action_start
        self.policy = self._make_policy(obs_space, act_space, self.estimator, self.schedule(0), cfg.gumbel_k)
        n_act = self.policy.n_actions
        # Value streams: the return (members 0, 1) and, with a continuing bonus, the bonus's value (members 2, 3).
        self.streams = 2 if cfg.explore_bonus > 0 and not cfg.episodic_bonus else 1
        self.critic = EnsembleQ(
            self.policy.obs_dim, n_act, cfg.critic_arch, cfg.critic_activation, n=2 * self.streams, head=cfg.critic_head
        ).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_params = list(self.policy.parameters())
        self.critic_params = list(self.critic.parameters())
        self.target_params = list(self.critic_target.parameters())
        self.actor_opt = torch.optim.Adam(self.actor_params, lr=cfg.learning_rate, foreach=True)
        self.critic_opt = torch.optim.Adam(self.critic_params, lr=cfg.critic_learning_rate, foreach=True)
        self.buffer = ReplayBuffer(cfg.buffer_size, obs_space, self.device, stride=cfg.n_envs)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(self.seed)
        alpha, self.learn_alpha = initial_alpha(cfg.ent_coef)
        self.log_alpha = torch.tensor(math.log(alpha) if alpha > 0 else -math.inf, device=self.device)
        self.target_entropy = cfg.target_entropy * math.log(n_act)
        if self.learn_alpha:
            self.log_alpha.requires_grad_(True)
            self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.ent_coef_learning_rate)
        self.eye = torch.eye(n_act, device=self.device)
        self.eye_obs = torch.eye(self.policy.obs_dim, device=self.device) if self.buffer.discrete else None
        self.n_updates = 0
        # Fixed when learning starts, from what the random phase saw: the reward unit, the observation scale.
        self.statistics_fixed = False
        self.reward_scale = 1.0
        self.visits: VisitCounts | None = None
        if cfg.explore_bonus > 0:
            self.visits = VisitCounts(
                self.buffer.discrete, self.policy.obs_dim, cfg.hash_bits, self.seed, self.device, n_act
            )
        self.explorer = None  # the acting policy when decoupled (see CriticConfig.decoupled)
        if cfg.decoupled and self.streams == 2:
            self.explorer = self._make_policy(obs_space, act_space, self.estimator, self.schedule(0), cfg.gumbel_k)
            self.explorer_params = list(self.explorer.parameters())
            self.explorer_opt = torch.optim.Adam(self.explorer_params, lr=cfg.learning_rate, foreach=True)
        self.envs.reset()

    def _features(self, stored: torch.Tensor) -> torch.Tensor:
        """Network input (B, obs_dim) from buffer observations (indices for Discrete spaces, as obs_to_tensor)."""
        return self.eye_obs[stored] if self.eye_obs is not None else stored

    def _critic_input(self, stored: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """What the critics take for buffer observations ``stored`` whose policy input is ``features``: the
        indices themselves for Discrete spaces (``EnsembleQ`` looks up its first layer's rows), else the features."""
        return stored if self.eye_obs is not None else features

    # ---- acting --------------------------------------------------------------------------------------------
    def _act(self, random_phase: bool) -> np.ndarray:
        """Env actions for the current observations: uniform during ``learning_starts``, else a policy sample."""
        if random_phase:
            return self.np_rng.integers(0, self.policy.n_actions, size=self.config.n_envs) + self.action_start
        features, _ = self.policy.obs_to_tensor(self.envs.obs)
        with torch.no_grad():
            actor = self.explorer if self.explorer is not None else self.policy
            index = gumbel_max(actor(features), generator=self.generator, validate=False)
        return index.cpu().numpy().astype(np.int64) + self.action_start

    def _env_step(self, steps_so_far: int) -> int:
        """One vectorised step; stores every transition and resets the copies that finished. Returns n_envs."""
        t = self.envs.step(self._act(steps_so_far < self.config.learning_starts))
        slots = self.buffer.add(t.obs, t.actions - self.action_start, t.rewards, t.next_obs, t.terminated, t.done)
        if self.visits is not None and self.statistics_fixed:
            self.visits.add(self.buffer.next_obs[slots])
            self.visits.add_pairs(self.buffer.obs[slots], self.buffer.action[slots])
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
        if self.explorer is not None:
            self.explorer.tau.fill_(tau)
        metrics: dict[str, float] = {"train/tau": tau}
        if total >= cfg.learning_starts and not self.statistics_fixed:
            self._fix_statistics()
        if total >= cfg.learning_starts and self.buffer.size >= cfg.batch_size:
            stats = [self._update(tau) for _ in range(cfg.gradient_steps)][-1]
            values = torch.stack(list(stats.values())).tolist()  # one host sync per iteration
            metrics.update(zip(stats, values, strict=True))
        metrics.update(self.envs.metrics())
        return steps, metrics

    def _fix_statistics(self) -> None:
        """At the end of the random phase: the reward unit and, with the bonus, the observation scale and the
        visit counts of everything stored so far; from then on each env step counts its next observation."""
        n = self.buffer.size
        if self.config.normalize_reward:
            self.reward_scale = reward_scale(self.buffer.reward[:n])
        if self.visits is not None:
            self.visits.fit(self.buffer.next_obs[:n])
            self.visits.add(self.buffer.next_obs[:n])
            self.visits.add_pairs(self.buffer.obs[:n], self.buffer.action[:n])
        self.statistics_fixed = True

    def _reward(self, slots: torch.Tensor) -> torch.Tensor:
        """The reward learned from (B,): the stored one in the normalised unit, plus the exploration bonus when it
        shares the return's value (``episodic_bonus``)."""
        reward = self.buffer.reward[slots] * self.reward_scale
        if self.visits is not None and self.streams == 1:
            reward = reward + self._bonus(slots)
        return reward

    def _optimism(self, obs: torch.Tensor) -> torch.Tensor | None:
        """The optimism term ``U(s, .)`` (B, n_actions) of stored observations, or None without one."""
        if self.visits is None or self.config.optimism == 0:
            return None
        return untried_bonus(self.visits.pair_counts(obs), self.config.optimism * self.config.explore_bonus)

    def _bonus(self, slots: torch.Tensor) -> torch.Tensor:
        """The exploration bonus of the stored transitions ``slots`` (B,), from their next observation's count."""
        assert self.visits is not None
        return self.visits.bonus(self.buffer.next_obs[slots], self.config.explore_bonus)

    def _step(self, opt: torch.optim.Optimizer, loss: torch.Tensor, params: list[nn.Parameter]) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.max_grad_norm > 0:
            nn.utils.clip_grad_norm_(params, self.config.max_grad_norm, foreach=True)
        opt.step()

    def _update(self, tau: float) -> dict[str, torch.Tensor]:
        """One critic update, an actor (and alpha) update every ``policy_delay``, then the Polyak step."""
        cfg = self.config
        plain = self.visits is None and self.reward_scale == 1.0
        if self.streams == 1:
            batch = self.buffer.sample(
                cfg.batch_size, self.generator, cfg.n_step, cfg.gamma, None if plain else self._reward
            )
            obs, action = batch.obs, batch.action
            r, discount, next_obs, terminated = batch.reward, batch.discount, batch.next_obs, batch.terminated
        else:
            slots = torch.randint(self.buffer.size, (cfg.batch_size,), device=self.device, generator=self.generator)
            obs, action = self.buffer.obs[slots], self.buffer.action[slots]
            r, discount, next_obs, terminated = n_step_return(
                self.buffer, slots, cfg.n_step, cfg.gamma, self._reward, continuing=False
            )
        f, f_next = self._features(obs), self._features(next_obs)
        # The critics take Discrete observations as indices (a row lookup, see EnsembleQ), the policy as one-hots.
        c, c_next = self._critic_input(obs, f), self._critic_input(next_obs, f_next)
        alpha = self.log_alpha.detach().exp()

        with torch.no_grad():
            logits_next = self.policy(f_next)
        target = self.critic_target
        if self.streams == 1:
            y = soft_q_target(target, logits_next, c_next, r, discount, terminated, alpha, cfg.soft_target)
        else:  # the return's members regress y, the bonus's members their continuing target
            ext = slice(0, 2)
            v_next = policy_value(target, logits_next, c_next, ext, greedy=self.explorer is not None)
            if cfg.soft_target:
                v_next = v_next + alpha * categorical_entropy(logits_next)
            y_ext = r + discount * (1.0 - terminated) * v_next
            r_int, discount_int, boot, _ = n_step_return(
                self.buffer, slots, cfg.bonus_n_step or cfg.n_step, cfg.gamma, self._bonus, continuing=True
            )
            f_boot = self._features(boot)
            with torch.no_grad():
                behaviour = self.explorer if self.explorer is not None else self.policy
                v_int = policy_value(
                    target, behaviour(f_boot), self._critic_input(boot, f_boot), slice(2, 4), self._optimism(boot)
                )
            y_int = r_int + discount_int * v_int
            y = torch.stack([y_ext, y_ext, y_int, y_int])
        loss_q, q = critic_loss(self.critic, c, self.eye[action], y)
        self._step(self.critic_opt, loss_q, self.critic_params)
        self.n_updates += 1
        stats = {"train/critic_loss": loss_q.detach(), "train/q_mean": q[:2].mean()}
        if self.visits is not None:
            stats["train/explore_bonus"] = self.visits.bonus(next_obs, cfg.explore_bonus).mean()
        if self.streams == 2:
            stats["train/q_bonus_mean"] = q[2:].mean()

        if self.n_updates % cfg.policy_delay == 0:
            q_all = None  # the updated critic's values of every action, once for both actors (per-action head)
            if self.critic.per_action:
                with torch.no_grad():
                    q_all = self.critic.every_action(c)
            args = (c, self.estimator, tau, cfg.gumbel_k, self.generator, alpha, self.streams)
            if self.explorer is None:
                loss_pi, h = pathwise_actor_loss(
                    self.critic, self.policy(f), *args, self._optimism(obs), every_action=q_all
                )
                self._step(self.actor_opt, loss_pi, self.actor_params)
            else:  # the evaluated policy on the return alone, the explorer on return, bonus and optimism
                loss_eval, _ = pathwise_actor_loss(self.critic, self.policy(f), *args, None, (1.0, 0.0), q_all)
                self._step(self.actor_opt, loss_eval, self.actor_params)
                loss_pi, h = pathwise_actor_loss(
                    self.critic, self.explorer(f), *args, self._optimism(obs), every_action=q_all
                )
                self._step(self.explorer_opt, loss_pi, self.explorer_params)
            stats.update(
                {"train/actor_loss": loss_pi.detach(), "train/entropy": h.detach().mean(), "train/ent_coef": alpha}
            )
            if self.learn_alpha:
                self.alpha_opt.zero_grad(set_to_none=True)
                temperature_loss(self.log_alpha, h, self.target_entropy).backward()
                self.alpha_opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(self.target_params, self.critic_params, cfg.polyak)
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
            "envs": self.envs.state_dict(),
            "statistics_fixed": self.statistics_fixed,
            "reward_scale": self.reward_scale,
            "visits": self.visits.state_dict() if self.visits is not None else {},
            "explorer": self.explorer.state_dict() if self.explorer is not None else {},
            "explorer_opt": self.explorer_opt.state_dict() if self.explorer is not None else {},
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
        self.statistics_fixed, self.reward_scale = bool(state["statistics_fixed"]), float(state["reward_scale"])
        if self.visits is not None:
            self.visits.load_state_dict(state["visits"])
        if self.explorer is not None:
            self.explorer.load_state_dict(state["explorer"])
            self.explorer_opt.load_state_dict(state["explorer_opt"])
        self.envs.load_state_dict(state["envs"])  # raises ValueError if the replay does not reproduce them

    def metadata(self) -> dict[str, Any]:
        meta = super().metadata()
        meta["estimator"] = self.estimator
        return meta

    def close(self) -> None:
        """Close the training environments (safe to call more than once)."""
        self.envs.close()


for _name in PATHWISE_ESTIMATORS:
    register_method(_name + CRITIC_SUFFIX, f"{Estimator(_name).description}, through a learned critic Q(s, a)")(
        CriticAgent
    )

__all__ = [
    "CriticAgent",
    "CriticConfig",
    "EnsembleQ",
    "VisitCounts",
    "categorical_entropy",
    "count_bonus",
    "untried_bonus",
    "critic_loss",
    "initial_alpha",
    "n_step_return",
    "pathwise_actor_loss",
    "policy_value",
    "reward_scale",
    "simhash",
    "soft_q_target",
    "temperature_loss",
]
