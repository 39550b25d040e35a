"""Soundness and exact values of the ``floor`` relaxation (genbab.bounds.piecewise).

The lines must bound ``floor(x')`` for every ``x`` of the interval and every
``x'`` within the rounding slack of ``x``; the sample points include the
integers inside the interval and their left limits, where ``floor`` jumps.
"""

from __future__ import annotations

import math

import pytest
import relax_sampling as rs
import torch

from genbab.bounds.nonlinear import unary_interval
from genbab.bounds.piecewise import FLOOR, FLOOR_SLACK, floor_interval, relax_floor
from genbab.bounds.relax import UNARY_FAMILIES
from genbab.errors import BoundsError
from genbab.model.graph import Node
from genbab.model.ops import Unary

DTYPES = [torch.float64, torch.float32]


@pytest.fixture(autouse=True)
def _one_thread():
    with rs.single_thread():
        yield


def t(*values: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


def _jump_points(lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """The first and last integer of each interval and their left limits."""
    first, last = torch.ceil(lower), torch.floor(upper)
    down = torch.full_like(lower, -math.inf)
    return torch.stack(
        [first, last, torch.nextafter(first, down), torch.nextafter(last, down)]
    )


def _slack(lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    return FLOOR_SLACK * (1 + torch.maximum(lower.abs(), upper.abs()))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_sound_on_all_interval_cases(dtype: torch.dtype) -> None:
    cases = rs.interval_cases(dtype, special=(0.0, 1.0, -1.0, 2.5, -3.5, 7.0))
    assert UNARY_FAMILIES["floor"] is FLOOR
    for case, (lower, upper) in cases.items():
        rs.check_family(
            FLOOR, lower, upper, extra=_jump_points(lower, upper), context=case
        )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_lines_cover_inputs_within_the_slack(dtype: torch.dtype) -> None:
    """``L(x) <= floor(x + delta) <= U(x)`` for ``|delta|`` up to the slack."""
    for case, (lower, upper) in rs.interval_cases(dtype, special=(0.0, 3.0)).items():
        rel = relax_floor(lower, upper)
        x = rs.sample_points(lower, upper, extra=_jump_points(lower, upper)).double()
        lo_line, hi_line = rs.line_values(rel, x)
        d = _slack(lower, upper).double()
        for delta in (-d, 0 * d, d):
            y = torch.floor(x + delta)
            assert (lo_line <= y).all(), f"{case}: lower line above floor"
            assert (hi_line >= y).all(), f"{case}: upper line below floor"


def test_exact_lines_by_hand() -> None:
    def lines(lo: float, hi: float) -> list[float]:
        r = relax_floor(t(lo), t(hi))
        return [r.lower_slope.item(), r.lower_bias.item(), r.upper_slope.item(),
                r.upper_bias.item()]  # fmt: skip

    def d(lo: float, hi: float) -> float:
        return FLOOR_SLACK * (1 + max(abs(lo), abs(hi)))

    # One step: the constant, exact up to the margin.
    assert lines(0.2, 0.7) == pytest.approx([0.0, 0.0, 0.0, 0.0], abs=1e-15)
    assert lines(-3.9, -3.1) == pytest.approx([0.0, -4.0, 0.0, -4.0], abs=1e-14)
    # Middle between the first and last integer: x - 1 - d <= floor <= x + d.
    for lo, hi in ((0.5, 1.5), (-2.5, 3.5), (0.6, 2.2)):
        expect = [1.0, -1.0 - d(lo, hi), 1.0, d(lo, hi)]
        assert lines(lo, hi) == pytest.approx(expect, rel=1e-9, abs=1e-13)
    # Middle on the first step: the chord to (1, 1) above, the constant 0 below.
    lo_e = 0.2 - d(0.2, 1.4)
    s = 1 / (1 - lo_e)
    expect = [0.0, 0.0, s, -lo_e * s + s * d(0.2, 1.4)]
    assert lines(0.2, 1.4) == pytest.approx(expect, rel=1e-9, abs=1e-13)
    # Middle on the last step: the constant 2 above, the chord from (2, 1) below.
    up_e = 2.9 + d(1.7, 2.9)
    s = 1 / (up_e - 2)
    expect = [s, 2 - s * up_e - s * d(1.7, 2.9), 0.0, 2.0]
    assert lines(1.7, 2.9) == pytest.approx(expect, rel=1e-9, abs=1e-13)


def test_interval_widened_by_the_slack() -> None:
    lo, hi = floor_interval(t(0.5, 2.0, -1.0), t(1.5, 2.0, 1.0 - 1e-12))
    assert lo.tolist() == [0.0, 1.0, -2.0]  # 2 - slack floors to 1
    assert hi.tolist() == [1.0, 2.0, 1.0]  # 1 - 1e-12 + slack floors to 1
    node = Node("fl", Unary("floor"), ("x",), (3,))
    elo, ehi = unary_interval(node, t(0.5, 2.0, -1.0), t(1.5, 2.0, 1.0 - 1e-12))
    assert elo.tolist() == lo.tolist() and ehi.tolist() == hi.tolist()


def test_non_finite_input_bounds_name_the_node() -> None:
    node = Node("fl", Unary("floor"), ("x",), (2,))
    for bad in (math.inf, math.nan):
        with pytest.raises(BoundsError, match="node 'fl' \\(floor\\)"):
            unary_interval(node, t(0.0, 1.0), t(1.0, bad))
