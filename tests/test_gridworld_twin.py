"""Tests of the differentiable GridWorld twin: lock-step with the Gymnasium env, gradients, soft actions."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from scipy import stats

import envs  # noqa: F401  (registers the suite and the twins)
from envs.differentiable import DifferentiableEnv, PreDrawnNoiseEnv, make_differentiable
from envs.gridworld_twin import GridState, GridWorldTwin
from envs.maps import GRIDWORLD_IDS

EPISODES = 30
# Hand-checkable 3x3 map: start in the centre (cell 4), goal bottom-right (cell 8), trap top-right (cell 2).
MAP_3X3 = ["..T", ".S.", "..G"]


def _record(env_id: str, seed: int) -> dict:
    """One random-action episode of the Gymnasium env: reset uniforms, actions, step uniforms and outcomes."""
    env = gym.make(env_id)
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    ep = {
        "reset_u": info["start_uniforms"],
        "obs0": obs,
        "a": [],
        "u": [],
        "obs": [],
        "r": [],
        "term": [],
        "trunc": [],
    }
    done = False
    while not done:
        a = int(rng.integers(4))
        obs, r, term, trunc, info = env.step(a)
        for key, val in zip(
            ("a", "u", "obs", "r", "term", "trunc"), (a, info["uniforms"], obs, r, term, trunc), strict=True
        ):
            ep[key].append(val)
        done = term or trunc
    return ep


@pytest.mark.parametrize("env_id", GRIDWORLD_IDS)
def test_lock_step_with_gymnasium_env(env_id: str) -> None:
    """30 seeded random-action episodes replayed in one batch: identical cells, rewards, and end step."""
    eps = [_record(env_id, 1000 + i) for i in range(EPISODES)]
    twin = make_differentiable(env_id)
    eye = torch.eye(twin.obs_dim)
    state = twin.reset(EPISODES, uniforms=torch.as_tensor(np.stack([e["reset_u"] for e in eps])))
    assert torch.equal(twin.observe(state), eye[[e["obs0"] for e in eps]])
    lengths = [len(e["a"]) for e in eps]
    for t in range(max(lengths)):
        live = [i for i in range(EPISODES) if t < lengths[i]]
        acts = torch.zeros(EPISODES, 4)
        unif = torch.full((EPISODES, 3), 0.5, dtype=torch.float64)
        for i in live:
            acts[i, eps[i]["a"][t]] = 1.0
            unif[i] = torch.as_tensor(eps[i]["u"][t])
        state, reward, term, trunc = twin.step(state, acts, uniforms=unif)
        for i in live:
            assert torch.equal(state.dist[i], eye[eps[i]["obs"][t]]), (i, t)
            assert reward[i].item() == pytest.approx(eps[i]["r"][t], abs=1e-6), (i, t)
            assert bool(term[i]) == eps[i]["term"][t], (i, t)
            # TimeLimit also sets truncated on a terminating last step; the twin reports only terminated.
            assert bool(trunc[i]) == (eps[i]["trunc"][t] and not eps[i]["term"][t]), (i, t)
            assert bool(state.done[i]) == (t == lengths[i] - 1)
    # The replay must have exercised both ways an episode ends (over the suite some ids only truncate).
    ends = {"term": sum(e["term"][-1] for e in eps), "trunc": sum(not e["term"][-1] for e in eps)}
    if env_id.split("/")[1].startswith(("EmptyRoom", "Cliff", "Slippery")):
        assert ends["term"] > 0, ends
    if env_id.split("/")[1].startswith(("Maze", "FourRooms")):
        assert ends["trunc"] > 0, ends


def test_twin_attributes_and_registry() -> None:
    for env_id in GRIDWORLD_IDS:
        twin = make_differentiable(env_id)
        spec = gym.spec(env_id)
        assert isinstance(twin, DifferentiableEnv) and isinstance(twin, GridWorldTwin)
        assert twin.env_id == env_id and twin.n_actions == 4
        assert twin.max_episode_steps == spec.max_episode_steps
        assert twin.obs_dim == gym.make(env_id).observation_space.n
    twin = make_differentiable(GRIDWORLD_IDS[0], dtype=torch.float64)
    assert twin.reset(2).dist.dtype == torch.float64


def test_gradcheck_step_wrt_soft_dist_and_action() -> None:
    twin = GridWorldTwin(MAP_3X3, slip=0.2, step_cost=-0.1, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    dist = torch.rand(5, 9, generator=g, dtype=torch.float64)
    dist = (dist / dist.sum(1, keepdim=True)).requires_grad_()
    action = torch.softmax(torch.randn(5, 4, generator=g, dtype=torch.float64), 1).requires_grad_()
    unif = torch.rand(5, 3, generator=g, dtype=torch.float64)
    t = torch.zeros(5, dtype=torch.long)

    def f(d: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        nxt, reward, _, _ = twin.step(GridState(d, t, t.bool()), a, uniforms=unif)
        return nxt.dist, reward

    assert torch.autograd.gradcheck(f, (dist, action), eps=1e-6, atol=1e-8)


def test_soft_action_splits_mass_and_rewards_hand_checked() -> None:
    twin = GridWorldTwin(MAP_3X3, step_cost=-0.1, dtype=torch.float64)
    state = twin.reset(1)
    assert state.dist[0, 4] == 1.0
    act = torch.tensor([[0.5, 0.5, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)  # 50/50 up / right
    s1, r1, term, _ = twin.step(state, act)
    np.testing.assert_allclose(s1.dist[0].detach(), [0, 0.5, 0, 0, 0, 0.5, 0, 0, 0], atol=1e-15)
    assert r1.item() == pytest.approx(-0.1, abs=1e-12) and not term.item()
    # d reward / d action_a = reward of the cell action a enters: up -> 1, right -> 5, down -> 7, left -> 3.
    (grad,) = torch.autograd.grad(r1.sum(), act)
    np.testing.assert_allclose(grad[0], [-0.1] * 4, atol=1e-12)
    # Down: mass at 5 enters the goal (+1), mass at 1 returns to 4; every moved unit pays the step cost.
    down = torch.tensor([[0.0, 0.0, 1.0, 0.0]], dtype=torch.float64)
    s2, r2, term, _ = twin.step(s1, down)
    np.testing.assert_allclose(s2.dist[0].detach(), [0, 0, 0, 0, 0.5, 0, 0, 0, 0.5], atol=1e-15)
    assert r2.item() == pytest.approx(0.5 * 1.0 - 0.1, abs=1e-12) and not term.item()
    # The goal absorbs: the next step costs only the live half and earns no further goal reward.
    s3, r3, term, _ = twin.step(s2, down)
    np.testing.assert_allclose(s3.dist[0].detach(), [0, 0, 0, 0, 0, 0, 0, 0.5, 0.5], atol=1e-15)
    assert r3.item() == pytest.approx(-0.05, abs=1e-12) and not term.item()
    # Right: the mass at 1 enters the trap at 2 (-1), the mass at 5 bumps into the edge and stays.
    s4, r4, term, _ = twin.step(s1, torch.tensor([[0.0, 1.0, 0.0, 0.0]], dtype=torch.float64))
    np.testing.assert_allclose(s4.dist[0].detach(), [0, 0, 0.5, 0, 0, 0.5, 0, 0, 0], atol=1e-15)
    assert r4.item() == pytest.approx(-0.1 - 0.5, abs=1e-12) and not term.item()


def test_step_matches_dense_transition_matrices() -> None:
    """next = sum_a action_a * (live @ T[dir(a, o)]) + absorbed mass, for each slip outcome o."""
    twin = GridWorldTwin(["S.#.", ".T..", "...G"], slip=0.4, step_cost=-0.01, dtype=torch.float64)
    T = twin.transition_matrices()
    assert T.shape == (4, 12, 12) and torch.equal(T.sum(2), torch.ones(4, 12, dtype=torch.float64))
    g = torch.Generator().manual_seed(1)
    dist = torch.rand(64, 12, generator=g, dtype=torch.float64)
    dist /= dist.sum(1, keepdim=True)
    action = torch.softmax(torch.randn(64, 4, generator=g, dtype=torch.float64), 1)
    unif = torch.rand(64, 3, generator=g, dtype=torch.float64)
    nxt, reward, _, _ = twin.step(
        GridState(dist, torch.zeros(64, dtype=torch.long), torch.zeros(64, dtype=bool)), action, uniforms=unif
    )
    outcome = torch.argmax(twin._slip_log_p - torch.log(-torch.log(unif)), 1)
    live = dist * twin.active_mask
    for b in range(64):
        off = (0, -1, 1)[int(outcome[b])]
        moved = sum(action[b, a] * (live[b] @ T[(a + off) % 4]) for a in range(4))
        torch.testing.assert_close(nxt.dist[b], moved + dist[b] - live[b])
        torch.testing.assert_close(reward[b], moved @ twin.enter_reward)
    assert {0, 1, 2} <= set(outcome.tolist())


def test_twin_slip_frequencies_from_generator() -> None:
    """Generator-driven slips: 'up' from the centre of an open 5x5 map, slip 0.3; chi-square at p < 0.001."""
    twin = GridWorldTwin(["S....", ".....", ".....", ".....", "....G"], slip=0.3)
    dist = torch.zeros(4000, 25)
    dist[:, 12] = 1.0
    state = GridState(dist, torch.zeros(4000, dtype=torch.long), torch.zeros(4000, dtype=torch.bool))
    up = torch.zeros(4000, 4)
    up[:, 0] = 1.0
    nxt, *_ = twin.step(state, up, generator=torch.Generator().manual_seed(3))
    counts = nxt.dist[:, [7, 11, 13]].sum(0).numpy()  # up, left, right of the centre
    assert counts.sum() == 4000
    assert stats.chisquare(counts, 4000 * np.array([0.7, 0.15, 0.15])).pvalue > 1e-3


def test_reset_start_distribution_and_reset_done() -> None:
    twin = make_differentiable("gumbel_rl/FourRooms-11x11-v0")
    g = torch.Generator().manual_seed(0)
    state = twin.reset(2000, generator=g)
    cells = state.dist.argmax(1)
    assert set(cells.tolist()) == {0, 110} and torch.equal(state.dist.sum(1), torch.ones(2000))
    assert stats.binomtest(int((cells == 0).sum()), 2000, 0.5).pvalue > 1e-3
    # Walk 3 steps right, then reset only the even rows.
    right = torch.zeros(2000, 4)
    right[:, 1] = 1.0
    for _ in range(3):
        state, *_ = twin.step(state, right, generator=g)
    mask = torch.arange(2000) % 2 == 0
    fresh = twin.reset_done(state, mask, generator=g)
    assert torch.equal(fresh.t, torch.where(mask, 0, 3))
    assert torch.equal(fresh.dist[~mask], state.dist[~mask])
    assert set(fresh.dist[mask].argmax(1).tolist()) == {0, 110}


def test_truncation_at_max_episode_steps() -> None:
    twin = make_differentiable("gumbel_rl/EmptyRoom-5x5-v0")  # max_episode_steps = 32
    state = twin.reset(3)
    up = torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(3, 1)  # against the top wall: never terminates
    for t in range(1, 33):
        state, reward, term, trunc = twin.step(state, up, generator=torch.Generator().manual_seed(t))
        assert not term.any() and bool(trunc.all()) == (t == 32)
        torch.testing.assert_close(reward, torch.full((3,), -0.01))
    assert state.done.all() and twin.reset_done(state, state.done).t.eq(0).all()


def test_bad_action_and_uniforms_raise_clear_errors() -> None:
    twin = make_differentiable("gumbel_rl/EmptyRoom-5x5-v0")
    state = twin.reset(2)
    msg = r"action must be a floating tensor of shape \(batch, 4\) = \(2, 4\)"
    with pytest.raises(ValueError, match=msg + r".*got torch.int64 tensor of shape \(2, 4\)"):
        twin.step(state, torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=msg + r".*got torch.float32 tensor of shape \(2,\)"):
        twin.step(state, torch.zeros(2))
    with pytest.raises(ValueError, match=msg + r".*got torch.float32 tensor of shape \(3, 4\)"):
        twin.step(state, torch.zeros(3, 4))
    with pytest.raises(ValueError, match=msg + ".*got ndarray"):
        twin.step(state, np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"step uniforms must have shape \(batch, 3\) = \(2, 3\); got \(2, 4\)"):
        twin.step(state, torch.eye(4)[:2], uniforms=torch.rand(2, 4))
    with pytest.raises(ValueError, match=r"reset uniforms must have shape \(batch, n_cells\) = \(2, 25\)"):
        twin.reset(2, uniforms=torch.rand(2, 24))
    with pytest.raises(ValueError, match="no differentiable twin for env id 'gumbel_rl/Nope-v0'"):
        make_differentiable("gumbel_rl/Nope-v0")


@pytest.mark.parametrize("env_id", ["gumbel_rl/Slippery-8x8-v0", "gumbel_rl/FourRooms-11x11-v0"])
def test_pre_drawn_noise_gives_the_step_with_internal_draws(env_id: str) -> None:
    """``step(noise=step_noise(B, g))`` and ``reset_done(noise=reset_noise(done, g))`` against the same calls drawing
    from ``g``, over a 12-step rollout of soft actions with resets: the same states, rewards and flags, exactly
    (tolerance 0), and the generators in the same state after every call."""
    twin = make_differentiable(env_id)
    assert isinstance(twin, PreDrawnNoiseEnv)
    inside, outside = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    actions = torch.softmax(torch.randn(12, 16, 4, generator=torch.Generator().manual_seed(1)), -1)
    a = b = twin.reset(16, generator=torch.Generator().manual_seed(2))
    for t in range(12):
        a, *out_a = twin.step(a, actions[t], generator=inside)
        b, *out_b = twin.step(b, actions[t], noise=twin.step_noise(16, outside))
        assert all(torch.equal(x, y) for x, y in zip((*a, *out_a), (*b, *out_b), strict=True))
        done = (torch.arange(16) + t) % 3 == 0  # some rows each step
        a = twin.reset_done(a, done, generator=inside)
        b = twin.reset_done(b, done, noise=twin.reset_noise(done, outside))
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
        assert torch.equal(inside.get_state(), outside.get_state())
    noise = twin.step_noise(16, outside)
    assert noise.shape == (16, 3) and noise.dtype == torch.float64
    assert twin.reset_noise(torch.zeros(16, dtype=torch.bool), outside).shape == (16, twin.n_cells)


def test_pre_drawn_noise_of_blocks_concatenates() -> None:
    """Two blocks' noise, each from its own generator, concatenated: one step of both blocks is each block's step
    with its generator (exactly), as ``agents.many_seeds`` uses it."""
    twin = make_differentiable("gumbel_rl/Slippery-8x8-v0")
    state = twin.reset(16, generator=torch.Generator().manual_seed(0))
    action = torch.softmax(torch.randn(16, 4, generator=torch.Generator().manual_seed(1)), -1)
    gens = [torch.Generator().manual_seed(s) for s in (7, 8)]
    joint = twin.step(state, action, noise=torch.cat([twin.step_noise(8, g) for g in gens]))
    blocks = [
        twin.step(GridState(*(f[8 * i : 8 * (i + 1)] for f in state)), action[8 * i : 8 * (i + 1)], generator=g)
        for i, g in enumerate(torch.Generator().manual_seed(s) for s in (7, 8))
    ]
    for i, block in enumerate(blocks):
        for x, y in zip((*joint[0], *joint[1:]), (*block[0], *block[1:]), strict=True):
            assert torch.equal(x[8 * i : 8 * (i + 1)], y)


def test_bad_noise_raises_clear_errors() -> None:
    twin = make_differentiable("gumbel_rl/EmptyRoom-5x5-v0")
    state = twin.reset(2)
    with pytest.raises(ValueError, match="give the step's slip uniforms once: uniforms= or noise=, not both"):
        twin.step(state, torch.eye(4)[:2], uniforms=torch.rand(2, 3), noise=torch.rand(2, 3))
    with pytest.raises(ValueError, match=r"step uniforms must have shape \(batch, 3\) = \(2, 3\); got \(4, 3\)"):
        twin.step(state, torch.eye(4)[:2], noise=torch.rand(4, 3))
    with pytest.raises(ValueError, match=r"reset uniforms must have shape \(batch, n_cells\) = \(2, 25\)"):
        twin.reset_done(state, state.done, noise=torch.rand(2, 3))
