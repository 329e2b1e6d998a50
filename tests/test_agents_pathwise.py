"""Tests of the pathwise twin agents (``agents.pathwise``): learning, estimator wiring, truncated backprop,
determinism, exact resume and refusals."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import agents
from agents.callbacks import StopTrainingOnSolved
from agents.hyperparams import PATHWISE
from agents.pathwise import PathwiseAgent, lambda_returns
from agents.registry import METHODS

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
    return [{k: v for k, v in row.items() if k != "wall_s"} for row in record]


def _assert_same_weights(a: PathwiseAgent, b: PathwiseAgent) -> None:
    for module_a, module_b in ((a.policy, b.policy), (a.critic, b.critic)):
        sa, sb = module_a.state_dict(), module_b.state_dict()
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("method", PATHWISE)
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


def test_lambda_returns_by_hand() -> None:
    """Two envs, three steps, gamma 0.5, lambda 0.5. Env 0 terminates at t=1; env 1 is truncated at t=0."""
    r = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    v = torch.tensor([[10.0, 20.0], [30.0, 40.0], [50.0, 60.0]])
    term = torch.tensor([[False, False], [True, False], [False, False]])
    done = torch.tensor([[False, True], [True, False], [False, False]])
    g = lambda_returns(r, v, term, done, gamma=0.5, lam=0.5)
    # env 0: G2 = 5 + .5*50 = 30; G1 = 3 (terminated); G0 = 1 + .5*(.5*10 + .5*3) = 4.25
    # env 1: G2 = 6 + .5*60 = 36; G1 = 4 + .5*(.5*40 + .5*36) = 23; G0 = 2 + .5*20 = 12 (truncated: V only)
    expected = torch.tensor([[4.25, 12.0], [3.0, 23.0], [30.0, 36.0]])
    assert torch.allclose(g, expected)


def test_registry_and_refusals() -> None:
    for method in PATHWISE:
        assert METHODS[method].agent_cls is PathwiseAgent and METHODS[method].needs_twin
    with pytest.raises(ValueError, match="differentiable twin") as info:
        agents.make_agent("st-gumbel", "FrozenLake-v1")
    message = str(info.value)
    assert "methods that work on 'FrozenLake-v1'" in message
    listed = message.split("methods that work on 'FrozenLake-v1': ")[1].split(", ")
    assert sorted(listed) == sorted(name for name, info in METHODS.items() if not info.needs_twin)
    with pytest.raises(ValueError, match="hyperparameter learning_rate"):
        agents.make_agent("st-gumbel", EMPTY, learning_rate=-1e-3)
    with pytest.raises(ValueError, match="hyperparameter tau_schedule.*tau must be a finite number > 0"):
        agents.make_agent("relaxed", EMPTY, tau_schedule={"kind": "constant", "tau": 0.0})
    with pytest.raises(ValueError, match="tau_end"):
        agents.make_agent("relaxed", EMPTY, tau_schedule={"kind": "linear", "tau0": 1.0, "tau_end": -0.5})
    with pytest.raises(ValueError, match="hyperparameter gamma"):
        agents.make_agent("argmax", "CartPole-v1", gamma=1.0)


def test_temperature_follows_its_schedule_in_env_steps() -> None:
    schedule = {"kind": "linear", "tau0": 2.0, "tau_end": 1.0, "steps": 256}
    agent = agents.make_agent("st-gumbel", EMPTY, seed=0, n_envs=8, horizon=8, tau_schedule=schedule, eval_every=10**6)
    agent.learn(512)
    taus = [row["tau"] for row in agent.record]
    # Iteration i starts at 64 * i env steps: tau = 2 - 64 i / 256 until step 256, then 1.
    assert taus == pytest.approx([2.0, 1.75, 1.5, 1.25, 1.0, 1.0, 1.0, 1.0])
    assert all(row["env_steps"] == 64 * (i + 1) for i, row in enumerate(agent.record))


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
        entropy_coef=0.0,
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
