"""Tests of the REINFORCE baseline (agents.reinforce) and the Stable-Baselines3 agents (agents.sb3).

Budgets are small and seeds fixed: EmptyRoom-5x5 is solved when the greedy policy takes a shortest path (return
0.92 >= threshold 0.911) in 100 deterministic episodes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import agents
from agents import StopTrainingOnSolved, make_agent
from agents.reinforce import ReinforceAgent, discounted_advantages

ROOM = "gumbel_rl/EmptyRoom-5x5-v0"


# ---- REINFORCE -----------------------------------------------------------------------------------------------
def test_discounted_advantages_by_hand():
    """gamma 0.5, one env, 5 steps: terminate at t=1 (no bootstrap), truncate at t=3 (bootstrap V=10), end at t=4
    (bootstrap V=4); the step after a done (t=2 here marked invalid) is no transition. ``next_values[t]`` is
    ``values[t + 1]`` within an episode, as in a real rollout."""
    g = 0.5
    r = torch.tensor([[1.0], [2.0], [0.0], [3.0], [1.0]])
    v = torch.tensor([[0.5], [0.25], [9.0], [1.0], [2.0]])
    nv = torch.tensor([[0.25], [100.0], [0.0], [10.0], [4.0]])
    term = torch.tensor([[False], [True], [False], [False], [False]])
    trunc = torch.tensor([[False], [False], [False], [True], [False]])
    valid = torch.tensor([[True], [True], [False], [True], [True]])
    adv = discounted_advantages(r, v, nv, term, trunc, valid, g, 1.0)
    returns = torch.tensor([[1 + g * 2], [2.0], [0.0], [3 + g * 10], [1 + g * 4]])
    expected = (returns - v) * valid
    torch.testing.assert_close(adv, expected)
    # lambda = 0: one-step TD errors.
    adv0 = discounted_advantages(r, v, nv, term, trunc, valid, g, 0.0)
    td = torch.tensor([[1 + g * 0.25 - 0.5], [2 - 0.25], [0.0], [3 + g * 10 - 1.0], [1 + g * 4 - 2.0]])
    torch.testing.assert_close(adv0, td)


@pytest.mark.parametrize("rollout", ["twin", "gym"])
def test_reinforce_solves_empty_room(rollout):
    agent = make_agent("reinforce", ROOM, seed=2, device="cpu", rollout=rollout, eval_every=500)
    assert agent.rollout == rollout
    agent.learn(20_000, callback=StopTrainingOnSolved())
    assert agent.solved, agent.record[-1]
    assert agent.solve_env_steps <= 20_000
    assert agent.evaluate(episodes=20).mean >= 0.911


def test_reinforce_never_backpropagates_through_the_twin():
    agent = make_agent("reinforce", ROOM, seed=0, device="cpu", rollout="twin", n_envs=4, n_steps=8)
    seen = []
    step = agent.twin.step

    def spy(state, action, *args, **kwargs):
        out = step(state, action, *args, **kwargs)
        seen.append(
            (
                action.requires_grad,
                action.grad_fn is not None,
                state.dist.requires_grad,
                out[0].dist.requires_grad,
                out[1].requires_grad,
            )
        )
        return out

    agent.twin.step = spy
    before = [p.detach().clone() for p in agent.policy.parameters()]
    steps, metrics = agent._train_iteration()
    assert steps == 32 and len(seen) == 8
    assert not any(any(flags) for flags in seen)
    assert not agent._twin_state.dist.requires_grad
    # ... and yet the policy learned (score-function gradient through log_prob).
    assert any(not torch.equal(b, p) for b, p in zip(before, agent.policy.parameters(), strict=True))
    assert np.isfinite(metrics["policy_loss"])


def test_reinforce_gym_rollout_masks_autoreset_steps():
    agent = make_agent("reinforce", ROOM, seed=3, device="cpu", rollout="gym", n_envs=4, n_steps=80)
    batch = agent._rollout_gym()
    done = (batch["terminated"] | batch["truncated"]).numpy()
    valid = batch["valid"].numpy()
    assert done.any()
    # Gymnasium NEXT_STEP autoreset: the step right after a done is a reset, not a transition.
    np.testing.assert_array_equal(valid[1:], ~done[:-1])
    assert valid[0].all()
    assert batch["env_steps"] == int(valid.sum()) < 4 * 80
    assert (batch["rewards"].numpy()[~valid] == 0).all()
    # Completed episodes in this room return 1 - 0.01 * length > 0 (goal) or -0.32 (time limit of 32 steps).
    assert batch["ep_count"] == int(done.sum())


def test_reinforce_same_seed_same_run_and_exact_resume(tmp_path):
    kw = dict(seed=5, device="cpu", rollout="twin", n_envs=4, n_steps=16, eval_every=10**6)
    a = make_agent("reinforce", ROOM, **kw).learn(256)
    b = make_agent("reinforce", ROOM, **kw).learn(128)
    b.save(tmp_path / "ckpt.pt")
    c = agents.Agent.load(tmp_path / "ckpt.pt", device="cpu")
    assert isinstance(c, ReinforceAgent) and c.num_env_steps == 128
    c.learn(256)
    b.learn(256)
    for other in (b, c):
        for p, q in zip(a.policy.parameters(), other.policy.parameters(), strict=True):
            assert torch.equal(p, q)
        for p, q in zip(a.value_net.parameters(), other.value_net.parameters(), strict=True):
            assert torch.equal(p, q)


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


@pytest.mark.parametrize("method", ["ppo", "dqn", "reinforce"])
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
@pytest.mark.parametrize("method", ["reinforce", "ppo", "a2c", "dqn"])
def test_bad_learning_rate_is_named(method):
    with pytest.raises(ValueError, match="learning_rate"):
        make_agent(method, ROOM, learning_rate=-1e-3)


def test_bad_choices_are_named():
    with pytest.raises(ValueError, match="unknown method 'ppo2'.*reinforce.*ppo.*a2c.*dqn"):
        make_agent("ppo2", ROOM)
    with pytest.raises(ValueError, match="Box action space"):
        make_agent("ppo", "Pendulum-v1")
    with pytest.raises(ValueError, match="rollout='twin'.*'Acrobot-v1' has none"):
        make_agent("reinforce", "Acrobot-v1", rollout="twin")
    with pytest.raises(ValueError, match="rollout must be one of auto, twin, gym"):
        make_agent("reinforce", ROOM, rollout="env")
    with pytest.raises(ValueError, match="lr_schedule"):
        make_agent("ppo", ROOM, lr_schedule="cosine")


def test_reinforce_defaults_to_gym_without_a_twin():
    agent = make_agent("reinforce", "Acrobot-v1", seed=0, device="cpu", n_envs=2, n_steps=4)
    assert agent.rollout == "gym"
    steps, _ = agent._train_iteration()
    assert steps == 8
