"""Load an ONNX model (``.onnx`` or ``.onnx.gz``) into genbab's :class:`Graph`.

The import runs in four phases:

1. read and decode the file (gzip transparently);
2. order the nodes the output needs, find which values depend on the graph
   input, and reject unsupported operators before any other work;
3. walk the nodes: values that do not depend on the input are computed at once
   with onnx's reference evaluator (constant folding; ``Shape`` of a variable is
   a constant because shapes are static with batch 1); the others are mapped to
   :mod:`genbab.model.ops` by the handlers of
   :mod:`genbab.model.onnx_handlers`, each new node evaluated once on zeros to
   record and check its shape;
4. drop nodes the output does not need, recognise exported GELU chains and
   fold ``MatMul`` + ``Add`` into one :class:`~genbab.model.ops.Linear`.
"""

from __future__ import annotations

import gzip
import logging
import os
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch import Tensor

from genbab.errors import ModelError, UnsupportedOperatorError
from genbab.model.graph import Graph, Node
from genbab.model.onnx_handlers import HANDLERS
from genbab.model.onnx_node import OnnxNode, Value, Var
from genbab.model.onnx_patterns import fuse_gelu, fuse_linear_bias
from genbab.model.ops import Identity, Op

logger = logging.getLogger(__name__)

_FLOAT_TYPES = {
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.DOUBLE,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.BFLOAT16,
}
_SHAPE_OPS = {"Shape", "Size"}


def load_model(path: str | os.PathLike[str]) -> Graph:
    """Load an ONNX model into a :class:`Graph`.

    Args:
        path: A ``.onnx`` file, or a gzipped one (``.onnx.gz``).

    Returns:
        The graph; its input shape is the ONNX input shape with dynamic
        dimensions set to 1.

    Raises:
        ModelError: The file is missing or is not a valid ONNX model, or the
            model does not have one input and one output.
        UnsupportedOperatorError: An operator or attribute is not supported.
    """
    source = os.fspath(path)
    model = _read_model(source)
    graph = _Converter(model, source).run()
    logger.debug("loaded %s: %d nodes", source, len(graph.nodes))
    return graph


