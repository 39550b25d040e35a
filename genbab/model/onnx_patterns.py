"""Graph rewrites applied after import: exported GELU, MatMul + bias.

Exporters before opset 20 write ``gelu(x) = x * 0.5 * (1 + erf(x / sqrt(2)))``
as five nodes. :func:`fuse_gelu` replaces such a chain by one
``Unary("gelu")`` node, which the bound engine relaxes far more tightly than
the product of ``x`` and ``erf``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from genbab.model.graph import Node
from genbab.model.ops import Linear, Mul, ScaleShift, Unary

_TOL = 1e-5


def _scalar(t: torch.Tensor | None, default: float) -> float | None:
    """The value of a constant with one element (``default`` for None)."""
    if t is None:
        return default
    return float(t.reshape(-1)[0]) if t.numel() == 1 else None


def _scalar_affine(node: Node) -> tuple[float, float] | None:
    """``(scale, shift)`` if ``node`` is a ScaleShift by scalars, else None."""
    op = node.op
    if not isinstance(op, ScaleShift):
        return None
    scale, shift = _scalar(op.scale, 1.0), _scalar(op.shift, 0.0)
    if scale is None or shift is None:
        return None
    return scale, shift


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= _TOL * max(1.0, abs(b))


def fuse_gelu(nodes: list[Node], output: str) -> list[Node]:
    """Replace exported ``x * 0.5 * (1 + erf(x / sqrt 2))`` chains by GELU.

    The factor 0.5 may sit on ``x``, on ``1 + erf`` or after the product.
    Intermediate values must have no other reader.

    Args:
        nodes: Topologically sorted nodes.
        output: Name of the graph output (never removed).

    Returns:
        The nodes with each recognised chain replaced by one node named like
        the chain's last node.
    """
    by_name = {n.name: n for n in nodes}
    readers: dict[str, list[Node]] = {}
    for n in nodes:
        for i in n.inputs:
            readers.setdefault(i, []).append(n)

    def only_reader(name: str) -> Node | None:
        r = readers.get(name, []) if name != output else []
        return r[0] if len(r) == 1 else None

    replaced: dict[str, Node] = {}  # last node name -> gelu node
    removed: set[str] = set()
    for erf in nodes:
        if not (isinstance(erf.op, Unary) and erf.op.func == "erf"):
            continue
        match = _match_gelu(erf, by_name, only_reader)
        if match is None:
            continue
        x, chain = match
        last = chain[-1]
        replaced[last.name] = Node(
            last.name, Unary("gelu"), (x,), last.shape, last.onnx_name
        )
        removed.update(n.name for n in chain[:-1])
    if not replaced:
        return nodes
    return [replaced.get(n.name, n) for n in nodes if n.name not in removed]


def _match_gelu(
    erf: Node,
    by_name: dict[str, Node],
    only_reader: Callable[[str], Node | None],
) -> tuple[str, list[Node]] | None:
    """The input ``x`` and the nodes of a GELU chain around ``erf``, or None."""
    inner = by_name.get(erf.inputs[0])
    aff = None if inner is None else _scalar_affine(inner)
    if aff is None or aff[1] != 0.0 or not _close(aff[0], 1 / math.sqrt(2)):
        return None
    if only_reader(inner.name) is not erf:
        return None
    x = inner.inputs[0]
    chain = [inner, erf]

    # 1 + erf, possibly times a factor: alpha * erf + beta
    alpha, beta, node = 1.0, 0.0, erf
    while (nxt := only_reader(node.name)) is not None and (
        aff := _scalar_affine(nxt)
    ) is not None:
        alpha, beta = alpha * aff[0], beta * aff[0] + aff[1]
        chain.append(nxt)
        node = nxt
    mul = only_reader(node.name)
    if mul is None or not isinstance(mul.op, Mul):
        return None
    other = mul.inputs[1] if mul.inputs[0] == node.name else mul.inputs[0]
    factor = 1.0
    if other != x:
        side = by_name.get(other)
        aff = None if side is None else _scalar_affine(side)
        if aff is None or aff[1] != 0.0 or side.inputs[0] != x:
            return None
        if only_reader(side.name) is not mul:
            return None
        factor = aff[0]
        chain.append(side)
    chain.append(mul)

    # an optional scalar factor after the product
    after = only_reader(mul.name)
    if after is not None and (aff := _scalar_affine(after)) is not None:
        if aff[1] == 0.0 and not _close(factor * alpha, 0.5):
            factor *= aff[0]
            chain.append(after)
    if not (_close(factor * alpha, 0.5) and _close(factor * beta, 0.5)):
        return None
    return x, chain


def fuse_linear_bias(nodes: list[Node], output: str) -> list[Node]:
    """Fold ``Add(MatMul(x, W), b)`` into one :class:`Linear` with a bias.

    Applies when the product has no bias, is read only by a shift-only
    :class:`ScaleShift`, and the shift does not change the product's shape.

    Args:
        nodes: Topologically sorted nodes.
        output: Name of the graph output (never removed).

    Returns:
        The nodes, each fused pair replaced by one node named like the shift.
    """
    readers: dict[str, list[Node]] = {}
    for n in nodes:
        for i in n.inputs:
            readers.setdefault(i, []).append(n)
    fused: dict[str, Node] = {}
    removed: set[str] = set()
    for n in nodes:
        op = n.op
        after = readers.get(n.name, [])
        if not isinstance(op, Linear) or op.bias is not None or n.name == output:
            continue
        if len(after) != 1 or not isinstance(after[0].op, ScaleShift):
            continue
        shift_node = after[0]
        shift_op = shift_node.op
        assert isinstance(shift_op, ScaleShift)
        if shift_op.scale is not None or shift_op.shift is None:
            continue
        if shift_node.shape != n.shape:
            continue
        linear = Linear(op.weight, shift_op.shift, op.weight_first)
        fused[shift_node.name] = Node(
            shift_node.name, linear, n.inputs, n.shape, shift_node.onnx_name
        )
        removed.add(n.name)
    if not fused:
        return nodes
    return [fused.get(n.name, n) for n in nodes if n.name not in removed]
