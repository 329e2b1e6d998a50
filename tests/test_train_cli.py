"""Tests for train.py (train / compare / evaluate / hyperparameters), experiments.runner and experiments.compare on the
small gridworld.

The CLI runs as a subprocess where its process-level behaviour matters (exit codes, SIGINT, no traceback) and
in-process through ``train.main(argv)`` elsewhere (same code, without the interpreter start-up). Budgets: a few
thousand env steps of ``gumbel_rl/EmptyRoom-5x5-v0``.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from agents import Agent, FunctionCallback
from agents.base import EVAL_MEAN, SECONDS, STEPS
from agents.evaluation import evaluate
from experiments.compare import SUMMARY_COLUMNS, WALL_CLOCK_COLUMNS
from experiments.locks import DirectoryLock
from experiments.run_log import read_metrics_csv
from experiments.runner import (
    EVAL_SEED,
    FINAL_EVAL_ENVS,
    RUN_FILES,
    CheckpointPolicy,
    RunSettings,
    TrainingInterrupted,
    parse_hyperparameters,
    run_training,
    start_run,
    train_run,
)
from experiments.stats import iqm
from gumbel_rl import GumbelPolicy

ROOT = Path(__file__).resolve().parents[1]
ENV = "gumbel_rl/EmptyRoom-5x5-v0"
RESULT_KEYS = {
    "env", "method", "seed", "env_steps", "wall_s", "solved", "solve_env_steps", "solve_wall_s",
    "eval_return_mean", "eval_return_std", "eval_episodes", "stochastic_eval_return_mean",
    "stochastic_eval_return_std", "stochastic_eval_episodes",
}  # fmt: skip
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _load_train_module():
    spec = importlib.util.spec_from_file_location("train_cli", ROOT / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train_cli = _load_train_module()


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One torch thread here (as train.py sets by default: small networks, busy machine); restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def main(capsys, *args: str) -> tuple[int, str, str]:
    """``train.main(args)`` in-process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    try:
        rc = train_cli.main(list(args))
    except SystemExit as exc:  # argparse's --help
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def printed_mean(stdout: str) -> float:
    return float(re.search(r"^return\s+mean (\S+)", stdout, re.M).group(1))


def is_png(path: Path) -> bool:
    from PIL import Image

    with Image.open(path) as im:
        im.verify()
    return path.read_bytes()[:8] == PNG_MAGIC


