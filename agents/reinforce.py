"""REINFORCE: the score-function policy gradient with a learned value baseline (Williams 1992).

The policy gradient theorem with a baseline ``b(s) = V(s)`` (Williams 1992; Sutton and Barto, eq. 13.11):

    grad J = E[ grad log pi(a_t | s_t) * A_t ],        A_t = G_t - V(s_t)

The action is an exact categorical sample that carries no gradient (``sample_action(logits, "reinforce")``), the
environment is never differentiated, and the gradient flows through ``log pi`` of the stored actions only
(``GumbelCategorical.log_prob``). One iteration collects a rollout of ``T = n_steps`` steps of ``B = n_envs``
copies and makes one Adam step (gradient-norm clipped at ``max_grad_norm``) on

    L = L_pi + vf_coef * L_V - ent_coef * H

    L_pi = -mean_t( log pi(a_t | s_t) * A_t )           (:func:`reinforce_loss`, the score-function term)
    L_V  =  mean_t( (V(s_t) - G_t)^2 )                    (:func:`value_loss`, the baseline's regression)
    H    =  mean_t( entropy(pi(. | s_t)) )

(:func:`reinforce_with_baseline_loss`), every mean over the valid steps of the rollout. ``G_t`` are the
TD(lambda) returns of ``agents.returns.lambda_returns``: discounted returns-to-go within the rollout,
bootstrapped with ``V`` of the observation a step led to at the rollout's end and at truncation (time limit),
never at termination (``done = terminated | truncated`` ends the sum). ``gae_lambda=1`` (the default) gives the
plain bootstrapped Monte-Carlo returns, ``gae_lambda < 1`` GAE(lambda). ``A_t`` is normalised over the rollout's
valid steps (zero mean, unit variance) by default.

Rollouts are of the same kind as the pathwise methods', so that comparisons are at equal env steps (every
transition counts as one):

- ``rollout="twin"``: the batched torch twin (``envs.make_differentiable``, used only through the
  ``envs.DifferentiableEnv`` protocol), ``n_envs`` copies for ``n_steps`` steps, stepped under
  ``torch.no_grad()`` with hard one-hot actions; finished copies are re-drawn with ``twin.reset_done``;
- ``rollout="gym"``: Gymnasium's ``SyncVectorEnv`` (``gymnasium.make_vec``) with its default ``NEXT_STEP``
  autoreset: the ``step`` after a terminated/truncated one only resets that copy (reward 0, action ignored), so it
  is masked out of the loss -- neither a transition nor an env step. The step before one is always done, so
  nothing propagates across it in ``G_t``;
- ``rollout="auto"`` (default): the twin where ``env_id`` has one, else gym.

Training reward: the environment's own reward in both modes (the twins return Gymnasium's reward: 1 per step for
CartPole -- no shaping -- and the gridworld's step cost / goal / trap rewards). ``rollout/ep_rew_mean`` is the mean
return of the last 100 finished training episodes (``agents.episodes.EpisodeReturns``).

Resume: a twin-rollout agent resumes bit for bit (the twin's batched state, the generator and the episode returns
are in the checkpoint). Gymnasium environments are not snapshotted: a resumed gym-rollout agent resets its copies
(with a fresh seed) and so starts new episodes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch
from torch import nn

import envs
from agents.base import Agent, Config, check_bool, check_choice, check_fraction, check_positive
from agents.episodes import EpisodeReturns
from agents.evaluation import env_wrappers, make_env, make_kwargs
from agents.registry import register_method
from agents.returns import lambda_returns
from envs import DifferentiableEnv
from gumbel_rl.estimators import Estimator, sample_action
from gumbel_rl.policy import mlp

ROLLOUTS = ("auto", "twin", "gym")


@dataclass
class ReinforceConfig(Config):
    """Hyperparameters of REINFORCE with a value baseline."""

    rollout: str = "auto"
    """Where transitions come from: "twin" (batched torch twin), "gym" (Gymnasium vector env), "auto" (twin if any)."""
    n_envs: int = 16
    """Environment copies stepped in parallel."""
    n_steps: int = 64
    """Steps per copy and rollout; one gradient step per rollout of n_envs * n_steps transitions."""
    gamma: float = 0.99
    """Discount factor of the returns-to-go."""
    gae_lambda: float = 1.0
    """GAE lambda; 1 gives plain discounted returns bootstrapped at the rollout's end and at truncation."""
    learning_rate: float = 1e-3
    """Adam step size for the policy and the value network."""
    vf_coef: float = 0.5
    """Weight of the value (baseline) regression loss."""
    ent_coef: float = 0.01
    """Weight of the entropy bonus."""
    max_grad_norm: float = 0.5
    """Gradient norm clipping threshold (over policy and value parameters together)."""
    normalize_advantage: bool = True
    """Normalise advantages to zero mean and unit variance within each rollout."""

    def validate(self) -> None:
        super().validate()
        check_choice("rollout", self.rollout, ROLLOUTS)
        check_positive("n_envs", self.n_envs, integer=True)
        check_positive("n_steps", self.n_steps, integer=True)
        check_fraction("gamma", self.gamma)
        check_fraction("gae_lambda", self.gae_lambda)
        check_positive("learning_rate", self.learning_rate)
        check_positive("vf_coef", self.vf_coef, allow_zero=True)
        check_positive("ent_coef", self.ent_coef, allow_zero=True)
        check_positive("max_grad_norm", self.max_grad_norm)
        check_bool("normalize_advantage", self.normalize_advantage)


