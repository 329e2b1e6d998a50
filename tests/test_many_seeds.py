"""Tests of many seeds in one process (``agents.many_seeds``, ``train.py compare``'s ``batched`` backend): each seed's
run is independent of its companions (bit-identical), its outcomes are distributed as separate runs', evaluation in
one vector env gives the single-run numbers, and compare writes the same files, summary and curves as with one
process per run."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

import agents
import train as train_cli
from agents.base import Agent
from agents.callbacks import FunctionCallback
from agents.evaluation import evaluate
from agents.many_seeds import (
    ManyReinforceSeeds,
    ManySeeds,
    SeedStreams,
    StackedMLP,
    StackedPolicy,
    StackedTwin,
    batched_methods,
    clip_grad_norm_per_seed,
    evaluate_policies,
    trains_batched,
)
from envs.differentiable import PreDrawnNoiseEnv, make_differentiable
from experiments.compare import (
    WALL_CLOCK_COLUMNS,
    CompareSettings,
    RunTask,
    batch_tasks,
    check_backend,
    execute_batch,
    execute_task,
    plan_comparison,
    write_summary,
)
from experiments.runner import CheckpointPolicy
from gumbel_rl.estimators import PATHWISE_ESTIMATORS, sample_action
from gumbel_rl.policy import GumbelPolicy, mlp

EMPTY = "gumbel_rl/EmptyRoom-5x5-v0"
SLIPPERY = "gumbel_rl/Slippery-8x8-v0"  # slips: the twin's step draws noise
SMALL_CARTPOLE = {"n_envs": 8, "horizon": 8, "net_arch": [16], "critic_arch": [16], "eval_every": 128}
SMALL_REINFORCE = {"n_envs": 8, "n_steps": 16, "net_arch": [16], "eval_every": 256}
WALL = ("time/train_seconds",)


def _weights(agent: Agent) -> list[torch.Tensor]:
    nets = (agent.policy, getattr(agent, "critic", None) or agent.value_net)  # type: ignore[attr-defined]
    return [t.clone() for m in nets for t in m.state_dict().values()]


def _record(agent: Agent) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in WALL} for row in agent.record]


def _seed(group: ManySeeds, seed: int) -> Agent:
    return next(a for a in group.agents if a.seed == seed)


@pytest.mark.parametrize(
    ("method", "env_id", "hp"),
    [
        ("st-gumbel", "CartPole-v1", SMALL_CARTPOLE),
        ("gumbel-rao", SLIPPERY, {"eval_every": 128}),
        ("reinmax", EMPTY, {"eval_every": 128}),
        ("st-gumbel", EMPTY, {"eval_every": 128, "explore_bonus": 1.0}),  # each seed's own visit counts
    ],
)
def test_a_seed_is_bit_identical_whatever_its_companions(method: str, env_id: str, hp: dict) -> None:
    """Seed 2 trained with companions (0, 1), with 5 after it, and alone: the same weights, optimiser state, twin
    state, record (evaluations included) and solve step, exactly (tolerance 0; ``n_envs`` a multiple of 8)."""
    runs = {}
    for seeds in ([0, 1, 2], [2, 5], [2]):
        group = ManySeeds.make(method, env_id, seeds, device="cpu", **hp)
        group.learn(6 * hp.get("n_envs", 8) * hp.get("horizon", 8))
        runs[tuple(seeds)] = _seed(group, 2)
    ref = runs[(2,)]
    assert len(ref.record) == 6 and sum("eval/mean_reward" in r for r in ref.record) >= 3
    for other in (runs[(0, 1, 2)], runs[(2, 5)]):
        for a, b in zip(_weights(ref), _weights(other), strict=True):
            assert torch.equal(a, b)
        assert _record(ref) == _record(other)
        assert (ref.solved, ref.solve_env_steps) == (other.solved, other.solve_env_steps)
        assert torch.equal(ref.generator.get_state(), other.generator.get_state())
        for x, y in zip(ref.twin_state, other.twin_state, strict=True):
            assert torch.equal(x, y)
        sa, sb = ref.actor_opt.state_dict()["state"], other.actor_opt.state_dict()["state"]
        assert all(torch.equal(sa[k]["exp_avg_sq"], sb[k]["exp_avg_sq"]) for k in sa)


def test_seed_blocks_of_any_size_differ_by_rounding_only() -> None:
    """With ``n_envs`` not a multiple of 8 a seed's rows sit at other offsets of the twin's batched matrix products
    for other companions, whose rounding then differs: seed 2 with and without companions agrees to 1e-5 after 3
    iterations (and exactly with ``n_envs`` a multiple of 8, above)."""
    got = []
    for seeds in ([0, 1, 2], [2]):
        group = ManySeeds.make("reinmax", EMPTY, seeds, device="cpu", eval_every=10**6, n_envs=5)
        got.append(_weights(_seed(group.learn(5 * 8), 2)))
    for a, b in zip(*got, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    ("method", "bonus"), [*((m, 0.0) for m in PATHWISE_ESTIMATORS), ("st-gumbel", 1.0), ("reinmax", 1.0)]
)
def test_a_batched_seed_follows_its_single_run(method: str, bonus: float) -> None:
    """Each seed draws a single run's noise in a single run's order (and counts its own visits for the exploration
    bonus): after 4 iterations its weights match the single run of that seed to 1e-5 (float rounding of the
    batched matmuls only) and its record to 1e-4."""
    hp = {"eval_every": 10**6, "explore_bonus": bonus}
    group = ManySeeds.make(method, SLIPPERY, [3, 4], device="cpu", **hp)
    group.learn(4 * 64)
    for seed in (3, 4):
        single = agents.make_agent(method, SLIPPERY, seed=seed, device="cpu", **hp).learn(4 * 64)
        mine = _seed(group, seed)
        for a, b in zip(_weights(mine), _weights(single), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
        for ra, rb in zip(_record(mine), _record(single), strict=True):
            assert ra.keys() == rb.keys()
            for k in ra:
                assert math.isclose(ra[k], rb[k], rel_tol=1e-4, abs_tol=1e-5), (k, ra[k], rb[k])


def test_outcomes_are_distributed_as_separate_runs() -> None:
    """Two-sample test: the training return after 6 iterations on EmptyRoom-5x5 (``rollout/ep_rew_mean``), 16
    seeds batched (seeds 0-15) against 16 separate runs of other seeds (100-115); Kolmogorov-Smirnov and
    Mann-Whitney p-values above 0.05, and the means within 0.25 of a standard deviation."""
    hp = {"eval_every": 10**6}
    steps = 6 * 64
    group = ManySeeds.make("st-gumbel", EMPTY, range(16), device="cpu", **hp).learn(steps)
    batched = np.array([a.record[-1]["rollout/ep_rew_mean"] for a in group.agents])
    separate = np.array(
        [
            agents.make_agent("st-gumbel", EMPTY, seed=s, device="cpu", **hp)
            .learn(steps)
            .record[-1]["rollout/ep_rew_mean"]
            for s in range(100, 116)
        ]
    )
    assert np.std(batched) > 0 and np.std(separate) > 0  # the statistic varies over seeds
    assert stats.ks_2samp(batched, separate).pvalue > 0.05
    assert stats.mannwhitneyu(batched, separate).pvalue > 0.05
    assert abs(batched.mean() - separate.mean()) < 0.25 * np.concatenate([batched, separate]).std()


def test_batched_evaluation_gives_each_policy_its_single_evaluation() -> None:
    """``evaluate_policies`` (one vector env for all policies) returns, per policy, exactly ``evaluate``'s result
    (same episodes, env seeds and returns), greedy and sampled."""
    pols = [agents.make_agent("st-gumbel", "CartPole-v1", seed=s, device="cpu").policy for s in range(3)]
    many = evaluate_policies(pols, pols[0], "CartPole-v1", 10, [7, 8, 9])
    assert many == [evaluate(p, "CartPole-v1", 10, seed=s) for p, s in zip(pols, [7, 8, 9], strict=True)]
    sampled = evaluate_policies(pols, pols[0], "CartPole-v1", 6, [5] * 3, deterministic=False, n_envs=3, noise_seed=11)
    for p, r in zip(pols, sampled, strict=True):
        with torch.random.fork_rng():
            torch.manual_seed(11)
            assert r == evaluate(p, "CartPole-v1", 6, deterministic=False, seed=5, n_envs=3)


@pytest.mark.parametrize("estimator", ["st-gumbel", "relaxed", "gumbel-rao"])
@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
def test_stacked_actions_are_each_seeds_own_draws(estimator: str, tau: float) -> None:
    """``StackedPolicy.act`` (st-gumbel and relaxed: one relaxation over per-seed Gumbel draws; the others: a draw
    per seed) gives exactly ``sample_action`` of each seed's logits with that seed's generator: actions, gradients
    and the generators' states after the draw."""
    pols = [agents.make_agent(estimator, "CartPole-v1", seed=s, device="cpu").policy for s in range(3)]
    mine = [torch.Generator().manual_seed(10 + s) for s in range(3)]
    theirs = [torch.Generator().manual_seed(10 + s) for s in range(3)]
    stacked = StackedPolicy(pols, SeedStreams(mine))
    action, logits = stacked.act(torch.randn(3 * 8, 4, generator=torch.Generator().manual_seed(0)), tau, estimator)
    ref = torch.cat(
        [sample_action(logits[8 * s : 8 * (s + 1)], estimator, tau, k=pols[0].k, generator=theirs[s]) for s in range(3)]
    )
    assert torch.equal(action, ref)
    weights = torch.arange(2.0)
    params = stacked.net.ordered_parameters()
    got = torch.autograd.grad((action * weights).sum(), params, retain_graph=True)
    want = torch.autograd.grad((ref * weights).sum(), params)
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    assert all(torch.equal(a.get_state(), b.get_state()) for a, b in zip(mine, theirs, strict=True))


