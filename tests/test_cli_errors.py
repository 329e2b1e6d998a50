"""Bad input to ``train.py`` and ``examples/`` (issue 11 item 10): each case runs in a fresh interpreter and must end
with exit code 2 and one line on stderr naming the problem -- never a traceback -- and write no run file. (More
refusals are checked in-process in ``test_train_cli.py``; these are the ones that once escaped as tracebacks or
that only a fresh interpreter shows.)
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest

import envs  # noqa: F401  (registers the gumbel_rl/ gridworlds)
from gumbel_rl import GumbelPolicy

ROOT = Path(__file__).resolve().parents[1]
ENV = "gumbel_rl/EmptyRoom-5x5-v0"

# (name, argv after the python executable; {dir} {empty} {policy} {out} are filled in, the expected text in stderr)
CASES = [
    ("evaluate a directory", ["train.py", "evaluate", "{dir}"], "no such file"),
    ("evaluate an empty file", ["train.py", "evaluate", "{empty}"], "truncated or corrupt"),
    ("train an unknown device", ["train.py", "--env", ENV, "--device", "tpu", "--out", "{out}"], "unknown device"),
    ("train zero steps", ["train.py", "--env", ENV, "--steps", "0", "--out", "{out}"], "step budget"),
    ("train a negative seed", ["train.py", "--env", ENV, "--seed", "-1", "--out", "{out}"], "non-negative integer"),
    ("--hp without =", ["train.py", "--env", ENV, "--hp", "lr", "--out", "{out}"], "--hp expects NAME=VALUE"),
    ("an unknown module", ["train.py", "--env", "nosuchmod:audit/Corridor-v0", "--out", "{out}"], "'nosuchmod'"),
    (
        "compare an unknown method",
        ["train.py", "compare", "--env", ENV, "--methods", "st-gumbel", "nope", "--seeds", "1", "--out", "{out}"],
        "unknown method 'nope'",
    ),
    (
        "compare zero seeds",
        ["train.py", "compare", "--env", ENV, "--methods", "st-gumbel", "--seeds", "0", "--out", "{out}"],
        "number of seeds",
    ),
    ("gym_loop a directory", ["examples/gym_loop.py", "{dir}"], "{dir}"),
    ("gym_loop a negative seed", ["examples/gym_loop.py", "{policy}", "--seed", "-1"], "--seed >= 0"),
    ("sb3_evaluate an empty file", ["examples/sb3_evaluate.py", "{empty}"], "truncated or corrupt"),
    ("python_api zero steps", ["examples/python_api.py", "--env", ENV, "--steps", "0"], "--steps must be >= 1"),
    ("python_api a directory as --out", ["examples/python_api.py", "--env", ENV, "--out", "{dir}"], "is a directory"),
]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Every case's (filled argv, completed process), two interpreters at a time."""
    tmp = tmp_path_factory.mktemp("bad_input")
    env = gym.make(ENV)
    GumbelPolicy(env.observation_space, env.action_space, net_arch=(8,)).save(tmp / "p.pt", extra={"env_id": ENV})
    env.close()
    (tmp / "empty.pt").write_bytes(b"")
    (tmp / "dir").mkdir()
    fill = {"{dir}": str(tmp / "dir"), "{empty}": str(tmp / "empty.pt"), "{policy}": str(tmp / "p.pt")}

    def run(case: tuple[str, list[str], str]) -> tuple[list[str], str, subprocess.CompletedProcess]:
        name, argv, expected = case
        values = {**fill, "{out}": str(tmp / name.replace(" ", "_"))}
        argv = [values.get(a, a) for a in argv]
        proc = subprocess.run(
            [sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )  # fmt: skip
        return argv, values.get(expected, expected), proc

    with cf.ThreadPoolExecutor(2) as pool:
        return dict(zip([c[0] for c in CASES], pool.map(run, CASES), strict=True)), tmp


@pytest.mark.parametrize("name", [c[0] for c in CASES])
def test_bad_input_is_one_line_with_exit_2_and_no_traceback(name, outcomes):
    results, tmp = outcomes
    argv, expected, proc = results[name]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2, (argv, proc.stderr)
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert expected in proc.stderr, proc.stderr
    out = tmp / name.replace(" ", "_")
    assert not out.exists() or not any(p.name != ".lock" for p in out.iterdir())  # nothing written


def test_output_piped_into_a_reader_that_stops_early_is_no_traceback():
    """`train.py hyperparameters M | head -1`: the closed pipe ends the program quietly."""
    proc = subprocess.Popen(
        [sys.executable, "train.py", "hyperparameters", "st-gumbel-critic"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0,
    )  # fmt: skip
    assert proc.stdout is not None
    proc.stdout.close()  # the reader goes away before the listing is written out (the import alone takes seconds)
    _, err = proc.communicate(timeout=120)
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err.decode()
