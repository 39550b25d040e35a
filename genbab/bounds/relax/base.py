"""Value types shared by all relaxations.

A relaxation of a scalar function ``f`` on an interval ``[lower, upper]`` is a pair
of lines ``lower_slope * x + lower_bias <= f(x) <= upper_slope * x + upper_bias``
valid for every ``x`` in the interval. All tensors broadcast elementwise, so one
call relaxes a whole batch of neurons (and domains, and specifications).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Relaxation:
    """Linear lower and upper bounds of a univariate function on an interval.

    All four tensors have the broadcast shape of the interval bounds (and of the
    parameters, when the relaxation is optimizable).
    """

    lower_slope: Tensor
    lower_bias: Tensor
    upper_slope: Tensor
    upper_bias: Tensor


@dataclass(frozen=True)
class PlaneRelaxation:
    """Linear lower and upper bounds of a bivariate function on a box.

    ``lower_x * x + lower_y * y + lower_bias <= f(x, y)
    <= upper_x * x + upper_y * y + upper_bias`` for ``x`` in ``[xl, xu]`` and ``y``
    in ``[yl, yu]``.
    """

    lower_x: Tensor
    lower_y: Tensor
    lower_bias: Tensor
    upper_x: Tensor
    upper_y: Tensor
    upper_bias: Tensor


UnaryRelaxFn = Callable[[Tensor, Tensor, "Tensor | None"], Relaxation]


@dataclass(frozen=True)
class UnaryFamily:
    """Everything the bound engine needs to know about one univariate nonlinearity.

    Attributes:
        name: Short name (``"sigmoid"``), the key in the registry.
        fn: The function itself, elementwise on tensors.
        relax: ``relax(lower, upper, params)`` returns a sound :class:`Relaxation`
            for any ``params`` value (the function clamps them itself); ``None``
            gives the default, non-optimized (CROWN) relaxation.
        num_params: Number of optimizable parameters per neuron (0 if none).
            ``params`` has shape ``[num_params, *broadcast shape]``.
        init_params: ``init_params(lower, upper)`` returns parameters that
            reproduce the default relaxation, shape ``[num_params, *lower.shape]``.
        domain: The closed interval of valid inputs (e.g. ``(0, inf)`` for log).
    """

    name: str
    fn: Callable[[Tensor], Tensor]
    relax: UnaryRelaxFn
    num_params: int
    init_params: Callable[[Tensor, Tensor], Tensor]
    domain: tuple[float, float] = (-float("inf"), float("inf"))


def line_through(x0: Tensor, y0: Tensor, slope: Tensor) -> tuple[Tensor, Tensor]:
    """Return ``(slope, bias)`` of the line with the given slope through (x0, y0)."""
    return slope, y0 - slope * x0


def chord(
    f: Callable[[Tensor], Tensor], lower: Tensor, upper: Tensor
) -> tuple[Tensor, Tensor]:
    """Return ``(slope, bias)`` of the chord of ``f`` between lower and upper.

    Where the interval is (nearly) a point, the slope is taken as 0 and the line
    passes through ``f(lower)``; callers handle that case's soundness with the
    margin they add.
    """
    width = upper - lower
    fl, fu = f(lower), f(upper)
    safe = width > 1e-12
    slope = torch.where(safe, (fu - fl) / torch.where(safe, width, 1.0), 0.0)
    return slope, fl - slope * lower


# --------------------------------------------------------------------------------
# Helpers for tangent/chord relaxations of smooth functions.
# --------------------------------------------------------------------------------

DerivFn = Callable[[Tensor], Tensor]

#: Safety margin of tangent/chord lines, in units of the dtype's machine epsilon
#: times the magnitude of the quantities involved (see :func:`safety_margin`).
MARGIN_EPS = 8.0


def safety_margin(
    slope_scale: Tensor, bias: Tensor, lower: Tensor, upper: Tensor, fmax: Tensor
) -> Tensor:
    """Amount to move a computed line away from ``f`` so rounding cannot break it.

    A line ``k * x + b`` computed in floating point from ``f(x0)``, ``f'(x0)`` and
    ``x0`` in ``[lower, upper]`` (or the chord from ``f(lower)``, ``f(upper)``)
    differs from the exact line at any ``x`` of the interval by at most a few
    ``eps * (|b| + K * (|lower| + |upper|) + F)``, where ``F >= |f|`` on the
    interval and ``K`` bounds the size of the terms from which the slope was
    computed (``|k|`` when ``k`` is accurate to a few ulps relative; more when it
    comes from a sum with cancellation). The same bound covers evaluating the line
    in the dtype later. Moving the lower line down and the upper line up by
    ``MARGIN_EPS`` times that, plus ``MARGIN_EPS * eps``, makes the relaxation sound
    despite rounding. Relative to the values involved it costs about ``1e-6`` in
    float32 and ``2e-15`` in float64.

    Args:
        slope_scale: ``K`` above, any shape.
        bias: Line biases, broadcastable with ``slope_scale``.
        lower: Interval lower ends.
        upper: Interval upper ends.
        fmax: An upper bound of ``|f|`` on the interval.

    Returns:
        The non-negative margin, broadcast shape of the inputs.
    """
    eps = torch.finfo(bias.dtype).eps
    size = 1.0 + bias.abs() + slope_scale * (lower.abs() + upper.abs()) + fmax.abs()
    return MARGIN_EPS * eps * size


class _Clamp01(torch.autograd.Function):
    """``clamp(p, 0, 1)`` whose gradient also flows when it points back inside.

    Outside ``[0, 1]`` a plain clamp has zero gradient, so a parameter pushed out
    by a gradient step could never come back. Here the gradient passes where
    ``p`` is inside, or where a descent step (``p -= lr * grad``) would move it
    towards ``[0, 1]``.
    """

    @staticmethod
    def forward(ctx, p: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(p)
        return p.clamp(0.0, 1.0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (p,) = ctx.saved_tensors
        inward = ((p >= 0) & (p <= 1)) | ((p > 1) & (grad > 0)) | ((p < 0) & (grad < 0))
        return torch.where(inward, grad, torch.zeros_like(grad))


def clamp01(p: Tensor) -> Tensor:
    """Clamp parameters into ``[0, 1]``, letting inward gradients through."""
    return _Clamp01.apply(p)


def interpolate(a: Tensor, b: Tensor, p: Tensor) -> Tensor:
    """Return ``a + clamp(p, 0, 1) * (b - a)``, guaranteed inside ``[a, b]``.

    The final clamp removes rounding overshoot, so validity proofs about the
    range ``[a, b]`` (with ``a <= b``) hold for the returned point exactly.
    """
    t = a + clamp01(p) * (b - a)
    return torch.minimum(torch.maximum(t, a), b)


def fraction(t: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Inverse of :func:`interpolate`: the ``p`` in ``[0, 1]`` with ``t = a + p (b-a)``.

    Where ``b <= a`` (an empty or point range) it returns 0.5.
    """
    width = b - a
    ok = width > 0
    p = (t - a) / torch.where(ok, width, torch.ones_like(width))
    return torch.where(ok, p.clamp(0.0, 1.0), torch.full_like(p, 0.5))


