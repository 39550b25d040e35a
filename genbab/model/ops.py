"""Operations of genbab's graph, each evaluated on one sample with torch.

An :class:`Op` holds the constants and attributes of one node. ``forward`` takes
the node's *variable* inputs (values that depend on the graph input) of one
sample, in ONNX shapes, and returns the output of that sample; batching is done
by ``torch.vmap`` in :class:`~genbab.model.graph.Graph`, so ops never see a batch
dimension of their own.

Ops with ``linear = True`` are affine in their variable inputs jointly:
``forward(*xs) = L(xs) + c``. For them ``abs_forward(*rs)`` applies ``|L|`` (the
elementwise absolute value of the linear map) to non-negative radii ``rs``,
without the constant ``c``; interval arithmetic uses it as
``forward(mid) +- abs_forward(rad)``.

Nonlinear ops that the bound engine relaxes: :class:`Unary` (elementwise
functions), :class:`Mul` (product of two variables), :class:`BilinearMatMul`
(matrix product of two variables) and :class:`Softmax`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor


class Op:
    """Base class of all operations."""

    op_type: ClassVar[str] = "Op"
    linear: ClassVar[bool] = False

    def forward(self, *xs: Tensor) -> Tensor:
        """Evaluate on one sample; ``xs`` are the variable inputs."""
        raise NotImplementedError

    def abs_forward(self, *rs: Tensor) -> Tensor:
        """For linear ops: ``|L|`` applied to non-negative radii, no constant."""
        raise NotImplementedError(f"{self.op_type} is not linear")

    def tensors(self) -> dict[str, Tensor]:
        """The op's constant tensors by attribute name (moved by :meth:`to`)."""
        return {k: v for k, v in vars(self).items() if isinstance(v, Tensor)}

    def to(self, device: torch.device | str, dtype: torch.dtype) -> Op:
        """Return a copy with floating constants on ``device`` in ``dtype``."""
        new = copy.copy(self)
        for k, v in self.tensors().items():
            v = v.to(device)
            if v.is_floating_point():
                v = v.to(dtype)
            setattr(new, k, v)
        return new

    def __repr__(self) -> str:
        return f"{self.op_type}()"


def _gelu(x: Tensor) -> Tensor:
    return torch.nn.functional.gelu(x)


UNARY_FUNCTIONS: dict[str, Callable[[Tensor, float | None], Tensor]] = {
    "relu": lambda x, p: torch.relu(x),
    "leaky_relu": lambda x, p: torch.nn.functional.leaky_relu(x, p),
    "sigmoid": lambda x, p: torch.sigmoid(x),
    "tanh": lambda x, p: torch.tanh(x),
    "atan": lambda x, p: torch.atan(x),
    "sin": lambda x, p: torch.sin(x),
    "cos": lambda x, p: torch.cos(x),
    "exp": lambda x, p: torch.exp(x),
    "log": lambda x, p: torch.log(x),
    "sqrt": lambda x, p: torch.sqrt(x),
    "reciprocal": lambda x, p: torch.reciprocal(x),
    "pow": lambda x, p: torch.pow(x, p),
    "gelu": lambda x, p: _gelu(x),
    "erf": lambda x, p: torch.erf(x),
    "abs": lambda x, p: torch.abs(x),
    "floor": lambda x, p: torch.floor(x),
    "softplus": lambda x, p: torch.nn.functional.softplus(x),
}


class Unary(Op):
    """An elementwise function ``func`` (a key of ``UNARY_FUNCTIONS``).

    Attributes:
        func: Function name, e.g. ``"sigmoid"``.
        param: Its scalar parameter where it has one (the exponent of ``pow``,
            the negative slope of ``leaky_relu``), else None.
    """

    op_type = "Unary"

    def __init__(self, func: str, param: float | None = None) -> None:
        if func not in UNARY_FUNCTIONS:
            raise ValueError(f"unknown elementwise function {func!r}")
        self.func = func
        self.param = param

    def forward(self, *xs: Tensor) -> Tensor:
        (x,) = xs
        return UNARY_FUNCTIONS[self.func](x, self.param)

    def __repr__(self) -> str:
        extra = "" if self.param is None else f", {self.param}"
        return f"Unary({self.func}{extra})"


class Mul(Op):
    """Elementwise product ``x * y`` of two variable inputs (with broadcasting)."""

    op_type = "Mul"

    def forward(self, *xs: Tensor) -> Tensor:
        x, y = xs
        return x * y


class BilinearMatMul(Op):
    """Matrix product ``x @ y`` of two variable inputs (attention)."""

    op_type = "BilinearMatMul"

    def forward(self, *xs: Tensor) -> Tensor:
        x, y = xs
        return torch.matmul(x, y)


class Softmax(Op):
    """Softmax along ``axis`` (normalized to be non-negative)."""

    op_type = "Softmax"

    def __init__(self, axis: int) -> None:
        self.axis = axis

    def forward(self, *xs: Tensor) -> Tensor:
        (x,) = xs
        return torch.softmax(x, dim=self.axis)


_ = math  # used by subclasses below
