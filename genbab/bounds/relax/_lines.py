"""Shared machinery of the trig and convex relaxations: lines made sound by shifting.

For any slope ``s``, the tightest upper line of ``f`` on ``[l, u]`` with that slope
has the bias ``max_{x in [l, u]} f(x) - s * x`` (the lower line: the minimum). The
maximum of ``g(x) = f(x) - s * x`` is reached at an endpoint or at a stationary
point of ``g``, where ``f'(x) = s``. So when every such point can be listed in
closed form, the maximum over the listed *candidates* is exact, and the line is
sound whatever the slope: the slopes (or the tangent points that give them) can
be optimized freely, and only the bias depends on the candidates.

Candidates are clamped into ``[l, u]``: a candidate that rounding pushed slightly
outside then costs a second-order amount (``g`` is flat there) rather than
soundness. Rounding in ``f`` and in the bias is covered by a margin of
:data:`SAFETY_ULPS` units of ``eps`` times the size of the numbers involved (see
:func:`margin`).

Gradients: the bias's gradient with respect to the slope is ``-x*`` (Danskin),
so interior candidates are detached; the endpoints keep their gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from genbab.bounds.relax.base import Relaxation, clamp01

Fn = Callable[[Tensor], Tensor]

SAFETY_ULPS = 8.0
"""Margin added to every bias, in units of ``eps * scale`` (see :func:`margin`)."""


def margin(scale: Tensor) -> Tensor:
    """Rounding margin for a bias whose computation involves numbers of size ``scale``.

    Args:
        scale: Non-negative size of the values involved (``|f| + |s| * max|x|``).

    Returns:
        ``SAFETY_ULPS * eps * scale + tiny`` in the dtype of ``scale``.
    """
    finfo = torch.finfo(scale.dtype)
    return SAFETY_ULPS * finfo.eps * scale + finfo.tiny


def shifted_biases(
    f: Fn,
    slope: Tensor,
    lower: Tensor,
    upper: Tensor,
    interior: Sequence[Tensor],
) -> tuple[Tensor, Tensor]:
    """Biases making the line of slope ``slope`` a lower and an upper bound of ``f``.

    Exact (up to :func:`margin`) when ``interior`` lists every point of ``[l, u]``
    where ``f'(x) = slope`` that can be an extremum of ``f(x) - slope * x``;
    otherwise they are only valid on the candidates.

    Args:
        f: The function, elementwise.
        slope: Slopes, broadcastable with the bounds.
        lower: Lower interval ends.
        upper: Upper interval ends.
        interior: Candidate points (any shape broadcastable with the bounds); they
            are detached and clamped into ``[lower, upper]``.

    Returns:
        ``(lower_bias, upper_bias)`` of the broadcast shape, with the margin.
    """
    pts = [lower, upper]
    pts += [torch.minimum(torch.maximum(x.detach(), lower), upper) for x in interior]
    xs = torch.stack(torch.broadcast_tensors(*pts, slope)[:-1])
    g = f(xs) - slope * xs
    lo, hi = g.amin(0), g.amax(0)
    spread = 2 * slope.abs() * torch.maximum(lower.abs(), upper.abs())
    return lo - margin(lo.abs() + spread), hi + margin(hi.abs() + spread)


def shifted_bias(
    f: Fn,
    slope: Tensor,
    lower: Tensor,
    upper: Tensor,
    interior: Sequence[Tensor],
    *,
    above: bool,
) -> Tensor:
    """One side of :func:`shifted_biases`: the upper bias if ``above``, else lower."""
    lo, hi = shifted_biases(f, slope, lower, upper, interior)
    return hi if above else lo


def chord_slope(fl: Tensor, fu: Tensor, lower: Tensor, upper: Tensor) -> Tensor:
    """Slope of the chord; 0 where the interval is a point or the slope overflows.

    Any slope is fine for the callers (the bias is made sound by
    :func:`shifted_bias`), so no width threshold is needed.
    """
    width = upper - lower
    ok = width > 0
    s = (fu - fl) / torch.where(ok, width, torch.ones_like(width))
    return torch.where(ok & torch.isfinite(s), s, torch.zeros_like(s))


def finite_or_constant(
    slope: Tensor, bias: Tensor, constant: Tensor
) -> tuple[Tensor, Tensor]:
    """Replace non-finite lines by the constant line ``constant`` (slope 0).

    ``constant`` is a sound bound of the function on the interval (its minimum
    for a lower line, maximum for an upper one); it may itself be infinite where
    the function is unbounded or overflows, but it is never NaN.
    """
    ok = torch.isfinite(slope) & torch.isfinite(bias)
    zero = torch.zeros_like(slope)
    return torch.where(ok, slope, zero), torch.where(ok, bias, constant)


def frac(params: Tensor) -> Tensor:
    """Project parameters into ``[0, 1]`` (NaN: 0.5).

    Uses :func:`~.base.clamp01`, whose gradient still flows where a descent step
    would bring an out-of-range parameter back inside.
    """
    return clamp01(torch.nan_to_num(params, nan=0.5))


def broadcast_all(*ts: Tensor) -> list[Tensor]:
    """Broadcast tensors to their common shape (views)."""
    return list(torch.broadcast_tensors(*ts))


@dataclass(frozen=True)
class SlopeCurve:
    """A function relaxed by slope-parametrized shifted lines (sin, cos, odd pow).

    Attributes:
        f: The function.
        df: Its derivative.
        slope_range: ``(l, u) -> (s_min, s_max)``, the range of ``f'`` on ``[l, u]``
            (an over-approximation is fine); parameter 0 gives ``s_min``, 1 ``s_max``.
        stationary: ``(slope, l, u) -> points``, every point of ``[l, u]`` where
            ``f'(x) = slope`` that can be an extremum of ``f(x) - slope * x`` (a
            superset is fine; points outside are clamped).
        value_range: ``(l, u) -> (f_min, f_max)``, sound constant bounds used when a
            line overflows.
        extra_margin: ``(l, u) -> extra``, an additional bias margin covering the
            error in locating the stationary points (None: zero).
    """

    f: Fn
    df: Fn
    slope_range: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
    stationary: Callable[[Tensor, Tensor, Tensor], list[Tensor]]
    value_range: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
    extra_margin: Callable[[Tensor, Tensor], Tensor] | None = None


def _slope_lines(
    curve: SlopeCurve, lower: Tensor, upper: Tensor, p: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Slope from the fraction ``p`` and the lower and upper biases for it."""
    s_min, s_max = curve.slope_range(lower, upper)
    slope = s_min + frac(p) * (s_max - s_min)
    stationary = curve.stationary(slope, lower, upper)
    lo_b, up_b = shifted_biases(curve.f, slope, lower, upper, stationary)
    if curve.extra_margin is not None:
        extra = curve.extra_margin(lower, upper)
        lo_b, up_b = lo_b - extra, up_b + extra
    return slope, lo_b, up_b


