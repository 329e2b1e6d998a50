"""Tests for the ``<estimator>-critic`` methods (agents/critic.py): the losses alone on hand-computable inputs,
learning, env handling, gradients, determinism, exact resume."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs  # noqa: F401  (registers the gridworlds)
from agents import Agent, StopTrainingOnSolved, make_agent
from agents.critic import (
    CriticAgent,
    EnsembleQ,
    VisitCounts,
    categorical_entropy,
    count_bonus,
    critic_loss,
    n_step_return,
    pathwise_actor_loss,
    policy_value,
    reward_scale,
    simhash,
    soft_q_target,
    temperature_loss,
    untried_bonus,
)
from agents.replay import ReplayBuffer
from gumbel_rl.estimators import PATHWISE_ESTIMATORS, Estimator

EMPTY = "gumbel_rl/EmptyRoom-5x5-v0"
# Small, fast settings for the 5x5 room: updates every 2 env steps, frequent evaluation.
FAST = {"learning_starts": 200, "batch_size": 64, "train_freq": 2, "eval_every": 250, "net_arch": [32]}


class BilinearQ(torch.nn.Module):
    """A tiny hand-set critic ensemble: ``Q_i(s, a) = s^T M_i a`` for each member ``i`` (features (B, d), action
    (B, n) -> (members, B))."""

    def __init__(self, m: torch.Tensor) -> None:
        super().__init__()
        self.m = torch.nn.Parameter(m)  # (members, d, n)

    def forward(self, features: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bd,idn,bn->ib", features, self.m, action)


# Two members, one feature, two actions: on s = 1, Q_1 = (1, 3) and Q_2 = (2, 0), so min_i Q_i = (1, 0).
TWO_CRITICS = torch.tensor([[[1.0, 3.0]], [[2.0, 0.0]]])
PI = torch.tensor([0.25, 0.75])
H_PI = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))  # 0.5623 nats


def test_soft_q_target_by_hand() -> None:
    """y = r + discount (1 - terminated) [sum_a' pi(a') min_i Q_i(s', a') + alpha H(pi)], V = 0.25 * 1 + 0.75 * 0."""
    critic = BilinearQ(TWO_CRITICS.clone())
    logits = PI.log().expand(3, 2)
    reward, discount = torch.tensor([1.0, 1.0, -2.0]), torch.tensor([0.9, 0.9, 0.81])
    terminated, alpha = torch.tensor([0.0, 1.0, 0.0]), torch.tensor(0.5)
    args = (critic, logits, torch.ones(3, 1), reward, discount, terminated, alpha)
    y = soft_q_target(*args, soft=True)
    expected = [1.0 + 0.9 * (0.25 + 0.5 * H_PI), 1.0, -2.0 + 0.81 * (0.25 + 0.5 * H_PI)]
    assert y.tolist() == pytest.approx(expected, rel=1e-6) and not y.requires_grad
    y_hard = soft_q_target(*args, soft=False)
    assert y_hard.tolist() == pytest.approx([1.0 + 0.9 * 0.25, 1.0, -2.0 + 0.81 * 0.25], rel=1e-6)


def test_soft_q_target_matches_a_direct_sum_on_random_inputs() -> None:
    gen = torch.Generator().manual_seed(0)
    members, b, d, n = 3, 5, 4, 3
    critic = BilinearQ(torch.randn(members, d, n, generator=gen))
    f_next, logits = torch.randn(b, d, generator=gen), torch.randn(b, n, generator=gen)
    reward, discount = torch.randn(b, generator=gen), torch.rand(b, generator=gen)
    terminated, alpha = (torch.rand(b, generator=gen) < 0.5).float(), torch.tensor(0.3)
    y = soft_q_target(critic, logits, f_next, reward, discount, terminated, alpha, soft=True)
    for k in range(b):
        pi = torch.softmax(logits[k], -1)
        q_min = torch.stack([f_next[k] @ critic.m[i] for i in range(members)]).amin(0)
        v = (pi * q_min).sum() - 0.3 * (pi * pi.log()).sum()
        assert y[k].item() == pytest.approx((reward[k] + discount[k] * (1 - terminated[k]) * v).item(), abs=1e-5)


def test_critic_loss_by_hand() -> None:
    """Actions (0, 1) on s = 1: Q_1 = (1, 3), Q_2 = (2, 0); y = (0, 1). Loss = 0.5 (1 + 4) / 2 + 0.5 (4 + 1) / 2;
    d loss / d Q_ib = (Q_ib - y_b) / B."""
    critic = BilinearQ(TWO_CRITICS.clone())
    loss, q = critic_loss(critic, torch.ones(2, 1), torch.eye(2), torch.tensor([0.0, 1.0]))
    assert loss.item() == pytest.approx(2.5) and q.tolist() == [[1.0, 3.0], [2.0, 0.0]] and not q.requires_grad
    loss.backward()
    # d Q_ib / d M_i[0, a_b] = 1: the gradient of M_i is ((Q_i0 - y_0) / 2, (Q_i1 - y_1) / 2).
    assert critic.m.grad.tolist() == [[[0.5, 1.0]], [[1.0, -0.5]]]


@pytest.mark.parametrize("estimator", PATHWISE_ESTIMATORS)
def test_pathwise_actor_loss_gradient_reaches_only_the_policy(estimator: str) -> None:
    """The critic's parameters get no gradient (and stay trainable); the logits get one through the action."""
    critic = BilinearQ(TWO_CRITICS.clone())
    logits = torch.tensor([[0.3, -0.2], [1.0, 0.5], [-0.4, 0.0]], requires_grad=True)
    gen = torch.Generator().manual_seed(0)
    loss, h = pathwise_actor_loss(critic, logits, torch.ones(3, 1), estimator, 1.0, 10, gen, torch.tensor(0.0))
    loss.backward()
    assert critic.m.grad is None and critic.m.requires_grad
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert torch.allclose(h, categorical_entropy(logits.detach()))


