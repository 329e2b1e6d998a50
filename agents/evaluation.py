"""Evaluation in the real Gymnasium environment, the same for every method.

Returns are measured with Stable-Baselines3's ``evaluate_policy`` (which splits the episodes evenly over the
vectorised copies, so short episodes are not over-counted) on ``gymnasium.make(env_id)`` as :func:`make_env`
builds it: Gymnasium's own CartPole-v1, our registered gridworlds, MiniGrid -- never a twin. "Solved" means the mean
return over 100 deterministic episodes reaches the environment's ``reward_threshold``. :func:`evaluate_many` runs the
same evaluation for many policies at once in one Gymnasium vector env (one batched forward per step;
``agents.many_seeds``), with each policy's result exactly the one :func:`evaluate` gives it.

Environments by name: every env id this package accepts may take Gymnasium's ``module:id`` form
(``mypkg.envs:audit/Corridor-v0``), where ``module`` is imported -- as ``gymnasium.make`` does -- before ``id`` is
looked up in the registry (:func:`env_spec`); :func:`import_gym_packages` imports packages that register envs
(``train.py --gym-packages``, as rl-baselines3-zoo's).

Environments without a time limit (Gymnasium's ``CliffWalking-v1``, often a user's own) get one of
:data:`DEFAULT_EPISODE_LIMIT` steps in training and evaluation (:func:`make_kwargs`, used wherever an agent or an
evaluation builds the env), so that a greedy policy that never reaches the goal cannot make an episode -- and so
an evaluation -- run forever. Ids registered without a ``reward_threshold`` for which the package can compute one
take it from :data:`COMPUTED_THRESHOLDS`; for any other such id "solved" is undefined and runs use their budget.

MiniGrid (``minigrid``, the ``minigrid`` extra): every env the package builds comes from :func:`make_env`, which
wraps the ids with a twin (``envs.MINIGRID_IDS``) in :data:`MINIGRID_OBS_WRAPPERS` (:func:`env_wrappers`) -- the
observation the twin's ``observe`` reproduces -- with ``max_episode_steps`` at the env's own ``max_steps``
(:func:`make_kwargs`), so that every method (twin methods evaluating, REINFORCE, the critic family, SB3) sees the
same observations. Importing the package changes nothing in Gymnasium's registry: ``gymnasium.make(id)`` still
gives ``minigrid``'s Dict observation, and a loop of one's own applies the wrappers itself
(``FlattenObservation(ImgObsWrapper(gymnasium.make(id)))``, or ``make_env(id)``). Their "solved" thresholds are
computed (:data:`MINIGRID_THRESHOLDS`).
"""

from __future__ import annotations

import functools
import importlib
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import EnvSpec
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

import envs  # (registers the gumbel_rl/ gridworlds)
from envs.minigrid_twin import EXTRA_HINT, MINIGRID_SPECS, minigrid_available

SOLVE_EPISODES = 100
"""Episodes of the deterministic evaluation that decides "solved"."""

DEFAULT_EPISODE_LIMIT = 1_000
"""Time limit (env steps per episode) of an environment registered without ``max_episode_steps``."""

MINIGRID_THRESHOLD_MARGIN = 0.05
"""What a MiniGrid threshold leaves below the optimal mean return (0.05 = ``0.05 * max_steps / 0.9`` extra steps per
episode: 5.6 on Empty-5x5 and FourRooms, 13.9 on DoorKey-5x5)."""

