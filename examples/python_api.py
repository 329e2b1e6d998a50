"""Train a policy in a few lines with the Python API, evaluate it in the real environment, and save it.

    python examples/python_api.py                                   # st-gumbel on CartPole-v1, 100k env steps
    python examples/python_api.py --env gumbel_rl/EmptyRoom-5x5-v0 --steps 8192 --out policy.pt
    python examples/python_api.py --env mypkg.envs:audit/Corridor-v0 --method reinforce  # your env (module:id)

The whole API in use: ``agents.make_agent(method, env_id, seed=..., **hyperparameters)`` builds an agent with the
tuned defaults and one torch thread (``n_threads=1``, as ``train.py``: these small networks are fastest on one
thread; ``n_threads=None`` leaves torch's setting alone); ``agent.learn(total_env_steps)`` trains; ``agent.solved`` /
``agent.solve_env_steps`` say whether and when the periodic 100-episode greedy check reached the env's reward
threshold; ``agent.evaluate(episodes)`` scores the greedy policy in the real Gymnasium env; ``agent.policy.save(path)``
writes a file that ``gumbel_rl.GumbelPolicy.load`` (and ``examples/gym_loop.py``, ``examples/sb3_evaluate.py``) read
back.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import agents


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="CartPole-v1", help="Gymnasium id or MODULE:ID (default CartPole-v1)")
    parser.add_argument("--method", default="st-gumbel", help="training method (default st-gumbel)")
    parser.add_argument("--steps", type=int, default=100_000, help="env-step budget (default 100000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="policy.pt", help="where to save the policy (default policy.pt)")
    args = parser.parse_args()
    if args.steps < 1 or args.seed < 0:
        parser.exit(
            2,
            f"{parser.prog}: error: "
            + f"--steps must be >= 1 and --seed >= 0, got {args.steps} and {args.seed}"
            + "\n",
        )
    if Path(args.out).is_dir():
        parser.exit(
            2,
            f"{parser.prog}: error: "
            + f"--out {args.out} is a directory; give a file name (e.g. {Path(args.out) / 'policy.pt'})"
            + "\n",
        )

    try:  # an unknown method or env, or a bad hyperparameter: one line, exit 2
        agent = agents.make_agent(args.method, args.env, seed=args.seed)
    except ValueError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    with agent:  # closes what the agent opened (its training environments)
        agent.learn(total_env_steps=args.steps)
        result = agent.evaluate(episodes=100)  # greedy actions, real env
        agent.policy.save(args.out, extra={"env_id": args.env, "method": args.method})

    print(f"trained {args.method} on {args.env} for {agent.num_env_steps} env steps")
    print(f"solved: {agent.solved} (at {agent.solve_env_steps} env steps)")
    print(f"eval return: {result.mean:.6f} +/- {result.std:.6f} over {result.episodes} episodes")
    print(f"saved policy: {args.out}")


if __name__ == "__main__":
    main()
