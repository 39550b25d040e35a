"""genbab's computation graph: nodes in topological order, evaluated with torch.

Conventions (relied on by ``bounds/``, ``attack/`` and ``bab/``):

* Every tensor of one *sample* has the ONNX shape of that value, with dynamic
  dimensions (``batch_size``) set to 1. The graph's input therefore has a shape
  like ``(1, 784)`` or ``(1, 1, 28, 28)``.
* Batches are a leading extra dimension on top of that: ``Graph.forward`` takes
  ``x`` of shape ``[N, *input_shape]`` and returns ``[N, *output_shape]``.
* Every node has exactly one output, whose value is named like the node
  (a multi-output ONNX node such as Split becomes several nodes).
* Constant subgraphs (shape computations, weights) are folded at load time:
  a node's ``inputs`` name only values that depend on the graph input; constants
  live inside its :class:`~genbab.model.ops.Op`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from genbab.model.ops import Op


@dataclass
class Node:
    """One operation of the graph.

    Attributes:
        name: Unique name; also the name of its output value.
        op: The operation, with its constants and attributes.
        inputs: Names of the variable values it reads, in the operator's order:
            the graph input's name or other nodes' names.
        shape: Output shape of one sample (ONNX shape, dynamic dims as 1).
        onnx_name: Name of the ONNX node it came from (for error messages).
    """

    name: str
    op: Op
    inputs: tuple[str, ...]
    shape: tuple[int, ...]
    onnx_name: str = ""


@dataclass
class Graph:
    """A model as a list of nodes in topological order.

    Attributes:
        input_name: Name of the single graph input.
        input_shape: Shape of one input sample, e.g. ``(1, 784)``.
        nodes: All nodes, topologically sorted (a node's inputs come before it).
        output_name: Name of the node whose value is the graph output.
        source: Path of the ONNX file, for messages.
    """

    input_name: str
    input_shape: tuple[int, ...]
    nodes: list[Node]
    output_name: str
    source: str = ""
    _by_name: dict[str, Node] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self._by_name = {n.name: n for n in self.nodes}

    def node(self, name: str) -> Node:
        """Return the node called ``name``."""
        return self._by_name[name]

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Shape of one output sample, e.g. ``(1, 10)``."""
        return self._by_name[self.output_name].shape

    @property
    def num_inputs(self) -> int:
        """Number of scalar inputs (flattened), as VNN-LIB counts ``X_i``."""
        return _numel(self.input_shape)

    @property
    def num_outputs(self) -> int:
        """Number of scalar outputs (flattened), as VNN-LIB counts ``Y_j``."""
        return _numel(self.output_shape)

    def evaluate_sample(self, x: Tensor) -> dict[str, Tensor]:
        """Evaluate every node on one sample ``x`` of shape ``input_shape``.

        Returns:
            A dict from value name (the input's and every node's) to its value.
        """
        values: dict[str, Tensor] = {self.input_name: x}
        for n in self.nodes:
            values[n.name] = n.op.forward(*(values[i] for i in n.inputs))
        return values

    def forward(self, x: Tensor) -> Tensor:
        """Evaluate the graph on a batch ``x`` of shape ``[N, *input_shape]``.

        Returns:
            The output, shape ``[N, *output_shape]``.
        """
        return self.forward_values(x, [self.output_name])[self.output_name]

    def forward_values(self, x: Tensor, names: list[str]) -> dict[str, Tensor]:
        """Evaluate a batch and return the named values, each ``[N, *shape]``."""

        def one(sample: Tensor) -> tuple[Tensor, ...]:
            values = self.evaluate_sample(sample)
            return tuple(values[k] for k in names)

        outs = torch.vmap(one)(x)
        return dict(zip(names, outs, strict=True))

    def consumers(self) -> dict[str, list[Node]]:
        """Map each value name to the nodes that read it."""
        result: dict[str, list[Node]] = {self.input_name: []}
        for n in self.nodes:
            result.setdefault(n.name, [])
            for i in n.inputs:
                result.setdefault(i, []).append(n)
        return result

    def to(self, device: torch.device | str, dtype: torch.dtype) -> Graph:
        """Return a copy whose constants live on ``device`` with ``dtype``."""
        nodes = [
            Node(n.name, n.op.to(device, dtype), n.inputs, n.shape, n.onnx_name)
            for n in self.nodes
        ]
        return Graph(
            self.input_name, self.input_shape, nodes, self.output_name, self.source
        )


def _numel(shape: tuple[int, ...]) -> int:
    total = 1
    for d in shape:
        total *= d
    return total


Evaluator = Callable[[Tensor], Tensor]