@pytest.mark.parametrize("env_id", [SLIPPERY, "CartPole-v1"])
def test_stacked_twin_draws_each_seeds_noise_and_steps_once(env_id: str) -> None:
    """``StackedTwin`` over a ``PreDrawnNoiseEnv`` twin (only the draws per seed, one ``step`` / ``reset_done`` over
    all seeds) against each seed's own twin calls with its generator, over 10 steps of soft actions with re-draws
    (rows done at every step, none at some): the same states, rewards and flags and generator states, exactly."""
    twin = make_differentiable(env_id)
    assert isinstance(twin, PreDrawnNoiseEnv)
    mine = [torch.Generator().manual_seed(20 + s) for s in range(3)]
    theirs = [torch.Generator().manual_seed(20 + s) for s in range(3)]
    stacked = StackedTwin(twin, SeedStreams(mine))
    assert stacked.predrawn
    joint = stacked.reset(24)
    own = [twin.reset(8, generator=g) for g in theirs]
    actions = torch.softmax(torch.randn(10, 24, twin.n_actions, generator=torch.Generator().manual_seed(0)), -1)
    for t in range(10):
        joint, *out = stacked.step(joint, actions[t])
        rows = [slice(8 * s, 8 * (s + 1)) for s in range(3)]
        steps = [twin.step(st, actions[t, r], generator=g) for st, r, g in zip(own, rows, theirs, strict=True)]
        own = [step[0] for step in steps]
        done = (torch.arange(24) % (t + 2) == 0) if t % 4 else torch.zeros(24, dtype=torch.bool)
        joint = stacked.reset_done(joint, done)
        own = [twin.reset_done(st, done[r], generator=g) for st, r, g in zip(own, rows, theirs, strict=True)]
        for s in range(3):
            assert all(torch.equal(a[8 * s : 8 * (s + 1)], b) for a, b in zip(joint, own[s], strict=True))
            assert all(torch.equal(a[8 * s : 8 * (s + 1)], b) for a, b in zip(out, steps[s][1:], strict=True))
        assert all(torch.equal(a.get_state(), b.get_state()) for a, b in zip(mine, theirs, strict=True))


