"""Stable-Baselines3's PPO, A2C and DQN behind the gumbel-rl ``Agent`` interface (methods ``ppo``, ``a2c``, ``dqn``).

``learn`` runs SB3's own ``model.learn``; an SB3 callback (:class:`_Bridge`) connects it to our framework so that
evaluation, record rows, "solved" and our callbacks (which may stop it) work as for every other method:

- env steps are ``model.num_timesteps`` (every transition of every vectorised copy counts as one);
- one "iteration" (record row, evaluation when due, our callback) is one SB3 rollout *and the update that follows
  it*: the bridge does its bookkeeping when the next rollout starts (SB3 trains after ``on_rollout_end``) and at
  the end of training. PPO/A2C: every rollout of ``n_steps * n_envs`` steps. DQN: every ``record_every`` env
  steps, rounded up to whole ``train_freq`` rollouts;
- ``train_wall_s`` excludes the time spent in our bookkeeping and evaluation;
- a callback returning False makes the bridge's next ``on_step`` return False: SB3 stops after one more
  vectorised step (``n_envs`` transitions, counted in ``num_env_steps`` but in no record row).

Logging: the SB3 model writes into the agent's own SB3 ``Logger`` (``set_logger`` reaches the model too), so a
record row carries SB3's own names unchanged -- PPO ``train/value_loss``, ``train/policy_gradient_loss``,
``train/entropy_loss``, ``train/approx_kl``, ``train/clip_fraction``, ``train/clip_range``, ``train/loss``,
``train/explained_variance``, ``train/learning_rate``, ``train/n_updates``; A2C ``train/policy_loss``,
``train/value_loss``, ...; DQN ``train/loss`` and ``rollout/exploration_rate`` (epsilon) -- plus
``rollout/ep_rew_mean`` (the mean of ``model.ep_info_buffer``'s returns, the last 100 episodes, as SB3) and
``rollout/episodes`` (training episodes finished so far).

``self.policy`` is a ``GumbelPolicy`` with the SB3 network's architecture and a copy of its weights, refreshed
before each evaluation and save: PPO/A2C ``mlp_extractor.policy_net`` + ``action_net`` (the logits); DQN
``q_net`` (Q-values used as logits), so its greedy actions are SB3's deterministic actions. Its *sampled* actions
are softmax samples, not SB3's (epsilon-greedy for DQN).

Schedules: SB3 decays ``lin_`` learning rates / clip ranges and DQN's epsilon over the progress
``num_timesteps / total``, where ``total`` is the absolute ``total_env_steps`` given to ``learn`` (the zoo's
``n_timesteps`` budget reproduces the zoo's schedules). DQN's ``polyak`` is SB3's ``tau`` (the target network's
soft-update rate; 1 = hard copy); in gumbel-rl ``tau`` is only the Gumbel-Softmax temperature.

Checkpoints hold no pickles: ``model.get_parameters()`` (state dicts of the networks, DQN's target network and
the optimiser) and everything SB3's next rollout depends on, so that **a run resumed from a checkpoint taken at an
iteration boundary continues exactly as the uninterrupted run** (same record rows, same weights), for PPO, A2C and
DQN. An iteration boundary is where our callbacks run (the bridge's bookkeeping: after an update, before the next
rollout), so every checkpoint written by a callback or after ``learn`` returns is one. Saved:

- SB3's counters: ``num_timesteps``, ``_n_updates``, ``_episode_num``, DQN's ``_n_calls`` (target updates) and
  ``exploration_rate``, and ``_current_progress_remaining`` (SB3 recomputes it from ``num_timesteps`` and
  ``_total_timesteps``, which ``learn(total_env_steps)`` sets to the same absolute total as in the uninterrupted
  run, so resume with the same ``total_env_steps``);
- ``_last_obs``, ``_last_episode_starts``, ``ep_info_buffer`` / ``ep_success_buffer`` and our episode count;
- the RNG streams SB3 draws from: NumPy's global generator (PPO/A2C minibatch permutations, DQN's replay samples
  and epsilon test), the action space's generator (DQN's random actions), torch's global generator (SB3's
  action samples; saved by ``Agent.save``);
- the vectorised environments (a ``DummyVecEnv``, which resets finished copies itself without a seed, so each
  copy's episodes continue one NumPy stream): per copy, the seed of its last seeded reset or the state of its
  generator before its current episode's reset, and the actions taken since. ``Agent.load`` resets each copy the
  same way and replays its actions (at most one episode), then checks that the observation and the env's
  generator equal the saved ones (``ValueError`` if not: an environment that is not deterministic given its
  generator and actions cannot be resumed exactly);
- DQN's replay buffer without pickling: its filled part as tensors (observations, next observations, actions,
  rewards, dones, timeouts) plus ``pos`` and ``full`` (large for big buffers of big observations).

A checkpoint taken elsewhere -- after a callback stopped training, whose extra vectorised step SB3 took but did
not keep in ``_last_obs``, or on Ctrl-C inside a rollout -- restores the same state as continuing in the same
process would: the partial rollout is lost, as it would be in-process. Python's ``random`` module is not saved
(SB3 seeds it but does not draw from it).
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback as SB3Callback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.utils import LinearSchedule, safe_mean
from stable_baselines3.common.vec_env import DummyVecEnv
from torch import nn

from agents.base import (
    EP_REW_MEAN,
    Agent,
    Config,
    check_bool,
    check_choice,
    check_fraction,
    check_positive,
    torch_threads,
)
from agents.callbacks import BaseCallback
from agents.evaluation import SOLVE_EPISODES, EvalResult, apply_wrappers, env_wrappers, make_kwargs
from agents.registry import register_method
from gumbel_rl.policy import ACTIVATIONS, GumbelPolicy

SCHEDULES = ("constant", "linear")
EPISODES = "rollout/episodes"


def schedule(value: float, kind: str) -> float | LinearSchedule:
    """``value`` itself (constant) or the zoo's ``lin_<value>``: ``value * progress_remaining``."""
    return float(value) if kind == "constant" else LinearSchedule(float(value), 0.0, 1.0)


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
        check_positive("n_envs", self.n_envs, integer=True)
        check_positive("learning_rate", self.learning_rate)
        check_choice("lr_schedule", self.lr_schedule, SCHEDULES)
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
        check_bool("normalize_advantage", self.normalize_advantage)
        if self.batch_size < 2 and self.normalize_advantage:
            raise ValueError(f"hyperparameter batch_size must be >= 2 with normalize_advantage, got {self.batch_size}")
        check_positive("n_epochs", self.n_epochs, integer=True)
        check_fraction("gae_lambda", self.gae_lambda)
        check_positive("clip_range", self.clip_range)
        check_choice("clip_range_schedule", self.clip_range_schedule, SCHEDULES)
        check_positive("ent_coef", self.ent_coef, allow_zero=True)
        check_positive("vf_coef", self.vf_coef, allow_zero=True)
        check_positive("max_grad_norm", self.max_grad_norm)


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
        check_bool("use_rms_prop", self.use_rms_prop)
        check_positive("rms_prop_eps", self.rms_prop_eps)
        check_bool("normalize_advantage", self.normalize_advantage)


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
    polyak: float = 1.0
    """Target network soft-update rate in (0, 1] (SB3's ``tau``; 1: hard copy every target_update_interval)."""
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
        check_fraction("polyak", self.polyak)
        check_positive("polyak", self.polyak)
        check_positive("train_freq", self.train_freq, integer=True)
        check_positive("gradient_steps", self.gradient_steps, integer=True)
        check_positive("target_update_interval", self.target_update_interval, integer=True)
        check_fraction("exploration_fraction", self.exploration_fraction)
        check_fraction("exploration_initial_eps", self.exploration_initial_eps)
        check_fraction("exploration_final_eps", self.exploration_final_eps)
        check_positive("max_grad_norm", self.max_grad_norm)
        check_positive("record_every", self.record_every, integer=True)


