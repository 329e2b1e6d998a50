"""Every registered twin implements the whole ``DifferentiableEnv`` protocol with the documented signatures."""

from __future__ import annotations

import inspect

import pytest
import torch

import envs  # noqa: F401  (registers the suite and the twins)
from envs.differentiable import DifferentiableEnv, differentiable_ids, make_differentiable

ATTRIBUTES = {"env_id": str, "obs_dim": int, "n_actions": int}
METHODS = ("reset", "reset_done", "step", "observe", "training_reward", "continuation")


def _protocol_params(name: str) -> list[inspect.Parameter]:
    return list(inspect.signature(getattr(DifferentiableEnv, name)).parameters.values())[1:]  # without self


def test_protocol_lists_every_member() -> None:
    members = {name for name in dir(DifferentiableEnv) if not name.startswith("_")}
    assert members == set(ATTRIBUTES) | {"max_episode_steps"} | set(METHODS)


@pytest.mark.parametrize("env_id", differentiable_ids())
def test_twin_implements_protocol(env_id: str) -> None:
    twin = make_differentiable(env_id, dtype=torch.float64)
    assert isinstance(twin, DifferentiableEnv)
    assert twin.env_id == env_id
    for name, typ in ATTRIBUTES.items():
        assert isinstance(getattr(twin, name), typ) and not isinstance(getattr(twin, name), bool), name
    assert twin.max_episode_steps is None or (isinstance(twin.max_episode_steps, int) and twin.max_episode_steps >= 1)
    for name in METHODS:
        expected = _protocol_params(name)
        got = list(inspect.signature(getattr(twin, name)).parameters.values())
        # The protocol's parameters first, with the same names, kinds and defaults ...
        assert [(p.name, p.kind, p.default) for p in got[: len(expected)]] == [
            (p.name, p.kind, p.default) for p in expected
        ], name
        # ... and any extra parameter optional (e.g. GridWorldTwin's keyword-only ``uniforms``).
        assert all(p.default is not inspect.Parameter.empty for p in got[len(expected) :]), name


@pytest.mark.parametrize("env_id", differentiable_ids())
def test_protocol_round_trip_and_training_reward(env_id: str) -> None:
    """reset -> step (generator by keyword) -> training_reward (batch,) finite, differentiable -> reset_done."""
    twin = make_differentiable(env_id, dtype=torch.float64)
    batch = 5
    g = torch.Generator().manual_seed(0)
    state = twin.reset(batch, generator=g)
    assert state.t.shape == (batch,) and state.t.dtype == torch.long and not state.t.any()
    obs = twin.observe(state)
    assert obs.shape == (batch, twin.obs_dim)
    logits = torch.zeros(batch, twin.n_actions, dtype=torch.float64, requires_grad=True)
    action = torch.softmax(logits + torch.arange(twin.n_actions, dtype=torch.float64), dim=1)
    next_state, reward, terminated, truncated = twin.step(state, action, generator=g)
    assert reward.shape == terminated.shape == truncated.shape == (batch,)
    assert terminated.dtype == truncated.dtype == torch.bool
    assert torch.equal(next_state.t, state.t + 1)
    r = twin.training_reward(state, action, next_state, reward)
    assert r.shape == (batch,) and r.is_floating_point() and bool(torch.isfinite(r).all())
    (grad,) = torch.autograd.grad(r.sum(), logits, allow_unused=True)
    assert grad is None or bool(torch.isfinite(grad).all())
    done = torch.tensor([True, False, True, False, False])
    fresh = twin.reset_done(next_state, done, generator=g)
    assert torch.equal(fresh.t, torch.where(done, 0, next_state.t))
