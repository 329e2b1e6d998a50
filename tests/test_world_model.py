"""Tests of the learned models (``agents.world_model``): accuracy against the real dynamics (Gymnasium's CartPole, the
exact tabular model of a gridworld), the protocol, the shared pathwise window, and the exploration bonuses."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs
from agents.pathwise import shac_window
from agents.world_model import (
    CountModel,
    EnsembleModel,
    RunningNorm,
    categorical_model_loss,
    ensemble_model_loss,
)
from envs import DifferentiableEnv, TabularModel
from gumbel_rl.policy import GumbelPolicy, mlp

EMPTY = "gumbel_rl/EmptyRoom-5x5-v0"


def _random_transitions(env_id: str, n: int, seed: int, **kwargs) -> tuple[torch.Tensor, ...]:
    """``n`` transitions of uniformly random actions in the real env: obs, action, reward, next_obs, terminated."""
    env = gym.make(env_id, **kwargs)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    rows = []
    for _ in range(n):
        a = int(rng.integers(env.action_space.n))
        nxt, r, term, trunc, _ = env.step(a)
        rows.append((obs, a, r, nxt, term))
        obs = nxt
        if term or trunc:
            obs, _ = env.reset(seed=int(rng.integers(2**31)))
    env.close()
    o, a, r, o2, t = (np.array(x) for x in zip(*rows, strict=True))
    dtype = torch.float32 if o.dtype.kind == "f" else torch.long
    return (
        torch.tensor(o, dtype=dtype),
        torch.tensor(a),
        torch.tensor(r, dtype=torch.float32),
        torch.tensor(o2, dtype=dtype),
        torch.tensor(t, dtype=torch.float32),
    )


def _fit(model: EnsembleModel, data: tuple[torch.Tensor, ...], steps: int, seed: int = 0) -> dict[str, float]:
    """Adam on ensemble_model_loss, each member on its own random minibatch of 128."""
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    eye = torch.eye(model.n_actions)
    n = data[0].shape[0]
    parts: dict[str, torch.Tensor] = {}
    for _ in range(steps):
        idx = torch.randint(n, (model.ensemble, 128), generator=g)
        obs, act, rew, nxt, term = (x[idx] for x in data)
        loss, parts = ensemble_model_loss(model, obs, eye[act], rew, nxt, term)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {k: float(v) for k, v in parts.items()}


def test_running_norm_is_the_mean_and_variance_of_everything_seen() -> None:
    g = torch.Generator().manual_seed(0)
    chunks = [torch.randn(n, 3, generator=g) * 2 + 1 for n in (5, 17, 1, 40)]
    norm = RunningNorm(3)
    assert torch.equal(norm.std, torch.ones(3)) and torch.equal(norm.mean, torch.zeros(3))
    for c in chunks:
        norm.update(c)
    every = torch.cat(chunks)
    assert torch.allclose(norm.mean, every.mean(0), atol=1e-5)
    assert torch.allclose(norm.var, every.var(0, unbiased=False), atol=1e-5)
    assert torch.allclose(norm.denormalise(norm.normalise(every)), every, atol=1e-5)


def test_models_implement_the_protocol() -> None:
    for model in (EnsembleModel(4, 2, ensemble=2, hidden=(8,)), CountModel(25, 4)):
        assert isinstance(model, DifferentiableEnv)
        assert model.max_episode_steps is None
        state = model.reset(3, generator=torch.Generator().manual_seed(0))
        assert torch.equal(state.t, torch.zeros(3, dtype=torch.long))
        nxt, r, term, trunc = model.step(state, torch.eye(model.n_actions)[[0, 1, 0]])
        assert r.shape == (3,) and not term.any() and not trunc.any() and torch.equal(nxt.t, state.t + 1)
        assert model.observe(nxt).shape == (3, model.obs_dim) and model.continuation(nxt).shape == (3,)


def test_ensemble_learns_cartpole_from_random_transitions() -> None:
    """Two members of 64 x 64 fitted for 600 steps on 3,000 random transitions of Gymnasium's CartPole predict 1,000
    held-out transitions: per dimension, the RMSE of the next observation is below 5% of the standard deviation of
    the one-step change, the reward (always 1) within 1e-3, and the termination classifier separates: mean
    continuation < 0.35 on the terminal transitions and > 0.97 on the others."""
    torch.manual_seed(0)
    train, test = _random_transitions("CartPole-v1", 3000, 0), _random_transitions("CartPole-v1", 1000, 1)
    model = EnsembleModel(4, 2, ensemble=2, hidden=(64, 64))
    model.add_transitions(*train)
    _fit(model, train, 600)
    obs, act, rew, nxt, term = test
    with torch.no_grad():
        pred, r, _, _ = model.step(model.states_from(obs), torch.eye(2)[act])
    rmse = (pred.obs - nxt).pow(2).mean(0).sqrt()
    assert (rmse / (nxt - obs).std(0) < 0.05).all(), rmse
    assert (r - rew).abs().max() < 1e-3
    ended = term.bool()
    assert ended.sum() > 20
    assert pred.cont[ended].mean() < 0.35 and pred.cont[~ended].mean() > 0.97


def test_ensemble_disagreement_shrinks_with_data() -> None:
    """The same three members after 300 steps on 64 random CartPole transitions, then after 300 more on 3,000: the
    disagreement bonus on held-out random transitions falls by more than half."""
    torch.manual_seed(0)
    test = _random_transitions("CartPole-v1", 500, 1)
    model = EnsembleModel(4, 2, ensemble=3, hidden=(64, 64))
    few, many = _random_transitions("CartPole-v1", 64, 2), _random_transitions("CartPole-v1", 3000, 3)
    model.add_transitions(*many)  # fixed normalisation, so that only the data changes

    def bonus() -> float:
        with torch.no_grad():
            nxt, *_ = model.step(model.states_from(test[0]), torch.eye(2)[test[1]])
        return float(nxt.bonus.mean())

    _fit(model, few, 300)
    after_few = bonus()
    _fit(model, many, 300)
    assert bonus() < 0.5 * after_few


def test_count_model_matches_the_exact_tabular_model() -> None:
    """FrozenLake 4x4 (slippery) after 30,000 random transitions, which try every (cell, action) of the 11 live cells
    at least 61 times: the total-variation distance between the model's next-cell distribution and
    ``TabularModel``'s is below ``2 / sqrt(N(s, a))`` for every pair (the sampling error; at most 1.76 / sqrt(N)
    here) and below 0.05 where ``N >= 300``; the expected reward is within ``2 / sqrt(N)`` of the exact one; the
    estimates are
    what the counts say."""
    data = _random_transitions("FrozenLake-v1", 30_000, 0)
    exact = TabularModel.from_env(gym.make("FrozenLake-v1"))
    model = CountModel(16, 4, prior=0.1)
    model.add_transitions(*data)
    n = model.visits().double()
    live = ~exact.terminal[:, None].expand(16, 4)
    assert int(live.sum()) == 44 and float(n[live].min()) >= 50
    tv = 0.5 * (model.transition_probs().double() - exact.P).abs().sum(-1)
    assert (tv[live] < 2.0 / n[live].sqrt()).all()
    assert float(tv[live & (n >= 300)].max()) < 0.05
    assert ((model.expected_reward().double() - exact.R).abs()[live] < 2.0 / n[live].sqrt()).all()
    # the estimates by hand for one pair
    s, a = 0, 1
    counts = torch.zeros(16)
    for o, act, o2 in zip(data[0].tolist(), data[1].tolist(), data[3].tolist(), strict=True):
        if (o, act) == (s, a):
            counts[o2] += 1
    counts[s] += 0.1
    assert torch.allclose(model.transition_probs()[s, a], counts / counts.sum())
    # the counts minimise the negative log-likelihood: shifting mass away raises it
    nll = categorical_model_loss(model, data[0], data[1], data[3])
    model.counts[s, a, 4] += 50.0
    assert categorical_model_loss(model, data[0], data[1], data[3]) > nll


def test_count_bonus_shrinks_with_visits() -> None:
    model = CountModel(4, 2)
    assert torch.equal(model.count_bonus(), torch.ones(4, 2))
    for k in range(1, 4):
        model.add_transitions(torch.tensor([1]), torch.tensor([0]), torch.zeros(1), torch.tensor([2]), torch.zeros(1))
        assert float(model.count_bonus()[1, 0]) == pytest.approx(1 / (k + 1))
    assert float(model.count_bonus()[1, 1]) == 1.0


def test_count_model_step_removes_the_terminating_mass() -> None:
    """Cell 0, action 0: to cell 1 (reward 0) twice, to cell 2 terminated (reward 1) twice, prior 0: the step pays
    the expected reward 0.5, continues with probability 0.5 and then sits in cell 1 for sure."""
    model = CountModel(3, 1, prior=1e-9)
    model.add_transitions(
        torch.tensor([0, 0, 0, 0]),
        torch.zeros(4, dtype=torch.long),
        torch.tensor([0.0, 1.0, 0.0, 1.0]),
        torch.tensor([1, 2, 1, 2]),
        torch.tensor([0.0, 1.0, 0.0, 1.0]),
    )
    nxt, reward, _, _ = model.step(model.states_from(torch.tensor([0])), torch.ones(1, 1))
    assert float(reward) == pytest.approx(0.5)
    assert float(model.continuation(nxt)) == pytest.approx(0.5)
    assert torch.allclose(nxt.dist, torch.tensor([[0.0, 1.0, 0.0]]))


def _empty_room_count_model() -> CountModel:
    """A count model that has seen every transition of EmptyRoom once (the map is deterministic)."""
    exact = TabularModel.from_env(gym.make(EMPTY))
    model = CountModel(25, 4, prior=1e-6)
    for s in range(25):
        if exact.terminal[s]:
            continue
        for a in range(4):
            s2 = int(exact.P[s, a].argmax())
            r, term = float(exact.R[s, a]), float(exact.terminal[s2])
            model.add_transitions(
                torch.tensor([s]), torch.tensor([a]), torch.tensor([r]), torch.tensor([s2]), torch.tensor([term])
            )
    return model


@pytest.mark.parametrize(("start", "horizon"), [(0, 4), (23, 1)])
def test_the_same_shac_window_runs_on_the_twin_and_on_a_learned_model(start: int, horizon: int) -> None:
    """``shac_window`` on the exact twin of EmptyRoom and on a count model that has seen each transition once, from
    the same cell with the same greedy (argmax) policy and critic: the same observations, actions and rewards, and
    objectives within 1e-4 (the model's 1e-6 prior on staying put). From cell 23 the step enters the goal: the twin
    reports ``terminated``, the model a continuation of ~0, and both objectives are the goal reward alone."""
    twin = envs.make_differentiable(EMPTY)
    model = _empty_room_count_model()
    space = gym.spaces.Discrete(25)
    torch.manual_seed(0)
    policy = GumbelPolicy(space, gym.spaces.Discrete(4), net_arch=(16,), estimator="argmax")
    with torch.no_grad():
        policy.net[-1].bias.copy_(torch.tensor([0.0, 3.0, 2.0, 0.0]))  # mostly right, then down
    critic = mlp(25, (), 1, "tanh", 1.0)
    kw = dict(horizon=horizon, actor_horizon=0, gamma=0.9, tau=1.0, estimator="argmax")
    start_twin = twin.reset(2)._replace(dist=torch.eye(25)[[start, start]])
    w_twin = shac_window(policy, twin, start_twin, critic, **kw)
    w_model = shac_window(policy, model, model.states_from(torch.tensor([start, start])), critic, **kw)
    assert torch.allclose(w_twin.observations, w_model.observations, atol=1e-5)
    assert torch.equal(w_twin.actions, w_model.actions)
    assert torch.allclose(w_twin.rewards, w_model.rewards, atol=1e-5)
    assert torch.allclose(w_twin.objective, w_model.objective, atol=1e-4)
    assert torch.equal(w_twin.continuation, torch.ones_like(w_twin.continuation))
    if start == 23:
        assert bool(w_twin.terminated.all()) and float(w_model.continuation.max()) < 1e-5
        assert torch.allclose(w_model.objective, torch.full((2,), 0.99), atol=1e-4)
    # and the gradient reaches the policy through both
    for w in (w_twin, w_model):
        policy.zero_grad()
        w.objective.sum().backward(inputs=list(policy.parameters()))
        assert float(policy.net[-1].weight.grad.abs().sum()) > 0
