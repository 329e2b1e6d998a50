"""Tests of the pathwise twin agents (``agents.pathwise``): learning, estimator wiring, truncated backprop,
determinism, exact resume and refusals."""

from __future__ import annotations

import math
from typing import NamedTuple

import gymnasium as gym
import numpy as np
import pytest
import torch

import agents
import envs
from agents.callbacks import StopTrainingOnSolved
from agents.pathwise import PathwiseAgent, Window, critic_loss, shac_actor_loss, shac_window
from agents.registry import METHODS
from gumbel_rl.estimators import PATHWISE_ESTIMATORS, Estimator
from gumbel_rl.policy import GumbelPolicy, mlp

EMPTY = "gumbel_rl/EmptyRoom-5x5-v0"


def _spy_twin(agent: PathwiseAgent) -> list[dict]:
    """Wrap ``agent.twin.step`` to record, per call, the action fed in and the state it was applied to."""
    calls: list[dict] = []
    step = agent.twin.step

    def spy(state, action, **kwargs):
        calls.append({"state": state, "action": action})
        return step(state, action, **kwargs)

    agent.twin.step = spy
    return calls


def _spy_logits(agent: PathwiseAgent) -> list[torch.Tensor]:
    logits: list[torch.Tensor] = []
    agent.policy.register_forward_hook(lambda _m, _inp, out: logits.append(out.detach()))
    return logits


def _strip_wall(record: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "time/train_seconds"} for row in record]


def _assert_same_weights(a: PathwiseAgent, b: PathwiseAgent) -> None:
    for module_a, module_b in ((a.policy, b.policy), (a.critic, b.critic)):
        sa, sb = module_a.state_dict(), module_b.state_dict()
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("method", PATHWISE_ESTIMATORS)
def test_each_method_solves_empty_room(method: str) -> None:
    """With the tuned gridworld defaults, every estimator reaches the 100-episode threshold within 20k steps."""
    agent = agents.make_agent(method, EMPTY, seed=0, eval_every=512)
    agent.learn(20_000, callback=StopTrainingOnSolved())
    assert agent.solved, (method, agent.record[-1])
    assert agent.solve_env_steps <= 20_000
    # Independent check in the real env: greedy episodes at the optimum (8 steps: 1 - 8 * 0.01).
    result = agent.evaluate(episodes=10, seed=123)
    assert result.mean == pytest.approx(0.92, abs=1e-6)


def test_argmax_feeds_the_greedy_one_hot() -> None:
    agent = agents.make_agent("argmax", EMPTY, seed=3, n_envs=8, horizon=6)
    calls, logits = _spy_twin(agent), _spy_logits(agent)
    agent._train_iteration()
    agent._train_iteration()
    assert len(calls) == len(logits) == 12
    for call, lg in zip(calls, logits, strict=True):
        greedy = torch.nn.functional.one_hot(lg.argmax(-1), 4).to(call["action"].dtype)
        assert torch.equal(call["action"].detach(), greedy)
        assert call["action"].requires_grad  # the straight-through softmax gradient rides on it


def test_hard_estimators_feed_one_hots_that_carry_gradient() -> None:
    for method in ("st-gumbel", "reinmax", "gumbel-rao"):
        agent = agents.make_agent(method, EMPTY, seed=1, n_envs=8, horizon=4)
        calls = _spy_twin(agent)
        agent._train_iteration()
        for call in calls:
            a = call["action"]
            assert a.requires_grad, method
            assert torch.all((a == 0) | (a == 1)) and torch.all(a.sum(-1) == 1), method


def test_relaxed_trains_on_soft_actions_and_acts_hard_in_the_real_env() -> None:
    agent = agents.make_agent("relaxed", EMPTY, seed=0, eval_every=512)
    calls = _spy_twin(agent)
    agent._train_iteration()
    actions = torch.cat([c["action"].detach() for c in calls])
    assert torch.allclose(actions.sum(-1), torch.ones(len(actions)), atol=1e-5)
    assert actions.max(-1).values.lt(1 - 1e-4).all()  # strictly soft: not a single one-hot row
    agent.twin.step = type(agent.twin).step.__get__(agent.twin)  # remove the spy
    agent.learn(20_000, callback=StopTrainingOnSolved())
    assert agent.solved
    env = gym.make(EMPTY)
    obs, _ = env.reset(seed=5)
    total, done = 0.0, False
    while not done:
        action, _ = agent.policy.predict(obs, deterministic=True)
        assert np.asarray(action).dtype == np.int64 and np.ndim(action) == 0  # one hard action index
        assert env.action_space.contains(int(action))
        obs, reward, terminated, truncated, _ = env.step(int(action))
        total += float(reward)
        done = terminated or truncated
    assert total == pytest.approx(0.92, abs=1e-6)


