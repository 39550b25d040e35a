"""What a branching point is chosen to minimise: the looseness of the children.

Splitting the input ``x`` of a nonlinearity at ``p`` turns the interval
``[l, u]`` into the children ``[l, p]`` and ``[p, u]``, each relaxed afresh with
genbab's default (non-optimized, ``params=None``) relaxation. The *loss* of ``p``
is the area between the upper and the lower line of the first child over
``[l, p]`` plus the same for the second child over ``[p, u]``. For ``x * y`` with
``x`` split and ``y`` keeping ``[yl, yu]`` it is the volume between the upper and
the lower plane over each child box, summed.

The gap between two lines is linear in ``x``, so its integral over ``[a, b]`` is
``(b - a)`` times the gap at the midpoint; likewise the volume between two planes
over a box is the box's area times the gap at its centre. Infinite lines (a
reciprocal interval touching 0) give an infinite loss, never NaN.

Table keys are the names of genbab's ``Unary`` ops (``node.op.func``), except
that ``pow`` with exponent 2 has the key ``"square"`` (see :func:`table_key`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from genbab.bounds.relax import UNARY_FAMILIES, UnaryFamily
from genbab.bounds.relax.bivariate import relax_mul
from genbab.bounds.relax.convex import pow_family
from genbab.tables.keys import MUL_KEY, UNARY_KEYS, table_key

__all__ = [
    "MUL_KEY",
    "UNARY_KEYS",
    "interval_area",
    "mul_split_loss",
    "mul_volume",
    "split_loss",
    "table_key",
    "unary_relax_family",
]


def unary_relax_family(key: str) -> UnaryFamily:
    """The relaxation family behind a one-input table key.

    ``"square"`` is the family the bound engine uses for ``pow`` with exponent 2
    (:func:`genbab.bounds.relax.convex.pow_family`).

    Raises:
        KeyError: ``key`` is not one of :data:`UNARY_KEYS`.
    """
    if key not in UNARY_KEYS:
        raise KeyError(f"no branching-point table for '{key}'")
    if key == "square":
        return pow_family(2.0)
    return UNARY_FAMILIES[key]


def interval_area(key: str, lower: Tensor, upper: Tensor) -> Tensor:
    """Area between the default upper and lower lines of ``key`` over ``[l, u]``.

    Args:
        key: One of :data:`UNARY_KEYS`.
        lower: Lower ends, any shape broadcastable with ``upper``.
        upper: Upper ends (``>= lower``).

    Returns:
        Non-negative areas, broadcast shape; 0 where ``l == u``, ``inf`` where a
        line is infinite.
    """
    rel = unary_relax_family(key).relax(lower, upper, None)
    width = upper - lower
    mid = 0.5 * (lower + upper)
    gap = (rel.upper_slope - rel.lower_slope) * mid + (rel.upper_bias - rel.lower_bias)
    area = width * gap
    area = torch.where(width > 0, area, torch.zeros_like(area))
    return torch.where(area.isnan(), _INF, area)


def split_loss(key: str, lower: Tensor, point: Tensor, upper: Tensor) -> Tensor:
    """Loss of splitting ``[lower, upper]`` at ``point``: the children's areas.

    Args:
        key: One of :data:`UNARY_KEYS`.
        lower: Lower ends, shapes broadcastable together.
        point: Split points in ``[lower, upper]``.
        upper: Upper ends.

    Returns:
        ``interval_area(l, p) + interval_area(p, u)``, broadcast shape.
    """
    lower, point, upper = torch.broadcast_tensors(lower, point, upper)
    both = interval_area(
        key, torch.cat([lower.flatten(), point.flatten()]),
        torch.cat([point.flatten(), upper.flatten()]),
    )  # fmt: skip
    left, right = both.chunk(2)
    return (left + right).view(lower.shape)


def mul_volume(xl: Tensor, xu: Tensor, yl: Tensor, yu: Tensor) -> Tensor:
    """Volume between the default upper and lower planes of ``x * y`` on a box.

    Args:
        xl: Lower ends of ``x``; all four broadcastable together.
        xu: Upper ends of ``x``.
        yl: Lower ends of ``y``.
        yu: Upper ends of ``y``.

    Returns:
        Non-negative volumes, broadcast shape; 0 for a flat box.
    """
    rel = relax_mul(xl, xu, yl, yu, None)
    area = (xu - xl) * (yu - yl)
    gap = (
        (rel.upper_x - rel.lower_x) * (0.5 * (xl + xu))
        + (rel.upper_y - rel.lower_y) * (0.5 * (yl + yu))
        + (rel.upper_bias - rel.lower_bias)
    )
    volume = torch.where(area > 0, area * gap, torch.zeros_like(gap))
    return torch.where(volume.isnan(), _INF, volume)


def mul_split_loss(
    xl: Tensor, point: Tensor, xu: Tensor, yl: Tensor, yu: Tensor
) -> Tensor:
    """Loss of splitting ``x`` of ``x * y`` at ``point`` (``y`` keeps its interval).

    Args:
        xl: Lower ends of ``x``; all five broadcastable together.
        point: Split points in ``[xl, xu]``.
        xu: Upper ends of ``x``.
        yl: Lower ends of ``y``.
        yu: Upper ends of ``y``.

    Returns:
        The two child boxes' volumes, summed; broadcast shape.
    """
    return mul_volume(xl, point, yl, yu) + mul_volume(point, xu, yl, yu)


_INF = float("inf")
