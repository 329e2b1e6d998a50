"""Tests of the model-based agents (``agents.model_based``): the pure losses by hand, gradients through the model
(pathwise) or not (REINFORCE), honest step counting, learning a small gridworld, determinism, exact resume and
refusals."""

from __future__ import annotations

import math

import pytest
import torch

import agents
from agents.callbacks import StopTrainingOnSolved
from agents.model_based import (
    MODEL_ESTIMATORS,
    ModelBasedAgent,
    continuation_weights,
    imagination_lambda_returns,
    log_barrier,
    normalised_advantages,
    reinforce_imagination_loss,
    weighted_critic_loss,
)
from agents.registry import METHODS
from agents.returns import lambda_returns
from agents.world_model import CountModel, EnsembleModel
from gumbel_rl.estimators import PATHWISE_ESTIMATORS
from gumbel_rl.policy import mlp

EMPTY = "gumbel_rl/EmptyRoom-5x5-v0"
METHOD_NAMES = [e + "-model" for e in MODEL_ESTIMATORS]


def _strip_wall(record: list[dict]) -> list[dict]:
    timed = {"time/train_seconds", "time/imagination_seconds"}
    return [{k: v for k, v in row.items() if k not in timed} for row in record]


def _assert_same_state(a: ModelBasedAgent, b: ModelBasedAgent) -> None:
    for module_a, module_b in ((a.policy, b.policy), (a.critic, b.critic), (a.model, b.model)):
        sa, sb = module_a.state_dict(), module_b.state_dict()
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k


# ---- the pure functions ----------------------------------------------------------------------------------------


def test_imagination_lambda_returns_is_lambda_returns_for_hard_continuations() -> None:
    g = torch.Generator().manual_seed(0)
    rewards, next_values = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    ended = torch.rand(7, 5, generator=g) < 0.3
    for lam in (0.0, 0.6, 1.0):
        got = imagination_lambda_returns(rewards, next_values, (~ended).float(), 0.9, lam)
        assert torch.allclose(got, lambda_returns(rewards, next_values, ended, ended, 0.9, lam), atol=1e-6)


def test_imagination_lambda_returns_with_soft_continuation_by_hand() -> None:
    """Two steps, gamma 1/2, lambda 1/2: G_1 = r_1 + g c_1 V_2; G_0 = r_0 + g c_0 ((1 - l) V_1 + l G_1)."""
    r, v, c = torch.tensor([[1.0], [2.0]]), torch.tensor([[4.0], [8.0]]), torch.tensor([[0.5], [0.25]])
    g1 = 2.0 + 0.5 * 0.25 * 8.0
    g0 = 1.0 + 0.5 * 0.5 * (0.5 * 4.0 + 0.5 * g1)
    assert imagination_lambda_returns(r, v, c, 0.5, 0.5).flatten().tolist() == [g0, g1]


def test_continuation_weights_and_weighted_critic_loss_by_hand() -> None:
    c = torch.tensor([[0.5, 1.0], [0.5, 0.0], [1.0, 1.0]])
    assert continuation_weights(c).tolist() == [[1.0, 1.0], [0.5, 1.0], [0.25, 0.0]]
    critic = mlp(1, (), 1, "tanh", 1.0)
    with torch.no_grad():
        critic[0].weight.fill_(2.0)
        critic[0].bias.fill_(1.0)
    obs, targets, weights = torch.tensor([[1.0], [0.0]]), torch.tensor([0.0, 3.0]), torch.tensor([0.5, 1.0])
    assert float(weighted_critic_loss(critic, obs, targets, weights).detach()) == (0.5 * 9.0 + 1.0 * 4.0) / 2


def test_normalised_advantages_by_hand() -> None:
    returns = torch.linspace(0.0, 10.0, 101)
    values = torch.zeros(101)
    # P95 - P5 of 0, 0.1, ..., 10 is 9.5 - 0.5 = 9
    assert torch.allclose(normalised_advantages(returns, values), returns / 9.0, atol=1e-6)
    small = torch.tensor([0.0, 0.1, 0.2])
    assert torch.equal(normalised_advantages(small, torch.zeros(3)), small)  # a spread below 1 is not blown up


