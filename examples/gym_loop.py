"""Drive a plain Gymnasium loop with a trained policy's ``predict`` -- no gumbel-rl machinery beyond loading it.

    python examples/gym_loop.py runs/<run dir>/policy.pt --episodes 10

``GumbelPolicy.predict(obs, deterministic=True)`` takes one observation as the env returns it (or a batch) and
gives the action as a numpy integer, like a Stable-Baselines3 model. The env id defaults to the one stored in the
policy file (a ``module:id`` id makes ``gym.make`` import ``module``; packages a run imported with ``--gym-packages``
are named in the file and imported here too); ``import envs`` registers the ``gumbel_rl/`` gridworlds with Gymnasium.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np
import torch

import envs  # noqa: F401  (registers the gumbel_rl/ gridworlds)
from agents.evaluation import make_env
from experiments.runner import load_policy_for


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("policy", help="a policy.pt written by train.py or GumbelPolicy.save")
    parser.add_argument("--env", default=None, help="Gymnasium id (default: the one stored in the policy file)")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="episode i resets with seed + i")
    parser.add_argument("--stochastic", action="store_true", help="sample actions instead of the greedy one")
    args = parser.parse_args()
    if args.episodes < 1 or args.seed < 0:
        parser.exit(
            2,
            f"{parser.prog}: error: "
            + f"--episodes must be >= 1 and --seed >= 0, got {args.episodes} and {args.seed}"
            + "\n",
        )
    torch.set_num_threads(1)  # a small network: one thread is fastest

    try:  # a missing, corrupt or foreign file, an unknown env: one line, exit 2
        policy, env_id, _ = load_policy_for(args.policy, args.env)
        # gym.make(env_id) with a time limit where the env registers none, and for a MiniGrid id the policy's
        # observation wrappers (ImgObsWrapper + FlattenObservation)
        env = make_env(env_id)
    except (FileNotFoundError, ValueError, ImportError, gym.error.Error) as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    returns = []
    for episode in range(args.episodes):
        obs, info = env.reset(seed=args.seed + episode)
        total, steps, done = 0.0, 0, False
        while not done:
            action, _ = policy.predict(obs, deterministic=not args.stochastic)
            obs, reward, terminated, truncated, info = env.step(action)
            total += float(reward)
            steps += 1
            done = terminated or truncated
        returns.append(total)
        print(f"episode {episode}: return {total:.6f} in {steps} steps")
    env.close()
    print(f"{env_id}: mean return {np.mean(returns):.6f} +/- {np.std(returns):.6f} over {len(returns)} episodes")


if __name__ == "__main__":
    main()