def test_window_start_is_detached() -> None:
    """Truncated backprop: the state a window starts from has no graph; states inside the window do."""
    agent = agents.make_agent("st-gumbel", "CartPole-v1", seed=0, n_envs=4, horizon=5)
    calls = _spy_twin(agent)
    for _ in range(3):
        agent._train_iteration()
    assert len(calls) == 15
    for i, call in enumerate(calls):
        x = call["state"].x
        if i % 5 == 0:
            assert x.grad_fn is None and not x.requires_grad, i
        else:
            assert x.grad_fn is not None, i
    assert all(t.grad_fn is None for t in agent.twin_state)


def test_same_seed_same_run() -> None:
    kw = dict(seed=7, n_envs=8, horizon=8, eval_every=256)
    a = agents.make_agent("gumbel-rao", EMPTY, **kw).learn(1_536)
    b = agents.make_agent("gumbel-rao", EMPTY, **kw).learn(1_536)
    c = agents.make_agent("gumbel-rao", EMPTY, **{**kw, "seed": 8}).learn(1_536)
    assert _strip_wall(a.record) == _strip_wall(b.record)
    _assert_same_weights(a, b)
    assert _strip_wall(a.record) != _strip_wall(c.record)


@pytest.mark.parametrize("env_id", [EMPTY, "CartPole-v1"])
def test_resume_is_exact(env_id: str, tmp_path) -> None:
    kw = dict(seed=4, n_envs=8, horizon=8, eval_every=320)
    full = agents.make_agent("st-gumbel", env_id, **kw).learn(1_280)
    half = agents.make_agent("st-gumbel", env_id, **kw).learn(640)
    path = half.save(tmp_path / "ckpt.pt")
    resumed = agents.Agent.load(path, device="cpu")
    assert isinstance(resumed, PathwiseAgent) and resumed.num_env_steps == 640
    resumed.learn(1_280)
    assert _strip_wall(resumed.record) == _strip_wall(full.record)
    _assert_same_weights(resumed, full)
    for x, y in zip(resumed.twin_state, full.twin_state, strict=True):
        assert torch.equal(x, y)
    assert "rollout/ep_rew_mean" in full.record[-1]  # training episodes finished: their returns resume too
    state_r, state_f = resumed.episodes.state_dict(), full.episodes.state_dict()
    assert torch.equal(state_r.pop("running"), state_f.pop("running")) and state_r == state_f


def test_registry_and_refusals() -> None:
    for method in PATHWISE_ESTIMATORS:
        assert METHODS[method].agent_cls is PathwiseAgent and METHODS[method].needs_twin
    with pytest.raises(ValueError, match="differentiable twin") as info:
        agents.make_agent("st-gumbel", "FrozenLake-v1")
    message = str(info.value)
    assert "methods that work on 'FrozenLake-v1'" in message
    listed = message.split("methods that work on 'FrozenLake-v1': ")[1].split(", ")
    assert sorted(listed) == sorted(name for name, info in METHODS.items() if not info.needs_twin)
    with pytest.raises(ValueError, match="hyperparameter learning_rate"):
        agents.make_agent("st-gumbel", EMPTY, learning_rate=-1e-3)
    with pytest.raises(ValueError, match="hyperparameter tau: .*tau must be a finite number > 0"):
        agents.make_agent("relaxed", EMPTY, tau={"kind": "constant", "tau": 0.0})
    with pytest.raises(ValueError, match="tau_end"):
        agents.make_agent("relaxed", EMPTY, tau={"kind": "linear", "tau0": 1.0, "tau_end": -0.5})
    with pytest.raises(ValueError, match="hyperparameter gamma"):
        agents.make_agent("argmax", "CartPole-v1", gamma=1.0)