def test_pathwise_actor_loss_by_hand() -> None:
    """argmax (greedy action, no noise): loss = -mean_b [min_i Q_i(s_b, argmax) + alpha H_b]. With a critic that
    ignores the action the only gradient is the entropy's: -alpha dH/dlogits / B."""
    critic = BilinearQ(TWO_CRITICS.clone())
    logits = torch.stack([PI.log(), PI.log().flip(0)]).requires_grad_(True)  # greedy actions 1 and 0
    loss, h = pathwise_actor_loss(critic, logits, torch.ones(2, 1), "argmax", 1.0, 10, None, torch.tensor(0.5))
    assert h.tolist() == pytest.approx([H_PI, H_PI], rel=1e-6)
    assert loss.item() == pytest.approx(-((0.0 + 0.5 * H_PI) + (1.0 + 0.5 * H_PI)) / 2, rel=1e-6)
    flat = BilinearQ(torch.ones(2, 1, 3))  # Q = 1 for every action
    logits = torch.tensor([[0.3, -0.2, 1.0], [0.0, 2.0, -1.0]], requires_grad=True)
    loss, _ = pathwise_actor_loss(flat, logits, torch.ones(2, 1), "st-gumbel", 1.0, 10, None, torch.tensor(0.5))
    loss.backward()
    x = logits.detach().requires_grad_(True)
    (-0.5 * categorical_entropy(x)).mean().backward()
    assert torch.allclose(logits.grad, x.grad, atol=1e-6)


def test_temperature_loss_gradient_sign() -> None:
    """d loss / d log_alpha = mean H - target: positive above the target (a descent step lowers alpha), negative
    below (raises it); the entropy receives no gradient."""
    for h_value, sign in ((0.6, 1.0), (0.2, -1.0)):
        log_alpha = torch.tensor(math.log(0.1), requires_grad=True)
        h = torch.full((4,), h_value, requires_grad=True)
        temperature_loss(log_alpha, h, 0.4).backward()
        assert log_alpha.grad.item() == pytest.approx(h_value - 0.4) and math.copysign(1.0, log_alpha.grad) == sign
        assert h.grad is None


def test_reward_scale_is_one_over_the_rms() -> None:
    """A -0.01 step cost and a -1 step cost both become -1; all-zero or no rewards leave the unit alone."""
    assert reward_scale(torch.full((50,), -0.01)) == pytest.approx(100.0)
    assert reward_scale(torch.tensor([3.0, -4.0])) == pytest.approx(1 / math.sqrt(12.5))
    assert reward_scale(torch.full((50,), -1.0)) == 1.0
    assert reward_scale(torch.zeros(7)) == 1.0 and reward_scale(torch.zeros(0)) == 1.0


def test_count_bonus_shrinks_as_one_over_sqrt_count() -> None:
    """beta / sqrt(max(N, 1)): unvisited cells get the full beta, then 1/sqrt(N)."""
    bonus = count_bonus(torch.tensor([0, 1, 4, 100], dtype=torch.int32), 2.0)
    assert bonus.tolist() == pytest.approx([2.0, 2.0, 1.0, 0.2]) and bonus.dtype == torch.float32
    assert (bonus.diff() <= 0).all()


def test_simhash_by_hand() -> None:
    """Planes x_0 > 0 (bit 0) and x_1 > 1 (bit 1): the four quadrants around (0, 1) are cells 0-3."""
    planes, offsets = torch.eye(2), torch.tensor([0.0, -1.0])
    x = torch.tensor([[1.0, 2.0], [-1.0, 0.5], [1.0, 0.5], [-1.0, 2.0], [0.9, 2.1]])
    assert simhash(x, planes, offsets).tolist() == [3, 0, 1, 2, 3]


