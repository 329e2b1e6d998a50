"""The MiniGrid twin against ``minigrid`` itself: lock-step equality, gradients, layout distributions, refusal."""

from __future__ import annotations

import importlib.util
import operator
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import envs
from envs.minigrid_twin import (
    CLOSED,
    EMPTY,
    KEY,
    LAVA,
    LOCKED,
    MINIGRID_SPECS,
    OPEN,
    MiniGridState,
    MiniGridTwin,
    cat_states,
    generate_layouts,
    state_from_env,
)

LOCKSTEP_IDS = [
    "MiniGrid-Empty-5x5-v0",
    "MiniGrid-Empty-Random-6x6-v0",
    "MiniGrid-DoorKey-5x5-v0",
    "MiniGrid-DoorKey-8x8-v0",
    "MiniGrid-LavaGapS6-v0",
    "MiniGrid-FourRooms-v0",
    "MiniGrid-LavaCrossingS9N2-v0",
    "MiniGrid-SimpleCrossingS11N5-v0",
]
# Random actions biased to forward, with every action (pickup, drop, toggle, done included) possible.
ACTION_P = [0.15, 0.15, 0.4, 0.1, 0.05, 0.1, 0.05]


def _wrapped(env_id: str):  # type: ignore[no-untyped-def]
    gym = pytest.importorskip("gymnasium")
    pytest.importorskip("minigrid")
    from gymnasium.wrappers import FlattenObservation
    from minigrid.wrappers import ImgObsWrapper

    return FlattenObservation(ImgObsWrapper(gym.make(env_id)))


def _replace_row(state: MiniGridState, i: int, row: MiniGridState) -> MiniGridState:
    return MiniGridState(*(torch.cat([f[:i], r, f[i + 1 :]]) for f, r in zip(state, row, strict=True)))


@pytest.mark.parametrize(
    ("env_id", "differentiable"),
    [(env_id, False) for env_id in LOCKSTEP_IDS] + [("MiniGrid-DoorKey-5x5-v0", True), ("MiniGrid-FourRooms-v0", True)],
)
def test_lockstep_with_minigrid(env_id: str, differentiable: bool) -> None:
    """Observations, rewards, terminated and truncated equal minigrid's exactly, step for step (float64), over 8
    seeded envs x 120 random actions, with fresh layouts after each episode end; the events that change the grid
    (pickup, drop, unlock, open / close) and lava deaths happen along the way where the family has them.
    ``differentiable``: the actions require grad, so the relaxed step and the five-view observation run (else the
    index fast path and one view)."""
    n_envs, n_steps = 8, 120
    envs_ = [_wrapped(env_id) for _ in range(n_envs)]
    twin = MiniGridTwin(env_id, dtype=torch.float64)
    obs = np.stack([e.reset(seed=100 + i)[0] for i, e in enumerate(envs_)])
    state = cat_states([state_from_env(e, torch.float64) for e in envs_])
    assert np.array_equal(twin.observe(state).numpy(), obs)
    rng = np.random.default_rng(0)
    events = {"pickup": 0, "drop": 0, "unlock": 0, "open_close": 0, "goal": 0, "lava": 0, "truncated": 0}
    for _ in range(n_steps):
        actions = rng.choice(7, size=n_envs, p=ACTION_P)
        before = state
        action = torch.nn.functional.one_hot(torch.as_tensor(actions), 7).double().requires_grad_(differentiable)
        state, reward, terminated, truncated = twin.step(state, action)
        twin_obs = twin.observe(state).detach().numpy()
        state, reward = MiniGridState(*(f.detach() for f in state)), reward.detach()
        for i, e in enumerate(envs_):
            o, r, te, tr, _ = e.step(int(actions[i]))
            assert np.array_equal(twin_obs[i], o)
            assert (float(reward[i]), bool(terminated[i]), bool(truncated[i])) == (r, te, tr)
            dc = float(state.carry[i] - before.carry[i])
            events["pickup"] += dc > 0
            events["drop"] += dc < 0
            events["unlock"] += float((before.grid[i, ..., LOCKED] - state.grid[i, ..., LOCKED]).sum()) > 0
            events["open_close"] += float((before.grid[i, ..., OPEN] - state.grid[i, ..., OPEN]).abs().sum()) > 0
            events["goal"] += r > 0
            events["lava"] += te and r == 0
            events["truncated"] += tr
            if te or tr:
                e.reset()
                state = _replace_row(state, i, state_from_env(e, torch.float64))
        # the hard dynamics keep a point mass
        assert bool(((state.pose == 0) | (state.pose == 1)).all() and ((state.grid == 0) | (state.grid == 1)).all())
    if "DoorKey-5x5" in env_id:
        assert min(events["pickup"], events["drop"], events["unlock"], events["open_close"], events["goal"]) > 0
    if "LavaGap" in env_id or "LavaCrossing" in env_id:
        assert events["lava"] > 0
    if "Empty-5x5" in env_id:
        assert events["goal"] > 0


