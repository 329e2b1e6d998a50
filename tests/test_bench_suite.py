"""bench/bench_suite.py's pure parts: the plan (methods, seeds, budgets, per-method overrides), the best baseline,
the goal marks, imagined steps to solve and the tables. Nothing here trains."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

_PATH = Path(__file__).resolve().parent.parent / "bench" / "bench_suite.py"
_spec = importlib.util.spec_from_file_location("bench_suite", _PATH)
assert _spec is not None and _spec.loader is not None
bs = importlib.util.module_from_spec(_spec)
sys.modules["bench_suite"] = bs
_spec.loader.exec_module(bs)

SIX = ["st-gumbel-model", "st-gumbel-critic", "reinforce-model", "reinforce", "ppo", "dqn"]
OTHERS = [f"{e}-{f}" for f in ("model", "critic") for e in ("relaxed", "argmax", "reinmax", "gumbel-rao")]


def test_plan_covers_the_issue_suite():
    items = bs.plan()
    envs = list(dict.fromkeys(i.env_id for i in items))
    assert envs == [
        "CartPole-v1",
        "Acrobot-v1",
        "FrozenLake-v1",
        "CliffWalking-v1",
        "gumbel_rl/FourRooms-11x11-v0",
        "gumbel_rl/Maze-16x16-v0",
    ]
    for env_id in envs:
        methods = [i.method for i in items if i.env_id == env_id]
        expected = SIX + OTHERS if env_id in ("CartPole-v1", "Acrobot-v1", "FrozenLake-v1") else SIX
        assert methods == expected
        budgets = {(i.budget, i.eval_every) for i in items if i.env_id == env_id}
        assert budgets == {(bs.SUITE[env_id].steps, bs.SUITE[env_id].eval_every)}  # the same for every method
    seeds = {(i.env_id, i.method): i.seeds for i in items}
    assert seeds["CartPole-v1", "st-gumbel-model"] == tuple(range(10))
    assert seeds["gumbel_rl/Maze-16x16-v0", "dqn"] == tuple(range(5))
    assert seeds["FrozenLake-v1", "gumbel-rao-critic"] == (0, 1, 2)
    # 6 envs x 6 methods + 3 envs x 8 others; runs: 6 x (10 + 5 x 5) + 3 x 8 x 3
    assert len(items) == 36 + 24
    assert sum(len(i.seeds) for i in items) == 6 * 35 + 72
    assert [bs.SUITE[e].steps for e in envs] == [100_000, 100_000, 200_000, 104_000, 160_000, 448_000]


def test_plan_overrides():
    items = {(i.env_id, i.method): i for i in bs.plan()}
    for env_id in bs.SUITE:
        # REINFORCE never uses the twin; every method gets the env's evaluation period
        assert items[env_id, "reinforce"].hyperparameters == {
            "eval_every": bs.SUITE[env_id].eval_every,
            "rollout": "gym",
        }
        assert items[env_id, "st-gumbel-model"].hyperparameters == {"eval_every": bs.SUITE[env_id].eval_every}
    # CartPole: the zoo's DQN budget is 5e4, ours 1e5 -> epsilon decays over the same 8,000 env steps as in the zoo
    dqn = items["CartPole-v1", "dqn"].hyperparameters
    assert dqn["exploration_fraction"] == pytest.approx(0.08)
    assert dqn["exploration_fraction"] * 100_000 == pytest.approx(0.16 * 50_000)
    assert "exploration_fraction" not in items["Acrobot-v1", "dqn"].hyperparameters  # zoo budget = ours
    assert bs.method_hyperparameters("dqn", "CartPole-v1", 1_000) == {"exploration_fraction": 1.0}  # capped


def test_plan_filters_and_scale():
    items = bs.plan(["ppo", "st-gumbel-critic"], ["FrozenLake-v1", "CartPole-v1"], max_seeds=1, budget_scale=0.02)
    assert [(i.env_id, i.method, i.seeds, i.budget, i.eval_every) for i in items] == [
        ("CartPole-v1", "st-gumbel-critic", (0,), 2_000, 250),
        ("CartPole-v1", "ppo", (0,), 2_000, 250),
        ("FrozenLake-v1", "st-gumbel-critic", (0,), 4_000, 500),
        ("FrozenLake-v1", "ppo", (0,), 4_000, 500),
    ]
    assert bs.plan(["relaxed-model"], ["gumbel_rl/Maze-16x16-v0"]) == []  # the others skip the maps
    assert [len(i.seeds) for i in bs.plan(None, ["CartPole-v1"], max_seeds=4)][:3] == [4, 4, 4]
    assert items[0].out_dir("root") == Path("root/CartPole-v1/st-gumbel-critic")
    assert bs.plan(["dqn"], ["gumbel_rl/Maze-16x16-v0"])[0].out_dir("r") == Path("r/gumbel_rl_Maze-16x16-v0/dqn")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"methods": ["sac"]}, "unknown method 'sac'; valid: st-gumbel-model"),
        ({"env_ids": ["Pong-v5"]}, "unknown env 'Pong-v5'; valid: CartPole-v1"),
        ({"max_seeds": 0}, "max_seeds must be a positive integer, got 0"),
        ({"budget_scale": 0.0}, "budget_scale must be a positive number, got 0.0"),
        ({"budget_scale": math.nan}, "budget_scale must be a positive number"),
    ],
)
def test_plan_refuses_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        bs.plan(**kwargs)


def _row(method: str, seeds: int, solved: int, steps: float | None, wall: float | None, **extra: Any) -> dict:
    return {
        "method": method,
        "env": "CartPole-v1",
        "budget": 100_000,
        "seeds": seeds,
        "planned_seeds": bs.SEEDS[method],
        "solved": solved,
        "success_rate": solved / seeds,
        "solve_env_steps_median": steps,
        "solve_wall_s_median": wall,
        "imagined_steps_median": extra.get("imagined"),
        "has_model": method.endswith("-model"),
        "final_return_iqm": 500.0,
        "final_return_ci_low": 480.0,
        "final_return_ci_high": 500.0,
    }


def _rows(*rows: dict) -> dict[str, dict]:
    return {r["method"]: r for r in rows}


def test_best_baseline():
    rows = _rows(_row("ppo", 5, 5, 40_000.0, 30.0), _row("dqn", 5, 5, 30_000.0, 60.0))
    assert bs.best_baseline(rows, "solve_env_steps_median") == "dqn"
    assert bs.best_baseline(rows, "solve_wall_s_median") == "ppo"
    rows = _rows(_row("ppo", 5, 1, None, None), _row("dqn", 5, 5, 90_000.0, 60.0))
    assert bs.best_baseline(rows, "solve_env_steps_median") == "dqn"  # never solving (None) loses
    rows = _rows(_row("ppo", 5, 1, None, None), _row("dqn", 5, 0, None, None))
    assert bs.best_baseline(rows, "solve_env_steps_median") == "ppo"  # a tie: PPO
    assert bs.best_baseline(_rows(_row("st-gumbel-model", 10, 10, 1.0, 1.0)), "solve_env_steps_median") is None


def _marks(rows: dict, scaled: bool = False) -> list[str]:
    return [g.mark for g in bs.goals(rows, scaled)]


def test_goals_marked():
    base = [_row("ppo", 5, 5, 40_000.0, 30.0), _row("dqn", 5, 5, 30_000.0, 20.0)]
    good = _rows(*base, _row("st-gumbel-model", 10, 9, 15_000.0, 40.0), _row("st-gumbel-critic", 5, 4, 50_000.0, 41.0))
    assert _marks(good) == ["met", "met", "met", "not met"]  # 40 <= 2 x 20; 41 > 40
    details = [g.detail for g in bs.goals(good)]
    assert details[0] == "9/10 solved, 15,000 vs dqn 30,000 (0.50)"
    assert details[3] == "41 s vs dqn 20 s (2.05)"
    bad = _rows(*base, _row("st-gumbel-model", 10, 8, 15_000.0, 40.0), _row("st-gumbel-critic", 5, 3, 50_000.0, 41.0))
    assert _marks(bad)[:2] == ["not met", "not met"]  # 8/10 and 3/5 seeds
    slow = _rows(*base, _row("st-gumbel-model", 10, 10, 15_001.0, None), _row("st-gumbel-critic", 5, 5, 1.0, 1.0))
    assert _marks(slow) == ["not met", "met", "not met", "met"]  # just over half; never solving in median
    # baselines that never solve in median: any finite median beats them
    never = [_row("ppo", 5, 2, None, None), _row("dqn", 5, 0, None, None)]
    rows = _rows(*never, _row("st-gumbel-model", 10, 10, 9e4, 99.0), _row("st-gumbel-critic", 5, 4, 9e4, 99.0))
    assert _marks(rows) == ["met", "met", "met", "met"]


def test_goals_not_measured():
    base = [_row("ppo", 5, 5, 40_000.0, 30.0), _row("dqn", 5, 5, 30_000.0, 20.0)]
    partial = _rows(*base, _row("st-gumbel-model", 3, 3, 1.0, 1.0))
    goals = bs.goals(partial)
    assert [g.mark for g in goals] == ["not measured"] * 4
    assert goals[0].detail == "3/10 st-gumbel-model seeds finished"
    assert goals[1].detail == "0/5 st-gumbel-critic seeds finished"
    full = _rows(*base, _row("st-gumbel-model", 10, 10, 1.0, 1.0), _row("st-gumbel-critic", 5, 5, 1.0, 1.0))
    assert _marks(full, scaled=True) == ["not measured"] * 4
    no_base = _rows(_row("st-gumbel-model", 10, 10, 1.0, 1.0), _row("st-gumbel-critic", 5, 5, 1.0, 1.0))
    assert {g.detail for g in bs.goals(no_base)} == {"no SB3 baseline finished"}


def test_seed_count_goals_decided_before_every_seed_finished():
    """Two of five critic seeds ran to the budget unsolved: 4/5 can no longer be reached, whatever the fifth does;
    four solved: met already. The model's goal needs 9/10: two failures decide it, one does not."""
    base = [_row("ppo", 5, 5, 40_000.0, 30.0), _row("dqn", 5, 5, 30_000.0, 20.0)]
    rows = _rows(*base, _row("st-gumbel-model", 8, 6, 1.0, 1.0), _row("st-gumbel-critic", 4, 2, None, None))
    goals = bs.goals(rows)
    assert [g.mark for g in goals] == ["not met", "not met", "not measured", "not measured"]
    assert goals[0].detail == "6/8 finished seeds solved, 2 unfinished: at most 8/10 can solve"
    assert goals[1].detail == "2/4 finished seeds solved, 1 unfinished: at most 3/5 can solve"
    rows = _rows(*base, _row("st-gumbel-model", 9, 8, 1.0, 1.0), _row("st-gumbel-critic", 4, 4, 1.0, 1.0))
    assert [g.mark for g in bs.goals(rows)][:2] == ["not measured", "met"]
    assert _marks(rows, scaled=True)[:2] == ["not measured", "not measured"]


