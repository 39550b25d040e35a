"""Relaxations of ReLU, LeakyReLU and Abs (piecewise linear with a kink at 0).

For ``f(x) = x`` (x >= 0), ``s * x`` (x < 0) with negative slope ``s``:

- stable intervals (``u <= 0`` or ``l >= 0``): ``f`` is linear there, both lines
  are exact;
- crossing intervals (``l < 0 < u``): for ``s <= 1`` (convex ``f``) the upper line
  is the chord through ``(l, s*l)`` and ``(u, u)``, and the lower line is any line
  through the origin with slope ``a`` in ``[s, 1]``: it lies below both pieces. For
  ``s > 1`` (concave ``f``) the roles swap: chord below, slope ``a`` in ``[1, s]``
  above.

The one parameter per neuron is ``p`` in ``[0, 1]`` with ``a = s + p * (1 - s)``
(for ReLU, ``a = p``); values outside ``[0, 1]`` are clamped. The default (CROWN)
choice is ``a = 1`` where ``u > -l`` and ``a = s`` otherwise, the adaptive slope
with the smaller area. No safety margin is added: every line is exact in rational
arithmetic, so floating point only perturbs it by a few ulps, like any other
linear operation of the bound engine.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from genbab.bounds.relax import register
from genbab.bounds.relax.base import Relaxation, UnaryFamily, clamp01

__all__ = ["ABS", "leaky_relu_family", "relax_leaky_relu", "relax_relu"]


def _default_fraction(lower: Tensor, upper: Tensor) -> Tensor:
    """Default ``p``: 1 (slope 1) where ``u > -l``, else 0 (slope ``s``)."""
    return (upper > -lower).to(torch.result_type(lower, upper))


def relax_leaky_relu(
    lower: Tensor, upper: Tensor, params: Tensor | None, negative_slope: float
) -> Relaxation:
    """Relaxation of ``leaky_relu(x, negative_slope)`` on ``[lower, upper]``.

    Args:
        lower: Lower input bounds, any shape broadcastable with ``upper``.
        upper: Upper input bounds.
        params: None (default relaxation) or ``[1, *shape]``, the fraction ``p``
            placing the free slope in ``[min(s, 1), max(s, 1)]``; clamped to
            ``[0, 1]``.
        negative_slope: The slope ``s`` of the negative part (0 for ReLU).

    Returns:
        The relaxation, broadcast shape of bounds (and parameters).
    """
    s = float(negative_slope)
    lower, upper = torch.broadcast_tensors(lower, upper)
    if params is None:
        p = _default_fraction(lower, upper)
    else:
        p = clamp01(params[0])
    free = s + p * (1.0 - s)

    # Chord through (l, s*l) and (u, u) on crossing intervals.
    crossing = (lower < 0) & (upper > 0)
    width = torch.where(crossing, upper - lower, torch.ones_like(upper))
    chord_k = torch.where(crossing, (upper - s * lower) / width, torch.ones_like(upper))
    chord_b = torch.where(crossing, (s - 1.0) * upper * lower / width, 0.0 * upper)

    # Stable intervals: exact slope, zero bias.
    exact = torch.where(upper <= 0, torch.full_like(upper, s), torch.ones_like(upper))
    shape = torch.broadcast_shapes(free.shape, lower.shape)
    free_k = torch.where(crossing, free, exact).expand(shape)
    chord_k = torch.where(crossing, chord_k, exact).expand(shape)
    zero = torch.zeros(shape, dtype=free_k.dtype, device=free_k.device)
    chord_b = chord_b.expand(shape)
    if s <= 1.0:
        return Relaxation(free_k, zero, chord_k, chord_b)
    return Relaxation(chord_k, chord_b, free_k, zero)


def relax_relu(lower: Tensor, upper: Tensor, params: Tensor | None) -> Relaxation:
    """Relaxation of ReLU; see :func:`relax_leaky_relu` (``negative_slope=0``)."""
    return relax_leaky_relu(lower, upper, params, 0.0)


def _init_params(lower: Tensor, upper: Tensor) -> Tensor:
    """Default parameters ``[1, *shape]`` (see :func:`_default_fraction`)."""
    lower, upper = torch.broadcast_tensors(lower, upper)
    return _default_fraction(lower, upper)[None]


def _leaky(x: Tensor, negative_slope: float) -> Tensor:
    return torch.nn.functional.leaky_relu(x, negative_slope)


@functools.lru_cache(maxsize=32)
def leaky_relu_family(negative_slope: float) -> UnaryFamily:
    """The relaxation family of ``leaky_relu`` with the given negative slope.

    Args:
        negative_slope: Slope of the negative part (ONNX ``alpha``); any real.

    Returns:
        A :class:`UnaryFamily` with one parameter per neuron (see module docs).
    """
    s = float(negative_slope)
    return UnaryFamily(
        name="leaky_relu",
        fn=functools.partial(_leaky, negative_slope=s),
        relax=functools.partial(relax_leaky_relu, negative_slope=s),
        num_params=1,
        init_params=_init_params,
    )


RELU = register(
    UnaryFamily(
        name="relu",
        fn=torch.relu,
        relax=relax_relu,
        num_params=1,
        init_params=_init_params,
    )
)

# Registered with PyTorch's/ONNX's default slope 0.01; nodes with another slope
# get theirs from :func:`leaky_relu_family`.
LEAKY_RELU = register(leaky_relu_family(0.01))

# |x| is the leaky ReLU of slope -1: chord above, a line through 0 of slope in
# [-1, 1] below.
ABS = register(
    UnaryFamily(
        name="abs",
        fn=torch.abs,
        relax=functools.partial(relax_leaky_relu, negative_slope=-1.0),
        num_params=1,
        init_params=_init_params,
    )
)
