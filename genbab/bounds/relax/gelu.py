"""Relaxation of GeLU, ``f(x) = x * Phi(x)`` (exact, erf-based form).

``f''(x) = phi(x) (2 - x^2)``: ``f`` is concave on ``A = (-inf, -s]``, convex on
``B = [-s, s]`` and concave on ``C = [s, inf)``, with ``s = sqrt(2)``. ``f'`` is
negative left of ``x* ~ -0.752`` (the minimum, ``f(x*) ~ -0.170``), ``f' > 1`` on
``[1, inf)`` and ``f'`` has its extrema at ``-s`` (minimum) and ``s`` (maximum).

Facts used below (``f`` convex on a piece ``P``, concave on ``Q``):
(i) a tangent at a point of a convex piece lies below ``f`` on that whole piece;
(ii) on a convex piece a line above ``f`` at both ends is above it in between, and
on a concave piece a line below at both ends is below in between; (iii) for
tangents at ``t`` in a convex piece, ``f(t) + f'(t) (a - t) - f(a)`` is increasing
in ``t`` for an anchor ``a > t`` and decreasing for ``a < t`` (derivative
``f''(t) (a - t)``); in a concave piece the signs flip. So the tangent points
whose tangent passes on the correct side of ``(a, f(a))`` form a half-line ending
at the point whose tangent passes through it.

Cases for ``[l, u]`` (``m`` the midpoint, ``k`` the chord slope):

- inside ``A`` or ``C`` (concave): lower = chord, upper = tangent at ``t`` in
  ``[l, u]`` (default ``m``); inside ``B`` (convex): the reverse.
- ``l < -s < u <= s`` (concave then convex). Lower: the chord if ``k >= f'(u)``
  (it is then above the tangent at ``u`` left of ``u``, which is below ``f`` on
  ``B``; on ``[l, -s]`` use (ii)); else the tangent at ``t`` in ``[d_L(l), u]``,
  where ``d_L(l)`` in ``B`` is the tangent point through ``(l, f(l))``: valid
  on ``B`` by (i), at ``l`` by (iii), hence on ``[l, -s]`` by (ii). Default
  ``max(d_L, m)``. Upper: the chord if ``k >= f'(l)``; else the tangent at ``t``
  in ``[l, d_U(u)]``, ``d_U(u)`` in ``A`` the tangent point through ``(u, f(u))``;
  default ``min(d_U, m)``.
- ``-s <= l < s < u`` (convex then concave), the mirror image. Lower: the chord if
  ``k <= f'(l)``, else the tangent at ``t`` in ``[l, d_R(u)]`` (``d_R(u)`` in
  ``B`` passes through ``(u, f(u))``), default ``min(d_R, m)``. Upper: the chord
  if ``k <= f'(u)``, else the tangent at ``t`` in ``[d_V(l), u]`` (``d_V(l)`` in
  ``C`` passes through ``(l, f(l))``), default ``max(d_V, m)``.
- ``l < -s``, ``u > s`` (concave, convex, concave). Lower: the tangent at ``t`` in
  ``[d_L(l), d_R(u)]``: by (i) below on ``B``, by (iii) below at ``l`` and ``u``,
  by (ii) below on ``[l, -s]`` and ``[s, u]``. The range is never empty
  (``d_L < x* < 0.7 < d_R``, checked in the tests); default ``m`` clamped into
  it. Upper: the chord, always valid here: ``f'(l) < 0 < k`` and ``k < 1 <
  f'(u)`` (as ``f(u) <= u``, ``f(l) >= -0.17`` and ``u - l > u + s``), so it is
  above ``f`` on both concave pieces by the slope test, hence at ``-s`` and ``s``,
  hence on ``B`` by (ii).

The tangent points ``d_*`` are found per call by a vectorised float64 bisection
that only ever returns points known to be valid (so they err away from the
interval end their tangent must pass), then cast to the dtype rounding towards the
valid side. Where the chord test fails the exact ``d_*`` lies strictly inside the
interval, so clamping it into ``[l, u]`` keeps it valid. The points of the last few
calls are kept and reused when the bounds are exactly equal, since alpha-CROWN
relaxes the same bounds at every step.

Parameters (``num_params = 2``): ``p[0]``, ``p[1]`` in ``[0, 1]`` place the lower
and upper tangent points in their ranges; clamped. All lines get the rounding
margin of :func:`~genbab.bounds.relax.base.safety_margin`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from genbab.bounds.relax import register
from genbab.bounds.relax.base import (
    Relaxation,
    TangentPlan,
    UnaryFamily,
    bisect_boundary,
    plan_params,
    relax_from_plans,
    round_toward,
)

__all__ = ["GELU", "gelu", "gelu_deriv", "gelu_plans", "init_gelu_params", "relax_gelu"]

SQRT2 = math.sqrt(2.0)
#: ``-min f``: GeLU is at least ``-0.17`` everywhere (minimum ``-0.16997``).
NEG_MIN = 0.17
BISECT_ITERS = 48


def _cdf(x: Tensor) -> Tensor:
    # erfc keeps full relative accuracy in the left tail, where 1 + erf cancels.
    return 0.5 * torch.erfc(-x / SQRT2)


def _pdf(x: Tensor) -> Tensor:
    return torch.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def gelu(x: Tensor) -> Tensor:
    """GeLU ``x * Phi(x)``, accurate also far in the left tail."""
    return x * _cdf(x)


def gelu_deriv(x: Tensor) -> Tensor:
    """``f'(x) = Phi(x) + x * phi(x)``."""
    return _cdf(x) + x * _pdf(x)


