"""Tests for train.py (train / compare / evaluate), experiments.runner and experiments.compare on the small gridworld.

The CLI runs as a subprocess where its process-level behaviour matters (exit codes, SIGINT, no traceback) and
in-process through ``train.main(argv)`` elsewhere (same code, without the interpreter start-up). Budgets: a few
thousand env steps of ``gumbel_rl/EmptyRoom-5x5-v0``.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from agents import Agent, FunctionCallback
from agents.evaluation import evaluate
from experiments.compare import SUMMARY_COLUMNS, WALL_CLOCK_COLUMNS
from experiments.run_callbacks import TensorBoardCallback, tensorboard_tag
from experiments.runner import (
    EVAL_SEED,
    FINAL_EVAL_ENVS,
    RUN_FILES,
    RunSettings,
    TrainingInterrupted,
    parse_hyperparameters,
    read_metrics_csv,
    run_training,
    start_run,
    train_agent,
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
    assert columns[:2] == ["env_steps", "wall_s"] and "eval_return_mean" in columns
    steps = [int(r["env_steps"]) for r in rows]
    assert steps == sorted(steps) and steps[-1] == result["env_steps"] and len(rows) == result["iterations"]
    assert rows[0]["eval_return_mean"] != ""  # the first iteration evaluates

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


def test_help_lists_environments_and_methods(capsys):
    import agents
    from envs import GRIDWORLD_IDS

    rc, stdout, _ = main(capsys, "--help")
    assert rc == 0
    for name in ["CartPole-v1", *GRIDWORLD_IDS, *agents.METHODS]:
        assert re.search(rf"^\s+{re.escape(name)}\s+\S", stdout, re.M), name
    for command in ("train", "compare", "evaluate"):
        assert command in stdout


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
    }[case]
    rc, stdout, err = main(capsys, *argv)
    assert rc == 2
    assert len(err.splitlines()) == 1 and err.startswith("train.py: error: "), err
    assert match in err
    assert {name: (out / name).read_bytes() for name in RUN_FILES} == before  # nothing overwritten


def test_video_of_cartpole_without_pygame_names_the_extra(tmp_path, capsys):
    if importlib.util.find_spec("pygame") is not None:
        pytest.skip("pygame is installed: CartPole renders")
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
        first.append(row["env_steps"])
        raise KeyboardInterrupt

    run = tmp_path / "run"
    settings = RunSettings(ENV, "st-gumbel", 0, steps=10**9, hyperparameters=hp)
    agent = start_run(settings, run)
    with pytest.raises(TrainingInterrupted) as info:
        train_agent(agent, settings, run, callbacks=[FunctionCallback(interrupt)], tensorboard=False)
    per_iteration = first[0]
    assert info.value.env_steps == per_iteration > 0
    assert (run / "checkpoint.pt").is_file() and not (run / "result.json").exists()
    before = read_metrics_csv(run / "metrics.csv")
    assert [r["env_steps"] for r in before] == [per_iteration]

    settings.steps = 3 * per_iteration
    result = run_training(settings, run, resume=True, tensorboard=False)
    assert result["env_steps"] == result["target_env_steps"] == 3 * per_iteration
    after = read_metrics_csv(run / "metrics.csv")
    assert [r["env_steps"] for r in after] == [per_iteration, 2 * per_iteration, 3 * per_iteration]
    assert after[0] == before[0]  # the record continues; nothing was retrained
    config = json.loads((run / "config.json").read_text())
    assert config["steps"] == 3 * per_iteration and config["resumed"][0]["from_env_steps"] == per_iteration

    straight = run_training(settings, tmp_path / "straight", tensorboard=False)
    keys = [k for k in after[0] if k != "wall_s"]
    straight_rows = read_metrics_csv(tmp_path / "straight" / "metrics.csv")
    assert [[r.get(k) for k in keys] for r in after] == [[r.get(k) for k in keys] for r in straight_rows]
    assert result["eval_return_mean"] == straight["eval_return_mean"]


def test_sigint_checkpoints_exits_130_and_resume_extends_the_run(tmp_path, capsys):
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "train.py", "--env", ENV, "--steps", "100000000", "--hp", "eval_every=1000000",
         "--out", str(run), "--quiet"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout.readline().startswith("training st-gumbel")
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert f"--resume {run}" in stderr and "Traceback" not in stderr
    assert (run / "checkpoint.pt").is_file() and not (run / "result.json").exists()
    done = read_metrics_csv(run / "metrics.csv")
    trained = done[-1]["env_steps"]
    assert Agent.load(run / "checkpoint.pt").num_env_steps == trained

    rc, stdout, err = main(capsys, "--resume", str(run), "--steps", str(trained + 1), "--quiet")
    assert rc == 0, err
    result = json.loads((run / "result.json").read_text())
    assert trained < result["env_steps"] and result["target_env_steps"] == trained + 1
    rows = read_metrics_csv(run / "metrics.csv")
    assert rows[: len(done)] == done and rows[len(done)]["env_steps"] > trained


# ---- compare --------------------------------------------------------------------------------------------------
def compare_args(*methods: str, steps: int = 2048) -> list[str]:
    return ["--env", ENV, "--methods", *methods, "--seeds", "2", "--steps", str(steps), "--hp", "eval_every=1024",
            "--quiet"]  # fmt: skip


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


# ---- callbacks ------------------------------------------------------------------------------------------------
def test_tensorboard_callback_logs_rows_under_prefixes_against_env_steps():
    class Writer:
        def __init__(self):
            self.scalars = []

        def add_scalar(self, tag, value, step):
            self.scalars.append((tag, value, step))

        def flush(self):
            pass

    assert tensorboard_tag("eval_return_mean") == "eval/return_mean"
    assert tensorboard_tag("critic_loss") == "losses/critic_loss"
    assert tensorboard_tag("entropy") == "charts/entropy"
    writer = Writer()
    cb = TensorBoardCallback(writer)
    cb.on_step({"env_steps": 100, "wall_s": 1.0, "actor_loss": 0.5, "eval_return_mean": 3.0, "solved": False})
    cb.on_step({"env_steps": 300, "wall_s": 2.0, "actor_loss": 0.25})
    assert ("losses/actor_loss", 0.5, 100) in writer.scalars
    assert ("eval/return_mean", 3.0, 100) in writer.scalars
    assert ("eval/solved", 0.0, 100) in writer.scalars
    assert ("charts/wall_s", 2.0, 300) in writer.scalars
    assert ("charts/steps_per_second", 200.0, 300) in writer.scalars


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
