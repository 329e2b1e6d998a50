"""Temperature schedules: exact values of their formulas, round trip through to_dict, clear errors."""

import math

import pytest

from gumbel_rl import ConstantSchedule, ExponentialSchedule, LinearSchedule, make_schedule


def test_constant():
    assert [ConstantSchedule(0.7)(t) for t in (0, 10, 10**9)] == [0.7, 0.7, 0.7]


def test_exponential_is_jang_et_al():
    s = ExponentialSchedule(tau0=1.0, rate=1e-4, tau_min=0.5)
    for t in (0, 1000, 5000):
        assert s(t) == pytest.approx(max(0.5, math.exp(-1e-4 * t)), rel=1e-12)
    assert s(10**7) == 0.5


def test_linear():
    s = LinearSchedule(tau0=2.0, tau_end=0.5, steps=100)
    assert [s(0), s(50), s(100), s(1000)] == [2.0, 1.25, 0.5, 0.5]


@pytest.mark.parametrize("s", [ConstantSchedule(0.3), ExponentialSchedule(2.0, 1e-3, 0.1), LinearSchedule(1, 0.2, 7)])
def test_round_trip(s):
    assert make_schedule(s.to_dict()) == s


def test_make_schedule_from_number_and_name():
    assert make_schedule(0.5) == ConstantSchedule(0.5)
    assert make_schedule("linear", tau0=1.0, tau_end=0.1, steps=10)(10) == pytest.approx(0.1)


def test_errors():
    with pytest.raises(ValueError, match="unknown temperature schedule 'cosine'; valid schedules: constant"):
        make_schedule("cosine")
    with pytest.raises(ValueError, match="unknown field"):
        make_schedule("constant", rate=1.0)
    with pytest.raises(ValueError, match="tau must be a finite number > 0"):
        ConstantSchedule(0.0)
    with pytest.raises(ValueError, match="rate"):
        ExponentialSchedule(rate=-1.0)