# Mean optimal return ``1 - 0.9 * n* / max_steps`` over 1,000 layouts from the twin's generator (seed 0), n* the
# shortest solution by breadth-first search (envs.minigrid_twin.optimal_return_stats); standard deviation over layouts
# 0 for the fixed Empty maps, 0.002-0.012 for the others, 0.066 for FourRooms. Recompute one with
# python -c "from envs.minigrid_twin import *; print(optimal_return_stats('MiniGrid-DoorKey-5x5-v0'))"
MINIGRID_OPTIMAL_RETURNS: dict[str, float] = {
    "MiniGrid-DoorKey-16x16-v0": 0.9881,
    "MiniGrid-DoorKey-5x5-v0": 0.9650,
    "MiniGrid-DoorKey-6x6-v0": 0.9692,
    "MiniGrid-DoorKey-8x8-v0": 0.9763,
    "MiniGrid-Empty-16x16-v0": 0.9763,
    "MiniGrid-Empty-5x5-v0": 0.9550,
    "MiniGrid-Empty-6x6-v0": 0.9562,
    "MiniGrid-Empty-8x8-v0": 0.9613,
    "MiniGrid-Empty-Random-5x5-v0": 0.9694,
    "MiniGrid-Empty-Random-6x6-v0": 0.9726,
    "MiniGrid-FourRooms-v0": 0.8520,
    "MiniGrid-LavaCrossingS11N5-v0": 0.9596,
    "MiniGrid-LavaCrossingS9N1-v0": 0.9605,
    "MiniGrid-LavaCrossingS9N2-v0": 0.9555,
    "MiniGrid-LavaCrossingS9N3-v0": 0.9538,
    "MiniGrid-LavaGapS5-v0": 0.9459,
    "MiniGrid-LavaGapS6-v0": 0.9484,
    "MiniGrid-LavaGapS7-v0": 0.9522,
    "MiniGrid-SimpleCrossingS11N5-v0": 0.9596,
    "MiniGrid-SimpleCrossingS9N1-v0": 0.9605,
    "MiniGrid-SimpleCrossingS9N2-v0": 0.9555,
    "MiniGrid-SimpleCrossingS9N3-v0": 0.9538,
}

MINIGRID_THRESHOLDS: dict[str, float] = {
    env_id: round(ret - MINIGRID_THRESHOLD_MARGIN, 4) for env_id, ret in MINIGRID_OPTIMAL_RETURNS.items()
}
"""``reward_threshold`` of the MiniGrid ids with a twin (``minigrid`` registers none): the mean optimal return over
generated layouts (:data:`MINIGRID_OPTIMAL_RETURNS`) minus :data:`MINIGRID_THRESHOLD_MARGIN`."""

COMPUTED_THRESHOLDS: dict[str, float] = {"CliffWalking-v1": -13.0}
"""``reward_threshold`` of ids Gymnasium registers without one. CliffWalking-v1: its optimal return, -13 (value
iteration on its exact model under the default time limit, checked by a test; the env is deterministic, so a greedy
optimal policy scores exactly that and no margin is needed)."""

MINIGRID_OBS_WRAPPERS = "minigrid.wrappers.ImgObsWrapper + gymnasium.wrappers.FlattenObservation"
"""The observation wrappers (innermost first) that :func:`make_env` applies to every MiniGrid id with a twin: the
7x7x3 egocentric view (object, colour, state), flattened to (147,) uint8 in [x, y, channel] order. A policy trained
on such an id expects ``FlattenObservation(ImgObsWrapper(gymnasium.make(id)))``'s observations."""


@dataclass(frozen=True)
class EvalResult:
    """Mean and standard deviation of the episode return over ``episodes`` episodes."""

    mean: float
    std: float
    episodes: int
    deterministic: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def import_gym_packages(packages: Sequence[str], source: str = "--gym-packages") -> list[str]:
    """Import ``packages`` (modules that register Gymnasium envs when imported); returns them as a list.

    Raises:
        ValueError: a name that is not a string or cannot be imported (one line naming it and ``source``).
    """
    imported = []
    for name in packages:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{source}: a package name must be a non-empty string, got {name!r}")
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ValueError(f"{source}: cannot import {name!r} ({type(exc).__name__}: {exc})") from None
        imported.append(name)
    return imported


