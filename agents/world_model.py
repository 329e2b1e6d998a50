"""Learned, differentiable models of an environment, with the ``envs.DifferentiableEnv`` protocol of the twins.

A pathwise method (``agents.pathwise.shac_window``) trains a policy through any differentiable environment; these
models are learned from real transitions, so that the same code trains through an environment nobody
re-implemented. Two models, chosen by the observation space:

- :class:`EnsembleModel` (``Box`` observations): ``E`` MLPs, each mapping ``(normalised o, a)`` to the normalised
  change of observation ``o' - o`` and the reward, plus one classifier of termination on the next observation.
  Inputs and targets are normalised with running statistics of the real transitions (:class:`RunningNorm`).
  Imagined states are deterministic predictions (CartPole and Acrobot are deterministic). Each imagined rollout
  follows **one member**, drawn at its start (``ModelState.member``): a member is one coherent hypothesis about
  the dynamics, whereas the members' mean is a blur that none of them predicts and hides their disagreement
  (PETS's "TS-inf" propagation; MBPO draws per step). The disagreement is used instead as the exploration bonus.
- :class:`CountModel` (``Discrete`` observations): the maximum-likelihood categorical model with a Dirichlet prior,
  ``P(s' | s, a) = (N(s, a, s') + prior [s' = s]) / (N(s, a) + prior)`` (an unseen pair "stays put"), expected
  rewards ``R(s, a)`` and termination probabilities ``T(s, a, s')`` from the same counts. The state is a
  distribution over cells, as ``envs.GridWorldTwin``'s: a one-hot start, then soft wherever the model (or a soft
  action) is uncertain; the policy sees the distribution, which is the one-hot of the env's observation for a
  certain cell.

Termination. A model cannot know that an episode ended; it predicts the probability that it still runs,
``continuation(state)`` (Dreamer's continue flag), and ``step`` never reports ``terminated``: the pathwise code
weights every later reward and the closing value by the product of continuations. The categorical model removes
the terminating mass and renormalises, so ``dist`` is the distribution of the cell given that the episode runs and
``continuation`` is the mass that stayed. Neither model knows the time limit (``max_episode_steps`` is None):
imagined rollouts are short windows started from replayed real states.

Exploration (``bonus_coef``; ``training_reward = reward + bonus_coef * bonus``). Sparse rewards (the mazes,
FrozenLake's goal, Acrobot's goal) are found by luck under a policy that only exploits a model. Both models add an
intrinsic reward that is large where the model is ignorant and shrinks as data arrives, and it is differentiable in
the action, so the pathwise gradient itself steers the policy towards the unknown:

- counts: ``bonus(s, a) = 1 / (N(s, a) + 1)`` (MBIE-EB's count bonus, Strehl and Littman 2008, decaying as
  ``1/N`` rather than ``1/sqrt(N)``), together with the "stay put" prior an R-max-like optimism: an untried
  action looks like a state that pays the bonus again and again. Counts are exact for a table, so no
  approximation is needed;
- ensemble: ``bonus = mean_dims std_members(normalised predicted change)``, the members' disagreement (Pathak et
  al. 2019, "Self-supervised exploration via disagreement"; Sekar et al. 2020): members trained on different
  minibatches agree where data is dense and disagree away from it. Counts have no analogue on a continuum.

Losses are pure functions: :func:`ensemble_model_loss` (MSE on normalised change and reward, BCE on termination)
and :func:`categorical_model_loss` (the negative log-likelihood of transitions under the categorical model, what the
counts minimise).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from gumbel_rl.policy import ACTIVATIONS, mlp

STD_FLOOR = 1e-3
"""Smallest standard deviation a normaliser divides by (a constant feature, e.g. a reward of always 1)."""


def _rows_where(
    done: torch.Tensor, fresh: tuple[torch.Tensor, ...], state: tuple[torch.Tensor, ...]
) -> list[torch.Tensor]:
    """Field by field, the rows of ``fresh`` where ``done`` ((B,) bool) and those of ``state`` elsewhere."""
    return [torch.where(done.view(-1, *[1] * (f.dim() - 1)), n, f) for f, n in zip(state, fresh, strict=True)]


# ---- normalisation ---------------------------------------------------------------------------------------------


class RunningNorm(nn.Module):
    """Running mean and variance of vectors (the parallel update of Chan et al.), kept as buffers (checkpointed).

    ``update(x)`` takes (N, dim); ``normalise(x) = (x - mean) / max(std, STD_FLOOR)``; ``denormalise`` inverts it.
    Before the first update the mean is 0 and the standard deviation 1.
    """

    mean: torch.Tensor
    var: torch.Tensor
    count: torch.Tensor

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("var", torch.ones(dim))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, self.mean.shape[0]).to(self.mean.dtype)
        n = x.shape[0]
        if n == 0:
            return
        batch_mean, batch_var = x.mean(0), x.var(0, unbiased=False)
        total = float(self.count) + n
        w = n / total
        delta = batch_mean - self.mean
        var = self.var if float(self.count) > 0 else torch.zeros_like(self.var)
        self.var.copy_(var * (1 - w) + batch_var * w + delta.pow(2) * w * (1 - w))
        self.mean.add_(delta * w)
        self.count.fill_(total)

    @property
    def std(self) -> torch.Tensor:
        return self.var.sqrt().clamp_min(STD_FLOOR)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def denormalise(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean


# ---- the MLP ensemble (Box observations) -------------------------------------------------------------------------


class ModelState(NamedTuple):
    """Batched state of an imagined rollout in an :class:`EnsembleModel`.

    Attributes:
        obs: (B, obs_dim) the (predicted) observation, floating, differentiable.
        t: (B,) long, steps since the rollout started.
        cont: (B,) probability that the episode still runs in this state given that it ran one step before (1 at
            a start).
        member: (B,) long, the ensemble member this rollout follows.
        bonus: (B,) the members' disagreement about the step that led here (0 at a start).
    """

    obs: torch.Tensor
    t: torch.Tensor
    cont: torch.Tensor
    member: torch.Tensor
    bonus: torch.Tensor


class EnsembleMLP(nn.Module):
    """``n`` independent MLPs evaluated together, one batched matmul per layer: (n, B, in) -> (n, B, out).

    Weights initialised per member as ``nn.Linear`` does; the output layer scaled by 0.1 (small initial
    predictions of normalised targets)."""

    def __init__(self, n: int, in_dim: int, hidden: tuple[int, ...], out_dim: int, activation: str) -> None:
        super().__init__()
        sizes = [in_dim, *hidden, out_dim]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            bound = 1.0 / math.sqrt(fan_in)
            scale = 0.1 if i == len(sizes) - 2 else 1.0
            self.weights.append(nn.Parameter(torch.empty(n, fan_in, fan_out).uniform_(-bound, bound) * scale))
            self.biases.append(nn.Parameter(torch.zeros(n, 1, fan_out)))
        self.act = ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = torch.baddbmm(b, x, w)
            if i < last:
                x = self.act(x)
        return x


class EnsembleModel(nn.Module):
    """A learned model of an environment with ``Box`` observations; a ``DifferentiableEnv``.

    Args:
        obs_dim: length of an observation; n_actions: number of discrete actions.
        ensemble: number of members ``E``; hidden: hidden layer sizes of each member (and of the termination
            classifier); activation: a name of ``gumbel_rl.policy.ACTIVATIONS``.
        bonus_coef: weight of the disagreement bonus in :meth:`training_reward` (0: none).
        env_id: the id it models (informational); starts: capacity of the ring of real start observations that
            :meth:`reset` draws from.

    Shapes: actions are (B, n_actions) one-hot or soft; ``step`` evaluates every member (for the bonus) and keeps
    each row's own member's prediction.
    """

    max_episode_steps: int | None = None

    def __init__(
        self,
        obs_dim: int,
        n_actions: int,
        ensemble: int = 5,
        hidden: tuple[int, ...] = (128, 128),
        activation: str = "elu",
        bonus_coef: float = 0.0,
        env_id: str = "",
        starts: int = 1024,
    ) -> None:
        super().__init__()
        self.env_id, self.obs_dim, self.n_actions = env_id, int(obs_dim), int(n_actions)
        self.ensemble, self.bonus_coef = int(ensemble), float(bonus_coef)
        self.members = EnsembleMLP(self.ensemble, obs_dim + n_actions, tuple(hidden), obs_dim + 1, activation)
        self.termination = mlp(obs_dim, tuple(hidden), 1, activation)
        self.obs_norm = RunningNorm(obs_dim)
        self.delta_norm = RunningNorm(obs_dim)
        self.reward_norm = RunningNorm(1)
        self.register_buffer("start_obs", torch.zeros(starts, obs_dim))
        self.register_buffer("start_count", torch.zeros((), dtype=torch.long))

    @property
    def device(self) -> torch.device:
        return self.start_obs.device

    # ---- data --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def add_transitions(
        self,
        obs: torch.Tensor,
        action: torch.Tensor,
        reward: torch.Tensor,
        next_obs: torch.Tensor,
        terminated: torch.Tensor,
    ) -> None:
        """Update the normalisers with real transitions: obs, next_obs (N, obs_dim); action (N,) long; reward,
        terminated (N,). (The weights learn from replayed batches through :func:`ensemble_model_loss`.)"""
        self.obs_norm.update(obs)
        self.delta_norm.update(next_obs - obs)
        self.reward_norm.update(reward.reshape(-1, 1))

    @torch.no_grad()
    def add_starts(self, obs: torch.Tensor) -> None:
        """Remember real start observations (N, obs_dim) for :meth:`reset` (a ring: the oldest are overwritten)."""
        cap = self.start_obs.shape[0]
        for row in obs.reshape(-1, self.obs_dim):
            self.start_obs[int(self.start_count) % cap] = row
            self.start_count += 1

    # ---- predictions -------------------------------------------------------------------------------------
    def predict(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every member's normalised prediction for (B, obs_dim) observations and (B, n_actions) actions:
        ``(delta_n (E, B, obs_dim), reward_n (E, B))``."""
        x = torch.cat([self.obs_norm.normalise(obs), action.to(obs.dtype)], -1)
        out = self.members(x.unsqueeze(0).expand(self.ensemble, -1, -1))
        return out[..., :-1], out[..., -1]

    def termination_logit(self, obs: torch.Tensor) -> torch.Tensor:
        """Logit of "the episode ended on entering ``obs``", (B, obs_dim) -> (B,)."""
        logit: torch.Tensor = self.termination(self.obs_norm.normalise(obs)).squeeze(-1)
        return logit

    def disagreement(self, delta_n: torch.Tensor) -> torch.Tensor:
        """The exploration bonus: mean over dimensions of the members' standard deviation of the normalised
        predicted change, (E, B, obs_dim) -> (B,)."""
        return delta_n.std(0, unbiased=False).mean(-1)

    # ---- DifferentiableEnv -------------------------------------------------------------------------------
    def _starting(self, obs: torch.Tensor, generator: torch.Generator | None) -> ModelState:
        batch = obs.shape[0]
        member = torch.randint(self.ensemble, (batch,), generator=generator, device=self.device)
        zeros = torch.zeros(batch, dtype=obs.dtype, device=self.device)
        t = torch.zeros(batch, dtype=torch.long, device=self.device)
        return ModelState(obs, t, torch.ones_like(zeros), member, zeros)

    def states_from(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> ModelState:
        """Rollout starts at given real observations (B, obs_dim), each with a member drawn from ``generator``."""
        return self._starting(obs.to(self.device, torch.float32), generator)

    def reset(self, batch: int, generator: torch.Generator | None = None) -> ModelState:
        """Starts drawn uniformly from the remembered real start observations (zeros before any was added)."""
        n = max(1, min(int(self.start_count), self.start_obs.shape[0]))
        idx = torch.randint(n, (batch,), generator=generator, device=self.device)
        return self._starting(self.start_obs[idx], generator)

    def reset_done(self, state: ModelState, done: torch.Tensor, generator: torch.Generator | None = None) -> ModelState:
        if not bool(done.any()):  # always so inside ``shac_window``: ``step`` never reports an ended episode
            return state
        fresh = self.reset(state.obs.shape[0], generator)
        return ModelState(*_rows_where(done, fresh, state))

    def step(
        self, state: ModelState, action: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[ModelState, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The predicted next state of each row's member, its reward, and (never) terminated/truncated flags."""
        delta_n, reward_n = self.predict(state.obs, action)
        rows = torch.arange(state.obs.shape[0], device=self.device)
        delta = self.delta_norm.denormalise(delta_n[state.member, rows])
        reward = self.reward_norm.denormalise(reward_n[state.member, rows].unsqueeze(-1)).squeeze(-1)
        next_obs = state.obs + delta
        cont = torch.sigmoid(-self.termination_logit(next_obs))
        bonus = self.disagreement(delta_n)
        never = torch.zeros(state.obs.shape[0], dtype=torch.bool, device=self.device)
        return ModelState(next_obs, state.t + 1, cont, state.member, bonus), reward, never, never

    def observe(self, state: ModelState) -> torch.Tensor:
        return state.obs

    def continuation(self, state: ModelState) -> torch.Tensor:
        """The predicted probability that the episode still runs in ``state`` (B,)."""
        return state.cont

    def training_reward(
        self, state: ModelState, action: torch.Tensor, next_state: ModelState, reward: torch.Tensor
    ) -> torch.Tensor:
        """The predicted reward plus ``bonus_coef`` times the members' disagreement about this step."""
        return reward + self.bonus_coef * next_state.bonus


def ensemble_model_loss(
    model: EnsembleModel,
    obs: torch.Tensor,
    action: torch.Tensor,
    reward: torch.Tensor,
    next_obs: torch.Tensor,
    terminated: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The model's loss on real transitions, each member on its own minibatch.

    ``L = mean (delta_n - (o' - o)_n)^2 + mean (r_n - r'_n)^2 + BCE(termination_logit(o'), terminated)``, with
    ``_n`` the running normalisation: every member ``e`` regresses its rows ``[e]``.

    Args:
        obs, next_obs: (E, B, obs_dim); action: (E, B, n_actions) one-hot; reward, terminated: (E, B) floating.
    Returns:
        the scalar loss and its three terms (detached): ``dynamics``, ``reward``, ``termination``.
    """
    x = torch.cat([model.obs_norm.normalise(obs), action], -1)
    out = model.members(x)
    target_delta = model.delta_norm.normalise(next_obs - obs)
    target_reward = model.reward_norm.normalise(reward.unsqueeze(-1)).squeeze(-1)
    dynamics = (out[..., :-1] - target_delta).pow(2).mean()
    rew = (out[..., -1] - target_reward).pow(2).mean()
    term = F.binary_cross_entropy_with_logits(
        model.termination_logit(next_obs.reshape(-1, model.obs_dim)), terminated.reshape(-1)
    )
    stats = {"dynamics": dynamics.detach(), "reward": rew.detach(), "termination": term.detach()}
    return dynamics + rew + term, stats


# ---- the categorical model (Discrete observations) ---------------------------------------------------------------


class CellState(NamedTuple):
    """Batched state of an imagined rollout in a :class:`CountModel`.

    Attributes:
        dist: (B, n_cells) distribution of the cell given that the episode still runs.
        t: (B,) long, steps since the rollout started.
        cont: (B,) probability that the episode still runs given that it ran one step before (1 at a start).
        bonus: (B,) expected count bonus ``1 / (N(s, a) + 1)`` of the step that led here (0 at a start).
    """

    dist: torch.Tensor
    t: torch.Tensor
    cont: torch.Tensor
    bonus: torch.Tensor


class CountModel(nn.Module):
    """The categorical model of an environment with ``Discrete(n_cells)`` observations; a ``DifferentiableEnv``.

    Counts (buffers, so checkpointed): ``N[s, a, s']`` transitions, ``term[s, a, s']`` of them terminated,
    ``reward_sum[s, a]``, ``start[s]`` real episode starts. See the module docstring for the estimates.

    Args:
        n_cells, n_actions: the spaces' sizes; prior: Dirichlet pseudo-count > 0 on "stay put";
        bonus_coef: weight of the count bonus in :meth:`training_reward`; env_id: informational.
    """

    max_episode_steps: int | None = None

    def __init__(
        self, n_cells: int, n_actions: int, prior: float = 0.1, bonus_coef: float = 0.0, env_id: str = ""
    ) -> None:
        super().__init__()
        self.env_id, self.obs_dim, self.n_actions = env_id, int(n_cells), int(n_actions)
        self.prior, self.bonus_coef = float(prior), float(bonus_coef)
        s, a = self.obs_dim, self.n_actions
        self.register_buffer("counts", torch.zeros(s, a, s))
        self.register_buffer("term_counts", torch.zeros(s, a, s))
        self.register_buffer("reward_sum", torch.zeros(s, a))
        self.register_buffer("start", torch.zeros(s))
        self._cache: tuple[torch.Tensor, ...] | None = None

    @property
    def device(self) -> torch.device:
        return self.counts.device

    # ---- data --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def add_transitions(
        self,
        obs: torch.Tensor,
        action: torch.Tensor,
        reward: torch.Tensor,
        next_obs: torch.Tensor,
        terminated: torch.Tensor,
    ) -> None:
        """Count real transitions: obs, next_obs (N,) long cell indices; action (N,) long; reward, terminated (N,)."""
        s, a, s2 = obs.long(), action.long(), next_obs.long()
        self.counts.index_put_((s, a, s2), torch.ones_like(reward, dtype=self.counts.dtype), accumulate=True)
        self.term_counts.index_put_((s, a, s2), terminated.to(self.counts.dtype), accumulate=True)
        self.reward_sum.index_put_((s, a), reward.to(self.counts.dtype), accumulate=True)
        self._cache = None

    @torch.no_grad()
    def add_starts(self, obs: torch.Tensor) -> None:
        """Count real start cells (N,) long."""
        self.start.index_put_((obs.long(),), torch.ones(obs.shape[0], device=self.device), accumulate=True)

    def load_state_dict(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self._cache = None
        return super().load_state_dict(*args, **kwargs)

    # ---- estimates ---------------------------------------------------------------------------------------
    def visits(self) -> torch.Tensor:
        """``N(s, a)``, (n_cells, n_actions)."""
        return self.counts.sum(-1)

    def transition_probs(self) -> torch.Tensor:
        """``P(s' | s, a)`` (n_cells, n_actions, n_cells): counts plus ``prior`` on staying in ``s``."""
        stay = torch.eye(self.obs_dim, device=self.device)[:, None, :] * self.prior
        total = self.counts + stay
        return total / total.sum(-1, keepdim=True)

    def termination_probs(self) -> torch.Tensor:
        """``T(s, a, s')``: the fraction of observed ``s -a-> s'`` transitions that terminated (0 where unseen)."""
        return self.term_counts / self.counts.clamp_min(1.0)

    def expected_reward(self) -> torch.Tensor:
        """``R(s, a)``: the mean observed reward of the pair (0 where unseen), (n_cells, n_actions)."""
        return self.reward_sum / self.visits().clamp_min(1.0)

    def count_bonus(self) -> torch.Tensor:
        """``1 / (N(s, a) + 1)``, (n_cells, n_actions): 1 for an untried pair, shrinking with visits."""
        return (self.visits() + 1.0).reciprocal()

    def _tables(self) -> tuple[torch.Tensor, ...]:
        if self._cache is None:
            p = self.transition_probs()
            self._cache = (p * (1.0 - self.termination_probs()), self.expected_reward(), self.count_bonus())
        return self._cache

    # ---- DifferentiableEnv -------------------------------------------------------------------------------
    def states_from(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> CellState:
        """Rollout starts at given real cells (B,) long (one-hot distributions)."""
        dist = F.one_hot(obs.long().to(self.device), self.obs_dim).float()
        batch = dist.shape[0]
        zeros = torch.zeros(batch, device=self.device)
        return CellState(dist, torch.zeros(batch, dtype=torch.long, device=self.device), zeros + 1.0, zeros)

    def reset(self, batch: int, generator: torch.Generator | None = None) -> CellState:
        """Start cells drawn from the observed start frequencies (uniform before any start was counted)."""
        weights = self.start if float(self.start.sum()) > 0 else torch.ones_like(self.start)
        cells = torch.multinomial(weights, batch, replacement=True, generator=generator)
        return self.states_from(cells)

    def reset_done(self, state: CellState, done: torch.Tensor, generator: torch.Generator | None = None) -> CellState:
        if not bool(done.any()):  # always so inside ``shac_window``: ``step`` never reports an ended episode
            return state
        fresh = self.reset(state.dist.shape[0], generator)
        return CellState(*_rows_where(done, fresh, state))

    def step(
        self, state: CellState, action: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[CellState, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Expected step under the model: with ``w[s, a] = dist[s] action[a]``, ``reward = sum w R``, the running
        mass ``m[s'] = sum_{s, a} w P (1 - T)``, ``cont = sum m``, ``dist' = m / cont``; never terminated."""
        p_live, reward_table, bonus_table = self._tables()
        w = state.dist.unsqueeze(-1) * action.to(state.dist.dtype).unsqueeze(1)  # (B, S, A)
        flat = w.flatten(1)
        live = flat @ p_live.flatten(0, 1)  # (B, S)
        cont = live.sum(-1)
        dist = live / cont.clamp_min(1e-6).unsqueeze(-1)
        reward = flat @ reward_table.flatten()
        bonus = flat @ bonus_table.flatten()
        never = torch.zeros(dist.shape[0], dtype=torch.bool, device=self.device)
        return CellState(dist, state.t + 1, cont, bonus), reward, never, never

    def observe(self, state: CellState) -> torch.Tensor:
        return state.dist

    def continuation(self, state: CellState) -> torch.Tensor:
        """The model's probability that the episode still runs in ``state`` (B,)."""
        return state.cont

    def training_reward(
        self, state: CellState, action: torch.Tensor, next_state: CellState, reward: torch.Tensor
    ) -> torch.Tensor:
        """The expected reward plus ``bonus_coef`` times the expected count bonus of this step."""
        return reward + self.bonus_coef * next_state.bonus


def categorical_model_loss(
    model: CountModel, obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor
) -> torch.Tensor:
    """Mean negative log-likelihood ``-log P(s' | s, a)`` of transitions (each (N,) long) under the model: what the
    counts minimise (with ``prior`` -> 0 they are its maximiser)."""
    p = model.transition_probs()[obs.long(), action.long(), next_obs.long()]
    return -p.clamp_min(1e-12).log().mean()


__all__ = [
    "CellState",
    "CountModel",
    "EnsembleMLP",
    "EnsembleModel",
    "ModelState",
    "RunningNorm",
    "categorical_model_loss",
    "ensemble_model_loss",
]