def resolve_rollout(rollout: str, env_id: str) -> str:
    """``"twin"`` or ``"gym"`` for ``rollout`` on ``env_id`` ("auto": the twin if ``env_id`` has one).

    Raises:
        ValueError: ``rollout="twin"`` on an id without a twin, or an unknown rollout name.
    """
    check_choice("rollout", rollout, ROLLOUTS)
    has_twin = env_id in envs.differentiable_ids()
    if rollout == "auto":
        return "twin" if has_twin else "gym"
    if rollout == "twin" and not has_twin:
        raise ValueError(
            f"rollout='twin' needs a differentiable twin and {env_id!r} has none "
            f"(twins: {', '.join(envs.differentiable_ids())}); use rollout='gym'"
        )
    return rollout


# ---- the loss ----------------------------------------------------------------------------------------------------
def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``sum(x * mask) / max(sum(mask), 1)``: the mean of ``x`` over the steps where ``mask`` is 1 (same shapes)."""
    return (x * mask).sum() / mask.sum().clamp_min(1.0)


def normalize_advantages(advantages: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``(A - mean) / (std + eps)`` with the mean and (biased) standard deviation over the masked steps."""
    mean = masked_mean(advantages, mask)
    var = masked_mean((advantages - mean) ** 2, mask)
    return (advantages - mean) / (var.sqrt() + eps)