def test_imagined_steps_to_solve():
    record = [
        {"time/total_timesteps": 1_000, "train/imagined_steps": 0.0},
        {"time/total_timesteps": 2_000, "train/imagined_steps": 512.0},
        {"time/total_timesteps": 3_000, "train/imagined_steps": 1_024.0},
    ]
    assert bs.imagined_steps_to_solve(record, {"solved": True, "solve_env_steps": 2_000}) == 512.0
    assert bs.imagined_steps_to_solve(record, {"solved": True, "solve_env_steps": 2_500}) == 512.0
    assert bs.imagined_steps_to_solve(record, {"solved": False, "solve_env_steps": None}) == math.inf
    assert bs.imagined_steps_to_solve([{"time/total_timesteps": 5}], {"solved": True, "solve_env_steps": 5}) is None


def test_env_markdown():
    rows = _rows(
        _row("st-gumbel-model", 10, 10, 15_000.0, 40.0, imagined=1_234_567.0),
        _row("st-gumbel-critic", 4, 4, 50_000.0, 41.0),
        _row("ppo", 5, 5, 40_000.0, 30.0),
        _row("dqn", 5, 5, 30_000.0, 20.0),
    )
    text = bs.env_markdown("CartPole-v1", rows)
    lines = text.splitlines()
    assert lines[0] == (
        "**CartPole-v1** (threshold 475.0; budget 100,000 real env steps; best SB3 baseline by steps: dqn, "
        "by seconds: dqn)"
    )
    assert lines[4] == "| st-gumbel-model | 10/10 | 15,000 | 0.50 | 40 | 2.00 | 1,234,567 | 500 [480, 500] |"
    assert lines[5] == "| st-gumbel-critic | 4/4 (of 5) | 50,000 | 1.67 | 41 | 2.05 | n/a | 500 [480, 500] |"
    assert lines[7] == "| dqn | 5/5 | 30,000 | 1.00 | 20 | 1.00 | n/a | 500 [480, 500] |"
    assert "- st-gumbel-model solves on >= 9/10 seeds, median real steps <= 0.5x best SB3: **met**" in text
    assert (
        "- st-gumbel-critic solves on >= 4/5 seeds within the budget: **met** (4/4 finished seeds solved, 1 unf" in text
    )
    assert "- st-gumbel-critic median train s to solve <= 2x best SB3: **not measured**" in text
    assert bs.report(list(rows.values())) == text


