"""Relaxations of sin and cos on intervals of any width.

Each line has a slope chosen by a parameter and a bias made sound by shifting
(see :mod:`._lines`): with ``s`` the slope, the bias is the exact maximum (upper
line) or minimum (lower line) of ``f(x) - s * x`` over ``[l, u]``. For ``sin``
the stationary points are ``x = +-acos(s) + 2 pi k``; along the maxima
(``+acos(s)``) the value ``sqrt(1 - s^2) - s x`` is linear in ``k``, so only the
first and the last of them inside ``[l, u]`` can be the maximum (likewise for the
minima). Four candidates plus the endpoints therefore give the exact extremum
for any width, with no loop over periods. ``cos`` is handled the same way with
``sin(x) = -s``, directly rather than through ``sin(x + pi/2)``, so no rounding of
a shifted interval enters.

Parameters (``num_params = 2``): index 0 places the lower line's slope, index 1
the upper line's, as fractions (clamped into ``[0, 1]``) of the range
``[min f', max f']`` of the derivative on ``[l, u]``; slopes outside it give
dominated lines. The default picks, per line, the tightest at the midpoint among
the chord's slope, the tangents' at the midpoint and ends, and a grid of five
fractions; inside a convex or concave stretch this is the CROWN choice (chord on
one side, midpoint tangent on the other), and on wide intervals it is close to
the constant lines ``-1`` and ``1``.

Rounding: besides the usual margin, the bias is widened by ``delta^2 / 2`` with
``delta = 8 eps (max(|l|, |u|) + 2 pi)``, the error in locating a stationary point
(``|f''| <= 1``). In float32 this is below ``1e-6`` up to ``|x| ~ 1e3`` but grows
to ``~5e-3`` at ``|x| ~ 1e5``: the lines stay sound but loosen for huge inputs.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from genbab.bounds.relax import register
from genbab.bounds.relax._lines import SlopeCurve, init_slope_params, relax_by_slope
from genbab.bounds.relax.base import UnaryFamily

__all__ = ["COS_CURVE", "SIN_CURVE", "relax_cos", "relax_sin"]

_TWO_PI = 2.0 * math.pi


def _locate_error(lower: Tensor, upper: Tensor) -> Tensor:
    """Bound on the error of a computed stationary point ``base + 2 pi k``."""
    reach = torch.maximum(lower.abs(), upper.abs())
    return 8.0 * torch.finfo(reach.dtype).eps * (reach + _TWO_PI)


def _extra_margin(lower: Tensor, upper: Tensor) -> Tensor:
    delta = _locate_error(lower, upper)
    return 0.5 * delta * delta


def _first_last(base: Tensor, lower: Tensor, upper: Tensor) -> list[Tensor]:
    """The first point ``>= l`` and the last ``<= u`` of ``base + 2 pi k``."""
    first = base + _TWO_PI * torch.ceil((lower - base) / _TWO_PI)
    last = base + _TWO_PI * torch.floor((upper - base) / _TWO_PI)
    return [first, last]


def _hits(point: float, lower: Tensor, upper: Tensor) -> Tensor:
    """Whether ``[l, u]`` contains ``point + 2 pi k`` for some k, erring to yes."""
    tol = _locate_error(lower, upper)
    first = point + _TWO_PI * torch.ceil((lower - tol - point) / _TWO_PI)
    return first <= upper + tol


def _periodic_range(
    f_lower: Tensor,
    f_upper: Tensor,
    lower: Tensor,
    upper: Tensor,
    peak: float,
) -> tuple[Tensor, Tensor]:
    """Range on ``[l, u]`` of a unit sinusoid with maxima at ``peak + 2 pi k``.

    Args:
        f_lower: Its value at ``lower``.
        f_upper: Its value at ``upper``.
        lower: Lower interval ends.
        upper: Upper interval ends.
        peak: Position of a maximum (minima are at ``peak + pi``).

    Returns:
        ``(min, max)``, padded by a rounding margin and kept within ``[-1, 1]``.
    """
    pad = 8.0 * torch.finfo(lower.dtype).eps
    lo = torch.minimum(f_lower, f_upper) - pad
    hi = torch.maximum(f_lower, f_upper) + pad
    one = torch.ones_like(lo)
    hi = torch.where(_hits(peak, lower, upper), one, hi.clamp(max=1.0))
    lo = torch.where(_hits(peak + math.pi, lower, upper), -one, lo.clamp(min=-1.0))
    return lo, hi


# --- sin -----------------------------------------------------------------------


def _sin_slope_range(lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
    """Range of ``cos`` on ``[l, u]`` (maxima at 2 pi k)."""
    return _periodic_range(torch.cos(lower), torch.cos(upper), lower, upper, 0.0)


def _sin_stationary(slope: Tensor, lower: Tensor, upper: Tensor) -> list[Tensor]:
    """Points where ``cos x = slope``: maxima of ``sin x - s x`` at ``+acos``."""
    a = torch.acos(slope.clamp(-1.0, 1.0))
    return _first_last(a, lower, upper) + _first_last(-a, lower, upper)


def _sin_range(lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
    return _periodic_range(
        torch.sin(lower), torch.sin(upper), lower, upper, 0.5 * math.pi
    )


SIN_CURVE = SlopeCurve(
    f=torch.sin,
    df=torch.cos,
    slope_range=_sin_slope_range,
    stationary=_sin_stationary,
    value_range=_sin_range,
    extra_margin=_extra_margin,
)
"""Description of ``sin`` for :func:`~._lines.relax_by_slope`."""

relax_sin = functools.partial(relax_by_slope, SIN_CURVE)
init_sin_params = functools.partial(init_slope_params, SIN_CURVE)


# --- cos -----------------------------------------------------------------------


def _neg_sin(x: Tensor) -> Tensor:
    return -torch.sin(x)


def _cos_slope_range(lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
    """Range of ``-sin`` on ``[l, u]`` (maxima at -pi/2 + 2 pi k)."""
    return _periodic_range(
        _neg_sin(lower), _neg_sin(upper), lower, upper, -0.5 * math.pi
    )


def _cos_stationary(slope: Tensor, lower: Tensor, upper: Tensor) -> list[Tensor]:
    """Points where ``-sin x = slope``: maxima of ``cos x - s x`` at ``asin(-s)``."""
    b = torch.asin(-slope.clamp(-1.0, 1.0))
    return _first_last(b, lower, upper) + _first_last(math.pi - b, lower, upper)


def _cos_range(lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
    return _periodic_range(torch.cos(lower), torch.cos(upper), lower, upper, 0.0)


COS_CURVE = SlopeCurve(
    f=torch.cos,
    df=_neg_sin,
    slope_range=_cos_slope_range,
    stationary=_cos_stationary,
    value_range=_cos_range,
    extra_margin=_extra_margin,
)
"""Description of ``cos`` for :func:`~._lines.relax_by_slope`."""

relax_cos = functools.partial(relax_by_slope, COS_CURVE)
init_cos_params = functools.partial(init_slope_params, COS_CURVE)

register(UnaryFamily("sin", torch.sin, relax_sin, 2, init_sin_params))
register(UnaryFamily("cos", torch.cos, relax_cos, 2, init_cos_params))
