"""Relaxations of functions that are convex or concave on each input interval.

Registered families: ``exp``, ``softplus`` (convex), ``log``, ``sqrt`` (concave),
``reciprocal`` (convex for positive inputs, concave for negative ones) and
``square``; :func:`pow_family` builds the family of ``x ** a`` for a given
exponent (the engine calls it with the ``pow`` node's exponent).

For a convex function the upper line is the chord and the lower line is the
tangent at a point ``t = l + p * (u - l)``, with one parameter ``p`` clamped into
``[0, 1]`` (default 0.5, the midpoint: that tangent encloses the least area).
For a concave function the roles swap. Both biases are computed by
:func:`~genbab.bounds.relax._lines.shifted_bias` on the candidates ``l``, ``u``,
``t``, which is exact for these shapes and adds a rounding margin.

Odd integer powers (convex for ``x >= 0``, concave for ``x <= 0``) use the
slope-parametrized scheme of :mod:`._lines` with two parameters instead.

Domains and overflow (the engine checks the domain first; these are what happens
if it did not):

* ``log``: bounds ``<= 0`` give the lower line ``0 * x - inf``; ``sqrt``: negative
  ends are treated as 0; ``reciprocal`` and negative powers: an interval touching
  or containing 0 gives the constant lines ``-inf`` / ``+inf`` (the lower one
  ``0`` for even powers). Never NaN.
* ``exp``: where ``exp(u)`` overflows the dtype, the upper line is ``0 * x + inf``
  (no finite line is sound there); the lower tangent point is capped so that its
  line stays finite. Any line whose numbers overflow falls back to the constant
  bound ``min f`` / ``max f`` on the interval.
* A point interval (``l == u``) gives the constant lines ``f(l) -+ margin``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
from torch import Tensor

from genbab.bounds.relax import register
from genbab.bounds.relax._lines import (
    Fn,
    SlopeCurve,
    broadcast_all,
    chord_slope,
    finite_or_constant,
    frac,
    init_slope_params,
    margin,
    point_constants,
    relax_by_slope,
    shifted_bias,
)
from genbab.bounds.relax.base import Relaxation, UnaryFamily

__all__ = ["pow_family", "relax_curved", "softplus"]

Range = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
Clip = Callable[[Tensor, Tensor, Tensor], Tensor]

_INF = float("inf")


def softplus(x: Tensor) -> Tensor:
    """``log(1 + exp(x))`` without the threshold shortcut of torch's softplus."""
    return torch.logaddexp(x, torch.zeros_like(x))


def _widen(f_min: Tensor, f_max: Tensor) -> tuple[Tensor, Tensor]:
    """Pad constant bounds by the rounding margin (infinite ones stay as they are)."""
    lo = f_min - margin(f_min.abs().nan_to_num(posinf=0.0))
    hi = f_max + margin(f_max.abs().nan_to_num(posinf=0.0))
    return lo, hi


