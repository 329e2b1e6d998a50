"""REINFORCE: the score-function policy gradient with a learned value baseline (Williams 1992).

The gradient is ``E[grad log pi(a|s) * (G - V(s))]``: the action is an exact categorical sample that carries no
gradient (``sample_action(logits, "reinforce")``), the environment is never differentiated, and the loss is built
from ``GumbelCategorical.log_prob`` of the stored actions. It runs on the same kind of rollouts as the pathwise
methods, so that comparisons are at equal env steps (every transition counts as one):

- ``rollout="twin"``: the batched torch twin (``envs.make_differentiable``), ``n_envs`` copies for ``n_steps``
  steps, stepped under ``torch.no_grad()`` with hard one-hot actions;
- ``rollout="gym"``: Gymnasium's ``SyncVectorEnv`` (``gymnasium.make_vec``) with its default ``NEXT_STEP``
  autoreset: the ``step`` after a terminated/truncated one only resets that copy (reward 0, action ignored), so it
  is masked out -- neither a transition nor an env step;
- ``rollout="auto"`` (default): the twin where ``env_id`` has one, else gym.

Returns: discounted returns-to-go within the rollout, bootstrapped with ``V`` at the rollout's end and at
truncation (time limit), never at termination; optionally GAE(lambda) (``gae_lambda=1``, the default, gives the
plain bootstrapped returns ``G``). Advantages ``G - V(s)`` are normalised per rollout by default. One Adam step per
rollout on ``policy_loss + vf_coef * value_loss - ent_coef * entropy`` with gradient-norm clipping.

Training reward: the environment's own reward in both modes (the twins return Gymnasium's reward: 1 per step for
CartPole -- no shaping -- and the gridworld's step cost / goal / trap rewards).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

import envs
from agents.base import Agent, Config, check_fraction, check_positive
from agents.registry import register_method
from gumbel_rl.estimators import sample_action
from gumbel_rl.policy import ACTIVATIONS, GumbelPolicy, mlp

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
        if self.rollout not in ROLLOUTS:
            raise ValueError(f"hyperparameter rollout must be one of {', '.join(ROLLOUTS)}; got {self.rollout!r}")
        if self.activation not in ACTIVATIONS:
            valid = ", ".join(ACTIVATIONS)
            raise ValueError(f"hyperparameter activation must be one of {valid}; got {self.activation!r}")
        check_positive("n_envs", self.n_envs, integer=True)
        check_positive("n_steps", self.n_steps, integer=True)
        check_fraction("gamma", self.gamma)
        check_fraction("gae_lambda", self.gae_lambda)
        check_positive("learning_rate", self.learning_rate)
        check_positive("vf_coef", self.vf_coef, allow_zero=True)
        check_positive("ent_coef", self.ent_coef, allow_zero=True)
        check_positive("max_grad_norm", self.max_grad_norm)
        if not isinstance(self.normalize_advantage, bool):
            raise ValueError(f"hyperparameter normalize_advantage must be a bool, got {self.normalize_advantage!r}")


def resolve_rollout(rollout: str, env_id: str) -> str:
    """``"twin"`` or ``"gym"`` for ``rollout`` on ``env_id`` ("auto": the twin if ``env_id`` has one).

    Raises:
        ValueError: ``rollout="twin"`` on an id without a twin, or an unknown rollout name.
    """
    has_twin = env_id in envs.differentiable_ids()
    if rollout == "auto":
        return "twin" if has_twin else "gym"
    if rollout == "twin" and not has_twin:
        raise ValueError(
            f"rollout='twin' needs a differentiable twin and {env_id!r} has none "
            f"(twins: {', '.join(envs.differentiable_ids())}); use rollout='gym'"
        )
    if rollout not in ROLLOUTS:
        raise ValueError(f"rollout must be one of {', '.join(ROLLOUTS)}; got {rollout!r}")
    return rollout


def discounted_advantages(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    valid: torch.Tensor,
    gamma: float,
    gae_lambda: float = 1.0,
) -> torch.Tensor:
    """GAE(lambda) advantages of one rollout; with ``gae_lambda=1`` they are ``G_t - V(s_t)``.

    ``G_t`` is the discounted return-to-go within the rollout, bootstrapped with ``next_values`` (the value of
    the state a step led to) at the rollout's last step and where the episode was truncated, and not at all where
    it terminated. Steps with ``valid`` False (Gymnasium's autoreset steps) get advantage 0 and do not propagate.

    Args:
        rewards, values, next_values: (T, B) floating.
        terminated, truncated, valid: (T, B) bool.
        gamma: discount in [0, 1]; gae_lambda: in [0, 1].
    Returns:
        (T, B) advantages, without gradient.
    """
    with torch.no_grad():
        adv = torch.zeros_like(rewards)
        last = torch.zeros_like(rewards[0])
        not_term = (~terminated).to(rewards.dtype)
        not_done = (~(terminated | truncated)).to(rewards.dtype)
        valid_f = valid.to(rewards.dtype)
        for t in range(rewards.shape[0] - 1, -1, -1):
            delta = rewards[t] + gamma * not_term[t] * next_values[t] - values[t]
            last = (delta + gamma * gae_lambda * not_done[t] * last) * valid_f[t]
            adv[t] = last
    return adv


@register_method("reinforce", "score-function policy gradient (REINFORCE) with a learned value baseline")
class ReinforceAgent(Agent):
    """REINFORCE with a value baseline, on twin or Gymnasium rollouts (see the module docstring).

    Attributes (beyond ``Agent``'s): ``value_net`` (MLP obs -> V), ``optimizer`` (Adam over both networks),
    ``rollout`` ("twin" or "gym"), ``generator`` (torch generator of the action samples and the twin's draws).
    """

    config_cls = ReinforceConfig
    config: ReinforceConfig

    def _setup(self) -> None:
        cfg = self.config
        self.rollout = resolve_rollout(cfg.rollout, self.env_id)
        probe = gym.make(self.env_id)
        obs_space, act_space = probe.observation_space, probe.action_space
        probe.close()
        self.policy = GumbelPolicy(
            obs_space, act_space, net_arch=cfg.net_arch, activation=cfg.activation, estimator="reinforce"
        ).to(self.device)
        self.value_net = mlp(self.policy.obs_dim, cfg.net_arch, 1, cfg.activation, out_gain=1.0).to(self.device)
        self.optimizer = torch.optim.Adam(
            [*self.policy.parameters(), *self.value_net.parameters()], lr=cfg.learning_rate
        )
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(self.seed)
        self._gym_resets = 0
        if self.rollout == "twin":
            self.twin = envs.make_differentiable(self.env_id, device=self.device)
            self._twin_step_takes_generator = "generator" in inspect.signature(self.twin.step).parameters
            self._twin_state = self.twin.reset(cfg.n_envs, generator=self.generator)
            self._ep_return = torch.zeros(cfg.n_envs, device=self.device)
        else:
            self.venv = gym.make_vec(self.env_id, num_envs=cfg.n_envs, vectorization_mode="sync")
            self._gym_obs, _ = self.venv.reset(seed=self.seed)
            self._gym_autoreset = np.zeros(cfg.n_envs, dtype=bool)
            self._ep_return_np = np.zeros(cfg.n_envs, dtype=np.float64)

    # ---- rollouts ------------------------------------------------------------------------------------------
    def _sample(self, features: torch.Tensor) -> torch.Tensor:
        """Action indices (B,) for features (B, obs_dim): exact samples, no gradient."""
        logits = self.policy(features)
        return sample_action(logits, "reinforce", generator=self.generator).argmax(-1)

    def _rollout_twin(self) -> dict[str, Any]:
        cfg, twin = self.config, self.twin
        T, B, D = cfg.n_steps, cfg.n_envs, self.policy.obs_dim
        dev = self.device
        obs = torch.empty(T, B, D, device=dev)
        next_obs = torch.empty(T, B, D, device=dev)
        actions = torch.empty(T, B, dtype=torch.long, device=dev)
        rewards = torch.empty(T, B, device=dev)
        term = torch.empty(T, B, dtype=torch.bool, device=dev)
        trunc = torch.empty(T, B, dtype=torch.bool, device=dev)
        ep_sum = torch.zeros((), device=dev)
        ep_count = torch.zeros((), device=dev)
        state, ep_ret = self._twin_state, self._ep_return
        with torch.no_grad():
            for t in range(T):
                o = twin.observe(state).float()
                a = self._sample(o)
                onehot = nn.functional.one_hot(a, self.policy.n_actions).to(o.dtype)
                if self._twin_step_takes_generator:
                    state, r, te, tr = twin.step(state, onehot, generator=self.generator)
                else:
                    state, r, te, tr = twin.step(state, onehot)
                done = te | tr
                obs[t], next_obs[t], actions[t], rewards[t], term[t], trunc[t] = o, twin.observe(state), a, r, te, tr
                ep_ret = ep_ret + r
                ep_sum = ep_sum + torch.where(done, ep_ret, 0.0).sum()
                ep_count = ep_count + done.sum()
                ep_ret = torch.where(done, 0.0, ep_ret)
                state = twin.reset_done(state, done, generator=self.generator)
        self._twin_state, self._ep_return = state, ep_ret
        valid = torch.ones(T, B, dtype=torch.bool, device=dev)
        return dict(
            obs=obs,
            next_obs=next_obs,
            actions=actions,
            rewards=rewards,
            terminated=term,
            truncated=trunc,
            valid=valid,
            ep_sum=ep_sum,
            ep_count=ep_count,
            env_steps=T * B,
        )

    def _rollout_gym(self) -> dict[str, Any]:
        T = self.config.n_steps
        obs_l, next_l, act_l, rew_l, term_l, trunc_l, valid_l = [], [], [], [], [], [], []
        ep_sum, ep_count = 0.0, 0
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
                done = (te | tr) & valid
                self._ep_return_np += np.where(valid, r, 0.0)
                ep_sum += float(self._ep_return_np[done].sum())
                ep_count += int(done.sum())
                self._ep_return_np[done] = 0.0
                autoreset = te | tr
                o_np = next_np
        self._gym_obs, self._gym_autoreset = o_np, autoreset
        dev = self.device

        def stack(xs: list, dtype: torch.dtype) -> torch.Tensor:
            return torch.as_tensor(np.stack(xs), dtype=dtype, device=dev)

        valid_t = stack(valid_l, torch.bool)
        return dict(
            obs=torch.stack(obs_l),
            next_obs=torch.stack(next_l),
            actions=torch.stack(act_l),
            rewards=stack(rew_l, torch.float32),
            terminated=stack(term_l, torch.bool),
            truncated=stack(trunc_l, torch.bool),
            valid=valid_t,
            ep_sum=torch.tensor(ep_sum),
            ep_count=torch.tensor(float(ep_count)),
            env_steps=int(np.stack(valid_l).sum()),
        )

    # ---- update --------------------------------------------------------------------------------------------
    def _train_iteration(self) -> tuple[int, dict[str, float]]:
        cfg = self.config
        batch = self._rollout_twin() if self.rollout == "twin" else self._rollout_gym()
        T, B = batch["actions"].shape
        obs = batch["obs"].reshape(T * B, -1)
        logits = self.policy(obs)
        values = self.value_net(obs).reshape(T, B)
        with torch.no_grad():
            next_values = self.value_net(batch["next_obs"].reshape(T * B, -1)).reshape(T, B)
        valid = batch["valid"]
        adv = discounted_advantages(
            batch["rewards"],
            values.detach(),
            next_values,
            batch["terminated"],
            batch["truncated"],
            valid,
            cfg.gamma,
            cfg.gae_lambda,
        )
        returns = adv + values.detach()
        vmask = valid.reshape(-1).to(values.dtype)
        n_valid = vmask.sum().clamp_min(1.0)
        adv_flat = adv.reshape(-1)
        if cfg.normalize_advantage:
            mean = (adv_flat * vmask).sum() / n_valid
            var = (((adv_flat - mean) ** 2) * vmask).sum() / n_valid
            adv_flat = (adv_flat - mean) / (var.sqrt() + 1e-8)
        dist = self.policy.distribution_from_logits(logits)
        onehot = nn.functional.one_hot(batch["actions"].reshape(-1), self.policy.n_actions).to(logits.dtype)
        log_prob = dist.log_prob(onehot)
        entropy = (dist.entropy() * vmask).sum() / n_valid
        policy_loss = -(log_prob * adv_flat * vmask).sum() / n_valid
        value_loss = (((values.reshape(-1) - returns.reshape(-1)) ** 2) * vmask).sum() / n_valid
        loss = policy_loss + cfg.vf_coef * value_loss - cfg.ent_coef * entropy
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [*self.policy.parameters(), *self.value_net.parameters()]
        grad_norm = nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        self.optimizer.step()
        stats = torch.stack(
            [
                policy_loss.detach(),
                value_loss.detach(),
                entropy.detach(),
                grad_norm,
                batch["ep_sum"].to(self.device, torch.float32),
                batch["ep_count"].to(self.device, torch.float32),
            ]
        ).tolist()
        metrics = {
            "policy_loss": stats[0],
            "value_loss": stats[1],
            "entropy": stats[2],
            "grad_norm": stats[3],
            "episodes": stats[5],
        }
        if stats[5] > 0:
            metrics["ep_return_mean"] = stats[4] / stats[5]
        return batch["env_steps"], metrics

    # ---- checkpoints ---------------------------------------------------------------------------------------
    def _training_state(self) -> dict[str, Any]:
        """Value net, optimiser, generator; the twin's batched state (twin) or a reseed counter (gym).

        Gymnasium environments cannot be snapshotted: a resumed gym-rollout agent resets its copies (with a fresh
        seed) and so starts new episodes; a twin-rollout agent resumes bit for bit.
        """
        state: dict[str, Any] = {
            "value_net": self.value_net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
        }
        if self.rollout == "twin":
            state["twin_state"] = dict(self._twin_state._asdict())
            state["ep_return"] = self._ep_return
        else:
            state["gym_resets"] = self._gym_resets
        return state

    def _load_training_state(self, state: dict[str, Any]) -> None:
        self.value_net.load_state_dict(state["value_net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"].cpu())
        if self.rollout == "twin":
            self._twin_state = self._twin_state._replace(**state["twin_state"])
            self._ep_return = state["ep_return"]
        else:
            self._gym_resets = int(state["gym_resets"]) + 1
            self._gym_obs, _ = self.venv.reset(seed=self.seed + 1_000_003 * self._gym_resets)
            self._gym_autoreset = np.zeros(self.config.n_envs, dtype=bool)
            self._ep_return_np = np.zeros(self.config.n_envs, dtype=np.float64)