def test_temperature_follows_its_schedule_in_env_steps() -> None:
    schedule = {"kind": "linear", "tau0": 2.0, "tau_end": 1.0, "steps": 256}
    agent = agents.make_agent("st-gumbel", EMPTY, seed=0, n_envs=8, horizon=8, tau=schedule, eval_every=10**6)
    agent.learn(512)
    taus = [row["train/tau"] for row in agent.record]
    # Iteration i starts at 64 * i env steps: tau = 2 - 64 i / 256 until step 256, then 1.
    assert taus == pytest.approx([2.0, 1.75, 1.5, 1.25, 1.0, 1.0, 1.0, 1.0])
    assert all(row["time/total_timesteps"] == 64 * (i + 1) for i, row in enumerate(agent.record))


@pytest.mark.parametrize("actor_horizon", [1, 2])
def test_actor_horizon_cuts_the_gradient_inside_the_window(actor_horizon: int) -> None:
    """With ``actor_horizon`` k the state is detached every k steps of the window, and only there."""
    agent = agents.make_agent("st-gumbel", "CartPole-v1", seed=0, n_envs=4, horizon=6, actor_horizon=actor_horizon)
    calls = _spy_twin(agent)
    agent._train_iteration()
    assert len(calls) == 6
    for i, call in enumerate(calls):
        assert (call["state"].x.grad_fn is None) == (i % actor_horizon == 0), i


def test_one_step_actor_gradient_is_the_softmax_jacobian_times_the_lookahead() -> None:
    """``argmax`` with ``actor_horizon`` 1 on EmptyRoom, one env, one step from the start cell 0, a linear policy and
    a critic set by hand: d loss / d logits = -J^T (r_a + gamma V(s'_a)) exactly, where J is the softmax Jacobian
    (argmax's backward at tau 1), r_a = -0.01 for every move and s'_a the cell action a leads to (up and left
    bump into the edge and stay in cell 0, right -> 1, down -> 5)."""
    gamma = 0.9
    agent = agents.make_agent(
        "argmax",
        EMPTY,
        seed=0,
        n_envs=1,
        horizon=1,
        actor_horizon=1,
        gamma=gamma,
        net_arch=(),
        ent_coef=0.0,
        max_grad_norm=1e9,
        randomize_start_t=False,
    )
    values = torch.linspace(-0.5, 0.7, 25)
    with torch.no_grad():
        agent.critic[0].weight.copy_(values[None, :])
        agent.critic[0].bias.fill_(0.05)
        agent.policy.net[0].weight.normal_(generator=torch.Generator().manual_seed(1))
    grads: dict[str, torch.Tensor] = {}
    step = agent.actor_opt.step
    agent.actor_opt.step = lambda: (
        grads.update({n: p.grad.clone() for n, p in agent.policy.named_parameters()}),
        step(),
    )[1]
    logits = agent.policy.net[0].weight[:, 0].detach() + agent.policy.net[0].bias.detach()
    agent._train_iteration()
    lookahead = -0.01 + gamma * (values[[0, 1, 5, 0]] + 0.05)
    p = torch.softmax(logits, -1)
    expected = -(torch.diag(p) - torch.outer(p, p)) @ lookahead
    assert torch.allclose(grads["net.0.bias"], expected, atol=1e-7)
    assert torch.allclose(grads["net.0.weight"][:, 0], expected, atol=1e-7)
    assert torch.count_nonzero(grads["net.0.weight"][:, 1:]) == 0


def test_actor_horizon_refusals() -> None:
    with pytest.raises(ValueError, match="hyperparameter actor_horizon must be between 0 .* and horizon \\(8\\)"):
        agents.make_agent("st-gumbel", EMPTY, horizon=8, actor_horizon=9)
    with pytest.raises(ValueError, match="hyperparameter actor_horizon"):
        agents.make_agent("st-gumbel", EMPTY, actor_horizon=-1)


def test_each_evaluation_draws_fresh_episodes_reproducibly() -> None:
    """Evaluation seeds derive from (seed, evaluation index): the same policy on the slippery map gets different
    episodes at successive evaluations, and a second agent with the same seed gets the same sequence."""
    slippery = "gumbel_rl/Slippery-8x8-v0"
    a = agents.make_agent("st-gumbel", slippery, seed=3, eval_episodes=20)
    b = agents.make_agent("st-gumbel", slippery, seed=3, eval_episodes=20)
    means_a = [a.evaluate_progress().mean for _ in range(3)]
    means_b = [b.evaluate_progress().mean for _ in range(3)]
    assert means_a == means_b and a.evaluations == 3
    assert len(set(means_a)) == 3


