"""The examples run as scripts with tiny budgets on the small gridworld, and print the numbers they should.

``python_api.py`` trains and saves a policy; ``gym_loop.py`` and ``sb3_evaluate.py`` then score that file, and their
printed means must equal ``agents.evaluation.evaluate`` of the same policy (the gridworld is deterministic, so
every greedy episode has the same return whatever the seed).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from agents.evaluation import evaluate
from gumbel_rl import GumbelPolicy

ROOT = Path(__file__).resolve().parents[1]
ENV = "gumbel_rl/EmptyRoom-5x5-v0"


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One torch thread for the evaluations here (small networks, busy machine); restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def run_example(name: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("examples") / "policy.pt"
    stdout = run_example("python_api.py", "--env", ENV, "--steps", "2048", "--out", str(path))
    return path, stdout


def test_python_api_trains_saves_and_reports(policy_file):
    path, stdout = policy_file
    assert re.search(r"^trained st-gumbel on gumbel_rl/EmptyRoom-5x5-v0 for (\d+) env steps$", stdout, re.M)
    assert int(re.search(r"for (\d+) env steps", stdout).group(1)) >= 2048
    assert re.search(r"^solved: (True|False) \(at (\d+|None) env steps\)$", stdout, re.M)
    mean, std, episodes = re.search(r"^eval return: (\S+) \+/- (\S+) over (\d+) episodes$", stdout, re.M).groups()
    assert int(episodes) == 100
    policy = GumbelPolicy.load(path)
    assert GumbelPolicy.read_metadata(path)["extra"] == {"env_id": ENV, "method": "st-gumbel"}
    again = evaluate(policy, ENV, 100, deterministic=True, seed=0)
    assert float(mean) == pytest.approx(again.mean, abs=1e-6)
    assert float(std) == pytest.approx(again.std, abs=1e-6)


def test_gym_loop_scores_the_policy_like_the_evaluator(policy_file):
    path, _ = policy_file
    stdout = run_example("gym_loop.py", str(path), "--episodes", "3")
    returns = [float(x) for x in re.findall(r"^episode \d: return (\S+) in \d+ steps$", stdout, re.M)]
    assert len(returns) == 3
    mean = float(re.search(r"mean return (\S+) \+/- \S+ over 3 episodes", stdout).group(1))
    expected = evaluate(GumbelPolicy.load(path), ENV, 3, deterministic=True, seed=0)
    assert mean == pytest.approx(expected.mean, abs=1e-6)
    assert returns == pytest.approx([expected.mean] * 3, abs=1e-6)  # deterministic env and policy


def test_sb3_evaluate_policy_gives_the_same_mean(policy_file):
    path, _ = policy_file
    stdout = run_example("sb3_evaluate.py", str(path), "--episodes", "5")
    mean, std = re.search(r"SB3 evaluate_policy on \S+: mean return (\S+) \+/- (\S+) over 5 episodes", stdout).groups()
    expected = evaluate(GumbelPolicy.load(path), ENV, 5, deterministic=True, seed=0)
    assert float(mean) == pytest.approx(expected.mean, abs=1e-6)
    assert float(std) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("name", ["gym_loop.py", "sb3_evaluate.py"])
def test_examples_refuse_a_bad_policy_file_in_one_line(name, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a policy")
    for path in (bad, tmp_path / "missing.pt"):
        proc = subprocess.run(
            [sys.executable, str(ROOT / "examples" / name), str(path)], cwd=ROOT, capture_output=True, text=True
        )
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert proc.stderr.splitlines() == [proc.stderr.strip()] and str(path) in proc.stderr


def test_python_api_refuses_an_unknown_method_in_one_line():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "python_api.py"), "--method", "nope"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.strip().startswith("python_api.py: error: unknown method 'nope'")
    assert "Traceback" not in proc.stderr
