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
``forward(mid) +- abs_forward(rad)``. When one value feeds several inputs of
the same node, ``|L|`` is taken per input (sound, possibly loose).

Linear ops: :class:`Linear` (Gemm, MatMul with a constant), :class:`Conv`,
:class:`ConvTranspose`, :class:`ScaleShift` (elementwise affine, BatchNorm),
:class:`WeightedSum` (Add/Sub of variables), :class:`Reduce`, :class:`AvgPool`
and the structural ops :class:`Identity`, :class:`Reshape`, :class:`Transpose`,
:class:`Select` (Slice, Split, nearest Resize), :class:`Gather`,
:class:`Concat`, :class:`Expand`, :class:`Tile`, :class:`Pad`.

Nonlinear ops that the bound engine relaxes: :class:`Unary` (elementwise
functions), :class:`Mul` (product of two variables), :class:`BilinearMatMul`
(matrix product of two variables) and :class:`Softmax`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
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
        """The op's constant tensors by attribute name (moved by :meth:`to`).

        A tuple of tensors (e.g. :attr:`Select.indices`) is listed as
        ``name[i]`` for each element.
        """
        found: dict[str, Tensor] = {}
        for k, v in vars(self).items():
            if isinstance(v, Tensor):
                found[k] = v
            elif isinstance(v, tuple) and v and all(isinstance(t, Tensor) for t in v):
                found.update({f"{k}[{i}]": t for i, t in enumerate(v)})
        return found

    def to(self, device: torch.device | str, dtype: torch.dtype) -> Op:
        """Return a copy with floating constants on ``device`` in ``dtype``."""

        def move(v: Tensor) -> Tensor:
            v = v.to(device)
            return v.to(dtype) if v.is_floating_point() else v

        new = copy.copy(self)
        for k, v in vars(self).items():
            if isinstance(v, Tensor):
                setattr(new, k, move(v))
            elif isinstance(v, tuple) and v and all(isinstance(t, Tensor) for t in v):
                setattr(new, k, tuple(move(t) for t in v))
        return new

    def __repr__(self) -> str:
        parts = []
        for k, v in vars(self).items():
            if isinstance(v, Tensor):
                parts.append(f"{k}=<{tuple(v.shape)}>")
            elif isinstance(v, tuple) and v and isinstance(v[0], Tensor):
                parts.append(f"{k}=<{len(v)} tensors>")
            else:
                parts.append(f"{k}={v!r}")
        return f"{self.op_type}({', '.join(parts)})"


# --------------------------------------------------------------------------
# Linear ops with weights
# --------------------------------------------------------------------------


class Linear(Op):
    """Matrix product with a constant: ``x @ weight + bias`` or ``weight @ x + bias``.

    Follows ``torch.matmul`` (= ONNX MatMul) broadcasting, so ``x`` may be 1-D or
    carry leading dimensions. Gemm's ``alpha``/``beta``/transposes are folded in.

    Attributes:
        weight: The constant matrix (or stack of matrices).
        bias: Added after the product (broadcast), or None.
        weight_first: If True the product is ``weight @ x``.
    """

    op_type = "Linear"
    linear = True

    def __init__(
        self, weight: Tensor, bias: Tensor | None = None, weight_first: bool = False
    ) -> None:
        self.weight = weight
        self.bias = bias
        self.weight_first = weight_first

    def _product(self, x: Tensor, w: Tensor) -> Tensor:
        return torch.matmul(w, x) if self.weight_first else torch.matmul(x, w)

    def forward(self, *xs: Tensor) -> Tensor:
        (x,) = xs
        y = self._product(x, self.weight)
        return y if self.bias is None else y + self.bias

    def abs_forward(self, *rs: Tensor) -> Tensor:
        (r,) = rs
        y = self._product(r, self.weight.abs())
        return y if self.bias is None else y + torch.zeros_like(self.bias)


def _pad_pairs(pads: Sequence[int]) -> list[int]:
    """ONNX pads ``(b1, .., bn, e1, .., en)`` as ``F.pad``'s last-dim-first list."""
    n = len(pads) // 2
    out: list[int] = []
    for d in reversed(range(n)):
        out += [pads[d], pads[d + n]]
    return out


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