# ---- the pure functions ----------------------------------------------------------------------------------------


class LineState(NamedTuple):
    x: torch.Tensor  # (B, 1) position
    t: torch.Tensor  # (B,) step counter


class LineTwin:
    """A tiny deterministic twin for hand-computed windows: ``x' = x + a_right - a_left`` from ``x = 0``, reward
    ``x'`` (its own training reward), terminated when ``x' >= 3``, truncated at ``max_episode_steps``."""

    env_id = "test/Line"
    obs_dim = 1
    n_actions = 2

    def __init__(self, max_episode_steps: int | None = None) -> None:
        self.max_episode_steps = max_episode_steps

    def reset(self, batch: int, generator: torch.Generator | None = None) -> LineState:
        return LineState(torch.zeros(batch, 1), torch.zeros(batch, dtype=torch.long))

    def reset_done(self, state: LineState, done: torch.Tensor, generator: torch.Generator | None = None) -> LineState:
        return LineState(torch.where(done[:, None], 0.0, state.x), torch.where(done, 0, state.t))

    def step(self, state: LineState, action: torch.Tensor, generator: torch.Generator | None = None):
        x = state.x + (action[:, 1:] - action[:, :1])
        t = state.t + 1
        terminated = x[:, 0] >= 3
        truncated = torch.zeros_like(terminated) if self.max_episode_steps is None else t >= self.max_episode_steps
        return LineState(x, t), x[:, 0], terminated, truncated & ~terminated

    def observe(self, state: LineState) -> torch.Tensor:
        return state.x

    def training_reward(self, state, action, next_state, reward) -> torch.Tensor:
        return reward

    def continuation(self, state: LineState) -> torch.Tensor:
        return torch.ones(state.x.shape[0])


def _line_setup(start_t: list[int], max_episode_steps: int | None = None):
    """Twin, start state, a linear policy that always moves right (greedy under ``argmax``), and the linear critic
    ``V(x) = x / 4 + 1 / 2`` (values exact in binary floating point, as gamma 0.5 below)."""
    twin = LineTwin(max_episode_steps)
    assert isinstance(twin, envs.DifferentiableEnv)
    state = twin.reset(len(start_t))._replace(t=torch.tensor(start_t))
    policy = GumbelPolicy(gym.spaces.Box(-10, 10, (1,)), gym.spaces.Discrete(2), net_arch=(), estimator="argmax")
    critic = mlp(1, (), 1, "tanh", 1.0)
    with torch.no_grad():
        policy.net[0].weight.zero_()
        policy.net[0].bias.copy_(torch.tensor([0.0, 1.0]))
        critic[0].weight.fill_(0.25)
        critic[0].bias.fill_(0.5)
    return twin, state, policy, critic


def _line_window(actor_horizon: int, max_episode_steps: int | None = None, start_t=(0, 2)) -> Window:
    twin, state, policy, critic = _line_setup(list(start_t), max_episode_steps)
    kw = dict(horizon=4, actor_horizon=actor_horizon, gamma=0.5, tau=1.0, estimator="argmax")
    return shac_window(policy, twin, state, critic, **kw)


