#!/usr/bin/env python
"""Train, compare and evaluate gumbel-rl agents from the command line.

    python train.py                                    # st-gumbel on CartPole-v1, seed 0 (the default run)
    python train.py --env gumbel_rl/Maze-16x16-v0 --method st-gumbel --seed 1 --steps 200000 --hp learning_rate=1e-3
    python train.py --resume runs/<run dir> [--steps N]          # continue an interrupted run, or extend one
    python train.py compare --env CartPole-v1 --methods st-gumbel reinforce ppo --seeds 5 --out runs/cmp
    python train.py compare --env CartPole-v1 --methods st-gumbel ppo --seed-list 0 1 5 --out runs/cmp
    python train.py --env mypkg.envs:audit/Corridor-v0 --method reinforce    # your own env (Gymnasium's module:id)
    python train.py --gym-packages mypkg --env audit/Corridor-v0 --method reinforce  # or: import mypkg first
    python train.py evaluate runs/<run dir> --episodes 100 [--stochastic] [--video ep.gif]
    python train.py hyperparameters st-gumbel --env gumbel_rl/Maze-16x16-v0   # every --hp name, default, meaning

Your own environment: any Gymnasium id with a Discrete action space trains with the methods that need no twin.
``MODULE:ID`` imports MODULE (which registers ID) first, as ``gymnasium.make`` does; ``--gym-packages PKG ...``
imports packages before ids are resolved (as rl-baselines3-zoo's option). A run records what it imported, so
``--resume``, compare's worker processes and ``evaluate`` of its policy need neither repeated.

Budget and protocol: a run trains to its whole ``--steps`` budget (so every method is compared at the same
budget, and the curve shows what happens after solving) and reports *when* it first solved -- env steps and
training seconds at the first time the mean of 100 greedy episodes reached the env's reward threshold;
``--stop-on-solved`` stops there instead. The default budget, 100,000 env steps, is about where st-gumbel's
CartPole-v1 defaults solve (seed 0: solved at 45,056 env steps); it is ~10 s of training plus the evaluations on
two CPU cores. Each run ends with 100 deterministic (and 100 stochastic) episodes in the real environment.

The work is done by ``experiments.runner`` (one run), ``experiments.compare`` (many) and ``experiments.video``;
this file only parses arguments, prints, and maps outcomes to exit codes: 0 done, 2 bad input (one line on stderr,
nothing overwritten), 130 / 143 interrupted by Ctrl-C / SIGTERM (a checkpoint is saved; the message says how to
resume), 1 a run failed. Runs also checkpoint every 10% of their budget and every 5 minutes, so a run killed
outright resumes from its last checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

import torch

import agents  # noqa: F401  (registers every method)
from agents.evaluation import SOLVE_EPISODES, evaluate, import_gym_packages, is_solved, reward_threshold
from agents.registry import hyperparameter_docs
from experiments.compare import BACKENDS, CompareSettings, check_backend, format_table, plan_comparison, run_comparison
from experiments.runner import (
    CHECKPOINT,
    DEFAULT_CHECKPOINT_SECONDS,
    DEFAULT_ENV,
    DEFAULT_METHOD,
    DEFAULT_STEPS,
    EVAL_SEED,
    FINAL_EVAL_ENVS,
    POLICY,
    TB_DIR,
    CheckpointPolicy,
    MissingExtraError,
    RunSettings,
    TrainingInterrupted,
    default_run_dir,
    deferred_interrupts,
    describe_environments,
    describe_methods,
    load_policy_for,
    open_resume,
    parse_hyperparameters,
    start_run,
    train_run,
)
from experiments.video import check_video_path, env_fps, record_episode, write_video

PROG = "train.py"
COMMANDS = ("train", "compare", "evaluate", "hyperparameters")
BAD_INPUT = (ValueError, FileNotFoundError, MissingExtraError)


class UsageError(Exception):
    """Bad command-line input: reported in one line, exit code 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line (``train.py: error: ...``) instead of usage + message."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {PROG} --help)")