def test_cartpole_pre_drawn_reset_noise_is_the_reset_done_draw() -> None:
    """CartPole's ``reset_done(noise=reset_noise(done, g))`` is ``reset_done(generator=g)``: one row per done
    environment (none drawn without any), exactly; a wrong shape is refused in one line."""
    twin = make_differentiable("CartPole-v1")
    state = twin.reset(6, generator=torch.Generator().manual_seed(0))
    for done in (torch.tensor([True, False, False, True, True, False]), torch.zeros(6, dtype=torch.bool)):
        inside, outside = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
        a = twin.reset_done(state, done, generator=inside)
        noise = twin.reset_noise(done, outside)
        assert noise.shape == (int(done.sum()), 4)
        b = twin.reset_done(state, done, noise=noise)
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
        assert torch.equal(inside.get_state(), outside.get_state())
    assert twin.step_noise(6) is None
    with pytest.raises(ValueError, match=r"reset_done noise must have reset_noise's shape \(1, 4\)"):
        twin.reset_done(state, torch.eye(6, dtype=torch.bool)[0], noise=torch.zeros(2, 4))
    with pytest.raises(ValueError, match="CartPole's step draws no noise"):
        twin.step(state, torch.eye(2)[[0] * 6], noise=torch.zeros(6, 3))


