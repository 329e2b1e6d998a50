"""Stable-Baselines3's PPO, A2C and DQN behind the gumbel-rl ``Agent`` interface (methods ``ppo``, ``a2c``, ``dqn``).

``learn`` runs SB3's own ``model.learn``; an SB3 callback (:class:`_Bridge`) connects it to our framework so that
evaluation, record rows, "solved" and our callbacks (which may stop training) work as for every other method:

- env steps are ``model.num_timesteps`` (every transition of every vectorised copy counts as one);
- one "iteration" (record row, evaluation when due, our callback) is one SB3 rollout *and the update that follows
  it*: the bridge does its bookkeeping when the next rollout starts (SB3 trains after ``on_rollout_end``) and at
  the end of training. PPO/A2C: every rollout of ``n_steps * n_envs`` steps. DQN: every ``record_every`` env
  steps, rounded up to whole ``train_freq`` rollouts;
- ``train_wall_s`` excludes the time spent in our bookkeeping and evaluation;
- a callback returning False makes the bridge's next ``on_step`` return False: SB3 stops after one more
  vectorised step (``n_envs`` transitions, counted in ``num_env_steps`` but in no record row).

``self.policy`` is a ``GumbelPolicy`` with the SB3 network's architecture and a copy of its weights, refreshed
before each evaluation and save: PPO/A2C ``mlp_extractor.policy_net`` + ``action_net`` (the logits); DQN
``q_net`` (Q-values used as logits), so its greedy actions are SB3's deterministic actions. Its *sampled* actions
are softmax samples, not SB3's (epsilon-greedy for DQN).

Schedules: SB3 decays ``lin_`` learning rates / clip ranges and DQN's epsilon over the progress
``num_timesteps / total``, where ``total`` is the absolute ``total_env_steps`` given to ``learn`` (the zoo's
``n_timesteps`` budget reproduces the zoo's schedules).

Checkpoints hold no pickles: ``model.get_parameters()`` (state dicts of the networks and optimiser) plus SB3's
counters, restored with ``model.set_parameters``. Resuming is not bit-exact: the vectorised environments restart
their episodes (reseeded with ``seed + num_env_steps``), and DQN's replay buffer is not saved: a resumed ``dqn``
starts with an empty buffer (``learning_starts`` counts absolute steps, so it trains again as soon as one
``train_freq`` rollout is in the buffer), while its epsilon schedule and target-update counter continue from the
saved ``num_timesteps`` and ``_n_calls``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback as SB3Callback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.utils import LinearSchedule
from torch import nn

from agents.base import Agent, Config, check_fraction, check_positive
from agents.callbacks import BaseCallback
from agents.evaluation import SOLVE_EPISODES, EvalResult
from agents.registry import register_method
from gumbel_rl.policy import ACTIVATIONS, GumbelPolicy

SCHEDULES = ("constant", "linear")


def schedule(value: float, kind: str) -> float | LinearSchedule:
    """``value`` itself (constant) or the zoo's ``lin_<value>``: ``value * progress_remaining``."""
    return float(value) if kind == "constant" else LinearSchedule(float(value), 0.0, 1.0)


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"hyperparameter {name} must be one of {', '.join(choices)}; got {value!r}")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"hyperparameter {name} must be a bool, got {value!r}")


@dataclass
class SB3Config(Config):
    """What the three SB3 agents share. Class defaults are SB3's own; the tuned values live in
    ``agents.hyperparams``."""

    n_envs: int = 1
    """Vectorised environment copies (SB3 ``DummyVecEnv``)."""
    learning_rate: float = 3e-4
    """Initial learning rate."""
    lr_schedule: str = "constant"
    """"constant", or "linear": decays to 0 over the learn budget (the zoo's lin_<learning_rate>)."""
    gamma: float = 0.99
    """Discount factor."""

    def validate(self) -> None:
        super().validate()
        _check_choice("activation", self.activation, tuple(ACTIVATIONS))
        check_positive("n_envs", self.n_envs, integer=True)
        check_positive("learning_rate", self.learning_rate)
        _check_choice("lr_schedule", self.lr_schedule, SCHEDULES)
        check_fraction("gamma", self.gamma)


