"""How the bound engine treats each nonlinear node: intervals and relaxations.

The relaxations themselves live in :mod:`genbab.bounds.relax`, as pure functions;
this module picks the right one for a node and checks that the node's input
bounds are fit for it (finite, inside the function's domain).
"""

from __future__ import annotations

import torch
from torch import Tensor

from genbab.bounds.relax import UNARY_FAMILIES, Relaxation, UnaryFamily
from genbab.errors import BoundsError
from genbab.model.graph import Node
from genbab.model.ops import Unary

# Functions that are non-decreasing everywhere on their domain: f([l, u]) is
# exactly [f(l), f(u)].
INCREASING = {
    "relu", "leaky_relu", "sigmoid", "tanh", "atan", "exp", "log", "sqrt",
    "softplus", "erf", "floor",
}  # fmt: skip


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
    if op.func == "leaky_relu":
        from genbab.bounds.relax.relu import leaky_relu_family

        return leaky_relu_family(float(op.param))  # type: ignore[arg-type]
    family = UNARY_FAMILIES.get(op.func)
    if family is None:
        raise BoundsError(f"no linear relaxation for '{op.func}' (node '{node.name}')")
    return family


def check_domain(node: Node, family: UnaryFamily, lower: Tensor, upper: Tensor) -> None:
    """Raise :class:`BoundsError` if the input bounds leave the function's domain."""
    if not (torch.isfinite(lower).all() and torch.isfinite(upper).all()):
        raise BoundsError(
            f"input bounds of node '{node.name}' ({family.name}) are infinite or NaN"
        )
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
    if op.func in INCREASING or (op.func == "pow" and _is_odd_integer(op.param)):
        family_domain = unary_family(node).domain if op.func != "floor" else None
        if family_domain is not None:
            check_domain(node, unary_family(node), lower, upper)
        return f(lower), f(upper)
    if op.func == "reciprocal":
        check_domain(node, unary_family(node), lower, upper)
        return f(upper), f(lower)
    if op.func == "abs" or (op.func == "pow" and _is_even_integer(op.param)):
        lo_mag = torch.where(
            (lower <= 0) & (upper >= 0),
            torch.zeros_like(lower),
            torch.minimum(lower.abs(), upper.abs()),
        )
        hi_mag = torch.maximum(lower.abs(), upper.abs())
        return f(lo_mag), f(hi_mag)
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
