"""Training algorithms for gumbel-rl policies, behind one interface: ``make_agent(method, env_id, ...)``."""

import agents.critic  # noqa: F401  (registers the <estimator>-critic methods)
import agents.model_based  # noqa: F401  (registers the <estimator>-model methods)
import agents.pathwise  # noqa: F401  (registers the twin methods)
import agents.reinforce  # noqa: F401  (registers reinforce)
import agents.sb3  # noqa: F401  (registers ppo, a2c, dqn)
from agents.base import Agent, Config
from agents.callbacks import BaseCallback, CallbackList, FunctionCallback, StopTrainingOnSolved
from agents.evaluation import EvalResult, evaluate, is_solved
from agents.registry import METHODS, make_agent, methods_for

__all__ = [
    "METHODS",
    "Agent",
    "BaseCallback",
    "CallbackList",
    "Config",
    "EvalResult",
    "FunctionCallback",
    "StopTrainingOnSolved",
    "evaluate",
    "is_solved",
    "make_agent",
    "methods_for",
]