@dataclass
class PPOConfig(SB3Config):
    """PPO's hyperparameters (SB3 defaults)."""

    n_steps: int = 2048
    """Steps per copy and rollout."""
    batch_size: int = 64
    """Minibatch size of the PPO epochs."""
    n_epochs: int = 10
    """Passes over each rollout."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    clip_range: float = 0.2
    """PPO's ratio clipping range."""
    clip_range_schedule: str = "constant"
    """"constant", or "linear" (the zoo's lin_<clip_range>)."""
    ent_coef: float = 0.0
    """Entropy bonus weight."""
    vf_coef: float = 0.5
    """Value loss weight."""
    max_grad_norm: float = 0.5
    """Gradient norm clipping threshold."""
    normalize_advantage: bool = True
    """Normalise advantages per minibatch."""

    def validate(self) -> None:
        super().validate()
        check_positive("n_steps", self.n_steps, integer=True)
        check_positive("batch_size", self.batch_size, integer=True)
        if self.batch_size < 2 and self.normalize_advantage:
            raise ValueError(f"hyperparameter batch_size must be >= 2 with normalize_advantage, got {self.batch_size}")
        check_positive("n_epochs", self.n_epochs, integer=True)
        check_fraction("gae_lambda", self.gae_lambda)
        check_positive("clip_range", self.clip_range)
        _check_choice("clip_range_schedule", self.clip_range_schedule, SCHEDULES)
        check_positive("ent_coef", self.ent_coef, allow_zero=True)
        check_positive("vf_coef", self.vf_coef, allow_zero=True)
        check_positive("max_grad_norm", self.max_grad_norm)
        _check_bool("normalize_advantage", self.normalize_advantage)


@dataclass
class A2CConfig(SB3Config):
    """A2C's hyperparameters (SB3 defaults)."""

    learning_rate: float = 7e-4
    """Initial learning rate."""
    n_steps: int = 5
    """Steps per copy and rollout (one update per rollout)."""
    gae_lambda: float = 1.0
    """GAE lambda (1: n-step returns)."""
    ent_coef: float = 0.0
    """Entropy bonus weight."""
    vf_coef: float = 0.5
    """Value loss weight."""
    max_grad_norm: float = 0.5
    """Gradient norm clipping threshold."""
    use_rms_prop: bool = True
    """RMSprop (as the A2C paper) instead of Adam."""
    rms_prop_eps: float = 1e-5
    """RMSprop's epsilon."""
    normalize_advantage: bool = False
    """Normalise advantages per rollout."""

    def validate(self) -> None:
        super().validate()
        check_positive("n_steps", self.n_steps, integer=True)
        check_fraction("gae_lambda", self.gae_lambda)
        check_positive("ent_coef", self.ent_coef, allow_zero=True)
        check_positive("vf_coef", self.vf_coef, allow_zero=True)
        check_positive("max_grad_norm", self.max_grad_norm)
        _check_bool("use_rms_prop", self.use_rms_prop)
        check_positive("rms_prop_eps", self.rms_prop_eps)
        _check_bool("normalize_advantage", self.normalize_advantage)