# ---- train ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One run through the real command line, progress bar on."""
    out = tmp_path_factory.mktemp("train") / "run"
    proc = cli("--env", ENV, "--method", "st-gumbel", "--seed", "0", "--steps", "4096", "--hp", "eval_every=2048",
               "--out", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_train_writes_every_file_with_its_keys(trained):
    out, proc = trained
    for name in RUN_FILES:
        assert (out / name).is_file(), name
    result = json.loads((out / "result.json").read_text())
    assert RESULT_KEYS <= set(result)
    assert (result["env"], result["method"], result["seed"]) == (ENV, "st-gumbel", 0)
    assert result["env_steps"] >= 4096 and result["target_env_steps"] == 4096
    assert isinstance(result["solved"], bool) and result["wall_s"] > 0
    assert result["eval_episodes"] == 100 and result["stochastic_eval_episodes"] == 100
    assert result["eval_seed"] == EVAL_SEED
    assert (result["solve_env_steps"] is None) == (not result["solved"])

    config = json.loads((out / "config.json").read_text())
    assert config["hyperparameters"]["eval_every"] == 2048  # resolved: override applied ...
    assert "learning_rate" in config["hyperparameters"]  # ... on top of the defaults
    assert config["hyperparameter_overrides"] == {"eval_every": 2048}
    assert (config["env_id"], config["method"], config["seed"], config["steps"]) == (ENV, "st-gumbel", 0, 4096)
    versions = config["versions"]
    for key in ("gumbel_rl", "torch", "gymnasium", "stable_baselines3", "python", "platform", "device"):
        assert versions[key], key

    with open(out / "metrics.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        columns = reader.fieldnames
    assert columns[:2] == [STEPS, SECONDS] and EVAL_MEAN in columns
    steps = [int(r[STEPS]) for r in rows]
    assert steps == sorted(steps) and steps[-1] == result["env_steps"] and len(rows) == result["iterations"]
    assert rows[0][EVAL_MEAN] != ""  # the first iteration evaluates
    assert read_metrics_csv(out / "metrics.csv") == Agent.load(out / "checkpoint.pt").record  # the whole record
    assert list(out.glob(".*.tmp")) == []

    assert is_png(out / "curve.png")
    assert "run dir" in proc.stdout and str(out) in proc.stdout and "final" in proc.stdout
    assert "step/s" in proc.stderr  # the progress bar


def test_policy_file_loads_predicts_and_scores_as_reported(trained):
    out, _ = trained
    result = json.loads((out / "result.json").read_text())
    policy = GumbelPolicy.load(out / "policy.pt")
    extra = GumbelPolicy.read_metadata(out / "policy.pt")["extra"]
    assert (extra["env_id"], extra["method"]) == (ENV, "st-gumbel")
    action, _ = policy.predict(np.int64(0), deterministic=True)
    assert action.shape == () and 0 <= int(action) < 4
    again = evaluate(policy, ENV, 100, deterministic=True, seed=EVAL_SEED, n_envs=FINAL_EVAL_ENVS)
    assert again.mean == pytest.approx(result["eval_return_mean"], abs=1e-12)
    agent = Agent.load(out / "checkpoint.pt")
    assert agent.num_env_steps == result["env_steps"]


def test_evaluate_prints_the_means_train_reported(trained, capsys):
    out, _ = trained
    result = json.loads((out / "result.json").read_text())
    rc, stdout, err = main(capsys, "evaluate", str(out / "policy.pt"))
    assert rc == 0, err
    assert printed_mean(stdout) == pytest.approx(result["eval_return_mean"], abs=1e-6)
    assert "100 deterministic episodes" in stdout and ENV in stdout
    rc, stdout, _ = main(capsys, "evaluate", str(out / "policy.pt"), "--stochastic")
    assert rc == 0
    assert printed_mean(stdout) == pytest.approx(result["stochastic_eval_return_mean"], abs=1e-6)


def test_evaluate_writes_a_gif_of_one_episode(trained, tmp_path, capsys):
    from PIL import Image, ImageSequence

    out, _ = trained
    gif = tmp_path / "episode.gif"
    rc, stdout, err = main(capsys, "evaluate", str(out / "policy.pt"), "--episodes", "3", "--video", str(gif))
    assert rc == 0, err
    frames = int(re.search(r"\((\d+) frames", stdout).group(1))
    assert frames >= 2
    with Image.open(gif) as im:
        assert im.format == "GIF" and im.size == (80, 80)  # 5x5 cells of 16 pixels
        # Pillow merges identical consecutive frames into one longer frame: the durations add up.
        durations = [frame.info["duration"] for frame in ImageSequence.Iterator(im)]
    assert sum(durations) == frames * 250  # gridworld render_fps 4


def test_help_lists_train_options_commands_environments_and_methods(capsys):
    import agents
    from envs import GRIDWORLD_IDS

    rc, stdout, _ = main(capsys, "--help")
    assert rc == 0
    for name in ["CartPole-v1", *GRIDWORLD_IDS, *agents.METHODS]:
        assert re.search(rf"^\s+{re.escape(name)}\s+\S", stdout, re.M), name
    for command in ("train", "compare", "evaluate", "hyperparameters"):
        assert re.search(rf"^\s+{command}\s+\S", stdout, re.M), command
    for option in (
        "--env",
        "--method",
        "--steps",
        "--hp",
        "--out",
        "--resume",
        "--checkpoint-every-steps",
        "--verbose",
    ):
        assert re.search(rf"^\s+{option}\b", stdout, re.M), option
    rc, again, _ = main(capsys, "train", "--help")
    assert rc == 0 and again == stdout


def test_hyperparameters_lists_every_field_with_its_env_default_and_docstring(capsys):
    import dataclasses

    from agents.hyperparams import default_hyperparameters
    from agents.registry import METHODS, hyperparameter_docs, resolve

    rc, stdout, err = main(capsys, "hyperparameters", "st-gumbel", "--env", ENV)
    assert rc == 0, err
    _, config = resolve("st-gumbel", ENV, {})
    tuned = default_hyperparameters("st-gumbel", ENV)
    for f in dataclasses.fields(config):
        line = re.search(rf"^  {f.name}\s+(\*?)(\S+)\s+(\S.*)$", stdout, re.M)
        assert line, f.name
        assert (line.group(1) == "*") == (f.name in tuned)
        value = getattr(config, f.name)
        assert json.loads(line.group(2)) == (list(value) if isinstance(value, tuple) else value), f.name
    assert re.search(r"^  eval_every\s+\*2048\s+Evaluate the greedy policy", stdout, re.M)  # inherited, tuned
    assert re.search(r"^  horizon\s+\*8\s+Steps per window", stdout, re.M)
    # every method documents every hyperparameter (an attribute docstring under each Config field)
    for method in METHODS:
        env = ENV if method in agents_on(ENV) else "CartPole-v1"
        docs = hyperparameter_docs(method, env)
        assert [d.name for d in docs] == [f.name for f in dataclasses.fields(METHODS[method].agent_cls.config_cls)]
        assert all(d.doc for d in docs), [d.name for d in docs if not d.doc]
    rc, _, err = main(capsys, "hyperparameters", "nope")
    assert rc == 2 and "unknown method 'nope'" in err


def agents_on(env_id: str) -> list[str]:
    from agents.registry import methods_for

    return methods_for(env_id)


def test_field_docstrings_are_read_from_the_class_and_its_bases():
    from dataclasses import dataclass

    from agents.base import Config
    from agents.hyperparams import describe_hyperparameters, field_docstrings

    @dataclass
    class Small(Config):
        alpha: float = 0.5
        """Weight of
        something."""
        beta: int = 3
        eval_every: int = 7
        """Overridden here."""

    docs = field_docstrings(Small)
    assert docs["alpha"] == "Weight of something."
    assert "beta" not in docs
    assert docs["eval_every"] == "Overridden here."
    assert docs["activation"].startswith("Activation of the policy network")
    described = {d.name: d for d in describe_hyperparameters(Small(), tuned={"beta": 3})}
    assert (described["beta"].default, described["beta"].tuned, described["beta"].doc) == (3, True, "")
    assert (described["alpha"].default, described["alpha"].tuned) == (0.5, False)


def test_hp_values_parse_as_json_with_a_string_fallback():
    hp = parse_hyperparameters(["learning_rate=3e-4", "net_arch=[32, 32]", "activation=relu", "flag=true", "x=True"])
    assert hp == {"learning_rate": 3e-4, "net_arch": [32, 32], "activation": "relu", "flag": True, "x": True}
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_hyperparameters(["learning_rate"])
    with pytest.raises(ValueError, match="more than once"):
        parse_hyperparameters(["a=1", "a=2"])


# ---- bad input ------------------------------------------------------------------------------------------------
def test_bad_input_in_a_subprocess_is_one_line_exit_2_without_traceback():
    proc = cli("--env", "NoSuchEnv-v0")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [proc.stderr.strip()] and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("train.py: error: unknown environment id 'NoSuchEnv-v0'")


@pytest.mark.parametrize(
    "case, match",
    [
        ("unknown env", "unknown environment id"),
        ("unknown method", "unknown method 'nope'; valid methods: "),
        ("unknown option", "unrecognized arguments: --bogus"),
        ("unknown hyperparameter", "unknown hyperparameter(s) nope"),
        ("bad hyperparameter", "learning_rate"),
        ("run exists", "already holds a run"),
        ("missing policy", "no such file"),
        ("corrupt policy", "truncated or corrupt"),
        ("not a policy", "not a gumbel-rl/GumbelPolicy file"),
        ("resume nothing", "holds no run to resume"),
        ("resume with settings", "--resume takes its settings"),
        ("compare unknown method", "unknown method"),
        ("compare seed twice", "seed(s) listed more than once: 1"),
        ("compare seeds and seed list", "not allowed with argument"),
        ("unknown gym package", "--gym-packages: cannot import 'no_such_pkg'"),
        ("bad video extension", "must end in .gif or .mp4"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(case, match, trained, tmp_path, capsys):
    out, _ = trained
    before = {name: (out / name).read_bytes() for name in RUN_FILES}
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes((out / "policy.pt").read_bytes()[:500])
    argv = {
        "unknown env": ["--env", "Nope-v0"],
        "unknown method": ["--env", ENV, "--method", "nope"],
        "unknown option": ["--env", ENV, "--bogus"],
        "unknown hyperparameter": ["--env", ENV, "--hp", "nope=1"],
        "bad hyperparameter": ["--env", ENV, "--hp", "learning_rate=-1"],
        "run exists": ["--env", ENV, "--steps", "2048", "--out", str(out)],
        "missing policy": ["evaluate", str(tmp_path / "missing.pt")],
        "corrupt policy": ["evaluate", str(corrupt)],
        "not a policy": ["evaluate", str(out / "checkpoint.pt")],
        "resume nothing": ["--resume", str(tmp_path)],
        "resume with settings": ["--resume", str(out), "--env", ENV],
        "compare unknown method": [
            "compare",
            "--env",
            ENV,
            "--methods",
            "nope",
            "--seeds",
            "1",
            "--out",
            str(tmp_path),
        ],  # noqa: E501
        "bad video extension": ["evaluate", str(out / "policy.pt"), "--video", str(tmp_path / "x.avi")],
        "compare seed twice": ["compare", "--env", ENV, "--methods", "M", "--seed-list", "1", "1", "--out", "D"],
        "compare seeds and seed list": ["compare", "--env", ENV, "--methods", "M", "--seeds", "2", "--seed-list", "1"],
        "unknown gym package": ["evaluate", str(out / "policy.pt"), "--gym-packages", "no_such_pkg"],
    }[case]
    argv = ["st-gumbel" if a == "M" else str(tmp_path) if a == "D" else a for a in argv]
    rc, stdout, err = main(capsys, *argv)
    assert rc == 2
    assert len(err.splitlines()) == 1 and err.startswith("train.py: error: "), err
    assert match in err
    assert {name: (out / name).read_bytes() for name in RUN_FILES} == before  # nothing overwritten


def test_video_of_cartpole_without_pygame_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pygame", None)  # pygame made unimportable (the minigrid extra installs it)
    import gymnasium as gym

    env = gym.make("CartPole-v1")
    policy = GumbelPolicy(env.observation_space, env.action_space, net_arch=(8,))
    policy.save(tmp_path / "cp.pt", extra={"env_id": "CartPole-v1"})
    gif = str(tmp_path / "a.gif")
    rc, _, err = main(capsys, "evaluate", str(tmp_path / "cp.pt"), "--episodes", "1", "--video", gif)
    assert rc == 2 and len(err.splitlines()) == 1
    assert "pygame" in err and ".[video]" in err


def test_mp4_without_imageio_names_the_extra(trained, tmp_path, capsys):
    if importlib.util.find_spec("imageio") is not None and importlib.util.find_spec("imageio_ffmpeg") is not None:
        pytest.skip("imageio-ffmpeg is installed: MP4 works")
    out, _ = trained
    rc, _, err = main(capsys, "evaluate", str(out / "policy.pt"), "--video", str(tmp_path / "a.mp4"))
    assert rc == 2 and len(err.splitlines()) == 1
    assert "imageio" in err and ".[video]" in err
    assert not (tmp_path / "a.mp4").exists()


def test_ray_backend_without_ray_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    rc, _, err = main(capsys, "compare", "--env", ENV, "--methods", "st-gumbel", "--seeds", "1", "--backend", "ray",
                      "--out", str(tmp_path / "cmp"))  # fmt: skip
    assert rc == 2 and len(err.splitlines()) == 1
    assert 'pip install -e ".[ray]"' in err


# ---- resume ---------------------------------------------------------------------------------------------------
def test_interrupted_run_resumes_where_it_stopped_and_matches_an_uninterrupted_one(tmp_path):
    hp = {"eval_every": 2048}
    first: list[int] = []

    def interrupt(agent, row):  # a Ctrl-C right after the first iteration
        first.append(row[STEPS])
        raise KeyboardInterrupt

    run_dir = tmp_path / "run"
    settings = RunSettings(ENV, "st-gumbel", 0, steps=10**9, hyperparameters=hp)
    with start_run(settings, run_dir) as run, pytest.raises(TrainingInterrupted) as info:
        train_run(run, callbacks=[FunctionCallback(interrupt)], tensorboard=False)
    per_iteration = first[0]
    assert info.value.env_steps == per_iteration > 0 and info.value.exit_code == 130
    assert (run_dir / "checkpoint.pt").is_file() and not (run_dir / "result.json").exists()
    before = read_metrics_csv(run_dir / "metrics.csv")
    assert [r[STEPS] for r in before] == [per_iteration]

    settings.steps = 3 * per_iteration
    result = run_training(settings, run_dir, resume=True, tensorboard=False)
    assert result["env_steps"] == result["target_env_steps"] == 3 * per_iteration
    after = read_metrics_csv(run_dir / "metrics.csv")
    assert [r[STEPS] for r in after] == [per_iteration, 2 * per_iteration, 3 * per_iteration]
    assert after[0] == before[0]  # the record continues; nothing was retrained
    config = json.loads((run_dir / "config.json").read_text())
    assert config["steps"] == 3 * per_iteration and config["resumed"][0]["from_env_steps"] == per_iteration

    straight = run_training(settings, tmp_path / "straight", tensorboard=False)
    keys = [k for k in after[0] if k != SECONDS]
    straight_rows = read_metrics_csv(tmp_path / "straight" / "metrics.csv")
    assert [[r.get(k) for k in keys] for r in after] == [[r.get(k) for k in keys] for r in straight_rows]
    assert result["eval_return_mean"] == straight["eval_return_mean"]


def start_training(run: Path, *extra: str) -> subprocess.Popen:
    """``train.py`` on the gridworld with an endless budget, in a subprocess, once it has printed its first line."""
    proc = subprocess.Popen(
        [sys.executable, "train.py", "--env", ENV, "--steps", "100000000", "--hp", "eval_every=1000000",
         "--out", str(run), "--quiet", *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout.readline().startswith("training st-gumbel")
    return proc


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_sigint_or_sigterm_checkpoints_exits_128_plus_signal_and_resume_extends_the_run(signum, code, tmp_path, capsys):
    run = tmp_path / "run"
    proc = start_training(run, "--checkpoint-every-seconds", "0")
    try:
        time.sleep(1.0)
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == code, stderr
    assert f"--resume {run}" in stderr and "Traceback" not in stderr
    assert signal.Signals(signum).name in stderr
    assert (run / "checkpoint.pt").is_file() and not (run / "result.json").exists()
    done = read_metrics_csv(run / "metrics.csv")
    trained = done[-1][STEPS]
    assert Agent.load(run / "checkpoint.pt").num_env_steps == trained

    rc, stdout, err = main(capsys, "--resume", str(run), "--steps", str(trained + 1), "--quiet")
    assert rc == 0, err
    result = json.loads((run / "result.json").read_text())
    assert trained < result["env_steps"] and result["target_env_steps"] == trained + 1
    rows = read_metrics_csv(run / "metrics.csv")
    assert rows[: len(done)] == done and rows[len(done)][STEPS] > trained


def test_kill_9_loses_at_most_one_checkpoint_interval_and_resumes_exactly(tmp_path, capsys):
    """SIGKILL mid-run: the periodic checkpoint survives; --resume drops the metrics rows logged after it and ends
    with the record and weights of a run that was never interrupted."""
    run = tmp_path / "run"
    every = 640  # ten iterations of 64 env steps
    proc = start_training(run, "--checkpoint-every-steps", str(every), "--checkpoint-every-seconds", "0")
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(read_rows_if_any(run)) < 25:  # >= 2 checkpoints, rows after
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    logged = read_metrics_csv(run / "metrics.csv")
    saved = Agent.load(run / "checkpoint.pt")
    assert saved.num_env_steps % every == 0 and saved.num_env_steps >= every
    assert logged[-1][STEPS] - saved.num_env_steps < every + 64  # at most one interval lost (plus the row in flight)
    assert logged[: len(saved.record)] == saved.record  # the file held the checkpoint's rows, and maybe more
    (run / ".curve.png.x1y2z3.tmp").write_bytes(b"half a png")  # as a kill during an atomic write leaves

    target = saved.num_env_steps + 3 * 64
    rc, _, err = main(capsys, "--resume", str(run), "--steps", str(target), "--quiet")
    assert rc == 0, err
    assert list(run.glob(".*.tmp")) == []
    resumed = Agent.load(run / "checkpoint.pt")
    rows = read_metrics_csv(run / "metrics.csv")
    assert rows == resumed.record and [r[STEPS] for r in rows] == [64 * (i + 1) for i in range(target // 64)]

    straight_settings = RunSettings(ENV, "st-gumbel", 0, steps=target, hyperparameters={"eval_every": 1000000})
    run_training(straight_settings, tmp_path / "straight", tensorboard=False)
    straight = Agent.load(tmp_path / "straight" / "checkpoint.pt")
    no_clock = [[{k: v for k, v in r.items() if k != SECONDS} for r in a.record] for a in (resumed, straight)]
    assert no_clock[0] == no_clock[1]
    for name, tensor in straight.policy.state_dict().items():
        assert torch.equal(resumed.policy.state_dict()[name], tensor), name


def read_rows_if_any(run: Path) -> list[dict]:
    try:
        return read_metrics_csv(run / "metrics.csv")
    except FileNotFoundError:
        return []


def test_a_second_writer_is_refused_naming_the_holder(trained, tmp_path, capsys):
    out, _ = trained
    before = {name: (out / name).read_bytes() for name in RUN_FILES}
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from experiments.locks import DirectoryLock; "
         f"lock = DirectoryLock({str(out)!r}); print('locked', flush=True); time.sleep(60)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        for argv in (["--resume", str(out), "--steps", "99999"], ["--env", ENV, "--out", str(out), "--force"]):
            rc, _, err = main(capsys, *argv)
            assert rc == 2 and len(err.splitlines()) == 1, err
            assert f"is being written by pid {holder.pid} on " in err
    finally:
        holder.kill()
        holder.wait()
    assert {name: (out / name).read_bytes() for name in RUN_FILES} == before
    cmp_dir = tmp_path / "cmp"
    with DirectoryLock(cmp_dir):  # a comparison directory too (a second lock in this process conflicts as well)
        rc, _, err = main(capsys, "compare", *compare_args("st-gumbel"), "--out", str(cmp_dir))
    assert rc == 2 and f"is being written by pid {os.getpid()}" in err
    assert list(cmp_dir.iterdir()) == [cmp_dir / ".lock"]


def readonly_location(tmp_path: Path) -> Path:
    """A directory this process cannot create anything in."""
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        return ro / "run"
    if not Path("/sys/kernel").is_dir():
        pytest.skip("root without /sys: no read-only location to try")
    return Path("/sys/kernel/gumbel-rl-test/run")  # sysfs: read-only even for root


@pytest.mark.parametrize("command", ["train", "compare"])
def test_out_on_a_file_or_a_read_only_location_is_one_line_exit_2(command, tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("precious")
    for out in (a_file, a_file / "run", readonly_location(tmp_path)):
        argv = ["--env", ENV, "--steps", "64", "--out", str(out)]
        if command == "compare":
            argv = ["compare", *compare_args("st-gumbel", steps=64), "--out", str(out)]
        rc, _, err = main(capsys, *argv)
        assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("train.py: error: "), err
        assert "Traceback" not in err and str(out) in err
    assert a_file.read_text() == "precious" and sorted(tmp_path.iterdir()) == sorted([a_file, *tmp_path.glob("ro")])


@pytest.fixture
def stopped_run(tmp_path):
    """A run directory interrupted after one iteration (config.json + checkpoint.pt, no result)."""

    def interrupt(agent, row):
        raise KeyboardInterrupt

    run_dir = tmp_path / "stopped"
    settings = RunSettings(ENV, "st-gumbel", 0, steps=10**6, hyperparameters={"eval_every": 10**6})
    with start_run(settings, run_dir) as run, pytest.raises(TrainingInterrupted):
        train_run(run, callbacks=[FunctionCallback(interrupt)], tensorboard=False)
    return run_dir


@pytest.mark.parametrize(
    "field, value, match",
    [("steps", "many", "steps must be int"), ("seed", 1.5, "seed must be int"), ("method", 3, "method must be str"),
     ("stop_on_solved", "yes", "stop_on_solved must be true or false")],
)  # fmt: skip
def test_resume_of_a_config_with_wrong_types_is_refused_and_the_config_kept(stopped_run, field, value, match, capsys):
    config = json.loads((stopped_run / "config.json").read_text())
    config[field] = value
    (stopped_run / "config.json").write_text(json.dumps(config))
    files = {p.name: p.read_bytes() for p in stopped_run.iterdir() if p.is_file()}
    rc, _, err = main(capsys, "--resume", str(stopped_run), "--quiet")
    assert rc == 2 and len(err.splitlines()) == 1 and match in err and "config.json" in err, err
    assert {p.name: p.read_bytes() for p in stopped_run.iterdir() if p.is_file()} == files


def test_resume_of_config_and_checkpoint_from_different_methods_is_refused_naming_both(stopped_run, tmp_path, capsys):
    other = tmp_path / "other"
    settings = RunSettings(ENV, "reinforce", 0, steps=64, hyperparameters={"eval_every": 10**6})
    run_training(settings, other, tensorboard=False)
    shutil.copy(other / "checkpoint.pt", stopped_run / "checkpoint.pt")
    files = {p.name: p.read_bytes() for p in stopped_run.iterdir() if p.is_file()}
    rc, _, err = main(capsys, "--resume", str(stopped_run), "--quiet")
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert "method st-gumbel" in err and "method reinforce" in err and "different runs" in err
    assert {p.name: p.read_bytes() for p in stopped_run.iterdir() if p.is_file()} == files


def test_checkpoint_callback_saves_every_n_steps_and_every_n_seconds(tmp_path):
    from experiments.run_callbacks import CheckpointCallback

    class FakeAgent:
        def __init__(self):
            self.num_env_steps, self.saved = 0, []

        def save(self, path):
            self.saved.append(self.num_env_steps)

    now = [0.0]
    agent = FakeAgent()
    cb = CheckpointCallback(tmp_path / "c.pt", every_steps=100, every_seconds=10.0, clock=lambda: now[0])
    cb.init_callback(agent)
    for _ in range(12):  # 64 steps and 1 s per iteration
        agent.num_env_steps += 64
        now[0] += 1.0
        cb.on_step({})
    assert agent.saved == [128, 256, 384, 512, 640, 768]  # every 100 steps -> after the iteration that passes them
    agent.saved.clear()
    cb = CheckpointCallback(tmp_path / "c.pt", every_steps=None, every_seconds=2.5, clock=lambda: now[0])
    cb.init_callback(agent)
    for _ in range(6):
        agent.num_env_steps += 64
        now[0] += 1.0
        cb.on_step({})
    assert [s - 768 for s in agent.saved] == [192, 384]
    assert CheckpointPolicy(every_steps=None).callback(tmp_path / "c.pt", 5000).every_steps == 500
    assert CheckpointPolicy(every_steps=0, every_seconds=0).callback(tmp_path / "c.pt", 5000).every_seconds is None
    with pytest.raises(ValueError, match="--checkpoint-every-seconds"):
        CheckpointPolicy(every_seconds=-1).validate()


# ---- compare --------------------------------------------------------------------------------------------------
def compare_args(*methods: str, steps: int = 2048) -> list[str]:
    # One process per run: these tests compare runs across backends and resumptions of single runs bit for bit, which
    # seeds trained together (the batched backend, tests/test_many_seeds.py) match up to float rounding only.
    return ["--env", ENV, "--methods", *methods, "--seeds", "2", "--steps", str(steps), "--hp", "eval_every=1024",
            "--backend", "local", "--quiet"]  # fmt: skip


COMPARE = compare_args("st-gumbel", "reinforce")


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "cmp"
    rc = train_cli.main(["compare", *COMPARE, "--workers", "2", "--out", str(out)])
    assert rc == 0
    return out


def test_compare_writes_summary_curves_and_run_dirs(compared):
    out = compared
    summary = json.loads((out / "summary.json").read_text())
    rows = summary["rows"]
    assert [r["method"] for r in rows] == ["st-gumbel", "reinforce"]
    assert summary["seeds"] == [0, 1] and summary["env_id"] == ENV
    with open(out / "summary.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == list(SUMMARY_COLUMNS)
        assert [r["method"] for r in reader] == ["st-gumbel", "reinforce"]
    assert is_png(out / "curves.png")
    for row in rows:
        assert set(SUMMARY_COLUMNS) <= set(row)
        results = [json.loads((out / f"{row['method']}__s{s}" / "result.json").read_text()) for s in (0, 1)]
        for s, r in enumerate(results):
            assert (r["method"], r["seed"], r["env_steps"] >= 2048) == (row["method"], s, True)
            assert all((out / f"{row['method']}__s{s}" / name).is_file() for name in RUN_FILES)
        assert row["seeds"] == 2
        assert row["success_rate"] == np.mean([r["solved"] for r in results])
        assert row["final_return_iqm"] == pytest.approx(iqm([r["eval_return_mean"] for r in results]), abs=1e-12)
        assert row["final_return_ci_low"] <= row["final_return_iqm"] <= row["final_return_ci_high"]
        if row["success_rate"] < 0.5:
            assert row["solve_env_steps_median"] is None


def test_compare_rerun_skips_finished_runs_and_prints_the_table(compared, capsys):
    out = compared
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("*/result.json")}
    assert len(mtimes) == 4
    rc, stdout, err = main(capsys, "compare", *COMPARE, "--out", str(out))
    assert rc == 0, err
    assert stdout.count("skipped") == 4
    assert "final IQM" in stdout and re.search(r"^st-gumbel\s+2\s", stdout, re.M)
    assert re.search(r"^reinforce\s+2\s", stdout, re.M)
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/result.json")} == mtimes


def test_compare_resumes_an_interrupted_run_from_its_checkpoint_to_the_same_result(compared, tmp_path, capsys):
    from experiments.compare import CompareSettings

    out = tmp_path / "cmp"
    settings = CompareSettings(ENV, ["st-gumbel"], 2, steps=2048, hyperparameters={"eval_every": 1024})
    run_dir = out / "st-gumbel__s0"

    def interrupt(agent, row):  # killed after three iterations, its last checkpoint at two
        if agent.iterations == 2:
            agent.save(tmp_path / "periodic.pt")
        if agent.iterations == 3:
            raise KeyboardInterrupt

    with start_run(settings.run_settings("st-gumbel", 0), run_dir) as run, pytest.raises(TrainingInterrupted):
        train_run(run, callbacks=[FunctionCallback(interrupt)], checkpoints=CheckpointPolicy(0, 0))
    shutil.copy(tmp_path / "periodic.pt", run_dir / "checkpoint.pt")  # as if killed: the last periodic checkpoint
    rc, stdout, err = main(capsys, "compare", *compare_args("st-gumbel"), "--out", str(out))
    assert rc == 0, err
    assert "resuming st-gumbel__s0 from its checkpoint.pt" in stdout
    config = json.loads((run_dir / "config.json").read_text())
    assert [r["from_env_steps"] for r in config["resumed"]] == [2 * 64]

    def machine_free(path):
        return {k: v for k, v in json.loads(path.read_text()).items() if "wall" not in k}

    for seed in (0, 1):
        name = f"st-gumbel__s{seed}"
        assert machine_free(out / name / "result.json") == machine_free(compared / name / "result.json")
        rows = [{k: v for k, v in r.items() if k != SECONDS} for r in read_metrics_csv(out / name / "metrics.csv")]
        assert rows == [
            {k: v for k, v in r.items() if k != SECONDS} for r in read_metrics_csv(compared / name / "metrics.csv")
        ]


def test_compare_with_other_settings_in_the_same_dir_is_refused(compared, capsys):
    changed = compare_args("st-gumbel", "reinforce", steps=4096)
    rc, _, err = main(capsys, "compare", *changed, "--out", str(compared))
    assert rc == 2 and len(err.splitlines()) == 1 and "other settings (steps 2048 -> 4096)" in err


def test_ray_backend_gives_the_local_summary(compared, tmp_path, capsys):
    """Same seeds, same numbers: Ray's st-gumbel runs reproduce the local ones (wall-clock fields aside)."""
    pytest.importorskip("ray")
    out = tmp_path / "ray"
    argv = compare_args("st-gumbel")
    rc, _, err = main(capsys, "compare", *argv, "--workers", "2", "--backend", "ray", "--out", str(out))
    assert rc == 0, err

    def machine_free(path):
        summary = json.loads((path / "summary.json").read_text())
        rows = [{k: v for k, v in r.items() if k not in WALL_CLOCK_COLUMNS} for r in summary["rows"]]
        runs = [{k: v for k, v in r.items() if "wall" not in k} for r in summary["runs"]]
        return [r for r in rows if r["method"] == "st-gumbel"], [r for r in runs if r["method"] == "st-gumbel"]

    ray_rows, ray_runs = machine_free(out)
    assert len(ray_runs) == 2
    assert (ray_rows, ray_runs) == machine_free(compared)


# ---- logging ------------------------------------------------------------------------------------------------
def test_csv_output_appends_rows_widens_its_header_and_continues_a_file(tmp_path):
    from stable_baselines3.common.logger import Logger

    from experiments.run_log import AppendingCSVOutputFormat, write_metrics_csv

    path = tmp_path / "metrics.csv"
    logger = Logger(None, [AppendingCSVOutputFormat(path)])
    logger.record(STEPS, 100)
    logger.record("train/actor_loss", 0.5)
    logger.dump(100)
    assert path.read_text() == f"{STEPS},train/actor_loss\n100,0.5\n"  # on disk at once: flushed per row
    logger.record(STEPS, 200)
    logger.record(EVAL_MEAN, 3.0)
    logger.record("eval/final_mean_reward", 9.0, exclude="csv")
    logger.dump(200)
    assert path.read_text() == f"{STEPS},train/actor_loss,{EVAL_MEAN}\n100,0.5,\n200,,3.0\n"
    logger.close()
    assert read_metrics_csv(path) == [{STEPS: 100, "train/actor_loss": 0.5}, {STEPS: 200, EVAL_MEAN: 3.0}]

    write_metrics_csv(path, [{STEPS: 100, "train/actor_loss": 0.5, "eval/solved": True}])  # a resume's rewrite
    logger = Logger(None, [AppendingCSVOutputFormat(path)])
    logger.record(STEPS, 200)
    logger.record("train/actor_loss", 0.25)
    logger.dump(200)
    logger.close()
    assert path.read_text() == f"{STEPS},train/actor_loss,eval/solved\n100,0.5,1\n200,0.25,\n"


def test_tensorboard_gets_every_row_and_the_final_evaluation_against_env_steps(trained):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _ = trained
    events = EventAccumulator(str(out / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {STEPS, SECONDS, EVAL_MEAN, "eval/final_mean_reward", "eval/final_stochastic_mean_reward"} <= tags
    record = read_metrics_csv(out / "metrics.csv")
    evals = [(r[STEPS], r[EVAL_MEAN]) for r in record if EVAL_MEAN in r]
    assert [(e.step, pytest.approx(e.value)) for e in events.Scalars(EVAL_MEAN)] == evals
    result = json.loads((out / "result.json").read_text())
    (final,) = events.Scalars("eval/final_mean_reward")
    assert (final.step, final.value) == (result["env_steps"], pytest.approx(result["eval_return_mean"]))


def test_verbose_prints_sb3_tables_instead_of_the_bar(tmp_path, capsys):
    rc, stdout, err = main(capsys, "--env", ENV, "--steps", "128", "--hp", "eval_every=64", "--verbose",
                           "--out", str(tmp_path / "run"))  # fmt: skip
    assert rc == 0, err
    tables = re.findall(r"^\|    total_timesteps \| (\d+) +\|$", stdout, re.M)  # SB3's table, one per iteration
    assert tables == ["64", "128"] and re.search(r"^\| eval/ ", stdout, re.M)
    assert "step/s" not in err


def test_median_iqr_interpolates_runs_and_holds_their_last_value():
    from experiments.plots import median_iqr

    runs = [
        (np.array([0.0, 10.0]), np.array([0.0, 10.0])),  # y = x
        (np.array([0.0, 5.0]), np.array([2.0, 2.0])),  # ends at x = 5, then stays at 2
        (np.array([2.0, 10.0]), np.array([4.0, 4.0])),  # starts at x = 2
    ]
    grid, med, q25, q75 = median_iqr(runs, points=11)
    assert grid == pytest.approx(np.arange(11.0))
    assert (med[0], q25[0], q75[0]) == pytest.approx((1.0, 0.5, 1.5))  # runs 1 and 2 only: [0, 2]
    assert (med[10], q25[10], q75[10]) == pytest.approx((4.0, 3.0, 7.0))  # [10, 2 (held), 4]
    assert med[3] == pytest.approx(3.0)  # [3, 2, 4]