def test_shac_window_by_hand() -> None:
    """SHAC (actor_horizon 0), 4 steps, always right, gamma 1/2, V(x) = x/4 + 1/2. Env 0 terminates on reaching
    x = 3 at step 2 and restarts; env 1 is truncated at step 1 (time limit 4, started at t = 2) and restarts."""
    g = 0.5
    v = lambda x: x / 4 + 0.5  # noqa: E731
    w = _line_window(actor_horizon=0, max_episode_steps=4)
    # env 0: rewards 1, 2, 3 (terminated: no bootstrap), restart, 1; the window ends one step into the new segment.
    j0 = 1 + g * 2 + g**2 * 3 + 1 + g * v(1)
    # env 1: rewards 1, 2 (truncated: gamma^2 V(final obs 2)), restart, 1, 2, closed with gamma^2 V(2).
    j1 = 1 + g * 2 + g**2 * v(2) + 1 + g * 2 + g**2 * v(2)
    assert w.objective.tolist() == [j0, j1]
    assert w.objective.requires_grad
    assert w.rewards.tolist() == [[1, 1], [2, 2], [3, 1], [1, 2]] == w.env_rewards.tolist()
    assert w.next_values.tolist() == [[v(1), v(1)], [v(2), v(2)], [v(3), v(1)], [v(1), v(2)]]
    assert w.terminated.tolist() == [[False, False], [False, False], [True, False], [False, False]]
    assert w.done.tolist() == [[False, False], [False, True], [True, False], [False, False]]
    assert w.observations[:, :, 0].tolist() == [[0, 0], [1, 1], [2, 0], [0, 1]]
    assert w.next_state.x[:, 0].tolist() == [1, 2] and w.next_state.t.tolist() == [1, 2]
    assert not any(x.requires_grad for x in (*w.next_state, w.rewards, w.next_values, w.observations))


def test_shac_window_actor_segments_by_hand() -> None:
    """actor_horizon 2 on the window above without time limit: the segments [0, 2) and [2, 4) are each closed with
    gamma^k V(s) at their cut (k their length so far; nothing after a termination)."""
    g = 0.5
    v = lambda x: x / 4 + 0.5  # noqa: E731
    w = _line_window(actor_horizon=2, start_t=(0,))
    assert w.objective.tolist() == [(1 + g * 2 + g**2 * v(2)) + (3 + 1 + g * v(1))]
    # actor_horizon 3 does not divide 4: the last, shorter segment is closed at the window end all the same.
    w = _line_window(actor_horizon=3, start_t=(0,))
    assert w.objective.tolist() == [(1 + g * 2 + g**2 * 3) + (1 + g * v(1))]


def test_shac_actor_loss_and_entropy_by_hand() -> None:
    """The loss is -mean(J)/H - ent_coef * entropy/H; the window's entropy is the sum over steps of the mean
    entropy of softmax(logits), with a graph only when asked for."""
    twin, state, policy, critic = _line_setup([0, 0])
    p = torch.softmax(torch.tensor([0.0, 1.0]), -1)
    step_entropy = float(-(p * p.log()).sum())
    kw = dict(horizon=3, actor_horizon=0, gamma=0.5, tau=1.0, estimator="argmax")
    w = shac_window(policy, twin, state, critic, entropy_grad=True, **kw)
    assert float(w.entropy.detach()) == pytest.approx(3 * step_entropy, rel=1e-6) and w.entropy.requires_grad
    loss = shac_actor_loss(w, horizon=3, ent_coef=0.1)
    assert float(loss.detach()) == pytest.approx(
        -float(w.objective.detach().mean()) / 3 - 0.1 * 3 * step_entropy / 3, rel=1e-6
    )
    assert not shac_window(policy, twin, state, critic, **kw).entropy.requires_grad
    hand = Window(torch.tensor([2.0, 4.0]), torch.tensor(1.5), *([torch.zeros(())] * 6), next_state=None)
    assert float(shac_actor_loss(hand, horizon=2, ent_coef=0.5)) == -3.0 / 2 - 0.5 * 1.5 / 2


def test_shac_window_one_step_on_a_gridworld_is_the_lookahead() -> None:
    """One step of ``argmax`` from EmptyRoom's start cell 0 with a linear critic: J = r + gamma V(s') exactly, and
    dJ/dlogits = J^T (r_a + gamma V(s'_a)) with J the softmax Jacobian (up and left stay in cell 0, right -> 1,
    down -> 5; every move costs 0.01)."""
    gamma = 0.9
    twin = envs.make_differentiable(EMPTY)
    env = gym.make(EMPTY)
    policy = GumbelPolicy(env.observation_space, env.action_space, net_arch=(), estimator="argmax")
    env.close()
    critic = mlp(twin.obs_dim, (), 1, "tanh", 0.0)
    values = torch.linspace(-0.5, 0.7, 25)
    with torch.no_grad():
        critic[0].weight.copy_(values[None, :])
        critic[0].bias.fill_(0.05)
        policy.net[0].weight.normal_(generator=torch.Generator().manual_seed(1))
    state = twin.reset(1, generator=torch.Generator().manual_seed(0))
    assert state.dist[0, 0] == 1
    kw = dict(horizon=1, actor_horizon=1, gamma=gamma, tau=1.0, estimator="argmax")
    w = shac_window(policy, twin, state, critic, **kw)
    logits = policy.net[0].weight[:, 0].detach() + policy.net[0].bias.detach()
    cell = [0, 1, 5, 0][int(logits.argmax())]
    v_next = critic(torch.nn.functional.one_hot(torch.tensor([cell]), 25).float()).squeeze(-1)
    assert torch.equal(w.objective, torch.tensor([-0.01]) + torch.tensor(gamma) * v_next.detach())
    (grad,) = torch.autograd.grad(w.objective.sum(), policy.net[0].bias)
    lookahead = -0.01 + gamma * (values[[0, 1, 5, 0]] + 0.05)
    p = torch.softmax(logits, -1)
    assert torch.allclose(grad, (torch.diag(p) - torch.outer(p, p)) @ lookahead, atol=1e-7)


