"""Bounds of piecewise functions: ``floor``, and sums of shifted ReLUs.

Sums of shifted ReLUs (:class:`PiecewiseLinear`, made by a graph rewrite) are
relaxed as one univariate piecewise-linear function, see
:mod:`genbab.bounds.relax.piecewise_linear`; the rest of this docstring is
about ``floor``.

``floor`` is a staircase, so on ``[l, u]`` its graph lies between two polygons:
the upper hull of the step corners ``(l, fl), (fl + 1, fl + 1), ..., (fu, fu),
(u, fu)`` and the lower hull of ``(l, fl), (fl + 1, fl), ..., (fu, fu - 1),
(u, fu)``, with ``fl = floor(l)`` and ``fu = floor(u)``. The relaxation takes
the supporting line of each hull at the middle of the interval (which minimizes
the area between line and function among the hull's supporting lines):

* one step (``fl == fu``): the constant ``fl``, exact;
* middle on the first step: upper the chord from ``(l, fl)`` to ``(fl+1, fl+1)``,
  lower the constant ``fl``;
* middle between the first and last integer: ``x - 1 <= floor(x) <= x``;
* middle on the last step: upper the constant ``fu``, lower the chord from
  ``(fu, fu - 1)`` to ``(u, fu)``.

Whatever the slope ``s >= 0``, the biases are recomputed from the only points
where ``floor(x) - s x`` can reach its extremes on ``[l, u]`` (the interval ends,
the step corners at the first and last integer, and the left limits there), so
the lines are valid for the real function by construction.

Rounding guard: ``floor`` jumps, so an input a rounding error away from an
integer can change the output by one. The input interval is therefore widened by
``FLOOR_SLACK * (1 + max|x|)`` on both sides before anything is computed (the
interval :func:`floor_interval` and the lines alike), and the lines are shifted
so that they bound ``floor(x')`` for every ``x'`` within the slack of ``x``.
This covers the float32 evaluation of the floor's input in the model and the
rounding of its bounds.
"""

from __future__ import annotations

import torch
from torch import Tensor

from genbab.bounds.relax import register
from genbab.bounds.relax._lines import margin
from genbab.bounds.relax.base import Relaxation, UnaryFamily
from genbab.bounds.relax.piecewise_linear import (
    PiecewiseLinearFunction,
    init_piecewise_params,
    piecewise_range,
    relax_piecewise_linear,
)
from genbab.bounds.rules import Interval, NodeRule, register_rule
from genbab.errors import BoundsError
from genbab.model.graph import Node
from genbab.model.ops import Op

__all__ = [
    "FLOOR",
    "FLOOR_SLACK",
    "PiecewiseLinear",
    "breakpoint_split_points",
    "breakpoints_inside",
    "floor_interval",
    "relax_floor",
]

FLOOR_SLACK = 2.0**-20
"""Relative widening of a floor's input interval (about 8 float32 ulps)."""


def _slack(lower: Tensor, upper: Tensor) -> Tensor:
    return FLOOR_SLACK * (1 + torch.maximum(lower.abs(), upper.abs()))