def _deriv_scale(x: Tensor) -> Tensor:
    # gelu_deriv is a sum with cancellation near x*: its error is relative to this.
    return _cdf(x) + x.abs() * _pdf(x)


# The bisection dominates the cost of a call (~48 float64 passes). alpha-CROWN
# relaxes the same node on the same bounds at every step, so recent results are
# kept and reused when both bound tensors are exactly equal (checked elementwise,
# so a hit returns what recomputing would).
_CACHE: list[tuple[Tensor, Tensor, tuple[Tensor, ...]]] = []
_CACHE_ENTRIES = 8
_CACHE_MAX_NUMEL = 1 << 21


def _tangent_points(lower: Tensor, upper: Tensor) -> tuple[Tensor, ...]:
    """Cached :func:`_solve_tangent_points` (exact-match reuse of recent calls)."""
    lower, upper = torch.broadcast_tensors(lower.detach(), upper.detach())
    if lower.numel() > _CACHE_MAX_NUMEL:
        return _solve_tangent_points(lower, upper)
    for i, (lo, hi, result) in enumerate(_CACHE):
        if (
            lo.shape == lower.shape
            and lo.dtype == lower.dtype
            and lo.device == lower.device
            and torch.equal(lo, lower)
            and torch.equal(hi, upper)
        ):
            _CACHE.append(_CACHE.pop(i))
            return result
    result = _solve_tangent_points(lower, upper)
    _CACHE.append((lower.clone(), upper.clone(), result))
    del _CACHE[:-_CACHE_ENTRIES]
    return result


def _solve_tangent_points(lower: Tensor, upper: Tensor) -> tuple[Tensor, ...]:
    """Tangent points ``d_L(l), d_R(u), d_U(u), d_V(l)`` (module docs), in dtype.

    Each is computed in float64 by bisection on a bracket whose valid end is a
    valid tangent point whenever the value is used, and rounded towards the valid
    side (``d_L``, ``d_V``: valid above, rounded up; ``d_R``, ``d_U``: valid below,
    rounded down). ``d_U`` is only meaningful where ``l < -s < u <= s`` and
    ``d_V`` only where ``-s <= l < s < u``; they share one bisection (and so are
    the same tensor).
    """
    dtype = lower.dtype
    lo, hi = lower.detach().double(), upper.detach().double()
    mixed = (lo < SQRT2) & (hi > -SQRT2) & ((lo < -SQRT2) | (hi > SQRT2))
    if not bool(mixed.any()):  # all intervals inside one piece: nothing to solve
        return lower.clone(), upper.clone(), lower.clone(), upper.clone()
    s = torch.full_like(lo, SQRT2)
    conv_conc = (lo >= -SQRT2) & (hi > SQRT2)
    # Slots: d_L (anchor l, below), d_R (anchor u, below), d_U or d_V (above).
    anchors = torch.stack([lo, hi, torch.where(conv_conc, lo, hi)])
    side = torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64, device=lo.device)
    side = side.view(3, *([1] * lo.dim()))
    valid = torch.stack(
        [torch.minimum(hi, s), torch.maximum(lo, -s), torch.where(conv_conc, hi, lo)]
    )
    invalid = torch.stack([-s, s, torch.where(conv_conc, s, -s)])
    f_anchor = gelu(anchors)

    def ok(t: Tensor) -> Tensor:
        # f(t) + f'(t) (a - t) = a Phi(t) + t phi(t) (a - t): one erfc, one exp.
        at_anchor = anchors * _cdf(t) + t * _pdf(t) * (anchors - t)
        return side * (at_anchor - f_anchor) <= 0

    d = bisect_boundary(ok, valid, invalid, iters=BISECT_ITERS)
    d_upper = torch.where(
        conv_conc,
        round_toward(d[2], dtype, down=False),
        round_toward(d[2], dtype, down=True),
    )
    return (
        round_toward(d[0], dtype, down=False),
        round_toward(d[1], dtype, down=True),
        d_upper,
        d_upper,
    )


