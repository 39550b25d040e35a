"""Bound rules of the attention ops: :class:`BilinearMatMul` and :class:`Softmax`.

``BilinearMatMul``: ``out[.., i, j] = sum_k x[.., i, k] y[.., k, j]``, with
``torch.matmul`` broadcasting of the leading dims (1-D operands get a unit row
or column, dropped from the output). Each product ``x_ik y_kj`` is relaxed by
the McCormick planes of :func:`~genbab.bounds.relax.bivariate.relax_mul`, so
with coefficients ``a`` on the output the coefficient on ``x_ik`` is
``sum_j a+_ij lower_x_ikj + a-_ij upper_x_ikj`` (likewise for ``y``) and the
bias is ``sum a+ lower_bias + a- upper_bias``.

* Default planes (weight 0.5, no parameters): both planes have the slopes
  ``mid(y)`` on ``x`` and ``mid(x)`` on ``y``, so the whole step is a handful of
  matrix products, with no ``[.., i, k, j]`` tensor.
* alpha-CROWN: two parameters per product, ``[2, B, *lead, i, k, j]``; above
  :data:`MATMUL_PARAM_LIMIT` products per domain the node gets none (default
  planes) to save memory.

``Softmax``: normally rewritten into exp / sum / reciprocal nodes by
:func:`genbab.bounds.rewrite.prepare_for_bounds`, which relaxes it far better.
The rule here is a sound fallback: the exact interval from the input interval,
and constant lines.

:class:`SoftmaxDenominator` and :class:`SoftmaxReciprocal` end that rewrite:
``d = 1 + sum_j exp(z_j)`` of the logit differences ``z`` and ``1 / d``. The
denominator is one node (exp relaxation per term, exact sum) rather than an exp
node and a linear sum, for two reasons: an exp bound that overflows to infinity
(the first interval pass over a wide box, before CROWN tightens ``z``) makes the
engine's centre-radius interval of a linear sum NaN, while this node's interval
adds the ends directly (``d <= inf``); and CROWN bounds of separate exp outputs
would cost as much as those of ``z`` and could not be tighter than the exact
interval of ``exp`` on ``z``'s bounds. The reciprocal's rule clips ``d``'s bounds
below at 1; where ``d <= inf`` its interval is ``[0, 1 / l]`` and its lines are
those constants: so interval bounds of later nodes stay finite, and CROWN on
interval intermediate bounds works however wide the box.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

from genbab.bounds.box import sum_to_shape
from genbab.bounds.nonlinear import check_bounds, relax_unary
from genbab.bounds.relax import UNARY_FAMILIES
from genbab.bounds.relax._lines import margin
from genbab.bounds.relax.bivariate import init_mul_params, relax_mul
from genbab.bounds.rules import RULES, Interval, NodeRule, register_rule
from genbab.model.graph import Node
from genbab.model.ops import BilinearMatMul, Op, Softmax, Unary

__all__ = [
    "SoftmaxDenominator",
    "SoftmaxReciprocal",
    "INTERVAL_CORNER_LIMIT",
    "MATMUL_PARAM_LIMIT",
    "matmul_interval",
    "softmax_interval",
]

MATMUL_PARAM_LIMIT = 1 << 16
"""Most products ``x_ik y_kj`` per domain for which a node gets alpha parameters."""

INTERVAL_CORNER_LIMIT = 1 << 21
"""Most products (all domains together) for the exact per-product interval; above
it the (looser) center-radius form is used."""


# ---------------------------------------------------------------- shapes


def _matrix_shapes(
    sx: tuple[int, ...], sy: tuple[int, ...]
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Shapes of ``x``, ``y`` and the output as stacks of matrices.

    1-D operands get a unit row (``x``) or column (``y``), and both get unit
    leading dims up to the output's number of leading dims.

    Returns:
        ``(*bx, i, k)``, ``(*by, k, j)`` and ``(*lead, i, j)``, where ``lead`` is
        the broadcast of ``bx`` and ``by`` and all three have the same length.
    """
    x2 = (1, *sx) if len(sx) == 1 else sx
    y2 = (*sy, 1) if len(sy) == 1 else sy
    lead = tuple(torch.broadcast_shapes(x2[:-2], y2[:-2]))
    x2 = (1,) * (len(lead) + 2 - len(x2)) + x2
    y2 = (1,) * (len(lead) + 2 - len(y2)) + y2
    return x2, y2, (*lead, x2[-2], y2[-1])