def test_stacked_networks_and_clipping_match_the_seeds_own() -> None:
    """The stacked MLP computes each seed's network, and per-seed clipping is ``clip_grad_norm_`` of each seed."""
    torch.manual_seed(0)
    nets = [mlp(4, (8, 8), 3) for _ in range(3)] + [mlp(4, (8, 8), 1)]
    stacked = StackedMLP(nets[:3])
    x = torch.randn(3 * 5, 4)
    out = stacked(x)
    for s in range(3):
        torch.testing.assert_close(out[5 * s : 5 * (s + 1)], nets[s](x[5 * s : 5 * (s + 1)]), rtol=1e-6, atol=1e-6)
    out.square().sum().backward()
    norms = [torch.nn.utils.get_total_norm([p.grad[s] for p in stacked.parameters()]) for s in range(3)]
    got = clip_grad_norm_per_seed(list(stacked.parameters()), 0.5, 3)
    torch.testing.assert_close(got, torch.stack(norms))
    for s in range(3):
        clipped = torch.nn.utils.get_total_norm([p.grad[s] for p in stacked.parameters()])
        assert float(clipped) == pytest.approx(min(0.5, float(norms[s])), rel=1e-5)
    with pytest.raises(ValueError, match="one architecture"):
        StackedMLP(nets[2:])


def test_a_seed_that_stops_leaves_the_others_unchanged(tmp_path: Path) -> None:
    """Seed 1 stops after 2 iterations (its callback returns False); seeds 0 and 2 train on, bit-identical to a run
    without the stop. The seeds' checkpoints load as single runs (``Agent.load``) and resume; policies predict
    as the group's."""
    hp = {**SMALL_CARTPOLE, "eval_every": 10**6}
    full = ManySeeds.make("st-gumbel", "CartPole-v1", [0, 1, 2], device="cpu", **hp).learn(6 * 64)
    group = ManySeeds.make("st-gumbel", "CartPole-v1", [0, 1, 2], device="cpu", **hp)
    stop_1 = FunctionCallback(lambda agent, row: agent.iterations < 2)
    group.learn(6 * 64, callbacks=[None, stop_1, None])
    assert [len(a.record) for a in group.agents] == [6, 2, 6]
    for s in (0, 2):
        for a, b in zip(_weights(_seed(full, s)), _weights(_seed(group, s)), strict=True):
            assert torch.equal(a, b)
    agent = _seed(group, 1)
    agent.save(tmp_path / "c.pt")
    loaded = Agent.load(tmp_path / "c.pt", device="cpu")
    assert loaded.num_env_steps == 2 * 64 and _record(loaded) == _record(agent)
    loaded.learn(3 * 64)
    assert loaded.num_env_steps == 3 * 64
    agent.policy.save(tmp_path / "p.pt")
    policy = GumbelPolicy.load(tmp_path / "p.pt")
    obs = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    assert np.array_equal(policy.predict(obs, deterministic=True)[0], agent.policy.predict(obs, deterministic=True)[0])


