"""Tests for agents/replay.py: the ring, n-step returns cut at episode ends and at the write head, checkpoints."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.replay import ReplayBuffer, ReplaySample

BOX = gym.spaces.Box(-100, 100, (1,))


def _fill(buf: ReplayBuffer, steps: int, done_at: tuple[int, ...] = ()) -> None:
    """One transition per step: obs t -> t + 1, reward t, terminated where ``t in done_at``."""
    for t in range(steps):
        end = np.array([t in done_at])
        buf.add(np.array([[t]]), np.array([t % 2]), np.array([float(t)]), np.array([[t + 1]]), end, end)


def test_ring_wraps_around_oldest_first() -> None:
    buf = ReplayBuffer(4, BOX, torch.device("cpu"))
    _fill(buf, 3)
    assert (buf.size, buf.pos) == (3, 3)
    _fill(buf, 6)  # t = 0..5 again: 9 writes in all
    assert (buf.size, buf.pos) == (4, 1)
    # Writes 0..8 (t = 0, 1, 2, then 0..5) went to slots 0, 1, 2, 3, 0, 1, 2, 3, 0: each slot keeps its last one.
    assert buf.obs[:, 0].tolist() == [5.0, 2.0, 3.0, 4.0]
    assert buf.reward.tolist() == [5.0, 2.0, 3.0, 4.0]
    assert torch.equal(buf.next_obs, buf.obs + 1) and buf.action.tolist() == [1, 0, 1, 0]


def test_discrete_observations_stored_as_indices_from_zero() -> None:
    buf = ReplayBuffer(3, gym.spaces.Discrete(5, start=2), torch.device("cpu"))
    buf.add(np.array([2, 6]), np.array([0, 1]), np.zeros(2), np.array([3, 4]), np.zeros(2))
    assert buf.obs.dtype == torch.long and buf.obs[:2].tolist() == [0, 4] and buf.next_obs[:2].tolist() == [1, 2]
    assert not buf.done[:2].any()  # done defaults to terminated


def test_one_step_sample_is_the_stored_transition_and_discount_gamma() -> None:
    buf = ReplayBuffer(8, BOX, torch.device("cpu"))
    _fill(buf, 5, done_at=(2,))
    sample = buf.sample(40, torch.Generator().manual_seed(0), n_step=1, gamma=0.9)
    assert isinstance(sample, ReplaySample)
    obs = sample.obs[:, 0]
    assert torch.equal(sample.next_obs[:, 0], obs + 1) and torch.equal(sample.reward, obs)
    assert torch.equal(sample.terminated, (obs == 2).float()) and torch.equal(sample.action, obs.long() % 2)
    # discount is always a tensor, one per draw: gamma itself (float32) for one-step returns.
    assert sample.discount.shape == (40,) and torch.equal(sample.discount, torch.full((40,), 0.9))
    assert set(obs.tolist()) == {0.0, 1.0, 2.0, 3.0, 4.0}


def test_n_step_returns_follow_each_episode() -> None:
    """Two copies (stride 2), capacity 6, after 4 steps (the first overwritten): copy 0 terminates at t=1, copy 1
    is truncated at t=2. Each 3-step sample sums its episode's discounted rewards up to the episode's end or the
    newest transition (the write head), and bootstraps from the last one followed (gamma = 0.5)."""
    buf = ReplayBuffer(6, BOX, torch.device("cpu"), stride=2)
    for t in range(4):
        buf.add(
            obs=np.array([[t], [10 + t]]),
            action=np.array([0, 1]),
            reward=np.array([1.0, 2.0]),
            next_obs=np.array([[t + 1], [11 + t]]),
            terminated=np.array([t == 1, False]),
            done=np.array([t == 1, t == 2]),
        )
    # obs -> (n-step reward, next obs, terminated, discount)
    expected = {
        1: (1.0, 2, 1.0, 0.5),  # terminated here: nothing follows
        2: (1.0 + 0.5, 4, 0.0, 0.25),  # t=3 is the newest transition of copy 0
        3: (1.0, 4, 0.0, 0.5),
        11: (2.0 + 0.5 * 2.0, 13, 0.0, 0.25),  # truncated at t=2: stops there, bootstraps from 13
        12: (2.0, 13, 0.0, 0.5),
        13: (2.0, 14, 0.0, 0.5),
    }
    gen = torch.Generator().manual_seed(0)
    obs, _, reward, next_obs, terminated, discount = buf.sample(300, gen, n_step=3, gamma=0.5)
    seen = set()
    for o, *got in torch.stack([obs[:, 0], reward, next_obs[:, 0], terminated, discount], 1).tolist():
        seen.add(int(o))
        assert got == pytest.approx(expected[int(o)]), o
    assert seen == set(expected)  # 0 and 10 were overwritten
    # n_step = 1: the stored transitions, discount gamma for every draw.
    obs, _, reward, next_obs, _, discount = buf.sample(50, gen, gamma=0.5)
    assert torch.equal(discount, torch.full((50,), 0.5))
    assert torch.equal(next_obs, obs + 1) and torch.equal(reward, 1.0 + (obs[:, 0] >= 10))


def test_n_step_return_of_a_long_episode_counts_every_power_of_gamma() -> None:
    """One copy, rewards t = 0..9, no episode end: the 4-step return from t is sum_k 0.9^k (t + k), discount
    0.9^4, except within 3 steps of the write head (t = 7, 8, 9 follow 3, 2, 1 transitions)."""
    buf = ReplayBuffer(16, BOX, torch.device("cpu"))
    _fill(buf, 10)
    sample = buf.sample(200, torch.Generator().manual_seed(1), n_step=4, gamma=0.9)
    rows = torch.stack([sample.obs[:, 0], sample.reward, sample.next_obs[:, 0], sample.discount], 1).tolist()
    for t, r, nxt, disc in rows:
        m = min(4, 10 - int(t))
        assert r == pytest.approx(sum(0.9**k * (t + k) for k in range(m)), rel=1e-6)
        assert nxt == t + m and disc == pytest.approx(0.9**m, rel=1e-6)


def test_add_returns_the_slots_written() -> None:
    buf = ReplayBuffer(4, BOX, torch.device("cpu"), stride=2)
    slots = [buf.add(np.zeros((2, 1)), np.zeros(2), np.zeros(2), np.zeros((2, 1)), np.zeros(2)).tolist() for _ in "abc"]
    assert slots == [[0, 1], [2, 3], [0, 1]]


def test_reward_fn_replaces_the_stored_reward_in_the_n_step_sum() -> None:
    """reward_fn = 2 r + 1 per transition: the m-step sum becomes 2 R + sum_{k<m} gamma^k = 2 R + (1 - discount) /
    (1 - gamma), on the same draws (same generator state); everything else is unchanged."""
    buf = ReplayBuffer(16, BOX, torch.device("cpu"))
    _fill(buf, 12, done_at=(4, 9))
    plain = buf.sample(100, torch.Generator().manual_seed(2), n_step=3, gamma=0.9)
    mapped = buf.sample(
        100, torch.Generator().manual_seed(2), n_step=3, gamma=0.9, reward_fn=lambda j: 2 * buf.reward[j] + 1
    )
    assert torch.allclose(mapped.reward, 2 * plain.reward + (1 - plain.discount) / (1 - 0.9), atol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(plain[:2] + plain[3:], mapped[:2] + mapped[3:], strict=True))
    assert len(set(plain.discount.tolist())) == 3  # draws that followed 1, 2 and 3 transitions


def test_state_dict_round_trip() -> None:
    buf = ReplayBuffer(5, BOX, torch.device("cpu"), stride=1)
    _fill(buf, 7, done_at=(3, 5))
    state = buf.state_dict()
    assert state["obs"].shape == (5, 1) and (state["pos"], state["size"]) == (2, 5)
    other = ReplayBuffer(5, BOX, torch.device("cpu"), stride=1)
    other.load_state_dict(state)
    for key in ("obs", "next_obs", "action", "reward", "terminated", "done"):
        assert torch.equal(getattr(other, key), getattr(buf, key)), key
    assert (other.pos, other.size) == (buf.pos, buf.size)
    a = buf.sample(32, torch.Generator().manual_seed(3), n_step=3, gamma=0.9)
    b = other.sample(32, torch.Generator().manual_seed(3), n_step=3, gamma=0.9)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    # A partly filled buffer saves only its filled part.
    small = ReplayBuffer(10, BOX, torch.device("cpu"))
    _fill(small, 3)
    assert small.state_dict()["reward"].tolist() == [0.0, 1.0, 2.0]