def tangent_line(
    f: Callable[[Tensor], Tensor], df: DerivFn, t: Tensor
) -> tuple[Tensor, Tensor]:
    """Return ``(slope, bias)`` of the tangent of ``f`` at ``t``."""
    slope = df(t)
    return slope, f(t) - slope * t


def chord_line(
    f: Callable[[Tensor], Tensor],
    df: DerivFn,
    lower: Tensor,
    upper: Tensor,
    critical: tuple[float, ...] = (),
) -> tuple[Tensor, Tensor]:
    """Return ``(slope, bias)`` of the chord of ``f`` through both interval ends.

    The computed slope is clamped into the range of ``f'`` on the interval (which
    contains the exact chord slope, by the mean value theorem), taken over the
    ends and the points ``critical`` where ``f'`` has its extrema (the inflection
    points of ``f``). On very narrow intervals the difference ``f(u) - f(l)`` is
    mostly roundoff and the raw slope can be far off; clamping keeps the line
    within roundoff of the exact chord. On a point interval the slope is ``f'(l)``.

    Args:
        f: The function.
        df: Its derivative.
        lower: Interval lower ends.
        upper: Interval upper ends (``>= lower``).
        critical: Points where ``f'`` may have an interior extremum.

    Returns:
        ``(slope, bias)``, the broadcast shape of the bounds; the line passes
        through ``(lower, f(lower))``.
    """
    width = upper - lower
    fl, fu = f(lower), f(upper)
    ok = width > 0
    raw = (fu - fl) / torch.where(ok, width, torch.ones_like(width))
    derivs = [df(lower), df(upper)]
    for c in critical:
        inside = torch.minimum(torch.maximum(torch.full_like(lower, c), lower), upper)
        derivs.append(df(inside))
    stacked = torch.stack(torch.broadcast_tensors(*derivs))
    lo, hi = stacked.min(0).values, stacked.max(0).values
    slope = torch.minimum(torch.maximum(torch.where(ok, raw, lo), lo), hi)
    return slope, fl - slope * lower