def test_checkpoints_resume_together_exactly(tmp_path: Path) -> None:
    """Seeds saved mid-run (``Agent.save`` after ``learn``), loaded and trained on together give exactly what the
    uninterrupted group gives (Adam states, generators, twin states and episode returns restacked)."""
    hp = {**SMALL_CARTPOLE, "eval_every": 192}
    group = ManySeeds.make("st-gumbel", "CartPole-v1", [0, 1, 2], device="cpu", **hp).learn(4 * 64)
    for a in group.agents:
        a.save(tmp_path / f"s{a.seed}.pt")
    group.learn(7 * 64)
    resumed = ManySeeds([Agent.load(tmp_path / f"s{s}.pt", device="cpu") for s in (2, 0)]).learn(7 * 64)  # type: ignore[misc]
    for s in (0, 2):
        for a, b in zip(_weights(_seed(group, s)), _weights(_seed(resumed, s)), strict=True):
            assert torch.equal(a, b)
        assert _record(_seed(group, s)) == _record(_seed(resumed, s))


@pytest.mark.parametrize(("env_id", "hp"), [("CartPole-v1", SMALL_REINFORCE), (SLIPPERY, {"eval_every": 128})])
def test_a_reinforce_seed_is_bit_identical_whatever_its_companions(env_id: str, hp: dict) -> None:
    """``reinforce`` on the twin (``ManyReinforceSeeds``): seed 2 trained with companions (0, 1), with 5 after it,
    and alone gives the same policy and value weights, Adam state, generator, twin state and record (evaluations
    included), exactly (tolerance 0; ``n_envs`` a multiple of 8)."""
    runs = {}
    for seeds in ([0, 1, 2], [2, 5], [2]):
        group = ManySeeds.make("reinforce", env_id, seeds, device="cpu", **hp)
        assert isinstance(group, ManyReinforceSeeds)
        cfg = group.config
        group.learn(5 * cfg.n_envs * cfg.n_steps)
        runs[tuple(seeds)] = _seed(group, 2)
    ref = runs[(2,)]
    assert len(ref.record) == 5 and sum("eval/mean_reward" in r for r in ref.record) >= 2
    for other in (runs[(0, 1, 2)], runs[(2, 5)]):
        for a, b in zip(_weights(ref), _weights(other), strict=True):
            assert torch.equal(a, b)
        assert _record(ref) == _record(other)
        assert torch.equal(ref.generator.get_state(), other.generator.get_state())
        assert all(torch.equal(x, y) for x, y in zip(ref._twin_state, other._twin_state, strict=True))
        sa, sb = ref.optimizer.state_dict()["state"], other.optimizer.state_dict()["state"]
        n_params = len([*ref.policy.parameters(), *ref.value_net.parameters()])
        assert len(sa) == n_params and all(torch.equal(sa[k]["exp_avg_sq"], sb[k]["exp_avg_sq"]) for k in sa)


