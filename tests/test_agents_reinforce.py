"""Tests of the REINFORCE baseline (agents.reinforce): its loss alone, its rollouts, learning, resume.

Budgets are small and seeds fixed: EmptyRoom-5x5 is solved when the greedy policy takes a shortest path (return
0.92 >= threshold 0.911) in 100 deterministic episodes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import agents
from agents import StopTrainingOnSolved, make_agent
from agents.reinforce import (
    ReinforceAgent,
    normalize_advantages,
    reinforce_loss,
    reinforce_with_baseline_loss,
    value_loss,
)
from agents.returns import lambda_returns

ROOM = "gumbel_rl/EmptyRoom-5x5-v0"


# ---- the loss, alone -------------------------------------------------------------------------------------------
def test_returns_of_a_rollout_by_hand():
    """gamma 0.5, one env, 5 steps: terminate at t=1 (no bootstrap), truncate at t=3 (bootstrap V=10), end at t=4
    (bootstrap V=4); t=2 is Gymnasium's autoreset step (masked out of the loss): the done step before it keeps
    anything from propagating across it. ``next_values[t]`` is ``values[t + 1]`` within an episode, as in a real
    rollout. REINFORCE's advantages are ``G - V`` with ``G`` from the shared ``lambda_returns``."""
    g = 0.5
    r = torch.tensor([[1.0], [2.0], [0.0], [3.0], [1.0]])
    v = torch.tensor([[0.5], [0.25], [9.0], [1.0], [2.0]])
    nv = torch.tensor([[0.25], [100.0], [0.0], [10.0], [4.0]])
    term = torch.tensor([[False], [True], [False], [False], [False]])
    trunc = torch.tensor([[False], [False], [False], [True], [False]])
    valid = torch.tensor([[True], [True], [False], [True], [True]])
    done = term | trunc
    returns = lambda_returns(r, nv, term, done, g, 1.0)
    expected = torch.tensor([[1 + g * 2], [2.0], [0.0], [3 + g * 10], [1 + g * 4]])
    torch.testing.assert_close(returns[valid], expected[valid])
    # lambda = 0: one-step TD targets, advantages = TD errors.
    adv0 = lambda_returns(r, nv, term, done, g, 0.0) - v
    td = torch.tensor([[1 + g * 0.25 - 0.5], [2 - 0.25], [0.0], [3 + g * 10 - 1.0], [1 + g * 4 - 2.0]])
    torch.testing.assert_close(adv0[valid], td[valid])


def test_reinforce_loss_is_the_score_function_gradient():
    """d/dlogits of -mean(A * log softmax(logits)[a]) is -A * (onehot(a) - softmax(logits)) / n_valid; a masked
    step contributes nothing (neither to the value nor to the gradient)."""
    logits = torch.tensor([[0.0, 1.0, -1.0], [2.0, 0.0, 0.0], [0.5, 0.5, 0.0]], requires_grad=True)
    actions = torch.tensor([1, 0, 2])
    adv = torch.tensor([2.0, -1.0, 100.0])
    mask = torch.tensor([1.0, 1.0, 0.0])
    log_prob = torch.log_softmax(logits, -1).gather(-1, actions[:, None]).squeeze(-1)
    loss = reinforce_loss(log_prob, adv, mask)
    assert loss.item() == pytest.approx(-(2.0 * log_prob[0].item() - 1.0 * log_prob[1].item()) / 2)
    loss.backward()
    p = torch.softmax(logits.detach(), -1)
    onehot = torch.nn.functional.one_hot(actions, 3).float()
    expected = -(adv * mask)[:, None] * (onehot - p) / 2
    torch.testing.assert_close(logits.grad, expected)
    assert (logits.grad[2] == 0).all()


def test_normalize_advantages_uses_the_masked_steps_only():
    adv = torch.tensor([1.0, 2.0, 3.0, 1e6])
    mask = torch.tensor([1.0, 1.0, 1.0, 0.0])
    out = normalize_advantages(adv, mask)
    std = np.std([1.0, 2.0, 3.0])  # biased, as the loss
    torch.testing.assert_close(out[:3], torch.tensor([-1.0, 0.0, 1.0]) / float(std), rtol=1e-6, atol=1e-6)


def test_reinforce_with_baseline_loss_adds_its_terms():
    gen = torch.Generator().manual_seed(0)
    n = 7
    log_prob, adv, values, returns, entropy = (torch.randn(n, generator=gen) for _ in range(5))
    mask = torch.tensor([1.0, 1, 0, 1, 1, 0, 1])
    loss, stats = reinforce_with_baseline_loss(
        log_prob, adv, values, returns, entropy, mask, vf_coef=0.5, ent_coef=0.01, normalize_advantage=False
    )
    pg = -(log_prob * adv * mask).sum() / 5
    vl = (((values - returns) ** 2) * mask).sum() / 5
    h = (entropy * mask).sum() / 5
    torch.testing.assert_close(stats["train/actor_loss"], pg)
    torch.testing.assert_close(stats["train/critic_loss"], vl)
    torch.testing.assert_close(value_loss(values, returns, mask), vl)
    torch.testing.assert_close(stats["train/entropy"], h)
    torch.testing.assert_close(loss, pg + 0.5 * vl - 0.01 * h)
    normed, _ = reinforce_with_baseline_loss(
        log_prob, adv, values, returns, entropy, mask, vf_coef=0.5, ent_coef=0.01, normalize_advantage=True
    )
    pg_n = reinforce_loss(log_prob, normalize_advantages(adv, mask), mask)
    torch.testing.assert_close(normed, pg_n + 0.5 * vl - 0.01 * h)


