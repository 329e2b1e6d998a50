"""Tuned default hyperparameters, per method and environment, in one readable place.

``default_hyperparameters(method, env_id)`` merges, in order: the method family's defaults for every
environment, then those for the environment family (``CartPole-v1``, ``gridworld`` for the ``gumbel_rl/``
suite, ``minigrid`` for Farama's MiniGrid ids), then those for the exact env id where one map needs its own
(rl-baselines3-zoo keys its tables by env id). Anything not set here takes the agent's ``Config`` default. Users
override any of them through ``make_agent(..., **hyperparameters)`` or ``train.py --hp name=value``.

What each hyperparameter means is the attribute docstring under its field in the method's ``Config`` class;
:func:`describe_hyperparameters` collects them (``python train.py hyperparameters METHOD --env ID`` prints them).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
from collections.abc import Mapping
from typing import Any

from agents.base import Config
from gumbel_rl.estimators import PATHWISE_ESTIMATORS

# PPO and DQN on small maps with Discrete observations (our gridworlds; FrozenLake-v1 and CliffWalking-v1, which the zoo
# lacks): small buffer, frequent target updates, long exploration, so that they learn in seconds.
_PPO_SMALL_GRID: dict[str, Any] = {"n_envs": 8, "n_steps": 32, "batch_size": 64, "n_epochs": 4, "learning_rate": 1e-3}
_DQN_SMALL_GRID: dict[str, Any] = {
    "n_envs": 4,
    "gamma": 0.95,
    "learning_rate": 1e-3,
    "buffer_size": 10_000,
    "learning_starts": 256,
    "batch_size": 64,
    "train_freq": 4,
    "gradient_steps": 4,
    "target_update_interval": 16,
    "exploration_fraction": 0.3,
    "exploration_final_eps": 0.05,
    "record_every": 256,
}

# family -> env family ("*" for all) -> hyperparameters
DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    # Pathwise through the twin (agents/pathwise.py), SHAC-style. "*" is PathwiseConfig's own defaults.
    # Gridworlds: a linear (tabular) critic starting at 0 (optimistic: the step cost makes visited cells negative,
    # so unvisited ones look better and get explored), gamma near 1 (a discount of 0.99 hides the goal in the maze),
    # an entropy bonus against early collapse, and a one-step actor gradient (actor_horizon 1: each action is
    # credited with r + gamma V(s') through the twin) over 8-step critic windows of 8 envs. Tuning (st-gumbel, 5
    # seeds, eval every 512 steps; median env steps to solve): the SHAC window (actor_horizon 0, 16 x 16) gave
    # EmptyRoom 768, FourRooms 8,960, Cliff 6,400, Slippery 0/5, Maze 4/5 at 33k; the one-step actor with a slower
    # critic (3e-3) gives EmptyRoom 1,088, FourRooms 5,184, Slippery 3/3 (seeds 0, 2, 3; 0/3 with a 1e-2 critic).
    # Cliff keeps the fast critic (5/5 at 2,624; 4/5 with 3e-3); Maze keeps the SHAC window (the one-step actor
    # solved 1/3: it stops exploring before it finds the goal) and adds the count bonus on the next cell
    # (explore_bonus 1, agents/pathwise.py): st-gumbel 10/10 seeds, median 34,304 env steps, against 7/10 and
    # 41,472 without it (eval every 512 steps, docs/benchmarks.md); reinmax and gumbel-rao 2/3 each with it (seeds
    # 0-2; not run without).
    # CartPole-v1: the twin's own objective ("env": Gymnasium's reward of 1 per step times the straight-through
    # survival, envs/cartpole_twin.py) over 8-step windows of 64 envs. Tuning (st-gumbel, eval every 2,048 env steps,
    # 5 seeds unless said; median env steps / train seconds to solve, on a shared 2-core machine): horizon 32 41k /
    # 1.7 s, 16 19k / 1.2 s (10 seeds), 8 10.8k / 1.0 s (10/10 seeds, the slowest 12.8k), 4 8.4k (10/10, but two at
    # 56k and 66k); n_envs 32 at horizon 8 6.4k (10/10, one at 41k); learning rates 1e-2: 27k at horizon 32, 4/5 at
    # 16. The survival's gradient helps: flattened (width 1000, value unchanged) 53k at horizon 32. relaxed, argmax,
    # reinmax and gumbel-rao solve 3/3 seeds with this entry (medians 10.8k-12.8k). Until then the default was the
    # hand-shaped reward (objective "shaped") at horizon 32: 41k / 1.1 s (10/10); at horizon 8 it solved 4/5 seeds.
    "pathwise": {
        "*": {},
        "CartPole-v1": {
            "objective": "env",
            "n_envs": 64,
            "horizon": 8,
            "gamma": 0.99,
            "learning_rate": 5e-3,
            "critic_learning_rate": 5e-3,
            "eval_every": 5_000,
        },
        "gridworld": {
            "n_envs": 8,
            "horizon": 8,
            "actor_horizon": 1,
            "gamma": 0.999,
            "learning_rate": 1e-2,
            "critic_learning_rate": 3e-3,
            "critic_arch": (),
            "ent_coef": 0.03,
            "eval_every": 2_048,
        },
        # MiniGrid (the twin of envs/minigrid_twin.py; 147 observation codes in 0..10, 7 actions, sparse goal reward):
        # the SHAC window over 16 envs x 16 steps and an entropy bonus. st-gumbel, eval every 2,048 steps, env steps to
        # solve, seeds 0, 1, 2: Empty-Random-6x6 18,688 / 14,592 / 16,640 (ent_coef 0: 18,688 / 20,736 / 20,736);
        # Empty-5x5 12,544 / 8,448 (seeds 0, 1; ent_coef 0: 14,592 / 26,880; the optimum 0.955); with
        # PathwiseConfig's 64 x 32 windows Empty-5x5 is not solved within 20k. LavaGapS5 (40k, seeds 0-9): 5/10 solved
        # (20,736 to 35,072). Not solved: DoorKey-5x5 (40k, seeds 0-2, ent_coef 0.03 or 0.01): random play rarely
        # finds the goal and the pathwise gradient is zero until it does. The count bonus on (position, carrying the
        # key) (explore_bonus, agents/pathwise.py; bench/bench_minigrid.py learning, 40k) is left off, as it does not
        # clearly help: LavaGapS5 6/10 at 0.1 (median 30,976), 4/10 at 0.3, 0/3 at 1 (seeds 0-2); DoorKey-5x5 0/3 at
        # 0.1, 0.3 and 1 (the best greedy return 0.48; the policy stays near uniform under ent_coef 0.03 and
        # collapses without it). SB3 PPO with the zoo's settings below: Empty-5x5 3,072 (seed 0), Empty-Random-6x6
        # 15,360 / 13,312 / 11,264, LavaGapS5 15,360 / 29,696 / 17,408, DoorKey-5x5 23,552 / -- / 23,552 (seeds 0-2,
        # 40k) -- fewer steps than st-gumbel everywhere.
        "minigrid": {"n_envs": 16, "horizon": 16, "ent_coef": 0.03, "eval_every": 2_048},
        "gumbel_rl/Cliff-4x12-v0": {"critic_learning_rate": 1e-2},
        "gumbel_rl/Maze-16x16-v0": {
            "n_envs": 16,
            "horizon": 16,
            "actor_horizon": 0,
            "critic_learning_rate": 1e-2,
            "explore_bonus": 1.0,
        },
    },
    # <estimator>-critic (agents/critic.py): one generic set, CriticConfig's own defaults, for every env (issue 12:
    # no per-env entries). It is the set once tuned for CartPole-v1 (train_freq 1, batch 128, critic (128, 128) at
    # 2e-3, actor 1e-3, polyak 0.05, soft_target False, n_step 3) plus what made it learn off CartPole: rewards in
    # units of their random-phase RMS, a count bonus beta / sqrt(N(s')) (beta 1) and a critic linear in the action.
    # Measured with st-gumbel-critic, greedy return over 10 episodes (see agents/critic.py's docstring).
    "critic": {"*": {}},
    # Model-based (agents/model_based.py): ONE generic set for every env, ModelConfig's own defaults (issue 12 item 3:
    # no per-id entries for the development suite). Measured with them (bench/bench_suite.py, median real env steps
    # to solve): CartPole-v1 4,100 (9 of 10 seeds), FourRooms 2,308 (10/10), Acrobot-v1 4,100 and Maze 7,172 (3/3
    # seeds run); see docs/benchmarks.md.
    "model": {"*": {}},
    # REINFORCE with a value baseline (agents/reinforce.py): tuned on CartPole-v1 and EmptyRoom-5x5, seeds 0-3.
    "reinforce": {
        "*": {},
        "CartPole-v1": {"n_envs": 16, "n_steps": 64, "learning_rate": 3e-3, "ent_coef": 0.01, "gamma": 0.99},
        "gridworld": {"n_envs": 8, "n_steps": 32, "learning_rate": 3e-3, "ent_coef": 0.01, "gamma": 0.99},
    },
    # SB3 (agents/sb3.py). CartPole-v1: rl-baselines3-zoo's hyperparams/{ppo,a2c,dqn}.yml (budgets 1e5, 5e5, 5e4
    # steps); lr/clip "linear" = the zoo's lin_<value>. Gridworlds: small rollouts so that they learn in seconds.
    "ppo": {
        "*": {},
        "CartPole-v1": {
            "n_envs": 8,
            "n_steps": 32,
            "batch_size": 256,
            "gae_lambda": 0.8,
            "gamma": 0.98,
            "n_epochs": 20,
            "ent_coef": 0.0,
            "learning_rate": 1e-3,
            "lr_schedule": "linear",
            "clip_range": 0.2,
            "clip_range_schedule": "linear",
        },
        "gridworld": _PPO_SMALL_GRID,
        # rl-baselines3-zoo hyperparams/ppo.yml, minigrid-defaults (MiniGrid-Empty-Random-5x5-v0, DoorKey-5x5 at 1e5
        # steps; FourRooms at 5e6 with n_steps 512). The zoo observes through FlatObsWrapper (image + mission) under
        # `normalize: true` (VecNormalize), which our SB3 wrapper does not offer; here every method sees the same
        # ImgObsWrapper + FlattenObservation codes (agents/evaluation.py).
        "minigrid": {
            "n_envs": 8,
            "n_steps": 128,
            "batch_size": 64,
            "gae_lambda": 0.95,
            "gamma": 0.99,
            "n_epochs": 10,
            "ent_coef": 0.0,
            "learning_rate": 2.5e-4,
            "clip_range": 0.2,
        },
        "MiniGrid-FourRooms-v0": {"n_steps": 512},
        # rl-baselines3-zoo hyperparams/ppo.yml, Acrobot-v1 (budget 1e6): the zoo also sets `normalize: true`
        # (VecNormalize of observations and rewards), which our SB3 wrapper does not offer, so it runs without it.
        "Acrobot-v1": {"n_envs": 16, "n_steps": 256, "gae_lambda": 0.94, "gamma": 0.99, "n_epochs": 4, "ent_coef": 0.0},
        # Not in the zoo: our gridworld settings (FrozenLake and CliffWalking are small maps with Discrete
        # observations, like the gumbel_rl/ suite, where these learn in seconds).
        "FrozenLake-v1": _PPO_SMALL_GRID,
        "CliffWalking-v1": _PPO_SMALL_GRID,
    },
    # rl-baselines3-zoo hyperparams/a2c.yml: CartPole-v1 (5e5), Acrobot-v1 (5e5; the zoo's `normalize: true` is
    # not offered by our SB3 wrapper, so it runs without it).
    "a2c": {
        "*": {},
        "CartPole-v1": {"n_envs": 8, "ent_coef": 0.0},
        "gridworld": {"n_envs": 8},
        "Acrobot-v1": {"n_envs": 16, "ent_coef": 0.0},
    },
    "dqn": {
        "*": {},
        "CartPole-v1": {
            "learning_rate": 2.3e-3,
            "batch_size": 64,
            "buffer_size": 100_000,
            "learning_starts": 1_000,
            "gamma": 0.99,
            "target_update_interval": 10,
            "train_freq": 256,
            "gradient_steps": 128,
            "exploration_fraction": 0.16,
            "exploration_final_eps": 0.04,
            "net_arch": (256, 256),
        },
        "gridworld": _DQN_SMALL_GRID,
        # rl-baselines3-zoo hyperparams/dqn.yml, Acrobot-v1 ("Tuned", budget 1e5). The zoo's gradient_steps -1 means
        # "as many as env steps collected", train_freq 4 x 1 env = 4 here; policy_kwargs net_arch [256, 256].
        "Acrobot-v1": {
            "learning_rate": 6.3e-4,
            "batch_size": 128,
            "buffer_size": 50_000,
            "learning_starts": 0,
            "gamma": 0.99,
            "target_update_interval": 250,
            "train_freq": 4,
            "gradient_steps": 4,
            "exploration_fraction": 0.12,
            "exploration_final_eps": 0.1,
            "net_arch": (256, 256),
        },
        # Not in the zoo: our gridworld settings (small Discrete-observation maps), gamma 0.99 on FrozenLake (its
        # only reward is the goal's, and slipping makes the safe path long).
        "FrozenLake-v1": {**_DQN_SMALL_GRID, "gamma": 0.99},
        "CliffWalking-v1": _DQN_SMALL_GRID,
    },
}


def method_family(method: str) -> str:
    """``pathwise`` for the twin estimators, ``critic`` for ``<estimator>-critic``, ``model`` for
    ``<estimator>-model``, else the method itself."""
    if method in PATHWISE_ESTIMATORS:
        return "pathwise"
    if method.endswith("-critic"):
        return "critic"
    if method.endswith("-model"):
        return "model"
    return method


def env_family(env_id: str) -> str:
    """``gridworld`` for the ``gumbel_rl/`` suite, ``minigrid`` for Farama's ``MiniGrid-`` ids, else the id itself."""
    if env_id.startswith("gumbel_rl/"):
        return "gridworld"
    return "minigrid" if env_id.startswith("MiniGrid-") else env_id


