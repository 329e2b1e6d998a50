"""Tests of the differentiable CartPole twin (envs/cartpole_twin.py) against gymnasium's CartPole-v1.

Tolerances, and why:
- float64 twin vs Gymnasium (which keeps a float64 state and hands out float32 observations): observations must
  agree to float32 precision, |twin - gym| <= 2**-23 * |gym| + 1e-12 (one float32 ulp; the 1e-12 covers values
  that cancel to near 0, where a last-ulp float64 difference of the O(1) operands is not small relative to the
  result). On this machine they are in fact bit-identical.
- float32 twin (the default, fed Gymnasium's float32 reset observation): |twin - gym| <= 3e-5 + 3e-5 * |gym|.
  It starts from the observation's float32 rounding (~6e-8 relative) and rounds each of its ~25 operations per step
  in float32; the upright pole is unstable (e-folding time ~0.25 s = 12 steps), so errors grow along an episode.
  Measured worst case over these 200 episodes (up to 79 steps): 6e-6, so the bound has a ~5x margin.
- Long (500-step) episodes are checked with the twin re-synchronised to Gymnasium's float64 state before every
  step (the step counter is the twin's own). Free-running for 500 steps is not a sound test: torch's vectorised
  sin/cos differ from the C library's in the last ulp for ~0.3% of arguments, and the unstable dynamics amplify
  that ~1e-16 by up to e^40 over 10 s (measured: 1 of 200 balancing episodes drifted by 0.39 after such a
  difference at step 13). Short random-action episodes are checked free-running.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from scipy import stats

from envs import DifferentiableEnv, make_differentiable
from envs.cartpole_twin import CartPoleState, CartPoleTwin

F64_RTOL, F64_ATOL = 2.0**-23, 1e-12
F32_RTOL, F32_ATOL = 3e-5, 3e-5


def _one_hot(actions: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.as_tensor(actions), 2).to(dtype)


def _lockstep(dtype: torch.dtype, seeds: list[int], policy: str, resync: bool) -> np.ndarray:
    """Step one batched twin and len(seeds) Gymnasium envs with the same actions; assert agreement at every step.

    policy "random": uniform actions from a seeded numpy RNG; "balance": ``int(theta + 0.5 * theta_dot > 0)`` on
    Gymnasium's observation. resync: set the twin's state to Gymnasium's float64 state before every step.
    Returns the episode lengths.
    """
    rtol, atol = (F64_RTOL, F64_ATOL) if dtype == torch.float64 else (F32_RTOL, F32_ATOL)
    n = len(seeds)
    twin = CartPoleTwin(dtype=dtype)
    envs = [gym.make("CartPole-v1") for _ in seeds]
    obs = np.stack([env.reset(seed=seed)[0] for env, seed in zip(envs, seeds, strict=True)])
    # float64 twin: Gymnasium's own float64 state; float32 twin: the float32 reset observation.
    init = np.stack([env.unwrapped.state for env in envs]) if dtype == torch.float64 else obs
    state = CartPoleState(torch.tensor(init, dtype=dtype), torch.zeros(n, dtype=torch.long))
    np.testing.assert_array_equal(twin.observe(state).float().numpy(), obs)
    rng = np.random.default_rng(2024)
    alive = np.ones(n, dtype=bool)
    lengths = np.zeros(n, dtype=int)
    for k in range(1, 501):
        if policy == "random":
            actions = rng.integers(0, 2, size=n)
        else:
            actions = (obs[:, 2] + 0.5 * obs[:, 3] > 0).astype(np.int64)
        if resync:
            state = CartPoleState(torch.tensor(np.stack([env.unwrapped.state for env in envs])), state.t)
        state, reward, terminated, truncated = twin.step(state, _one_hot(actions, dtype))
        twin_obs = twin.observe(state).float().numpy()
        idx = np.flatnonzero(alive)
        g_term = np.zeros(n, dtype=bool)
        g_trunc = np.zeros(n, dtype=bool)
        for i in idx:
            obs[i], g_reward, g_term[i], g_trunc[i], _ = envs[i].step(int(actions[i]))
            assert g_reward == 1.0
        np.testing.assert_allclose(twin_obs[idx], obs[idx], rtol=rtol, atol=atol, err_msg=f"step {k}")
        np.testing.assert_array_equal(terminated.numpy()[idx], g_term[idx], err_msg=f"terminated, step {k}")
        np.testing.assert_array_equal(truncated.numpy()[idx], g_trunc[idx], err_msg=f"truncated, step {k}")
        assert torch.equal(reward, torch.ones(n, dtype=dtype))
        lengths[idx] = k
        alive &= ~(g_term | g_trunc)
        if not alive.any():
            break
    for env in envs:
        env.close()
    return lengths


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_lockstep_random_actions_200_episodes(dtype: torch.dtype) -> None:
    lengths = _lockstep(dtype, list(range(200)), "random", resync=False)
    # Random play terminates (pole or cart out of bounds) long before the time limit.
    assert lengths.max() < 500
    assert 15 < lengths.mean() < 35


def test_lockstep_balancing_controller_reaches_truncation() -> None:
    lengths = _lockstep(torch.float64, list(range(1000, 1016)), "balance", resync=True)
    # The controller keeps every pole up: all episodes end by truncation at exactly step 500 (checked in lock-step).
    np.testing.assert_array_equal(lengths, 500)


def test_free_running_twin_truncates_at_500_with_controller() -> None:
    twin = CartPoleTwin()
    state = twin.reset(64, torch.Generator().manual_seed(3))
    for k in range(1, 501):
        obs = twin.observe(state)
        action = _one_hot((obs[:, 2] + 0.5 * obs[:, 3] > 0).long(), torch.float32)
        state, _, terminated, truncated = twin.step(state, action)
        assert not terminated.any(), f"step {k}"
        assert bool(truncated.all()) == (k == 500), f"step {k}"
    assert torch.equal(state.t, torch.full((64,), 500))


def test_termination_boundaries_match_gymnasium() -> None:
    # Gymnasium terminates on x < -2.4 or x > 2.4 or |theta| > 12 deg, strictly, on the new float64 state.
    twin = CartPoleTwin(dtype=torch.float64)
    th = twin.theta_threshold_radians
    starts = np.array(
        [
            [2.4, 0.0, 0.0, 0.0],  # lands exactly on the x limit: not terminated
            [-2.4, 0.0, 0.0, 0.0],
            [2.4, 1e-6, 0.0, 0.0],  # 2e-8 m beyond: terminated
            [-2.4, -1e-6, 0.0, 0.0],
            [0.0, 0.0, th, 0.0],  # exactly on the angle limit: not terminated
            [0.0, 0.0, -th, 0.0],
            [0.0, 0.0, th, 1e-6],  # 2e-8 rad beyond: terminated
            [0.0, 0.0, -th, -1e-6],
            [0.0, 0.0, th - 1e-6, 0.0],  # 1e-6 rad inside: not terminated
        ]
    )
    env = gym.make("CartPole-v1")
    env.reset(seed=0)
    expected = []
    for start in starts:
        env.unwrapped.state = start.copy()
        env.unwrapped.steps_beyond_terminated = None
        expected.append(env.step(1)[2])
    assert expected == [False, False, True, True, False, False, True, True, False]
    state = CartPoleState(torch.tensor(starts), torch.zeros(len(starts), dtype=torch.long))
    terminated = twin.step(state, _one_hot(np.ones(len(starts), dtype=np.int64), torch.float64))[2]
    assert terminated.tolist() == expected


def test_constants_match_installed_gymnasium() -> None:
    env = gym.make("CartPole-v1")
    genv = env.unwrapped
    for name in (
        "gravity",
        "masscart",
        "masspole",
        "total_mass",
        "length",
        "polemass_length",
        "force_mag",
        "tau",
        "theta_threshold_radians",
        "x_threshold",
    ):
        assert getattr(CartPoleTwin, name) == getattr(genv, name), name
    assert genv.kinematics_integrator == "euler"
    assert CartPoleTwin.polemass_length == 0.05  # masspole * half length, not masspole * full length
    assert env.spec.max_episode_steps == CartPoleTwin.max_episode_steps == 500


def test_registry_and_protocol() -> None:
    twin = make_differentiable("CartPole-v1", dtype=torch.float64)
    assert isinstance(twin, CartPoleTwin) and isinstance(twin, DifferentiableEnv)
    assert (twin.env_id, twin.obs_dim, twin.n_actions, twin.max_episode_steps) == ("CartPole-v1", 4, 2, 500)
    assert twin.dtype == torch.float64
    state = twin.reset(3)
    assert state.x.shape == (3, 4) and state.x.dtype == torch.float64
    assert state.t.dtype == torch.long and torch.equal(state.t, torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_reset_distribution_uniform(dtype: torch.dtype) -> None:
    x = CartPoleTwin(dtype=dtype).reset(50_000, torch.Generator().manual_seed(0)).x
    low, high = torch.tensor(-0.05, dtype=dtype), torch.tensor(0.05, dtype=dtype)
    assert bool((x >= low).all()) and bool((x < high).all())
    # Kolmogorov-Smirnov against U(-0.05, 0.05) per state entry; family alpha 0.01 over 4 entries x 2 dtypes
    # (Bonferroni: 0.01 / 8 per test).
    alpha = 0.01 / 8
    cols = x.double().numpy().T
    for col in cols:
        assert stats.kstest(col, "uniform", args=(-0.05, 0.1)).pvalue > alpha
    # The test has power: a 10% narrower range is rejected.
    assert stats.kstest(0.9 * cols[0], "uniform", args=(-0.05, 0.1)).pvalue < 1e-6
    # Entries are drawn independently: no correlation between the 4 state entries beyond sampling noise.
    corr = np.corrcoef(cols)
    assert np.abs(corr - np.eye(4)).max() < 4 / math.sqrt(x.shape[0])


def test_reset_done_redraws_only_done_rows_and_keeps_gradients() -> None:
    twin = CartPoleTwin(dtype=torch.float64)
    x = torch.tensor(np.random.default_rng(0).uniform(-1, 1, size=(6, 4)), requires_grad=True)
    state = CartPoleState(x, torch.tensor([5, 7, 500, 1, 0, 9]))
    done = torch.tensor([True, False, True, False, False, True])
    new = twin.reset_done(state, done, torch.Generator().manual_seed(1))
    assert torch.equal(new.x[~done], x[~done])
    assert bool((new.x[done].abs() < 0.05).all())  # fresh draws; the old rows were far outside [-0.05, 0.05)
    assert torch.equal(new.t, torch.tensor([0, 7, 0, 1, 0, 0]))
    new.x.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.where(done.numpy()[:, None], 0.0, 1.0) * np.ones((6, 4)))
    # Nothing done: the same state comes back.
    assert twin.reset_done(state, torch.zeros(6, dtype=torch.bool)) is state
    with pytest.raises(ValueError, match=r"done must be a bool tensor of shape \(batch,\) = \(6,\)"):
        twin.reset_done(state, torch.zeros(6, dtype=torch.long))


def test_gradcheck_step_and_shaped_reward() -> None:
    twin = CartPoleTwin(dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(5, 4, generator=gen, dtype=torch.float64) - 0.5).mul(0.4).requires_grad_()
    action = torch.softmax(torch.randn(5, 2, generator=gen, dtype=torch.float64), dim=1).requires_grad_()
    t = torch.zeros(5, dtype=torch.long)

    def next_state_and_surrogate(x: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        nxt = twin.step(CartPoleState(x, t), a)[0]
        return nxt.x, twin.shaped_reward(nxt)

    assert torch.autograd.gradcheck(next_state_and_surrogate, (x, action))
    assert torch.autograd.gradcheck(lambda x: twin.shaped_reward(CartPoleState(x, t)), (x,))


def test_shaped_reward_values_and_delay() -> None:
    twin = CartPoleTwin(dtype=torch.float64)
    th, xt = twin.theta_threshold_radians, twin.x_threshold
    x = torch.tensor(
        [[0, 0, 0, 0], [0, 5.0, 0, -3.0], [0, 0, th, 0], [-xt, 0, 0, 0], [xt, 0, -th, 0]], dtype=torch.float64
    )
    r = twin.shaped_reward(CartPoleState(x, torch.zeros(5, dtype=torch.long)))
    np.testing.assert_allclose(r.numpy(), [1.0, 1.0, 0.5, 0.5, 0.0], rtol=0, atol=1e-15)
    # The action reaches the surrogate through the dynamics: not the next state's (Euler moves positions with
    # the old velocities), but the one after. Pole leaning right (theta > 0): pushing right (more weight on
    # action 1) swings it back up, so the surrogate two steps later increases.
    s0 = CartPoleState(torch.tensor([[0.0, 0.0, 0.1, 0.0]], dtype=torch.float64), torch.zeros(1, dtype=torch.long))
    a0 = torch.tensor([[0.5, 0.5]], dtype=torch.float64, requires_grad=True)
    s1 = twin.step(s0, a0)[0]
    (g1,) = torch.autograd.grad(twin.shaped_reward(s1).sum(), a0, retain_graph=True)
    assert torch.equal(g1, torch.zeros_like(g1))
    s2 = twin.step(s1, torch.tensor([[0.5, 0.5]], dtype=torch.float64))[0]
    (g2,) = torch.autograd.grad(twin.shaped_reward(s2).sum(), a0)
    assert g2[0, 1] > 1e-3 and g2[0, 0] == -g2[0, 1]


def test_soft_half_action_is_zero_force() -> None:
    twin = CartPoleTwin(dtype=torch.float64)
    half = torch.full((2, 2), 0.5, dtype=torch.float64)
    # Upright pole at rest, cart moving: no force, no torque, so only x moves: x' = x + tau * x_dot.
    s = CartPoleState(
        torch.tensor([[0.1, 0.5, 0.0, 0.0], [0.0, 0.0, 0.1, 0.0]], dtype=torch.float64),
        torch.zeros(2, dtype=torch.long),
    )
    nxt = twin.step(s, half)[0].x
    np.testing.assert_array_equal(nxt[0].numpy(), [0.1 + 0.02 * 0.5, 0.5, 0.0, 0.0])
    # Pole at 0.1 rad, at rest, no force: gravity alone.
    # thetaacc = g sin(th) / (l (4/3 - m_p cos^2(th) / m)), xacc = -m_p l thetaacc cos(th) / m.
    g, mp, m, length = 9.8, 0.1, 1.1, 0.5
    thetaacc = g * math.sin(0.1) / (length * (4 / 3 - mp * math.cos(0.1) ** 2 / m))
    xacc = -mp * length * thetaacc * math.cos(0.1) / m
    np.testing.assert_allclose(nxt[1].numpy(), [0.0, 0.02 * xacc, 0.1, 0.02 * thetaacc], rtol=1e-14, atol=0)
    # By hand: 9.8 * 0.099833 / (0.5 * (1.333333 - 0.1 * 0.990033 / 1.1)) = 1.57379 rad/s^2.
    assert thetaacc == pytest.approx(1.57379, abs=1e-5)
    # A hard push from rest matches Gymnasium exactly.
    env = gym.make("CartPole-v1")
    env.reset(seed=0)
    for a in (0, 1):
        env.unwrapped.state = np.zeros(4)
        g_obs = env.step(a)[0]
        hard = CartPoleState(torch.zeros(1, 4, dtype=torch.float64), torch.zeros(1, dtype=torch.long))
        t_obs = twin.step(hard, _one_hot(np.array([a]), torch.float64))[0].x
        np.testing.assert_array_equal(t_obs.float().numpy()[0], g_obs)
        assert abs(g_obs[1]) > 0.19  # +-10 N moved the cart


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_no_grad_fast_path_is_bit_identical_to_autograd_path(dtype: torch.dtype) -> None:
    # step() uses in-place ops on its temporaries when nothing needs a gradient; results must not change by a bit.
    twin = CartPoleTwin(dtype=dtype)
    gen = torch.Generator().manual_seed(7)
    n = 1003  # not a multiple of any SIMD width
    x = ((torch.rand(n, 4, generator=gen, dtype=torch.float64) - 0.5) * torch.tensor([5.0, 4.0, 0.5, 6.0])).to(dtype)
    soft = torch.softmax(torch.randn(n, 2, generator=gen), dim=1).to(dtype)
    hard = torch.nn.functional.one_hot(torch.randint(0, 2, (n,), generator=gen), 2).to(dtype)
    state = CartPoleState(x, torch.zeros(n, dtype=torch.long))
    x_before = x.clone()
    for action in (soft, hard):
        fast = twin.step(state, action)[0].x
        slow = twin.step(state, action.clone().requires_grad_())[0].x
        assert slow.requires_grad and not fast.requires_grad
        assert torch.equal(fast, slow.detach())
    assert torch.equal(x, x_before)  # inputs untouched


def test_bad_inputs_raise_clear_errors() -> None:
    twin = CartPoleTwin()
    state = twin.reset(4)
    for shape in [(4, 3), (4,), (3, 2), (4, 2, 1)]:
        with pytest.raises(ValueError, match=r"action must have shape \(batch, n_actions\) = \(4, 2\)"):
            twin.step(state, torch.zeros(shape))
    for dtype in (torch.long, torch.int32, torch.bool):
        with pytest.raises(ValueError, match=r"action must be a floating-point tensor of shape \(4, 2\).*got dtype"):
            twin.step(state, torch.zeros(4, 2, dtype=dtype))
    with pytest.raises(TypeError, match="action must be a torch.Tensor"):
        twin.step(state, [[1.0, 0.0]] * 4)
    with pytest.raises(ValueError, match=r"state.x must have shape \(batch, 4\)"):
        twin.step(CartPoleState(torch.zeros(4, 3), state.t), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="state.x must have this twin's dtype torch.float32"):
        twin.step(CartPoleState(state.x.double(), state.t), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="batch must be a positive int"):
        twin.reset(0)
    with pytest.raises(ValueError, match="dtype must be a floating-point dtype"):
        CartPoleTwin(dtype=torch.long)


def test_float64_action_on_float32_twin_is_cast() -> None:
    twin = CartPoleTwin()
    state = twin.reset(8, torch.Generator().manual_seed(0))
    a = _one_hot(np.arange(8) % 2, torch.float32)
    ref = twin.step(state, a)[0].x
    assert torch.equal(twin.step(state, a.double())[0].x, ref)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu() -> None:
    cpu, gpu = CartPoleTwin(dtype=torch.float64), CartPoleTwin(device="cuda", dtype=torch.float64)
    state = cpu.reset(256, torch.Generator().manual_seed(0))
    a = _one_hot(np.random.default_rng(0).integers(0, 2, 256), torch.float64)
    s_gpu = CartPoleState(state.x.cuda(), state.t.cuda())
    for _ in range(20):
        state, _, term, _ = cpu.step(state, a)
        s_gpu, _, term_gpu, _ = gpu.step(s_gpu, a.cuda())
        torch.testing.assert_close(s_gpu.x.cpu(), state.x, rtol=1e-12, atol=1e-12)
    done = torch.zeros(256, dtype=torch.bool, device="cuda")
    done[::3] = True
    fresh = gpu.reset_done(s_gpu, done)
    assert torch.equal(fresh.x[~done], s_gpu.x[~done]) and bool((fresh.x[done].abs() < 0.05).all())