def test_visit_counts_discrete_and_box() -> None:
    """Discrete: each state its own cell. Box: standardised by the fitted statistics, then hashed: an observation
    and a nearby one share a cell; counts and bonus follow; the state dict restores them."""
    cpu = torch.device("cpu")
    grid = VisitCounts(True, 4, bits=8, seed=0, device=cpu)
    grid.add(torch.tensor([0, 0, 2, 0]))
    assert grid.counts.tolist() == [3, 0, 1, 0]
    assert grid.bonus(torch.tensor([0, 1, 2]), 1.0).tolist() == pytest.approx([3**-0.5, 1.0, 1.0])
    box = VisitCounts(False, 3, bits=12, seed=0, device=cpu)
    data = torch.randn(500, 3, generator=torch.Generator().manual_seed(0)) * torch.tensor([1.0, 10.0, 0.1])
    box.fit(data)
    assert torch.allclose(box.std, data.std(0, correction=0)) and box.counts.shape == (4096,)
    x = data[:1]
    for _ in range(4):
        box.add(x)
    assert box.bonus(x + 1e-6 * box.std, 0.5).item() == pytest.approx(0.25)  # 0.5 / sqrt(4), same cell
    assert box.counts.sum().item() == 4
    again = VisitCounts(False, 3, bits=12, seed=0, device=cpu)
    again.load_state_dict(box.state_dict())
    assert torch.equal(again.cells(data), box.cells(data)) and torch.equal(again.counts, box.counts)
    assert len(set(box.cells(data).tolist())) > 50  # the hash spreads the data over many cells


def _chain_buffer() -> ReplayBuffer:
    """One copy, six transitions of a 10-state chain: episode A = (0->1, 1->2 terminated), episode B = (5->6,
    6->7 truncated), episode C = (8->9, 9->3) still running. Reward of slot k: k + 1."""
    buf = ReplayBuffer(16, gym.spaces.Discrete(10), torch.device("cpu"))
    obs, nxt = [0, 1, 5, 6, 8, 9], [1, 2, 6, 7, 9, 3]
    term, done = [0, 1, 0, 0, 0, 0], [0, 1, 0, 1, 0, 0]
    buf.add(np.array(obs), np.zeros(6), np.arange(1.0, 7.0), np.array(nxt), np.array(term), np.array(done))
    return buf


def test_n_step_return_episodic_is_the_buffers_and_continuing_crosses_episode_ends() -> None:
    """gamma 0.5, n = 3, rewards k + 1 at slot k. Episodic: stops at a termination (no bootstrap) or a truncation
    (bootstrap from its final observation), as ReplayBuffer.sample. Continuing: goes on into the next episode and
    never terminates; ending on a done transition whose successor is stored, it bootstraps from the reset
    observation; the newest transitions stop both."""
    buf = _chain_buffer()
    slots = torch.tensor([0, 1, 2, 3, 4, 5])
    rew = lambda j: buf.reward[j]  # noqa: E731
    r, disc, boot, term = n_step_return(buf, slots, 3, 0.5, rew, continuing=False)
    assert r.tolist() == pytest.approx([1 + 0.5 * 2, 2, 3 + 0.5 * 4, 4, 5 + 0.5 * 6, 6])
    assert disc.tolist() == [0.25, 0.5, 0.25, 0.5, 0.25, 0.5]
    assert boot.tolist() == [2, 2, 7, 7, 3, 3] and term.tolist() == [1, 1, 0, 0, 0, 0]
    gen = torch.Generator().manual_seed(3)
    drawn = torch.randint(buf.size, (64,), generator=gen)
    sample = buf.sample(64, torch.Generator().manual_seed(3), 3, 0.5)
    r, disc, boot, term = n_step_return(buf, drawn, 3, 0.5, rew, continuing=False)
    assert torch.equal(r, sample.reward) and torch.equal(disc, sample.discount)
    assert torch.equal(boot, sample.next_obs) and torch.equal(term, sample.terminated)
    r, disc, boot, term = n_step_return(buf, slots, 3, 0.5, rew, continuing=True)
    assert r.tolist() == pytest.approx([1 + 1 + 0.75, 2 + 1.5 + 1, 3 + 2 + 1.25, 4 + 2.5 + 1.5, 5 + 3, 6])
    assert disc.tolist() == [0.125, 0.125, 0.125, 0.125, 0.25, 0.5] and not term.any()
    # slot 0 ends on 5->6 (not done): 6; slot 1 on the truncated 6->7, successor stored: the reset observation 8.
    assert boot.tolist() == [6, 8, 9, 3, 3, 3]