# ---- the agent -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rollout", ["twin", "gym"])
def test_reinforce_solves_empty_room(rollout):
    with make_agent("reinforce", ROOM, seed=2, device="cpu", rollout=rollout, eval_every=500) as agent:
        assert agent.rollout == rollout
        agent.learn(20_000, callback=StopTrainingOnSolved())
        assert agent.solved, agent.record[-1]
        assert agent.solve_env_steps <= 20_000
        assert agent.evaluate(episodes=20).mean >= 0.911


def test_reinforce_never_backpropagates_through_the_twin():
    agent = make_agent("reinforce", ROOM, seed=0, device="cpu", rollout="twin", n_envs=4, n_steps=8)
    seen = []
    step = agent.twin.step

    def spy(state, action, generator=None):
        assert generator is agent.generator  # the protocol's keyword, no probing
        out = step(state, action, generator=generator)
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
    assert np.isfinite(metrics["train/actor_loss"])


def test_reinforce_gym_rollout_masks_autoreset_steps():
    agent = make_agent("reinforce", ROOM, seed=3, device="cpu", rollout="gym", n_envs=4, n_steps=80)
    batch = agent._rollout_gym()
    done = (batch.terminated | batch.truncated).numpy()
    valid = batch.valid.numpy()
    assert done.any()
    # Gymnasium NEXT_STEP autoreset: the step right after a done is a reset, not a transition.
    np.testing.assert_array_equal(valid[1:], ~done[:-1])
    assert valid[0].all()
    assert batch.env_steps == int(valid.sum()) < 4 * 80
    assert (batch.rewards.numpy()[~valid] == 0).all()
    # Every done is one finished episode; in this room an episode returns 1 - 0.01 * length > 0 (goal) or -0.32
    # (time limit of 32 steps), never what the running sum of two episodes would give.
    assert agent.episodes.episodes == int(done.sum())
    returns = np.array(agent.episodes.recent)
    assert np.all((returns > 0.5) | np.isclose(returns, -0.32))
    agent.close()
    agent.close()  # idempotent


def test_reinforce_metrics_are_prefixed():
    agent = make_agent("reinforce", ROOM, seed=1, device="cpu", rollout="twin", n_envs=8, n_steps=32)
    agent.learn(512)
    row = agent.record[-1]
    for key in ("train/actor_loss", "train/critic_loss", "train/entropy", "train/grad_norm", "rollout/episodes"):
        assert np.isfinite(row[key]), key
    assert row["time/total_timesteps"] == 512 and row["time/iterations"] == 2
    assert row["rollout/episodes"] == agent.episodes.episodes > 0
    assert row["rollout/ep_rew_mean"] == pytest.approx(np.mean(agent.episodes.recent))
    assert 0 < row["train/entropy"] <= np.log(4) + 1e-6


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
        assert [{k: v for k, v in r.items() if k != "time/train_seconds"} for r in other.record] == [
            {k: v for k, v in r.items() if k != "time/train_seconds"} for r in a.record
        ]


def test_reinforce_defaults_to_gym_without_a_twin():
    with make_agent("reinforce", "Acrobot-v1", seed=0, device="cpu", n_envs=2, n_steps=4) as agent:
        assert agent.rollout == "gym"
        steps, _ = agent._train_iteration()
        assert steps == 8


def test_reinforce_callback_returning_false_stops_training():
    calls = []
    agent = make_agent("reinforce", ROOM, seed=0, device="cpu", eval_every=10**6)
    agent.learn(200_000, callback=lambda ag, row: calls.append(row["time/total_timesteps"]) or len(calls) < 3)
    assert len(calls) == 3 and len(agent.record) == 3
    assert agent.num_env_steps < 5_000
    assert agent.record[-1]["time/total_timesteps"] == calls[-1] <= agent.num_env_steps


# ---- refusals ----------------------------------------------------------------------------------------------------
def test_reinforce_refusals_are_named():
    with pytest.raises(ValueError, match="learning_rate"):
        make_agent("reinforce", ROOM, learning_rate=-1e-3)
    with pytest.raises(ValueError, match="rollout='twin'.*'Acrobot-v1' has none"):
        make_agent("reinforce", "Acrobot-v1", rollout="twin")
    with pytest.raises(ValueError, match="rollout must be one of auto, twin, gym"):
        make_agent("reinforce", ROOM, rollout="env")
    with pytest.raises(ValueError, match="normalize_advantage must be true or false"):
        make_agent("reinforce", ROOM, normalize_advantage=1)
