"""genbab's model: ONNX import and the computation graph."""

from genbab.model.graph import Graph, Node
from genbab.model.onnx_import import load_model

__all__ = ["Graph", "Node", "load_model"]