def _monotone_range(f: Fn) -> Range:
    """Value range of a function monotone on each interval: its two end values."""

    def value_range(lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
        fl, fu = f(lower), f(upper)
        return _widen(torch.minimum(fl, fu), torch.maximum(fl, fu))

    return value_range


def relax_curved(
    f: Fn,
    df: Fn,
    lower: Tensor,
    upper: Tensor,
    convex: Tensor | bool,
    params: Tensor | None,
    *,
    value_range: Range,
    clip_t: Clip | None = None,
) -> Relaxation:
    """Chord and tangent lines of a function convex or concave on each interval.

    Args:
        f: The function, elementwise.
        df: Its derivative.
        lower: Lower interval ends, any shape.
        upper: Upper interval ends, broadcastable with ``lower``.
        convex: True where ``f`` is convex on ``[l, u]``, False where concave
            (a bool or a bool tensor broadcastable with the bounds).
        params: ``[1, *shape]``, the tangent point's fraction ``p`` (clamped into
            ``[0, 1]``), or None for ``p = 0.5``.
        value_range: Sound constant bounds of ``f`` on ``[l, u]``, the fallback
            where a line overflows.
        clip_t: Optional ``(t, l, u) -> t`` moving the tangent point where ``df``
            or the line would not be finite; any ``t`` keeps the lines sound.

    Returns:
        Sound lines of the broadcast shape of bounds and parameters.
    """
    p = 0.5 if params is None else frac(params[0])
    t = lower + p * (upper - lower)
    if clip_t is not None:
        t = clip_t(t, lower, upper)
    convex = torch.as_tensor(convex, device=lower.device)

    # Tangent on the curved side, chord on the other; biases from the candidates.
    s_tan = df(t)
    fl, fu = f(lower), f(upper)
    s_chord = chord_slope(fl, fu, lower, upper)
    lo_s = torch.where(convex, s_tan, s_chord)
    up_s = torch.where(convex, s_chord, s_tan)
    lo_b = shifted_bias(f, lo_s, lower, upper, [t], above=False)
    up_b = shifted_bias(f, up_s, lower, upper, [t], above=True)

    # Overflowing lines become constants; a point interval gets exact constants.
    f_min, f_max = value_range(lower, upper)
    lo_s, lo_b = finite_or_constant(lo_s, lo_b, f_min)
    up_s, up_b = finite_or_constant(up_s, up_b, f_max)
    return point_constants(lower, upper, f_min, f_max, lo_s, lo_b, up_s, up_b)


def _half_params(lower: Tensor, upper: Tensor) -> Tensor:
    """Default parameters of the one-parameter families: ``[1, *shape]`` of 0.5."""
    shape = torch.broadcast_shapes(lower.shape, upper.shape)
    return torch.full((1, *shape), 0.5, dtype=lower.dtype, device=lower.device)


def _no_params(lower: Tensor, upper: Tensor) -> Tensor:
    shape = torch.broadcast_shapes(lower.shape, upper.shape)
    return torch.empty((0, *shape), dtype=lower.dtype, device=lower.device)


def _at_least(t: Tensor, lower: Tensor, upper: Tensor) -> Tensor:
    """Keep a tangent point positive where the derivative is infinite at 0."""
    floor = torch.clamp(1e-8 * upper, min=torch.finfo(t.dtype).tiny)
    return torch.maximum(t, floor)


# --- exp -----------------------------------------------------------------------


def _exp_clip(t: Tensor, lower: Tensor, upper: Tensor) -> Tensor:
    """Cap the tangent point so that ``exp(t) * max|x|`` stays finite."""
    reach = torch.maximum(lower.abs(), upper.abs()).clamp(min=1.0)
    cap = math.log(torch.finfo(t.dtype).max) - 1.0 - torch.log(reach)
    return torch.minimum(t, cap)


def relax_exp(lower: Tensor, upper: Tensor, params: Tensor | None = None) -> Relaxation:
    """``exp``: chord above, tangent at ``l + p (u - l)`` below (``[1, *shape]``)."""
    return relax_curved(
        torch.exp, torch.exp, lower, upper, True, params,
        value_range=_monotone_range(torch.exp), clip_t=_exp_clip,
    )  # fmt: skip


# --- softplus ------------------------------------------------------------------


def relax_softplus(
    lower: Tensor, upper: Tensor, params: Tensor | None = None
) -> Relaxation:
    """``softplus``: chord above, tangent below; one parameter as for exp."""
    return relax_curved(
        softplus, torch.sigmoid, lower, upper, True, params,
        value_range=_monotone_range(softplus),
    )  # fmt: skip


# --- log, sqrt -----------------------------------------------------------------


def relax_log(lower: Tensor, upper: Tensor, params: Tensor | None = None) -> Relaxation:
    """``log`` for ``l > 0``: chord below, tangent at ``l + p (u - l)`` above.

    Ends ``<= 0`` are taken as 0, where ``log`` is ``-inf``: the lower line is
    then the constant ``-inf``.
    """
    lower = lower.clamp(min=0.0)
    upper = torch.maximum(upper, lower)
    return relax_curved(
        torch.log, torch.reciprocal, lower, upper, False, params,
        value_range=_monotone_range(torch.log), clip_t=_at_least,
    )  # fmt: skip


def _dsqrt(x: Tensor) -> Tensor:
    return 0.5 * torch.rsqrt(x)


def relax_sqrt(
    lower: Tensor, upper: Tensor, params: Tensor | None = None
) -> Relaxation:
    """``sqrt`` for ``l >= 0``: chord below, tangent above; negative ends become 0."""
    lower = lower.clamp(min=0.0)
    upper = torch.maximum(upper, lower)
    return relax_curved(
        torch.sqrt, _dsqrt, lower, upper, False, params,
        value_range=_monotone_range(torch.sqrt), clip_t=_at_least,
    )  # fmt: skip


# --- reciprocal and negative integer powers ------------------------------------


def _relax_pole(
    f: Fn,
    df: Fn,
    lower: Tensor,
    upper: Tensor,
    params: Tensor | None,
    *,
    convex_negative: bool,
    nonneg: bool,
) -> Relaxation:
    """A function with a pole at 0, convex for ``x > 0`` (``1/x``, ``x ** -k``).

    Args:
        f: The function.
        df: Its derivative.
        lower: Lower interval ends.
        upper: Upper interval ends.
        params: ``[1, *shape]`` tangent point fractions or None.
        convex_negative: Whether ``f`` is convex for ``x < 0`` too.
        nonneg: Whether ``f >= 0`` everywhere (even powers): the fallback lower
            line across the pole is then 0 instead of ``-inf``.
    """
    lower, upper = broadcast_all(lower, upper)
    bad = (lower <= 0) & (upper >= 0)
    one = torch.ones_like(lower)
    lo, hi = torch.where(bad, one, lower), torch.where(bad, one, upper)
    convex = (lo > 0) | convex_negative
    rel = relax_curved(f, df, lo, hi, convex, params, value_range=_monotone_range(f))
    zero = torch.zeros_like(rel.lower_slope)
    inf = torch.full_like(zero, _INF)
    floor = zero if nonneg else -inf
    return Relaxation(
        torch.where(bad, zero, rel.lower_slope),
        torch.where(bad, floor, rel.lower_bias),
        torch.where(bad, zero, rel.upper_slope),
        torch.where(bad, inf, rel.upper_bias),
    )


def _drecip(x: Tensor) -> Tensor:
    return -torch.reciprocal(x * x)


def relax_reciprocal(
    lower: Tensor, upper: Tensor, params: Tensor | None = None
) -> Relaxation:
    """``1 / x`` on intervals not containing 0; one tangent point parameter.

    Positive intervals: chord above, tangent below; negative ones: the mirror.
    An interval touching or containing 0 gives the constant lines ``-inf``/``inf``.
    """
    return _relax_pole(
        torch.reciprocal, _drecip, lower, upper, params,
        convex_negative=False, nonneg=False,
    )  # fmt: skip


# --- pow -----------------------------------------------------------------------


def _even_pow_range(n: int) -> Range:
    def value_range(lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
        crossing = (lower <= 0) & (upper >= 0)
        near = torch.minimum(lower.abs(), upper.abs())
        near = torch.where(crossing, torch.zeros_like(near), near)
        far = torch.maximum(lower.abs(), upper.abs())
        return _widen(near**n, far**n)

    return value_range


def _relax_even_pow(n: int) -> Callable[..., Relaxation]:
    def f(x: Tensor) -> Tensor:
        return x**n

    def df(x: Tensor) -> Tensor:
        return n * x ** (n - 1)

    value_range = _even_pow_range(n)

    def relax(lower: Tensor, upper: Tensor, params: Tensor | None = None) -> Relaxation:
        return relax_curved(f, df, lower, upper, True, params, value_range=value_range)

    return relax


def _odd_pow_curve(n: int) -> SlopeCurve:
    """``x ** n`` for odd ``n >= 3``: concave for ``x < 0``, convex for ``x > 0``."""

    def f(x: Tensor) -> Tensor:
        return x**n

    def df(x: Tensor) -> Tensor:
        return n * x ** (n - 1)

    def slope_range(lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
        crossing = (lower <= 0) & (upper >= 0)
        near = torch.minimum(lower.abs(), upper.abs())
        near = torch.where(crossing, torch.zeros_like(near), near)
        far = torch.maximum(lower.abs(), upper.abs())
        return n * near ** (n - 1), n * far ** (n - 1)

    def stationary(slope: Tensor, lower: Tensor, upper: Tensor) -> list[Tensor]:
        r = (slope.clamp(min=0.0) / n) ** (1.0 / (n - 1))
        return [r, -r]

    def value_range(lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
        return _widen(f(lower), f(upper))

    return SlopeCurve(f, df, slope_range, stationary, value_range)


def _power_fns(a: float) -> tuple[Fn, Fn]:
    def f(x: Tensor) -> Tensor:
        return torch.pow(x, a)

    def df(x: Tensor) -> Tensor:
        return a * torch.pow(x, a - 1)

    return f, df


def _relax_fractional_pow(a: float) -> Callable[..., Relaxation]:
    """``x ** a`` for non-integer ``a`` on ``x >= 0`` (negative ends become 0)."""
    f, df = _power_fns(a)
    convex = a > 1 or a < 0
    value_range = _monotone_range(f)

    def relax(lower: Tensor, upper: Tensor, params: Tensor | None = None) -> Relaxation:
        lower = lower.clamp(min=0.0)
        upper = torch.maximum(upper, lower)
        return relax_curved(
            f, df, lower, upper, convex, params,
            value_range=value_range, clip_t=_at_least,
        )  # fmt: skip

    return relax


def _relax_negative_pow(k: int) -> Callable[..., Relaxation]:
    """``x ** -k`` for an integer ``k >= 1``, on intervals not containing 0."""
    f, df = _power_fns(float(-k))

    def relax(lower: Tensor, upper: Tensor, params: Tensor | None = None) -> Relaxation:
        even = k % 2 == 0
        return _relax_pole(
            f, df, lower, upper, params, convex_negative=even, nonneg=even
        )

    return relax


def _constant_relax(value: float) -> Callable[..., Relaxation]:
    def relax(lower: Tensor, upper: Tensor, params: Tensor | None = None) -> Relaxation:
        zero = torch.zeros_like(lower + upper)
        return Relaxation(zero, zero + value, zero, zero + value)

    return relax


def _identity_relax(
    lower: Tensor, upper: Tensor, params: Tensor | None = None
) -> Relaxation:
    zero = torch.zeros_like(lower + upper)
    return Relaxation(zero + 1, zero, zero + 1, zero)


def pow_family(exponent: float) -> UnaryFamily:
    """The family of ``x ** exponent`` (cached per exponent).

    * 0 and 1: exact constant / identity lines, no parameters.
    * Even ``n >= 2``: convex; one tangent point parameter.
    * Odd ``n >= 3``: two parameters, the slopes of the lower and upper lines as
      fractions of the range of ``f'`` on the interval (see :mod:`._lines`); the
      default picks each line's slope among the chord's, the tangents' and a grid.
    * Negative integers: convex for ``x > 0`` (concave for ``x < 0`` and odd
      ``n``); one parameter; domain ``(0, inf)``.
    * Other exponents: ``x >= 0`` only, convex if ``a > 1`` or ``a < 0``, else
      concave; one parameter.

    Args:
        exponent: The exponent ``a`` of ``x ** a``.

    Returns:
        The family, named ``"pow"``.
    """
    return _pow_family(float(exponent))


@functools.lru_cache(maxsize=64)
def _pow_family(a: float) -> UnaryFamily:
    f, _ = _power_fns(a)
    if a in (0.0, 1.0):
        relax = _constant_relax(1.0) if a == 0 else _identity_relax
        return UnaryFamily("pow", f, relax, 0, _no_params)
    if a.is_integer() and a > 0:
        n = int(a)
        if n % 2 == 0:
            return UnaryFamily("pow", f, _relax_even_pow(n), 1, _half_params)
        curve = _odd_pow_curve(n)
        return UnaryFamily(
            "pow",
            curve.f,
            functools.partial(relax_by_slope, curve),
            2,
            functools.partial(init_slope_params, curve),
        )
    if a.is_integer():
        return UnaryFamily(
            "pow", f, _relax_negative_pow(-int(a)), 1, _half_params, (0.0, _INF)
        )
    return UnaryFamily("pow", f, _relax_fractional_pow(a), 1, _half_params, (0.0, _INF))


# --- registration --------------------------------------------------------------

register(UnaryFamily("exp", torch.exp, relax_exp, 1, _half_params))
register(UnaryFamily("softplus", softplus, relax_softplus, 1, _half_params))
register(UnaryFamily("log", torch.log, relax_log, 1, _half_params, (0.0, _INF)))
register(UnaryFamily("sqrt", torch.sqrt, relax_sqrt, 1, _half_params, (0.0, _INF)))
register(
    UnaryFamily(
        "reciprocal", torch.reciprocal, relax_reciprocal, 1, _half_params, (0.0, _INF)
    )
)
_square = pow_family(2.0)
register(UnaryFamily("square", _square.fn, _square.relax, 1, _half_params))