def test_reinforce_imagination_loss_gradient_is_the_score_function() -> None:
    """d/d logits of -w [log pi(a) A + c H] is -w (A (e_a - pi) + c dH/dlogits), / (T B); checked numerically."""
    logits = torch.tensor([[[0.3, -0.2, 0.1]], [[0.0, 0.5, -1.0]]], requires_grad=True)
    actions = torch.tensor([[[0.0, 1.0, 0.0]], [[1.0, 0.0, 0.0]]])
    adv, w = torch.tensor([[2.0], [-1.0]]), torch.tensor([[1.0], [0.5]])
    reinforce_imagination_loss(logits, actions, adv, w, ent_coef=0.0).backward()
    pi = torch.softmax(logits.detach(), -1)
    expected = -(w * adv).unsqueeze(-1) * (actions - pi) / 2
    assert torch.allclose(logits.grad, expected, atol=1e-6)
    # the entropy term pushes towards uniform: its gradient at logits (0, 0, 0) is zero
    flat = torch.zeros(1, 1, 3, requires_grad=True)
    reinforce_imagination_loss(
        flat, torch.eye(3)[:1].view(1, 1, 3), torch.zeros(1, 1), torch.ones(1, 1), 1.0
    ).backward()
    assert torch.allclose(flat.grad, torch.zeros(1, 1, 3), atol=1e-7)


def test_log_barrier_gradient_does_not_vanish_at_a_saturated_policy() -> None:
    """d/d z_a of mean_{s,a} log pi(a|s) is (1/n - pi(a|s)) / S (S states): at a policy with pi(a|s) ~ 1e-9 the
    barrier still pushes that logit up by about 1/(n S), where the entropy's push is below 1e-7."""
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [10.0, -10.0, 0.0, 2.0]], requires_grad=True)
    value_at = log_barrier(logits)
    pi = torch.softmax(logits.detach(), -1)
    by_hand = float(torch.log_softmax(logits.detach().double(), -1).mean())
    assert float(value_at.detach()) == pytest.approx(by_hand, abs=1e-5)
    value_at.backward()
    assert torch.allclose(logits.grad, (0.25 - pi) / 2, atol=1e-7)
    assert float(logits.grad[1, 1]) == pytest.approx(0.125, abs=1e-6)  # pi = 1.7e-9, pushed up by 1 / (4 * 2)
    flat = torch.zeros(1, 4, requires_grad=True)
    log_barrier(flat).backward()
    assert torch.allclose(flat.grad, torch.zeros(1, 4), atol=1e-8)  # the uniform policy is its maximiser
    saturated = logits.detach().clone().requires_grad_(True)
    p = torch.softmax(saturated, -1)
    (-(p * p.log()).sum(-1).mean()).backward()
    assert abs(float(saturated.grad[1, 1])) < 1e-7


# ---- gradients through the model -------------------------------------------------------------------------------


def _spy_model_actions(agent: ModelBasedAgent) -> list[torch.Tensor]:
    """Wrap ``agent.model.step`` to record every action fed to the model."""
    fed: list[torch.Tensor] = []
    step = agent.model.step

    def spy(state, action, generator=None):
        fed.append(action)
        return step(state, action, generator)

    agent.model.step = spy  # type: ignore[method-assign]
    return fed


@pytest.mark.parametrize("env_id", [EMPTY, "CartPole-v1"])
def test_reinforce_model_passes_no_gradient_through_the_model_and_st_gumbel_model_does(env_id: str) -> None:
    """One imagined update of each: ``st-gumbel-model`` feeds the model one-hot actions that carry the policy's
    gradient (a model step alone, differentiated, reaches the policy's parameters); ``reinforce-model`` feeds
    actions without a graph, so the policy's gradient comes only from the log-probabilities."""
    for method, pathwise in (("st-gumbel-model", True), ("reinforce-model", False)):
        agent = agents.make_agent(method, env_id, seed=0, learning_starts=64, imagined_envs=8, eval_every=10**6)
        agent.learn(64)
        fed = _spy_model_actions(agent)
        agent._imagine_and_update(1.0)
        assert len(fed) == agent.config.imagination_horizon
        assert all(bool(((a == 0) | (a == 1)).all()) for a in fed)  # hard one-hots for both
        assert all(a.requires_grad == pathwise for a in fed), method
        # A model step alone: d(next observation) / d(policy parameters)
        starts = agent.buffer.sample(8, agent.generator).obs
        state = agent.model.states_from(starts, agent.generator)
        obs = agent.model.observe(state)
        action, _ = agent.policy.act(obs, tau=1.0, estimator=agent.estimator)
        nxt, *_ = agent.model.step(state, action)
        out = agent.model.observe(nxt).sum() + agent.model.continuation(nxt).sum()
        agent.policy.zero_grad()
        if pathwise:
            out.backward(inputs=list(agent.policy.parameters()))
            assert sum(float(p.grad.abs().sum()) for p in agent.policy.parameters()) > 0
        elif out.requires_grad:  # through the model's own parameters only
            grads = torch.autograd.grad(out, list(agent.policy.parameters()), allow_unused=True)
            assert all(g is None for g in grads)
        agent.close()


