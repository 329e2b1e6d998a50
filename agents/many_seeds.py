"""Many seeds of one twin method (a pathwise one, or ``reinforce`` on twin rollouts) trained as one batched
computation: one forward and one backward serve all.

:class:`ManySeeds` takes ``N`` :class:`agents.pathwise.PathwiseAgent` s of one method, env and config (seeds
differ) and trains them together, each exactly as it would train alone -- same initial parameters, optimiser,
noise stream, twin environments and critic -- with one SHAC window over ``N * n_envs`` twin environments per
iteration:

- **Parameters**: each network (policy, critic) is one :class:`StackedMLP` whose layer ``l`` holds the weights of
  every seed, ``(N, out, in)``, applied with ``torch.baddbmm``; it maps ``(N * B, in) -> (N * B, out)``, rows
  ``[s B, (s + 1) B)`` through seed ``s``'s network, so ``agents.pathwise.shac_window``, ``shac_actor_loss``,
  ``critic_loss`` and ``agents.returns.lambda_returns`` run unchanged over the ``N * B`` environments.
- **Losses and optimisers**: the actor loss is ``N`` times ``shac_actor_loss`` (its mean over ``N * B``
  environments is the mean of the seeds' own losses), i.e. the *sum* of the per-seed losses, so the gradient of
  seed ``s``'s parameters is the gradient of its own loss; the critic's minibatch loss is the sum of per-seed means.
  Gradients are clipped per seed (each seed's global L2 norm, as ``clip_grad_norm_``) and one Adam steps the
  stacked tensors: Adam is elementwise, so each seed's state and update are its own.
- **Noise**: every random draw -- Gumbel noise, twin resets and slips, the critic's minibatch permutations -- comes
  from the seed's own ``torch.Generator`` (``agent.generator``, seeded as a single run's), in a single run's order:
  :class:`SeedStreams` calls a batched function once with a probe generator and, if it drew noise, again per seed
  with each seed's generator. So seed ``s``'s run does not depend on its companions: it is bit-identical with any
  companions, or alone, when ``n_envs`` is a multiple of 8 (every tuned default; otherwise a seed's rows sit at
  other offsets of the twin's batched matrix products, whose rounding then differs), and it matches a single run
  of ``s`` up to the float rounding of the batched matmuls (the two then drift apart like runs on two machines;
  their outcome distributions match: ``tests/test_many_seeds.py``).
- **Evaluation**: the periodic checks and the final evaluations of all seeds run in one Gymnasium vector env of the
  real environment (``agents.evaluation.evaluate_many``) with the same episodes, seeds and "solved" rule as
  ``Agent.evaluate_progress`` and ``experiments.runner.final_evaluation``, acting through the stacked policies.

Each seed's record is a single run's: ``agent.record`` rows (logged to its own logger), ``solved`` /
``solve_env_steps`` / ``solve_wall_s``, checkpoints (``Agent.save``; :meth:`ManySeeds.sync` first writes the
stacked state back into the agents, which :meth:`ManySeeds.learn` does before callbacks and at the end), and its
policy (``agent.policy``, a plain ``GumbelPolicy``). ``time/train_seconds`` of every seed is the wall-clock of the
batched training so far: the seeds trained at the same time, so each took that long.

Cost: the per-seed draws are Python loops over the seeds: only the Gumbel draw for ``st-gumbel`` and ``relaxed``
(their relaxation runs once over all seeds, bit-identical to per-seed ``sample_action``), the whole
``sample_action`` for the other estimators (about 70 us per seed and step on one CPU thread, backward included),
and the twin's noise: only its draws (``step_noise`` / ``reset_noise``) for a twin with pre-drawn noise
(``envs.differentiable.PreDrawnNoiseEnv``: the gridworld and CartPole twins), else every noisy twin call. The rest
is one computation over ``N * B`` environments, bound by arithmetic on CartPole-v1 from about 10 seeds on (one
thread: 108 ms per iteration for 10 seeds and 0.46 s for 100, against 45-49 ms for one seed alone;
``bench/bench_many_seeds.py``). On FourRooms-11x11 stepping the gridworld twin once for all 10 seeds instead of
once per seed cut a 10-seed st-gumbel iteration 1.5-1.7x (median 46-52 ms against 77-80 ms; one seed alone
21-25 ms; ``bench/bench_many_seeds.py --iteration-times``, on a loaded core).

Usage (``make_agent`` users)::

    from agents.many_seeds import ManySeeds
    group = ManySeeds.make("st-gumbel", "CartPole-v1", seeds=range(10))
    group.learn(50_000)
    for agent in group.agents:
        print(agent.seed, agent.solved, agent.solve_env_steps)
        agent.policy.save(f"policy_s{agent.seed}.pt")

``reinforce`` on twin rollouts (``rollout="twin"``, what ``"auto"`` gives on CartPole-v1 and the ``gumbel_rl/``
maps) trains the same way (:class:`ManyReinforceSeeds`, which ``ManySeeds(agents)`` and :meth:`ManySeeds.make` build
for it): stacked policy and value networks under one Adam, each seed's categorical samples and twin noise from its
own generator in a single run's order, the twin stepped once over ``N * B`` environments under ``torch.no_grad()``,
and the sum over seeds of each seed's own ``agents.reinforce.reinforce_with_baseline_loss`` (advantages normalised
per seed), clipped per seed; on Gymnasium rollouts it is refused with one line.

``train.py compare`` uses it for the pathwise methods and twin-rollout ``reinforce`` (its default ``batched``
backend, :func:`trains_batched`); other methods are refused with one line. The exploration bonus
(``explore_bonus``) is each seed's own (its visit counts and reward unit), added row by row by :class:`StackedTwin`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

import envs
from agents.base import (
    EVAL_EPISODES,
    EVAL_MEAN,
    EVAL_SOLVED,
    EVAL_STD,
    ITERATIONS,
    SECONDS,
    STEPS,
    check_positive,
    check_threads,
    torch_threads,
)
from agents.callbacks import BaseCallback, as_callback
from agents.critic import count_bonus, reward_scale
from agents.evaluation import SOLVE_EPISODES, EvalResult, evaluate_many, is_solved
from agents.pathwise import PathwiseAgent, shac_actor_loss, shac_window
from agents.registry import METHODS, resolve
from agents.reinforce import ReinforceAgent, reinforce_with_baseline_loss, resolve_rollout, twin_rollout
from agents.returns import lambda_returns
from envs.differentiable import PreDrawnNoiseEnv
from gumbel_rl.estimators import sample_action
from gumbel_rl.gumbel import check_logits, gumbel_max, gumbel_noise, softmax_tau, straight_through
from gumbel_rl.policy import GumbelPolicy

# ---- stacked networks -------------------------------------------------------------------------------------------


class StackedMLP(nn.Module):
    """``N`` MLPs of one architecture (``gumbel_rl.policy.mlp``: ``Linear`` layers with activations between) as one
    module: input ``(N * B, in)``, rows ``[s B, (s + 1) B)`` through network ``s``, output ``(N * B, out)``.

    Layer ``l``'s parameters are ``weight_l`` ``(N, out, in)`` and ``bias_l`` ``(N, out)``, the seeds' own
    ``nn.Linear`` weights stacked (copies: :meth:`copy_to` writes them back).

    Raises:
        ValueError: no networks, or networks of different architectures.
    """

    def __init__(self, nets: Sequence[nn.Sequential]) -> None:
        super().__init__()
        if not nets:
            raise ValueError("StackedMLP needs at least one network")
        shapes = [[tuple(p.shape) for p in net.parameters()] for net in nets]
        if any(s != shapes[0] for s in shapes):
            raise ValueError("StackedMLP needs networks of one architecture")
        self.n_seeds = len(nets)
        self.layers: list[tuple[str, int] | nn.Module] = []
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for i, module in enumerate(nets[0]):
            if isinstance(module, nn.Linear):
                linears = [net[i] for net in nets]
                self.weights.append(nn.Parameter(torch.stack([lin.weight.detach() for lin in linears]).clone()))
                self.biases.append(nn.Parameter(torch.stack([lin.bias.detach() for lin in linears]).clone()))
                self.layers.append(("linear", len(self.weights) - 1))
            else:
                self.layers.append(module)  # an activation: no parameters

    def ordered_parameters(self) -> list[nn.Parameter]:
        """The stacked parameters in the order of one network's ``parameters()`` (weight, bias per layer)."""
        out: list[nn.Parameter] = []
        for w, b in zip(self.weights, self.biases, strict=True):
            out += [w, b]
        return out

    def forward(self, x: torch.Tensor, seeds: torch.Tensor | None = None) -> torch.Tensor:
        """``(N * B, in) -> (N * B, out)``; with ``seeds`` (a long tensor of ``M`` indices), the input holds ``M``
        blocks and block ``j`` goes through network ``seeds[j]``."""
        n = self.n_seeds if seeds is None else int(seeds.numel())
        h = x.reshape(n, -1, x.shape[-1])
        for layer in self.layers:
            if isinstance(layer, tuple):
                w, b = self.weights[layer[1]], self.biases[layer[1]]
                if seeds is not None:
                    w, b = w[seeds], b[seeds]
                if w.shape[1] == 1:
                    # One output (a value head): torch's batched matmul takes another kernel for a single seed, so
                    # a product and a row sum, whose result per seed is the same whatever the number of seeds.
                    h = (h * w[:, 0].unsqueeze(1)).sum(-1, keepdim=True) + b.unsqueeze(1)
                else:
                    h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
            else:
                h = layer(h)
        return h.reshape(-1, h.shape[-1])

    @torch.no_grad()
    def copy_to(self, nets: Sequence[nn.Module]) -> None:
        """Write network ``s``'s parameters into ``nets[s]`` (same architecture)."""
        for s, net in enumerate(nets):
            for mine, theirs in zip(self.ordered_parameters(), net.parameters(), strict=True):
                theirs.copy_(mine[s])


