"""bench/bench_minigrid.py's learning sweep without training: methods take turns seed by seed, finished runs are
recorded and skipped on a rerun, and the summary's medians and ratios to PPO."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import bench_minigrid as bm  # noqa: E402

# steps to solve by (method, seed); None: never solved
FAKE = {
    ("st-gumbel", 0): 4_000,
    ("st-gumbel", 1): None,
    ("st-gumbel", 2): 6_000,
    ("ppo", 0): 10_000,
    ("ppo", 1): 8_000,
    ("ppo", 2): None,
}


def test_learning_sweep_order_records_and_summary(tmp_path, capsys):
    calls: list[tuple[str, int]] = []

    def fake(method: str, env_id: str, seed: int, budget: int, hp: dict[str, Any]) -> dict[str, Any]:
        calls.append((method, seed))
        n = FAKE[method, seed]
        return {"solve_env_steps": n, "last_eval": 0.9, "train_s": 1.0 if method == "st-gumbel" else 4.0}

    records = tmp_path / "runs.jsonl"
    ids, methods = ["MiniGrid-Empty-5x5-v0"], ["st-gumbel", "ppo"]
    hp = {"eval_every": 2_048}
    results = bm.learning_sweep(ids, methods, [0, 1, 2], 40_000, hp, records, run=fake)
    # the order rotates with the seed, so that neither method always runs first
    assert calls == [("st-gumbel", 0), ("ppo", 0), ("ppo", 1), ("st-gumbel", 1), ("st-gumbel", 2), ("ppo", 2)]
    assert len(records.read_text().splitlines()) == 6
    # a rerun runs nothing and returns the same results; another budget is another run
    calls.clear()
    again = bm.learning_sweep(ids, methods, [0, 1, 2], 40_000, hp, records, run=fake)
    assert calls == [] and again == results
    bm.learning_sweep(ids, ["ppo"], [0], 20_000, hp, records, run=fake)
    assert calls == [("ppo", 0)]
    capsys.readouterr()
    text = bm.learning_summary(results, 40_000)
    lines = text.splitlines()
    # st-gumbel: 4,000 / inf / 6,000 -> median 6,000; PPO: 10,000 / 8,000 / inf -> 10,000; seconds likewise
    assert lines[4] == "| MiniGrid-Empty-5x5-v0 | st-gumbel | 2/3 | 4,000, --, 6,000 | 6,000 | 0.60 | 1.0 | 0.25 |"
    assert lines[5] == "| MiniGrid-Empty-5x5-v0 | ppo | 2/3 | 10,000, 8,000, -- | 10,000 | -- | 4.0 | -- |"


def test_summary_when_half_never_solve():
    runs = [{"solve_env_steps": None, "train_s": 3.0}, {"solve_env_steps": 5, "train_s": 3.0}]
    text = bm.learning_summary({("X", "st-gumbel"): runs, ("X", "ppo"): runs}, 10)
    assert text.splitlines()[4] == "| X | st-gumbel | 1/2 | --, 5 | -- | -- | -- | -- |"


def test_records_refuse_a_bad_line(tmp_path):
    path = tmp_path / "runs.jsonl"
    path.write_text('{"key": "k", "solve_env_steps": 5, "last_eval": 0.9, "train_s": 1.0}\n{"key": "j"}\n')
    with pytest.raises(ValueError, match=r"runs.jsonl:2: not a learning record"):
        bm.load_records(path)
    with pytest.raises(ValueError, match=r"is a directory; give a JSON-lines file"):
        bm.load_records(tmp_path)


def test_main_refuses_bad_input_before_any_run(capsys):
    for argv in (["--methods", "nope"], ["--methods", "ppo", "--hp", "bogus=1"]):
        with pytest.raises(SystemExit) as exc:
            bm.main(["learning", "--ids", "CartPole-v1", "--seeds", "0", "--budget", "10", *argv])
        assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown method 'nope'; valid methods:" in err
    assert "unknown hyperparameter(s) bogus; valid:" in err