def bisect_boundary(
    pred: Callable[[Tensor], Tensor], valid: Tensor, invalid: Tensor, iters: int = 60
) -> Tensor:
    """Vectorised bisection for the boundary of a monotone predicate.

    ``pred`` must be monotone along each segment ``[valid, invalid]`` (true on a
    sub-segment containing ``valid``). Every returned point is one where ``pred``
    was evaluated true (or the initial ``valid`` end), so it errs towards the
    valid side: a result is never past the boundary (up to the rounding of
    ``pred`` itself).

    Args:
        pred: Elementwise predicate, ``Tensor -> bool Tensor``.
        valid: End assumed to satisfy ``pred``.
        invalid: Other end.
        iters: Number of halvings.

    Returns:
        The last known valid points, shape of the broadcast ends.
    """
    valid, invalid = torch.broadcast_tensors(valid, invalid)
    for _ in range(iters):
        mid = 0.5 * (valid + invalid)
        ok = pred(mid)
        valid = torch.where(ok, mid, valid)
        invalid = torch.where(ok, invalid, mid)
    return valid


def round_toward(x: Tensor, dtype: torch.dtype, down: bool) -> Tensor:
    """Cast ``x`` to ``dtype`` rounding towards -inf (``down``) or +inf."""
    y = x.to(dtype)
    if y.dtype == x.dtype:
        return y
    back = y.to(x.dtype)
    target = torch.full_like(y, -float("inf") if down else float("inf"))
    wrong = back > x if down else back < x
    return torch.where(wrong, torch.nextafter(y, target), y)


@dataclass(frozen=True)
class TangentPlan:
    """How to build one line (lower or upper) of a tangent/chord relaxation.

    Where ``use_chord`` is true the line is the chord; elsewhere it is the tangent
    at ``t = start + p * (end - start)`` for the parameter ``p`` in ``[0, 1]``.
    Every point of ``[start, end]`` must give a valid tangent; ``default`` is the
    point of the non-optimized relaxation. All tensors share one shape.
    """

    use_chord: Tensor
    start: Tensor
    end: Tensor
    default: Tensor


def plan_params(lower_plan: TangentPlan, upper_plan: TangentPlan) -> Tensor:
    """Parameters ``[2, *shape]`` selecting the plans' default tangent points."""
    return torch.stack(
        [
            fraction(lower_plan.default, lower_plan.start, lower_plan.end),
            fraction(upper_plan.default, upper_plan.start, upper_plan.end),
        ]
    )


def relax_from_plans(
    f: Callable[[Tensor], Tensor],
    df: DerivFn,
    lower: Tensor,
    upper: Tensor,
    params: Tensor,
    plans: tuple[TangentPlan, TangentPlan],
    fmax: Tensor,
    critical: tuple[float, ...] = (),
    deriv_scale: DerivFn | None = None,
) -> Relaxation:
    """Relaxation made of chords and tangents, with rounding safety margins.

    Args:
        f: The function (accurate to a few ulps).
        df: Its derivative (accurate to a few ulps, relative).
        lower: Interval lower ends, shape broadcastable to the plans' shape.
        upper: Interval upper ends.
        params: ``[2, *shape']``: tangent positions of the lower and upper lines;
            ``shape'`` broadcasts with the plans' shape.
        plans: Plans of the lower and upper lines.
        fmax: Bound on ``|f|`` over the interval, for :func:`safety_margin`.
        critical: Extremum points of ``f'`` (see :func:`chord_line`).
        deriv_scale: Size of the terms from which ``df(t)`` is computed (its
            rounding error is a few ``eps * deriv_scale(t)``); default ``|df(t)|``.

    Returns:
        The relaxation, broadcast shape of bounds and parameters.
    """
    chord_k, chord_b = chord_line(f, df, lower, upper, critical)
    lines = []
    for plan, p in zip(plans, params, strict=True):
        t = interpolate(plan.start, plan.end, p)
        tan_k, tan_b = tangent_line(f, df, t)
        k = torch.where(plan.use_chord, chord_k, tan_k)
        b = torch.where(plan.use_chord, chord_b, tan_b)
        scale = tan_k.abs() if deriv_scale is None else deriv_scale(t)
        scale = torch.where(plan.use_chord, chord_k.abs(), scale)
        lines.append((k, b, safety_margin(scale, b, lower, upper, fmax)))
    (lk, lb, lm), (uk, ub, um) = lines
    shape = torch.broadcast_shapes(lk.shape, uk.shape, lower.shape, upper.shape)
    return Relaxation(
        lk.expand(shape), (lb - lm).expand(shape), uk.expand(shape),
        (ub + um).expand(shape),
    )  # fmt: skip