def _as_matrices(
    ins: list[Interval], in_shapes: list[tuple[int, ...]]
) -> tuple[Interval, Interval, tuple[int, ...]]:
    """Input bounds as ``[B, *bx, i, k]``, ``[B, *by, k, j]``, and ``out2``."""
    x2, y2, out2 = _matrix_shapes(*in_shapes)
    (xl, xu), (yl, yu) = ins
    B = xl.shape[0]
    return (
        (xl.reshape(B, *x2), xu.reshape(B, *x2)),
        (yl.reshape(B, *y2), yu.reshape(B, *y2)),
        out2,
    )


def _in_shapes(ins: list[Interval]) -> list[tuple[int, ...]]:
    return [tuple(lo.shape[1:]) for lo, _ in ins]


# ---------------------------------------------------------------- interval


def matmul_interval(
    xl: Tensor, xu: Tensor, yl: Tensor, yu: Tensor
) -> tuple[Tensor, Tensor]:
    """Interval of ``x @ y`` for ``x`` in ``[xl, xu]``, ``y`` in ``[yl, yu]``.

    Exact per product (min/max over the four corners) and summed over ``k``;
    above :data:`INTERVAL_CORNER_LIMIT` products the center-radius form
    ``mid(x) @ mid(y) +- (|mid x| @ rad y + rad x @ |mid y| + rad x @ rad y)``.

    Args:
        xl: ``[..., i, k]``.
        xu: Same shape.
        yl: ``[..., k, j]`` (leading dims broadcast with ``x``'s).
        yu: Same shape.

    Returns:
        ``(lower, upper)``, each ``[..., i, j]``.
    """
    lead = torch.broadcast_shapes(xl.shape[:-2], yl.shape[:-2])
    n = math.prod(lead) * xl.shape[-2] * xl.shape[-1] * yl.shape[-1]
    if n <= INTERVAL_CORNER_LIMIT:
        xs = [t.unsqueeze(-1) for t in (xl, xu)]
        ys = [t.unsqueeze(-3) for t in (yl, yu)]
        corners = torch.stack(torch.broadcast_tensors(*(x * y for x in xs for y in ys)))
        return corners.amin(0).sum(-2), corners.amax(0).sum(-2)
    xm, xr = (xl + xu) / 2, ((xu - xl) / 2).clamp(min=0)
    ym, yr = (yl + yu) / 2, ((yu - yl) / 2).clamp(min=0)
    mid = xm @ ym
    rad = xm.abs() @ yr + xr @ ym.abs() + xr @ yr
    return mid - rad, mid + rad


def _matmul_interval(node: Node, ins: list[Interval]) -> Interval:
    check_bounds(node, *ins[0], *ins[1])
    (xl, xu), (yl, yu), out2 = _as_matrices(ins, _in_shapes(ins))
    lo, hi = matmul_interval(xl, xu, yl, yu)
    B = lo.shape[0]
    return lo.reshape(B, *node.shape), hi.reshape(B, *node.shape)


# ---------------------------------------------------------------- backward


def _matmul_backward(
    node: Node,
    a: Tensor,
    ins: list[Interval],
    params: Tensor | None,
    in_shapes: list[tuple[int, ...]],
) -> tuple[list[Tensor], Tensor]:
    """One CROWN step through ``x @ y`` (see the module docs)."""
    check_bounds(node, *ins[0], *ins[1])
    (xl, xu), (yl, yu), out2 = _as_matrices(ins, in_shapes)
    B, S = a.shape[:2]
    a = a.reshape(B, S, *out2)
    # Bounds get a spec dim: [B, 1, *bx, i, k] and [B, 1, *by, k, j].
    xl, xu, yl, yu = (t.unsqueeze(1) for t in (xl, xu, yl, yu))
    if params is None:
        cx, cy, bias = _default_step(a, xl, xu, yl, yu)
    else:
        cx, cy, bias = _planes_step(a, xl, xu, yl, yu, params)
    x2, y2, _ = _matrix_shapes(*in_shapes)
    cx = sum_to_shape(cx, x2, 2).reshape(B, S, *in_shapes[0])
    cy = sum_to_shape(cy, y2, 2).reshape(B, S, *in_shapes[1])
    return [cx, cy], bias