class Conv(Op):
    """N-d convolution (1 to 3 spatial dims), ONNX ``Conv`` semantics.

    Attributes:
        weight: ``[C_out, C_in / groups, *kernel]``.
        bias: ``[C_out]`` or None.
        strides, dilations: One entry per spatial dim.
        pads: ONNX order ``(begin_1, .., begin_n, end_1, .., end_n)``, explicit
            (``auto_pad`` resolved at load time).
        groups: Number of groups.
    """

    op_type = "Conv"
    linear = True

    def __init__(
        self,
        weight: Tensor,
        bias: Tensor | None,
        strides: tuple[int, ...],
        pads: tuple[int, ...],
        dilations: tuple[int, ...],
        groups: int = 1,
    ) -> None:
        self.weight = weight
        self.bias = bias
        self.strides = strides
        self.pads = pads
        self.dilations = dilations
        self.groups = groups

    def _conv(self, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        n = len(self.strides)
        begin, end = self.pads[:n], self.pads[n:]
        if begin == end:
            padding: tuple[int, ...] = begin
        else:
            x = F.pad(x, _pad_pairs(self.pads))
            padding = (0,) * n
        return _CONV[n](x, w, b, self.strides, padding, self.dilations, self.groups)

    def forward(self, *xs: Tensor) -> Tensor:
        (x,) = xs
        return self._conv(x, self.weight, self.bias)

    def abs_forward(self, *rs: Tensor) -> Tensor:
        (r,) = rs
        return self._conv(r, self.weight.abs(), None)


class ConvTranspose(Op):
    """N-d transposed convolution, ONNX ``ConvTranspose`` semantics.

    Computed as the unpadded transposed convolution, then cropped by ``pads``
    and extended by ``output_padding`` at the end of each spatial dim.

    Attributes:
        weight: ``[C_in, C_out / groups, *kernel]``.
        bias: ``[C_out]`` or None.
        strides, dilations, output_padding: One entry per spatial dim.
        pads: ONNX order ``(begin_1, .., begin_n, end_1, .., end_n)``.
        groups: Number of groups.
    """

    op_type = "ConvTranspose"
    linear = True

    def __init__(
        self,
        weight: Tensor,
        bias: Tensor | None,
        strides: tuple[int, ...],
        pads: tuple[int, ...],
        output_padding: tuple[int, ...],
        dilations: tuple[int, ...],
        groups: int = 1,
    ) -> None:
        self.weight = weight
        self.bias = bias
        self.strides = strides
        self.pads = pads
        self.output_padding = output_padding
        self.dilations = dilations
        self.groups = groups

    def _conv(self, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        n = len(self.strides)
        y = _CONV_T[n](x, w, None, self.strides, 0, 0, self.groups, self.dilations)
        crop = [
            -p if i < n else -p + self.output_padding[i - n]
            for i, p in enumerate(self.pads)
        ]
        if any(crop):
            y = F.pad(y, _pad_pairs(crop))
        if b is not None:
            y = y + b.reshape(-1, *([1] * n))
        return y

    def forward(self, *xs: Tensor) -> Tensor:
        (x,) = xs
        return self._conv(x, self.weight, self.bias)

    def abs_forward(self, *rs: Tensor) -> Tensor:
        (r,) = rs
        return self._conv(r, self.weight.abs(), None)


class ScaleShift(Op):
    """Elementwise affine map ``x * scale + shift`` with broadcasting.

    Covers Add/Sub/Mul/Div by a constant, Neg and inference BatchNormalization.

    Attributes:
        scale: Broadcastable constant, or None for 1.
        shift: Broadcastable constant, or None for 0.
    """

    op_type = "ScaleShift"
    linear = True

    def __init__(self, scale: Tensor | None, shift: Tensor | None) -> None:
        self.scale = scale
        self.shift = shift

    def forward(self, *xs: Tensor) -> Tensor:
        (x,) = xs
        y = x if self.scale is None else x * self.scale
        return y if self.shift is None else y + self.shift

    def abs_forward(self, *rs: Tensor) -> Tensor:
        (r,) = rs
        y = r if self.scale is None else r * self.scale.abs()
        return y if self.shift is None else y + torch.zeros_like(self.shift)


class WeightedSum(Op):
    """``sum_i weights[i] * xs[i]`` of variable inputs, with broadcasting.

    Attributes:
        weights: One float per input, e.g. ``(1.0, -1.0)`` for ``x - y``.
    """

    op_type = "WeightedSum"
    linear = True

    def __init__(self, weights: tuple[float, ...]) -> None:
        self.weights = weights

    @staticmethod
    def _combine(xs: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
        total = xs[0] if weights[0] == 1.0 else xs[0] * weights[0]
        for x, w in zip(xs[1:], weights[1:], strict=True):
            if w == 1.0:
                total = total + x
            elif w == -1.0:
                total = total - x
            else:
                total = total + x * w
        return total

    def forward(self, *xs: Tensor) -> Tensor:
        return self._combine(xs, self.weights)

    def abs_forward(self, *rs: Tensor) -> Tensor:
        return self._combine(rs, [abs(w) for w in self.weights])


class Reduce(Op):
    """Sum or mean over ``axes``.

    Attributes:
        axes: Non-negative axes to reduce.
        keepdims: Keep reduced axes with size 1.
        mean: Mean instead of sum.
    """

    op_type = "Reduce"
    linear = True

    def __init__(self, axes: tuple[int, ...], keepdims: bool, mean: bool) -> None:
        self.axes = axes
        self.keepdims = keepdims
        self.mean = mean

    def forward(self, *xs: Tensor) -> Tensor:
        (x,) = xs
        if self.mean:
            return torch.mean(x, dim=self.axes, keepdim=self.keepdims)
        return torch.sum(x, dim=self.axes, keepdim=self.keepdims)

    def abs_forward(self, *rs: Tensor) -> Tensor:
        return self.forward(*rs)


_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


class AvgPool(Op):
    """Average pooling with symmetric padding (ONNX ``AveragePool``).

    Attributes:
        kernel, strides, padding: One entry per spatial dim.
        count_include_pad: Whether padded zeros count in the average.
    """

    op_type = "AvgPool"
    linear = True

    def __init__(
        self,
        kernel: tuple[int, ...],
        strides: tuple[int, ...],
        padding: tuple[int, ...],
        count_include_pad: bool,
    ) -> None:
        self.kernel = kernel
        self.strides = strides
        self.padding = padding
        self.count_include_pad = count_include_pad

    def forward(self, *xs: Tensor) -> Tensor:
        (x,) = xs
        pool = _AVG_POOL[len(self.kernel)]
        return pool(
            x,
            self.kernel,
            self.strides,
            self.padding,
            count_include_pad=self.count_include_pad,
        )

    def abs_forward(self, *rs: Tensor) -> Tensor:
        return self.forward(*rs)


# --------------------------------------------------------------------------
# Structural linear ops (each output entry is one input entry or a constant)
# --------------------------------------------------------------------------


class _Structural(Op):
    """A structural op without constants: ``|L| = L``."""

    linear = True

    def abs_forward(self, *rs: Tensor) -> Tensor:
        return self.forward(*rs)


class Identity(_Structural):
    """Returns its input (used only where a node is needed, e.g. the output)."""

    op_type = "Identity"

    def forward(self, *xs: Tensor) -> Tensor:
        (x,) = xs
        return x


class Reshape(_Structural):
    """Reshape to a fixed ``shape`` (Reshape, Flatten, Squeeze, Unsqueeze).

    Attributes:
        shape: The output shape, fully resolved (no 0 or -1).
    """

    op_type = "Reshape"

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape

    def forward(self, *xs: Tensor) -> Tensor:
        (x,) = xs
        return x.reshape(self.shape)


class Transpose(_Structural):
    """Permute dimensions.

    Attributes:
        perm: The permutation, as in ONNX and ``torch.permute``.
    """

    op_type = "Transpose"

    def __init__(self, perm: tuple[int, ...]) -> None:
        self.perm = perm

    def forward(self, *xs: Tensor) -> Tensor:
        (x,) = xs
        return x.permute(self.perm)


class Select(_Structural):
    """Pick entries along several axes by index lists (repeats allowed).

    Slice (any steps), each part of Split, and nearest-neighbour
    Upsample/Resize become ``Select``.

    Attributes:
        axes: Non-negative axes, one per index list.
        indices: 1-D ``int64`` tensors; output size along ``axes[k]`` is
            ``len(indices[k])``.
    """

    op_type = "Select"

    def __init__(self, axes: tuple[int, ...], indices: tuple[Tensor, ...]) -> None:
        self.axes = axes
        self.indices = indices

    def forward(self, *xs: Tensor) -> Tensor:
        (x,) = xs
        for axis, idx in zip(self.axes, self.indices, strict=True):
            x = torch.index_select(x, axis, idx)
        return x


class Gather(_Structural):
    """ONNX ``Gather`` with constant indices along one axis.

    Output shape is ``shape[:axis] + indices.shape + shape[axis + 1:]``.

    Attributes:
        axis: Non-negative axis.
        indices: ``int64`` tensor of non-negative indices, any shape (0-d drops
            the axis).
    """

    op_type = "Gather"

    def __init__(self, axis: int, indices: Tensor) -> None:
        self.axis = axis
        self.indices = indices

    def forward(self, *xs: Tensor) -> Tensor:
        (x,) = xs
        picked = torch.index_select(x, self.axis, self.indices.reshape(-1))
        shape = x.shape[: self.axis] + self.indices.shape + x.shape[self.axis + 1 :]
        return picked.reshape(shape)


class Concat(Op):
    """Concatenation of variable inputs and constant parts along ``axis``.

    Attributes:
        axis: Non-negative axis.
        layout: One ``(source, size)`` per part in order: ``source`` is the index
            of a variable input, or -1 for the next slice of ``constant``.
        constant: The constant parts concatenated along ``axis``, or None.
    """

    op_type = "Concat"
    linear = True

    def __init__(
        self,
        axis: int,
        layout: tuple[tuple[int, int], ...],
        constant: Tensor | None = None,
    ) -> None:
        self.axis = axis
        self.layout = layout
        self.constant = constant

    def _cat(self, xs: Sequence[Tensor], constant: Tensor | None) -> Tensor:
        parts: list[Tensor] = []
        offset = 0
        for source, size in self.layout:
            if source >= 0:
                parts.append(xs[source])
            else:
                assert constant is not None
                parts.append(constant.narrow(self.axis, offset, size))
                offset += size
        return torch.cat(parts, dim=self.axis)

    def forward(self, *xs: Tensor) -> Tensor:
        return self._cat(xs, self.constant)

    def abs_forward(self, *rs: Tensor) -> Tensor:
        zero = None if self.constant is None else torch.zeros_like(self.constant)
        return self._cat(rs, zero)


class Expand(_Structural):
    """Broadcast to ``shape`` (ONNX ``Expand``, resolved at load time).

    Attributes:
        shape: The output shape.
    """

    op_type = "Expand"

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape

    def forward(self, *xs: Tensor) -> Tensor:
        (x,) = xs
        return x.expand(self.shape)


class Tile(_Structural):
    """Repeat the whole tensor ``repeats[d]`` times along each dim ``d``.

    Attributes:
        repeats: One count per dim.
    """

    op_type = "Tile"

    def __init__(self, repeats: tuple[int, ...]) -> None:
        self.repeats = repeats

    def forward(self, *xs: Tensor) -> Tensor:
        (x,) = xs
        return x.repeat(self.repeats)


class Pad(Op):
    """Constant padding (negative pads crop).

    Attributes:
        pads: ONNX order ``(begin_1, .., begin_n, end_1, .., end_n)``.
        value: The fill value (the op's constant term).
    """

    op_type = "Pad"
    linear = True

    def __init__(self, pads: tuple[int, ...], value: float = 0.0) -> None:
        self.pads = pads
        self.value = value

    def forward(self, *xs: Tensor) -> Tensor:
        (x,) = xs
        return F.pad(x, _pad_pairs(self.pads), value=self.value)

    def abs_forward(self, *rs: Tensor) -> Tensor:
        (r,) = rs
        return F.pad(r, _pad_pairs(self.pads), value=0.0)


# --------------------------------------------------------------------------
# Nonlinear ops
# --------------------------------------------------------------------------


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
    "softplus": lambda x, p: torch.logaddexp(x, torch.zeros_like(x)),
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


__all__ = [
    "UNARY_FUNCTIONS",
    "AvgPool",
    "BilinearMatMul",
    "Concat",
    "Conv",
    "ConvTranspose",
    "Expand",
    "Gather",
    "Identity",
    "Linear",
    "Mul",
    "Op",
    "Pad",
    "Reduce",
    "Reshape",
    "ScaleShift",
    "Select",
    "Softmax",
    "Tile",
    "Transpose",
    "Unary",
    "WeightedSum",
]