def _listing() -> str:
    envs = describe_environments()
    methods = describe_methods()
    width = max(len(name) for name, _ in [*envs, *methods]) + 2
    lines = [
        "environments (any other Gymnasium id with Discrete actions works with the methods without a twin; MODULE:ID "
        "imports MODULE first, --gym-packages PKG imports PKG):"
    ]
    lines += [f"  {name:<{width}}{text}" for name, text in envs]
    lines += ["", "methods (--method / --methods):"]
    lines += [f"  {name:<{width}}{text}" for name, text in methods]
    lines += ["", f"hyperparameters (--hp): python {PROG} hyperparameters METHOD [--env ID] lists them"]
    return "\n".join(lines)


COMMANDS_HELP = f"""commands (the first argument; without one, train):
  train            train one run (the options below)
  compare          run methods x seeds in parallel and summarise ({PROG} compare --help)
  evaluate         score a policy file or run directory in the real environment ({PROG} evaluate --help)
  hyperparameters  list a method's hyperparameters with their defaults for an env ({PROG} hyperparameters --help)"""


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``train.py`` (subcommands ``train`` -- the default --, ``compare`` and ``evaluate``)."""
    fmt = argparse.RawDescriptionHelpFormatter
    listing = _listing()
    parser = OneLineParser(
        prog=PROG,
        description="Train discrete-action policies through Gumbel-Softmax and compare them with baselines. "
        "With no subcommand, 'train' is meant: `python train.py` trains the default run.",
        epilog=listing,
        formatter_class=fmt,
    )
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}", parser_class=OneLineParser)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--steps", type=int, default=None, help=f"env-step budget per run (default {DEFAULT_STEPS:,})")
        p.add_argument("--device", default=None, help="auto (CUDA if available), cpu, cuda or cuda:N (default auto)")
        p.add_argument(
            "--hp",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="override a hyperparameter (repeatable); VALUE is JSON (3e-4, true, [64,64]) or a plain string",
        )
        p.add_argument(
            "--stop-on-solved",
            action="store_true",
            help="stop a run once solved (default: train to the whole budget and report when it solved)",
        )
        p.add_argument("--force", action="store_true", help="overwrite what the output directory holds")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        p.add_argument(
            "--checkpoint-every-steps",
            type=int,
            default=None,
            metavar="N",
            help="save checkpoint.pt every N env steps (default: a tenth of --steps; 0: never)",
        )
        p.add_argument(
            "--checkpoint-every-seconds",
            type=float,
            default=DEFAULT_CHECKPOINT_SECONDS,
            metavar="S",
            help=f"save checkpoint.pt every S seconds of wall clock (default {DEFAULT_CHECKPOINT_SECONDS:g}; 0: never)",
        )

    def gym_packages(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--gym-packages",
            nargs="+",
            default=[],
            metavar="PKG",
            help="import these packages (which register Gymnasium envs) before resolving --env; a run records them, "
            "so --resume, compare's workers and evaluate of its policy import them again by themselves",
        )

    def threads(p: argparse.ArgumentParser, what: str) -> None:
        p.add_argument(
            "--threads",
            type=int,
            default=1,
            metavar="N",
            help=f"torch CPU threads {what} (default 1: these small networks are fastest on one thread, and "
            "several threads on a busy machine can be many times slower)",
        )

    t = sub.add_parser(
        "train",
        help="train one run (the default subcommand)",
        usage=f"{PROG} [train] [--env ID] [--method M] [--seed N] [--steps N] [--hp NAME=VALUE ...] [--out DIR] "
        "[--resume DIR] [options]",
        description="Train one run; writes config.json, metrics.csv (as it trains), policy.pt, curve.png, "
        "result.json and checkpoint.pt (every 10% of the budget, every 5 minutes, on Ctrl-C or SIGTERM, and at the "
        "end) to the run directory; --resume continues an interrupted or killed run.\n\n" + COMMANDS_HELP,
        epilog=listing,
        formatter_class=fmt,
    )
    t.add_argument("--env", default=None, help=f"Gymnasium id or MODULE:ID (default {DEFAULT_ENV})")
    t.add_argument("--method", default=None, help=f"training method (default {DEFAULT_METHOD})")
    t.add_argument("--seed", type=int, default=None, help="seed (default 0)")
    t.add_argument("--out", default=None, help="run directory (default runs/<env>__<method>__s<seed>__<timestamp>)")
    t.add_argument("--resume", default=None, metavar="DIR", help="continue the run in DIR from its checkpoint")
    common(t)
    gym_packages(t)
    t.add_argument(
        "--verbose", action="store_true", help="print every record row (SB3's table) on stdout instead of the bar"
    )
    threads(t, "for training")

    c = sub.add_parser(
        "compare",
        help="run methods x seeds in parallel and summarise",
        description="Run every (method, seed) pair -- seeds 0..N-1 with --seeds N, or the seeds listed with "
        "--seed-list -- each into DIR/<method>__s<seed>/, then write DIR/summary.json, summary.csv and curves.png. "
        "Rerunning the same command skips finished runs and resumes interrupted ones from their checkpoints; more "
        "seeds or methods later reuse the runs already there.",
        epilog=listing,
        formatter_class=fmt,
    )
    c.add_argument("--env", default=DEFAULT_ENV, help=f"Gymnasium id or MODULE:ID (default {DEFAULT_ENV})")
    c.add_argument("--methods", nargs="+", required=True, metavar="M", help="methods to compare")
    seeds = c.add_mutually_exclusive_group(required=True)
    seeds.add_argument("--seeds", type=int, metavar="N", help="N seeds: 0, 1, ..., N-1")
    seeds.add_argument(
        "--seed-list", type=int, nargs="+", metavar="S", help="these seeds (e.g. --seed-list 0 1 5), instead of --seeds"
    )
    c.add_argument(
        "--workers", type=int, default=None, metavar="K", help="parallel runs, one torch thread each (default: CPUs)"
    )
    c.add_argument(
        "--backend",
        choices=BACKENDS,
        default="batched",
        help="batched (default): local processes, the seeds of each twin method (pathwise, or reinforce on the twin) "
        "trained together in one batched computation; local: one process per run; ray: one Ray task per run",
    )
    c.add_argument("--out", required=True, metavar="DIR", help="comparison directory")
    common(c)
    gym_packages(c)

    e = sub.add_parser(
        "evaluate",
        help="score a policy file in the real environment",
        description="Print the mean and standard deviation of a policy's return in the real Gymnasium env.",
        formatter_class=fmt,
    )
    e.add_argument("policy", metavar="POLICY", help="a policy.pt written by train, or a run directory holding one")
    e.add_argument("--env", default=None, help="Gymnasium id or MODULE:ID (default: the one stored in the policy file)")
    e.add_argument(
        "--episodes",
        type=int,
        default=100,
        help=f"episodes (default 100; only {SOLVE_EPISODES} or more deterministic ones decide 'solved')",
    )
    e.add_argument("--stochastic", action="store_true", help="sample actions instead of taking the greedy one")
    e.add_argument("--seed", type=int, default=EVAL_SEED, help=f"env seed (default {EVAL_SEED}, as train's final eval)")
    e.add_argument("--video", default=None, metavar="PATH", help="also record one episode to PATH (.gif or .mp4)")
    e.add_argument("--device", default="cpu", help="device to run the policy on (default cpu)")
    gym_packages(e)
    threads(e, "for the policy")

    h = sub.add_parser(
        "hyperparameters",
        help="list a method's hyperparameters",
        description="Print every hyperparameter of METHOD (the names --hp takes) with its default for the env "
        "(the tuned table merged; marked *) and what it means.",
        formatter_class=fmt,
    )
    h.add_argument("method", metavar="METHOD", help="a training method (see train.py --help)")
    h.add_argument(
        "--env", default=DEFAULT_ENV, help=f"Gymnasium id or MODULE:ID whose defaults to show (default {DEFAULT_ENV})"
    )
    gym_packages(h)
    return parser


def _err(message: Any) -> int:
    text = " ".join(str(message).split()) if "\n" in str(message) else str(message)
    print(f"{PROG}: error: {text}", file=sys.stderr)
    return 2


def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _fmt_num(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


# ---- train --------------------------------------------------------------------------------------------------------
def _checkpoints(args: argparse.Namespace) -> CheckpointPolicy:
    policy = CheckpointPolicy(args.checkpoint_every_steps, args.checkpoint_every_seconds)
    policy.validate()
    return policy


def cmd_train(args: argparse.Namespace) -> int:
    try:
        checkpoints = _checkpoints(args)
    except ValueError as exc:
        return _err(exc)
    if args.resume is not None:
        given = [f"--{k}" for k in ("env", "method", "seed", "out") if getattr(args, k) is not None]
        given += ["--hp"] * bool(args.hp) + ["--force"] * args.force + ["--stop-on-solved"] * args.stop_on_solved
        if given:
            return _err(f"--resume takes its settings from {args.resume}/config.json; drop {', '.join(given)}")
        try:
            import_gym_packages(args.gym_packages)
            run = open_resume(args.resume, steps=args.steps, device=args.device or "auto")
        except BAD_INPUT as exc:
            return _err(exc)
        print(
            f"resuming {run.run_dir} at {run.agent.num_env_steps:,} env steps, training on to {run.settings.steps:,}",
            flush=True,
        )
    else:
        try:
            hp = parse_hyperparameters(args.hp)
        except ValueError as exc:
            return _err(exc)
        settings = RunSettings(
            env_id=args.env or DEFAULT_ENV,
            method=args.method or DEFAULT_METHOD,
            seed=0 if args.seed is None else args.seed,
            steps=DEFAULT_STEPS if args.steps is None else args.steps,
            device=args.device or "auto",
            hyperparameters=hp,
            stop_on_solved=args.stop_on_solved,
            gym_packages=list(args.gym_packages),
        )
        run_dir = Path(args.out) if args.out else default_run_dir(settings.env_id, settings.method, settings.seed)
        try:
            run = start_run(settings, run_dir, force=args.force)
        except BAD_INPUT as exc:
            return _err(exc)
        print(
            f"training {settings.method} on {settings.env_id}, seed {settings.seed}, {settings.steps:,} env steps "
            f"on {run.agent.device} -> {run_dir}",
            flush=True,
        )

    def notice(signum: int) -> None:
        name = signal.Signals(signum).name
        _note(f"{name}: stopping after this iteration and saving a checkpoint ({name} again to stop at once)")

    with run, deferred_interrupts(notice) as flag:
        try:
            result = train_run(
                run,
                progress=not (args.quiet or args.verbose),
                stop_flag=flag,
                verbose=args.verbose,
                checkpoints=checkpoints,
            )
        except TrainingInterrupted as exc:
            _note(
                f"interrupted at {exc.env_steps:,} of {exc.target:,} env steps; checkpoint and metrics in {run.run_dir}"
            )
            _note(f"resume with: python {PROG} --resume {run.run_dir}")
            return exc.exit_code
    print_result(result, run.run_dir)
    return 0


def print_result(result: dict[str, Any], run_dir: Path) -> None:
    """The end-of-run report on stdout."""
    thr = result["reward_threshold"]
    print(f"run dir   {run_dir}")
    print(f"trained   {result['env_steps']:,} env steps, {result['wall_s']:.1f} s of training (evaluation excluded)")
    if result["solved"]:
        solved = f"yes, at {result['solve_env_steps']:,} env steps after {result['solve_wall_s']:.1f} s of training"
    else:
        solved = "no" if thr is not None else "n/a (the env has no reward threshold)"
    if thr is not None:
        solved += f" (threshold {thr:g}: mean of 100 greedy episodes)"
    print(f"solved    {solved}")
    verdict = "" if thr is None else (" -- at the threshold" if result["final_solved"] else " -- below the threshold")
    print(
        f"final     {result['eval_return_mean']:.4f} +/- {result['eval_return_std']:.4f} over "
        f"{result['eval_episodes']} deterministic episodes (env seed {result['eval_seed']}){verdict}; stochastic "
        f"{result['stochastic_eval_return_mean']:.4f} +/- {result['stochastic_eval_return_std']:.4f}"
    )
    files = ["config.json", "metrics.csv", "policy.pt", "curve.png", "result.json", CHECKPOINT]
    if (run_dir / TB_DIR).is_dir():
        files.append(f"{TB_DIR}/ (tensorboard --logdir {run_dir / TB_DIR})")
    print(f"files     {' '.join(files)}")
    print(f"evaluate  python {PROG} evaluate {run_dir / 'policy.pt'}")


# ---- compare ------------------------------------------------------------------------------------------------------
def cmd_compare(args: argparse.Namespace) -> int:
    try:
        hp = parse_hyperparameters(args.hp)
        settings = CompareSettings(
            env_id=args.env,
            methods=list(args.methods),
            seeds=args.seeds if args.seed_list is None else list(args.seed_list),
            steps=DEFAULT_STEPS if args.steps is None else args.steps,
            device=args.device or "auto",
            hyperparameters=hp,
            stop_on_solved=args.stop_on_solved,
            gym_packages=list(args.gym_packages),
        )
        check_backend(args.backend, args.workers)
        plan = plan_comparison(settings, args.out, force=args.force, checkpoints=_checkpoints(args))
    except BAD_INPUT as exc:
        return _err(exc)
    print(
        f"comparing {', '.join(settings.methods)} on {settings.env_id}: seeds {_seed_text(settings.seed_list)}, "
        f"{settings.steps:,} env steps each, {args.backend} backend -> {args.out}",
        flush=True,
    )
    with plan:
        outcome = run_comparison(
            settings,
            args.out,
            workers=args.workers,
            backend=args.backend,
            progress=not args.quiet,
            log=print,
            plan=plan,
        )
    if outcome.interrupted:
        done = sum(p["status"] in ("done", "skipped") for p in outcome.payloads)
        _note(f"interrupted: {done} run(s) finished, the running ones saved checkpoints in their run directories")
        _note(f"rerun the same command to continue: python {PROG} {' '.join(sys.argv[1:])}")
        return 128 + outcome.signum
    out = Path(args.out)
    print(format_table(outcome.summary["rows"]))
    print(f"summary   {out / 'summary.json'}  {out / 'summary.csv'}  {out / 'curves.png'}")
    for p in outcome.failed:
        _note(f"run {p['method']}__s{p['seed']} failed: {p['error']}")
    return 1 if outcome.failed else 0


def _seed_text(seeds: list[int]) -> str:
    """``0..4`` for consecutive seeds from 0, else ``0, 1, 5``."""
    return f"0..{len(seeds) - 1}" if seeds == list(range(len(seeds))) and len(seeds) > 2 else ", ".join(map(str, seeds))


# ---- evaluate -----------------------------------------------------------------------------------------------------
def cmd_evaluate(args: argparse.Namespace) -> int:
    try:
        if args.episodes < 1:
            raise ValueError(f"--episodes must be >= 1, got {args.episodes}")
        if args.seed < 0:
            raise ValueError(f"--seed must be >= 0, got {args.seed}")
        import_gym_packages(args.gym_packages)
        if args.video:
            check_video_path(args.video)
        if Path(args.policy).is_dir():
            args.policy = str(Path(args.policy) / POLICY)
        policy, env_id, meta = load_policy_for(args.policy, args.env, device=args.device)
        frames = None
        if args.video:
            frames, video_return = record_episode(policy, env_id, deterministic=not args.stochastic, seed=args.seed)
    except BAD_INPUT as exc:
        return _err(exc)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        res = evaluate(
            policy, env_id, args.episodes, deterministic=not args.stochastic, seed=args.seed, n_envs=FINAL_EVAL_ENVS
        )
    extra = meta.get("extra") or {}
    trained = f"{extra.get('method', '?')}, {extra['env_steps']:,} env steps" if "env_steps" in extra else "?"
    kind = "stochastic" if args.stochastic else "deterministic"
    thr = reward_threshold(env_id)
    print(f"policy    {args.policy} ({trained})")
    print(f"env       {env_id}" + (f" (reward threshold {thr:g})" if thr is not None else ""))
    print(f"return    mean {res.mean:.6f}  std {res.std:.6f}  over {res.episodes} {kind} episodes (seed {args.seed})")
    if thr is not None:
        print(f"solved    {_verdict(res, env_id, thr)}")
    if frames is not None:
        try:
            path = write_video(frames, args.video, fps=env_fps(env_id))
        except BAD_INPUT as exc:
            return _err(exc)
        print(f"video     {path} ({len(frames)} frames, episode return {video_return:.4g})")
    return 0


def _verdict(res: Any, env_id: str, threshold: float) -> str:
    """The ``solved`` line: yes / no for a deterministic evaluation of 100 episodes or more, else why undecided."""
    if not res.deterministic:
        return "not decided: only a deterministic evaluation can solve"
    if res.episodes < SOLVE_EPISODES:
        side = ">=" if res.mean >= threshold else "<"
        return (
            f"not decided: solving takes {SOLVE_EPISODES} deterministic episodes (--episodes {SOLVE_EPISODES}); "
            f"this mean {side} threshold {threshold:g}"
        )
    return "yes" if is_solved(res, env_id) else "no"


# ---- hyperparameters ----------------------------------------------------------------------------------------------
def cmd_hyperparameters(args: argparse.Namespace) -> int:
    try:
        import_gym_packages(args.gym_packages)
        docs = hyperparameter_docs(args.method, args.env)
    except BAD_INPUT as exc:
        return _err(exc)
    print(f"hyperparameters of {args.method} on {args.env} (--hp NAME=VALUE; * = tuned default for this env):")
    defaults = {d.name: ("*" if d.tuned else " ") + _fmt_value(d.default) for d in docs}
    name_w = max(len(d.name) for d in docs) + 2
    value_w = max(len(v) for v in defaults.values()) + 2
    for d in docs:
        print(f"  {d.name:<{name_w}}{defaults[d.name]:<{value_w}}{d.doc}")
    return 0


def _fmt_value(value: Any) -> str:
    """A default as ``--hp`` would take it (JSON; tuples as lists)."""
    try:
        return json.dumps(list(value) if isinstance(value, tuple) else value, separators=(",", ":"))
    except TypeError:
        return str(value)


def main(argv: list[str] | None = None) -> int:
    """Run ``train.py`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        argv = ["train", *argv]  # also for --help: the train options, with the commands listed
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        return _err(exc)
    if getattr(args, "threads", None) is not None:
        if args.threads < 1:
            return _err(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    try:
        commands = {
            "train": cmd_train,
            "compare": cmd_compare,
            "evaluate": cmd_evaluate,
            "hyperparameters": cmd_hyperparameters,
        }
        return commands[args.command](args)
    except KeyboardInterrupt:
        _note("interrupted")
        return 130


if __name__ == "__main__":
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # stdout piped into a reader that stopped early (`| head`): no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    sys.exit(code)