def _rounding_pad(xl: Tensor, xu: Tensor, yl: Tensor, yu: Tensor) -> Tensor:
    """Rounding margin of the summed plane biases, ``[.., i, j]``."""
    ax = torch.maximum(xl.abs(), xu.abs())
    ay = torch.maximum(yl.abs(), yu.abs())
    return margin((3 + xl.shape[-1]) * (ax @ ay))


def _default_step(
    a: Tensor, xl: Tensor, xu: Tensor, yl: Tensor, yu: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """The weight-0.5 McCormick step as matrix products.

    Lower plane ``mid(y) x + mid(x) y - (xl yl + xu yu) / 2``, upper plane
    ``mid(y) x + mid(x) y - (xl yu + xu yl) / 2``; summed over ``k``.
    """
    xm, ym = (xl + xu) / 2, (yl + yu) / 2
    cx = a @ ym.transpose(-1, -2)
    cy = xm.transpose(-1, -2) @ a
    pad = _rounding_pad(xl, xu, yl, yu)
    low = -(xl @ yl + xu @ yu) / 2 - pad
    up = -(xl @ yu + xu @ yl) / 2 + pad
    bias = a.clamp(min=0) * low + a.clamp(max=0) * up
    return cx, cy, bias.flatten(2).sum(-1)


def _planes_step(
    a: Tensor, xl: Tensor, xu: Tensor, yl: Tensor, yu: Tensor, params: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """The step with one pair of plane weights per product, ``[.., i, k, j]``."""
    rel = relax_mul(
        xl.unsqueeze(-1), xu.unsqueeze(-1), yl.unsqueeze(-3), yu.unsqueeze(-3), params
    )
    pos, neg = a.clamp(min=0).unsqueeze(-2), a.clamp(max=0).unsqueeze(-2)
    cx = (pos * rel.lower_x + neg * rel.upper_x).sum(-1)
    cy = (pos * rel.lower_y + neg * rel.upper_y).sum(-3)
    bias = (pos * rel.lower_bias + neg * rel.upper_bias).sum(-2)
    pad = margin(xl.shape[-1] * _reach(xl, xu, yl, yu))
    bias = bias - a.abs() * pad
    return cx, cy, bias.flatten(2).sum(-1)


def _reach(xl: Tensor, xu: Tensor, yl: Tensor, yu: Tensor) -> Tensor:
    ax = torch.maximum(xl.abs(), xu.abs())
    ay = torch.maximum(yl.abs(), yu.abs())
    return ax @ ay


def _matmul_init(node: Node, ins: list[Interval]) -> Tensor | None:
    """Weights 0.5 per product ``[2, B, *lead, i, k, j]``, or None when too many."""
    (xl, xu), (yl, yu), out2 = _as_matrices(ins, _in_shapes(ins))
    k = xl.shape[-1]
    if math.prod(out2) * k > MATMUL_PARAM_LIMIT:
        return None
    return init_mul_params(
        xl.unsqueeze(-1), xu.unsqueeze(-1), yl.unsqueeze(-3), yu.unsqueeze(-3)
    )


# ---------------------------------------------------------------- softmax


def softmax_interval(lower: Tensor, upper: Tensor, axis: int) -> Interval:
    """Exact interval of ``softmax`` along ``axis`` for inputs in a box.

    ``softmax_i = 1 / (1 + sum_{j != i} exp(x_j - x_i))`` is smallest with
    ``x_j = upper_j`` and ``x_i = lower_i``, and largest the other way round.

    Args:
        lower: Input lower bounds, any shape.
        upper: Same shape.
        axis: The softmax axis (non-negative, counting the leading dims).

    Returns:
        ``(lower, upper)`` of the same shape, inside ``[0, 1]``.
    """
    lo, hi = lower.movedim(axis, -1), upper.movedim(axis, -1)
    n = lo.shape[-1]
    off = ~torch.eye(n, dtype=torch.bool, device=lo.device)
    zero = torch.zeros((), dtype=lo.dtype, device=lo.device)
    big = torch.where(off, torch.exp(hi.unsqueeze(-2) - lo.unsqueeze(-1)), zero)
    small = torch.where(off, torch.exp(lo.unsqueeze(-2) - hi.unsqueeze(-1)), zero)
    out_lo = torch.reciprocal(1 + big.sum(-1)).clamp(0.0, 1.0)
    out_hi = torch.reciprocal(1 + small.sum(-1)).clamp(0.0, 1.0)
    # Relative rounding of exp, sum and reciprocal: a few ulps.
    eps = 8 * torch.finfo(lo.dtype).eps
    out_lo, out_hi = out_lo * (1 - eps), (out_hi * (1 + eps)).clamp(max=1.0)
    return out_lo.movedim(-1, axis), out_hi.movedim(-1, axis)


def _softmax_interval(node: Node, ins: list[Interval]) -> Interval:
    op = node.op
    assert isinstance(op, Softmax)
    lo, hi = ins[0]
    check_bounds(node, lo, hi)
    return softmax_interval(lo, hi, op.axis + 1)


def _softmax_backward(
    node: Node,
    a: Tensor,
    ins: list[Interval],
    params: Tensor | None,
    in_shapes: list[tuple[int, ...]],
) -> tuple[list[Tensor], Tensor]:
    """Constant lines at the interval ends (sound, loose)."""
    warnings.warn(
        f"softmax node '{node.name}' is bounded by its interval only; rewrite "
        "the graph with genbab.bounds.rewrite.prepare_for_bounds for tighter bounds",
        stacklevel=2,
    )
    lo, hi = _softmax_interval(node, ins)
    bias = a.clamp(min=0) * lo.unsqueeze(1) + a.clamp(max=0) * hi.unsqueeze(1)
    return [torch.zeros_like(a)], bias.flatten(2).sum(-1)


# ---------------------------------------------------------------- denominator


class SoftmaxDenominator(Op):
    """``1 + sum(exp(z), axis)`` of the differences ``z`` (see module docs).

    Attributes:
        axis: The summed axis of one sample's ``z`` (non-negative).
    """

    op_type = "SoftmaxDenominator"

    def __init__(self, axis: int) -> None:
        self.axis = axis

    def forward(self, *xs: Tensor) -> Tensor:
        (z,) = xs
        return 1 + torch.exp(z).sum(self.axis)


def _denominator_axis(node: Node) -> int:
    op = node.op
    assert isinstance(op, SoftmaxDenominator)
    return op.axis


def denominator_interval(lower: Tensor, upper: Tensor, axis: int) -> Interval:
    """Interval of ``1 + sum(exp(z), axis)`` for ``z`` in ``[lower, upper]``.

    Exact up to rounding (``exp`` is increasing and the terms are positive);
    an upper end that overflows is ``inf``, never NaN.

    Args:
        lower: ``[B, *shape]`` lower bounds of ``z``.
        upper: Same shape.
        axis: The summed axis, counting the leading dim.

    Returns:
        ``(lower, upper)`` with ``axis`` removed; the lower end is at least 1.
    """
    n = lower.shape[axis]
    # exp, a sum of n positive terms and the final + 1: under (n + 4) eps.
    eps = (n + 4) * torch.finfo(lower.dtype).eps
    out_lo = (1 + torch.exp(lower).sum(axis)) * (1 - eps)
    out_hi = (1 + torch.exp(upper).sum(axis)) * (1 + eps)
    return out_lo.clamp(min=1.0), out_hi


def _denominator_interval(node: Node, ins: list[Interval]) -> Interval:
    lo, hi = ins[0]
    check_bounds(node, lo, hi)
    return denominator_interval(lo, hi, _denominator_axis(node) + 1)


def _denominator_backward(
    node: Node,
    a: Tensor,
    ins: list[Interval],
    params: Tensor | None,
    in_shapes: list[tuple[int, ...]],
) -> tuple[list[Tensor], Tensor]:
    """The sum is exact; each ``exp`` term uses the exp relaxation (1 parameter)."""
    lo, hi = ins[0]
    axis = _denominator_axis(node) + 2  # in [B, S, *shape]
    check_bounds(node, lo, hi)
    rel = UNARY_FAMILIES["exp"].relax(lo.unsqueeze(1), hi.unsqueeze(1), params)
    c = a.unsqueeze(axis).expand(*a.shape[:2], *in_shapes[0])
    pos, neg = c.clamp(min=0), c.clamp(max=0)
    coef = pos * rel.lower_slope + neg * rel.upper_slope
    # An overflowing exp has the upper line 0 x + inf: unused where neg == 0.
    up = torch.where(neg < 0, neg * rel.upper_bias, torch.zeros_like(neg))
    bias = (pos * rel.lower_bias + up).flatten(2).sum(-1)
    return [coef], bias + a.flatten(2).sum(-1)


def _denominator_init(node: Node, ins: list[Interval]) -> Tensor:
    """The exp tangent-point fractions, ``[1, B, *shape of z]``."""
    return UNARY_FAMILIES["exp"].init_params(*ins[0])


# ---------------------------------------------------------------- reciprocal


class SoftmaxReciprocal(Unary):
    """``1 / d`` for a softmax denominator ``d >= 1`` (a ``reciprocal`` Unary)."""

    def __init__(self) -> None:
        super().__init__("reciprocal")


def _denominator(ins: list[Interval]) -> list[Interval]:
    """``d``'s bounds clipped below at 1; an infinite upper end becomes ``2 l``
    (the caller replaces the lines there)."""
    lo, hi = ins[0]
    lo = lo.clamp(min=1.0)
    hi = torch.where(torch.isinf(hi), 2 * lo, hi)
    return [(lo, torch.maximum(hi, lo))]


def _reciprocal_interval(node: Node, ins: list[Interval]) -> Interval:
    """``[1 / hi, 1 / lo]``; ``hi = inf`` is allowed (gives 0), NaN is not."""
    lo, hi = ins[0]
    check_bounds(node, lo, torch.where(hi == torch.inf, lo, hi))
    lo = lo.clamp(min=1.0)
    return torch.reciprocal(torch.maximum(hi, lo)), torch.reciprocal(lo)


def _reciprocal_backward(
    node: Node,
    a: Tensor,
    ins: list[Interval],
    params: Tensor | None,
    in_shapes: list[tuple[int, ...]],
) -> tuple[list[Tensor], Tensor]:
    """The reciprocal's step; where ``d <= inf`` the constants ``0 <= 1/d <= 1/l``."""
    lo, hi = ins[0]
    check_bounds(node, lo, torch.where(hi == torch.inf, lo, hi))
    ((dl, du),) = _denominator(ins)
    rel = relax_unary(node, dl.unsqueeze(1), du.unsqueeze(1), params)
    unbounded = torch.isinf(hi).unsqueeze(1)
    zero = torch.zeros_like(rel.lower_slope)
    lo_s = torch.where(unbounded, zero, rel.lower_slope)
    lo_b = torch.where(unbounded, zero, rel.lower_bias)
    up_s = torch.where(unbounded, zero, rel.upper_slope)
    top = torch.reciprocal(dl) * (1 + 4 * torch.finfo(dl.dtype).eps)
    up_b = torch.where(unbounded, top.unsqueeze(1), rel.upper_bias)
    pos, neg = a.clamp(min=0), a.clamp(max=0)
    coef = pos * lo_s + neg * up_s
    bias = (pos * lo_b + neg * up_b).flatten(2).sum(-1)
    return [coef], bias


def _reciprocal_init(node: Node, ins: list[Interval]) -> Tensor | None:
    return RULES[Unary].init_params(node, _denominator(ins))


register_rule(
    SoftmaxDenominator,
    NodeRule(_denominator_interval, _denominator_backward, _denominator_init),
)
register_rule(
    SoftmaxReciprocal,
    NodeRule(_reciprocal_interval, _reciprocal_backward, _reciprocal_init),
)
register_rule(
    BilinearMatMul, NodeRule(_matmul_interval, _matmul_backward, _matmul_init)
)
register_rule(Softmax, NodeRule(_softmax_interval, _softmax_backward))