@pytest.mark.parametrize("env_id", ["CartPole-v1", SLIPPERY])
def test_a_batched_reinforce_seed_follows_its_single_run(env_id: str) -> None:
    """Each reinforce seed samples its actions and its twin's noise from its own generator in a single run's order,
    and its loss is ``reinforce_with_baseline_loss`` of its own rollout (advantages normalised per seed): after 4
    iterations its weights match the single run of that seed to 1e-5 (float rounding of the batched matmuls and of
    the clipping norm's sum only), its record to 1e-4 and its generator exactly (the same number of draws)."""
    hp = {**SMALL_REINFORCE, "eval_every": 10**6}
    group = ManySeeds.make("reinforce", env_id, [3, 4], device="cpu", **hp)
    steps = 4 * 8 * 16
    group.learn(steps)
    for seed in (3, 4):
        single = agents.make_agent("reinforce", env_id, seed=seed, device="cpu", **hp).learn(steps)
        mine = _seed(group, seed)
        for a, b in zip(_weights(mine), _weights(single), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
        assert torch.equal(mine.generator.get_state(), single.generator.get_state())
        for ra, rb in zip(_record(mine), _record(single), strict=True):
            assert ra.keys() == rb.keys()
            for k in ra:
                assert math.isclose(ra[k], rb[k], rel_tol=1e-4, abs_tol=1e-5), (k, ra[k], rb[k])


def test_reinforce_checkpoints_resume_together_exactly(tmp_path: Path) -> None:
    """Reinforce seeds saved mid-run, loaded (``Agent.load``) and trained on together give exactly what the
    uninterrupted group gives (one Adam over policy and value restacked, generators, twin states, episode returns);
    a seed that stops early leaves the others bit-identical."""
    hp = {**SMALL_REINFORCE, "eval_every": 384}
    group = ManySeeds.make("reinforce", "CartPole-v1", [0, 1, 2], device="cpu", **hp).learn(2 * 128)
    for a in group.agents:
        a.save(tmp_path / f"s{a.seed}.pt")
    stop_1 = FunctionCallback(lambda agent, row: agent.iterations < 3)
    group.learn(5 * 128, callbacks=[None, stop_1, None])
    assert [len(a.record) for a in group.agents] == [5, 3, 5]
    resumed = ManySeeds([Agent.load(tmp_path / f"s{s}.pt", device="cpu") for s in (2, 0)]).learn(5 * 128)
    assert isinstance(resumed, ManyReinforceSeeds)
    for s in (0, 2):
        for a, b in zip(_weights(_seed(group, s)), _weights(_seed(resumed, s)), strict=True):
            assert torch.equal(a, b)
        assert _record(_seed(group, s)) == _record(_seed(resumed, s))


def test_stacked_samples_are_each_seeds_own_reinforce_draws() -> None:
    """``StackedPolicy.sample`` gives exactly ``sample_action(logits, "reinforce", generator=g).argmax(-1)`` of each
    seed's logits with that seed's generator, and leaves the generators in the same states."""
    pols = [agents.make_agent("reinforce", "CartPole-v1", seed=s, device="cpu").policy for s in range(3)]
    mine = [torch.Generator().manual_seed(10 + s) for s in range(3)]
    theirs = [torch.Generator().manual_seed(10 + s) for s in range(3)]
    stacked = StackedPolicy(pols, SeedStreams(mine))
    features = torch.randn(3 * 16, 4, generator=torch.Generator().manual_seed(0))
    got = stacked.sample(features)
    logits = [pols[s](features[16 * s : 16 * (s + 1)]).detach() for s in range(3)]
    ref = torch.cat(
        [sample_action(lg, "reinforce", generator=g).argmax(-1) for lg, g in zip(logits, theirs, strict=True)]
    )
    assert torch.equal(got, ref) and got.unique().numel() == 2
    assert all(torch.equal(a.get_state(), b.get_state()) for a, b in zip(mine, theirs, strict=True))


def test_compare_batches_reinforce_on_twin_rollouts_only(tmp_path: Path) -> None:
    """The ``batched`` backend takes ``reinforce`` when its rollout resolves to the twin (CartPole-v1 and the
    gridworlds by default) and runs it alone on Gymnasium rollouts; a batched reinforce comparison writes each seed's
    run with the returns of the seed's single run (1e-6 relative)."""
    assert trains_batched("reinforce", EMPTY) and trains_batched("reinforce", "CartPole-v1", {"rollout": "auto"})
    assert not trains_batched("reinforce", "CartPole-v1", {"rollout": "gym"})
    assert not trains_batched("reinforce", "Acrobot-v1") and not trains_batched("ppo", "CartPole-v1")
    assert not trains_batched("reinforce", "CartPole-v1", {"rollout": "nope"})
    hp = {**SMALL_REINFORCE, "eval_every": 128}
    settings = CompareSettings(EMPTY, ["reinforce"], 2, steps=2 * 128, hyperparameters=hp)
    with plan_comparison(settings, tmp_path / "plan", checkpoints=CheckpointPolicy(0, 0)) as plan:
        tasks = [t for t in plan.items if isinstance(t, RunTask)]
        assert batch_tasks(tasks) == [tasks]
    gym = CompareSettings("CartPole-v1", ["reinforce"], 2, steps=128, hyperparameters={"rollout": "gym"})
    with plan_comparison(gym, tmp_path / "gym", checkpoints=CheckpointPolicy(0, 0)) as plan:
        tasks = [t for t in plan.items if isinstance(t, RunTask)]
        assert batch_tasks(tasks) == tasks
    b, loc = tmp_path / "batched", tmp_path / "local"
    got = _run_in_process(settings, b, batched=True)
    want = _run_in_process(settings, loc, batched=False)
    for pa, pb in zip(got, want, strict=True):
        assert pa["status"] == pb["status"] == "done" and pa["seed"] == pb["seed"]
        assert _files(Path(pa["run_dir"])) == _files(Path(pb["run_dir"]))
        ra, rb = pa["result"], pb["result"]
        for k in ("solved", "solve_env_steps", "env_steps", "eval_episodes", "iterations"):
            assert ra[k] == rb[k], k
        assert ra["eval_return_mean"] == pytest.approx(rb["eval_return_mean"], rel=1e-6)


def test_refusals_are_one_line() -> None:
    bad = [
        (lambda: ManySeeds.make("ppo", "CartPole-v1", [0, 1]), "cannot train seeds in one batch; batched methods"),
        (lambda: ManySeeds.make("st-gumbel", "CartPole-v1", [0, 0]), "each once"),
        (lambda: ManySeeds.make("st-gumbel", "CartPole-v1", []), "at least one seed"),
        (lambda: ManySeeds.make("st-gumbel", "CartPole-v1", [0], n_envs=0), "n_envs"),
        (lambda: ManySeeds.make("st-gumbel", "CartPole-v1", [0]).learn(0), "total_env_steps"),
        (lambda: ManySeeds.make("st-gumbel", "CartPole-v1", [0, 1]).learn(10, callbacks=[None]), "one callback per"),
        (lambda: check_backend("threads"), "valid: batched, local, ray"),
        (lambda: ManySeeds.make("reinforce", "CartPole-v1", [0, 1], rollout="gym"), "only on twin rollouts"),
        (lambda: ManySeeds.make("reinforce", "Acrobot-v1", [0, 1]), "only on twin rollouts.*'gym'"),
    ]
    for call, match in bad:
        with pytest.raises(ValueError, match=match) as info:
            call()
        assert "\n" not in str(info.value)
    assert set(batched_methods()) == {*PATHWISE_ESTIMATORS, "reinforce"}


def _files(run_dir: Path) -> set[str]:
    return {p.name for p in run_dir.iterdir() if p.name != ".lock"}


def _run_in_process(settings: CompareSettings, out: Path, batched: bool, stop_flag: object = None) -> list[dict]:
    """What compare's worker processes do, here: plan, then run the tasks (one batch, or one at a time)."""
    with plan_comparison(settings, out, checkpoints=CheckpointPolicy(0, 0)) as plan:
        tasks = [t for t in plan.items if isinstance(t, RunTask)]
        if batched:
            payloads = execute_batch(tasks, stop_flag)
        else:
            payloads = [execute_task(t, stop_flag) for t in tasks]
        if all(p["status"] == "done" for p in payloads):
            write_summary(out, settings, payloads)
        return payloads


def test_compare_batched_writes_what_processes_write(tmp_path: Path) -> None:
    """``train.py compare`` with its default backend (the seeds of st-gumbel in one batched process) and runs made one
    at a time as compare's ``local`` workers make them: the same run directories and files, ``result.json`` and
    ``metrics.csv`` with the same keys and rows, the same summary (wall-clock columns aside; returns within 1e-6
    relative, as the runs differ by float rounding only) and curves. Runs of 2 iterations on EmptyRoom-5x5."""
    settings = CompareSettings(EMPTY, ["st-gumbel"], 2, steps=128, hyperparameters={"eval_every": 64})
    b, loc = tmp_path / "batched", tmp_path / "local"
    argv = ["compare", "--env", EMPTY, "--methods", "st-gumbel", "--seeds", "2", "--steps", "128"]
    assert train_cli.main([*argv, "--hp", "eval_every=64", "--workers", "1", "--quiet", "--out", str(b)]) == 0
    _run_in_process(settings, loc, batched=False)
    assert {p.name for p in b.iterdir()} == {p.name for p in loc.iterdir()}
    for run in sorted(p.name for p in b.iterdir() if p.is_dir()):
        assert _files(b / run) == _files(loc / run)
        ra, rb = (json.loads((d / run / "result.json").read_text()) for d in (b, loc))
        assert ra.keys() == rb.keys()
        for k in ("solved", "solve_env_steps", "env_steps", "eval_episodes", "iterations", "seed", "method"):
            assert ra[k] == rb[k], (run, k)
        assert ra["eval_return_mean"] == pytest.approx(rb["eval_return_mean"], rel=1e-6)
        ma, mb = (list(csv.DictReader((d / run / "metrics.csv").open())) for d in (b, loc))
        assert len(ma) == len(mb) and ma[0].keys() == mb[0].keys()
    # Trained together: both seeds' training seconds are the batch's, row for row.
    seconds = [
        [r["time/train_seconds"] for r in csv.DictReader((b / f"st-gumbel__s{s}" / "metrics.csv").open())]
        for s in (0, 1)
    ]
    assert seconds[0] == seconds[1]
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (b, loc))
    assert sa.keys() == sb.keys()
    for row_a, row_b in zip(sa["rows"], sb["rows"], strict=True):
        assert row_a.keys() == row_b.keys()
        for k in row_a:
            if k not in WALL_CLOCK_COLUMNS and row_a[k] is not None and not isinstance(row_a[k], str):
                assert row_a[k] == pytest.approx(row_b[k], rel=1e-6), k
    assert (b / "curves.png").stat().st_size > 0
    assert (b / "summary.csv").read_text().splitlines()[0] == (loc / "summary.csv").read_text().splitlines()[0]


