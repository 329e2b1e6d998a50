"""gumbel-rl: discrete-action policies that act and learn through Gumbel-Softmax.

The maths (``gumbel_max``, ``gumbel_softmax``, the Gumbel PDF/CDF), the gradient estimators
(``sample_action``, ``ESTIMATORS``), the policy distribution (``GumbelCategorical``), temperature schedules and
the ``GumbelPolicy`` network.
"""

from gumbel_rl.distributions import GumbelCategorical
from gumbel_rl.estimators import (
    ESTIMATORS,
    HARD_ESTIMATORS,
    PATHWISE_ESTIMATORS,
    Estimator,
    check_estimator,
    sample_action,
)
from gumbel_rl.gumbel import (
    EULER_GAMMA,
    check_logits,
    gumbel_cdf,
    gumbel_max,
    gumbel_noise,
    gumbel_pdf,
    gumbel_softmax,
    straight_through,
)
from gumbel_rl.policy import GumbelPolicy, resolve_device
from gumbel_rl.schedules import (
    ConstantSchedule,
    ExponentialSchedule,
    LinearSchedule,
    make_schedule,
)

__version__ = "0.1.0"

__all__ = [
    "ESTIMATORS",
    "EULER_GAMMA",
    "HARD_ESTIMATORS",
    "PATHWISE_ESTIMATORS",
    "ConstantSchedule",
    "Estimator",
    "ExponentialSchedule",
    "GumbelCategorical",
    "GumbelPolicy",
    "LinearSchedule",
    "check_estimator",
    "check_logits",
    "gumbel_cdf",
    "gumbel_max",
    "gumbel_noise",
    "gumbel_pdf",
    "gumbel_softmax",
    "make_schedule",
    "resolve_device",
    "sample_action",
    "straight_through",
]