def _recorded(env: gym.Env, wrappers: list[Any]) -> _EpisodeRecorder:
    """``env`` in the package's ``wrappers`` (``agents.evaluation.env_wrappers``) and, outermost, an
    :class:`_EpisodeRecorder` (SB3's ``make_vec_env`` puts its ``Monitor`` innermost)."""
    return _EpisodeRecorder(apply_wrappers(env, wrappers))


class _EpisodeRecorder(gym.Wrapper):
    """Outermost wrapper of each ``DummyVecEnv`` copy: remembers how its current episode started (the reset seed,
    or the env generator's state before an unseeded reset) and the actions taken since, so that a checkpoint can
    restore the copy by replaying them (:meth:`replay`)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.reset_seed: int | None = None
        self.rng_before = ""
        self.actions: list[Any] = []
        self.last_obs: Any = None

    def _rng_state(self) -> str:
        return json.dumps(self.env.unwrapped.np_random.bit_generator.state)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        self.reset_seed = seed
        self.rng_before = "" if seed is not None else self._rng_state()
        self.actions = []
        obs, info = self.env.reset(seed=seed, options=options)
        self.last_obs = obs
        return obs, info

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        self.actions.append(np.array(action, copy=True))
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.last_obs = obs
        return obs, reward, terminated, truncated, info

    def state(self) -> dict[str, Any]:
        """Plain data: how the current episode started, its actions, the current observation and generator."""
        actions = torch.as_tensor(np.stack(self.actions)) if self.actions else torch.zeros(0, dtype=torch.long)
        return {
            "seed": -1 if self.reset_seed is None else int(self.reset_seed),
            "rng_before": self.rng_before,
            "actions": actions,
            "obs": torch.as_tensor(np.array(self.last_obs)),
            "rng_now": self._rng_state(),
        }

    def replay(self, state: dict[str, Any]) -> bool:
        """Restore the copy from :meth:`state`: reset as the episode was reset, replay the actions. Returns whether
        the observation and the env's generator now equal the saved ones."""
        if state["seed"] >= 0:
            self.reset(seed=int(state["seed"]))
        else:
            self.env.unwrapped.np_random.bit_generator.state = json.loads(state["rng_before"])
            self.reset()
        for action in state["actions"].cpu().numpy():
            *_, terminated, truncated, _ = self.step(action)
            if terminated or truncated:  # the saved episode had not ended: the replay diverged
                return False
        obs = np.array(self.last_obs)
        return bool(np.array_equal(obs, state["obs"].cpu().numpy()) and self._rng_state() == state["rng_now"])


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
        if self.stop:
            return False
        # SB3 adds these episodes to ep_info_buffer right after this call (Monitor's info["episode"]).
        self.agent.episodes += sum("episode" in info for info in self.locals["infos"])
        return True

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
    """Base of the SB3 agents: builds the SB3 model, mirrors it into ``self.policy``, bridges ``learn``.

    Attributes (beyond ``Agent``'s): ``model`` (the SB3 algorithm), ``venv`` (its ``DummyVecEnv``), ``episodes``
    (training episodes finished so far).
    """

    algo_cls: ClassVar[type[BaseAlgorithm]]
    config: SB3Config

    def _setup(self) -> None:
        cfg = self.config
        venv = make_vec_env(
            self.env_id,
            n_envs=cfg.n_envs,
            seed=self.seed,
            wrapper_class=_recorded,
            wrapper_kwargs={"wrappers": env_wrappers(self.env_id)},
            env_kwargs=make_kwargs(self.env_id),
        )
        assert isinstance(venv, DummyVecEnv)  # make_vec_env's default vec_env_cls
        self.venv: DummyVecEnv = venv
        self._closed = False
        self.model = self.algo_cls(
            "MlpPolicy", self.venv, seed=self.seed, device=self.device, verbose=0, **self._algo_kwargs()
        )
        self.model.set_logger(self.logger)
        self.episodes = 0
        self.policy = GumbelPolicy(
            self.venv.observation_space, self.venv.action_space, net_arch=cfg.net_arch, activation=cfg.activation
        ).to(self.device)
        self._iteration_steps = self._steps_per_iteration()
        self.refresh_policy()

    def set_logger(self, logger: Logger) -> None:
        """Write every record row, and SB3's own records, to ``logger`` (an SB3 ``Logger``)."""
        super().set_logger(logger)
        self.model.set_logger(logger)

    def close(self) -> None:
        """Close the SB3 vectorised environment (safe to call more than once)."""
        if not self._closed:
            self._closed = True
            self.venv.close()

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
        """SB3's scalars recorded since the last row under their own names (``train/*``, DQN's
        ``rollout/exploration_rate``), ``rollout/ep_rew_mean`` (as SB3, from ``ep_info_buffer``) and
        ``rollout/episodes``."""
        out: dict[str, float] = {}
        for key, value in self.model.logger.name_to_value.items():
            if key.startswith("train/") or key == "rollout/exploration_rate":
                if isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool):
                    out[key] = float(value)
        if self.model.ep_info_buffer:
            out[EP_REW_MEAN] = float(safe_mean([ep["r"] for ep in self.model.ep_info_buffer]))
        out[EPISODES] = float(self.episodes)
        return out

    def _train_iteration(self) -> tuple[int, dict[str, float]]:
        raise RuntimeError("SB3 agents train through learn(), which runs SB3's own model.learn")

    def learn(self, total_env_steps: int, callback: Any = None) -> SB3Agent:
        """Run SB3's ``model.learn`` until ``num_env_steps >= total_env_steps`` (absolute) or a callback stops it.

        The whole ``total_env_steps`` is SB3's budget for its schedules (learning rate, clip range, epsilon).
        """
        check_positive("total_env_steps", total_env_steps, integer=True)
        with torch_threads(self.n_threads):
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

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Refresh ``self.policy`` from the SB3 model, then ``Agent.save``."""
        self.refresh_policy()
        return super().save(path)

    # ---- checkpoints ---------------------------------------------------------------------------------------
    def _recorders(self) -> list[_EpisodeRecorder]:
        recorders = [env for env in self.venv.envs if isinstance(env, _EpisodeRecorder)]
        if len(recorders) != len(self.venv.envs):
            raise RuntimeError("the SB3 vec env's copies are not wrapped in _EpisodeRecorder")
        return recorders

    def _training_state(self) -> dict[str, Any]:
        """SB3's state dicts and everything its next rollout depends on (see the module docstring)."""
        model = self.model
        keys, pos, has_gauss, gauss = np.random.get_state()[1:]  # noqa: NPY002 - the generator SB3 draws from
        state: dict[str, Any] = {
            "sb3_parameters": model.get_parameters(),
            "num_timesteps": int(model.num_timesteps),
            "n_updates": int(getattr(model, "_n_updates", 0)),
            "episode_num": int(model._episode_num),
            "total_timesteps": int(model._total_timesteps),
            "progress_remaining": float(model._current_progress_remaining),
            "episodes": int(self.episodes),
            "numpy_global": {
                "keys": torch.as_tensor(keys.astype(np.int64)),
                "pos": int(pos),
                "has_gauss": int(has_gauss),
                "gauss": float(gauss),
            },
            "action_space_rng": json.dumps(model.action_space.np_random.bit_generator.state),
        }
        if model._last_obs is not None:
            ep_info = list(model.ep_info_buffer or [])
            state["rollout"] = {
                "last_obs": torch.as_tensor(np.array(model._last_obs)),
                "last_episode_starts": torch.as_tensor(np.array(model._last_episode_starts)),
                "ep_info": {k: torch.tensor([float(e[k]) for e in ep_info], dtype=torch.float64) for k in "rlt"},
                "ep_success": torch.tensor([float(s) for s in model.ep_success_buffer or []], dtype=torch.float64),
                "envs": [rec.state() for rec in self._recorders()],
            }
        return state

    def _load_training_state(self, state: dict[str, Any]) -> None:
        """Inverse of ``_training_state``; replays each env copy's episode.

        Raises:
            ValueError: the replayed environments differ from the saved ones (see the module docstring).
        """
        model = self.model
        model.set_parameters(state["sb3_parameters"], exact_match=True, device=self.device)
        model.num_timesteps = int(state["num_timesteps"])
        model._n_updates = int(state["n_updates"])
        model._episode_num = int(state["episode_num"])
        model._total_timesteps = int(state["total_timesteps"])
        model._current_progress_remaining = float(state["progress_remaining"])
        self.episodes = int(state["episodes"])
        g = state["numpy_global"]
        keys = g["keys"].cpu().numpy().astype(np.uint32)
        np.random.set_state(("MT19937", keys, g["pos"], g["has_gauss"], g["gauss"]))  # noqa: NPY002
        model.action_space.np_random.bit_generator.state = json.loads(state["action_space_rng"])
        rollout = state.get("rollout")
        if rollout is not None:
            window = model._stats_window_size
            ep = rollout["ep_info"]
            model.ep_info_buffer = deque(
                ({"r": r, "l": int(n), "t": t} for r, n, t in zip(*(ep[k].tolist() for k in "rlt"), strict=True)),
                maxlen=window,
            )
            model.ep_success_buffer = deque(rollout["ep_success"].tolist(), maxlen=window)
            model._last_obs = rollout["last_obs"].cpu().numpy()
            model._last_episode_starts = rollout["last_episode_starts"].cpu().numpy()
            self.venv.reset()  # consumes the vec env's pending seeds, as the first learn() did
            for i, (rec, saved) in enumerate(zip(self._recorders(), rollout["envs"], strict=True)):
                if not rec.replay(saved):
                    raise ValueError(
                        f"cannot resume {self.env_id!r} exactly: replaying env copy {i}'s episode (its reset and "
                        "saved actions) does not reproduce the saved observation and generator state (is the "
                        "environment deterministic given its generator?)"
                    )
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