def test_critic_loss_by_hand() -> None:
    critic = mlp(2, (), 1, "tanh", 1.0)
    with torch.no_grad():
        critic[0].weight.copy_(torch.tensor([[1.0, 2.0]]))
        critic[0].bias.fill_(0.5)
    obs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    targets = torch.tensor([0.0, 1.0, 3.5])
    loss = critic_loss(critic, obs, targets)  # V = 1.5, 2.5, 3.5: residuals 1.5, 1.5, 0
    assert float(loss.detach()) == 1.5
    loss.backward()
    # d/dw mean(res^2) = 2/3 * sum(res * obs); d/db = 2/3 * sum(res)
    assert critic[0].weight.grad.tolist() == [[1.0, 1.0]] and critic[0].bias.grad.tolist() == [2.0]


def test_uneven_actor_horizon_cuts_at_the_window_end_too() -> None:
    """horizon 5, actor_horizon 2: the state is detached at steps 0, 2 and 4, and the carried state has no graph."""
    agent = agents.make_agent("st-gumbel", "CartPole-v1", seed=0, n_envs=4, horizon=5, actor_horizon=2)
    calls = _spy_twin(agent)
    agent._train_iteration()
    assert [call["state"].x.grad_fn is None for call in calls] == [True, False, True, False, True]
    assert all(t.grad_fn is None and not t.requires_grad for t in agent.twin_state)


def test_registered_once_per_pathwise_estimator_with_its_description() -> None:
    registered = [name for name, info in METHODS.items() if info.agent_cls is PathwiseAgent]
    assert registered == list(PATHWISE_ESTIMATORS)
    for name in PATHWISE_ESTIMATORS:
        assert METHODS[name].description.endswith(Estimator(name).description), name


TRAIN_METRICS = ("actor_loss", "critic_loss", "tau", "learning_rate", "grad_norm", "window_reward", "entropy")


def test_metrics_are_prefixed_and_training_episodes_are_tracked() -> None:
    """Every row has the ``train/`` metrics; ``rollout/`` holds the returns of the twin's finished episodes (env
    rewards, summed here independently from what the twin returned), the last 100 averaged as SB3 does."""
    agent = agents.make_agent("st-gumbel", EMPTY, seed=0, eval_every=10**6)
    rewards, dones = [], []
    step = agent.twin.step

    def spy(state, action, **kwargs):
        out = step(state, action, **kwargs)
        rewards.append(out[1].detach().clone())
        dones.append(out[2] | out[3])
        return out

    agent.twin.step = spy
    agent.learn(2_048)
    running, finished = torch.zeros(agent.config.n_envs), []
    for r, d in zip(rewards, dones, strict=True):
        running = running + r
        finished.extend(running[d].tolist())
        running[d] = 0.0
    row = agent.record[-1]
    assert set(row) >= {f"train/{k}" for k in TRAIN_METRICS} and all(math.isfinite(v) for v in row.values())
    assert row["rollout/episodes"] == len(finished) > 100
    assert row["rollout/ep_rew_mean"] == pytest.approx(np.mean(finished[-100:]), rel=1e-6)
    other = {"rollout/episodes", "rollout/ep_rew_mean", "time/total_timesteps", "time/train_seconds"}
    assert set(row) == {f"train/{k}" for k in TRAIN_METRICS} | other | {"time/iterations"}


