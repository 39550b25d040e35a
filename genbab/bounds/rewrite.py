"""Graph rewrites that make a model easier to bound, without changing its values.

:func:`prepare_for_bounds` applies all of them; the verification pipeline calls it
once on the loaded graph before building the bound engine. Rewritten nodes keep
their names where a value is replaced (so properties, consumers and the graph
output still refer to the same values); new intermediate values are named
``"<original>/<part>"``.
"""

from __future__ import annotations

import logging

import torch

from genbab.bounds.attention import SoftmaxDenominator, SoftmaxReciprocal
from genbab.bounds.piecewise import PiecewiseLinear
from genbab.model.graph import Graph, Node
from genbab.model.ops import (
    Gather,
    Linear,
    Reduce,
    Reshape,
    ScaleShift,
    Softmax,
    Unary,
    WeightedSum,
)

logger = logging.getLogger(__name__)

__all__ = [
    "decompose_softmax",
    "merge_relu_sums",
    "prepare_for_bounds",
    "softmax_nodes",
]


def prepare_for_bounds(graph: Graph) -> Graph:
    """Apply every rewrite that helps bound propagation.

    Currently: :func:`decompose_softmax` and :func:`merge_relu_sums`.

    Args:
        graph: A loaded graph (not modified).

    Returns:
        A graph computing the same values with the same input and output names.
    """
    return merge_relu_sums(decompose_softmax(graph))


def merge_relu_sums(graph: Graph) -> Graph:
    """Replace sums of shifted ReLUs of one value by :class:`PiecewiseLinear` nodes.

    Matches, each value read only by the next node,
    ``Reshape(x, shape + [1])`` (ONNX ``Unsqueeze(x, -1)``), then
    ``ScaleShift(shift=-o)`` broadcasting to ``[*shape, K]`` (``- o``), ``relu``,
    and either ``Linear(w [K], c)`` (``MatMul`` by a vector, ``+ c``) or
    ``ScaleShift(scale=w)`` followed by a sum over the last axis: the value
    ``c + sum_k w_k relu(x - o_k)``, a piecewise-linear function of each
    element of ``x`` with breakpoints ``o``. The replacement keeps the name of
    the last node matched; breakpoints are sorted (equal ones merged).

    Args:
        graph: A graph (not modified).

    Returns:
        The rewritten graph (the same graph if nothing matched).
    """
    consumers = graph.consumers()
    replaced: dict[str, Node] = {}  # name of the first node matched -> new node
    dropped: set[str] = set()
    for node in graph.nodes:
        match = _relu_sum(graph, node, consumers)
        if match is None:
            continue
        chain, new = match
        replaced[chain[0]] = new
        dropped.update(chain)
    if not replaced:
        return graph
    nodes: list[Node] = []
    for node in graph.nodes:
        if node.name in replaced:
            nodes.append(replaced[node.name])
        elif node.name not in dropped:
            nodes.append(node)
    logger.debug(
        "merged %d sum(s) of shifted ReLUs into piecewise-linear nodes in %s",
        len(replaced),
        graph.source,
    )
    return Graph(
        graph.input_name, graph.input_shape, nodes, graph.output_name, graph.source
    )


def _only_consumer(name: str, consumers: dict[str, list[Node]], graph: Graph):
    """The single node reading ``name``, or None (also if it is the output)."""
    users = consumers.get(name, [])
    if len(users) != 1 or name == graph.output_name:
        return None
    return users[0]


def _relu_sum(graph: Graph, node: Node, consumers: dict[str, list[Node]]):
    """``(names matched, replacement)`` if a ReLU sum starts at ``node``."""
    op = node.op
    if not isinstance(op, Reshape) or len(node.inputs) != 1:
        return None
    x = node.inputs[0]
    shape = _shape_of(graph, x)
    if tuple(node.shape) != (*shape, 1):
        return None
    sub = _only_consumer(node.name, consumers, graph)
    if sub is None or not isinstance(sub.op, ScaleShift) or sub.op.scale is not None:
        return None
    shift = sub.op.shift
    if shift is None or shift.dim() != 1 or sub.shape != (*shape, shift.numel()):
        return None
    relu = _only_consumer(sub.name, consumers, graph)
    if not (isinstance(relu, Node) and isinstance(relu.op, Unary)):
        return None
    if relu.op.func != "relu":
        return None
    tail = _weighted_sum(graph, relu, shape, shift.numel(), consumers)
    if tail is None:
        return None
    names, weights, bias = tail
    op_new = _piecewise(-shift, weights, bias)
    last = graph.node(names[-1])
    new = Node(last.name, op_new, (x,), tuple(shape), last.onnx_name)
    return [node.name, sub.name, relu.name, *names], new


