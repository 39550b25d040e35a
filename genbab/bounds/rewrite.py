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
from genbab.model.graph import Graph, Node
from genbab.model.ops import (
    Gather,
    Reshape,
    ScaleShift,
    Softmax,
    WeightedSum,
)

logger = logging.getLogger(__name__)

__all__ = ["decompose_softmax", "prepare_for_bounds", "softmax_nodes"]


def prepare_for_bounds(graph: Graph) -> Graph:
    """Apply every rewrite that helps bound propagation.

    Currently: :func:`decompose_softmax`.

    Args:
        graph: A loaded graph (not modified).

    Returns:
        A graph computing the same values with the same input and output names.
    """
    return decompose_softmax(graph)


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