def _result(seed: int, solved: bool, steps: int | None, ret: float = 500.0) -> dict[str, Any]:
    return {
        "method": "reinmax-model",
        "seed": seed,
        "solved": solved,
        "solve_env_steps": steps,
        "solve_wall_s": 10.0 * seed + 5.0 if solved else None,
        "eval_return_mean": ret,
        "wall_s": 30.0,
        "env_steps": steps or 100_000,
    }


def test_records_round_trip_and_keys(tmp_path):
    item = bs.plan(["reinmax-model"], ["CartPole-v1"])[0]
    path = tmp_path / "records" / "suite.jsonl"
    assert bs.load_records(path) == {} and bs.load_records(None) == {}
    payloads = [
        {"method": item.method, "seed": s, "result": _result(s, True, 2_000 * (s + 1)), "imagined_to_solve": 9.0}
        for s in (0, 2)
    ]
    records = {
        bs.record_key(item.env_id, item.method, p["seed"], item.budget, item.eval_every): bs.make_record(item, p)
        for p in payloads
    }
    bs.save_records(path, records)
    assert not path.with_name("suite.jsonl.tmp").exists()
    loaded = bs.load_records(path)
    assert loaded == records
    recorded = bs.recorded_payloads(item, loaded)
    assert sorted(recorded) == [0, 2]
    assert recorded[2]["result"]["solve_env_steps"] == 6_000 and bs.payload_imagined(recorded[2]) == 9.0
    # another budget or evaluation period is another run
    other = bs.PlanItem(item.env_id, item.method, item.seeds, item.budget // 2, item.eval_every)
    assert bs.recorded_payloads(other, loaded) == {}
    row = bs.method_row(item, list(recorded.values()))
    assert row is not None and row["solved"] == 2 and row["solve_env_steps_median"] == 4_000.0
    assert row["imagined_steps_median"] == 9.0


def test_records_refuse_a_bad_line(tmp_path):
    path = tmp_path / "suite.jsonl"
    path.write_text('{"env": "CartPole-v1"}\n')
    with pytest.raises(ValueError, match=r"suite.jsonl:1: not a suite record"):
        bs.load_records(path)


def test_records_refuse_a_directory_in_one_line(tmp_path, capsys):
    """A directory given as --records is refused before any run, not by a traceback at the first save."""
    with pytest.raises(SystemExit) as exc:
        bs.main(["--methods", "ppo", "--envs", "CartPole-v1", "--records", str(tmp_path), "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "is a directory; give a JSON-lines file" in capsys.readouterr().err


def _write_run(root: Path, item: Any, seed: int, rows: list[str], result: dict[str, Any] | None = None) -> None:
    d = bs.run_dir_for(item.out_dir(root), item.method, seed)
    d.mkdir(parents=True)
    header = "time/total_timesteps,time/train_seconds,eval/mean_reward,train/imagined_steps"
    (d / "metrics.csv").write_text("\n".join([header, *rows]) + "\n")
    if result is not None:
        (d / "result.json").write_text(json.dumps(result))


def test_unfinished_runs_and_report_from_records_alone(tmp_path, capsys):
    item = bs.plan(["reinmax-model"], ["CartPole-v1"], max_seeds=3)[0]
    out = tmp_path / "out"
    _write_run(out, item, 0, ["4,1.0,,0", "2048,5.0,120.5,512", "4096,9.0,,1024"])  # stopped, not finished
    _write_run(out, item, 1, ["4,1.0,,0"])
    _write_run(out, item, 2, ["4,1.0,,0", "2048,5.0,480.0,512"], _result(2, True, 2_048))
    assert bs.unfinished_runs(item, out) == [
        {"seed": 0, "steps": 4_096, "last_eval": 120.5},
        {"seed": 1, "steps": 4, "last_eval": None},
    ]
    assert [u["seed"] for u in bs.unfinished_runs(item, out, skip=[1])] == [0]
    records = tmp_path / "suite.jsonl"
    # report-only records the finished directory run, then reports from the records without the directories
    args = ["--methods", "reinmax-model", "--envs", "CartPole-v1", "--seeds", "3", "--report-only"]
    assert bs.main([*args, "--out", str(out), "--records", str(records)]) == 0
    (rec,) = bs.load_records(records).values()
    assert rec["seed"] == 2 and rec["imagined_to_solve"] == 512.0 and rec["budget"] == 100_000
    text = capsys.readouterr().out
    assert "| reinmax-model | 1/1 (of 3) | 2,048 |" in text
    assert (
        "- unfinished: reinmax-model seed 0 stopped at 4,096 of 100,000 env steps, not solved by then "
        "(last greedy evaluation 120.5); the same command resumes it" in text
    )
    assert "seed 1 stopped at 4 of 100,000 env steps, not solved by then (last greedy evaluation none yet)" in text
    assert bs.main([*args, "--out", str(tmp_path / "empty"), "--records", str(records)]) == 0
    assert "| reinmax-model | 1/1 (of 3) | 2,048 |" in capsys.readouterr().out
