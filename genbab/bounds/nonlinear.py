"""How the bound engine treats each nonlinear node: intervals and relaxations.

The relaxations themselves live in :mod:`genbab.bounds.relax`, as pure functions;
this module picks the right one for a node and checks that the node's input
bounds are fit for it (finite, inside the function's domain).
"""

from __future__ import annotations

import torch
from torch import Tensor

from genbab.bounds.box import broadcast_batch, sum_to_shape
from genbab.bounds.piecewise import floor_interval
from genbab.bounds.relax import UNARY_FAMILIES, Relaxation, UnaryFamily
from genbab.bounds.relax.bivariate import init_mul_params, relax_mul
from genbab.bounds.rules import Interval, NodeRule, register_rule
from genbab.errors import BoundsError
from genbab.model.graph import Node
from genbab.model.ops import Mul, Unary

# Functions that are non-decreasing everywhere on their domain: f([l, u]) is
# exactly [f(l), f(u)].
INCREASING = {
    "relu", "leaky_relu", "sigmoid", "tanh", "atan", "exp", "log", "sqrt",
    "softplus", "erf", "floor",
}  # fmt: skip


def monotone_direction(node: Node) -> int:
    """``1`` if ``node`` is an elementwise function non-decreasing on its domain,
    ``-1`` if non-increasing, else ``0``.

    These are exactly the unary nodes whose interval is ``[f(l), f(u)]``
    (``[f(u), f(l)]`` for ``-1``) in :func:`unary_interval` (and the softmax
    reciprocal, ``1 / d`` on ``d >= 1``).
    """
    op = node.op
    if not isinstance(op, Unary):
        return 0
    if op.func == "leaky_relu" and op.param is not None and op.param < 0:
        return 0
    if op.func in INCREASING or (op.func == "pow" and _is_odd_integer(op.param)):
        return 1
    if op.func == "reciprocal":
        return -1
    return 0


def unary_family(node: Node) -> UnaryFamily:
    """Return the relaxation family of a :class:`Unary` node.

    Raises:
        BoundsError: genbab has no relaxation for the node's function.
    """
    op = node.op
    assert isinstance(op, Unary)
    if op.func == "pow":
        from genbab.bounds.relax.convex import pow_family

        return pow_family(float(op.param))  # type: ignore[arg-type]
    if op.func == "leaky_relu" and op.param is not None:
        from genbab.bounds.relax.relu import leaky_relu_family

        return leaky_relu_family(float(op.param))  # type: ignore[arg-type]
    family = UNARY_FAMILIES.get(op.func)
    if family is None:
        raise BoundsError(f"no linear relaxation for '{op.func}' (node '{node.name}')")
    return family


def check_bounds(node: Node, *bounds: Tensor) -> None:
    """Raise :class:`BoundsError` naming ``node`` if any input bound is not finite.

    Args:
        node: The node whose input bounds these are.
        bounds: Lower and upper bound tensors of its inputs, any shapes.
    """
    for t in bounds:
        if not torch.isfinite(t).all():
            what = "NaN" if torch.isnan(t).any() else "infinite"
            raise BoundsError(
                f"input bounds of node '{node.name}' ({_describe(node)}) are "
                f"{what}; the input box may be too wide for this model"
            )


def _describe(node: Node) -> str:
    op = node.op
    return op.func if isinstance(op, Unary) else op.op_type


def check_domain(node: Node, family: UnaryFamily, lower: Tensor, upper: Tensor) -> None:
    """Raise :class:`BoundsError` if the input bounds are not finite or leave the
    function's domain."""
    check_bounds(node, lower, upper)
    lo, hi = family.domain
    if (lower < lo).any() or (upper > hi).any():
        worst = lower.min().item()
        raise BoundsError(
            f"input bounds of node '{node.name}' leave the domain of {family.name} "
            f"[{lo}, {hi}] (lowest bound {worst:.4g})"
        )


def relax_unary(
    node: Node, lower: Tensor, upper: Tensor, params: Tensor | None = None
) -> Relaxation:
    """Sound linear relaxation of a unary node on its input interval.

    Args:
        node: A node whose op is :class:`Unary`.
        lower: Lower input bounds, shape broadcastable with ``upper`` (e.g.
            ``[B, 1, *shape]``).
        upper: Upper input bounds.
        params: Optimizable parameters ``[P, *broadcast_shape]`` or None.
    """
    family = unary_family(node)
    check_domain(node, family, lower, upper)
    return family.relax(lower, upper, params)