def _read_model(path: str) -> onnx.ModelProto:
    """Read and decode the file; every failure is a one-line ModelError."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ModelError(f"{path}: model file not found") from None
    except OSError as e:
        raise ModelError(f"{path}: cannot read model file: {e.strerror}") from None
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise ModelError(f"{path}: corrupt gzip data: {e}") from None
    try:
        model = onnx.load_from_string(data)
    except Exception as e:  # protobuf raises its own DecodeError types
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelError(f"{path}: not a valid ONNX model: {detail}") from None
    if not model.HasField("graph") or not model.graph.node:
        raise ModelError(f"{path}: not a valid ONNX model: no graph nodes")
    return model


def _static_shape(vi: onnx.ValueInfoProto) -> tuple[int | None, ...] | None:
    """Declared shape with symbolic dims as None, or None if none is declared."""
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    return tuple(d.dim_value if d.dim_value > 0 else None for d in t.shape.dim)


class _Converter:
    """Turns one ONNX model into a Graph (see the module docstring)."""

    def __init__(self, model: onnx.ModelProto, source: str) -> None:
        self.model = model
        self.source = source
        g = model.graph
        self.opset = next(
            (o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1
        )
        self.values: dict[str, Value] = {
            t.name: numpy_helper.to_array(t) for t in g.initializer
        }
        self.samples: dict[str, Tensor] = {}
        self.nodes: list[Node] = []
        self.taken: set[str] = set()
        self.declared = {vi.name: vi for vi in [*g.value_info, *g.output]}

    # ------------------------------------------------------------ for handlers
    def add(
        self, node: OnnxNode, op: Op, inputs: Sequence[Var], suffix: str = ""
    ) -> Var:
        """Append a graph node computing ``op`` on ``inputs``; return its value.

        The op is evaluated once on zero inputs to get (and check) its shape.
        """
        name = self._unique(node.name + suffix)
        with torch.no_grad():
            try:
                out = op.forward(*(self.samples[v.name] for v in inputs))
            except Exception as e:  # any torch error means inconsistent shapes
                raise ModelError(
                    f"{self.source}: node '{node.name}' ({node.op_type}) cannot be "
                    f"evaluated on inputs of shapes "
                    f"{[v.shape for v in inputs]}: {str(e).splitlines()[0]}"
                ) from None
        self.samples[name] = out
        shape = tuple(out.shape)
        self.nodes.append(
            Node(name, op, tuple(v.name for v in inputs), shape, node.name)
        )
        return Var(name, shape)

    def error(self, node: OnnxNode, detail: str) -> ModelError:
        """A ModelError about ``node`` naming the model file."""
        return ModelError(
            f"{self.source}: node '{node.name}' ({node.op_type}): {detail}"
        )

    # ------------------------------------------------------------ driver
    def run(self) -> Graph:
        input_vi, output_name = self._interface()
        order = self._needed_nodes(output_name)
        self._check_supported(order, input_vi.name)

        shape = tuple(
            d.dim_value if d.dim_value > 0 else 1
            for d in input_vi.type.tensor_type.shape.dim
        )
        self.taken.add(input_vi.name)
        self.values[input_vi.name] = Var(input_vi.name, shape)
        self.samples[input_vi.name] = torch.zeros(shape)
        needed = {i for n in order for i in n.input} | {output_name}
        for proto in order:
            self._convert(OnnxNode(proto, self.opset), needed)

        out = self.values[output_name]
        if not isinstance(out, Var):
            raise ModelError(
                f"{self.source}: the output '{output_name}' does not depend on the "
                "input"
            )
        if out.name == input_vi.name:
            node = OnnxNode(helper.make_node("Identity", [], [output_name]), 0)
            out = self.add(node, Identity(), [out])

        nodes = _prune(self.nodes, out.name)
        nodes = fuse_linear_bias(fuse_gelu(nodes, out.name), out.name)
        return Graph(input_vi.name, shape, nodes, out.name, self.source)

    def _interface(self) -> tuple[onnx.ValueInfoProto, str]:
        """The single non-initializer input and the single output name."""
        g = self.model.graph
        inputs = [i for i in g.input if i.name not in self.values]
        if len(inputs) != 1:
            names = ", ".join(i.name for i in inputs) or "none"
            raise ModelError(
                f"{self.source}: expected exactly one graph input, found "
                f"{len(inputs)} ({names})"
            )
        if len(g.output) != 1:
            raise ModelError(
                f"{self.source}: expected exactly one graph output, found "
                f"{len(g.output)}"
            )
        if not inputs[0].type.tensor_type.HasField("shape"):
            raise ModelError(
                f"{self.source}: the input '{inputs[0].name}' has no declared shape"
            )
        elem = inputs[0].type.tensor_type.elem_type
        if elem not in _FLOAT_TYPES:
            raise ModelError(
                f"{self.source}: the input '{inputs[0].name}' is not a float tensor "
                f"(type {onnx.TensorProto.DataType.Name(elem)})"
            )
        return inputs[0], g.output[0].name

    def _needed_nodes(self, output: str) -> list[onnx.NodeProto]:
        """The nodes ``output`` depends on, in topological order.

        The file's order is kept when it is topological (ONNX requires it);
        otherwise the order of a depth-first search is used.
        """
        producer: dict[str, onnx.NodeProto] = {}
        for n in self.model.graph.node:
            for o in n.output:
                if o:
                    producer[o] = n
        order: list[onnx.NodeProto] = []
        state: dict[int, int] = {}  # id(node) -> 1 visiting, 2 done
        stack: list[tuple[onnx.NodeProto, bool]] = []
        if output in producer:
            stack.append((producer[output], False))
        while stack:
            n, expanded = stack.pop()
            if expanded:
                state[id(n)] = 2
                order.append(n)
                continue
            if state.get(id(n)) == 2:
                continue
            if state.get(id(n)) == 1:
                raise ModelError(f"{self.source}: the graph has a cycle at '{n.name}'")
            state[id(n)] = 1
            stack.append((n, True))
            for i in n.input:
                p = producer.get(i)
                if p is not None and state.get(id(p)) != 2:
                    stack.append((p, False))

        in_file = [n for n in self.model.graph.node if id(n) in state]
        seen: set[str] = set()
        for n in in_file:
            if any(i in producer and i not in seen for i in n.input):
                return order
            seen.update(n.output)
        return in_file

    def _check_supported(self, order: list[onnx.NodeProto], input_name: str) -> None:
        """Raise for any operator that acts on a variable and has no handler."""
        variable = {input_name}
        for n in order:
            name = n.name or (n.output[0] if n.output else n.op_type)
            if n.domain not in ("", "ai.onnx"):
                raise UnsupportedOperatorError(
                    n.op_type, name, f"operator domain '{n.domain}'"
                )
            if not any(i in variable for i in n.input) or n.op_type in _SHAPE_OPS:
                continue
            if n.op_type not in HANDLERS:
                raise UnsupportedOperatorError(
                    n.op_type, name, "no conversion for inputs that depend on the input"
                )
            variable.update(n.output)

    def _convert(self, node: OnnxNode, needed: set[str]) -> None:
        """Fold or map one ONNX node and bind its outputs."""
        proto = node.proto
        args: list[Value | None] = []
        for i in proto.input:
            if not i:
                args.append(None)
            elif i in self.values:
                args.append(self.values[i])
            else:
                raise ModelError(
                    f"{self.source}: node '{node.name}' reads '{i}', which is "
                    "neither an input, an initializer nor a node output"
                )
        if not any(isinstance(a, Var) for a in args):
            results: list[Value] = self._fold(node, args)
        elif node.op_type in _SHAPE_OPS:
            results = [_shape_value(node, args[0])]
        else:
            out = HANDLERS[node.op_type](self, node, args)
            results = out if isinstance(out, list) else [out]
        for k, name in enumerate(proto.output):
            if not name:
                continue
            if k < len(results):
                self._bind(node, name, results[k])
            elif name in needed:
                raise node.unsupported(f"output {k} ('{name}') is used")

    def _fold(self, node: OnnxNode, args: list[Value | None]) -> list[Value]:
        """Evaluate a node whose inputs are all constants."""
        from onnx.reference import ReferenceEvaluator

        proto = node.proto
        feeds = {i: a for i, a in zip(proto.input, args, strict=True) if i}
        outputs = [o for o in proto.output if o]
        func = helper.make_function(
            "genbab.fold",
            "fold",
            list(feeds),
            outputs,
            [proto],
            list(self.model.opset_import),
        )
        try:
            values = ReferenceEvaluator(func).run(None, feeds, attributes={})
        except Exception as e:
            raise self.error(
                node, f"constant folding failed: {str(e).splitlines()[0]}"
            ) from None
        by_name = dict(zip(outputs, values, strict=True))
        return [np.asarray(by_name[o]) if o else np.zeros(0) for o in proto.output]

    def _bind(self, node: OnnxNode, name: str, value: Value) -> None:
        """Bind an ONNX value name, checking a variable's declared shape."""
        if isinstance(value, Var) and name in self.declared:
            want = _static_shape(self.declared[name])
            got = value.shape
            if want is not None and (
                len(want) != len(got)
                or any(w is not None and w != g for w, g in zip(want, got, strict=True))
            ):
                raise self.error(
                    node,
                    f"computed shape {got} of '{name}' does not match the declared "
                    f"shape {tuple(w if w else '?' for w in want)}",
                )
        self.values[name] = value

    def _unique(self, name: str) -> str:
        base, k = name, 1
        while name in self.taken:
            k += 1
            name = f"{base}#{k}"
        self.taken.add(name)
        return name


def _shape_value(node: OnnxNode, x: Value | None) -> np.ndarray:
    """``Shape`` or ``Size`` of a variable: a constant (shapes are static)."""
    assert isinstance(x, Var)
    if node.op_type == "Size":
        return np.array(int(np.prod(x.shape)), dtype=np.int64)
    rank = len(x.shape)
    start = node.attr("start", 0)
    end = node.attr("end", rank)
    return np.array(x.shape[slice(start, end)], dtype=np.int64)


def _prune(nodes: list[Node], output: str) -> list[Node]:
    """Keep only the nodes ``output`` depends on."""
    needed = {output}
    kept: list[Node] = []
    for n in reversed(nodes):
        if n.name in needed:
            kept.append(n)
            needed.update(n.inputs)
    kept.reverse()
    return kept