@dataclass
class DQNConfig(SB3Config):
    """DQN's hyperparameters (SB3 defaults; ReLU network as SB3's DQN)."""

    activation: str = "relu"
    """Activation of the Q-network (tanh, relu, elu, gelu)."""
    learning_rate: float = 1e-4
    """Initial learning rate."""
    buffer_size: int = 1_000_000
    """Replay buffer capacity in transitions."""
    learning_starts: int = 100
    """Env steps of uniformly random actions before the first update."""
    batch_size: int = 32
    """Minibatch size."""
    tau: float = 1.0
    """Target network soft-update coefficient (1: hard copy)."""
    train_freq: int = 4
    """Env steps (per copy) between updates."""
    gradient_steps: int = 1
    """Gradient steps per update."""
    target_update_interval: int = 10_000
    """Env steps between target network updates."""
    exploration_fraction: float = 0.1
    """Fraction of the learn budget over which epsilon decays linearly."""
    exploration_initial_eps: float = 1.0
    """Initial epsilon of the epsilon-greedy exploration."""
    exploration_final_eps: float = 0.05
    """Final epsilon."""
    max_grad_norm: float = 10.0
    """Gradient norm clipping threshold."""
    record_every: int = 1_000
    """Env steps between record rows / callback calls (rounded up to whole train_freq rollouts)."""

    def validate(self) -> None:
        super().validate()
        check_positive("buffer_size", self.buffer_size, integer=True)
        check_positive("learning_starts", self.learning_starts, integer=True, allow_zero=True)
        check_positive("batch_size", self.batch_size, integer=True)
        check_fraction("tau", self.tau)
        check_positive("tau", self.tau)
        check_positive("train_freq", self.train_freq, integer=True)
        check_positive("gradient_steps", self.gradient_steps, integer=True)
        check_positive("target_update_interval", self.target_update_interval, integer=True)
        check_fraction("exploration_fraction", self.exploration_fraction)
        check_fraction("exploration_initial_eps", self.exploration_initial_eps)
        check_fraction("exploration_final_eps", self.exploration_final_eps)
        check_positive("max_grad_norm", self.max_grad_norm)
        check_positive("record_every", self.record_every, integer=True)


class _Bridge(SB3Callback):
    """SB3 callback that turns SB3's rollouts into our iterations (see the module docstring)."""

    def __init__(self, agent: SB3Agent, callback: BaseCallback) -> None:
        super().__init__(verbose=0)
        self.agent, self.our_callback = agent, callback
        self.stop = False
        self._t0 = 0.0

    def _on_training_start(self) -> None:
        self._t0 = time.perf_counter()

    def _on_rollout_start(self) -> None:
        self._bookkeeping(final=False)

    def _on_step(self) -> bool:
        return not self.stop

    def _on_training_end(self) -> None:
        self._bookkeeping(final=True)

    def _bookkeeping(self, final: bool) -> None:
        agent = self.agent
        delta = int(self.model.num_timesteps) - agent.num_env_steps
        if delta <= 0 or (not final and delta < agent._iteration_steps):
            return
        agent.train_wall_s += time.perf_counter() - self._t0
        if self.stop:
            agent.num_env_steps += delta  # the one vectorised step SB3 takes before it sees the stop
        elif not agent._after_iteration(delta, agent._sb3_metrics(), self.our_callback):
            self.stop = True
        self._t0 = time.perf_counter()


