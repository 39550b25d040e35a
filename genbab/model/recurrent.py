"""The ONNX ``LSTM`` operator, unrolled over time into genbab's own ops.

Each time step of each direction becomes a handful of ordinary nodes, so the
bound engine needs no recurrent rule: ``Linear`` (``x W^T + b`` for all steps at
once, ``h R^T`` per step), ``Gather`` and ``Select`` (one step, one gate),
``Unary`` sigmoid / tanh (the gates), ``Mul`` of two variables (``f * c``,
``i * g``, ``o * tanh(c)``) and ``WeightedSum`` (the sums). In ONNX's gate
order ``i, o, f, c`` (activations ``f, g, h``, by default sigmoid, tanh, tanh)::

    z_t = x_t W^T + h_{t-1} R^T + Wb + Rb
    i, o, f = f(z_i), f(z_o), f(z_f);  g = g(z_c)
    c_t = f * c_{t-1} + i * g;  h_t = o * h(c_t)

Supported: directions ``forward``, ``reverse`` and ``bidirectional``;
activations among Sigmoid, Tanh and Relu without ``activation_alpha`` /
``activation_beta``; optional bias ``B``, ``initial_h`` and ``initial_c``
(constant or computed from the input); ``sequence_lens`` absent or equal to the
sequence length everywhere; peepholes ``P`` absent or zero; ``layout`` 0. Other
attributes (``clip``, ``input_forget``, ``layout=1``) are rejected with an error
naming the operator, the node and the attribute.

Outputs follow ONNX: ``Y`` ``[seq, num_directions, batch, hidden]``, ``Y_h`` and
``Y_c`` ``[num_directions, batch, hidden]``. All three are built; the importer
prunes the ones the model does not read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from genbab.model.onnx_node import OnnxNode, Value, Var
from genbab.model.ops import (
    Concat,
    Gather,
    Linear,
    Mul,
    Reshape,
    ScaleShift,
    Select,
    Unary,
    WeightedSum,
)

if TYPE_CHECKING:
    from genbab.model.onnx_import import _Converter

_ACTIVATIONS = {"sigmoid": "sigmoid", "tanh": "tanh", "relu": "relu"}
_DEFAULT_ACTIVATIONS = ("Sigmoid", "Tanh", "Tanh")
_DIRECTIONS = {"forward": (False,), "reverse": (True,), "bidirectional": (False, True)}

State = Var | np.ndarray | None
"""A hidden or cell state ``[batch, hidden]``: variable, constant, or zero."""


def _f32(a: np.ndarray) -> Tensor:
    return torch.as_tensor(np.ascontiguousarray(a, dtype=np.float32))


@dataclass(frozen=True)
class _Direction:
    """Constants of one direction of an LSTM node.

    Attributes:
        w: Input weights ``[4 * hidden, input]`` (gates ``i, o, f, c``).
        r: Recurrence weights ``[4 * hidden, hidden]``.
        bias: ``Wb + Rb``, ``[4 * hidden]``.
        reverse: Whether the direction runs from the last step to the first.
        acts: genbab names of the activations ``f, g, h``.
        h0: Initial hidden state ``[batch, hidden]``.
        c0: Initial cell state ``[batch, hidden]``.
    """

    w: np.ndarray
    r: np.ndarray
    bias: np.ndarray
    reverse: bool
    acts: tuple[str, str, str]
    h0: State
    c0: State


def lstm(cv: _Converter, node: OnnxNode, args: list[Value | None]) -> list[Var]:
    """Unroll one ONNX ``LSTM`` node (see the module docstring).

    Args:
        cv: The converter (``cv.add`` appends nodes).
        node: The LSTM node.
        args: Its inputs ``X, W, R, B, sequence_lens, initial_h, initial_c, P``
            (trailing optional ones may be missing), ``X`` a variable of shape
            ``[seq, batch, input]``.

    Returns:
        ``[Y, Y_h, Y_c]``.

    Raises:
        UnsupportedOperatorError: An attribute or input genbab cannot unroll.
    """
    args = list(args) + [None] * (8 - len(args))
    x = args[0]
    if not isinstance(x, Var):
        raise node.unsupported("its input X must depend on the graph input")
    _check_attributes(node)
    if len(x.shape) != 3:
        raise node.unsupported(f"input X has rank {len(x.shape)}, expected 3")
    seq, batch, _ = x.shape
    _check_sequence_lens(node, args[4], seq, batch)
    directions = _read_directions(cv, node, args, batch)

    ys, hs, cs = [], [], []
    for d, spec in enumerate(directions):
        steps, c_last = _unroll(cv, node, x, spec, f"/d{d}")
        size = steps[0].shape
        ys.append(
            [
                cv.add(node, Reshape((1, 1, *size)), [h], f"/d{d}/t{t}/Y")
                for t, h in enumerate(steps)
            ]
        )
        last = steps[0] if spec.reverse else steps[-1]
        hs.append(cv.add(node, Reshape((1, *size)), [last], f"/d{d}/Y_h"))
        cs.append(cv.add(node, Reshape((1, *size)), [c_last], f"/d{d}/Y_c"))
    per_step = [
        _concat(cv, node, [y[t] for y in ys], 1, f"/Y/t{t}") for t in range(seq)
    ]
    y = _concat(cv, node, per_step, 0, "/Y")
    return [y, _concat(cv, node, hs, 0, "/Y_h"), _concat(cv, node, cs, 0, "/Y_c")]


def _check_attributes(node: OnnxNode) -> None:
    """Reject attributes the unrolling does not implement."""
    if node.attr("clip") is not None:
        raise node.unsupported("attribute 'clip' (cell clipping)")
    if node.attr("input_forget", 0):
        raise node.unsupported("attribute 'input_forget'=1 (coupled gates)")
    if node.attr("layout", 0) != 0:
        raise node.unsupported(f"attribute 'layout'={node.attr('layout')}")
    for name in ("activation_alpha", "activation_beta"):
        if node.attr(name) is not None:
            raise node.unsupported(f"attribute '{name}'")
    if node.attr("direction", "forward") not in _DIRECTIONS:
        raise node.unsupported(f"attribute 'direction'={node.attr('direction')!r}")


def _check_sequence_lens(
    node: OnnxNode, lens: Value | None, seq: int, batch: int
) -> None:
    if lens is None:
        return
    if isinstance(lens, Var):
        raise node.unsupported("input 'sequence_lens' depends on the graph input")
    if lens.size and np.any(np.broadcast_to(lens, (batch,)) != seq):
        raise node.unsupported(
            f"input 'sequence_lens' {lens.tolist()} differs from the length {seq}"
        )


def _activations(node: OnnxNode, count: int) -> list[tuple[str, str, str]]:
    """The activations ``(f, g, h)`` of each direction, as genbab function names."""
    given = node.attr("activations")
    if given is None:
        names = _DEFAULT_ACTIVATIONS * count
    else:
        names = tuple(a.decode() if isinstance(a, bytes) else str(a) for a in given)
    if len(names) != 3 * count:
        raise node.unsupported(
            f"attribute 'activations' has {len(names)} entries, expected {3 * count}"
        )
    unknown = [a for a in names if a.lower() not in _ACTIVATIONS]
    if unknown:
        raise node.unsupported(f"attribute 'activations' = {unknown[0]!r}")
    funcs = [_ACTIVATIONS[a.lower()] for a in names]
    return [(funcs[3 * d], funcs[3 * d + 1], funcs[3 * d + 2]) for d in range(count)]


def _constant(
    node: OnnxNode, v: Value | None, what: str, shape: tuple[int, ...]
) -> np.ndarray:
    if isinstance(v, Var):
        raise node.unsupported(f"input '{what}' depends on the graph input")
    if v is None:
        raise node.unsupported(f"input '{what}' is missing")
    if tuple(v.shape) != shape:
        raise node.unsupported(f"input '{what}' has shape {v.shape}, expected {shape}")
    return v.astype(np.float64)


def _read_directions(
    cv: _Converter, node: OnnxNode, args: list[Value | None], batch: int
) -> list[_Direction]:
    """Weights, biases, activations and initial states of each direction."""
    reverse = _DIRECTIONS[node.attr("direction", "forward")]
    nd = len(reverse)
    w_in = args[1]
    if isinstance(w_in, Var) or w_in is None or w_in.ndim != 3:
        raise node.unsupported("input 'W' is not a constant of rank 3")
    n_in = w_in.shape[2]
    hidden = node.attr("hidden_size")
    if hidden is None:  # onnxruntime requires it too
        raise node.unsupported("attribute 'hidden_size' is missing")
    w = _constant(node, w_in, "W", (nd, 4 * hidden, n_in))
    r = _constant(node, args[2], "R", (nd, 4 * hidden, hidden))
    b = np.zeros((nd, 8 * hidden))
    if args[3] is not None:
        b = _constant(node, args[3], "B", (nd, 8 * hidden))
    if args[7] is not None and np.any(_constant(node, args[7], "P", (nd, 3 * hidden))):
        raise node.unsupported("input 'P' (peephole weights) is not zero")
    acts = _activations(node, nd)
    state_shape = (nd, batch, hidden)
    h0 = [_state(cv, node, args[5], "initial_h", state_shape, d) for d in range(nd)]
    c0 = [_state(cv, node, args[6], "initial_c", state_shape, d) for d in range(nd)]
    bias = b[:, : 4 * hidden] + b[:, 4 * hidden :]
    return [
        _Direction(w[d], r[d], bias[d], reverse[d], acts[d], h0[d], c0[d])
        for d in range(nd)
    ]


def _state(
    cv: _Converter,
    node: OnnxNode,
    v: Value | None,
    what: str,
    shape: tuple[int, int, int],
    d: int,
) -> State:
    """Direction ``d`` of an initial state; None stands for zeros."""
    if v is None:
        return None
    if tuple(v.shape) != shape:
        raise node.unsupported(f"input '{what}' has shape {v.shape}, expected {shape}")
    if isinstance(v, Var):
        return cv.add(node, Gather(0, torch.tensor(d)), [v], f"/d{d}/{what}")
    part = v[d].astype(np.float64)
    return part if np.any(part) else None


def _unroll(
    cv: _Converter, node: OnnxNode, x: Var, spec: _Direction, tag: str
) -> tuple[list[Var], Var]:
    """Run one direction over the sequence.

    Returns:
        The hidden state after each step, in the order of ``X`` (so for a
        reverse direction the first entry is the last one computed), each
        ``[batch, hidden]``, and the final cell state ``[batch, hidden]``.
    """
    # x_t W^T + Wb + Rb for every step at once: [seq, batch, 4 * hidden]
    xw = cv.add(node, Linear(_f32(spec.w.T), _f32(spec.bias)), [x], f"{tag}/xW")
    seq = x.shape[0]
    order = range(seq - 1, -1, -1) if spec.reverse else range(seq)
    h, c = spec.h0, spec.c0
    hidden: dict[int, Var] = {}
    for t in order:
        step = f"{tag}/t{t}"
        z = cv.add(node, Gather(0, torch.tensor(t)), [xw], f"{step}/xW")
        z = _add_recurrence(cv, node, z, h, spec.r, step)
        h, c = _cell(cv, node, z, c, spec.acts, step)
        hidden[t] = h
    assert isinstance(c, Var)
    return [hidden[t] for t in range(seq)], c


def _add_recurrence(
    cv: _Converter, node: OnnxNode, z: Var, h: State, r: np.ndarray, step: str
) -> Var:
    """``z + h R^T`` (no node when ``h`` is zero)."""
    if h is None:
        return z
    if isinstance(h, Var):
        hr = cv.add(node, Linear(_f32(r.T)), [h], f"{step}/hR")
        return cv.add(node, WeightedSum((1.0, 1.0)), [z, hr], f"{step}/z")
    return cv.add(node, ScaleShift(None, _f32(h @ r.T)), [z], f"{step}/z")


def _cell(
    cv: _Converter,
    node: OnnxNode,
    z: Var,
    c: State,
    acts: tuple[str, str, str],
    step: str,
) -> tuple[Var, Var]:
    """Gates and state update of one step from the pre-activations ``z``.

    Returns:
        ``(h_t, c_t)``, each ``[batch, hidden]``.
    """
    f_act, g_act, h_act = acts
    size = z.shape[-1] // 4
    axis = len(z.shape) - 1

    def gate(k: int, func: str, name: str) -> Var:
        idx = torch.arange(k * size, (k + 1) * size)
        pre = cv.add(node, Select((axis,), (idx,)), [z], f"{step}/{name}_in")
        return cv.add(node, Unary(func), [pre], f"{step}/{name}")

    i, o, f, g = (
        gate(0, f_act, "i"),
        gate(1, f_act, "o"),
        gate(2, f_act, "f"),
        gate(3, g_act, "g"),
    )
    c_new = cv.add(node, Mul(), [i, g], f"{step}/ig")
    if isinstance(c, Var):
        fc = cv.add(node, Mul(), [f, c], f"{step}/fc")
        c_new = cv.add(node, WeightedSum((1.0, 1.0)), [fc, c_new], f"{step}/c")
    elif c is not None:
        fc = cv.add(node, ScaleShift(_f32(c), None), [f], f"{step}/fc")
        c_new = cv.add(node, WeightedSum((1.0, 1.0)), [fc, c_new], f"{step}/c")
    tc = cv.add(node, Unary(h_act), [c_new], f"{step}/h(c)")
    return cv.add(node, Mul(), [o, tc], f"{step}/h"), c_new


def _concat(
    cv: _Converter, node: OnnxNode, vs: list[Var], axis: int, suffix: str
) -> Var:
    """Concatenation of distinct variables along ``axis`` (one: returned as is)."""
    if len(vs) == 1:
        return vs[0]
    layout = tuple((k, v.shape[axis]) for k, v in enumerate(vs))
    return cv.add(node, Concat(axis, layout), vs, suffix)