def env_spec(env_id: str) -> EnvSpec:
    """Gymnasium's spec of ``env_id``; for an id ``module:id``, ``module`` is imported first (Gymnasium's
    convention: importing it registers ``id``), so the id is known here exactly when ``gymnasium.make`` knows it;
    a ``MiniGrid-`` id imports ``minigrid`` (which registers its ids) when it is installed.

    Raises:
        ValueError: an unimportable module, or an id that is not registered (one line naming it).
    """
    if not isinstance(env_id, str) or env_id.count(":") > 1:
        raise ValueError(f"environment id must be a string ID or MODULE:ID, got {env_id!r}")
    module, _, name = env_id.rpartition(":")
    if module:
        import_gym_packages([module], source=f"environment id {env_id!r}")
    if name.startswith("MiniGrid-"):
        if not minigrid_available():
            raise ValueError(f"environment id {env_id!r}: {EXTRA_HINT}")
        import minigrid  # noqa: F401  (registers its ids, as ``gymnasium.make("minigrid:" + id)`` would)
    try:
        return gym.spec(name)
    except gym.error.Error:
        known = ", ".join(["CartPole-v1", *envs.GRIDWORLD_IDS])
        where = f" (module {module!r} did not register {name!r})" if module else ""
        raise ValueError(
            f"unknown environment id {env_id!r}{where}; for example: {known}, any Gymnasium id, MODULE:ID "
            "(imports MODULE first), or an id registered by a package named in --gym-packages"
        ) from None


def reward_threshold(env_id: str) -> float | None:
    """The ``reward_threshold`` registered for ``env_id``, else the one in :data:`COMPUTED_THRESHOLDS` or
    :data:`MINIGRID_THRESHOLDS`, else None; ``module:id`` ids import ``module`` (:func:`env_spec`).

    Raises:
        ValueError: an unknown id or unimportable module.
    """
    spec = env_spec(env_id)
    if spec.reward_threshold is not None:
        return spec.reward_threshold
    return COMPUTED_THRESHOLDS.get(spec.id, MINIGRID_THRESHOLDS.get(spec.id))


def make_kwargs(env_id: str) -> dict[str, Any]:
    """Keyword arguments for ``gymnasium.make(env_id)`` (and the vector-env builders that pass them on): for a
    MiniGrid id with a twin ``max_episode_steps`` at the env's own ``max_steps`` (so the generic
    :data:`DEFAULT_EPISODE_LIMIT` never cuts its episodes short); else ``max_episode_steps=DEFAULT_EPISODE_LIMIT``
    when the registration has no time limit, and none otherwise.

    Raises:
        ValueError: an unknown id or unimportable module.
    """
    spec = env_spec(env_id)
    if spec.id in MINIGRID_SPECS:
        return {"max_episode_steps": MINIGRID_SPECS[spec.id].max_steps}
    if spec.max_episode_steps is None:
        return {"max_episode_steps": DEFAULT_EPISODE_LIMIT}
    return {}


EnvWrapper = Callable[[gym.Env[Any, Any]], gym.Env[Any, Any]]
"""A function from an env to the wrapped env (a Gymnasium wrapper class, for example)."""


def env_wrappers(env_id: str) -> list[EnvWrapper]:
    """The wrappers the package applies to ``gymnasium.make(env_id)``, innermost first: :data:`MINIGRID_OBS_WRAPPERS`
    (``ImgObsWrapper``, ``FlattenObservation``) for a MiniGrid id with a twin, none for any other id. Pass them as
    ``gymnasium.make_vec(..., wrappers=...)``, or apply them with :func:`apply_wrappers`.

    Raises:
        ValueError: an unknown id or unimportable module.
    """
    if env_spec(env_id).id not in MINIGRID_SPECS:
        return []
    from gymnasium.wrappers import FlattenObservation
    from minigrid.wrappers import ImgObsWrapper

    return [ImgObsWrapper, FlattenObservation]


def apply_wrappers(env: gym.Env[Any, Any], wrappers: Sequence[EnvWrapper]) -> gym.Env[Any, Any]:
    """``env`` wrapped in ``wrappers``, the first innermost (SB3's ``make_vec_env(..., wrapper_class=apply_wrappers,
    wrapper_kwargs={"wrappers": env_wrappers(env_id)})``)."""
    for wrapper in wrappers:
        env = wrapper(env)
    return env


def make_env(env_id: str, **kwargs: Any) -> gym.Env[Any, Any]:
    """The env the package trains and evaluates on: ``gymnasium.make(env_id, **make_kwargs(env_id), **kwargs)``
    (``kwargs`` take precedence) wrapped in :func:`env_wrappers` -- for a MiniGrid id the flat (147,) uint8 view of
    its twin, for every other id exactly ``gymnasium.make``'s env with :func:`make_kwargs`' time limit.

    Raises:
        ValueError: an unknown id or unimportable module.
    """
    return apply_wrappers(gym.make(env_id, **{**make_kwargs(env_id), **kwargs}), env_wrappers(env_id))