_REPLAY_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


@register_method("dqn", "Stable-Baselines3 DQN (rl-baselines3-zoo hyperparameters for CartPole-v1)")
class DQNAgent(SB3Agent):
    """SB3's DQN; ``self.model`` is the ``stable_baselines3.DQN``. ``self.policy``'s logits are the Q-values."""

    algo_cls = DQN
    config_cls = DQNConfig
    config: DQNConfig
    model: DQN

    def _algo_kwargs(self) -> dict[str, Any]:
        c = self.config
        return dict(
            learning_rate=schedule(c.learning_rate, c.lr_schedule),
            buffer_size=c.buffer_size,
            learning_starts=c.learning_starts,
            batch_size=c.batch_size,
            tau=c.polyak,
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

    def _replay_arrays(self) -> list[str]:
        """The replay buffer's arrays (``next_observations`` is None with ``optimize_memory_usage``)."""
        return [name for name in _REPLAY_ARRAYS if getattr(self.model.replay_buffer, name) is not None]

    def _training_state(self) -> dict[str, Any]:
        """``SB3Agent``'s, plus ``_n_calls``, epsilon and the replay buffer's filled part (no pickles)."""
        state = super()._training_state()
        model, rb = self.model, self.model.replay_buffer
        assert rb is not None  # built with the model
        n = rb.buffer_size if rb.full else rb.pos
        state["n_calls"] = int(model._n_calls)
        state["exploration_rate"] = float(model.exploration_rate)
        state["replay_buffer"] = {
            "pos": int(rb.pos),
            "full": bool(rb.full),
            **{name: torch.from_numpy(getattr(rb, name)[:n].copy()) for name in self._replay_arrays()},
        }
        return state

    def _load_training_state(self, state: dict[str, Any]) -> None:
        super()._load_training_state(state)
        model, rb = self.model, self.model.replay_buffer
        assert rb is not None  # built with the model
        model._n_calls = int(state["n_calls"])
        model.exploration_rate = float(state["exploration_rate"])
        saved = state["replay_buffer"]
        for name in self._replay_arrays():
            data = saved[name].cpu().numpy()
            getattr(rb, name)[: len(data)] = data
        rb.pos, rb.full = int(saved["pos"]), bool(saved["full"])
