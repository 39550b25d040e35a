"""Forward linear bounds: every value bounded by linear functions of the input.

For models with few inputs (the cGAN's 5) a CROWN pass per neuron of a wide
value costs far more than carrying linear bounds forward: each value ``v`` gets
a lower and an upper linear function of the input, ``lo(x) <= v(x) <= up(x)``
for every ``x`` in the box, with ``d + 1`` coefficients per neuron (``d``
inputs and a constant), so the whole graph costs about ``2 (d + 1)`` forward
evaluations.

Representation: with ``x = mid + rad * e``, ``e`` in ``[-1, 1]^d``, a value's
bounds are kept as a centre form ``c`` and a half-width form ``r`` in ``e``
(``lo = c - r``, ``up = c + r``), as tensors ``[B, d + 1, *shape]`` (the last
generator is the constant). A linear node ``y = L(x) + k`` maps them to
``L(c) + k`` and ``|L|(r)``: that is ``L+ lo + L- up`` and ``L+ up + L- lo``
(with ``L+ - L- = |L|``), the exact best bounds of ``L x`` given the bounds
of ``x``. A nonlinear node takes its input's concrete bounds (the forms
minimized over the box, intersected with the interval and known bounds),
relaxes itself there, and composes its lines with the input's forms, choosing
the lower or upper form of the input by the sign of each slope. Nodes without
a forward rule here (attention's products, softmax parts) get constant forms
from their interval bounds.
"""

from __future__ import annotations

import torch
from torch import Tensor

from genbab.bounds.box import Bounds, Box, broadcast_batch
from genbab.bounds.nonlinear import relax_unary
from genbab.bounds.piecewise import PiecewiseLinear
from genbab.bounds.relax.bivariate import relax_mul
from genbab.bounds.relax.piecewise_linear import relax_piecewise_linear
from genbab.bounds.rules import rule_for
from genbab.model.graph import Node
from genbab.model.ops import Mul, Unary

__all__ = ["forward_bounds"]

Forms = dict[str, tuple[Tensor, Tensor]]  # name -> (centre, half-width) forms


def forward_bounds(engine, box: Box, bounds: Bounds) -> Bounds:
    """Bounds of every value by forward linear bounds, intersected with ``bounds``.

    Args:
        engine: The :class:`~genbab.bounds.engine.Engine` of the graph.
        box: Input boxes ``[B, *input_shape]``.
        bounds: Valid bounds of every value (e.g. intervals), ``[B, *shape]``.

    Returns:
        New bounds of every value, never looser than ``bounds``.
    """
    graph = engine.graph
    mid = (box.upper + box.lower) / 2
    rad = ((box.upper - box.lower) / 2).clamp(min=0)
    B, d = box.batch, mid[0].numel()
    centre = torch.zeros(B, d + 1, d, dtype=mid.dtype, device=mid.device)
    centre[:, torch.arange(d), torch.arange(d)] = rad.reshape(B, d)
    centre[:, d] = mid.reshape(B, d)
    shape = graph.input_shape
    forms: Forms = {
        graph.input_name: (
            centre.reshape(B, d + 1, *shape),
            torch.zeros_like(centre).reshape(B, d + 1, *shape),
        )
    }
    out = dict(bounds)
    for node in graph.nodes:
        if node.op.linear:
            forms[node.name] = _linear(engine, node, forms)
        else:
            forms[node.name] = _nonlinear(node, forms, out)
        lo, hi = _concretize(*forms[node.name])
        klo, khi = out[node.name]
        out[node.name] = (torch.maximum(lo, klo), torch.minimum(hi, khi))
    return out