def gelu_plans(lower: Tensor, upper: Tensor) -> tuple[TangentPlan, TangentPlan]:
    """Plans of the lower and upper lines on ``[lower, upper]`` (module docs)."""
    lower, upper = torch.broadcast_tensors(lower, upper)
    s = SQRT2
    mid = 0.5 * (lower + upper)
    left = upper <= -s  # inside A
    right = (lower >= s) & ~left  # inside C
    middle = (lower >= -s) & (upper <= s) & ~left & ~right  # inside B
    rest = ~left & ~right & ~middle
    conc_conv = rest & (lower < -s) & (upper <= s)  # A then B
    all_three = rest & (lower < -s) & (upper > s)
    conv_conc = rest & (lower >= -s)  # B then C

    fl, fu = gelu(lower), gelu(upper)
    dfl, dfu = gelu_deriv(lower), gelu_deriv(upper)
    # Chord tests as "the tangent at one end passes on the right side of the
    # other end" (equivalent to the slope comparisons, without the division).
    tan_l_at_u = fl + dfl * (upper - lower)
    tan_u_at_l = fu + dfu * (lower - upper)
    d_left, d_right, d_up, d_v = _tangent_points(lower, upper)
    d_left = torch.minimum(torch.maximum(d_left, lower), upper)
    d_right = torch.minimum(torch.maximum(d_right, lower), upper)
    d_up = torch.minimum(torch.maximum(d_up, lower), upper)
    d_v = torch.minimum(torch.maximum(d_v, lower), upper)

    # Lower line.
    lo_chord = (
        left | right
        | (conc_conv & (tan_u_at_l >= fl))
        | (conv_conc & (tan_l_at_u >= fu))
    )  # fmt: skip
    lo_start = torch.where(conc_conv | all_three, d_left, lower)
    lo_end = torch.where(conv_conc | all_three, d_right, upper)
    lo_end = torch.maximum(lo_end, lo_start)
    lo_default = torch.where(
        conc_conv,
        torch.maximum(d_left, mid),
        torch.where(conv_conc, torch.minimum(d_right, mid), mid),
    )
    lo_default = torch.minimum(torch.maximum(lo_default, lo_start), lo_end)

    # Upper line.
    up_chord = (
        middle | all_three
        | (conc_conv & (tan_l_at_u <= fu))
        | (conv_conc & (tan_u_at_l <= fl))
    )  # fmt: skip
    up_start = torch.where(conv_conc, d_v, lower)
    up_end = torch.where(conc_conv, d_up, upper)
    up_end = torch.maximum(up_end, up_start)
    up_default = torch.where(
        conc_conv,
        torch.minimum(d_up, mid),
        torch.where(conv_conc, torch.maximum(d_v, mid), mid),
    )
    up_default = torch.minimum(torch.maximum(up_default, up_start), up_end)
    return (
        TangentPlan(lo_chord, lo_start, lo_end, lo_default),
        TangentPlan(up_chord, up_start, up_end, up_default),
    )


def init_gelu_params(lower: Tensor, upper: Tensor) -> Tensor:
    """Parameters ``[2, *shape]`` reproducing the default GeLU relaxation."""
    return plan_params(*gelu_plans(lower, upper))


def relax_gelu(lower: Tensor, upper: Tensor, params: Tensor | None) -> Relaxation:
    """Relaxation of GeLU on ``[lower, upper]``; see the module docstring.

    Args:
        lower: Lower bounds, any shape broadcastable with ``upper``.
        upper: Upper bounds.
        params: None (default) or ``[2, *shape']`` tangent positions in ``[0, 1]``.

    Returns:
        The relaxation, broadcast shape of bounds and parameters.
    """
    lower, upper = torch.broadcast_tensors(lower, upper)
    plans = gelu_plans(lower, upper)
    if params is None:
        params = plan_params(*plans)
    fmax = torch.maximum(gelu(lower).abs(), gelu(upper).abs()).clamp(min=NEG_MIN)
    return relax_from_plans(
        gelu,
        gelu_deriv,
        lower,
        upper,
        params,
        plans,
        fmax,
        critical=(-SQRT2, SQRT2),
        deriv_scale=_deriv_scale,
    )


GELU = register(
    UnaryFamily(
        name="gelu",
        fn=torch.nn.functional.gelu,
        relax=relax_gelu,
        num_params=2,
        init_params=init_gelu_params,
    )
)
