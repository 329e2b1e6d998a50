"""bench/bench_gpu.py: its CPU smoke mode writes a well-formed table and JSON with plausible numbers; compile
failures, running out of memory and the overall budget are recorded, not raised; bad flags are refused in one line.
The CUDA part runs only where a GPU is available."""

from __future__ import annotations

import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import bench_gpu  # noqa: E402

SMALL = ["--min-time", "0.02", "--repeats", "3", "--budget", "60", "--no-compile"]


def run(tmp_path: Path, *flags: str) -> tuple[dict[str, Any], str]:
    out = tmp_path / "gpu.md"
    report = bench_gpu.main([*flags, "--out", str(out)])
    on_disk = json.loads(out.with_suffix(".json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    return on_disk, out.read_text()


def test_cpu_smoke_writes_a_plausible_table(tmp_path: Path) -> None:
    report, md = run(
        tmp_path, "--device", "cpu", "--min-log2", "4", "--max-log2", "9", "--seeds-batch", "3", "--steps", "1024",
        *SMALL,
    )  # fmt: skip
    m = report["machine"]
    assert m["device"] == "cpu" and m["gpu"] is None and m["torch"] == torch.__version__
    assert m["cuda"] == torch.version.cuda
    twin = report["twin"]
    assert twin["window"] == 8 and twin["objective"] == "env"  # the tuned CartPole-v1 training window
    assert [r["log2"] for r in twin["rows"]] == list(range(4, 10))
    assert twin["stopped"] == "done: largest size 2^9 reached"
    for row in twin["rows"]:
        fwd, bwd = row["cells"]["forward"], row["cells"]["fwd+bwd"]
        for cell in (fwd, bwd):
            assert "status" not in cell
            assert len(cell["steps_per_s_repeats"]) == 3
            assert all(v > 0 and math.isfinite(v) for v in cell["steps_per_s_repeats"])
        assert bwd["grad_finite"] is True
        # Per env step, a step without autograd is cheaper than one with its backward (measured ratio 5-15x).
        assert fwd["steps_per_s"] > bwd["steps_per_s"], row
    rates = {r["log2"]: r["cells"]["forward"]["steps_per_s"] for r in twin["rows"]}
    assert rates[9] > 2 * rates[4]  # batching pays: measured 14x from 16 to 512 envs
    # The table: a header naming the two series, one row per size with every column filled.
    lines = md.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| envs |"))
    assert lines[header] == "| envs | forward | fwd+bwd | peak MiB, forward | peak MiB, fwd+bwd |"
    rows = lines[header + 2 : header + 8]
    assert [r.split(" | ")[0] for r in rows] == [f"| 2^{k}" for k in range(4, 10)]
    for r in rows:
        cells = [c.strip() for c in r.strip("|").split("|")]
        assert len(cells) == 5 and re.fullmatch(r"[\d.]+ [kMG]|\d+", cells[1]) and cells[3] == "-"
    assert "goal >= 1e9: **not met** (a CPU smoke check" in md
    for key, seeds in (("one-seed", 1), ("many-seeds", 3)):
        s = report[key]
        assert s["seeds"] == seeds and 0 <= s["solved"] <= seeds
        assert s["setup_s"] > 0 and s["elapsed_s"] > 0 and s["total_s"] == pytest.approx(s["setup_s"] + s["elapsed_s"])
        # 1,024 env steps are two iterations of 64 envs x 8 steps: too few to solve, so the step budget ends it.
        assert s["solved"] == 0 and s["max_env_steps"] == 1024
        assert s["stopped"] == "step budget of 1024 env steps reached"
        assert s["iterations"] == 2 and s["evaluations"] >= 1  # the first check follows the first iteration
        assert 0 < s["train_s"] <= s["elapsed_s"] and s["other_s"] == pytest.approx(s["elapsed_s"] - s["train_s"])
        assert set(s["devices"].values()) == {"cpu"}
    assert re.search(r"\| one seed \(`make_agent`\) \| 0/1 \| [\d.]+ \| - \| [\d.]+ \| [\d.]+ \| [\d.]+ \| - \|", md)
    assert re.search(r"\| batched seeds \(`ManySeeds`\) \| 0/3 \|", md)
    assert report["elapsed_s"] < 60


def test_compile_failure_is_recorded_and_the_eager_series_still_run(tmp_path: Path, monkeypatch) -> None:
    def broken_compile(fn: Any, **kwargs: Any) -> Any:
        def call(*args: Any) -> Any:
            raise RuntimeError("inductor: no compiler here\nsecond line")

        return call

    monkeypatch.setattr(bench_gpu.torch, "compile", broken_compile)
    report, md = run(
        tmp_path, "--device", "cpu", "--sections", "twin", "--min-log2", "4", "--max-log2", "5", "--compile",
        "--min-time", "0.02", "--repeats", "2",
    )  # fmt: skip
    series = report["twin"]["series"]
    for name in ("forward, compiled", "fwd+bwd, compiled"):
        assert series[name]["stopped"] == "compile failed: RuntimeError: inductor: no compiler here"
    for row in report["twin"]["rows"]:
        assert set(row["cells"]) == {"forward", "fwd+bwd"}
        assert all(c["steps_per_s"] > 0 for c in row["cells"].values())
    assert "- forward, compiled: compile failed: RuntimeError" in md
    assert "| 2^5 | " in md


def test_out_of_memory_stops_only_that_series(tmp_path: Path, monkeypatch) -> None:
    real = bench_gpu.make_runner

    def runner(series: Any, n: int, device: torch.device, window: int) -> Any:
        if series.kind == "forward" and n >= 1 << 5:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(series, n, device, window)

    monkeypatch.setattr(bench_gpu, "make_runner", runner)
    report, md = run(tmp_path, "--device", "cpu", "--sections", "twin", "--min-log2", "4", "--max-log2", "6", *SMALL)
    rows = {r["log2"]: r["cells"] for r in report["twin"]["rows"]}
    assert rows[4]["forward"]["steps_per_s"] > 0
    assert rows[5]["forward"] == {"status": "out of memory"}
    assert "forward" not in rows[6]  # the batch stopped growing for that series only
    assert all(rows[k]["fwd+bwd"]["steps_per_s"] > 0 for k in (4, 5, 6))
    assert report["twin"]["series"]["forward"]["stopped"] == "out of memory at 2^5"
    assert "| 2^5 | out of memory |" in md


def test_overall_budget_is_enforced(tmp_path: Path, monkeypatch) -> None:
    def slow_make(*args: Any, **kwargs: Any) -> Any:
        time.sleep(10)
        raise AssertionError("the budget should have stopped this")

    monkeypatch.setattr(bench_gpu.ManySeeds, "make", slow_make)
    t0 = time.perf_counter()
    report, md = run(tmp_path, "--device", "cpu", "--sections", "many-seeds", "--budget", "1.5")
    assert time.perf_counter() - t0 < 4
    assert report["stopped"] == "overall budget of 1.5 s reached"
    assert report["many-seeds"]["stopped"] == "stopped: overall budget of 1.5 s reached"
    assert "| batched seeds (`ManySeeds`) | - | - | - | - | - | - | - | stopped: overall budget" in md


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--min-log2", "5", "--max-log2", "3"], "need 0 <= --min-log2 <= --max-log2 <= 30, got 5 and 3"),
        (["--method", "ppo"], "--method 'ppo' is not a batched pathwise method; choose one of"),
        (["--seeds-batch", "0"], "--repeats, --seeds-batch, --steps and --threads must be >= 1"),
        (["--device", "tpu"], "unknown device 'tpu'; use 'auto', 'cpu', 'cuda' or 'cuda:N'"),
        pytest.param(
            ["--device", "cuda"],
            "device 'cuda' asked for, but CUDA is not available here; use 'auto' or 'cpu'",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here"),
        ),
    ],
)
def test_bad_flags_are_one_line_errors(flags: list[str], message: str, capsys, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        bench_gpu.main([*flags, "--out", str(tmp_path / "x.md")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1]
    assert not (tmp_path / "x.md").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_auto_puts_the_twin_policy_and_critic_on_the_gpu(tmp_path: Path) -> None:
    report, md = run(
        tmp_path, "--device", "auto", "--min-log2", "10", "--max-log2", "12", "--seeds-batch", "4", "--steps", "1024",
        *SMALL,
    )  # fmt: skip
    m = report["machine"]
    assert m["device"].startswith("cuda") and m["gpu"] and m["cuda"] == torch.version.cuda
    for row in report["twin"]["rows"]:
        for cell in row["cells"].values():
            assert cell["steps_per_s"] > 0 and cell["peak_mib"] > 0
    for key in ("one-seed", "many-seeds"):
        assert all(d.startswith("cuda") for d in report[key]["devices"].values()), report[key]["devices"]
    assert m["gpu"] in md


def test_window_objective_is_the_twins_training_objective() -> None:
    """The fwd+bwd series differentiates what training maximises: under "env", Gymnasium's return of the window
    (1 per step up to and including the terminating one) for hard actions; under "shaped", the summed shaped_reward."""
    import bench_envs

    n, w = 32, 64
    idx = torch.randint(0, 2, (w, n), generator=torch.Generator().manual_seed(3))
    idx[:, : n // 2] = 1  # half the envs always push right: their pole falls within the window
    actions = torch.nn.functional.one_hot(idx, 2).float()
    for objective in ("env", "shaped"):
        twin = bench_envs.make_twin(torch.device("cpu"), objective)
        start = twin.reset(n, torch.Generator().manual_seed(4))
        leaf = actions.clone().requires_grad_()
        total, x, t, done = bench_envs.twin_window_objective(twin)(start.x, start.t, leaf)
        (grad,) = torch.autograd.grad(total, leaf)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0
        s, alive, expected, ended = start, torch.ones(n, dtype=torch.bool), 0.0, torch.zeros(n, dtype=torch.bool)
        with torch.no_grad():
            for k in range(w):
                s, reward, terminated, truncated = twin.step(s, actions[k])
                if objective == "env":
                    expected += float(reward[alive].sum())
                    alive &= ~terminated
                else:
                    expected += float(twin.shaped_reward(s).sum())
                ended |= terminated | truncated
        assert float(total.detach()) == pytest.approx(expected, rel=1e-5)
        assert torch.equal(done, ended) and torch.equal(x, s.x) and torch.equal(t, s.t)
        if objective == "env":
            assert done[: n // 2].all() and expected < n * w  # the window's return counts the falls
