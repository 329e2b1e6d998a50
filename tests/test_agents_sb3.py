"""Tests of the Stable-Baselines3 agents (agents.sb3).

Budgets are small and seeds fixed: EmptyRoom-5x5 is solved when the greedy policy takes a shortest path (return
0.92 >= threshold 0.911) in 100 deterministic episodes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import agents
from agents import StopTrainingOnSolved, make_agent

ROOM = "gumbel_rl/EmptyRoom-5x5-v0"


# ---- SB3 -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["ppo", "a2c", "dqn"])
def test_sb3_solves_empty_room(method):
    agent = make_agent(method, ROOM, seed=0, device="cpu", eval_every=500)
    agent.learn(20_000, callback=StopTrainingOnSolved())
    assert agent.solved, agent.record[-1]
    assert agent.solve_env_steps <= 20_000
    assert agent.num_env_steps == agent.model.num_timesteps
    assert agent.train_wall_s > 0 and agent.record[-1]["env_steps"] <= agent.num_env_steps
    # SB3's own deterministic policy solves it too.
    obs = np.arange(25)
    np.testing.assert_array_equal(
        agent.policy.predict(obs, deterministic=True)[0], agent.model.predict(obs, deterministic=True)[0]
    )


@pytest.mark.parametrize("method", ["ppo", "a2c", "dqn"])
def test_gumbel_policy_acts_like_the_sb3_model(method):
    agent = make_agent(method, "CartPole-v1", seed=2, device="cpu")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # random weights far from the init, so that the greedy action varies with the input
        for p in agent.model.policy.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    agent.refresh_policy()
    obs = (np.random.default_rng(0).standard_normal((5_000, 4)) * [1.0, 1.5, 0.1, 1.5]).astype(np.float32)
    ours = agent.policy.predict(obs, deterministic=True)[0]
    theirs = agent.model.predict(obs, deterministic=True)[0]
    np.testing.assert_array_equal(ours, theirs)
    assert 0.05 < ours.mean() < 0.95  # both actions occur: the comparison can fail


def test_zoo_hyperparameters_for_cartpole():
    ppo = make_agent("ppo", "CartPole-v1", seed=0, device="cpu").model
    assert (ppo.n_envs, ppo.n_steps, ppo.batch_size, ppo.n_epochs) == (8, 32, 256, 20)
    assert (ppo.gamma, ppo.gae_lambda, ppo.ent_coef) == (0.98, 0.8, 0.0)
    for p in (1.0, 0.5, 0.1):  # lin_1e-3 and lin_0.2: value * progress_remaining
        assert ppo.lr_schedule(p) == pytest.approx(1e-3 * p)
        assert ppo.clip_range(p) == pytest.approx(0.2 * p)
    dqn = make_agent("dqn", "CartPole-v1", seed=0, device="cpu").model
    assert (dqn.buffer_size, dqn.learning_starts, dqn.batch_size, dqn.gamma) == (100_000, 1_000, 64, 0.99)
    assert (dqn.train_freq.frequency, dqn.train_freq.unit.value, dqn.gradient_steps) == (256, "step", 128)
    assert dqn.target_update_interval == 10
    assert (dqn.exploration_fraction, dqn.exploration_initial_eps, dqn.exploration_final_eps) == (0.16, 1.0, 0.04)
    assert dqn.lr_schedule(0.3) == pytest.approx(2.3e-3)
    assert [m.out_features for m in dqn.q_net.q_net if isinstance(m, torch.nn.Linear)] == [256, 256, 2]
    a2c = make_agent("a2c", "CartPole-v1", seed=0, device="cpu").model
    assert (a2c.n_envs, a2c.n_steps, a2c.ent_coef, a2c.gamma) == (8, 5, 0.0, 0.99)


@pytest.mark.parametrize("method", ["ppo", "dqn"])
def test_callback_returning_false_stops_training(method):
    calls = []
    agent = make_agent(method, ROOM, seed=0, device="cpu", eval_every=10**6)
    agent.learn(200_000, callback=lambda ag, row: calls.append(row["env_steps"]) or len(calls) < 3)
    assert len(calls) == 3 and len(agent.record) == 3
    assert agent.num_env_steps < 5_000
    assert agent.record[-1]["env_steps"] == calls[-1] <= agent.num_env_steps


def test_sb3_checkpoint_round_trip(tmp_path):
    kw = dict(seed=0, device="cpu", eval_every=10**6, exploration_fraction=1.0)  # epsilon decays over the budget
    agent = make_agent("dqn", ROOM, **kw).learn(1_500)
    agent.save(tmp_path / "dqn.pt")
    back = agents.Agent.load(tmp_path / "dqn.pt", device="cpu")
    assert back.model.num_timesteps == agent.num_env_steps == back.num_env_steps
    assert back.model._n_calls == agent.model._n_calls and back.record == agent.record
    theirs = agent.model.get_parameters()
    for k, v in back.model.get_parameters()["policy"].items():
        assert torch.equal(v, theirs["policy"][k])
    obs = np.arange(25)
    np.testing.assert_array_equal(
        back.policy.predict(obs, deterministic=True)[0], agent.model.predict(obs, deterministic=True)[0]
    )
    # Training continues where it was: epsilon follows 1 - 0.95 * steps / 3000, not a restarted schedule.
    n_rows = len(back.record)
    back.learn(3_000)
    assert back.num_env_steps >= 3_000 and back.model.num_timesteps == back.num_env_steps
    row = back.record[n_rows]
    assert row["env_steps"] > 1_500
    assert row["exploration_rate"] == pytest.approx(1 - 0.95 * row["env_steps"] / 3_000, abs=1e-9)


# ---- refusals ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["ppo", "a2c", "dqn"])
def test_bad_learning_rate_is_named(method):
    with pytest.raises(ValueError, match="learning_rate"):
        make_agent(method, ROOM, learning_rate=-1e-3)


def test_bad_choices_are_named():
    with pytest.raises(ValueError, match="unknown method 'ppo2'.*reinforce.*ppo.*a2c.*dqn"):
        make_agent("ppo2", ROOM)
    with pytest.raises(ValueError, match="Box action space"):
        make_agent("ppo", "Pendulum-v1")
    with pytest.raises(ValueError, match="lr_schedule"):
        make_agent("ppo", ROOM, lr_schedule="cosine")
