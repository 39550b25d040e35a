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


def chord(f: Callable[[Tensor], Tensor], lower: Tensor, upper: Tensor) -> tuple[
    Tensor, Tensor
]:
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