def test_untried_bonus_by_hand() -> None:
    """scale / sqrt(N + 1): the full scale for an untried action, scale / 2 after three tries."""
    u = untried_bonus(torch.tensor([[0, 3], [8, 99]], dtype=torch.int32), 2.0)
    assert u.flatten().tolist() == pytest.approx([2.0, 1.0, 2.0 / 3.0, 0.2]) and u.dtype == torch.float32


def test_visit_counts_pairs() -> None:
    """(cell, action) tries counted per observation cell; restored by the state dict."""
    cpu = torch.device("cpu")
    grid = VisitCounts(True, 4, bits=8, seed=0, device=cpu, n_actions=3)
    grid.add_pairs(torch.tensor([0, 0, 2, 0]), torch.tensor([1, 1, 0, 2]))
    assert grid.pair_counts(torch.tensor([0, 2, 3])).tolist() == [[0, 2, 1], [1, 0, 0], [0, 0, 0]]
    box = VisitCounts(False, 2, bits=6, seed=0, device=cpu, n_actions=2)
    x = torch.tensor([[0.3, -1.0], [0.3, -1.0], [5.0, 5.0]])
    box.add_pairs(x, torch.tensor([0, 0, 1]))
    assert box.pair_counts(x[:1]).tolist() == [[2, 0]] and box.pairs.shape == (64, 2) and box.pairs.sum() == 3
    again = VisitCounts(False, 2, bits=6, seed=0, device=cpu, n_actions=2)
    again.load_state_dict(box.state_dict())
    assert torch.equal(again.pairs, box.pairs)


def test_policy_value_members_and_extra() -> None:
    """V = sum_a pi(a) (min over the chosen members Q_i(s, a) + extra_a): members 0 and 1 -> min (1, 0);
    member 1 alone -> (2, 0); extra (0, 4) adds 0.75 * 4."""
    critic = BilinearQ(TWO_CRITICS.clone())
    logits, s = PI.log().expand(1, 2), torch.ones(1, 1)
    assert policy_value(critic, logits, s).item() == pytest.approx(0.25)
    assert policy_value(critic, logits, s, slice(1, 2)).item() == pytest.approx(0.5)
    assert policy_value(critic, logits, s, extra=torch.tensor([[0.0, 4.0]])).item() == pytest.approx(3.25)
    assert policy_value(critic, logits, s, greedy=True).item() == 1.0  # max over actions of (1, 0)
    assert policy_value(critic, logits, s, slice(1, 2), greedy=True).item() == 2.0


def test_pathwise_actor_loss_streams_and_action_bonus() -> None:
    """Four members = two streams of two: the value is min(Q_1, Q_2) + min(Q_3, Q_4) at the greedy action, plus
    the action bonus of that action; the bonus's gradient into a straight-through action is the bonus itself."""
    m = torch.cat([TWO_CRITICS, torch.tensor([[[5.0, 1.0]], [[4.0, 2.0]]])])  # stream 2: min = (4, 1)
    critic = BilinearQ(m)
    logits = PI.log().expand(1, 2)  # greedy action 1
    bonus = torch.tensor([[10.0, 0.5]])
    loss, _ = pathwise_actor_loss(critic, logits, torch.ones(1, 1), "argmax", 1.0, 10, None, torch.tensor(0.0), 2)
    assert loss.item() == pytest.approx(-(0.0 + 1.0))
    args = (critic, logits, torch.ones(1, 1), "argmax", 1.0, 10, None, torch.tensor(0.0), 2, bonus)
    assert pathwise_actor_loss(*args)[0].item() == pytest.approx(-(0.0 + 1.0 + 0.5))
    # Stream weights (1, 0): the return's stream alone, and no gradient from the bonus's members.
    weighted = BilinearQ(torch.cat([torch.zeros(2, 1, 2), torch.tensor([[[0.0, 7.0]], [[0.0, 7.0]]])]))
    x = torch.zeros(1, 2, requires_grad=True)
    loss, _ = pathwise_actor_loss(weighted, x, torch.ones(1, 1), "st-gumbel", 1.0, 10, None, torch.tensor(0.0), 2)
    loss.backward()
    assert x.grad.abs().sum() > 0
    x.grad = None
    args = (weighted, x, torch.ones(1, 1), "st-gumbel", 1.0, 10, None, torch.tensor(0.0), 2, None, (1.0, 0.0))
    loss, _ = pathwise_actor_loss(*args)
    loss.backward()
    assert loss.item() == 0.0 and not x.grad.any()


