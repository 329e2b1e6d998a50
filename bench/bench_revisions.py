"""Training speed of two git revisions side by side: did a change make a method slower?

Each revision is checked out into a temporary git worktree; the two are timed alternately (old, new, old, new, ...)
in fresh interpreters with one torch thread, so that the machine's load falls on both alike, and the report gives
each case's median training seconds (``Agent.train_wall_s``: evaluation excluded) and the ratio new / old.

    python bench/bench_revisions.py --old f7bbb03 --new HEAD --repeats 5

Cases (method, env id, env steps): ``st-gumbel`` on a gridworld and on CartPole-v1, and ``st-gumbel-critic`` on
CartPole-v1; ``--cases`` takes others as ``method@env_id@steps``. Both revisions must have ``agents.make_agent``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CASES = (
    "st-gumbel@gumbel_rl/EmptyRoom-5x5-v0@20000",
    "st-gumbel@CartPole-v1@40000",
    "st-gumbel-critic@CartPole-v1@3000",
)
TIMER = """
import sys, torch
torch.set_num_threads(1)
from agents import make_agent
method, env_id, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
agent = make_agent(method, env_id, seed=0, device="cpu", eval_every=10**9)
agent.learn(steps)
print(agent.train_wall_s)
"""


def time_once(tree: Path, case: str) -> float:
    """Training seconds of one ``method@env@steps`` case in a fresh interpreter importing ``tree``'s packages."""
    method, env_id, steps = case.split("@")
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONWARNINGS": "ignore"}
    out = subprocess.run(
        [sys.executable, "-c", TIMER, method, env_id, steps], cwd=tree, env=env, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise RuntimeError(f"{case} at {tree} failed: {out.stderr.strip().splitlines()[-1:]}")
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", required=True, help="git revision to compare against")
    parser.add_argument("--new", default="HEAD", help="git revision under test (default HEAD)")
    parser.add_argument("--repeats", type=int, default=5, help="timings per revision and case (default 5)")
    parser.add_argument("--cases", nargs="*", default=list(DEFAULT_CASES), help="method@env_id@steps ...")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        trees = {}
        for label, rev in (("old", args.old), ("new", args.new)):
            trees[label] = Path(tmp) / label
            subprocess.run(["git", "worktree", "add", "--detach", str(trees[label]), rev], cwd=ROOT, check=True,
                           capture_output=True)  # fmt: skip
        try:
            print(f"old {args.old}, new {args.new}; {args.repeats} alternating timings per case, one torch thread")
            print(f"{'case':48s} {'old s (median)':>15s} {'new s (median)':>15s} {'new / old':>10s}")
            for case in args.cases:
                times: dict[str, list[float]] = {"old": [], "new": []}
                for _ in range(args.repeats):
                    for label in ("old", "new"):
                        times[label].append(time_once(trees[label], case))
                old, new = statistics.median(times["old"]), statistics.median(times["new"])
                print(f"{case:48s} {old:15.3f} {new:15.3f} {new / old:10.2f}", flush=True)
        finally:
            for tree in trees.values():
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
