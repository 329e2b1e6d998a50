"""Environments for gumbel-rl: gridworlds, differentiable twins and exact tabular models.

Importing this package registers the ``gumbel_rl/...`` gridworld suite with Gymnasium.
"""

from envs.cartpole_twin import CartPoleState, CartPoleTwin
from envs.differentiable import DifferentiableEnv, differentiable_ids, make_differentiable, register_twin
from envs.gridworld import GridWorld
from envs.gridworld_twin import GridState, GridWorldTwin, register_gridworld_twins
from envs.maps import GRIDWORLD_IDS, register_gridworlds
from envs.minigrid_twin import MINIGRID_IDS, MiniGridState, MiniGridTwin, register_minigrid_twins
from envs.tabular import TabularModel, ValueIterationResult, policy_return, value_iteration

register_gridworlds()
register_gridworld_twins(GRIDWORLD_IDS)
register_minigrid_twins()

__all__ = [
    "CartPoleState",
    "CartPoleTwin",
    "DifferentiableEnv",
    "GRIDWORLD_IDS",
    "GridState",
    "GridWorld",
    "GridWorldTwin",
    "MINIGRID_IDS",
    "MiniGridState",
    "MiniGridTwin",
    "TabularModel",
    "ValueIterationResult",
    "differentiable_ids",
    "make_differentiable",
    "policy_return",
    "register_twin",
    "value_iteration",
]
