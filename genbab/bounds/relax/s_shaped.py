"""Relaxations of S-shaped functions: sigmoid, tanh, atan and erf.

Each ``f`` here is increasing, convex on ``(-inf, 0]`` and concave on ``[0, inf)``,
point-symmetric about ``(0, f(0))``, and ``f'`` is even and decreasing in ``|x|``.

Cases for an interval ``[l, u]`` (``m`` is the midpoint):

- ``u <= 0`` (convex): upper = chord; lower = tangent at ``t`` in ``[l, u]``
  (default ``m``). A tangent of a convex function lies below it everywhere.
- ``l >= 0`` (concave): lower = chord; upper = tangent at ``t`` in ``[l, u]``.
- ``l < 0 < u``, lower line. The chord is valid iff its slope ``k <= f'(l)``, i.e.
  iff the tangent at ``l`` passes above ``(u, f(u))``. (If ``k <= f'(l)`` the chord
  lies above the tangent at ``l`` right of ``l``, which is below ``f`` on the convex
  part; on the concave part ``[0, u]`` a line below ``f`` at ``0`` and ``u`` stays
  below. If ``k > f'(l)`` the chord exceeds ``f`` just right of ``l``.) Otherwise
  the lower line is the tangent at ``t`` in ``[l, d(u)]``: a tangent at ``t <= 0`` is
  below ``f`` on the convex part, hence at ``0``, and is below on ``[0, u]`` iff it
  is below ``f(u)`` at ``u``. ``g(t) = f(t) + f'(t) (u - t) - f(u)`` has ``g' =
  f''(t) (u - t) > 0`` for ``t < 0``, so the valid tangent points are ``t <= d(u)``
  where ``g(d(u)) = 0``; the chord is invalid exactly when ``l < d(u)``. Default
  ``t = min(d(u), m)``, which is continuous with the convex case at ``u = 0`` and
  with the chord where ``d(u) = l``.
- ``l < 0 < u``, upper line: the mirror image, with the tangent point ``t`` in
  ``[-d(-l), u]`` and default ``max(-d(-l), m)``.

``d`` is read from a table on the grid ``u_i = 0.01 i``, ``0 <= u_i <= 500``, built
once per function (lazily) by bisection in float64. ``d`` is decreasing in ``u``
(``d'(u) = (f'(u) - f'(d)) / (f''(d) (u - d))`` and ``|d| < u``), so for ``u`` in
``(u_{i-1}, u_i]`` the entry at ``u_i`` is ``<= d(u)``: a tangent point further
from ``u`` than the exact one, hence still valid; reading the entry at ``u_{i-1}``
would give a point nearer ``u`` whose tangent crosses ``f``. The same reasoning
rounds the entries down when they are cast to float32. Beyond the table
(``u > 500``) the tangent is taken at ``l``, which is valid whenever the chord is not.

Parameters (``num_params = 2``): ``p[0]``, ``p[1]`` in ``[0, 1]`` place the lower and
upper tangent points inside their valid ranges above (``t = start + p (end -
start)``); values outside ``[0, 1]`` are clamped. Where a line is a chord its
parameter is unused. All lines get the rounding margin of
:func:`~genbab.bounds.relax.base.safety_margin`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

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

__all__ = ["SShaped", "SIGMOID", "TANH", "ATAN", "ERF"]

TABLE_STEP = 0.01
TABLE_LIMIT = 500.0


def _sigmoid_deriv(x: Tensor) -> Tensor:
    # s(x) (1 - s(x)) without the cancellation of 1 - s(x); exp never overflows.
    z = torch.exp(-x.abs())
    return z / (1 + z) ** 2


def _tanh_deriv(x: Tensor) -> Tensor:
    # 1 / cosh(x)^2, written with exp(-2|x|) <= 1 so it cannot overflow.
    z = torch.exp(-2 * x.abs())
    return 4 * z / (1 + z) ** 2


def _atan_deriv(x: Tensor) -> Tensor:
    return 1 / (1 + x * x)


def _erf_deriv(x: Tensor) -> Tensor:
    return (2.0 / math.sqrt(math.pi)) * torch.exp(-x * x)


@dataclass
class SShaped:
    """An S-shaped function and its lazily built tangent-point table.

    Attributes:
        name: Registry name.
        fn: The function.
        deriv: Its derivative, accurate to a few ulps relative to its value.
    """

    name: str
    fn: Callable[[Tensor], Tensor]
    deriv: Callable[[Tensor], Tensor]
    _grid: Tensor | None = field(default=None, repr=False)
    _table: Tensor | None = field(default=None, repr=False)
    _cache: dict = field(default_factory=dict, repr=False)

    def tangent_point(self, u: Tensor) -> Tensor:
        """Return ``d(u)`` rounded down (``-inf`` beyond the table), for ``u >= 0``.

        Args:
            u: Upper interval ends (clamped to ``>= 0`` by the caller), any shape.

        Returns:
            A valid lower tangent point ``<= d(u)`` of the dtype of ``u``.
        """
        grid, table = self._tables(u.device, u.dtype)
        last = grid.numel() - 1
        idx = torch.floor(u / TABLE_STEP).long().clamp(0, last - 1) + 1
        idx = (idx + (grid[idx] < u).long()).clamp(max=last)
        d = table[idx]
        return torch.where(u > grid[last], torch.full_like(d, -float("inf")), d)

    def _tables(
        self, device: torch.device, dtype: torch.dtype
    ) -> tuple[Tensor, Tensor]:
        key = (device, dtype)
        if key not in self._cache:
            if self._table is None:
                self._grid, self._table = self._build()
            assert self._grid is not None
            grid = round_toward(self._grid, dtype, down=True).to(device)
            table = round_toward(self._table, dtype, down=True).to(device)
            self._cache[key] = (grid, table)
        return self._cache[key]

    def _build(self) -> tuple[Tensor, Tensor]:
        # Bisection for g(t) = f(t) + f'(t) (u - t) - f(u) = 0 on [-u, 0]:
        # g(-u) < 0 (concavity of f on [0, u]) and g(0) >= 0.
        n = round(TABLE_LIMIT / TABLE_STEP)
        u = torch.arange(n + 1, dtype=torch.float64) * TABLE_STEP
        fu = self.fn(u)

        def below(t: Tensor) -> Tensor:
            return self.fn(t) + self.deriv(t) * (u - t) <= fu

        d = bisect_boundary(below, -u, torch.zeros_like(u), iters=64)
        # The bisection resolves the root only up to the float64 rounding of g;
        # stepping 1e-9 further out makes every entry strictly conservative.
        return u, d - 1e-9 * (1 + d.abs())

    def plans(self, lower: Tensor, upper: Tensor) -> tuple[TangentPlan, TangentPlan]:
        """Plans of the lower and upper lines on ``[lower, upper]`` (module docs)."""
        f, df = self.fn, self.deriv
        lower, upper = torch.broadcast_tensors(lower, upper)
        mid = 0.5 * (lower + upper)
        convex = upper <= 0
        concave = (lower >= 0) & ~convex
        crossing = ~convex & ~concave
        fl, fu = f(lower), f(upper)
        chord_ok_lo = fl + df(lower) * (upper - lower) >= fu
        chord_ok_up = fu + df(upper) * (lower - upper) <= fl

        d_lo = self.tangent_point(upper.clamp(min=0)).clamp(max=0)
        d_lo = torch.maximum(d_lo, lower)
        d_up = -self.tangent_point((-lower).clamp(min=0)).clamp(max=0)
        d_up = torch.minimum(d_up, upper)

        lower_plan = TangentPlan(
            use_chord=concave | (crossing & chord_ok_lo),
            start=lower,
            end=torch.where(crossing, d_lo, upper),
            default=torch.where(crossing, torch.minimum(d_lo, mid), mid),
        )
        upper_plan = TangentPlan(
            use_chord=convex | (crossing & chord_ok_up),
            start=torch.where(crossing, d_up, lower),
            end=upper,
            default=torch.where(crossing, torch.maximum(d_up, mid), mid),
        )
        return lower_plan, upper_plan

    def init_params(self, lower: Tensor, upper: Tensor) -> Tensor:
        """Parameters ``[2, *shape]`` reproducing the default relaxation."""
        return plan_params(*self.plans(lower, upper))

    def relax(self, lower: Tensor, upper: Tensor, params: Tensor | None) -> Relaxation:
        """Relaxation on ``[lower, upper]``; see the module docstring.

        Args:
            lower: Lower bounds, any shape broadcastable with ``upper``.
            upper: Upper bounds.
            params: None (default) or ``[2, *shape']`` tangent positions.

        Returns:
            The relaxation, broadcast shape of bounds and parameters.
        """
        lower, upper = torch.broadcast_tensors(lower, upper)
        plans = self.plans(lower, upper)
        if params is None:
            params = plan_params(*plans)
        fmax = torch.maximum(self.fn(lower).abs(), self.fn(upper).abs())
        return relax_from_plans(
            self.fn, self.deriv, lower, upper, params, plans, fmax, critical=(0.0,)
        )

    def family(self) -> UnaryFamily:
        """The :class:`UnaryFamily` record of this function."""
        return UnaryFamily(
            name=self.name,
            fn=self.fn,
            relax=self.relax,
            num_params=2,
            init_params=self.init_params,
        )


SIGMOID = SShaped("sigmoid", torch.sigmoid, _sigmoid_deriv)
TANH = SShaped("tanh", torch.tanh, _tanh_deriv)
ATAN = SShaped("atan", torch.atan, _atan_deriv)
ERF = SShaped("erf", torch.erf, _erf_deriv)

for _spec in (SIGMOID, TANH, ATAN, ERF):
    register(_spec.family())
