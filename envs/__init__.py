"""Environments for gumbel-rl: gridworlds, differentiable twins and exact tabular models.

Importing this package registers the ``gumbel_rl/...`` gridworld suite with Gymnasium.
"""

from envs.differentiable import DifferentiableEnv, differentiable_ids, make_differentiable, register_twin

__all__ = ["DifferentiableEnv", "differentiable_ids", "make_differentiable", "register_twin"]