def evaluate(
    policy: Any, env_id: str, episodes: int = 10, deterministic: bool = True, seed: int = 0, n_envs: int = 4
) -> EvalResult:
    """Return statistics of ``policy`` (anything with SB3's ``predict``) in the real env (:func:`make_env`).

    Args:
        episodes: number of episodes (>= 1).
        deterministic: greedy actions if True, sampled actions otherwise.
        seed: seed of the evaluation environments (copy i gets seed + i); fixed so that methods are compared on
            the same start states.
    Raises:
        ValueError: episodes < 1.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    venv = make_vec_env(
        env_id,
        n_envs=min(n_envs, episodes),
        seed=seed,
        env_kwargs=make_kwargs(env_id),
        wrapper_class=apply_wrappers,
        wrapper_kwargs={"wrappers": env_wrappers(env_id)},
    )
    try:
        returns, _ = evaluate_policy(
            policy, venv, n_eval_episodes=episodes, deterministic=deterministic, return_episode_rewards=True
        )
    finally:
        venv.close()
    returns = np.asarray(returns, dtype=np.float64)
    return EvalResult(float(returns.mean()), float(returns.std()), len(returns), deterministic)


def evaluate_many(
    act: Callable[[np.ndarray], np.ndarray],
    env_id: str,
    episodes: int,
    seeds: Sequence[int],
    deterministic: bool = True,
    n_envs: int = 4,
) -> list[EvalResult]:
    """:func:`evaluate` of ``P = len(seeds)`` policies at once, in one Gymnasium vector env of the real environment.

    Policy ``j`` plays copies ``seeds[j] + i`` (``i < min(n_envs, episodes)``), each copy the same number of
    episodes as :func:`evaluate` gives it (SB3's ``evaluate_policy``: copy ``i`` plays ``(episodes + i) // n``),
    and its returns are SB3's ``Monitor`` returns (the sum of the rewards rounded to 6 decimals), collected in
    ``evaluate_policy``'s order -- so each result is the one :func:`evaluate` gives that policy alone.

    Args:
        act: ``act(obs)`` with ``obs`` of shape ``(P, n, *obs_shape)`` returns the actions, ``(P, n)`` integers.
        seeds: one env seed per policy.
    Raises:
        ValueError: episodes < 1 or no seeds.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if not seeds:
        raise ValueError("evaluate_many needs at least one seed (one per policy)")
    n_pol, n = len(seeds), min(n_envs, episodes)
    venv = gym.vector.SyncVectorEnv(
        [functools.partial(make_env, env_id) for _ in range(n_pol * n)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )
    targets = np.tile(np.array([(episodes + i) // n for i in range(n)]), n_pol)
    counts = np.zeros(n_pol * n, dtype=np.int64)
    current = np.zeros(n_pol * n, dtype=np.float64)
    returns: list[list[float]] = [[] for _ in range(n_pol)]
    try:
        obs, _ = venv.reset(seed=[int(s) + i for s in seeds for i in range(n)])
        while (counts < targets).any():
            actions = np.asarray(act(obs.reshape(n_pol, n, *obs.shape[1:]))).reshape(-1)
            obs, rewards, terminated, truncated, _ = venv.step(actions)
            current += rewards
            for k in np.flatnonzero(terminated | truncated):
                if counts[k] < targets[k]:
                    returns[k // n].append(round(float(current[k]), 6))
                    counts[k] += 1
                current[k] = 0.0
    finally:
        venv.close()
    out = []
    for r in returns:
        arr = np.asarray(r, dtype=np.float64)
        out.append(EvalResult(float(arr.mean()), float(arr.std()), len(arr), deterministic))
    return out


def is_solved(result: EvalResult, env_id: str) -> bool:
    """True when ``result`` is a deterministic evaluation of >= 100 episodes reaching the reward threshold."""
    threshold = reward_threshold(env_id)
    if threshold is None or math.isnan(result.mean):
        return False
    return result.deterministic and result.episodes >= SOLVE_EPISODES and result.mean >= threshold
