"""Small types shared by the ONNX importer and its operator handlers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper

from genbab.errors import UnsupportedOperatorError


@dataclass(frozen=True)
class Var:
    """A value that depends on the graph input.

    Attributes:
        name: Name of the graph value (the graph input or a node).
        shape: Its shape for one sample.
    """

    name: str
    shape: tuple[int, ...]


Value = Var | np.ndarray
"""What an ONNX value is during import: a variable or a folded constant."""


class OnnxNode:
    """An ONNX node with decoded attributes and a readable name.

    Attributes:
        proto: The ONNX node.
        op_type: Its operator.
        name: Its name, or its first output's name when it has none.
        opset: The model's opset version of the default domain.
    """

    def __init__(self, proto: onnx.NodeProto, opset: int) -> None:
        self.proto = proto
        self.op_type = proto.op_type
        self.name = proto.name or (proto.output[0] if proto.output else proto.op_type)
        self.opset = opset
        self._attrs = {a.name: helper.get_attribute_value(a) for a in proto.attribute}

    def attr(self, name: str, default: Any = None) -> Any:
        """An attribute's value (strings decoded, lists as tuples)."""
        value = self._attrs.get(name, default)
        if isinstance(value, bytes):
            return value.decode()
        if isinstance(value, list):
            return tuple(value)
        return value

    def unsupported(self, detail: str) -> UnsupportedOperatorError:
        """The error to raise for an unsupported case of this node."""
        return UnsupportedOperatorError(self.op_type, self.name, detail)