# ---- the agent -------------------------------------------------------------------------------------------------


def test_registered_for_every_pathwise_estimator_and_reinforce() -> None:
    assert set(MODEL_ESTIMATORS) == {*PATHWISE_ESTIMATORS, "reinforce"}
    for name in METHOD_NAMES:
        assert METHODS[name].agent_cls is ModelBasedAgent and not METHODS[name].needs_twin
    with pytest.raises(ValueError, match="unknown method 'nope-model'"):
        agents.make_agent("nope-model", EMPTY)


def test_the_model_follows_the_observation_space() -> None:
    with agents.make_agent("st-gumbel-model", EMPTY, seed=0) as a:
        assert isinstance(a.model, CountModel) and a.model.obs_dim == 25 and a.model_opt is None
    with agents.make_agent("st-gumbel-model", "CartPole-v1", seed=0, model_ensemble=3) as b:
        assert isinstance(b.model, EnsembleModel) and b.model.ensemble == 3


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_each_method_solves_empty_room(method: str) -> None:
    """With the generic defaults (nothing tuned for the map), every method reaches the 100-episode threshold of
    EmptyRoom-5x5 within 6,000 real env steps (seed 0, measured before the learned entropy weight: gumbel-rao 516,
    reinforce 260, relaxed, st-gumbel and reinmax 772, argmax 1,284)."""
    agent = agents.make_agent(method, EMPTY, seed=0, eval_every=256)
    agent.learn(6_000, callback=StopTrainingOnSolved())
    assert agent.solved, (method, agent.record[-1])
    assert agent.evaluate(episodes=10, seed=123).mean == pytest.approx(0.92, abs=1e-6)
    agent.close()


def test_learned_entropy_weight_and_reward_unit() -> None:
    """``ent_coef="auto"``: alpha starts at 0.1 and moves by SAC's temperature loss towards the target entropy
    (``target_entropy * log n``); a fixed number stays fixed. The bonus weight is ``model_bonus`` times the RMS of
    the random phase's rewards (EmptyRoom: -0.01 per step, so 0.1 * 0.01)."""
    kw = dict(learning_starts=40, imagined_envs=16, eval_every=10**6)
    a = agents.make_agent("st-gumbel-model", EMPTY, seed=0, **kw).learn(200)
    assert a.learn_alpha and a.target_entropy == pytest.approx(0.5 * math.log(4))
    alphas = [row["train/ent_coef"] for row in a.record if "train/ent_coef" in row]
    assert alphas[0] == pytest.approx(0.1) and alphas[-1] != pytest.approx(0.1)
    entropy = [row["train/entropy"] for row in a.record if "train/entropy" in row]
    # Adam's first steps move log(alpha) by about the learning rate, against the sign of H - target.
    step = math.log(alphas[1] / alphas[0])
    assert step == pytest.approx(-0.01 * math.copysign(1, entropy[0] - a.target_entropy), rel=1e-4)
    assert a.reward_unit == pytest.approx(a.buffer.reward[:40].pow(2).mean().sqrt().item())
    assert a.reward_unit == pytest.approx(0.01) and a.model.bonus_coef == pytest.approx(0.1 * 0.01)
    a.close()
    b = agents.make_agent("reinforce-model", EMPTY, seed=0, ent_coef=0.02, **kw).learn(120)
    assert not b.learn_alpha and b.alpha_opt is None
    fixed = [row["train/ent_coef"] for row in b.record if "train/ent_coef" in row]
    assert fixed and all(x == pytest.approx(0.02) for x in fixed)
    b.close()


