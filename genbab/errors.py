"""Exceptions raised by genbab.

Every error a user can cause derives from :class:`GenbabError`; its message names
the file, line, node or operator involved, so the CLI can print it on one line.
"""

from __future__ import annotations


class GenbabError(Exception):
    """Base class of all errors genbab raises on purpose."""


class ConfigError(GenbabError):
    """An option file or ``--set`` override is invalid (unknown key, bad value)."""


class ModelError(GenbabError):
    """An ONNX model cannot be read or evaluated."""


class UnsupportedOperatorError(ModelError):
    """The model uses an ONNX operator (or attribute) genbab does not support."""

    def __init__(self, op_type: str, node_name: str, detail: str = "") -> None:
        self.op_type = op_type
        self.node_name = node_name
        msg = f"unsupported operator {op_type} at node '{node_name}'"
        if detail:
            msg += f": {detail}"
        super().__init__(msg)


class SpecError(GenbabError):
    """A VNN-LIB property cannot be read, or does not fit the model."""


class VNNLibParseError(SpecError):
    """A syntax error in a VNN-LIB file, with its position."""

    def __init__(self, path: str, line: int, column: int, message: str) -> None:
        self.path = path
        self.line = line
        self.column = column
        super().__init__(f"{path}:{line}:{column}: {message}")


class BoundsError(GenbabError):
    """Bounds cannot be computed soundly (infinite or NaN bounds, invalid domain)."""
