"""Relaxation of the product ``x * y`` of two bounded variables (McCormick planes).

On the box ``[xl, xu] x [yl, yu]``:

* lower planes ``L1 = yl x + xl y - xl yl`` and ``L2 = yu x + xu y - xu yu``
  (``x y - L1 = (x - xl)(y - yl) >= 0``, likewise for ``L2``);
* upper planes ``U1 = yu x + xl y - xl yu`` and ``U2 = yl x + xu y - xu yl``.

Any convex combination of the two lower (upper) planes is again a lower (upper)
plane; the parameters ``r = (r_lower, r_upper)`` (clamped into ``[0, 1]``) weight
``L1``/``U1`` by ``r`` and ``L2``/``U2`` by ``1 - r``.

Default ``r = 0.5``: the two planes of a pair have the same mean over the box
(``(xl yu + xu yl) / 2`` for the lower pair, ``(xl yl + xu yu) / 2`` for the upper
one), so every ``r`` encloses the same volume with the surface; the midpoint
treats ``x`` and ``y`` alike. (auto_LiRPA's default is ``r = 1``.)

Rounding: the biases are widened by ``8 eps * 3 max|x| max|y|``. Non-finite
bounds give the constant planes ``-inf`` and ``inf`` (never NaN).
"""

from __future__ import annotations

import torch
from torch import Tensor

from genbab.bounds.relax._lines import frac, margin
from genbab.bounds.relax.base import PlaneRelaxation

__all__ = ["MUL_NUM_PARAMS", "init_mul_params", "relax_mul"]

MUL_NUM_PARAMS = 2
"""Parameters per product: ``r_lower`` and ``r_upper``."""


def init_mul_params(xl: Tensor, xu: Tensor, yl: Tensor, yu: Tensor) -> Tensor:
    """Default parameters of :func:`relax_mul`: 0.5, shape ``[2, *shape]``.

    Args:
        xl: Lower bounds of ``x``.
        xu: Upper bounds of ``x``.
        yl: Lower bounds of ``y``.
        yu: Upper bounds of ``y``; all four broadcastable to ``shape``.
    """
    shape = torch.broadcast_shapes(xl.shape, xu.shape, yl.shape, yu.shape)
    return torch.full((MUL_NUM_PARAMS, *shape), 0.5, dtype=xl.dtype, device=xl.device)


def relax_mul(
    xl: Tensor,
    xu: Tensor,
    yl: Tensor,
    yu: Tensor,
    params: Tensor | None = None,
) -> PlaneRelaxation:
    """Lower and upper planes of ``x * y`` on the box, for any parameters.

    Args:
        xl: Lower bounds of ``x``, broadcastable with the other three.
        xu: Upper bounds of ``x``.
        yl: Lower bounds of ``y``.
        yu: Upper bounds of ``y``.
        params: ``[2, *shape]``, the weights ``r_lower`` (index 0) and ``r_upper``
            (index 1) of the first McCormick plane, clamped into ``[0, 1]``; None
            for the default 0.5.

    Returns:
        Planes with the broadcast shape of the bounds and parameters.
    """
    if params is None:
        r_lo = r_up = torch.tensor(0.5, dtype=xl.dtype, device=xl.device)
    else:
        r_lo, r_up = frac(params[0]), frac(params[1])

    # Lower: r * L1 + (1 - r) * L2; upper: r * U1 + (1 - r) * U2.
    lower_x = r_lo * yl + (1 - r_lo) * yu
    lower_y = r_lo * xl + (1 - r_lo) * xu
    lower_bias = -(r_lo * (xl * yl) + (1 - r_lo) * (xu * yu))
    upper_x = r_up * yu + (1 - r_up) * yl
    upper_y = r_up * xl + (1 - r_up) * xu
    upper_bias = -(r_up * (xl * yu) + (1 - r_up) * (xu * yl))

    # Rounding margin; planes of unbounded boxes become infinite constants.
    reach = torch.maximum(xl.abs(), xu.abs()) * torch.maximum(yl.abs(), yu.abs())
    pad = margin(3 * reach)
    lower_bias, upper_bias = lower_bias - pad, upper_bias + pad
    out = torch.broadcast_tensors(
        lower_x, lower_y, lower_bias, upper_x, upper_y, upper_bias
    )
    ok = torch.isfinite(torch.stack(out)).all(0)
    zero = torch.zeros_like(out[0])
    inf = torch.full_like(zero, float("inf"))
    lx, ly, lb, ux, uy, ub = out
    return PlaneRelaxation(
        torch.where(ok, lx, zero),
        torch.where(ok, ly, zero),
        torch.where(ok, lb, -inf),
        torch.where(ok, ux, zero),
        torch.where(ok, uy, zero),
        torch.where(ok, ub, inf),
    )