def relax_by_slope(
    curve: SlopeCurve, lower: Tensor, upper: Tensor, params: Tensor | None = None
) -> Relaxation:
    """Relaxation of ``curve.f`` by two shifted lines with parametrized slopes.

    Args:
        curve: The function's description.
        lower: Lower interval ends, any shape.
        upper: Upper interval ends, broadcastable with ``lower``.
        params: ``[2, *shape]``: fractions in ``[0, 1]`` (clamped) placing the
            lower line's slope (index 0) and the upper line's slope (index 1) in
            ``[s_min, s_max]``; None for the default, :func:`init_slope_params`.

    Returns:
        Sound lines of the broadcast shape of bounds and parameters.
    """
    if params is None:
        params = init_slope_params(curve, lower, upper)
    # One evaluation for both lines; each keeps its own side.
    slope, lo_b, up_b = _slope_lines(curve, lower, upper, params[:2])
    lo_s, lo_b, up_s, up_b = slope[0], lo_b[0], slope[1], up_b[1]
    f_min, f_max = curve.value_range(lower, upper)
    lo_s, lo_b = finite_or_constant(lo_s, lo_b, f_min)
    up_s, up_b = finite_or_constant(up_s, up_b, f_max)
    return point_constants(lower, upper, f_min, f_max, lo_s, lo_b, up_s, up_b)


def point_constants(
    lower: Tensor,
    upper: Tensor,
    f_min: Tensor,
    f_max: Tensor,
    lo_s: Tensor,
    lo_b: Tensor,
    up_s: Tensor,
    up_b: Tensor,
) -> Relaxation:
    """Broadcast the lines, using the constants ``f_min``/``f_max`` on point intervals.

    On ``l == u`` constant lines are exact (and avoid huge slopes such as
    ``sqrt'(0)``).
    """
    point = upper <= lower
    zero = torch.zeros_like(lo_s)
    lo_s, up_s = torch.where(point, zero, lo_s), torch.where(point, zero, up_s)
    lo_b, up_b = torch.where(point, f_min, lo_b), torch.where(point, f_max, up_b)
    return Relaxation(*broadcast_all(lo_s, lo_b, up_s, up_b))


def init_slope_params(curve: SlopeCurve, lower: Tensor, upper: Tensor) -> Tensor:
    """Default parameters of :func:`relax_by_slope`, shape ``[2, *shape]``.

    Among a few candidate slopes (the chord's, the tangent's at the midpoint, and
    a grid of five over ``[s_min, s_max]``) each line picks the one whose shifted
    line is tightest at the midpoint, i.e. encloses the least area between line
    and function over ``[l, u]``. Inside a convex (concave) stretch this gives
    the chord above (below) and the midpoint tangent on the other side.
    """
    with torch.no_grad():
        lower, upper = broadcast_all(lower, upper)
        s_min, s_max = curve.slope_range(lower, upper)
        span = s_max - s_min
        safe = torch.where(span > 0, span, torch.ones_like(span))
        mid = lower + 0.5 * (upper - lower)

        def to_frac(s: Tensor) -> Tensor:
            return torch.where(span > 0, (s - s_min) / safe, 0.5).clamp(0.0, 1.0)

        chord = chord_slope(curve.f(lower), curve.f(upper), lower, upper)
        cands = [to_frac(chord), to_frac(curve.df(mid))]
        cands += [torch.full_like(lower, v) for v in (0.0, 0.25, 0.5, 0.75, 1.0)]
        p = torch.stack(cands)  # [C, *shape]

        slope, lo_b, up_b = _slope_lines(curve, lower, upper, p)
        nan = torch.isnan
        lo_mid = torch.where(nan(lo_b), -float("inf"), slope * mid + lo_b)
        up_mid = torch.where(nan(up_b), float("inf"), slope * mid + up_b)
        return torch.stack([_pick(p, lo_mid), _pick(p, -up_mid)])


def _pick(p: Tensor, score: Tensor) -> Tensor:
    """``p[c]`` at the first ``c`` of highest ``score`` along dim 0 (elementwise).

    A loop over the few candidates: much faster on CPU than ``argmax(0)``.
    """
    best_p, best = p[0], score[0]
    for c in range(1, p.shape[0]):
        better = score[c] > best
        best_p = torch.where(better, p[c], best_p)
        best = torch.where(better, score[c], best)
    return best_p