def floor_interval(lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
    """Output interval of ``floor`` on ``[lower, upper]``, widened by the slack.

    Args:
        lower: Lower input bounds, any shape.
        upper: Upper input bounds, same shape.

    Returns:
        ``(floor(lower - slack), floor(upper + slack))``.
    """
    d = _slack(lower, upper)
    return torch.floor(lower - d), torch.floor(upper + d)


def _upper_bias(s: Tensor, lo: Tensor, fl: Tensor, fu: Tensor) -> Tensor:
    """Least ``b`` with ``floor(x) <= s x + b`` on ``[lo, u]`` (``s >= 0``).

    ``floor(x) - s x`` falls within each step, so its maximum is at ``lo`` or at
    an integer ``n`` in ``(lo, u]``, where it is ``n (1 - s)``: linear in ``n``,
    so the first (``fl + 1``) or the last (``fu``) integer. With one step there
    is no integer, and ``fl + 1 > fu`` is excluded.
    """
    steps = fu > fl
    first = torch.where(steps, (fl + 1) * (1 - s), -torch.inf)
    last = torch.where(steps, fu * (1 - s), -torch.inf)
    return torch.maximum(fl - s * lo, torch.maximum(first, last))


def _lower_bias(s: Tensor, up: Tensor, fl: Tensor, fu: Tensor) -> Tensor:
    """Greatest ``b`` with ``floor(x) >= s x + b`` on ``[l, up]`` (``s >= 0``).

    Within each step the infimum of ``floor(x) - s x`` is at its right end: ``up``
    itself or the left limit ``(n - 1) - s n`` at an integer ``n`` in ``(l, up]``.
    """
    steps = fu > fl
    first = torch.where(steps, fl - s * (fl + 1), torch.inf)
    last = torch.where(steps, (fu - 1) - s * fu, torch.inf)
    return torch.minimum(fu - s * up, torch.minimum(first, last))


def relax_floor(
    lower: Tensor, upper: Tensor, params: Tensor | None = None
) -> Relaxation:
    """Lines below and above ``floor`` on ``[lower, upper]`` (see module docs).

    Args:
        lower: Lower input bounds, broadcastable with ``upper``.
        upper: Upper input bounds.
        params: Unused (the relaxation has no parameters); accepted for the
            :class:`~genbab.bounds.relax.base.UnaryFamily` interface.

    Returns:
        Lines ``L, U`` with ``L(x) <= floor(x') <= U(x)`` for ``x`` in
        ``[lower, upper]`` and ``|x' - x| <= slack``.
    """
    lower, upper = torch.broadcast_tensors(lower, upper)
    d = _slack(lower, upper)
    lo, up = lower - d, upper + d
    fl, fu = torch.floor(lo), torch.floor(up)
    mid = (lo + up) / 2
    one, zero = torch.ones_like(lo), torch.zeros_like(lo)
    on_first = mid < fl + 1
    on_last = mid > fu

    # Slopes: the hulls' supporting lines at the middle (0 on a single step).
    up_chord = 1 / (fl + 1 - lo)
    s_up = torch.where(on_first, up_chord, torch.where(on_last, zero, one))
    low_chord = 1 / torch.where(on_last, up - fu, one)
    s_low = torch.where(on_first, zero, torch.where(on_last, low_chord, one))
    single = fu == fl
    s_up, s_low = torch.where(single, zero, s_up), torch.where(single, zero, s_low)

    # Biases from the extreme points, the lines shifted by the slack (so that
    # floor(x +- d) is bounded for x in [lower, upper]) and a rounding margin.
    b_up = _upper_bias(s_up, lo, fl, fu) + s_up * d
    b_low = _lower_bias(s_low, up, fl, fu) - s_low * d
    reach = torch.maximum(lo.abs(), up.abs())
    b_up = b_up + margin(b_up.abs() + 2 * s_up * reach)
    b_low = b_low - margin(b_low.abs() + 2 * s_low * reach)
    return Relaxation(s_low, b_low, s_up, b_up)


def _no_params(lower: Tensor, upper: Tensor) -> Tensor:
    return lower.new_zeros(0, *lower.shape)


FLOOR = register(UnaryFamily("floor", torch.floor, relax_floor, 0, _no_params))
"""The ``floor`` family (no optimizable parameters)."""


# ---------------------------------------------------------------- sums of ReLUs


class PiecewiseLinear(Op):
    """``f(x) = bias + sum_k weights[k] * relu(x - breakpoints[k])`` elementwise.

    Made by :func:`genbab.bounds.rewrite.merge_relu_sums` from the subgraph
    ``Linear(Relu(Unsqueeze(x, -1) - offsets))`` of ReLU-sum surrogates; bounded
    by :func:`~genbab.bounds.relax.piecewise_linear.relax_piecewise_linear`.

    Attributes:
        breakpoints: ``[K]``, strictly increasing (the offsets).
        weights: ``[K]``, the ReLUs' weights (the slope changes).
        bias: 0-d constant.
    """

    op_type = "PiecewiseLinear"

    def __init__(self, breakpoints: Tensor, weights: Tensor, bias: Tensor) -> None:
        self.breakpoints = breakpoints
        self.weights = weights
        self.bias = bias

    def function(self) -> PiecewiseLinearFunction:
        """The function as a value for the relaxations."""
        return PiecewiseLinearFunction(self.breakpoints, self.weights, self.bias)

    def forward(self, *xs: Tensor) -> Tensor:
        (x,) = xs
        kinks = torch.relu(x.unsqueeze(-1) - self.breakpoints)
        return torch.matmul(kinks, self.weights) + self.bias


def breakpoint_split_points(
    op: PiecewiseLinear, lower: Tensor, upper: Tensor
) -> Tensor:
    """Where to split the input of a :class:`PiecewiseLinear` node.

    The breakpoint strictly inside ``(lower, upper)`` nearest to the midpoint;
    the midpoint where there is none (``f`` is then linear on the interval and
    its relaxation exact, so such a neuron gains nothing from a split). Each
    child then has fewer breakpoints inside, and one with none is exact.

    Args:
        op: The node's op.
        lower: Input lower bounds, any shape.
        upper: Input upper bounds, same shape.

    Returns:
        Split points, the shape of ``lower``.
    """
    o = op.breakpoints
    lo, hi = lower.unsqueeze(-1), upper.unsqueeze(-1)
    mid = (lower + upper) / 2
    inside = (o > lo) & (o < hi)
    dist = torch.where(inside, (o - mid.unsqueeze(-1)).abs(), torch.inf)
    best = dist.argmin(-1, keepdim=True)
    point = o.expand(inside.shape).gather(-1, best).squeeze(-1)
    return torch.where(inside.any(-1), point, mid)


def breakpoints_inside(op: PiecewiseLinear, lower: Tensor, upper: Tensor) -> Tensor:
    """How many breakpoints lie strictly inside each interval (0: exact there)."""
    o = op.breakpoints
    return ((o > lower.unsqueeze(-1)) & (o < upper.unsqueeze(-1))).sum(-1)


def _check_finite(node: Node, lo: Tensor, hi: Tensor) -> None:
    if not (torch.isfinite(lo).all() and torch.isfinite(hi).all()):
        raise BoundsError(
            f"input bounds of node '{node.name}' (piecewise-linear sum of ReLUs) "
            "are infinite or NaN; the input box may be too wide for this model"
        )


def _pwl_interval(node: Node, ins: list[Interval]) -> Interval:
    lo, hi = ins[0]
    _check_finite(node, lo, hi)
    return piecewise_range(node.op.function(), lo, hi)  # type: ignore[attr-defined]


def _pwl_backward(node, a, ins, params, in_shapes):
    lo, hi = ins[0]
    _check_finite(node, lo, hi)
    f = node.op.function()
    rel = relax_piecewise_linear(f, lo.unsqueeze(1), hi.unsqueeze(1), params)
    pos, neg = a.clamp(min=0), a.clamp(max=0)
    coef = pos * rel.lower_slope + neg * rel.upper_slope
    bias = (pos * rel.lower_bias + neg * rel.upper_bias).flatten(2).sum(-1)
    return [coef], bias


def _pwl_init(node: Node, ins: list[Interval]) -> Tensor:
    lo, hi = ins[0]
    function = node.op.function()  # type: ignore[attr-defined]
    return init_piecewise_params(function, lo, hi)


register_rule(PiecewiseLinear, NodeRule(_pwl_interval, _pwl_backward, _pwl_init))