def test_per_action_head_is_linear_in_the_action() -> None:
    """critic_head="per_action": Q(s, a) = a . q(s), so a relaxed action is valued at the mix of the one-hot values
    and dQ/da_k = Q(s, e_k) exactly; "concat" is not linear in a."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    features = torch.randn(5, 3, generator=gen)
    for head, linear in (("per_action", True), ("concat", False)):
        critic = EnsembleQ(3, 4, (16,), "relu", n=2, head=head)
        every = torch.stack([critic(features, torch.eye(4)[k].expand(5, 4)) for k in range(4)], -1)  # (2, 5, 4)
        soft = torch.softmax(torch.randn(5, 4, generator=gen), -1).requires_grad_(True)
        q = critic(features, soft)
        assert torch.allclose(q, (every * soft.detach()).sum(-1), atol=1e-6) == linear, head
        if linear:
            q.sum().backward()
            assert torch.allclose(soft.grad, every.sum(0), atol=1e-6)


@pytest.mark.parametrize("head", ["per_action", "concat"])
def test_ensemble_q_index_input_and_every_action_are_exact(head: str) -> None:
    """Discrete observations as indices give bit for bit the values (and first-layer gradients) of their one-hot
    rows; ``every_action`` gives bit for bit what ``forward`` gives for each one-hot action."""
    torch.manual_seed(0)
    critic = EnsembleQ(7, 3, (16, 16), "relu", n=4, head=head)
    index = torch.tensor([0, 6, 3, 3, 1])
    one_hot = torch.eye(7)[index]
    action = torch.softmax(torch.randn(5, 3), -1)
    q_index, q_one_hot = critic(index, action), critic(one_hot, action)
    assert q_index.shape == (4, 5) and torch.equal(q_index, q_one_hot)
    grads = [torch.autograd.grad(q.sum(), critic.weights[0])[0] for q in (critic(index, action), q_one_hot)]
    assert torch.allclose(grads[0], grads[1], rtol=0, atol=1e-6) and grads[0][:, [2, 4, 5]].eq(0).all()
    every = torch.stack([critic(one_hot, torch.eye(3)[a].expand(5, 3)) for a in range(3)], -1)  # (4, 5, 3)
    assert torch.equal(critic.every_action(one_hot), every)
    assert torch.equal(critic.every_action(index), every)


@pytest.mark.parametrize("estimator", PATHWISE_ESTIMATORS)
def test_pathwise_actor_loss_with_precomputed_values_is_exact(estimator: str) -> None:
    """Given the per-action critic's values of every action, the actor's loss and its gradient are bit for bit
    those of evaluating the critic, and the critic still receives no gradient."""
    torch.manual_seed(1)
    critic = EnsembleQ(7, 3, (16,), "relu", n=4, head="per_action")
    index, alpha = torch.tensor([0, 6, 3, 3, 1]), torch.tensor(0.3)
    out = []
    for values in (None, critic.every_action(index).detach()):
        logits = torch.randn(5, 3, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
        gen = torch.Generator().manual_seed(3)
        loss, _ = pathwise_actor_loss(critic, logits, index, estimator, 0.7, 10, gen, alpha, 2, every_action=values)
        loss.backward()
        out.append((loss.detach(), logits.grad))
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])
    assert all(p.grad is None for p in critic.parameters())


@pytest.mark.parametrize("estimator", PATHWISE_ESTIMATORS)
def test_learns_empty_room(estimator: str) -> None:
    agent = make_agent(f"{estimator}-critic", EMPTY, seed=0, **FAST)
    agent.learn(4_000, callback=StopTrainingOnSolved())
    assert agent.solved, f"{estimator}-critic did not solve {EMPTY}: last eval {agent.last_eval}"
    # The solved greedy policy: 100 episodes at the threshold (0.911), i.e. within a step of the optimum 0.92.
    assert agent.evaluate(episodes=20, seed=123).mean >= agent.threshold


FROZEN_DET = "gumbel_rl_test/FrozenLake4x4-NotSlippery-v1"
if FROZEN_DET not in gym.registry:
    gym.register(
        FROZEN_DET,
        entry_point="gymnasium.envs.toy_text.frozen_lake:FrozenLakeEnv",
        kwargs={"map_name": "4x4", "is_slippery": False},
        max_episode_steps=100,
        reward_threshold=1.0,
    )


def test_learns_frozen_lake_without_twin() -> None:
    """Gymnasium's FrozenLake (4x4, not slippery; no twin): sparse reward 1 at the goal, holes end the episode.
    Solved = every one of 100 greedy episodes reaches the goal."""
    from envs import differentiable_ids

    assert FROZEN_DET not in differentiable_ids()
    hp = {"learning_starts": 1_000, "batch_size": 64, "train_freq": 2, "eval_every": 250, "net_arch": [32]}
    agent = make_agent("st-gumbel-critic", FROZEN_DET, seed=0, target_entropy=0.5, **hp)
    agent.learn(6_000, callback=StopTrainingOnSolved())
    assert agent.solved and agent.last_eval.mean == 1.0
    assert agent.envs.returns.episodes > 100


def _rollout(env_id: str, steps: int, n_envs: int = 1, seed: int = 0) -> CriticAgent:
    """Random-action rollout (no updates: learning_starts beyond the rollout)."""
    agent = make_agent(
        "st-gumbel-critic",
        env_id,
        seed=seed,
        n_envs=n_envs,
        learning_starts=10**6,
        eval_every=10**6,
        buffer_size=10_000,
    )
    agent.learn(steps)
    return agent


def test_buffer_holds_real_transitions_terminated_vs_truncated() -> None:
    """EmptyRoom (32-step limit) under random actions: both terminations and truncations occur. Every stored
    transition is one real step of the exact model (none crosses a reset), done=1 exactly for terminations."""
    agent = _rollout(EMPTY, 1_500)
    buf, model = agent.buffer, gym.make(EMPTY).unwrapped
    n = buf.size
    assert n == agent.num_env_steps == 1_500  # every env step stored, and nothing else
    obs, act, rew, nxt, done = (t[:n].numpy() for t in (buf.obs, buf.action, buf.reward, buf.next_obs, buf.terminated))
    for s, a, r, s2, d in zip(obs, act, rew, nxt, done, strict=True):
        ((prob, s_exp, r_exp, term_exp),) = model.P[s][a]  # deterministic map: one outcome
        assert (s2, d) == (s_exp, float(term_exp)) and r == pytest.approx(r_exp)
    # Walk the episodes in storage order: a new episode starts after a termination or the 32nd step.
    length, n_term, n_trunc = 0, 0, 0
    for t in range(n - 1):
        length += 1
        if done[t]:
            n_term, length = n_term + 1, 0
            assert obs[t + 1] == 0  # the next stored transition starts from the reset cell
        elif length == 32:
            n_trunc, length = n_trunc + 1, 0
            assert done[t] == 0.0 and obs[t + 1] == 0  # truncation: stored, not done, bootstraps
        else:
            assert obs[t + 1] == nxt[t]  # same episode continues
    assert n_term >= 5 and n_trunc >= 5
    assert agent.envs.returns.episodes == n_term + n_trunc + (1 if done[n - 1] or length + 1 == 32 else 0)


def test_buffer_cartpole_physics_two_envs() -> None:
    """CartPole with two copies: each stored next observation is CartPole's physics applied to (obs, action), and
    done is its termination rule -- so no reset observation is ever stored as a successor."""
    agent = _rollout("CartPole-v1", 400, n_envs=2)
    buf = agent.buffer
    assert buf.size == 400 and agent.envs.returns.episodes >= 10
    sim = gym.make("CartPole-v1").unwrapped
    sim.reset(seed=0)
    for i in range(buf.size):
        sim.state, sim.steps_beyond_terminated = buf.obs[i].double().numpy(), None
        s2, _, term, _, _ = sim.step(int(buf.action[i]))
        np.testing.assert_allclose(buf.next_obs[i].numpy(), s2, rtol=1e-5, atol=1e-6)
        assert buf.terminated[i].item() == float(term)
    # Random play never reaches 500 steps: every episode ended by termination.
    assert buf.terminated[: buf.size].sum().item() == agent.envs.returns.episodes


def test_actor_gradient_only_through_action() -> None:
    """In the agent: an actor step moves the policy and leaves the critic (weights, gradients, trainability) alone;
    with the action cut out of the critic, no estimator gives the policy any gradient."""
    hp = {"learning_starts": 100, "batch_size": 32, "eval_every": 10**6, "critic_head": "concat"}
    agent = make_agent("st-gumbel-critic", EMPTY, seed=3, **hp)
    agent.learn(300)  # fills the buffer and makes a few updates
    features = agent._features(agent.buffer.sample(32, agent.generator).obs)
    critic_before = [p.detach().clone() for p in agent.critic_params]
    grads_before = [None if p.grad is None else p.grad.clone() for p in agent.critic_params]
    policy_before = [p.detach().clone() for p in agent.actor_params]
    alpha = agent.log_alpha.detach().exp()
    loss, _ = pathwise_actor_loss(agent.critic, agent.policy(features), features, "st-gumbel", 1.0, 10, None, alpha)
    agent._step(agent.actor_opt, loss, agent.actor_params)
    # The critic is untouched: same weights, same gradients, still trainable afterwards.
    for p, w, g in zip(agent.critic_params, critic_before, grads_before, strict=True):
        assert torch.equal(p, w) and p.requires_grad
        assert (p.grad is None and g is None) or torch.equal(p.grad, g)
    assert any(not torch.equal(p, w) for p, w in zip(agent.actor_params, policy_before, strict=True))
    # Cut the action out of the critic (zero its input weights): then the actor gets no gradient at all.
    with torch.no_grad():
        agent.critic.weights[0][:, agent.policy.obs_dim :, :] = 0.0
    for estimator in PATHWISE_ESTIMATORS:
        agent.policy.zero_grad()
        logits = agent.policy(features)
        loss, _ = pathwise_actor_loss(agent.critic, logits, features, estimator, 1.0, 10, agent.generator, alpha * 0)
        loss.backward()
        assert logits.requires_grad
        assert all(p.grad is None or not p.grad.any() for p in agent.actor_params), estimator


def _weights(agent: Agent) -> list[torch.Tensor]:
    return [*agent.policy.state_dict().values(), *agent.critic.state_dict().values()]


def _record(agent: Agent) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "time/train_seconds"} for row in agent.record]


def test_same_seed_same_results() -> None:
    runs = [make_agent("st-gumbel-critic", EMPTY, seed=7, **FAST).learn(600) for _ in range(2)]
    assert _record(runs[0]) == _record(runs[1])
    assert all(torch.equal(a, b) for a, b in zip(_weights(runs[0]), _weights(runs[1]), strict=True))
    other = make_agent("st-gumbel-critic", EMPTY, seed=8, **FAST).learn(600)
    assert not all(torch.equal(a, b) for a, b in zip(_weights(runs[0]), _weights(other), strict=True))


def test_checkpoint_resume_is_exact(tmp_path) -> None:
    """CartPole, two copies, saved mid-episode: load + continue == uninterrupted (weights, buffer, record)."""
    hp = {
        "n_envs": 2,
        "learning_starts": 100,
        "batch_size": 32,
        "train_freq": 2,
        "eval_every": 300,
        "ent_coef": 0.01,
        "n_step": 3,
        "tau": {"kind": "linear", "tau0": 2.0, "tau_end": 0.5, "steps": 600},
        "explore_bonus": 0.5,
        "normalize_reward": True,
        "critic_head": "per_action",
    }
    full = make_agent("reinmax-critic", "CartPole-v1", seed=5, **hp).learn(600)
    part = make_agent("reinmax-critic", "CartPole-v1", seed=5, **hp).learn(300)
    assert any(len(a) > 0 for a in part.envs.episode_actions)  # mid-episode: the replay has work to do
    path = part.save(tmp_path / "ckpt.pt")
    resumed = Agent.load(path)
    assert isinstance(resumed, CriticAgent) and resumed.num_env_steps == 300
    resumed.learn(600)
    assert _record(resumed) == _record(full)
    assert all(torch.equal(a, b) for a, b in zip(_weights(resumed), _weights(full), strict=True))
    for key in ("obs", "action", "reward", "next_obs", "terminated", "done"):
        assert torch.equal(getattr(resumed.buffer, key), getattr(full.buffer, key)), key
    assert np.array_equal(resumed.envs.obs, full.envs.obs)
    assert torch.equal(resumed.visits.counts, full.visits.counts) and full.visits.counts.sum() == 600
    assert torch.equal(resumed.visits.std, full.visits.std) and resumed.reward_scale == full.reward_scale == 1.0
    a, b = resumed.envs.returns.state_dict(), full.envs.returns.state_dict()
    assert torch.equal(a["running"], b["running"]) and a["recent"] == b["recent"] and a["episodes"] == b["episodes"]


def test_bonus_value_stream_and_pair_counts_in_the_agent() -> None:
    """Default: the bonus has its own two critic members (4 in all), reported as train/q_bonus_mean, and every env
    step counts one (cell, action) try; episodic_bonus=True keeps one pair of members and no such metric."""
    agent = make_agent("st-gumbel-critic", EMPTY, seed=0, **FAST).learn(600)
    assert agent.streams == 2 and agent.critic.weights[0].shape[0] == 4
    assert "train/q_bonus_mean" in agent.record[-1] and agent.visits.pairs.sum().item() == 600
    single = make_agent("st-gumbel-critic", EMPTY, seed=0, episodic_bonus=True, **FAST).learn(600)
    assert single.streams == 1 and single.critic.weights[0].shape[0] == 2
    assert "train/q_bonus_mean" not in single.record[-1]
    plain = make_agent("st-gumbel-critic", EMPTY, seed=0, explore_bonus=0.0, **FAST)
    assert plain.streams == 1 and plain.visits is None and plain.explorer is None


def test_decoupled_explorer_acts_and_resumes_exactly(tmp_path) -> None:
    """decoupled=True: a second policy acts (the evaluated one never does); both learn; resume is exact."""
    hp = {**FAST, "decoupled": True, "eval_every": 10**6}
    full = make_agent("st-gumbel-critic", EMPTY, seed=2, **hp).learn(600)
    assert full.explorer is not None
    assert not all(torch.equal(a, b) for a, b in zip(full.policy.parameters(), full.explorer.parameters(), strict=True))
    part = make_agent("st-gumbel-critic", EMPTY, seed=2, **hp).learn(300)
    resumed = Agent.load(part.save(tmp_path / "ckpt.pt"))
    resumed.learn(600)
    assert _record(resumed) == _record(full)
    for a, b in zip(resumed.explorer.parameters(), full.explorer.parameters(), strict=True):
        assert torch.equal(a, b)
    assert all(torch.equal(a, b) for a, b in zip(_weights(resumed), _weights(full), strict=True))


def test_metrics_named_with_prefixes_and_close_twice() -> None:
    agent = make_agent("st-gumbel-critic", EMPTY, seed=0, ent_coef=0.2, **FAST)
    with agent:
        agent.learn(600)
    row = agent.record[-1]
    train = {"train/critic_loss", "train/q_mean", "train/actor_loss", "train/entropy", "train/ent_coef", "train/tau"}
    assert train | {"rollout/ep_rew_mean", "rollout/episodes"} <= set(row)
    assert row["train/ent_coef"] == pytest.approx(0.2) and row["train/tau"] == 1.0
    assert row["rollout/episodes"] == agent.envs.returns.episodes > 0
    assert 0 < row["train/entropy"] <= math.log(4) + 1e-6  # four actions
    assert all(not k.startswith("train/") or k == "train/tau" for k in agent.record[0])  # no update yet at step 2
    agent.close()  # already closed by the with block: a no-op


def test_resume_detects_mismatched_environment(tmp_path) -> None:
    agent = make_agent("st-gumbel-critic", "CartPole-v1", seed=1, learning_starts=10**6, eval_every=10**6)
    agent.learn(30)
    state = agent._training_state()
    state["envs"]["episode_seeds"] = [s + 1 for s in state["envs"]["episode_seeds"]]
    with pytest.raises(ValueError, match="cannot resume"):
        agent._load_training_state(state)


@pytest.mark.parametrize(
    ("hp", "name"),
    [
        ({"learning_rate": -1e-3}, "learning_rate"),
        ({"critic_learning_rate": 0}, "critic_learning_rate"),
        ({"ent_coef_learning_rate": 0}, "ent_coef_learning_rate"),
        ({"gumbel_k": 0}, "gumbel_k"),
        ({"tau": 0.0}, "tau"),
        ({"tau": {"kind": "cosine"}}, "tau"),
        ({"gamma": 1.5}, "gamma"),
        ({"n_step": 0}, "n_step"),
        ({"n_step": 2.5}, "n_step"),
        ({"polyak": 0}, "polyak"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"critic_arch": [64, -1]}, "critic_arch"),
        ({"critic_arch": []}, "critic_arch"),
        ({"critic_activation": "sigmoid"}, "critic_activation"),
        ({"ent_coef": -0.1}, "ent_coef"),
        ({"ent_coef": "auto_x"}, "ent_coef"),
        ({"ent_coef": "auto_0"}, "ent_coef"),
        ({"target_entropy": 1.5}, "target_entropy"),
        ({"soft_target": "yes"}, "soft_target"),
        ({"normalize_reward": 1}, "normalize_reward"),
        ({"explore_bonus": -1.0}, "explore_bonus"),
        ({"hash_bits": 0}, "hash_bits"),
        ({"optimism": -1.0}, "optimism"),
        ({"episodic_bonus": "no"}, "episodic_bonus"),
        ({"decoupled": 1}, "decoupled"),
        ({"bonus_n_step": -1}, "bonus_n_step"),
        ({"hash_bits": 40}, "hash_bits"),
        ({"critic_head": "dueling"}, "critic_head"),
    ],
)
def test_bad_hyperparameters_are_named(hp: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        make_agent("st-gumbel-critic", EMPTY, **hp)


def test_methods_registered_without_twin() -> None:
    from agents.registry import METHODS, methods_for

    names = [f"{e}-critic" for e in PATHWISE_ESTIMATORS]
    assert all(METHODS[n].agent_cls is CriticAgent and not METHODS[n].needs_twin for n in names)
    assert all(METHODS[f"{e}-critic"].description.startswith(Estimator(e).description) for e in PATHWISE_ESTIMATORS)
    assert "reinforce-critic" not in METHODS
    assert set(names) <= set(methods_for("FrozenLake-v1"))
    agent = make_agent("gumbel-rao-critic", EMPTY, learning_starts=10**6, eval_every=10**6)
    assert agent.estimator == "gumbel-rao" and agent.policy.estimator == "gumbel-rao"