def test_counting_is_honest() -> None:
    """Env steps are real steps only; imagined steps and seconds are reported apart."""
    cfg = dict(n_envs=2, train_freq=3, learning_starts=12, imagined_envs=5, imagination_horizon=4, gradient_steps=2)
    agent = agents.make_agent("relaxed-model", "CartPole-v1", seed=1, eval_every=10**6, **cfg)
    agent.learn(60)
    assert agent.num_env_steps == 60 and agent.iterations == 10
    assert agent.buffer.size == 60
    updating = [row for row in agent.record if row["time/total_timesteps"] >= 12]
    assert len(updating) == 9
    assert agent.imagined_steps == 9 * 2 * 5 * 4
    last = agent.record[-1]
    assert last["train/imagined_steps"] == agent.imagined_steps
    assert 0 < last["time/imagination_seconds"] <= last["time/train_seconds"]
    assert {"train/actor_loss", "train/critic_loss", "train/model_loss", "train/entropy", "train/grad_norm"} <= set(
        last
    )
    assert all(math.isfinite(v) for v in last.values())
    agent.close()
    agent.close()  # idempotent


@pytest.mark.parametrize(
    ("method", "env_id"), [("st-gumbel-model", "CartPole-v1"), ("reinforce-model", "FrozenLake-v1")]
)
def test_same_seed_same_run(method: str, env_id: str) -> None:
    kw = dict(learning_starts=40, imagined_envs=16, eval_every=100)
    a = agents.make_agent(method, env_id, seed=7, **kw).learn(200)
    b = agents.make_agent(method, env_id, seed=7, **kw).learn(200)
    c = agents.make_agent(method, env_id, seed=8, **kw).learn(200)
    assert _strip_wall(a.record) == _strip_wall(b.record)
    _assert_same_state(a, b)
    assert _strip_wall(a.record) != _strip_wall(c.record)


@pytest.mark.parametrize(("method", "env_id"), [("st-gumbel-model", "CartPole-v1"), ("gumbel-rao-model", EMPTY)])
def test_resume_is_exact(method: str, env_id: str, tmp_path) -> None:
    kw = dict(seed=4, n_envs=2, learning_starts=40, imagined_envs=16, eval_every=80)
    full = agents.make_agent(method, env_id, **kw).learn(320)
    half = agents.make_agent(method, env_id, **kw).learn(160)
    path = half.save(tmp_path / "ckpt.pt")
    resumed = agents.Agent.load(path, device="cpu")
    assert isinstance(resumed, ModelBasedAgent) and resumed.num_env_steps == 160
    resumed.learn(320)
    assert _strip_wall(resumed.record) == _strip_wall(full.record)
    _assert_same_state(resumed, full)
    assert resumed.imagined_steps == full.imagined_steps
    assert resumed.envs.returns.state_dict()["recent"] == full.envs.returns.state_dict()["recent"]


@pytest.mark.parametrize(
    ("hp", "name"),
    [
        ({"imagination_horizon": 0}, "imagination_horizon"),
        ({"imagined_envs": 2.5}, "imagined_envs"),
        ({"imagination_horizon": 4, "actor_horizon": 5}, "actor_horizon"),
        ({"model_arch": ()}, "model_arch"),
        ({"model_activation": "sigmoid"}, "model_activation"),
        ({"model_learning_rate": 0.0}, "model_learning_rate"),
        ({"model_prior": -1.0}, "model_prior"),
        ({"model_bonus": -0.1}, "model_bonus"),
        ({"model_ensemble": 0}, "model_ensemble"),
        ({"learning_starts": -1}, "learning_starts"),
        ({"gamma": 1.0}, "gamma"),
        ({"tau": "hot"}, "tau"),
        ({"critic_arch": (64, 0)}, "critic_arch"),
        ({"horizon": 16}, "horizon"),
        ({"ent_coef": "autox"}, "ent_coef"),
        ({"ent_coef": -0.1}, "ent_coef"),
        ({"target_entropy": 1.5}, "target_entropy"),
        ({"ent_coef_learning_rate": 0.0}, "ent_coef_learning_rate"),
        ({"policy_regulariser": "kl"}, "policy_regulariser"),
    ],
)
def test_bad_hyperparameters_are_refused_by_name(hp: dict, name: str) -> None:
    with pytest.raises(ValueError, match=f"hyperparameter.* {name}\\b"):
        agents.make_agent("st-gumbel-model", EMPTY, **hp)
