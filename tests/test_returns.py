"""Tests of ``agents.returns``: TD(lambda) targets and GAE against a brute-force forward view, by hand, and at
the two ends of lambda."""

from __future__ import annotations

import pytest
import torch

from agents.returns import gae_advantages, lambda_returns


def _random_batch(seed: int, steps: int = 12, envs: int = 5) -> dict[str, torch.Tensor]:
    """Random rewards and values (float64) with terminations and truncations (about one step in five ends)."""
    g = torch.Generator().manual_seed(seed)
    terminated = torch.rand(steps, envs, generator=g) < 0.1
    truncated = (torch.rand(steps, envs, generator=g) < 0.1) & ~terminated
    return {
        "rewards": torch.randn(steps, envs, generator=g, dtype=torch.float64),
        "next_values": torch.randn(steps, envs, generator=g, dtype=torch.float64),
        "values": torch.randn(steps, envs, generator=g, dtype=torch.float64),
        "terminated": terminated,
        "done": terminated | truncated,
    }


def _n_step_return(b: dict[str, torch.Tensor], t: int, e: int, n: int, gamma: float) -> float:
    """``sum_{j<n} gamma^j r_{t+j} + gamma^n V(s'_{t+n-1})`` (no bootstrap if step t+n-1 terminated)."""
    ret = sum(gamma**j * float(b["rewards"][t + j, e]) for j in range(n))
    if not b["terminated"][t + n - 1, e]:
        ret += gamma**n * float(b["next_values"][t + n - 1, e])
    return ret


def _brute_force_lambda_return(b: dict[str, torch.Tensor], t: int, e: int, gamma: float, lam: float) -> float:
    """The forward view (Sutton and Barto, eq. 12.9): ``(1 - lam) sum_{n<N} lam^(n-1) G^(n) + lam^(N-1) G^(N)``,
    with ``N`` the steps from ``t`` to the end of the episode or of the batch, whichever comes first."""
    steps = b["rewards"].shape[0]
    last = t
    while last < steps - 1 and not b["done"][last, e]:
        last += 1
    horizon = last - t + 1
    out = sum((1 - lam) * lam ** (n - 1) * _n_step_return(b, t, e, n, gamma) for n in range(1, horizon))
    return out + lam ** (horizon - 1) * _n_step_return(b, t, e, horizon, gamma)


def _args(b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    return b["rewards"], b["next_values"], b["terminated"], b["done"]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("lam", [0.0, 0.5, 0.95, 1.0])
def test_lambda_returns_match_the_forward_view(seed: int, lam: float) -> None:
    b = _random_batch(seed)
    assert b["terminated"].any() and (b["done"] & ~b["terminated"]).any()  # both kinds of episode end occur
    gamma = 0.9
    got = lambda_returns(*_args(b), gamma=gamma, lam=lam)
    steps, envs = b["rewards"].shape
    expected = torch.tensor(
        [[_brute_force_lambda_return(b, t, e, gamma, lam) for e in range(envs)] for t in range(steps)],
        dtype=torch.float64,
    )
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def test_lambda_zero_is_the_one_step_td_target() -> None:
    b = _random_batch(3)
    got = lambda_returns(*_args(b), gamma=0.8, lam=0.0)
    expected = b["rewards"] + 0.8 * (~b["terminated"]).double() * b["next_values"]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-14)


def test_lambda_one_is_the_discounted_return_bootstrapped_at_the_end() -> None:
    """lambda = 1: rewards summed to the end of the episode, then V(final obs) unless terminated; episodes still
    running at the batch's end bootstrap on V of the last observation."""
    b = _random_batch(4)
    gamma = 0.7
    got = lambda_returns(*_args(b), gamma=gamma, lam=1.0)
    steps, envs = b["rewards"].shape
    expected = torch.empty(steps, envs, dtype=torch.float64)
    for e in range(envs):
        for t in range(steps):
            ret, discount, k = 0.0, 1.0, t
            while True:
                ret += discount * float(b["rewards"][k, e])
                discount *= gamma
                if b["done"][k, e] or k == steps - 1:
                    if not b["terminated"][k, e]:
                        ret += discount * float(b["next_values"][k, e])
                    break
                k += 1
            expected[t, e] = ret
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


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


def test_gae_is_the_lambda_return_minus_the_value() -> None:
    b = _random_batch(5)
    values = b["values"].clone().requires_grad_(True)
    adv = gae_advantages(b["rewards"], values, b["next_values"], b["terminated"], b["done"], gamma=0.99, lam=0.95)
    assert torch.equal(adv, lambda_returns(*_args(b), gamma=0.99, lam=0.95) - b["values"])
    assert not adv.requires_grad


def test_lambda_returns_carry_no_gradient() -> None:
    b = _random_batch(6)
    rewards = b["rewards"].clone().requires_grad_(True)
    out = lambda_returns(rewards, b["next_values"], b["terminated"], b["done"], gamma=0.9, lam=0.9)
    assert not out.requires_grad and out.grad_fn is None