def stacked_adam(
    stacked: StackedMLP | Sequence[StackedMLP],
    optimizers: Sequence[torch.optim.Optimizer],
    nets: Sequence[nn.Module] | Sequence[Sequence[nn.Module]],
    lr: float,
) -> torch.optim.Adam:
    """One Adam over ``stacked``'s parameters holding the seeds' own Adam states (``optimizers[s]`` over
    ``nets[s].parameters()``, torch's defaults otherwise, as ``PathwiseAgent`` builds them). With several stacked
    networks, ``nets[s]`` lists seed ``s``'s networks in the same order (one Adam over all of them, as
    ``ReinforceAgent``'s over its policy and value networks).

    Raises:
        ValueError: the seeds' optimisers have taken different numbers of steps.
    """
    params, seed_params = _adam_params(stacked, nets)
    opt = torch.optim.Adam(params, lr=lr)
    for j, param in enumerate(params):
        states = [o.state.get(mine[j], {}) for o, mine in zip(optimizers, seed_params, strict=True)]
        if not any(states):
            continue
        steps = {float(st["step"]) for st in states if st}
        if len(steps) != 1 or not all(states):
            raise ValueError("the seeds' optimisers must have taken the same number of steps to be trained together")
        opt.state[param] = {
            "step": states[0]["step"].detach().clone(),
            "exp_avg": torch.stack([st["exp_avg"] for st in states]).clone(),
            "exp_avg_sq": torch.stack([st["exp_avg_sq"] for st in states]).clone(),
        }
    return opt


def _adam_params(
    stacked: StackedMLP | Sequence[StackedMLP], nets: Sequence[nn.Module] | Sequence[Sequence[nn.Module]]
) -> tuple[list[nn.Parameter], list[list[nn.Parameter]]]:
    """The stacked parameters in order, and each seed's own parameters in the same order."""
    stacks = [stacked] if isinstance(stacked, StackedMLP) else list(stacked)
    params = [p for st in stacks for p in st.ordered_parameters()]
    seed_params = []
    for mine in nets:
        modules = [mine] if isinstance(mine, nn.Module) else list(mine)
        seed_params.append([p for m in modules for p in m.parameters()])
    return params, seed_params


def copy_adam_state(
    opt: torch.optim.Optimizer,
    stacked: StackedMLP | Sequence[StackedMLP],
    optimizers: Sequence[torch.optim.Optimizer],
    nets: Sequence[nn.Module] | Sequence[Sequence[nn.Module]],
) -> None:
    """Write the stacked Adam state back into each seed's optimiser (copies), and its learning rate (``stacked``
    and ``nets`` as :func:`stacked_adam`'s)."""
    lr = opt.param_groups[0]["lr"]
    params, seed_params = _adam_params(stacked, nets)
    for s, (o, theirs) in enumerate(zip(optimizers, seed_params, strict=True)):
        for group in o.param_groups:
            group["lr"] = lr
        for param, mine in zip(theirs, params, strict=True):
            st = opt.state.get(mine)
            if st:
                o.state[param] = {
                    "step": st["step"].detach().clone(),
                    "exp_avg": st["exp_avg"][s].clone(),
                    "exp_avg_sq": st["exp_avg_sq"][s].clone(),
                }