def test_soft_step_is_linear_in_the_action_and_one_hot_is_exact() -> None:
    """From a point-mass state, a soft step is the action-weighted mixture of the seven hard steps (pose, grid,
    carry, reward and, for the pose, the observation: the expected view; to 1e-12), and each hard step leaves a
    point mass."""
    twin = MiniGridTwin("MiniGrid-DoorKey-5x5-v0", dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    state = twin.reset(16, gen)
    w = torch.softmax(torch.randn(16, 7, generator=gen, dtype=torch.float64), -1)
    soft, r_soft, _, _ = twin.step(state, w)
    # moves only (left, right, forward, done): the observation is then linear in the action as well
    w_move = w * torch.tensor([1.0, 1, 1, 0, 0, 0, 1], dtype=torch.float64)
    w_move = w_move / w_move.sum(1, keepdim=True)
    soft_move, *_ = twin.step(state, w_move)
    obs_mix = torch.zeros(16, 147, dtype=torch.float64)
    mix = [torch.zeros_like(f) for f in (soft.pose, soft.grid, soft.carry, r_soft)]
    for a in range(7):
        hard, r, _, _ = twin.step(state, torch.nn.functional.one_hot(torch.full((16,), a), 7).double())
        obs_mix += w_move[:, a, None] * twin.observe(hard)
        for acc, f in zip(mix, (hard.pose, hard.grid, hard.carry, r), strict=True):
            acc += w[:, a].reshape(-1, *[1] * (f.dim() - 1)) * f
        assert torch.all(hard.pose.sum((1, 2, 3)) == 1) and set(hard.pose.unique().tolist()) <= {0.0, 1.0}
    for got, want in zip((soft.pose, soft.grid, soft.carry, r_soft), mix, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    torch.testing.assert_close(twin.observe(soft_move), obs_mix, rtol=0, atol=1e-12)


def test_gradcheck_of_one_step_wrt_a_soft_action() -> None:
    """``torch.autograd.gradcheck`` (float64) of the next pose, grid, carry, reward and observation with respect to
    a soft action, from a soft state (after two soft steps) where the agent can face the key and the door."""
    twin = MiniGridTwin("MiniGrid-DoorKey-5x5-v0", dtype=torch.float64)
    gen = torch.Generator().manual_seed(3)
    state = twin.reset(2, gen)
    for _ in range(2):
        w0 = torch.softmax(torch.randn(2, 7, generator=gen, dtype=torch.float64), -1)
        state, *_ = twin.step(state, w0)
    logits = torch.randn(2, 7, generator=gen, dtype=torch.float64, requires_grad=True)

    def f(lg: torch.Tensor) -> tuple[torch.Tensor, ...]:
        nxt, r, _, _ = twin.step(state, torch.softmax(lg, -1))
        return nxt.pose, nxt.grid, nxt.carry, r, twin.observe(nxt)

    assert torch.autograd.gradcheck(f, (logits,), eps=1e-6, atol=1e-7, fast_mode=True)
    # and the gradient is not trivially zero: the reward and the key cell depend on the action
    nxt, r, _, _ = twin.step(state, torch.softmax(logits, -1))
    (g,) = torch.autograd.grad(r.sum() + nxt.grid[..., KEY].sum() + nxt.pose[..., 0].sum(), logits)
    assert g.abs().sum() > 0


def test_doorkey5_layout_distribution_matches_minigrid() -> None:
    """Chi-square (homogeneity, 2 samples) of the joint (door y, agent y, key y, agent dir) of DoorKey-5x5 layouts:
    the twin's torch generator against minigrid's resets over 2,000 seeds each; p > 0.001."""
    stats = pytest.importorskip("scipy.stats")
    env = _wrapped("MiniGrid-DoorKey-5x5-v0").unwrapped
    n = 2000

    def category(door_y: int, ay: int, ky: int, d: int) -> int:
        return ((door_y * 5 + ay) * 5 + ky) * 4 + d

    real = np.zeros(5 * 5 * 5 * 4, dtype=np.int64)
    for seed in range(n):
        env.reset(seed=seed)
        door_y = next(j for j in range(5) if env.grid.get(2, j) is not None and env.grid.get(2, j).type == "door")
        key_y = next(j for j in range(5) if env.grid.get(1, j) is not None and env.grid.get(1, j).type == "key")
        real[category(door_y, int(env.agent_pos[1]), key_y, int(env.agent_dir))] += 1
    cells, x, y, d, _ = generate_layouts(MINIGRID_SPECS["MiniGrid-DoorKey-5x5-v0"], n, torch.Generator().manual_seed(0))
    twin = np.zeros_like(real)
    for i in range(n):
        door_y = int((cells[i, 2] == LOCKED).nonzero()[0])
        key_y = int((cells[i, 1] == KEY).nonzero()[0])
        twin[category(door_y, int(y[i]), key_y, int(d[i]))] += 1
    keep = (real + twin) > 0
    assert keep.sum() == 2 * 6 * 4  # door y in {1, 2} x ordered (agent, key) pairs of 3 cells x 4 directions
    assert (x == 1).all()
    _, p, _, _ = stats.chi2_contingency(np.stack([real[keep], twin[keep]]))
    assert p > 1e-3


def test_generated_layouts_are_valid() -> None:
    """Every generated layout of every id has its walls, one goal, the agent on an empty cell, and (DoorKey) one
    key left of one locked door; no cell is opened or closed at the start."""
    gen = torch.Generator().manual_seed(1)
    for env_id, spec in MINIGRID_SPECS.items():
        twin = MiniGridTwin(env_id)
        state = twin.reset(64, gen)
        cells = state.grid.argmax(-1)
        assert (cells[:, 0] == 1).all() and (cells[:, :, -1] == 1).all(), env_id
        assert ((cells == 2).flatten(1).sum(1) == 1).all(), env_id
        x, y, _ = twin.agent_pose(state)
        assert (cells[torch.arange(64), x, y] == EMPTY).all(), env_id
        assert not ((cells == OPEN) | (cells == CLOSED)).any(), env_id
        if spec.family == "doorkey":
            assert ((cells == KEY).flatten(1).sum(1) == 1).all() and ((cells == LOCKED).flatten(1).sum(1) == 1).all()


def test_refused_without_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``import minigrid`` made to fail, a MiniGrid id gets one line naming the extra."""
    monkeypatch.setitem(sys.modules, "minigrid", None)
    with pytest.raises(ValueError, match=r'pip install -e "\.\[minigrid\]"') as info:
        envs.make_differentiable("MiniGrid-DoorKey-5x5-v0")
    assert "\n" not in str(info.value)


def test_optimal_returns_behind_the_thresholds() -> None:
    """The tabled optimal mean returns are what ``optimal_return_stats`` computes (1,000 layouts, seed 0), the
    thresholds sit 0.05 below them, and Empty-5x5's optimum is its 5-step path (1 - 0.9 * 5 / 100)."""
    from agents.evaluation import MINIGRID_OPTIMAL_RETURNS, MINIGRID_THRESHOLDS, reward_threshold
    from envs.minigrid_twin import optimal_return_stats

    assert set(MINIGRID_OPTIMAL_RETURNS) == set(MINIGRID_SPECS)
    for env_id in ("MiniGrid-Empty-5x5-v0", "MiniGrid-DoorKey-5x5-v0", "MiniGrid-LavaGapS5-v0"):
        mean, _ = optimal_return_stats(env_id, 1000, 0)
        assert mean == pytest.approx(MINIGRID_OPTIMAL_RETURNS[env_id], abs=1e-4)
        assert MINIGRID_THRESHOLDS[env_id] == pytest.approx(MINIGRID_OPTIMAL_RETURNS[env_id] - 0.05, abs=1e-9)
        if importlib.util.find_spec("minigrid") is not None:
            assert reward_threshold(env_id) == MINIGRID_THRESHOLDS[env_id]
    assert MINIGRID_OPTIMAL_RETURNS["MiniGrid-Empty-5x5-v0"] == pytest.approx(1 - 0.9 * 5 / 100)


def test_make_env_gives_the_twin_observation() -> None:
    """``agents.evaluation.make_env`` of a MiniGrid id observes through ImgObsWrapper + FlattenObservation (Box (147,)
    uint8) with the env's own max_steps as time limit, and the first observation is the twin's; importing ``agents``
    leaves ``gymnasium.make`` of the id as ``minigrid`` registers it (a Dict observation, no time limit)."""
    gym = pytest.importorskip("gymnasium")
    pytest.importorskip("minigrid")
    import agents  # noqa: F401
    from agents.evaluation import env_wrappers, make_env, make_kwargs

    env_id = "MiniGrid-DoorKey-6x6-v0"
    max_steps = MINIGRID_SPECS[env_id].max_steps
    plain = gym.make(env_id)
    assert isinstance(plain.observation_space, gym.spaces.Dict) and plain.spec.max_episode_steps is None
    assert isinstance(gym.make("MiniGrid-Empty-5x5-v0").observation_space, gym.spaces.Dict)
    assert make_kwargs(env_id) == {"max_episode_steps": max_steps}
    assert [w.__name__ for w in env_wrappers(env_id)] == ["ImgObsWrapper", "FlattenObservation"]
    assert env_wrappers("CartPole-v1") == []
    env = make_env(env_id)
    assert env.observation_space.shape == (147,) and env.observation_space.dtype == np.uint8
    assert env.spec.max_episode_steps == max_steps
    obs, _ = env.reset(seed=7)
    twin = MiniGridTwin(env_id)
    assert np.array_equal(twin.observe(state_from_env(env)).numpy()[0], obs)
    obs_plain, _ = plain.reset(seed=7)  # the wrappers a loop of one's own applies give the same observation
    assert np.array_equal(_wrapped(env_id).reset(seed=7)[0], obs)
    assert np.array_equal(obs_plain["image"].reshape(-1), obs)
    truncated, steps = False, 0
    while not truncated:  # turning in place never terminates: truncated at exactly max_steps
        _, _, terminated, truncated, _ = env.step(0)
        steps += 1
        assert not terminated
    assert steps == max_steps


def test_importing_agents_leaves_gymnasium_make_alone() -> None:
    """In a fresh process: ``make_env`` of a MiniGrid id works without importing ``minigrid`` first (the package
    imports it, which registers the ids) and gives the flat view, while ``gymnasium.make`` of the id -- after
    ``import agents`` -- still gives ``minigrid``'s own Dict observation."""
    pytest.importorskip("minigrid")
    code = (
        "import agents, gymnasium as gym\n"
        "from agents.evaluation import make_env\n"
        "print(make_env('MiniGrid-Empty-5x5-v0').observation_space.shape)\n"
        "print(type(gym.make('MiniGrid-Empty-5x5-v0').observation_space).__name__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[1]
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["(147,)", "Dict"], out.stderr


def test_env_spec_refuses_minigrid_ids_without_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from agents.evaluation import env_spec

    monkeypatch.setitem(sys.modules, "minigrid", None)
    with pytest.raises(ValueError, match=r'pip install -e "\.\[minigrid\]"'):
        env_spec("MiniGrid-Empty-5x5-v0")


def test_st_gumbel_learns_empty_5x5() -> None:
    """st-gumbel through the twin, with the minigrid defaults, reaches Empty-5x5's threshold (100 greedy episodes
    in the real env) within 20k env steps, at its optimum 0.955."""
    pytest.importorskip("minigrid")
    import agents
    from agents.callbacks import StopTrainingOnSolved

    torch.set_num_threads(1)
    agent = agents.make_agent("st-gumbel", "MiniGrid-Empty-5x5-v0", seed=0)
    agent.learn(20_000, callback=StopTrainingOnSolved())
    assert agent.solved, agent.record[-1]
    assert agent.solve_env_steps <= 20_000
    assert agent.evaluate(episodes=10, seed=5).mean == pytest.approx(0.955, abs=1e-9)


def _gap_rows(cells: torch.Tensor) -> tuple[int, ...]:
    """FourRooms: the positions of the four gaps in the middle walls (x = 9 above / below, y = 9 left / right)."""
    col, row = cells[9], cells[:, 9]
    return (
        int((col[:9] != 1).nonzero()[0]),
        int((col[10:] != 1).nonzero()[0]),
        int((row[:9] != 1).nonzero()[0]),
        int((row[10:] != 1).nonzero()[0]),
    )


def _lava_gap(cells: torch.Tensor) -> tuple[int, int]:
    """LavaGap: the lava column and the row of its gap."""
    lx = int((cells == LAVA).any(1).nonzero()[0])
    return lx, int((cells[lx, 1:-1] != LAVA).nonzero()[0]) + 1


FEATURES = {
    "MiniGrid-LavaGapS7-v0": [lambda c, x, y, d: _lava_gap(c)],
    "MiniGrid-Empty-Random-6x6-v0": [lambda c, x, y, d: (x, y, d)],
    "MiniGrid-LavaCrossingS9N1-v0": [lambda c, x, y, d: tuple(c.flatten().tolist())],
    "MiniGrid-SimpleCrossingS9N2-v0": [
        lambda c, x, y, d: (tuple((c[:, 4] == 1).tolist()), tuple((c[4] == 1).tolist())),
        lambda c, x, y, d: tuple((c[2] == 1).tolist()) + tuple((c[:, 2] == 1).tolist()),
    ],
    "MiniGrid-FourRooms-v0": [
        lambda c, x, y, d: _gap_rows(c)[:2],
        lambda c, x, y, d: _gap_rows(c)[2:],
        lambda c, x, y, d: (x // 5, y // 5, d),
        lambda c, x, y, d: tuple(int(v) // 5 for v in (c == 2).nonzero()[0]),
    ],
}


@pytest.mark.parametrize("env_id", list(FEATURES))
def test_layout_distributions_match_minigrid(env_id: str) -> None:
    """Chi-square (homogeneity) of layout features -- LavaGap's gap, Empty-Random's start pose, the FourRooms gaps,
    coarse start pose and coarse goal cell -- between 800 minigrid resets and 800 twin layouts; p > 0.001 each."""
    stats = pytest.importorskip("scipy.stats")
    env = _wrapped(env_id)
    twin = MiniGridTwin(env_id)
    n = 800
    real = []
    for seed in range(n):
        env.reset(seed=seed)
        st = state_from_env(env)
        real.append((st.grid[0].argmax(-1), *(int(v) for v in twin.agent_pose(st))))
    cells, xs, ys, ds, _ = generate_layouts(MINIGRID_SPECS[env_id], n, torch.Generator().manual_seed(2))
    generated = [(cells[i], int(xs[i]), int(ys[i]), int(ds[i])) for i in range(n)]
    for feature in FEATURES[env_id]:
        counts: list[dict[tuple[int, ...], int]] = [{}, {}]
        for count, layouts in zip(counts, (real, generated), strict=True):
            for layout in layouts:
                key = feature(*layout)
                count[key] = count.get(key, 0) + 1
        keys = sorted(set(counts[0]) | set(counts[1]))
        table = np.array([[c.get(k, 0) for k in keys] for c in counts])
        _, p, _, _ = stats.chi2_contingency(table)
        assert p > 1e-3, (env_id, keys, table)


def test_reset_done_replaces_only_finished_rows_and_keeps_gradients() -> None:
    twin = MiniGridTwin("MiniGrid-DoorKey-6x6-v0", dtype=torch.float64)
    gen = torch.Generator().manual_seed(4)
    state = twin.reset(6, gen)
    w = torch.softmax(torch.randn(6, 7, generator=gen, dtype=torch.float64), -1).requires_grad_(True)
    nxt, *_ = twin.step(state, w)
    done = torch.tensor([True, False, False, True, False, False])
    out = twin.reset_done(nxt, done, gen)
    for f, g in zip(out, nxt, strict=True):
        assert torch.equal(f[~done], g[~done])
    assert (out.t[done] == 0).all() and (out.pose[done].flatten(1).amax(1) == 1).all()
    weights = torch.rand(out.pose.shape, generator=gen, dtype=torch.float64)
    (grad,) = torch.autograd.grad((out.pose * weights).sum(), w)
    assert grad[~done].abs().sum() > 0 and grad[done].abs().sum() == 0
    assert twin.reset_done(out, torch.zeros(6, dtype=torch.bool), gen) is out


def test_bit_row_visibility_is_process_vis() -> None:
    """The boolean visibility on 7-bit rows (``_visibility_bits``) equals ``process_vis``'s loops
    (``_propagate_visibility`` with ``and`` / ``or``) on 40,000 random see-behind masks of four densities."""
    from envs.minigrid_twin import _propagate_visibility, _visibility_bits

    gen = torch.Generator().manual_seed(0)
    for density in (0.3, 0.6, 0.8, 0.95):
        see_behind = torch.rand((10_000, 7, 7), generator=gen) < density
        loops = _propagate_visibility(see_behind, operator.and_, operator.or_)
        assert torch.equal(_visibility_bits(see_behind), loops)
        assert 0.05 < loops.float().mean() < 0.97  # neither all hidden nor all seen


def test_index_step_reads_only_its_two_cells() -> None:
    """A point mass acted on by one-hot actions takes the index path even when a cell it does not touch is soft,
    with the relaxed step's values exactly; a soft faced cell sends it to the relaxed step."""
    twin = MiniGridTwin("MiniGrid-DoorKey-5x5-v0", dtype=torch.float64)
    state = twin.reset(64, torch.Generator().manual_seed(4))
    grid = state.grid.clone()
    grid[:, 0, 0] = torch.tensor([0.5, 0.5, 0, 0, 0, 0, 0, 0], dtype=torch.float64)  # a corner no agent reaches
    state = state._replace(grid=grid)
    for a in range(7):
        w = torch.nn.functional.one_hot(torch.full((64,), a), 7).double()
        fast = twin._hard_step(state, w)
        assert fast is not None
        slow = twin._step_soft(state, w)
        for got, want in zip((*fast[0], *fast[1:]), (*slow[0], *slow[1:]), strict=True):
            assert torch.equal(got, want)
    x, y, d = twin.agent_pose(state)
    vec = torch.tensor([[1, 0], [0, 1], [-1, 0], [0, -1]])[d]
    grid[torch.arange(64), x + vec[:, 0], y + vec[:, 1]] = 0.5 * grid[torch.arange(64), x + vec[:, 0], y + vec[:, 1]]
    grid[torch.arange(64), x + vec[:, 0], y + vec[:, 1], 0] += 0.5
    assert twin._hard_step(state._replace(grid=grid), w) is None


@pytest.mark.parametrize(
    ("method", "hyperparameters"),
    [
        ("st-gumbel", {}),
        ("st-gumbel-critic", {}),
        ("st-gumbel-model", {}),
        ("reinforce", {"rollout": "gym"}),
        ("ppo", {}),
        ("dqn", {}),
    ],
)
def test_every_family_trains_and_evaluates_on_the_flat_view(method: str, hyperparameters: dict) -> None:
    """Each method family (twin, critic, model-based, REINFORCE on real envs, SB3) builds its envs with
    ``make_env``: its policy takes the (147,) view, and its first evaluation in the real env scores returns in [0, 1]
    -- while ``gymnasium.make`` of the id keeps ``minigrid``'s Dict observation."""
    gym = pytest.importorskip("gymnasium")
    pytest.importorskip("minigrid")
    import agents

    torch.set_num_threads(1)
    env_id = "MiniGrid-Empty-5x5-v0"
    with agents.make_agent(method, env_id, seed=0, eval_every=10**9, eval_episodes=2, **hyperparameters) as agent:
        agent.learn(1)
        assert agent.policy.observation_space.shape == (147,)
        first = agent.record[0]
        assert first["eval/episodes"] == 2 and 0.0 <= first["eval/mean_reward"] <= 1.0
    assert isinstance(gym.make(env_id).observation_space, gym.spaces.Dict)


def test_evaluate_and_evaluate_many_agree_on_the_flat_view() -> None:
    """``evaluate`` (SB3's vec env) and ``evaluate_many`` (Gymnasium's) both build the wrapped env: a policy that
    checks the (147,) observation and always moves forward scores the same on both (Empty-5x5: it never turns, so
    every episode is truncated at max_steps with return 0)."""
    pytest.importorskip("minigrid")
    from agents.evaluation import evaluate, evaluate_many

    class Forward:
        def predict(self, obs, state=None, episode_start=None, deterministic=True):  # type: ignore[no-untyped-def]
            assert obs.shape[1:] == (147,)
            return np.full(len(obs), 2), None

    def act(obs: np.ndarray) -> np.ndarray:
        assert obs.shape[2:] == (147,)
        return np.full(obs.shape[:2], 2)

    one = evaluate(Forward(), "MiniGrid-Empty-5x5-v0", episodes=3, seed=4)
    many = evaluate_many(act, "MiniGrid-Empty-5x5-v0", episodes=3, seeds=[4, 9])
    assert one.mean == 0.0 and one.episodes == 3
    assert many == [one, one]