class SB3Agent(Agent):
    """Base of the SB3 agents: builds the SB3 model, mirrors it into ``self.policy``, bridges ``learn``."""

    algo_cls: ClassVar[type[BaseAlgorithm]]
    config: SB3Config

    def _setup(self) -> None:
        cfg = self.config
        self.venv = make_vec_env(self.env_id, n_envs=cfg.n_envs, seed=self.seed)
        self.model = self.algo_cls(
            "MlpPolicy", self.venv, seed=self.seed, device=self.device, verbose=0, **self._algo_kwargs()
        )
        self.policy = GumbelPolicy(
            self.venv.observation_space, self.venv.action_space, net_arch=cfg.net_arch, activation=cfg.activation
        ).to(self.device)
        self._iteration_steps = self._steps_per_iteration()
        self.refresh_policy()

    def _algo_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the SB3 constructor from the config."""
        raise NotImplementedError

    def _steps_per_iteration(self) -> int:
        """Env steps between two record rows (at least one SB3 rollout)."""
        return 1

    def _source_linears(self) -> list[nn.Linear]:
        """The SB3 model's Linear layers that compute the logits, input to output."""
        raise NotImplementedError

    def refresh_policy(self) -> GumbelPolicy:
        """Copy the SB3 network's weights into ``self.policy`` (same architecture). Returns the policy."""
        src = self._source_linears()
        dst = [m for m in self.policy.net if isinstance(m, nn.Linear)]
        if [tuple(m.weight.shape) for m in src] != [tuple(m.weight.shape) for m in dst]:
            raise RuntimeError("SB3 network and GumbelPolicy architectures differ; cannot mirror the weights")
        with torch.no_grad():
            for s, d in zip(src, dst, strict=True):
                d.weight.copy_(s.weight)
                d.bias.copy_(s.bias)
        return self.policy

    def _sb3_metrics(self) -> dict[str, float]:
        """Scalars SB3's logger recorded since the last dump: ``train/*`` losses and DQN's exploration rate."""
        out: dict[str, float] = {}
        for key, value in self.model.logger.name_to_value.items():
            if key.startswith("train/") or key == "rollout/exploration_rate":
                if isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool):
                    out[key.split("/", 1)[1]] = float(value)
        return out

    def _train_iteration(self) -> tuple[int, dict[str, float]]:
        raise RuntimeError("SB3 agents train through learn(), which runs SB3's own model.learn")

    def learn(self, total_env_steps: int, callback: Any = None) -> SB3Agent:
        """Run SB3's ``model.learn`` until ``num_env_steps >= total_env_steps`` (absolute) or a callback stops it.

        The whole ``total_env_steps`` is SB3's budget for its schedules (learning rate, clip range, epsilon).
        """
        check_positive("total_env_steps", total_env_steps, integer=True)
        cb = self._start_learning(callback)
        try:
            remaining = int(total_env_steps) - int(self.model.num_timesteps)
            if remaining > 0:
                bridge = _Bridge(self, cb)
                self.model.learn(remaining, callback=bridge, log_interval=None, reset_num_timesteps=False)
        finally:
            self.refresh_policy()
            cb.on_training_end()
        return self

    def evaluate_progress(self) -> EvalResult:
        self.refresh_policy()
        return super().evaluate_progress()

    def evaluate(self, episodes: int = SOLVE_EPISODES, deterministic: bool = True, seed: int = 0) -> EvalResult:
        self.refresh_policy()
        return super().evaluate(episodes, deterministic=deterministic, seed=seed)

    def save(self, path: str | os.PathLike) -> Path:
        """Refresh ``self.policy`` from the SB3 model, then ``Agent.save``."""
        self.refresh_policy()
        return super().save(path)

    # ---- checkpoints ---------------------------------------------------------------------------------------
    def _training_state(self) -> dict[str, Any]:
        """SB3's state dicts (``model.get_parameters()``: networks and optimiser) and its counters."""
        model = self.model
        return {
            "sb3_parameters": model.get_parameters(),
            "num_timesteps": int(model.num_timesteps),
            "n_updates": int(getattr(model, "_n_updates", 0)),
            "episode_num": int(model._episode_num),
            "n_calls": int(getattr(model, "_n_calls", 0)),
        }

    def _load_training_state(self, state: dict[str, Any]) -> None:
        model = self.model
        model.set_parameters(state["sb3_parameters"], exact_match=True, device=self.device)
        model.num_timesteps = int(state["num_timesteps"])
        model._n_updates = int(state["n_updates"])
        model._episode_num = int(state["episode_num"])
        if hasattr(model, "_n_calls"):
            model._n_calls = int(state["n_calls"])
        # New episodes after a resume: do not replay the start states of the first run.
        self.venv.seed(self.seed + model.num_timesteps)
        self.refresh_policy()