@pytest.mark.parametrize(
    ("hp", "name"),
    [
        ({"tau": "hot"}, "tau"),
        ({"tau": -1.0}, "tau"),
        ({"ent_coef": -0.1}, "ent_coef"),
        ({"horizon": 4, "actor_horizon": 5}, "actor_horizon"),
        ({"critic_arch": (64, 0)}, "critic_arch"),
        ({"critic_arch": "64"}, "critic_arch"),
        ({"randomize_start_t": 1}, "randomize_start_t"),
        ({"tau_schedule": 1.0}, "tau_schedule"),
        ({"entropy_coef": 0.1}, "entropy_coef"),
    ],
)
def test_bad_hyperparameters_are_refused_by_name(hp: dict, name: str) -> None:
    with pytest.raises(ValueError, match=f"hyperparameter.* {name}\\b"):
        agents.make_agent("st-gumbel", EMPTY, **hp)


def test_shac_window_bonus_adds_the_next_cells_bonus_with_its_gradient() -> None:
    """With a per-cell ``bonus`` the one-step objective from EmptyRoom's start is ``r + b(s') + gamma V(s')``
    and its gradient is the softmax Jacobian times ``r_a + b(s'_a) + gamma V(s'_a)`` (cells as in the test
    above)."""
    gamma = 0.9
    twin = envs.make_differentiable(EMPTY)
    env = gym.make(EMPTY)
    policy = GumbelPolicy(env.observation_space, env.action_space, net_arch=(), estimator="argmax")
    env.close()
    critic = mlp(twin.obs_dim, (), 1, "tanh", 0.0)  # V = 0
    with torch.no_grad():
        policy.net[0].weight.normal_(generator=torch.Generator().manual_seed(1))
    bonus = torch.linspace(0.0, 0.48, 25)
    state = twin.reset(1, generator=torch.Generator().manual_seed(0))
    kw = dict(horizon=1, actor_horizon=1, gamma=gamma, tau=1.0, estimator="argmax")
    plain = shac_window(policy, twin, state, critic, **kw)
    w = shac_window(policy, twin, state, critic, bonus=bonus, **kw)
    logits = policy.net[0].weight[:, 0].detach() + policy.net[0].bias.detach()
    cell = [0, 1, 5, 0][int(logits.argmax())]
    assert torch.equal(w.rewards, plain.rewards + bonus[cell])
    assert torch.equal(w.env_rewards, plain.env_rewards)  # the episode returns stay the environment's own
    (grad,) = torch.autograd.grad(w.objective.sum(), policy.net[0].bias)
    p = torch.softmax(logits, -1)
    assert torch.allclose(grad, (torch.diag(p) - torch.outer(p, p)) @ (-0.01 + bonus[[0, 1, 5, 0]]), atol=1e-7)


def test_exploration_bonus_counts_visits_resumes_exactly_and_is_refused_without_cells(tmp_path) -> None:
    kw = dict(seed=2, n_envs=8, horizon=8, eval_every=320, explore_bonus=1.0)
    full = agents.make_agent("relaxed", EMPTY, **kw).learn(1_280)
    # Expected visits: one unit per (step, env) of every window; the reward unit is the first window's RMS.
    assert math.isclose(float(full.visits.sum()), 1_280, rel_tol=1e-5)
    assert 0.009 < float(full.reward_unit) < 1.0  # EmptyRoom: -0.01 per step, 1 at the goal
    assert any(row.get("train/window_reward", 0) > 0 for row in full.record)  # the bonus outweighs the step cost
    half = agents.make_agent("relaxed", EMPTY, **kw).learn(640)
    resumed = agents.Agent.load(half.save(tmp_path / "ckpt.pt"), device="cpu")
    resumed.learn(1_280)
    assert _strip_wall(resumed.record) == _strip_wall(full.record)
    _assert_same_weights(resumed, full)
    assert torch.equal(resumed.visits, full.visits)
    with pytest.raises(ValueError, match="explore_bonus needs a twin with cells to count"):
        agents.make_agent("st-gumbel", "CartPole-v1", explore_bonus=0.5)
    with pytest.raises(ValueError, match="explore_bonus"):
        agents.make_agent("st-gumbel", EMPTY, explore_bonus=-1.0)
