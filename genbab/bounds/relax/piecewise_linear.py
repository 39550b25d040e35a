"""Relaxation of a univariate piecewise-linear function given by shifted ReLUs.

The function is ``f(x) = c + sum_k w_k relu(x - o_k)`` with breakpoints
``o_1 < ... < o_K`` (a sum of shifted ReLUs, as surrogate models of sin, cos or
sigmoid write it). On ``[l, u]`` it is linear between consecutive points of
``P = {l, u} U {o_k in (l, u)}``, so for any slope ``s`` the extremes of
``f(x) - s x`` over ``[l, u]`` are reached at points of ``P``: the line
``s x + min_P (f - s x)`` is below ``f`` on the whole interval and ``s x +
max_P (f - s x)`` above it, whatever ``s`` is. The slope is free, and only the
bias depends on the points (the shifted-lines idea of :mod:`._lines`, with the
breakpoints as the candidates).

Default slopes: the supporting line at the midpoint ``m`` of the lower convex
hull of ``f`` on ``[l, u]`` (for the lower line; the upper concave hull for the
upper line). Among all lower lines it maximizes ``s m + b``, that is the
integral of the line over the interval, so it leaves the least area to the
function. Its slope is the slope of the hull's bridge over ``m``:
``max_{p <= m} min_{q > m} slope(p, q)`` over points ``p, q`` of ``P``, and the
mirror ``min_p max_q`` for the upper hull. On an interval without breakpoint
inside, both lines are ``f`` itself.

Optimizable parameters (alpha-CROWN): ``p`` in ``[0, 1]`` per line places the
slope between the least and the greatest slope of ``f``'s pieces on ``[l, u]``
(every supporting line of a hull has its slope there).

Per-neuron work is ``O(K)`` for the biases, ``O(K^2)`` for the default slopes
(computed in chunks of neurons).

Compared with relaxing each ReLU by its own triangle and summing, this is the
tightest possible pair of lines of these slopes: the sum of triangles keeps a
gap at every breakpoint inside the interval, and with weights of mixed signs
those gaps add up.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from genbab.bounds.relax._lines import margin
from genbab.bounds.relax.base import Relaxation, clamp01

__all__ = [
    "PiecewiseLinearFunction",
    "init_piecewise_params",
    "piecewise_range",
    "relax_piecewise_linear",
]

_PAIR_CHUNK = 1 << 22
"""Largest number of point pairs handled at once by the default slopes."""


@dataclass(frozen=True)
class PiecewiseLinearFunction:
    """``f(x) = bias + sum_k weights[k] * relu(x - breakpoints[k])``.

    Attributes:
        breakpoints: ``[K]``, strictly increasing.
        weights: ``[K]``, the change of slope at each breakpoint.
        bias: 0-d, the value left of the first breakpoint.
    """

    breakpoints: Tensor
    weights: Tensor
    bias: Tensor

    def __call__(self, x: Tensor) -> Tensor:
        """``f`` elementwise, any shape."""
        kinks = torch.relu(x.unsqueeze(-1) - self.breakpoints)
        return self.bias + (kinks * self.weights).sum(-1)

    def at_breakpoints(self) -> Tensor:
        """``f(o_k)``, ``[K]``."""
        return self(self.breakpoints)

    def slopes(self) -> Tensor:
        """Slopes of the ``K + 1`` pieces, left to right (the first is 0)."""
        zero = self.weights.new_zeros(1)
        return torch.cat([zero, torch.cumsum(self.weights, 0)])


def _points(f: PiecewiseLinearFunction, lower: Tensor, upper: Tensor):
    """The points ``P`` as ``[*shape, K + 2]`` abscissas and values, in order.

    Breakpoints outside ``(l, u)`` are clamped onto ``l`` or ``u`` (duplicates
    of those two points, harmless for minima and maxima).
    """
    lo, hi = lower.unsqueeze(-1), upper.unsqueeze(-1)
    o = f.breakpoints
    fl, fu = f(lower).unsqueeze(-1), f(upper).unsqueeze(-1)
    inner = torch.where(o <= lo, fl, torch.where(o >= hi, fu, f.at_breakpoints()))
    xs = torch.cat([lo, torch.minimum(torch.maximum(o, lo), hi), hi], -1)
    ys = torch.cat([fl, inner, fu], -1)
    return xs, ys


def piecewise_range(
    f: PiecewiseLinearFunction, lower: Tensor, upper: Tensor
) -> tuple[Tensor, Tensor]:
    """Exact range of ``f`` on ``[lower, upper]`` (elementwise, any shape)."""
    _, ys = _points(f, lower, upper)
    return ys.min(-1).values, ys.max(-1).values


def _slope_range(f: PiecewiseLinearFunction, lower: Tensor, upper: Tensor):
    """Least and greatest slope of the pieces that meet ``(l, u)``."""
    o = f.breakpoints
    inf = o.new_full((1,), float("inf"))
    starts = torch.cat([-inf, o])  # piece j is (starts[j], ends[j])
    ends = torch.cat([o, inf])
    lo, hi = lower.unsqueeze(-1), upper.unsqueeze(-1)
    # Pieces that overlap [l, u]; the one containing l always does.
    meets = (ends > lo) & (starts < hi) | ((starts <= lo) & (ends >= lo))
    s = f.slopes()
    big = torch.finfo(s.dtype).max
    s_min = torch.where(meets, s, torch.full_like(s, big)).min(-1).values
    s_max = torch.where(meets, s, torch.full_like(s, -big)).max(-1).values
    return s_min, s_max


def _hull_slopes(xs: Tensor, ys: Tensor, mid: Tensor) -> tuple[Tensor, Tensor]:
    """Slopes of the lower and upper hulls' bridges over ``mid``.

    Args:
        xs: ``[N, P]`` abscissas, ascending.
        ys: ``[N, P]`` values.
        mid: ``[N]``.
    """
    left = xs <= mid.unsqueeze(-1)  # [N, P]
    right = ~left
    dx = xs.unsqueeze(-2) - xs.unsqueeze(-1)  # [N, i, j]: x_j - x_i
    dy = ys.unsqueeze(-2) - ys.unsqueeze(-1)
    pair = left.unsqueeze(-1) & right.unsqueeze(-2)
    slope = dy / torch.where(pair, dx, torch.ones_like(dx))
    big = torch.finfo(xs.dtype).max
    lower = torch.where(pair, slope, big).min(-1).values  # min over right q
    lower = torch.where(left, lower, -big).max(-1).values  # max over left p
    upper = torch.where(pair, slope, -big).max(-1).values
    upper = torch.where(left, upper, big).min(-1).values
    has_right = right.any(-1)
    zero = torch.zeros_like(lower)
    return torch.where(has_right, lower, zero), torch.where(has_right, upper, zero)


def default_slopes(
    f: PiecewiseLinearFunction, lower: Tensor, upper: Tensor
) -> tuple[Tensor, Tensor]:
    """The default (hull) slopes of the lower and upper lines, shape of ``lower``."""
    lower, upper = torch.broadcast_tensors(lower, upper)
    shape = lower.shape
    flat_l, flat_u = lower.reshape(-1), upper.reshape(-1)
    P = f.breakpoints.numel() + 2
    step = max(1, _PAIR_CHUNK // (P * P))
    lows, ups = [], []
    for i in range(0, flat_l.numel(), step):
        lo, hi = flat_l[i : i + step], flat_u[i : i + step]
        xs, ys = _points(f, lo, hi)
        a, b = _hull_slopes(xs, ys, (lo + hi) / 2)
        lows.append(a)
        ups.append(b)
    if not lows:
        empty = lower.new_zeros(shape)
        return empty, empty
    s_min, s_max = _slope_range(f, lower, upper)
    s_low = torch.cat(lows).reshape(shape).clamp(s_min, s_max)
    s_up = torch.cat(ups).reshape(shape).clamp(s_min, s_max)
    return s_low, s_up


def _fraction(s: Tensor, s_min: Tensor, s_max: Tensor) -> Tensor:
    width = s_max - s_min
    ok = width > 0
    p = (s - s_min) / torch.where(ok, width, torch.ones_like(width))
    return torch.where(ok, p.clamp(0, 1), torch.full_like(p, 0.5))


def init_piecewise_params(
    f: PiecewiseLinearFunction, lower: Tensor, upper: Tensor
) -> Tensor:
    """Parameters ``[2, *shape]`` that give the default slopes."""
    s_low, s_up = default_slopes(f, lower, upper)
    s_min, s_max = _slope_range(f, lower, upper)
    return torch.stack([_fraction(s_low, s_min, s_max), _fraction(s_up, s_min, s_max)])


def relax_piecewise_linear(
    f: PiecewiseLinearFunction,
    lower: Tensor,
    upper: Tensor,
    params: Tensor | None = None,
) -> Relaxation:
    """Lines below and above ``f`` on ``[lower, upper]`` (see module docs).

    Args:
        f: The function.
        lower: Lower input bounds, broadcastable with ``upper``.
        upper: Upper input bounds.
        params: None for the default (hull) slopes, or ``[2, *shape']``:
            fractions placing the lower and upper slopes between the least and
            greatest slope of the pieces on the interval (clamped to
            ``[0, 1]``); ``shape'`` broadcasts with the bounds.

    Returns:
        The relaxation, broadcast shape of bounds and parameters; sound for
        every parameter value.
    """
    lower, upper = torch.broadcast_tensors(lower, upper)
    if params is None:
        s_low, s_up = default_slopes(f, lower, upper)
    else:
        s_min, s_max = _slope_range(f, lower, upper)
        s_low = s_min + clamp01(params[0]) * (s_max - s_min)
        s_up = s_min + clamp01(params[1]) * (s_max - s_min)
    xs, ys = _points(f, lower, upper)
    # The points do not depend on the slopes: their gradient is -x (Danskin).
    b_low = (ys - s_low.unsqueeze(-1) * xs).min(-1).values
    b_up = (ys - s_up.unsqueeze(-1) * xs).max(-1).values
    reach = torch.maximum(lower.abs(), upper.abs())
    size = ys.abs().max(-1).values + f.weights.abs().sum() * reach
    b_low = b_low - margin(size + b_low.abs() + s_low.abs() * reach)
    b_up = b_up + margin(size + b_up.abs() + s_up.abs() * reach)
    shape = torch.broadcast_shapes(s_low.shape, s_up.shape, b_low.shape)
    return Relaxation(
        s_low.expand(shape), b_low.expand(shape), s_up.expand(shape),
        b_up.expand(shape),
    )  # fmt: skip