def clip_grad_norm_per_seed(params: Sequence[torch.Tensor], max_norm: float, n_seeds: int) -> torch.Tensor:
    """``nn.utils.clip_grad_norm_`` for each seed of stacked parameters (leading dimension ``n_seeds``): seed
    ``s``'s gradients are scaled by ``min(1, max_norm / (norm_s + 1e-6))``, ``norm_s`` their global L2 norm.
    Returns the norms before clipping, ``(n_seeds,)``."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(n_seeds)
    # Summed one parameter at a time (not a reduction over a stacked (P, N) tensor, whose order depends on N), so
    # that a seed's norm is bit-identical whatever its companions.
    squares = torch.zeros_like(grads[0].reshape(n_seeds, -1)[:, 0])
    for g in grads:
        squares = squares + torch.linalg.vector_norm(g.reshape(n_seeds, -1), dim=1).square()
    norms = squares.sqrt()
    coef = torch.clamp(max_norm / (norms + 1e-6), max=1.0)
    for g in grads:
        g.mul_(coef.reshape(-1, *([1] * (g.dim() - 1))))
    return norms


# ---- per-seed noise ---------------------------------------------------------------------------------------------


def _split(x: Any, n: int) -> list[Any]:
    """A batched tensor or NamedTuple of them (batch on dim 0) cut into ``n`` equal blocks."""
    if isinstance(x, torch.Tensor):
        return list(x.chunk(n)) if x.dim() > 0 else [x] * n
    if isinstance(x, tuple) and hasattr(x, "_fields"):
        parts = [_split(f, n) for f in x]
        return [type(x)(*(p[s] for p in parts)) for s in range(n)]
    return [x] * n  # a non-batched argument (a number, a string)


def _cat(outs: Sequence[Any]) -> Any:
    """Inverse of :func:`_split` over outputs: tensors, NamedTuples and tuples of them, concatenated on dim 0."""
    first = outs[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(list(outs))
    if isinstance(first, tuple):
        fields = [_cat([o[i] for o in outs]) for i in range(len(first))]
        return type(first)(*fields) if hasattr(first, "_fields") else tuple(fields)
    raise TypeError(f"cannot concatenate outputs of type {type(first).__name__}")


class SeedStreams:
    """The seeds' own generators, and how a batched call that may draw noise is made so that each seed's noise
    comes from its own generator.

    :meth:`call` runs ``fn(*args, generator=probe)`` over the whole batch; if that drew nothing from the probe
    generator (a deterministic step, a reset with nothing to reset) its result stands, else ``fn`` runs once per
    seed on the seed's block of every argument with the seed's generator -- the draws a single run makes -- and
    the results are concatenated. A call site (``site``) seen drawing noise once goes per seed from then on.
    """

    def __init__(self, generators: Sequence[torch.Generator]) -> None:
        self.generators = list(generators)
        self.probe = torch.Generator(device=self.generators[0].device)
        self.noisy: set[str] = set()

    def __len__(self) -> int:
        return len(self.generators)

    def call(self, site: str, fn: Callable[..., Any], *args: Any) -> Any:
        if site not in self.noisy:
            before = self.probe.get_state()
            out = fn(*args, generator=self.probe)
            if torch.equal(self.probe.get_state(), before):
                return out
            self.noisy.add(site)
        blocks = [_split(a, len(self)) for a in args]
        return _cat([fn(*(b[s] for b in blocks), generator=g) for s, g in enumerate(self.generators)])

    def draw(self, fn: Callable[..., torch.Tensor | None], *args: Any) -> torch.Tensor | None:
        """Each seed's noise for its block of a batched call: ``fn(*blocks_s, generator=g_s)`` per seed ``s`` (its
        block of every argument, :func:`_split`; a ``PreDrawnNoiseEnv``'s ``step_noise`` / ``reset_noise``),
        concatenated on dim 0; None if ``fn`` draws none.

        Raises:
            RuntimeError: ``fn`` returned noise for some seeds and None for others.
        """
        blocks = [_split(a, len(self)) for a in args]
        parts = [fn(*(b[s] for b in blocks), generator=g) for s, g in enumerate(self.generators)]
        drawn = [p for p in parts if p is not None]
        if not drawn:
            return None
        if len(drawn) != len(parts):
            raise RuntimeError(f"{getattr(fn, '__name__', fn)!r} drew noise for some seeds and none for others")
        return torch.cat(drawn)


def _refuse_generator(generator: torch.Generator | None) -> None:
    if generator is not None:
        raise ValueError("stacked seeds draw from their own generators; pass generator=None")


class StackedPolicy(nn.Module):
    """The policies of ``N`` seeds as one: ``act`` maps ``(N * B, obs_dim)`` features to ``(N * B, n_actions)``
    actions and logits (the interface ``shac_window`` uses), each seed's Gumbel noise from its own generator.

    ``entropy_sum``: ``(N,)`` the sum over ``act`` calls since :meth:`reset_entropy` of each seed's mean policy
    entropy (nats), without gradient (the per-seed ``train/entropy``).
    """

    def __init__(self, policies: Sequence[GumbelPolicy], streams: SeedStreams) -> None:
        super().__init__()
        self.net = StackedMLP([p.net for p in policies])
        self.k = policies[0].k
        self.streams = streams
        self.entropy_sum = torch.zeros(len(policies), device=policies[0].device)

    def reset_entropy(self) -> None:
        self.entropy_sum = torch.zeros_like(self.entropy_sum)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)

    def act(
        self,
        features: torch.Tensor,
        tau: float | None = None,
        estimator: str | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(actions carrying ``estimator``'s gradient, logits), as ``GumbelPolicy.act``; ``generator`` must be
        None (each seed draws from its own)."""
        _refuse_generator(generator)
        if tau is None or estimator is None:
            raise ValueError("StackedPolicy.act needs tau and estimator")
        logits = self.net(features)
        check_logits(logits)  # once for all seeds; then each seed's draw skips the checks (same values)
        if estimator in ("st-gumbel", "relaxed"):
            # Their noise enters as z = logits + g: only the draw of g goes per seed (the stream and arithmetic of
            # sample_action's own draw, bit for bit), the relaxation runs once over all seeds.
            n_rows = logits.shape[0] // len(self.streams)
            with torch.no_grad():
                g = torch.cat(
                    [
                        gumbel_noise(
                            (n_rows, logits.shape[-1]), dtype=logits.dtype, device=logits.device, generator=gen
                        )
                        for gen in self.streams.generators
                    ]
                )
            z = logits + g
            action = straight_through(z, tau=tau) if estimator == "st-gumbel" else softmax_tau(z, tau)
        else:

            def draw(lg: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
                return sample_action(lg, estimator, tau, k=self.k, generator=generator, validate=False)

            action = self.streams.call("act", draw, logits)
        with torch.no_grad():
            logp = torch.log_softmax(logits, dim=-1)
            ent = -(logp.exp() * logp).sum(-1)
            self.entropy_sum = self.entropy_sum + ent.reshape(len(self.streams), -1).mean(1)
        return action, logits

    @torch.no_grad()
    def sample(self, features: torch.Tensor) -> torch.Tensor:
        """Exact categorical action indices ``(N * B,)`` without gradient, each seed's the one
        ``sample_action(logits, "reinforce", generator=g).argmax(-1)`` draws from its generator ``g`` (Gumbel-max:
        only the draw of the noise goes per seed, the argmax runs once over all seeds)."""
        logits = self.net(features)
        check_logits(logits)
        n_rows = logits.shape[0] // len(self.streams)
        g = torch.cat(
            [
                gumbel_noise((n_rows, logits.shape[-1]), dtype=logits.dtype, device=logits.device, generator=gen)
                for gen in self.streams.generators
            ]
        )
        index: torch.Tensor = (logits + g).max(-1).indices
        return index


class StackedTwin:
    """``N`` copies of one differentiable twin as one :class:`envs.DifferentiableEnv` of ``N * B`` environments,
    rows ``[s B, (s + 1) B)`` seed ``s``'s; ``reset``, ``reset_done`` and ``step`` draw each seed's noise from its
    own generator (:class:`SeedStreams`; the ``generator`` argument must be None), the rest is the twin's own.

    A twin that draws its noise apart from its dynamics (``envs.differentiable.PreDrawnNoiseEnv``: the gridworld and
    CartPole twins) has only the draws made per seed (``step_noise`` / ``reset_noise`` with each seed's generator,
    :meth:`SeedStreams.draw`), and ``step`` / ``reset_done`` run once over all ``N * B`` environments with that
    noise; any other twin's noisy calls run once per seed (:meth:`SeedStreams.call`)."""

    def __init__(self, twin: Any, streams: SeedStreams) -> None:
        self.twin, self.streams = twin, streams
        self.predrawn = isinstance(twin, PreDrawnNoiseEnv)
        self.bonus: torch.Tensor | None = None
        """None, or each row's exploration bonus per cell, ``(N * B, n_cells)``: ``training_reward`` then adds
        ``visit_distribution(next_state) . bonus`` row by row (each seed's own bonus; ``shac_window``'s ``bonus``
        argument is one vector for all rows)."""

    @property
    def env_id(self) -> str:
        return str(self.twin.env_id)

    @property
    def obs_dim(self) -> int:
        return int(self.twin.obs_dim)

    @property
    def n_actions(self) -> int:
        return int(self.twin.n_actions)

    @property
    def max_episode_steps(self) -> int | None:
        return self.twin.max_episode_steps  # type: ignore[no-any-return]

    def reset(self, batch: int, generator: torch.Generator | None = None) -> Any:
        _refuse_generator(generator)
        n = len(self.streams)
        if batch % n:
            raise ValueError(f"batch {batch} is not a multiple of the {n} seeds")
        return _cat([self.twin.reset(batch // n, generator=g) for g in self.streams.generators])

    def reset_done(self, state: Any, done: torch.Tensor, generator: torch.Generator | None = None) -> Any:
        _refuse_generator(generator)
        if self.predrawn:
            return self.twin.reset_done(state, done, noise=self.streams.draw(self.twin.reset_noise, done))
        return self.streams.call("reset_done", self.twin.reset_done, state, done)

    def step(
        self, state: Any, action: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor]:
        _refuse_generator(generator)
        out: tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor]
        if self.predrawn:
            n = len(self.streams)
            noise = self.streams.draw(self.twin.step_noise, action.shape[0] // n)
            out = self.twin.step(state, action, noise=noise)
        else:
            out = self.streams.call("step", self.twin.step, state, action)
        return out

    def observe(self, state: Any) -> torch.Tensor:
        return self.twin.observe(state)  # type: ignore[no-any-return]

    def continuation(self, state: Any) -> torch.Tensor:
        return self.twin.continuation(state)  # type: ignore[no-any-return]

    def training_reward(self, state: Any, action: torch.Tensor, next_state: Any, reward: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.twin.training_reward(state, action, next_state, reward)
        if self.bonus is not None:
            out = out + (self.twin.visit_distribution(next_state) * self.bonus).sum(-1)
        return out

    def visit_distribution(self, state: Any) -> torch.Tensor:
        return self.twin.visit_distribution(state)  # type: ignore[no-any-return]


# ---- evaluation -------------------------------------------------------------------------------------------------


def evaluate_policies(
    policies: Sequence[GumbelPolicy] | StackedMLP,
    template: GumbelPolicy,
    env_id: str,
    episodes: int,
    seeds: Sequence[int],
    deterministic: bool = True,
    n_envs: int = 4,
    noise_seed: int | None = None,
    which: Sequence[int] | None = None,
) -> list[EvalResult]:
    """``agents.evaluation.evaluate`` of many policies at once: policy ``j`` on env seed ``seeds[j]`` (copies
    ``seeds[j] + i``), all in one Gymnasium vector env, the policies' greedy (or sampled) actions from one batched
    forward.

    Args:
        policies: the policies, or their stacked networks (then ``which`` selects the networks to evaluate).
        template: a policy of their spaces (converts observations to features, as ``GumbelPolicy.predict``).
        noise_seed: for ``deterministic=False``, each policy samples with its own generator seeded ``noise_seed``
            (the stream a single evaluation draws from torch's global generator after ``torch.manual_seed``).
    """
    net = policies if isinstance(policies, StackedMLP) else StackedMLP([p.net for p in policies])
    device = template.device
    index = None if which is None else torch.as_tensor(list(which), dtype=torch.long, device=device)
    n = len(seeds)
    generators = []
    if not deterministic:
        for _ in range(n):
            g = torch.Generator(device=device)
            g.manual_seed(0 if noise_seed is None else int(noise_seed))
            generators.append(g)
    start = int(template.action_space.start)

    def act(obs: np.ndarray) -> np.ndarray:
        features, _ = template.obs_to_tensor(obs.reshape(-1, *obs.shape[2:]))
        with torch.no_grad():
            logits = net(features, index)
            if deterministic:
                idx = logits.argmax(-1)
            else:
                blocks = logits.chunk(n)
                idx = torch.cat(
                    [gumbel_max(b, generator=g, validate=False) for b, g in zip(blocks, generators, strict=True)]
                )
        return idx.reshape(n, -1).cpu().numpy().astype(np.int64) + start

    return evaluate_many(act, env_id, episodes, seeds, deterministic=deterministic, n_envs=n_envs)


# ---- the trainer ------------------------------------------------------------------------------------------------


class _SeedEpisodes:
    """The seeds' ``EpisodeReturns`` fed from one batched running return of ``N * B`` environments (the finished
    returns go to each seed's own ``agent.episodes`` in a single run's order)."""

    def __init__(self, agents: Sequence[PathwiseAgent]) -> None:
        self.agents = list(agents)
        for a in self.agents:
            a.episodes._flush()
        self.running = torch.cat([a.episodes.running for a in self.agents])
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []

    def add(self, rewards: torch.Tensor, done: torch.Tensor) -> None:
        self.running = self.running + rewards.detach()
        self._pending.append((self.running, done))
        self.running = self.running.masked_fill(done, 0.0)

    def flush(self) -> None:
        if not self._pending:
            return
        returns = torch.stack([r for r, _ in self._pending]).cpu()
        done = torch.stack([d for _, d in self._pending]).cpu()
        self._pending.clear()
        for a, r, d in zip(
            self.agents, returns.chunk(len(self.agents), 1), done.chunk(len(self.agents), 1), strict=True
        ):
            a.episodes.add_finished(r, d)

    def copy_to_agents(self) -> None:
        self.flush()
        for a, r in zip(self.agents, self.running.chunk(len(self.agents)), strict=True):
            a.episodes.running = r.clone()


def check_batchable(agents: Sequence[Any]) -> None:
    """Raise ``ValueError`` (one line) unless ``agents`` can train together: at least one, all ``PathwiseAgent`` s or
    all twin-rollout ``ReinforceAgent`` s, of one method, env, config and device at the same env step, distinct
    seeds."""
    if not agents:
        raise ValueError("ManySeeds needs at least one agent")
    first = agents[0]
    kind = PathwiseAgent if isinstance(first, PathwiseAgent) else ReinforceAgent
    if not all(isinstance(a, kind) for a in agents):
        bad = next(a for a in agents if not isinstance(a, kind))
        raise ValueError(
            f"method {bad.method!r} cannot train seeds in one batch; batched methods: {', '.join(batched_methods())}"
        )
    if kind is ReinforceAgent:
        _check_rollout(first.env_id, first.rollout)
    for a in agents:
        if (a.method, a.env_id, a.config.to_dict(), a.device) != (
            first.method,
            first.env_id,
            first.config.to_dict(),
            first.device,
        ):
            raise ValueError("agents trained together must share method, env, hyperparameters and device")
        if a.num_env_steps != first.num_env_steps:
            raise ValueError(
                f"agents trained together must be at the same env step, got {first.num_env_steps} and {a.num_env_steps}"
            )
    seeds = [a.seed for a in agents]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds trained together must be distinct, got {seeds}")


def _check_rollout(env_id: str, rollout: str) -> None:
    if rollout != "twin":
        raise ValueError(
            f"reinforce trains seeds in one batch only on twin rollouts, and its rollout on {env_id!r} is "
            f"{rollout!r}; twins: {', '.join(envs.differentiable_ids())}"
        )


def batched_methods() -> list[str]:
    """The registered methods whose seeds :class:`ManySeeds` trains in one batch: the pathwise twin methods, and
    ``reinforce`` on twin rollouts (see :func:`trains_batched`)."""
    return [m for m, info in METHODS.items() if info.agent_cls in (PathwiseAgent, ReinforceAgent)]


def trains_batched(method: str, env_id: str, hyperparameters: dict[str, Any] | None = None) -> bool:
    """Whether seeds of ``method`` on ``env_id`` with these overrides of the tuned defaults train in one batch: a
    pathwise twin method, or ``reinforce`` whose rollout resolves to the twin. Settings that the method refuses
    give False (a run alone then reports them)."""
    if method not in batched_methods() or env_id not in envs.differentiable_ids():
        return False  # (an id without a twin is not looked up: it may need packages imported elsewhere)
    try:
        info, config = resolve(method, env_id, dict(hyperparameters or {}))
        return info.agent_cls is not ReinforceAgent or resolve_rollout(config.rollout, env_id) == "twin"  # type: ignore[attr-defined]
    except ValueError:
        return False


class ManySeeds:
    """``N`` pathwise agents (one method, env and config; distinct seeds) trained as one batched computation; see
    the module docstring.

    Build it from agents (``ManySeeds(agents)``, e.g. loaded from checkpoints at one env step) or with
    :meth:`make`. Attributes: ``agents`` (the seeds' own ``PathwiseAgent`` s: records, results, policies; current
    after :meth:`learn` or :meth:`sync`), ``num_env_steps``.

    Raises:
        ValueError: see :func:`check_batchable`.
    """

    def __new__(cls, agents: Sequence[Any], n_threads: int | None = 1) -> ManySeeds:
        """``ManySeeds(agents)`` of ``ReinforceAgent`` s is a :class:`ManyReinforceSeeds`."""
        if cls is ManySeeds and agents and isinstance(agents[0], ReinforceAgent):
            cls = ManyReinforceSeeds
        return super().__new__(cls)

    def __init__(self, agents: Sequence[Any], n_threads: int | None = 1) -> None:
        check_batchable(agents)
        check_threads(n_threads)
        self.agents = list(agents)
        self.n_threads = n_threads
        self._stack(self.agents)

    @classmethod
    def make(
        cls,
        method: str,
        env_id: str,
        seeds: Sequence[int],
        device: str = "auto",
        n_threads: int | None = 1,
        **hyperparameters: Any,
    ) -> ManySeeds:
        """``N`` agents built as ``make_agent(method, env_id, seed, device, **hyperparameters)`` for each seed, to
        train together.

        Raises:
            ValueError: what ``make_agent`` refuses, a method that is not batched (naming those that are), no seeds
                or repeated seeds.
        """
        seeds = list(seeds)
        if method in METHODS and method not in batched_methods():
            raise ValueError(
                f"method {method!r} cannot train seeds in one batch; batched methods: {', '.join(batched_methods())}"
            )
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError(f"give at least one seed, each once; got {seeds}")
        info, config = resolve(method, env_id, hyperparameters)
        if info.agent_cls is ReinforceAgent:
            _check_rollout(env_id, resolve_rollout(config.rollout, env_id))  # type: ignore[attr-defined]
        agents = [info.build(env_id, config, seed=s, device=device, n_threads=None) for s in seeds]
        return cls(agents, n_threads=n_threads)

    # ---- stacking ------------------------------------------------------------------------------------------
    def _stack(self, agents: list[PathwiseAgent]) -> None:
        """Build the stacked networks, optimisers, noise streams and twin state of ``agents`` (the active seeds)."""
        self.active = agents
        first = agents[0]
        self.config = first.config
        self.streams = SeedStreams([a.generator for a in agents])
        self.policy = StackedPolicy([a.policy for a in agents], self.streams)
        self.critic = StackedMLP([a.critic for a in agents])
        cfg = self.config
        self.actor_opt = stacked_adam(
            self.policy.net, [a.actor_opt for a in agents], [a.policy.net for a in agents], cfg.learning_rate
        )
        self.critic_opt = stacked_adam(
            self.critic, [a.critic_opt for a in agents], [a.critic for a in agents], cfg.critic_learning_rate
        )
        self.twin = StackedTwin(first.twin, self.streams)
        self.twin_state = _cat([a.twin_state for a in agents])
        self.episodes = _SeedEpisodes(agents)
        self.visits = torch.stack([a.visits for a in agents])  # (N, n_cells): each seed's expected visits
        self.reward_unit = torch.stack([a.reward_unit for a in agents])  # (N,): each seed's bonus unit u
        self._tau: float | None = None  # the temperature of the last iteration (PathwiseAgent leaves it in policy.tau)

    def sync(self) -> None:
        """Write the stacked state (networks, optimiser states, twin states, episode returns, temperature) back into
        the active agents, so that each is exactly its single-run self (``save`` it, ``predict`` with it)."""
        nets = [a.policy.net for a in self.active]
        critics = [a.critic for a in self.active]
        self.policy.net.copy_to(nets)
        self.critic.copy_to(critics)
        copy_adam_state(self.actor_opt, self.policy.net, [a.actor_opt for a in self.active], nets)
        copy_adam_state(self.critic_opt, self.critic, [a.critic_opt for a in self.active], critics)
        for j, (a, st) in enumerate(zip(self.active, _split(self.twin_state, len(self.active)), strict=True)):
            a.twin_state = type(st)(*(x.clone() for x in st))
            a.visits, a.reward_unit = self.visits[j].clone(), self.reward_unit[j].clone()
            if self._tau is not None:
                a.policy.tau.fill_(self._tau)
        self.episodes.copy_to_agents()

    @property
    def num_env_steps(self) -> int:
        return int(self.agents[0].num_env_steps)

    # ---- one iteration ---------------------------------------------------------------------------------------
    def _train_iteration(self) -> tuple[int, list[dict[str, float]]]:
        """One SHAC iteration of every active seed (``PathwiseAgent._train_iteration``, batched): (env steps per
        seed, each seed's metrics)."""
        cfg = self.config
        first = self.active[0]
        n = len(self.active)
        tau = float(first.schedule(first.num_env_steps))
        self._tau = tau
        lr = first._set_learning_rates()  # the shared schedule; copied to the stacked optimisers
        for opt, src in ((self.actor_opt, first.actor_opt), (self.critic_opt, first.critic_opt)):
            for group in opt.param_groups:
                group["lr"] = src.param_groups[0]["lr"]
        self.policy.reset_entropy()
        self.twin.bonus = self._exploration_bonus()
        window = shac_window(
            self.policy,  # type: ignore[arg-type]
            self.twin,
            self.twin_state,
            self.critic,
            horizon=cfg.horizon,
            actor_horizon=cfg.actor_horizon,
            gamma=cfg.gamma,
            tau=tau,
            estimator=first.estimator,
            generator=None,
            entropy_grad=cfg.ent_coef > 0,
            count_cells=cfg.explore_bonus > 0,
        )
        if cfg.explore_bonus > 0:
            self._count_visits(window.cells, window.rewards)
        # The mean over N * B environments is the mean of the seeds' own losses: times N, their sum, whose
        # gradient in seed s's parameters is the gradient of seed s's loss.
        actor_loss = shac_actor_loss(window, cfg.horizon, cfg.ent_coef) * n
        params = self.policy.net.ordered_parameters()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward(inputs=list(params))
        grad_norm = clip_grad_norm_per_seed(params, cfg.max_grad_norm, n)
        self.actor_opt.step()
        self.twin_state = window.next_state
        for env_reward, done in zip(window.env_rewards, window.done, strict=True):
            self.episodes.add(env_reward, done)
        targets = lambda_returns(
            window.rewards, window.next_values, window.terminated, window.done, cfg.gamma, cfg.gae_lambda
        )
        loss_v = self._update_critic(window.observations, targets)
        with torch.no_grad():
            entropy = self.policy.entropy_sum / cfg.horizon
            objective = window.objective.detach().reshape(n, -1).mean(1)
            seed_actor_loss = -objective / cfg.horizon - cfg.ent_coef * entropy
            window_reward = window.rewards.reshape(cfg.horizon, n, -1).transpose(0, 1).reshape(n, -1).mean(1)
            columns = torch.stack([seed_actor_loss, loss_v, grad_norm, window_reward, entropy], 1).cpu().tolist()
        self.episodes.flush()
        metrics = []
        for a, (al, lv, gn, wr, ent) in zip(self.active, columns, strict=True):
            m = {
                "train/actor_loss": al,
                "train/critic_loss": lv,
                "train/tau": tau,
                "train/learning_rate": lr,
                "train/grad_norm": gn,
                "train/window_reward": wr,
                "train/entropy": ent,
            }
            metrics.append({**m, **a.episodes.metrics()})
        return cfg.n_envs * cfg.horizon, metrics

    def _exploration_bonus(self) -> torch.Tensor | None:
        """``PathwiseAgent._exploration_bonus`` of every seed, as rows: ``(N * B, n_cells)``; None while off (and for
        the first window, which sets the seeds' reward units)."""
        beta = self.config.explore_bonus
        if beta <= 0 or not bool((self.reward_unit > 0).all()):
            return None
        per_seed = count_bonus(self.visits, beta) * self.reward_unit.unsqueeze(1)
        return per_seed.repeat_interleave(self.config.n_envs, dim=0)

    def _count_visits(self, cells: torch.Tensor | None, rewards: torch.Tensor) -> None:
        """``PathwiseAgent._count_visits`` per seed, on the seed's own block of the window (as a single run's
        contiguous tensors, so that the sums are a single run's)."""
        assert cells is not None  # the window was rolled with count_cells
        n = len(self.active)
        for j, (c, r) in enumerate(zip(cells.chunk(n, 1), rewards.chunk(n, 1), strict=True)):
            self.visits[j] += c.contiguous().sum((0, 1))
            if not self.reward_unit[j] > 0:
                self.reward_unit[j] = 1.0 / reward_scale(r.contiguous())

    def _update_critic(self, observations: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``PathwiseAgent._update_critic`` per seed: each seed's states (its ``H * B`` in a single run's order),
        permuted by its own generator; returns each seed's last-pass mean loss, ``(N,)``."""
        cfg = self.config
        n = len(self.active)
        horizon, _, dim = observations.shape
        obs = observations.reshape(horizon, n, -1, dim).transpose(0, 1).reshape(n, -1, dim)
        tgt = targets.reshape(horizon, n, -1).transpose(0, 1).reshape(n, -1)
        size = obs.shape[1]
        batch = max(1, size // cfg.critic_minibatches)
        device = obs.device
        last = torch.zeros(n, device=device)
        params = self.critic.ordered_parameters()
        for _ in range(cfg.critic_epochs):
            perm = torch.stack([torch.randperm(size, generator=g, device=device) for g in self.streams.generators])
            total = torch.zeros(n, device=device)
            for i in range(cfg.critic_minibatches):
                idx = perm[:, i * batch : (i + 1) * batch]
                o = obs.gather(1, idx.unsqueeze(-1).expand(-1, -1, dim)).reshape(-1, dim)
                t = tgt.gather(1, idx)
                # Seed s's loss is critic_loss on its minibatch; the sum's gradient in its parameters is its own.
                loss = (self.critic(o).reshape(n, -1) - t).pow(2).mean(1)
                self.critic_opt.zero_grad(set_to_none=True)
                loss.sum().backward()
                clip_grad_norm_per_seed(params, cfg.max_grad_norm, n)
                self.critic_opt.step()
                total = total + loss.detach()
            last = total / cfg.critic_minibatches
        return last

    # ---- evaluation ------------------------------------------------------------------------------------------
    def _evaluate_progress(self, due: list[int]) -> dict[int, EvalResult]:
        """``Agent.evaluate_progress`` of the active seeds at positions ``due``, batched: the ``eval_episodes``
        check of all of them in one vector env, then the 100-episode solve check of those at the threshold."""
        agents = [self.active[j] for j in due]
        template = agents[0]
        checks, solves = [], []
        for a in agents:
            seeds = np.random.SeedSequence([a.seed, a.evaluations]).generate_state(2) >> 1
            checks.append(int(seeds[0]))
            solves.append(int(seeds[1]))
            a.evaluations += 1
        results = evaluate_policies(
            self.policy.net, template.policy, template.env_id, self.config.eval_episodes, checks, which=due
        )
        out = dict(zip(due, results, strict=True))
        threshold = template.threshold
        cand = [
            i
            for i, (a, r) in enumerate(zip(agents, results, strict=True))
            if not a.solved and threshold is not None and r.mean >= threshold
        ]
        if cand:
            fulls = evaluate_policies(
                self.policy.net,
                template.policy,
                template.env_id,
                SOLVE_EPISODES,
                [solves[i] for i in cand],
                which=[due[i] for i in cand],
            )
            for i, full in zip(cand, fulls, strict=True):
                a = agents[i]
                if is_solved(full, a.env_id):
                    a.solved = True
                    a.solve_env_steps, a.solve_wall_s = a.num_env_steps, a.train_wall_s
                out[due[i]] = full
        for j in due:
            self.active[j].last_eval = out[j]
        return out

    def evaluate(
        self,
        episodes: int = SOLVE_EPISODES,
        deterministic: bool = True,
        seed: int = 0,
        n_envs: int = 4,
        noise_seed: int | None = None,
    ) -> list[EvalResult]:
        """Every seed's ``Agent.evaluate`` (env seed ``seed`` for all), in one vector env; sampled actions draw from
        per-seed generators seeded ``noise_seed``. Uses the agents' policies (current after ``learn``/``sync``)."""
        with torch_threads(self.n_threads):
            return evaluate_policies(
                [a.policy for a in self.agents],
                self.agents[0].policy,
                self.agents[0].env_id,
                episodes,
                [seed] * len(self.agents),
                deterministic=deterministic,
                n_envs=n_envs,
                noise_seed=noise_seed,
            )

    # ---- learning ----------------------------------------------------------------------------------------------
    def learn(self, total_env_steps: int, callbacks: Sequence[Any] | None = None) -> ManySeeds:
        """Train every seed until ``num_env_steps >= total_env_steps`` (absolute, as ``Agent.learn``). ``callbacks``:
        None or one per agent (``Agent.learn``'s ``callback`` argument each); a seed whose callback returns False
        stops (the others go on), and an exception from one (``KeyboardInterrupt`` from a stop request) is raised
        after every seed's callback of that iteration ran. The agents are synced on return (:meth:`sync`)."""
        check_positive("total_env_steps", total_env_steps, integer=True)
        if callbacks is not None and len(callbacks) != len(self.agents):
            raise ValueError(f"give one callback per seed ({len(self.agents)}), got {len(callbacks)}")
        cbs = [as_callback(None if callbacks is None else c) for c in (callbacks or [None] * len(self.agents))]
        by_agent = {id(a): cb for a, cb in zip(self.agents, cbs, strict=True)}
        sync_each = callbacks is not None
        with torch_threads(self.n_threads):
            for a, cb in zip(self.agents, cbs, strict=True):
                cb.init_callback(a)
            try:
                while self.active and self.num_env_steps < total_env_steps:
                    t0 = time.perf_counter()
                    steps, metrics = self._train_iteration()
                    elapsed = time.perf_counter() - t0
                    for a in self.active:
                        a.train_wall_s += elapsed
                    if sync_each:
                        self.sync()
                    keep = self._after_iteration(steps, metrics, [by_agent[id(a)] for a in self.active])
                    if not all(keep):
                        self.sync()
                        for a, k in zip(self.active, keep, strict=True):
                            if not k:
                                by_agent[id(a)].on_training_end()
                        remaining = [a for a, k in zip(self.active, keep, strict=True) if k]
                        if remaining:
                            self._stack(remaining)
                        else:
                            self.active = []
            finally:
                if self.active:
                    self.sync()
                    for a in self.active:
                        by_agent[id(a)].on_training_end()
        return self

    def _after_iteration(
        self, env_steps: int, metrics: list[dict[str, float]], callbacks: list[BaseCallback]
    ) -> list[bool]:
        """``Agent._after_iteration`` for every active seed: count steps, evaluate the seeds that are due (batched),
        append and log each seed's row, then call each seed's callback. Returns whether each seed goes on."""
        for a in self.active:
            a.num_env_steps += int(env_steps)
            a.iterations += 1
        due = [j for j, a in enumerate(self.active) if a.num_env_steps >= a._next_eval]
        evals = self._evaluate_progress(due) if due else {}
        rows = []
        for j, a in enumerate(self.active):
            row: dict[str, Any] = {STEPS: a.num_env_steps, SECONDS: round(a.train_wall_s, 4), ITERATIONS: a.iterations}
            row.update({k: float(v) for k, v in metrics[j].items()})
            if j in evals:
                a._next_eval = a.num_env_steps + a.config.eval_every
                r = evals[j]
                row.update({EVAL_MEAN: r.mean, EVAL_STD: r.std, EVAL_EPISODES: r.episodes})
                row[EVAL_SOLVED] = a.solved
            a.record.append(row)
            held = set(a.logger.name_to_value)
            for key, value in row.items():
                if key not in held:
                    a.logger.record(key, int(value) if isinstance(value, bool) else value)
            a.logger.dump(step=a.num_env_steps)
            rows.append(row)
        keep, raised = [], None
        for cb, row in zip(callbacks, rows, strict=True):
            try:
                keep.append(cb.on_step(row))
            except KeyboardInterrupt as exc:  # a stop request: let every seed's callback (checkpoints) run first
                raised = exc
                keep.append(True)
        if raised is not None:
            raise raised
        return keep

    def close(self) -> None:
        for a in self.agents:
            a.close()

    def __enter__(self) -> ManySeeds:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ManyReinforceSeeds(ManySeeds):
    """``N`` twin-rollout ``ReinforceAgent`` s (one env and config; distinct seeds) trained as one batched
    computation, with :class:`ManySeeds`' machinery (``ManySeeds(agents)`` and :meth:`ManySeeds.make` build one for
    ``reinforce``): stacked policy and value networks (:class:`StackedMLP`), one Adam over both holding each seed's
    state, the rollout of ``N * n_envs`` twin environments stepped once per step under ``torch.no_grad()``
    (:class:`StackedTwin`: each seed's pre-drawn noise), each seed's categorical samples drawn from its own
    generator (:meth:`StackedPolicy.sample`) in a single run's order (sample, step, reset at every step), batched
    evaluation and records.

    The loss is the sum over seeds of ``agents.reinforce.reinforce_with_baseline_loss`` of each seed's own rollout
    (its ``T * B`` steps in a single run's order: advantages normalised per seed), so the gradient of seed ``s``'s
    parameters is its own; the gradients are clipped per seed over policy and value parameters together (as
    ``clip_grad_norm_`` over both in a single run, up to the order of the norm's float sum).
    """

    agents: list[Any]
    active: list[Any]
    config: Any  # the agents' ReinforceConfig

    def _stack(self, agents: list[Any]) -> None:
        self.active = agents
        first = agents[0]
        self.config = first.config
        self.streams = SeedStreams([a.generator for a in agents])
        self.policy = StackedPolicy([a.policy for a in agents], self.streams)
        self.value_net = StackedMLP([a.value_net for a in agents])
        self.optimizer = stacked_adam(
            [self.policy.net, self.value_net],
            [a.optimizer for a in agents],
            [[a.policy.net, a.value_net] for a in agents],
            self.config.learning_rate,
        )
        self.twin = StackedTwin(first.twin, self.streams)
        self.twin_state = _cat([a._twin_state for a in agents])
        self.episodes = _SeedEpisodes(agents)

    def sync(self) -> None:
        """Write the stacked state (networks, the optimiser's state, twin states, episode returns) back into the
        active agents, so that each is exactly its single-run self."""
        nets = [a.policy.net for a in self.active]
        values = [a.value_net for a in self.active]
        self.policy.net.copy_to(nets)
        self.value_net.copy_to(values)
        copy_adam_state(
            self.optimizer,
            [self.policy.net, self.value_net],
            [a.optimizer for a in self.active],
            [[p, v] for p, v in zip(nets, values, strict=True)],
        )
        for a, st in zip(self.active, _split(self.twin_state, len(self.active)), strict=True):
            a._twin_state = type(st)(*(x.clone() for x in st))
        self.episodes.copy_to_agents()

    def _rollout(self) -> tuple[torch.Tensor, ...]:
        """``ReinforceAgent._rollout_twin`` of every seed (``agents.reinforce.twin_rollout`` through the stacked
        twin, whose draws are per seed), time-major over ``N * B`` environments: (obs, next_obs, actions, rewards,
        terminated, truncated)."""
        cfg = self.config
        rollout, self.twin_state = twin_rollout(
            self.twin, self.twin_state, self.policy.sample, cfg.n_steps, cfg.n_envs * len(self.active), self.episodes
        )
        return rollout.obs, rollout.next_obs, rollout.actions, rollout.rewards, rollout.terminated, rollout.truncated

    def _train_iteration(self) -> tuple[int, list[dict[str, float]]]:
        """``ReinforceAgent._train_iteration`` of every active seed (twin rollout), batched: (env steps per seed,
        each seed's metrics)."""
        cfg = self.config
        n = len(self.active)
        obs, next_obs, actions, rewards, term, trunc = self._rollout()
        T, NB, D = obs.shape
        B = NB // n

        def by_seed(x: torch.Tensor) -> torch.Tensor:
            """(T, N * B, ...) time-major -> (N * T * B, ...): seed-major blocks, each a single run's (T * B)."""
            return x.reshape(T, n, B, *x.shape[2:]).transpose(0, 1).reshape(n * T * B, *x.shape[2:])

        flat_obs = by_seed(obs)
        logits = self.policy.net(flat_obs)
        values = self.value_net(flat_obs).reshape(n, T, B)
        with torch.no_grad():
            next_values = self.value_net(by_seed(next_obs)).reshape(n, T, B)
        done = term | trunc
        # Column by column: each seed's columns are its single-run returns.
        returns = lambda_returns(
            rewards, next_values.transpose(0, 1).reshape(T, NB), term, done, cfg.gamma, cfg.gae_lambda
        )
        returns = returns.reshape(T, n, B).transpose(0, 1)  # (N, T, B)
        dist = self.active[0].policy.distribution_from_logits(logits)
        onehot = nn.functional.one_hot(by_seed(actions), self.twin.n_actions).to(logits.dtype)
        log_prob = dist.log_prob(onehot).reshape(n, -1)
        entropy = dist.entropy().reshape(n, -1)
        mask = torch.ones(T * B, dtype=values.dtype, device=values.device)  # twin rollouts: every step is valid
        total = values.new_zeros(())
        seed_stats = []
        for s in range(n):
            ret = returns[s].reshape(-1)
            loss, stats = reinforce_with_baseline_loss(
                log_prob=log_prob[s],
                advantages=ret - values[s].detach().reshape(-1),
                values=values[s].reshape(-1),
                returns=ret,
                entropy=entropy[s],
                mask=mask,
                vf_coef=cfg.vf_coef,
                ent_coef=cfg.ent_coef,
                normalize_advantage=cfg.normalize_advantage,
            )
            total = total + loss  # seed s's parameters get the gradient of its own loss
            seed_stats.append(stats)
        params = [*self.policy.net.ordered_parameters(), *self.value_net.ordered_parameters()]
        self.optimizer.zero_grad(set_to_none=True)
        total.backward(inputs=params)
        grad_norm = clip_grad_norm_per_seed(params, cfg.max_grad_norm, n)
        self.optimizer.step()
        names = list(seed_stats[0])
        with torch.no_grad():
            table = torch.stack([torch.stack([st[k].float() for k in names]) for st in seed_stats])
            columns = torch.cat([table, grad_norm.unsqueeze(1).float()], 1).cpu().tolist()  # one host sync
        self.episodes.flush()
        metrics = []
        for a, col in zip(self.active, columns, strict=True):
            m = dict(zip([*names, "train/grad_norm"], col, strict=True))
            metrics.append({**m, **a.episodes.metrics()})
        return T * B, metrics


__all__ = [
    "ManyReinforceSeeds",
    "ManySeeds",
    "SeedStreams",
    "StackedMLP",
    "StackedPolicy",
    "StackedTwin",
    "batched_methods",
    "check_batchable",
    "clip_grad_norm_per_seed",
    "evaluate_policies",
    "trains_batched",
]
