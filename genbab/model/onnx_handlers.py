"""Conversion of ONNX operators acting on variables into genbab ops.

Each handler gets the converter, the node and its resolved inputs (a
:class:`~genbab.model.onnx_node.Var`, a folded ``numpy`` constant, or None for
an absent optional input) and returns the value of each output it supports:
a ``Var`` (new node, or an existing value for no-op nodes) or a list of them.
Handlers only run for nodes with at least one variable input; all-constant
nodes are folded by the importer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import onnx
import torch
from torch import Tensor

from genbab.model.onnx_node import OnnxNode, Value, Var
from genbab.model.ops import (
    AvgPool,
    BilinearMatMul,
    Concat,
    Conv,
    ConvTranspose,
    Expand,
    Gather,
    Linear,
    Mul,
    Pad,
    Reduce,
    Reshape,
    ScaleShift,
    Select,
    Softmax,
    Tile,
    Transpose,
    Unary,
    WeightedSum,
)
from genbab.model.recurrent import lstm
from genbab.model.resize import nearest_indices

if TYPE_CHECKING:
    from genbab.model.onnx_import import _Converter

Args = list[Value | None]
Handler = Callable[["_Converter", OnnxNode, Args], "Var | list[Var]"]


# ------------------------------------------------------------------ helpers
def _f32(a: np.ndarray | float) -> Tensor:
    return torch.as_tensor(np.array(a, dtype=np.float32))


def _i64(a: np.ndarray | Sequence[int]) -> Tensor:
    return torch.as_tensor(np.array(a, dtype=np.int64))


def _var(node: OnnxNode, v: Value | None, what: str = "data input") -> Var:
    if not isinstance(v, Var):
        raise node.unsupported(f"its {what} must depend on the input")
    return v


def _const(node: OnnxNode, v: Value | None, what: str) -> np.ndarray:
    if isinstance(v, Var):
        raise node.unsupported(f"its {what} depends on the input")
    if v is None:
        raise node.unsupported(f"its {what} is missing")
    return v


def _axis(node: OnnxNode, axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise node.unsupported(f"axis {axis} out of range for rank {rank}")
    return axis % rank


def _int_list(node: OnnxNode, args: Args, k: int, attr: str) -> tuple[int, ...] | None:
    """Integers from input ``k`` (newer opsets) or attribute ``attr``."""
    if len(args) > k and args[k] is not None:
        return tuple(int(a) for a in _const(node, args[k], attr).reshape(-1))
    value = node.attr(attr)
    return None if value is None else tuple(int(a) for a in value)


def _spatial(node: OnnxNode, name: str, n: int, default: int) -> tuple[int, ...]:
    value = node.attr(name)
    return (default,) * n if value is None else tuple(int(v) for v in value)


# ------------------------------------------------------------------ elementwise
def _unary(func: str, param: float | None = None) -> Handler:
    def handle(cv: _Converter, node: OnnxNode, args: Args) -> Var:
        return cv.add(node, Unary(func, param), [_var(node, args[0])])

    return handle


def _leaky_relu(cv: _Converter, node: OnnxNode, args: Args) -> Var:
    alpha = float(node.attr("alpha", 0.01))
    return cv.add(node, Unary("leaky_relu", alpha), [_var(node, args[0])])


def _gelu(cv: _Converter, node: OnnxNode, args: Args) -> Var:
    if node.attr("approximate", "none") != "none":
        raise node.unsupported("approximate='tanh'")
    return cv.add(node, Unary("gelu"), [_var(node, args[0])])


def _affine(
    cv: _Converter,
    node: OnnxNode,
    x: Var,
    scale: np.ndarray | float | None,
    shift: np.ndarray | float | None,
    suffix: str = "",
) -> Var:
    """``x * scale + shift``, dropping trivial parts (no node if both are)."""
    shape = x.shape
    for c in (scale, shift):
        if c is not None:
            shape = np.broadcast_shapes(shape, np.shape(c))
    same = tuple(shape) == x.shape
    if scale is not None and same and np.all(np.asarray(scale) == 1):
        scale = None
    if shift is not None and same and np.all(np.asarray(shift) == 0):
        shift = None
    if scale is None and shift is None and same:
        return x
    op = ScaleShift(
        None if scale is None else _f32(scale), None if shift is None else _f32(shift)
    )
    return cv.add(node, op, [x], suffix)


def _neg(cv: _Converter, node: OnnxNode, args: Args) -> Var:
    return _affine(cv, node, _var(node, args[0]), -1.0, None)


def _add_sub(cv: _Converter, node: OnnxNode, args: Args) -> Var:
    a, b = args
    sign = -1.0 if node.op_type == "Sub" else 1.0
    if isinstance(a, Var) and isinstance(b, Var):
        return cv.add(node, WeightedSum((1.0, sign)), [a, b])
    if isinstance(a, Var):
        return _affine(cv, node, a, None, sign * _const(node, b, "second input"))
    x = _var(node, b)
    return _affine(cv, node, x, None if sign > 0 else -1.0, _const(node, a, "input"))


def _sum(cv: _Converter, node: OnnxNode, args: Args) -> Var:
    xs = [_var(node, a, "inputs") for a in args]
    if len(xs) == 1:
        return xs[0]
    return cv.add(node, WeightedSum((1.0,) * len(xs)), xs)


def _mul(cv: _Converter, node: OnnxNode, args: Args) -> Var:
    a, b = args
    if isinstance(a, Var) and isinstance(b, Var):
        if a == b:
            return cv.add(node, Unary("pow", 2.0), [a])
        return cv.add(node, Mul(), [a, b])
    if isinstance(a, Var):
        return _affine(cv, node, a, _const(node, b, "second input"), None)
    return _affine(cv, node, _var(node, b), _const(node, a, "input"), None)


def _div(cv: _Converter, node: OnnxNode, args: Args) -> Var:
    a, b = args
    if not isinstance(b, Var):
        divisor = _const(node, b, "divisor").astype(np.float64)
        return _affine(cv, node, _var(node, a), 1.0 / divisor, None)
    recip = cv.add(node, Unary("reciprocal"), [b], "/recip")
    if isinstance(a, Var):
        return cv.add(node, Mul(), [a, recip])
    return _affine(cv, node, recip, _const(node, a, "dividend"), None)


def _pow(cv: _Converter, node: OnnxNode, args: Args) -> Var:
    x = _var(node, args[0], "base")
    exponent = _const(node, args[1], "exponent").reshape(-1)
    if exponent.size == 0 or np.any(exponent != exponent[0]):
        raise node.unsupported("the exponent must be a single constant")
    p = float(exponent[0])
    if p == 1.0:
        return x
    if p == 0.5:
        return cv.add(node, Unary("sqrt"), [x])
    if p == -1.0:
        return cv.add(node, Unary("reciprocal"), [x])
    return cv.add(node, Unary("pow", p), [x])


def _cast(cv: _Converter, node: OnnxNode, args: Args) -> Var:
    to = node.attr("to")
    if to not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE):
        raise node.unsupported(f"cast of a variable to type {to}")
    return _var(node, args[0])


def _identity(cv: _Converter, node: OnnxNode, args: Args) -> Var:
    return _var(node, args[0])


def _softmax(cv: _Converter, node: OnnxNode, args: Args) -> Var:
    x = _var(node, args[0])
    rank = len(x.shape)
    axis = _axis(node, node.attr("axis", -1 if node.opset >= 13 else 1), rank)
    if node.opset >= 13 or axis == rank - 1:
        return cv.add(node, Softmax(axis), [x])
    # Before opset 13 Softmax normalises over all dims from ``axis`` on.
    flat = x.shape[:axis] + (math.prod(x.shape[axis:]),)
    y = cv.add(node, Reshape(flat), [x], "/flatten")
    y = cv.add(node, Softmax(axis), [y], "/softmax")
    return cv.add(node, Reshape(x.shape), [y])


# ------------------------------------------------------------------ weights
def _matmul(cv: _Converter, node: OnnxNode, args: Args) -> Var:
    a, b = args
    if isinstance(a, Var) and isinstance(b, Var):
        return cv.add(node, BilinearMatMul(), [a, b])
    if isinstance(a, Var):
        return cv.add(node, Linear(_f32(_const(node, b, "B"))), [a])
    w = _f32(_const(node, a, "A"))
    return cv.add(node, Linear(w, weight_first=True), [_var(node, b)])


def _gemm(cv: _Converter, node: OnnxNode, args: Args) -> Var:
    a, b = args[0], args[1]
    c = args[2] if len(args) > 2 else None
    alpha, beta = float(node.attr("alpha", 1.0)), float(node.attr("beta", 1.0))
    trans_a, trans_b = bool(node.attr("transA", 0)), bool(node.attr("transB", 0))
    bias = None if c is None else _f32(beta * _const(node, c, "C").astype(np.float64))
    if isinstance(a, Var) and not isinstance(b, Var):
        w = _const(node, b, "B").astype(np.float64)
        w = alpha * (w.T if trans_b else w)
        x = cv.add(node, Transpose((1, 0)), [a], "/transA") if trans_a else a
        return cv.add(node, Linear(_f32(w), bias), [x])
    if isinstance(b, Var) and not isinstance(a, Var):
        w = _const(node, a, "A").astype(np.float64)
        w = alpha * (w.T if trans_a else w)
        x = cv.add(node, Transpose((1, 0)), [b], "/transB") if trans_b else b
        return cv.add(node, Linear(_f32(w), bias, weight_first=True), [x])
    raise node.unsupported("Gemm of two variables")


def _conv_pads(node: OnnxNode, x: Var, kernel: Sequence[int]) -> tuple[int, ...]:
    """Explicit pads, with ``auto_pad`` resolved from the static input shape."""
    n = len(kernel)
    auto = node.attr("auto_pad", "NOTSET")
    if auto == "NOTSET":
        return _spatial(node, "pads", 2 * n, 0)
    if auto == "VALID":
        return (0,) * (2 * n)
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise node.unsupported(f"auto_pad={auto}")
    strides = _spatial(node, "strides", n, 1)
    dilations = _spatial(node, "dilations", n, 1)
    begin, end = [], []
    for size, k, s, d in zip(x.shape[2:], kernel, strides, dilations, strict=True):
        total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, big = total // 2, total - total // 2
        begin.append(small if auto == "SAME_UPPER" else big)
        end.append(big if auto == "SAME_UPPER" else small)
    return tuple(begin + end)


def _conv(cv: _Converter, node: OnnxNode, args: Args) -> Var:
    x = _var(node, args[0])
    w = _const(node, args[1], "weight")
    b = args[2] if len(args) > 2 and args[2] is not None else None
    n = w.ndim - 2
    if n not in (1, 2, 3) or len(x.shape) != n + 2:
        raise node.unsupported(f"{n}-d convolution of a rank-{len(x.shape)} input")
    op = Conv(
        _f32(w),
        None if b is None else _f32(_const(node, b, "bias")),
        _spatial(node, "strides", n, 1),
        _conv_pads(node, x, w.shape[2:]),
        _spatial(node, "dilations", n, 1),
        int(node.attr("group", 1)),
    )
    return cv.add(node, op, [x])


def _conv_transpose(cv: _Converter, node: OnnxNode, args: Args) -> Var:
    x = _var(node, args[0])
    w = _const(node, args[1], "weight")
    b = args[2] if len(args) > 2 and args[2] is not None else None
    n = w.ndim - 2
    if n not in (1, 2, 3) or len(x.shape) != n + 2:
        raise node.unsupported(f"{n}-d transposed convolution")
    if node.attr("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise node.unsupported(f"auto_pad={node.attr('auto_pad')}")
    if node.attr("output_shape") is not None:
        raise node.unsupported("the output_shape attribute")
    pads = (0,) * (2 * n)
    if node.attr("auto_pad", "NOTSET") == "NOTSET":
        pads = _spatial(node, "pads", 2 * n, 0)
    op = ConvTranspose(
        _f32(w),
        None if b is None else _f32(_const(node, b, "bias")),
        _spatial(node, "strides", n, 1),
        pads,
        _spatial(node, "output_padding", n, 0),
        _spatial(node, "dilations", n, 1),
        int(node.attr("group", 1)),
    )
    return cv.add(node, op, [x])


def _batch_norm(cv: _Converter, node: OnnxNode, args: Args) -> Var:
    if node.attr("training_mode", 0):
        raise node.unsupported("training_mode=1")
    x = _var(node, args[0])
    gamma, beta, mean, var = (
        _const(node, a, what).astype(np.float64)
        for a, what in zip(args[1:5], ("scale", "bias", "mean", "var"), strict=True)
    )
    scale = gamma / np.sqrt(var + float(node.attr("epsilon", 1e-5)))
    shift = beta - mean * scale
    shape = (-1,) + (1,) * (len(x.shape) - 2)
    return _affine(cv, node, x, scale.reshape(shape), shift.reshape(shape))


# ------------------------------------------------------------------ reductions
def _reduce(cv: _Converter, node: OnnxNode, args: Args) -> Var:
    x = _var(node, args[0])
    rank = len(x.shape)
    axes = _int_list(node, args, 1, "axes")
    if not axes:
        if node.attr("noop_with_empty_axes", 0):
            return x
        axes = tuple(range(rank))
    axes = tuple(sorted({_axis(node, a, rank) for a in axes}))
    keepdims = bool(node.attr("keepdims", 1))
    mean = node.op_type == "ReduceMean"
    return cv.add(node, Reduce(axes, keepdims, mean), [x])


def _global_average_pool(cv: _Converter, node: OnnxNode, args: Args) -> Var:
    x = _var(node, args[0])
    axes = tuple(range(2, len(x.shape)))
    return cv.add(node, Reduce(axes, True, True), [x])


def _average_pool(cv: _Converter, node: OnnxNode, args: Args) -> Var:
    x = _var(node, args[0])
    kernel = tuple(int(k) for k in node.attr("kernel_shape"))
    n = len(kernel)
    if node.attr("ceil_mode", 0) or set(_spatial(node, "dilations", n, 1)) != {1}:
        raise node.unsupported("ceil_mode or dilations")
    if node.attr("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise node.unsupported(f"auto_pad={node.attr('auto_pad')}")
    pads = _spatial(node, "pads", 2 * n, 0)
    if pads[:n] != pads[n:] or any(
        2 * p > k for p, k in zip(pads[:n], kernel, strict=True)
    ):
        raise node.unsupported(f"pads {pads} (asymmetric or over half the kernel)")
    op = AvgPool(
        kernel,
        _spatial(node, "strides", n, 1),
        pads[:n],
        bool(node.attr("count_include_pad", 0)),
    )
    return cv.add(node, op, [x])


# ------------------------------------------------------------------ structure
def _reshaped(cv: _Converter, node: OnnxNode, x: Var, shape: Sequence[int]) -> Var:
    shape = tuple(int(d) for d in shape)
    if math.prod(shape) != math.prod(x.shape):
        raise cv.error(node, f"cannot reshape {x.shape} to {shape}")
    if shape == x.shape:
        return x
    return cv.add(node, Reshape(shape), [x])


def _reshape(cv: _Converter, node: OnnxNode, args: Args) -> Var:
    x = _var(node, args[0])
    target = list(_int_list(node, args, 1, "shape") or ())
    if not node.attr("allowzero", 0):
        target = [x.shape[i] if d == 0 else d for i, d in enumerate(target)]
    if -1 in target:
        known = math.prod(d for d in target if d != -1)
        target[target.index(-1)] = math.prod(x.shape) // max(known, 1)
    return _reshaped(cv, node, x, target)


def _flatten(cv: _Converter, node: OnnxNode, args: Args) -> Var:
    x = _var(node, args[0])
    rank = len(x.shape)
    axis = node.attr("axis", 1)
    axis = axis + rank if axis < 0 else axis
    shape = (math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))
    return _reshaped(cv, node, x, shape)


def _squeeze(cv: _Converter, node: OnnxNode, args: Args) -> Var:
    x = _var(node, args[0])
    axes = _int_list(node, args, 1, "axes")
    rank = len(x.shape)
    if axes is None:
        drop = {i for i, d in enumerate(x.shape) if d == 1}
    else:
        drop = {_axis(node, a, rank) for a in axes}
    shape = [d for i, d in enumerate(x.shape) if i not in drop]
    return _reshaped(cv, node, x, shape)


def _unsqueeze(cv: _Converter, node: OnnxNode, args: Args) -> Var:
    x = _var(node, args[0])
    axes = _int_list(node, args, 1, "axes") or ()
    rank = len(x.shape) + len(axes)
    new = {_axis(node, a, rank) for a in axes}
    dims = iter(x.shape)
    shape = [1 if i in new else next(dims) for i in range(rank)]
    return _reshaped(cv, node, x, shape)


def _transpose(cv: _Converter, node: OnnxNode, args: Args) -> Var:
    x = _var(node, args[0])
    perm = node.attr("perm") or tuple(reversed(range(len(x.shape))))
    if tuple(perm) == tuple(range(len(x.shape))):
        return x
    return cv.add(node, Transpose(tuple(int(p) for p in perm)), [x])


def _select(
    cv: _Converter,
    node: OnnxNode,
    x: Var,
    picks: dict[int, Sequence[int]],
    suffix: str = "",
) -> Var:
    """Index lists per axis; axes that keep every entry in order are dropped."""
    axes, indices = [], []
    for axis in sorted(picks):
        idx = list(picks[axis])
        if idx != list(range(x.shape[axis])):
            axes.append(axis)
            indices.append(_i64(idx))
    if not axes:
        return x
    return cv.add(node, Select(tuple(axes), tuple(indices)), [x], suffix)


def _slice(cv: _Converter, node: OnnxNode, args: Args) -> Var:
    x = _var(node, args[0])
    rank = len(x.shape)
    if node.opset < 10:
        starts, ends = node.attr("starts"), node.attr("ends")
        axes, steps = node.attr("axes"), None
    else:
        starts = _int_list(node, args, 1, "starts")
        ends = _int_list(node, args, 2, "ends")
        axes = _int_list(node, args, 3, "axes")
        steps = _int_list(node, args, 4, "steps")
    axes = axes if axes is not None else tuple(range(len(starts)))
    steps = steps if steps is not None else (1,) * len(starts)
    picks: dict[int, Sequence[int]] = {}
    for a, s, e, st in zip(axes, starts, ends, steps, strict=True):
        if st == 0:
            raise node.unsupported("step 0")
        axis = _axis(node, int(a), rank)
        picks[axis] = range(*slice(int(s), int(e), int(st)).indices(x.shape[axis]))
    return _select(cv, node, x, picks)


def _split(cv: _Converter, node: OnnxNode, args: Args) -> list[Var]:
    x = _var(node, args[0])
    axis = _axis(node, node.attr("axis", 0), len(x.shape))
    count = len(node.proto.output)
    sizes = _int_list(node, args, 1, "split")
    if sizes is None:
        chunk = -(-x.shape[axis] // count)
        sizes = tuple(min(chunk, x.shape[axis] - k * chunk) for k in range(count))
    if sum(sizes) != x.shape[axis] or len(sizes) != count:
        raise cv.error(node, f"split sizes {sizes} do not fit dim {x.shape[axis]}")
    outs, start = [], 0
    for k, size in enumerate(sizes):
        picks = {axis: range(start, start + size)}
        outs.append(_select(cv, node, x, picks, f":{k}"))
        start += size
    return outs


def _gather(cv: _Converter, node: OnnxNode, args: Args) -> Var:
    x = _var(node, args[0])
    idx = _const(node, args[1], "indices").astype(np.int64)
    axis = _axis(node, node.attr("axis", 0), len(x.shape))
    size = x.shape[axis]
    if np.any(idx < -size) or np.any(idx >= size):
        raise cv.error(node, f"indices out of range for dim of size {size}")
    return cv.add(node, Gather(axis, _i64(np.where(idx < 0, idx + size, idx))), [x])


def _concat(cv: _Converter, node: OnnxNode, args: Args) -> Var:
    variables = list(dict.fromkeys(a for a in args if isinstance(a, Var)))
    axis = _axis(node, node.attr("axis"), len(variables[0].shape))
    layout: list[tuple[int, int]] = []
    constants: list[np.ndarray] = []
    for a in args:
        if isinstance(a, Var):
            layout.append((variables.index(a), a.shape[axis]))
        elif a is not None and a.shape[axis] > 0:
            layout.append((-1, a.shape[axis]))
            constants.append(a)
    if len(layout) == 1:
        return variables[0]
    const = _f32(np.concatenate(constants, axis=axis)) if constants else None
    return cv.add(node, Concat(axis, tuple(layout), const), variables)


def _expand(cv: _Converter, node: OnnxNode, args: Args) -> Var:
    x = _var(node, args[0])
    shape = tuple(int(d) for d in _const(node, args[1], "shape"))
    out = tuple(int(d) for d in np.broadcast_shapes(x.shape, shape))
    if out == x.shape:
        return x
    return cv.add(node, Expand(out), [x])


def _tile(cv: _Converter, node: OnnxNode, args: Args) -> Var:
    x = _var(node, args[0])
    repeats = tuple(int(r) for r in _const(node, args[1], "repeats"))
    if set(repeats) == {1}:
        return x
    return cv.add(node, Tile(repeats), [x])


def _pad(cv: _Converter, node: OnnxNode, args: Args) -> Var:
    x = _var(node, args[0])
    if node.attr("mode", "constant") != "constant":
        raise node.unsupported(f"mode={node.attr('mode')}")
    rank = len(x.shape)
    if node.opset < 11:
        pads, value = node.attr("pads"), float(node.attr("value", 0.0))
    else:
        pads = _int_list(node, args, 1, "pads")
        given = len(args) > 2 and args[2] is not None
        value = float(_const(node, args[2], "value").reshape(-1)[0]) if given else 0.0
        axes = _int_list(node, args, 3, "axes")
        if axes is not None:
            full = [0] * (2 * rank)
            for k, a in enumerate(axes):
                full[_axis(node, a, rank)] = pads[k]
                full[_axis(node, a, rank) + rank] = pads[k + len(axes)]
            pads = tuple(full)
    if not any(pads):
        return x
    return cv.add(node, Pad(tuple(int(p) for p in pads), value), [x])


def _resize(cv: _Converter, node: OnnxNode, args: Args) -> Var:
    x = _var(node, args[0])
    if node.attr("mode", "nearest") != "nearest":
        raise node.unsupported(f"mode={node.attr('mode')} (only nearest)")
    picks = nearest_indices(node, x.shape, args)
    return _select(cv, node, x, picks)


HANDLERS: dict[str, Handler] = {
    "Relu": _unary("relu"),
    "Sigmoid": _unary("sigmoid"),
    "Tanh": _unary("tanh"),
    "Sin": _unary("sin"),
    "Cos": _unary("cos"),
    "Exp": _unary("exp"),
    "Log": _unary("log"),
    "Sqrt": _unary("sqrt"),
    "Reciprocal": _unary("reciprocal"),
    "Atan": _unary("atan"),
    "Erf": _unary("erf"),
    "Softplus": _unary("softplus"),
    "Abs": _unary("abs"),
    "Floor": _unary("floor"),
    "LeakyRelu": _leaky_relu,
    "Gelu": _gelu,
    "Neg": _neg,
    "Add": _add_sub,
    "Sub": _add_sub,
    "Sum": _sum,
    "Mul": _mul,
    "Div": _div,
    "Pow": _pow,
    "Cast": _cast,
    "Identity": _identity,
    "Dropout": _identity,
    "Softmax": _softmax,
    "MatMul": _matmul,
    "Gemm": _gemm,
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "BatchNormalization": _batch_norm,
    "ReduceSum": _reduce,
    "ReduceMean": _reduce,
    "GlobalAveragePool": _global_average_pool,
    "AveragePool": _average_pool,
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Transpose": _transpose,
    "Slice": _slice,
    "Split": _split,
    "Gather": _gather,
    "Concat": _concat,
    "Expand": _expand,
    "Tile": _tile,
    "Pad": _pad,
    "Upsample": _resize,
    "Resize": _resize,
    "LSTM": lstm,
}
"""ONNX operator type to handler, for nodes with variable inputs."""