def unary_interval(node: Node, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
    """Interval of a unary node's output given its input interval ``[B, *shape]``."""
    op = node.op
    assert isinstance(op, Unary)
    f = op.forward
    check_domain(node, unary_family(node), lower, upper)
    if op.func == "floor":
        return floor_interval(lower, upper)
    negative_leaky = op.func == "leaky_relu" and op.param is not None and op.param < 0
    if (
        negative_leaky
        or op.func == "abs"
        or (op.func == "pow" and _is_even_integer(op.param))
    ):
        # Decreasing below 0, increasing above, f(0) = 0.
        fl, fu = f(lower), f(upper)
        crossing = (lower <= 0) & (upper >= 0)
        lo = torch.where(crossing, torch.zeros_like(fl), torch.minimum(fl, fu))
        return lo, torch.maximum(fl, fu)
    if op.func in INCREASING or (op.func == "pow" and _is_odd_integer(op.param)):
        return f(lower), f(upper)
    if op.func == "reciprocal":
        return f(upper), f(lower)
    # Otherwise: the relaxation's lines, concretized over the interval.
    rel = relax_unary(node, lower, upper)
    lo = torch.minimum(rel.lower_slope * lower, rel.lower_slope * upper)
    hi = torch.maximum(rel.upper_slope * lower, rel.upper_slope * upper)
    out_lo, out_hi = lo + rel.lower_bias, hi + rel.upper_bias
    if op.func in ("sin", "cos"):
        out_lo, out_hi = out_lo.clamp(min=-1.0), out_hi.clamp(max=1.0)
    return out_lo, torch.maximum(out_hi, out_lo)


def mul_interval(
    xl: Tensor, xu: Tensor, yl: Tensor, yu: Tensor
) -> tuple[Tensor, Tensor]:
    """Interval of ``x * y`` (broadcasting) from the corners of the box."""
    corners = torch.stack(torch.broadcast_tensors(xl * yl, xl * yu, xu * yl, xu * yu))
    return corners.min(0).values, corners.max(0).values


def _is_odd_integer(p: float | None) -> bool:
    return p is not None and float(p).is_integer() and int(p) % 2 == 1 and p > 0


def _is_even_integer(p: float | None) -> bool:
    return p is not None and float(p).is_integer() and int(p) % 2 == 0 and p > 0


# ---------------------------------------------------------------- rules


def _unary_interval(node: Node, ins: list[Interval]) -> Interval:
    return unary_interval(node, *ins[0])


def _unary_backward(node, a, ins, params, in_shapes):
    lo, hi = ins[0]
    rel = relax_unary(node, lo.unsqueeze(1), hi.unsqueeze(1), params)
    pos, neg = a.clamp(min=0), a.clamp(max=0)
    coef = pos * rel.lower_slope + neg * rel.upper_slope
    bias = (pos * rel.lower_bias + neg * rel.upper_bias).flatten(2).sum(-1)
    return [coef], bias


def _unary_init(node: Node, ins: list[Interval]) -> Tensor | None:
    family = unary_family(node)
    if family.num_params == 0:
        return None
    return family.init_params(*ins[0])


def _mul_interval(node: Node, ins: list[Interval]) -> Interval:
    (xl, xu), (yl, yu) = ins
    check_bounds(node, xl, xu, yl, yu)
    return mul_interval(xl, xu, yl, yu)


def _mul_backward(node, a, ins, params, in_shapes):
    (xl, xu), (yl, yu) = ins
    check_bounds(node, xl, xu, yl, yu)
    xl, xu, yl, yu = (
        t.unsqueeze(1) for t in broadcast_batch(node.shape, xl, xu, yl, yu)
    )
    rel = relax_mul(xl, xu, yl, yu, params)
    pos, neg = a.clamp(min=0), a.clamp(max=0)
    ax = pos * rel.lower_x + neg * rel.upper_x
    ay = pos * rel.lower_y + neg * rel.upper_y
    bias = (pos * rel.lower_bias + neg * rel.upper_bias).flatten(2).sum(-1)
    sx, sy = in_shapes
    return [sum_to_shape(ax, sx, 2), sum_to_shape(ay, sy, 2)], bias


def _mul_init(node: Node, ins: list[Interval]) -> Tensor:
    (xl, xu), (yl, yu) = ins
    return init_mul_params(*broadcast_batch(node.shape, xl, xu, yl, yu))


register_rule(Unary, NodeRule(_unary_interval, _unary_backward, _unary_init))
register_rule(Mul, NodeRule(_mul_interval, _mul_backward, _mul_init))