def _concretize(c: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
    """Concrete bounds ``[B, *shape]`` of the forms ``c - r`` and ``c + r``."""
    lo, up = c - r, c + r
    return (
        lo[:, -1] - lo[:, :-1].abs().sum(1),
        up[:, -1] + up[:, :-1].abs().sum(1),
    )


def _linear(engine, node: Node, forms: Forms) -> tuple[Tensor, Tensor]:
    op = node.op
    cs = [forms[i][0] for i in node.inputs]
    rs = [forms[i][1] for i in node.inputs]
    B, G = cs[0].shape[:2]
    const = engine._linear_vjp(node)[0]
    c = _per_generator(op.forward, cs, B, G) - const
    c[:, -1] = c[:, -1] + const
    r = _per_generator(op.abs_forward, rs, B, G)
    return c, r


def _per_generator(fn, xs: list[Tensor], B: int, G: int) -> Tensor:
    flat = [x.reshape(B * G, *x.shape[2:]) for x in xs]
    y = torch.vmap(fn)(*flat)
    return y.reshape(B, G, *y.shape[1:])


def _nonlinear(node: Node, forms: Forms, bounds: Bounds) -> tuple[Tensor, Tensor]:
    ins = [bounds[i] for i in node.inputs]
    op = node.op
    if isinstance(op, Unary) and type(op) is Unary:
        (lo, hi), (c, r) = ins[0], forms[node.inputs[0]]
        rel = relax_unary(node, lo, hi)
        return _compose_unary(rel, c, r)
    if isinstance(op, PiecewiseLinear):
        (lo, hi), (c, r) = ins[0], forms[node.inputs[0]]
        return _compose_unary(relax_piecewise_linear(op.function(), lo, hi), c, r)
    if isinstance(op, Mul):
        return _compose_mul(node, forms, bounds)
    lo, hi = rule_for(node).interval(node, ins)
    klo, khi = bounds[node.name]
    lo, hi = torch.maximum(lo, klo), torch.minimum(hi, khi)
    return _constant_forms(lo, hi, forms[node.inputs[0]][0].shape[1])


def _compose_unary(rel, c: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
    """Forms of ``f(v)`` from the lines of ``f`` (``[B, *shape]``) and ``v``'s."""
    lo_in, up_in = c - r, c + r
    ls, us = rel.lower_slope.unsqueeze(1), rel.upper_slope.unsqueeze(1)
    low = ls.clamp(min=0) * lo_in + ls.clamp(max=0) * up_in
    up = us.clamp(min=0) * up_in + us.clamp(max=0) * lo_in
    low[:, -1] = low[:, -1] + rel.lower_bias
    up[:, -1] = up[:, -1] + rel.upper_bias
    return (low + up) / 2, (up - low) / 2


def _compose_mul(node: Node, forms: Forms, bounds: Bounds) -> tuple[Tensor, Tensor]:
    """Forms of ``x * y`` from the McCormick planes and the forms of ``x``, ``y``."""
    (xl, xu), (yl, yu) = (bounds[i] for i in node.inputs)
    shape = node.shape
    xl, xu, yl, yu = broadcast_batch(shape, xl, xu, yl, yu)
    rel = relax_mul(xl, xu, yl, yu)
    (cx, rx), (cy, ry) = (forms[i] for i in node.inputs)
    G = cx.shape[1]
    lx, ux = _expand(cx - rx, shape, G), _expand(cx + rx, shape, G)
    ly, uy = _expand(cy - ry, shape, G), _expand(cy + ry, shape, G)

    def side(ax: Tensor, ay: Tensor, b: Tensor, upper: bool) -> Tensor:
        ax, ay = ax.unsqueeze(1), ay.unsqueeze(1)
        px, nx = ax.clamp(min=0), ax.clamp(max=0)
        py, ny = ay.clamp(min=0), ay.clamp(max=0)
        if upper:
            f = px * ux + nx * lx + py * uy + ny * ly
        else:
            f = px * lx + nx * ux + py * ly + ny * uy
        f[:, -1] = f[:, -1] + b
        return f

    low = side(rel.lower_x, rel.lower_y, rel.lower_bias, upper=False)
    up = side(rel.upper_x, rel.upper_y, rel.upper_bias, upper=True)
    return (low + up) / 2, (up - low) / 2


def _expand(f: Tensor, shape: tuple[int, ...], G: int) -> Tensor:
    """Forms ``[B, G, *s]`` broadcast to ``[B, G, *shape]`` (a copy)."""
    B = f.shape[0]
    per = f.shape[2:]
    f = f.reshape(B, G, *([1] * (len(shape) - len(per))), *per)
    return f.expand(B, G, *shape).clone()


def _constant_forms(lo: Tensor, hi: Tensor, G: int) -> tuple[Tensor, Tensor]:
    """Forms that are the constants ``lo`` and ``hi``."""
    c = lo.new_zeros(lo.shape[0], G, *lo.shape[1:])
    r = torch.zeros_like(c)
    c[:, -1] = (lo + hi) / 2
    r[:, -1] = (hi - lo) / 2
    return c, r