def default_hyperparameters(method: str, env_id: str) -> dict[str, Any]:
    """The tuned defaults for ``method`` on ``env_id`` (a fresh dict)."""
    table = DEFAULTS.get(method_family(method), {})
    return {**table.get("*", {}), **table.get(env_family(env_id), {}), **table.get(env_id, {})}


@dataclasses.dataclass(frozen=True)
class HyperparameterDoc:
    """One hyperparameter: its ``--hp`` name, its default for a method on an env, whether that default comes from
    the tuned table above (rather than the ``Config`` class), and its docstring (empty if it has none)."""

    name: str
    default: Any
    tuned: bool
    doc: str


def field_docstrings(config_cls: type[Config]) -> dict[str, str]:
    """The attribute docstrings of ``config_cls``'s fields (the string literal right under each annotated field),
    read from the source of the class and of every base class; a subclass's docstring wins.

    Raises:
        OSError: the source of a class cannot be found (e.g. a class defined in an interactive session).
    """
    docs: dict[str, str] = {}
    for cls in reversed(config_cls.__mro__):
        if not (isinstance(cls, type) and issubclass(cls, Config)):
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for stmt, after in zip(body, body[1:], strict=False):
            doc = after.value.value if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) else None
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and isinstance(doc, str):
                docs[stmt.target.id] = " ".join(inspect.cleandoc(doc).split())
    return docs


def describe_hyperparameters(config: Config, tuned: Mapping[str, Any] = ()) -> list[HyperparameterDoc]:
    """Every field of ``config`` (a resolved config: values are the defaults for one method on one env), in field
    order, with its docstring; ``tuned`` is the tuned table's entries for that method and env
    (:func:`default_hyperparameters`), which marks the defaults that come from it."""
    docs = field_docstrings(type(config))
    values = config.to_dict()
    return [
        HyperparameterDoc(f.name, values[f.name], f.name in tuned, docs.get(f.name, ""))
        for f in dataclasses.fields(config)
    ]
