"""Index maps of nearest-neighbour ``Upsample``/``Resize`` (ONNX semantics).

With static shapes, nearest resizing picks, along each axis, one input entry
per output entry; this module computes those indices so the op becomes a
:class:`~genbab.model.ops.Select`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from genbab.model.onnx_node import OnnxNode, Value, Var

# ONNX coordinate transformations: output index o -> input coordinate, given
# the scale s, the input length n and the output length m.
_COORDINATES: dict[str, Callable[[int, float, int, int], float]] = {
    "half_pixel": lambda o, s, n, m: (o + 0.5) / s - 0.5,
    "pytorch_half_pixel": lambda o, s, n, m: (o + 0.5) / s - 0.5 if m > 1 else 0.0,
    "align_corners": lambda o, s, n, m: o * (n - 1) / (m - 1) if m > 1 else 0.0,
    "asymmetric": lambda o, s, n, m: o / s,
    "tf_half_pixel_for_nearest": lambda o, s, n, m: (o + 0.5) / s,
    "half_pixel_symmetric": lambda o, s, n, m: (
        n / 2 * (1 - m / (s * n)) + (o + 0.5) / s - 0.5
    ),
}

# ONNX nearest modes; "simple" is what Upsample and opset-10 Resize use.
_ROUNDING: dict[str, Callable[[float, bool], int]] = {
    "round_prefer_floor": lambda x, down: math.ceil(x - 0.5),
    "round_prefer_ceil": lambda x, down: math.floor(x + 0.5),
    "floor": lambda x, down: math.floor(x),
    "ceil": lambda x, down: math.ceil(x),
    "simple": lambda x, down: math.ceil(x) if down else math.floor(x),
}


def nearest_indices(
    node: OnnxNode, shape: tuple[int, ...], args: list[Value | None]
) -> dict[int, list[int]]:
    """For each resized axis, the input index of every output entry.

    Args:
        node: An ``Upsample`` or ``Resize`` node in nearest mode.
        shape: Shape of its data input (one sample).
        args: Its resolved inputs.

    Returns:
        Axis to index list (axes left unchanged may be omitted).
    """
    rank = len(shape)
    scales, sizes = _scales_and_sizes(node, rank, args)
    if node.op_type == "Upsample" or node.opset < 11:
        coordinate, rounding = "asymmetric", "simple"
    else:
        coordinate = node.attr("coordinate_transformation_mode", "half_pixel")
        rounding = node.attr("nearest_mode", "round_prefer_floor")
    if coordinate not in _COORDINATES:
        raise node.unsupported(f"coordinate_transformation_mode={coordinate}")
    if rounding not in _ROUNDING:
        raise node.unsupported(f"nearest_mode={rounding}")
    to_input, round_ = _COORDINATES[coordinate], _ROUNDING[rounding]

    picks: dict[int, list[int]] = {}
    for axis, n in enumerate(shape):
        if sizes is not None:
            m = sizes[axis]
            s = m / n
        else:
            s = scales[axis]
            m = math.floor(n * s)
        if m <= 0:
            raise node.unsupported(f"an empty output along axis {axis}")
        if m == n and s == 1.0:
            continue
        picks[axis] = [
            min(max(round_(to_input(o, s, n, m), s < 1), 0), n - 1) for o in range(m)
        ]
    return picks


def _scales_and_sizes(
    node: OnnxNode, rank: int, args: list[Value | None]
) -> tuple[list[float], list[int] | None]:
    """Per-axis scales and, when given, output sizes (full rank)."""

    def const(k: int) -> np.ndarray | None:
        v = args[k] if len(args) > k else None
        if isinstance(v, Var):
            raise node.unsupported(f"input {k} depends on the input")
        return None if v is None or v.size == 0 else v.reshape(-1)

    if node.op_type == "Upsample" and node.opset < 9:
        attr = node.attr("scales")
        scales = None if attr is None else np.array(attr, dtype=np.float32)
        sizes = None
    elif node.op_type == "Upsample" or node.opset < 11:
        scales, sizes = const(1), None
    else:
        if node.attr("antialias", 0):
            raise node.unsupported("antialias=1")
        scales, sizes = const(2), const(3)
    axes = node.attr("axes")
    if sizes is not None:
        if axes is not None:
            full = [0] * rank
            for a, v in zip(axes, sizes, strict=True):
                full[a % rank] = int(v)
            sizes = np.array(full)
        if node.attr("keep_aspect_ratio_policy", "stretch") != "stretch":
            raise node.unsupported("keep_aspect_ratio_policy other than stretch")
        return [1.0] * rank, [int(v) for v in sizes]
    if scales is None:
        raise node.unsupported("neither scales nor sizes given")
    values = [float(v) for v in scales]
    if axes is not None:
        full_scales = [1.0] * rank
        for a, v in zip(axes, values, strict=True):
            full_scales[a % rank] = v
        values = full_scales
    if len(values) != rank:
        raise node.unsupported(f"{len(values)} scales for a rank-{rank} input")
    return values, None
