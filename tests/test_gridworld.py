"""Tests of the GridWorld env, its exact model and the registered ``gumbel_rl/`` suite."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from scipy import stats
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs  # noqa: F401  (registers the suite)
from envs.gridworld import GridWorld, gumbel_argmax
from envs.maps import GRIDWORLD_IDS, SUITE, grid_spec, optimal_return, register_gridworlds
from envs.tabular import TabularModel, policy_return, value_iteration

OPEN_5X5 = ["S....", ".....", ".....", ".....", "....G"]


# --- bad input ------------------------------------------------------------------------------------------


def test_unknown_character_names_char_position_and_valid_set() -> None:
    with pytest.raises(ValueError, match=r"unknown map character 'x' at row 1, col 2; valid characters are '#\.SGT'"):
        GridWorld(["S..", "..x", "..G"])


def test_missing_start_goal_ragged_and_unreachable_raise() -> None:
    with pytest.raises(ValueError, match="no start cell 'S'"):
        GridWorld(["...", "..G"])
    with pytest.raises(ValueError, match="no goal cell 'G'"):
        GridWorld(["S..", "..."])
    with pytest.raises(ValueError, match=r"same length; got row lengths \[3, 2\]"):
        GridWorld(["S..", ".G"])
    with pytest.raises(ValueError, match="no goal is reachable from the start at row 0, col 0"):
        GridWorld(["S#.", "##.", "..G"])
    # A goal behind a trap is unreachable too: entering the trap ends the episode.
    with pytest.raises(ValueError, match="goal at row 0, col 4 is unreachable from every start"):
        GridWorld(["S.GTG"])
    with pytest.raises(ValueError, match=r"slip must be a probability in \[0, 1\); got 1.0"):
        GridWorld(OPEN_5X5, slip=1.0)
    with pytest.raises(ValueError, match="obs_mode must be one of"):
        GridWorld(OPEN_5X5, obs_mode="pixels")


@pytest.mark.parametrize("action", [4, -1, 1.5, "up"])
def test_action_out_of_range_raises(action: object) -> None:
    env = gym.make("gumbel_rl/EmptyRoom-5x5-v0")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"is not in the action space Discrete\(4\); valid actions are integers 0..3"):
        env.step(action)


def test_multiline_string_map_equals_list_map() -> None:
    text = """
        S..
        .#.
        ..G
    """
    a, b = GridWorld(text), GridWorld(["S..", ".#.", "..G"])
    assert (a.desc == b.desc).all()


# --- exact model ----------------------------------------------------------------------------------------


def test_model_rows_sum_to_one_and_terminals_absorb() -> None:
    env = GridWorld(["S.T", ".#.", "..G"], slip=0.2, step_cost=-0.05)
    for s in range(env.n_cells):
        for a in range(4):
            assert sum(p for p, *_ in env.P[s][a]) == pytest.approx(1.0, abs=1e-12)
    for cell in (2, 8):  # trap, goal
        assert all(env.P[cell][a] == [(1.0, cell, 0.0, True)] for a in range(4))
    # From (0, 1) moving right enters the trap with prob 0.8: reward -1 - 0.05, terminated.
    assert env.P[1][1][0] == pytest.approx((0.8, 2, -1.05, True))
    # Moving up from (0, 1) hits the edge (stays, 0.8); slips go left to cell 0 and right into the trap.
    assert [e[1] for e in env.P[1][0]] == [1, 0, 2]
    np.testing.assert_array_equal(env.initial_state_distrib, np.eye(9)[0])


def test_shortest_path_return_on_hand_checkable_map() -> None:
    # One row, goal three moves right: the optimal return is 1 + 3 * (-0.1) = 0.7.
    env = GridWorld(["S..G"], step_cost=-0.1)
    res = value_iteration(TabularModel.from_env(env), gamma=1.0, horizon=10)
    assert res.expected_return == pytest.approx(0.7, abs=1e-12)
    env.reset(seed=0)
    rewards, terms = zip(*[env.step(1)[1:3] for _ in range(3)], strict=True)
    assert rewards == pytest.approx((-0.1, -0.1, 0.9), abs=1e-12)
    assert terms == (False, False, True)
    # Walking into the wall/edge leaves the agent in place and still costs a step.
    env.reset(seed=0)
    obs, reward, *_ = env.step(3)
    assert (obs, reward) == (0, pytest.approx(-0.1))


def test_value_iteration_policy_achieves_optimal_return_on_cliff() -> None:
    """Greedy time-dependent VI policy walks around the cliff: 13 steps, return 1 - 13 * 0.01 = 0.87."""
    env = gym.make("gumbel_rl/Cliff-4x12-v0")
    res = value_iteration(TabularModel.from_env(env), gamma=1.0, horizon=env.spec.max_episode_steps)
    obs, _ = env.reset(seed=0)
    total, t, done = 0.0, 0, False
    while not done:
        obs, r, term, trunc, _ = env.step(int(res.time_policy[t, obs]))
        total, t, done = total + r, t + 1, term or trunc
    assert (t, term) == (13, True)
    assert total == pytest.approx(0.87, abs=1e-9)


# --- randomness ----------------------------------------------------------------------------------------


def test_slip_frequencies_match_half_slip_each_side() -> None:
    """From the centre of an open map, action 'up' (0): up / left / right with 0.7 / 0.15 / 0.15.

    Chi-square goodness of fit on 4000 fixed-seed steps, rejecting at p < 0.001; the outcome reported in info
    must agree with the move actually made.
    """
    env = GridWorld(OPEN_5X5, slip=0.3)
    env.reset(seed=123)
    centre = 2 * 5 + 2
    expected_cell = {0: centre - 5, 1: centre - 1, 2: centre + 1}  # intended up, left of up, right of up
    counts = np.zeros(3, dtype=int)
    for _ in range(4000):
        env.s = centre
        obs, *_, info = env.step(0)
        assert obs == expected_cell[info["outcome"]]
        counts[info["outcome"]] += 1
    p = stats.chisquare(counts, 4000 * np.array([0.7, 0.15, 0.15])).pvalue
    assert p > 1e-3, (counts, p)
    assert abs(counts[1] - counts[2]) < 4 * np.sqrt(4000 * 0.3)  # sides balanced within 4 sd of the difference


def test_no_slip_never_slips_and_always_draws_three_uniforms() -> None:
    env = GridWorld(OPEN_5X5, slip=0.0)
    env.reset(seed=5)
    for _ in range(300):
        env.s = 12
        obs, *_, info = env.step(1)
        assert obs == 13 and info["outcome"] == 0 and info["uniforms"].shape == (3,)


def test_draws_are_gumbel_max_of_reported_uniforms() -> None:
    """Reset and step outcomes are argmax(log p + g(info['uniforms'])), and seeding replays them."""
    env = gym.make("gumbel_rl/Slippery-8x8-v0")
    u = env.unwrapped
    obs, info = env.reset(seed=42)
    with np.errstate(divide="ignore"):
        assert obs == gumbel_argmax(np.log(u.initial_state_distrib), info["start_uniforms"])
    outcomes = []
    for a in [0, 1, 2, 3, 1, 2] * 5:
        obs, _, term, _, info = env.step(a)
        with np.errstate(divide="ignore"):
            assert info["outcome"] == gumbel_argmax(np.log(u.slip_probs), info["uniforms"])
        outcomes.append(info["outcome"])
        if term:
            break
    env.reset(seed=42)
    again = [env.step(a)[4]["outcome"] for a in [0, 1, 2, 3, 1, 2] * 5][: len(outcomes)]
    assert again == outcomes


def test_multiple_starts_are_uniform() -> None:
    """FourRooms has two starts (cells 0 and 110): binomial test of 2000 resets at p < 0.001."""
    env = gym.make("gumbel_rl/FourRooms-11x11-v0")
    env.reset(seed=7)
    starts = [env.reset()[0] for _ in range(2000)]
    assert set(starts) == {0, 110}
    assert stats.binomtest(starts.count(0), 2000, 0.5).pvalue > 1e-3


# --- observation modes and rendering ---------------------------------------------------------------------


def test_observation_modes_agree() -> None:
    envs_ = [GridWorld(["S..", ".#.", ".TG"], slip=0.2, obs_mode=m) for m in ("discrete", "onehot", "rowcol")]
    obs = [e.reset(seed=3)[0] for e in envs_]
    for a in [1, 1, 2, 2, 3, 0]:
        assert obs[1].dtype == np.float32 and obs[1].argmax() == obs[0] and obs[1].sum() == 1.0
        np.testing.assert_array_equal(obs[2], np.array(divmod(obs[0], 3), dtype=np.float32))
        obs = [e.step(a)[0] for e in envs_]


def test_render_ansi_and_rgb() -> None:
    env = GridWorld(["S.", ".G"], render_mode="ansi")
    env.reset(seed=0)
    env.step(1)
    assert env.render() == "SA\n.G\n(right)\n"
    env = GridWorld(["S.", ".G"], render_mode="rgb_array")
    env.reset(seed=0)
    img = env.render()
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8
    assert tuple(img[8, 8]) == (30, 60, 200)  # agent square in the centre of cell (0, 0)
    assert tuple(img[24, 24]) == (60, 180, 75)  # goal cell (1, 1)


# --- the registered suite --------------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", GRIDWORLD_IDS)
def test_check_env_gymnasium_and_sb3(env_id: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any checker warning fails the test
        gym_check_env(gym.make(env_id).unwrapped)
        sb3_check_env(gym.make(env_id), warn=True)


def test_suite_registration() -> None:
    assert len(GRIDWORLD_IDS) >= 5 and all(i.startswith("gumbel_rl/") for i in GRIDWORLD_IDS)
    before = {i: gym.spec(i) for i in GRIDWORLD_IDS}
    register_gridworlds()  # a second call must not re-register
    assert all(gym.spec(i) is before[i] for i in GRIDWORLD_IDS)
    env = gym.make("envs:gumbel_rl/EmptyRoom-5x5-v0")
    assert env.observation_space == gym.spaces.Discrete(25)
    assert any(s.env_kwargs.get("slip", 0) > 0 for s in SUITE)
    with pytest.raises(ValueError, match="not a GridWorld suite id"):
        grid_spec("gumbel_rl/Nope-v0")


@pytest.mark.parametrize("spec", SUITE, ids=lambda s: s.env_id)
def test_thresholds_sit_just_under_value_iteration_optimum(spec) -> None:
    """Finite-horizon undiscounted VI recomputes the optimum; threshold in [optimum - margin, optimum)."""
    opt = optimal_return(spec.env_id)
    assert spec.optimal_return == pytest.approx(opt, abs=1e-4)
    assert opt - spec.threshold_margin <= spec.reward_threshold < opt
    registered = gym.spec(spec.env_id)
    assert registered.reward_threshold == spec.reward_threshold
    assert registered.max_episode_steps == spec.max_episode_steps


@pytest.mark.parametrize("spec", SUITE, ids=lambda s: s.env_id)
def test_thresholds_are_reachable_by_a_stationary_policy(spec) -> None:
    """The trained policies see their cell, not the time left: the greedy policy of infinite-horizon VI (one
    action per cell) must reach the threshold in exact expectation under the time limit, within a fifth of the
    margin of the time-dependent optimum (a 64-step limit on the slippery map once failed this: 0.479 < 0.492)."""
    model = TabularModel.from_env(GridWorld(**spec.kwargs()))
    stationary = value_iteration(model, gamma=1.0)
    exact = policy_return(model, stationary.policy_probs(), horizon=spec.max_episode_steps).item()
    assert exact >= spec.optimal_return - spec.threshold_margin / 5
    assert exact > spec.reward_threshold


def test_works_in_gymnasium_vector_envs_with_infos() -> None:
    """Vector envs stack each info key into one array: every key must keep its shape from step to step."""
    venv = gym.make_vec("gumbel_rl/Slippery-8x8-v0", num_envs=3, vectorization_mode="sync")
    _, info = venv.reset(seed=0)
    assert info["start_uniforms"].shape == (3, 64)
    for _ in range(40):  # long enough for episodes to end and auto-reset
        _, _, _, _, info = venv.step(venv.action_space.sample())
        assert info["uniforms"].shape == (3, 3)
    venv.close()