@register_method("ppo", "Stable-Baselines3 PPO (rl-baselines3-zoo hyperparameters for CartPole-v1)")
class PPOAgent(SB3Agent):
    """SB3's PPO; ``self.model`` is the ``stable_baselines3.PPO``."""

    algo_cls = PPO
    config_cls = PPOConfig
    config: PPOConfig

    def _algo_kwargs(self) -> dict[str, Any]:
        c = self.config
        return dict(
            learning_rate=schedule(c.learning_rate, c.lr_schedule),
            n_steps=c.n_steps,
            batch_size=c.batch_size,
            n_epochs=c.n_epochs,
            gamma=c.gamma,
            gae_lambda=c.gae_lambda,
            clip_range=schedule(c.clip_range, c.clip_range_schedule),
            ent_coef=c.ent_coef,
            vf_coef=c.vf_coef,
            max_grad_norm=c.max_grad_norm,
            normalize_advantage=c.normalize_advantage,
            policy_kwargs=dict(
                net_arch=dict(pi=list(c.net_arch), vf=list(c.net_arch)), activation_fn=ACTIVATIONS[c.activation]
            ),
        )

    def _source_linears(self) -> list[nn.Linear]:
        p = self.model.policy
        return [m for m in p.mlp_extractor.policy_net if isinstance(m, nn.Linear)] + [p.action_net]


@register_method("a2c", "Stable-Baselines3 A2C (rl-baselines3-zoo hyperparameters for CartPole-v1)")
class A2CAgent(PPOAgent):
    """SB3's A2C; ``self.model`` is the ``stable_baselines3.A2C``."""

    algo_cls = A2C
    config_cls = A2CConfig
    config: A2CConfig  # type: ignore[assignment]

    def _algo_kwargs(self) -> dict[str, Any]:
        c = self.config
        return dict(
            learning_rate=schedule(c.learning_rate, c.lr_schedule),
            n_steps=c.n_steps,
            gamma=c.gamma,
            gae_lambda=c.gae_lambda,
            ent_coef=c.ent_coef,
            vf_coef=c.vf_coef,
            max_grad_norm=c.max_grad_norm,
            use_rms_prop=c.use_rms_prop,
            rms_prop_eps=c.rms_prop_eps,
            normalize_advantage=c.normalize_advantage,
            policy_kwargs=dict(
                net_arch=dict(pi=list(c.net_arch), vf=list(c.net_arch)), activation_fn=ACTIVATIONS[c.activation]
            ),
        )


@register_method("dqn", "Stable-Baselines3 DQN (rl-baselines3-zoo hyperparameters for CartPole-v1)")
class DQNAgent(SB3Agent):
    """SB3's DQN; ``self.model`` is the ``stable_baselines3.DQN``. ``self.policy``'s logits are the Q-values."""

    algo_cls = DQN
    config_cls = DQNConfig
    config: DQNConfig

    def _algo_kwargs(self) -> dict[str, Any]:
        c = self.config
        return dict(
            learning_rate=schedule(c.learning_rate, c.lr_schedule),
            buffer_size=c.buffer_size,
            learning_starts=c.learning_starts,
            batch_size=c.batch_size,
            tau=c.tau,
            gamma=c.gamma,
            train_freq=c.train_freq,
            gradient_steps=c.gradient_steps,
            target_update_interval=c.target_update_interval,
            exploration_fraction=c.exploration_fraction,
            exploration_initial_eps=c.exploration_initial_eps,
            exploration_final_eps=c.exploration_final_eps,
            max_grad_norm=c.max_grad_norm,
            policy_kwargs=dict(net_arch=list(c.net_arch), activation_fn=ACTIVATIONS[c.activation]),
        )

    def _steps_per_iteration(self) -> int:
        return self.config.record_every

    def _source_linears(self) -> list[nn.Linear]:
        return [m for m in self.model.q_net.q_net if isinstance(m, nn.Linear)]