def reinforce_loss(log_prob: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The score-function (REINFORCE) surrogate ``-mean_t(log pi(a_t|s_t) * A_t)`` over the masked steps.

    Its gradient is the policy gradient ``-E[grad log pi(a|s) * A]`` (Williams 1992): ``advantages`` must carry no
    gradient.

    Args:
        log_prob: (N,) log-probabilities of the taken actions, differentiable in the policy.
        advantages: (N,) advantages, without gradient.
        mask: (N,) floating, 1 for the steps that are transitions, 0 for the others (Gymnasium's autoreset steps).
    Returns:
        The scalar loss.
    """
    return -masked_mean(log_prob * advantages, mask)


def value_loss(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The baseline's regression loss ``mean_t (V(s_t) - G_t)^2`` over the masked steps (all arguments (N,))."""
    return masked_mean((values - returns) ** 2, mask)


def reinforce_with_baseline_loss(
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    values: torch.Tensor,
    returns: torch.Tensor,
    entropy: torch.Tensor,
    mask: torch.Tensor,
    vf_coef: float,
    ent_coef: float,
    normalize_advantage: bool,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``L = L_pi + vf_coef * L_V - ent_coef * H`` of one rollout (see the module docstring).

    Args:
        log_prob: (N,) log pi of the taken actions (differentiable in the policy).
        advantages: (N,) ``G_t - V(s_t)`` without gradient; normalised over the masked steps when
            ``normalize_advantage``.
        values: (N,) ``V(s_t)`` (differentiable in the value network); returns: (N,) targets ``G_t``.
        entropy: (N,) entropy of the policy at each step.
        mask: (N,) floating, 1 for real transitions.
    Returns:
        ``(loss, stats)``: the scalar loss and detached ``train/actor_loss`` (``L_pi``), ``train/critic_loss``
        (``L_V``) and ``train/entropy`` (``H``).
    """
    if normalize_advantage:
        advantages = normalize_advantages(advantages, mask)
    h = masked_mean(entropy, mask)
    pg_loss = reinforce_loss(log_prob, advantages, mask)
    v_loss = value_loss(values, returns, mask)
    loss = pg_loss + vf_coef * v_loss - ent_coef * h
    stats = {"train/actor_loss": pg_loss.detach(), "train/critic_loss": v_loss.detach(), "train/entropy": h.detach()}
    return loss, stats


# ---- rollouts ----------------------------------------------------------------------------------------------------
class Rollout(NamedTuple):
    """``T`` steps of ``B`` environment copies, time-major."""

    obs: torch.Tensor
    """(T, B, obs_dim) observation the action was taken in."""
    next_obs: torch.Tensor
    """(T, B, obs_dim) observation the step led to (before any reset)."""
    actions: torch.Tensor
    """(T, B) action indices (long)."""
    rewards: torch.Tensor
    """(T, B) environment rewards (0 on invalid steps)."""
    terminated: torch.Tensor
    """(T, B) bool."""
    truncated: torch.Tensor
    """(T, B) bool."""
    valid: torch.Tensor
    """(T, B) bool: a real transition (False: Gymnasium's autoreset step)."""
    env_steps: int
    """Transitions in the rollout (valid steps)."""


def twin_rollout(
    twin: DifferentiableEnv,
    state: Any,
    sample: Callable[[torch.Tensor], torch.Tensor],
    n_steps: int,
    n_envs: int,
    episodes: EpisodeReturns,
    generator: torch.Generator | None = None,
) -> tuple[Rollout, Any]:
    """``n_steps`` steps of ``n_envs`` twin copies from ``state`` under ``torch.no_grad()``: ``sample`` maps the
    observations (B, obs_dim) to action indices (B,), fed to the twin as hard one-hots; finished copies are re-drawn
    with ``twin.reset_done`` and their returns added to ``episodes``. Returns the rollout (every step valid) and the
    twin state after it. ``generator`` is passed to the twin's ``step`` and ``reset_done``."""
    obs_l, next_l, act_l, rew_l, term_l, trunc_l = [], [], [], [], [], []
    with torch.no_grad():
        for _ in range(n_steps):
            o = twin.observe(state).float()
            a = sample(o)
            onehot = nn.functional.one_hot(a, twin.n_actions).to(o.dtype)
            state, r, te, tr = twin.step(state, onehot, generator=generator)
            done = te | tr
            obs_l.append(o)
            next_l.append(twin.observe(state).float())
            act_l.append(a)
            rew_l.append(r.to(o.dtype))
            term_l.append(te)
            trunc_l.append(tr)
            episodes.add(r, done)
            state = twin.reset_done(state, done, generator=generator)
    obs = torch.stack(obs_l)
    valid = torch.ones(n_steps, n_envs, dtype=torch.bool, device=obs.device)
    rollout = Rollout(
        obs,
        torch.stack(next_l),
        torch.stack(act_l),
        torch.stack(rew_l),
        torch.stack(term_l),
        torch.stack(trunc_l),
        valid,
        env_steps=n_steps * n_envs,
    )
    return rollout, state


@register_method("reinforce", "score-function policy gradient (REINFORCE) with a learned value baseline")
class ReinforceAgent(Agent):
    """REINFORCE with a value baseline, on twin or Gymnasium rollouts (see the module docstring).

    Attributes (beyond ``Agent``'s): ``value_net`` (MLP obs -> V), ``optimizer`` (Adam over both networks),
    ``rollout`` ("twin" or "gym"), ``generator`` (torch generator of the action samples and the twin's draws),
    ``episodes`` (the training episodes' returns), ``twin`` (rollout "twin") or ``venv`` (rollout "gym").
    """

    config_cls = ReinforceConfig
    config: ReinforceConfig

    def _setup(self) -> None:
        cfg = self.config
        self.rollout = resolve_rollout(cfg.rollout, self.env_id)
        probe = make_env(self.env_id)
        obs_space, act_space = probe.observation_space, probe.action_space
        probe.close()
        self.policy = self._make_policy(obs_space, act_space, Estimator.REINFORCE.value)
        self.value_net = mlp(self.policy.obs_dim, cfg.net_arch, 1, cfg.activation, out_gain=1.0).to(self.device)
        self.optimizer = torch.optim.Adam(
            [*self.policy.parameters(), *self.value_net.parameters()], lr=cfg.learning_rate
        )
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(self.seed)
        self._gym_resets = 0
        self._closed = False
        if self.rollout == "twin":
            self.twin: DifferentiableEnv = envs.make_differentiable(self.env_id, device=self.device)
            self._twin_state = self.twin.reset(cfg.n_envs, generator=self.generator)
            self.episodes = EpisodeReturns(cfg.n_envs, device=self.device)
        else:
            self.venv = gym.make_vec(
                self.env_id,
                num_envs=cfg.n_envs,
                vectorization_mode="sync",
                wrappers=env_wrappers(self.env_id),
                **make_kwargs(self.env_id),
            )
            self._gym_obs, _ = self.venv.reset(seed=self.seed)
            self._gym_autoreset = np.zeros(cfg.n_envs, dtype=bool)
            self.episodes = EpisodeReturns(cfg.n_envs)

    def close(self) -> None:
        """Close the Gymnasium vector env of a gym-rollout agent (safe to call more than once)."""
        if not self._closed:
            self._closed = True
            if self.rollout == "gym":
                self.venv.close()

    # ---- rollouts ------------------------------------------------------------------------------------------
    def _sample(self, features: torch.Tensor) -> torch.Tensor:
        """Action indices (B,) for features (B, obs_dim): exact samples, no gradient."""
        logits = self.policy(features)
        return sample_action(logits, Estimator.REINFORCE.value, generator=self.generator).argmax(-1)

    def _rollout_twin(self) -> Rollout:
        cfg = self.config
        rollout, self._twin_state = twin_rollout(
            self.twin, self._twin_state, self._sample, cfg.n_steps, cfg.n_envs, self.episodes, self.generator
        )
        return rollout

    def _rollout_gym(self) -> Rollout:
        T = self.config.n_steps
        obs_l, next_l, act_l, rew_l, term_l, trunc_l, valid_l = [], [], [], [], [], [], []
        start = int(self.policy.action_space.start)
        o_np, autoreset = self._gym_obs, self._gym_autoreset
        with torch.no_grad():
            for _ in range(T):
                o, _ = self.policy.obs_to_tensor(o_np)
                a = self._sample(o)
                next_np, r, te, tr, _ = self.venv.step(a.cpu().numpy() + start)
                valid = ~autoreset  # an autoreset step only resets that copy: no transition
                n, _ = self.policy.obs_to_tensor(next_np)
                obs_l.append(o)
                next_l.append(n)
                act_l.append(a)
                rew_l.append(np.where(valid, r, 0.0))
                term_l.append(te & valid)
                trunc_l.append(tr & valid)
                valid_l.append(valid)
                self.episodes.add(rew_l[-1], (te | tr) & valid)
                autoreset = te | tr
                o_np = next_np
        self._gym_obs, self._gym_autoreset = o_np, autoreset
        dev = self.device

        def stack(xs: list[Any], dtype: torch.dtype) -> torch.Tensor:
            return torch.as_tensor(np.stack(xs), dtype=dtype, device=dev)

        return Rollout(
            obs=torch.stack(obs_l),
            next_obs=torch.stack(next_l),
            actions=torch.stack(act_l),
            rewards=stack(rew_l, torch.float32),
            terminated=stack(term_l, torch.bool),
            truncated=stack(trunc_l, torch.bool),
            valid=stack(valid_l, torch.bool),
            env_steps=int(np.stack(valid_l).sum()),
        )

    # ---- update --------------------------------------------------------------------------------------------
    def _train_iteration(self) -> tuple[int, dict[str, float]]:
        cfg = self.config
        batch = self._rollout_twin() if self.rollout == "twin" else self._rollout_gym()
        T, B = batch.actions.shape
        obs = batch.obs.reshape(T * B, -1)
        logits = self.policy(obs)
        values = self.value_net(obs).reshape(T, B)
        with torch.no_grad():
            next_values = self.value_net(batch.next_obs.reshape(T * B, -1)).reshape(T, B)
        done = batch.terminated | batch.truncated
        returns = lambda_returns(batch.rewards, next_values, batch.terminated, done, cfg.gamma, cfg.gae_lambda)
        advantages = returns - values.detach()
        dist = self.policy.distribution_from_logits(logits)
        onehot = nn.functional.one_hot(batch.actions.reshape(-1), self.policy.n_actions).to(logits.dtype)
        loss, stats = reinforce_with_baseline_loss(
            log_prob=dist.log_prob(onehot),
            advantages=advantages.reshape(-1),
            values=values.reshape(-1),
            returns=returns.reshape(-1),
            entropy=dist.entropy(),
            mask=batch.valid.reshape(-1).to(values.dtype),
            vf_coef=cfg.vf_coef,
            ent_coef=cfg.ent_coef,
            normalize_advantage=cfg.normalize_advantage,
        )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [*self.policy.parameters(), *self.value_net.parameters()]
        stats["train/grad_norm"] = nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        self.optimizer.step()
        names = list(stats)
        values_host = torch.stack([stats[k].float() for k in names]).tolist()  # one host sync
        metrics = dict(zip(names, values_host, strict=True))
        metrics.update(self.episodes.metrics())
        return batch.env_steps, metrics

    # ---- checkpoints ---------------------------------------------------------------------------------------
    def _training_state(self) -> dict[str, Any]:
        """Value net, optimiser, generator, episode returns; the twin's batched state (twin) or a reseed counter
        (gym: the Gymnasium envs are not snapshotted, see the module docstring)."""
        state: dict[str, Any] = {
            "value_net": self.value_net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "episodes": self.episodes.state_dict(),
        }
        if self.rollout == "twin":
            state["twin_state"] = dict(self._twin_state._asdict())
        else:
            state["gym_resets"] = self._gym_resets
        return state

    def _load_training_state(self, state: dict[str, Any]) -> None:
        self.value_net.load_state_dict(state["value_net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"].cpu())
        self.episodes.load_state_dict(state["episodes"])
        if self.rollout == "twin":
            self._twin_state = self._twin_state._replace(**state["twin_state"])
        else:
            self._gym_resets = int(state["gym_resets"]) + 1
            self._gym_obs, _ = self.venv.reset(seed=self.seed + 1_000_003 * self._gym_resets)
            self._gym_autoreset = np.zeros(self.config.n_envs, dtype=bool)
            self.episodes.running = np.zeros(self.config.n_envs)  # the copies start new episodes