class _StopAfter:
    """A stop flag set once ``n`` checks have seen it unset (each seed's stop callback checks once per iteration)."""

    def __init__(self, n: int) -> None:
        self.n, self.checks, self.signum = n, 0, 2

    def is_set(self) -> bool:
        self.checks += 1
        return self.checks > self.n


def test_an_interrupted_batched_comparison_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    """Stopped after 2 iterations (every seed checkpointed, payloads "interrupted"), then rerun: the runs resume
    together from their checkpoints and end exactly where an uninterrupted batched comparison ends."""
    settings = CompareSettings(EMPTY, ["st-gumbel"], 2, steps=5 * 64, hyperparameters={"eval_every": 128})
    stopped = _run_in_process(settings, tmp_path / "cut", batched=True, stop_flag=_StopAfter(2 * 2))
    assert [p["status"] for p in stopped] == ["interrupted"] * 2 and stopped[0]["env_steps"] == 3 * 64
    resumed = _run_in_process(settings, tmp_path / "cut", batched=True)
    whole = _run_in_process(settings, tmp_path / "whole", batched=True)
    for a, b in zip(resumed, whole, strict=True):
        assert a["status"] == b["status"] == "done"
        assert {k: v for k, v in a["result"].items() if "wall" not in k} == {
            k: v for k, v in b["result"].items() if "wall" not in k
        }
        config = json.loads((Path(a["run_dir"]) / "config.json").read_text())
        assert [r["from_env_steps"] for r in config["resumed"]] == [3 * 64]
