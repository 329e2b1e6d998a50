"""Score a trained gumbel-rl policy with Stable-Baselines3's own ``evaluate_policy``.

    python examples/sb3_evaluate.py runs/<run dir>/policy.pt --episodes 100

``GumbelPolicy`` implements SB3's ``predict`` protocol, so SB3's evaluation tools (and anything else written for an
SB3 model's ``predict``) take it as it is. The env id defaults to the one stored in the policy file (packages it
names, which a run imported with ``--gym-packages``, are imported first).
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import torch
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

import envs  # noqa: F401  (registers the gumbel_rl/ gridworlds)
from agents.evaluation import apply_wrappers, env_wrappers
from experiments.runner import load_policy_for


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("policy", help="a policy.pt written by train.py or GumbelPolicy.save")
    parser.add_argument("--env", default=None, help="Gymnasium id (default: the one stored in the policy file)")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
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
        venv = make_vec_env(  # a MiniGrid id: the policy's observation wrappers
            env_id,
            n_envs=1,
            seed=args.seed,
            wrapper_class=apply_wrappers,
            wrapper_kwargs={"wrappers": env_wrappers(env_id)},
        )
    except (FileNotFoundError, ValueError, ImportError, gym.error.Error) as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    mean, std = evaluate_policy(policy, venv, n_eval_episodes=args.episodes, deterministic=True)
    venv.close()
    print(f"SB3 evaluate_policy on {env_id}: mean return {mean:.6f} +/- {std:.6f} over {args.episodes} episodes")


if __name__ == "__main__":
    main()