def _weighted_sum(graph, relu: Node, shape, K: int, consumers):
    """``(names, w [K], c)`` of the weighted sum over the last axis after
    ``relu``, or None."""
    nxt = _only_consumer(relu.name, consumers, graph)
    if nxt is None:
        return None
    op = nxt.op
    if isinstance(op, Linear) and not op.weight_first and op.weight.dim() == 1:
        if op.weight.numel() != K or nxt.shape != tuple(shape):
            return None
        bias = op.bias
        if bias is not None and bias.numel() != 1:
            return None
        c = op.weight.new_zeros(()) if bias is None else bias.reshape(())
        return [nxt.name], op.weight, c
    if isinstance(op, ScaleShift) and op.shift is None and op.scale is not None:
        w = op.scale
        if w.dim() != 1 or w.numel() != K:
            return None
        red = _only_consumer(nxt.name, consumers, graph)
        if red is None or not isinstance(red.op, Reduce) or red.op.mean:
            return None
        last_axis = len(shape)
        if red.op.axes != (last_axis,) or red.op.keepdims:
            return None
        return [nxt.name, red.name], w, w.new_zeros(())
    return None


def _piecewise(offsets, weights, bias) -> PiecewiseLinear:
    """The op with sorted breakpoints (weights of equal ones added)."""
    order = torch.argsort(offsets)
    o, w = offsets[order], weights[order]
    unique, inverse = torch.unique_consecutive(o, return_inverse=True)
    merged = w.new_zeros(unique.numel()).index_add_(0, inverse, w)
    return PiecewiseLinear(unique, merged, bias)


def decompose_softmax(graph: Graph) -> Graph:
    """Replace every :class:`Softmax` node by differences, exp-sum and reciprocal.

    Uses ``softmax_i = 1 / (1 + sum_{j != i} exp(x_j - x_i))``: every exp
    argument is a difference (numerically safe, and bounded by CROWN as one
    value, which keeps the correlation of ``x_j`` and ``x_i``), the
    denominator is at least 1, and the result lies in ``(0, 1]``.

    Args:
        graph: A graph (not modified).

    Returns:
        The rewritten graph; the last node of each replacement keeps the softmax
        node's name.
    """
    nodes: list[Node] = []
    count = 0
    device, dtype = _constants_device(graph)
    for node in graph.nodes:
        if isinstance(node.op, Softmax):
            shape = _shape_of(graph, node.inputs[0])
            nodes += softmax_nodes(node, shape, device, dtype)
            count += 1
        else:
            nodes.append(node)
    if count:
        logger.debug("decomposed %d softmax node(s) in %s", count, graph.source)
    return Graph(
        graph.input_name, graph.input_shape, nodes, graph.output_name, graph.source
    )


def softmax_nodes(
    node: Node,
    in_shape: tuple[int, ...],
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> list[Node]:
    """The nodes computing ``node``'s softmax, in order, the last named like it.

    For an input of shape ``[.., n, ..]`` (``n`` at the axis) the differences
    ``x_j - x_i``, ``j != i``, have shape ``[.., n, n - 1, ..]``.

    Args:
        node: A node whose op is :class:`Softmax`.
        in_shape: Shape of its input (one sample).
        device: Device of the new nodes' constants (the graph's).
        dtype: Floating dtype of the new nodes' constants (the graph's).
    """
    op = node.op
    assert isinstance(op, Softmax)
    axis, n, x = op.axis, in_shape[op.axis], node.inputs[0]
    name, src = node.name, node.onnx_name

    def make(part: str, new_op, inputs, shape) -> Node:
        full = name if part == "" else f"{name}/{part}"
        return Node(full, new_op, tuple(inputs), tuple(shape), src)

    if n == 1:  # softmax of one entry is 1
        zero = torch.zeros((), dtype=dtype, device=device)
        one = ScaleShift(zero, zero + 1)
        return [make("", one, [x], in_shape)]
    pair = (*in_shape[:axis], n, n - 1, *in_shape[axis + 1 :])
    column = (*in_shape[:axis], n, 1, *in_shape[axis + 1 :])
    others = torch.tensor(
        [[j for j in range(n) if j != i] for i in range(n)],
        dtype=torch.int64,
        device=device,
    )
    nodes = [make("others", Gather(axis, others), [x], pair)]
    nodes.append(make("self", Reshape(column), [x], column))
    diff = WeightedSum((1.0, -1.0))
    nodes.append(make("diff", diff, [nodes[0].name, nodes[1].name], pair))
    denominator = SoftmaxDenominator(axis + 1)
    nodes.append(make("denominator", denominator, [nodes[2].name], in_shape))
    nodes.append(make("", SoftmaxReciprocal(), [nodes[3].name], in_shape))
    return nodes


def _constants_device(graph: Graph) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of the graph's constants (CPU, float32 if none)."""
    for node in graph.nodes:
        for t in node.op.tensors().values():
            if t.is_floating_point():
                return t.device, t.dtype
    return torch.device("cpu"), torch.float32


def _shape_of(graph: Graph, name: str) -> tuple[int, ...]:
    return graph.input_shape if name == graph.input_name else graph.node(name).shape
