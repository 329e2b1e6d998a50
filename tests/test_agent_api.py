"""The Python API's plumbing in ``agents.base`` / ``agents.registry``: the thread count ``learn`` and ``evaluate`` run
with, ``Agent.load`` from the method table without the registry module, the logger keeping SB3's exclusions, and
environment ids in Gymnasium's ``module:id`` form.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from stable_baselines3.common.logger import KVWriter, Logger, filter_excluded_keys

import agents
from agents import FunctionCallback
from agents.base import METHODS, Agent, torch_threads
from agents.evaluation import env_spec, reward_threshold

ROOT = Path(__file__).resolve().parents[1]
ENV = "gumbel_rl/EmptyRoom-5x5-v0"


@pytest.fixture
def global_threads():
    """torch's global thread count set to 2 for the test (not the agents' 1), restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield 2
    torch.set_num_threads(before)


def test_learn_and_evaluate_use_the_agents_threads_and_restore_the_global_setting(global_threads):
    seen: list[int] = []
    with agents.make_agent("st-gumbel", ENV, eval_every=10**6) as agent:
        assert agent.n_threads == 1  # the documented default
        agent.learn(128, callback=FunctionCallback(lambda a, row: seen.append(torch.get_num_threads())))
        assert seen and set(seen) == {1}
        assert torch.get_num_threads() == global_threads
        agent.evaluate(episodes=2)
        assert torch.get_num_threads() == global_threads
    seen.clear()
    with agents.make_agent("st-gumbel", ENV, n_threads=None, eval_every=10**6) as agent:  # torch's own setting
        agent.learn(64, callback=FunctionCallback(lambda a, row: seen.append(torch.get_num_threads())))
    assert set(seen) == {global_threads} and torch.get_num_threads() == global_threads
    with pytest.raises(ValueError, match="n_threads must be an integer >= 1"):
        agents.make_agent("st-gumbel", ENV, n_threads=0)


@pytest.mark.parametrize("method", ["reinforce", "st-gumbel-critic", "ppo"])
def test_every_family_learns_with_the_agents_threads(global_threads, method):
    """SB3's agents run their own learn loop: it must honour n_threads as the base class's does."""
    seen: list[int] = []
    with agents.make_agent(method, ENV, eval_every=10**6) as agent:
        agent.learn(256, callback=FunctionCallback(lambda a, row: seen.append(torch.get_num_threads())))
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == global_threads


def test_torch_threads_restores_the_setting_after_an_exception(global_threads):
    with pytest.raises(RuntimeError), torch_threads(1):
        assert torch.get_num_threads() == 1
        raise RuntimeError
    assert torch.get_num_threads() == global_threads


def test_agent_load_rebuilds_from_the_method_table_and_base_imports_no_registry(tmp_path):
    tree = ast.parse((ROOT / "agents" / "base.py").read_text())
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert "agents.registry" not in imported and not any(m.startswith("agents.hyperparams") for m in imported)
    with agents.make_agent("st-gumbel", ENV, seed=3, eval_every=10**6) as agent:
        agent.learn(64)
        agent.save(tmp_path / "c.pt")
    with Agent.load(tmp_path / "c.pt") as again:
        assert type(again) is METHODS["st-gumbel"].agent_cls
        assert (again.seed, again.num_env_steps, again.config) == (3, agent.num_env_steps, agent.config)
        for a, b in zip(again.policy.state_dict().values(), agent.policy.state_dict().values(), strict=True):
            assert torch.equal(a, b)


class _TensorBoardLike(KVWriter):
    """Keeps the keys a TensorBoard writer would write (it drops the keys excluded for "tensorboard")."""

    def __init__(self) -> None:
        self.keys: set[str] = set()

    def write(self, key_values, key_excluded, step=0) -> None:
        self.keys |= set(filter_excluded_keys(key_values, key_excluded, "tensorboard"))

    def close(self) -> None:
        pass


def test_rows_keep_sb3s_exclusions_so_n_updates_never_reaches_tensorboard():
    writer = _TensorBoardLike()
    with agents.make_agent("ppo", ENV, n_envs=2, n_steps=32, batch_size=32, n_epochs=1, eval_every=64) as agent:
        agent.set_logger(Logger(folder=None, output_formats=[writer]))
        agent.learn(192)
        assert any("train/n_updates" in row for row in agent.record)  # in the record (and the CSV) ...
    assert "train/n_updates" not in writer.keys  # ... but excluded from TensorBoard, as SB3 records it
    assert {"train/value_loss", "time/total_timesteps", "eval/mean_reward"} <= writer.keys


def test_module_colon_id_imports_the_module_before_the_registry_lookup():
    spec = env_spec("corridor_env:audit/Corridor-v0")  # tests/ is on sys.path under pytest
    assert spec.id == "audit/Corridor-v0" and reward_threshold("corridor_env:audit/Corridor-v0") == 1.0
    with agents.make_agent("reinforce", "corridor_env:audit/Corridor-v0", eval_every=10**6) as agent:
        assert agent.env_id == "corridor_env:audit/Corridor-v0"
        assert agent.evaluate(episodes=2).episodes == 2
    for env_id, match in [
        ("no_such_module_xyz:audit/Corridor-v0", "cannot import 'no_such_module_xyz'"),
        ("corridor_env:audit/Nope-v0", "module 'corridor_env' did not register 'audit/Nope-v0'"),
        ("a:b:c", "ID or MODULE:ID"),
    ]:
        with pytest.raises(ValueError, match=match):
            agents.make_agent("reinforce", env_id)
