"""A user's own environment by name from the command line (issue 11 item 2): ``tests/corridor_env.py`` registers
``audit/Corridor-v0`` when imported, and is named as Gymnasium's ``corridor_env:audit/Corridor-v0`` or through
``--gym-packages corridor_env``. Every command runs in a fresh interpreter (``tests/`` on ``PYTHONPATH``, nothing
imported beforehand), so each one -- and compare's spawned workers -- must import the module by itself: ``--resume``
and ``evaluate`` from what the run recorded, without the option repeated. (A compare rerun that only reuses finished
runs is run in-process.)
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gumbel_rl import GumbelPolicy

ROOT = Path(__file__).resolve().parents[1]
MODULE_ID = "corridor_env:audit/Corridor-v0"
ENV_ID = "audit/Corridor-v0"
BUDGET = ["--method", "reinforce", "--steps", "1024", "--hp", "eval_every=512", "--quiet"]


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "train.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def _load_train_module():
    spec = importlib.util.spec_from_file_location("train_cli_user_envs", ROOT / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def printed_return(stdout: str) -> tuple[float, int]:
    mean, episodes = re.search(r"^return\s+mean (\S+)\s+std \S+\s+over (\d+)", stdout, re.M).groups()
    return float(mean), int(episodes)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_module_colon_id_trains_and_evaluates(tmp_path):
    out = tmp_path / "run"
    proc = cli("--env", MODULE_ID, *BUDGET, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "config.json").read_text())["env_id"] == MODULE_ID
    result = json.loads((out / "result.json").read_text())
    assert result["solved"] and result["eval_return_mean"] == 1.0 and result["reward_threshold"] == 1.0
    assert GumbelPolicy.read_metadata(out / "policy.pt")["extra"]["env_id"] == MODULE_ID
    proc = cli("evaluate", str(out))  # the env from the policy's metadata, imported by its module:id
    assert proc.returncode == 0, proc.stderr
    assert printed_return(proc.stdout) == (1.0, 100) and re.search(r"^solved\s+yes$", proc.stdout, re.M)
    assert f"env       {MODULE_ID} (reward threshold 1)" in proc.stdout


def test_gym_packages_are_recorded_so_resume_and_evaluate_need_no_option(tmp_path):
    out = tmp_path / "run"
    proc = cli("--gym-packages", "corridor_env", "--env", ENV_ID, *BUDGET[:3], "512", *BUDGET[4:], "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    config = json.loads((out / "config.json").read_text())
    assert (config["env_id"], config["gym_packages"]) == (ENV_ID, ["corridor_env"])
    assert GumbelPolicy.read_metadata(out / "policy.pt")["extra"]["gym_packages"] == ["corridor_env"]
    proc = cli("--resume", str(out), "--steps", "1024", "--quiet")
    assert proc.returncode == 0, proc.stderr
    config = json.loads((out / "config.json").read_text())
    assert [r["to_steps"] for r in config["resumed"]] == [1024] and config["gym_packages"] == ["corridor_env"]
    assert json.loads((out / "result.json").read_text())["env_steps"] >= 1024
    proc = cli("evaluate", str(out / "policy.pt"), "--episodes", "10")
    assert proc.returncode == 0, proc.stderr
    assert printed_return(proc.stdout)[1] == 10
    assert re.search(r"^solved\s+not decided: solving takes 100 deterministic episodes", proc.stdout, re.M)


def test_compare_with_listed_seeds_imports_the_package_in_every_worker_and_reuses_runs(tmp_path, capsys):
    out = tmp_path / "cmp"
    args = ["compare", "--gym-packages", "corridor_env", "--env", ENV_ID, "--methods", "reinforce", "--steps", "512",
            "--hp", "eval_every=256", "--quiet", "--workers", "2", "--out", str(out)]  # fmt: skip
    proc = cli(*args, "--seed-list", "0", "3")
    assert proc.returncode == 0, proc.stderr
    assert "seeds 0, 3" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [0, 3] and [r["seed"] for r in summary["runs"]] == [0, 3]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["reinforce__s0", "reinforce__s3"]
    for seed in (0, 3):
        config = json.loads((out / f"reinforce__s{seed}" / "config.json").read_text())
        assert (config["seed"], config["gym_packages"]) == (seed, ["corridor_env"])
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("*/result.json")}
    capsys.readouterr()
    assert _load_train_module().main([*args, "--seeds", "1"]) == 0  # seed 0 only: reused, nothing retrained
    stdout = capsys.readouterr().out
    assert stdout.count("skipped") == 1 and "skipped reinforce__s0" in stdout
    assert json.loads((out / "summary.json").read_text())["seeds"] == [0]
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/result.json")} == mtimes
