"""Small ONNX models built in tests with ``onnx.helper``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"


def mlp(
    path: Path,
    weights: list[np.ndarray],
    biases: list[np.ndarray],
    activation: str | list[str] = "Relu",
    opset: int = 17,
    batch: int | str = 1,
) -> Path:
    """Save an MLP ``input [1, n] -> Gemm -> act -> ... -> Gemm -> output``.

    ``weights[i]`` has shape ``[out, in]``; the last layer has no activation.
    ``activation`` is an ONNX op type (or one per hidden layer); ``"Square"``
    becomes ``Pow`` with exponent 2. ``batch`` is the leading dimension (a name
    makes it symbolic, so onnxruntime takes any batch).
    """
    acts = (
        activation
        if isinstance(activation, list)
        else [activation] * (len(weights) - 1)
    )
    nodes, inits = [], []
    cur = "input"
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        inits += [
            numpy_helper.from_array(w.astype(np.float32), f"W{i}"),
            numpy_helper.from_array(b.astype(np.float32), f"B{i}"),
        ]
        out = "output" if i == len(weights) - 1 else f"h{i}"
        nodes.append(
            helper.make_node(
                "Gemm", [cur, f"W{i}", f"B{i}"], [out], transB=1, name=f"gemm{i}"
            )
        )
        cur = out
        if i < len(weights) - 1:
            act = acts[i]
            if act == "Square":
                inits.append(
                    numpy_helper.from_array(np.array(2.0, np.float32), f"two{i}")
                )
                nodes.append(
                    helper.make_node("Pow", [cur, f"two{i}"], [f"a{i}"], name=f"act{i}")
                )
            else:
                nodes.append(helper.make_node(act, [cur], [f"a{i}"], name=f"act{i}"))
            cur = f"a{i}"
    graph = helper.make_graph(
        nodes,
        "mlp",
        [
            helper.make_tensor_value_info(
                "input", TensorProto.FLOAT, [batch, weights[0].shape[1]]
            )
        ],
        [
            helper.make_tensor_value_info(
                "output", TensorProto.FLOAT, [batch, weights[-1].shape[0]]
            )
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def random_mlp(
    path: Path,
    sizes: list[int],
    activation: str | list[str],
    seed: int = 0,
    batch: int | str = 1,
) -> Path:
    """An MLP with layer ``sizes`` and Gaussian weights (std 1/sqrt(fan_in))."""
    rng = np.random.default_rng(seed)
    ws = [
        rng.normal(size=(o, i)) / np.sqrt(i)
        for i, o in zip(sizes, sizes[1:], strict=False)
    ]
    bs = [rng.normal(size=o) * 0.3 for o in sizes[1:]]
    return mlp(path, ws, bs, activation, batch=batch)


def gates_model(path: Path) -> Path:
    """``x [1, 3]``: gates ``sigmoid(A x) * tanh(B x)``, ``relu(C x) * exp(D x)``
    and ``x0 * reciprocal(exp(E x) + 1)``, summed by a last Gemm."""
    rng = np.random.default_rng(7)
    inits, nodes = [], []

    def gemm(name: str, src: str, rows: int, cols: int = 3) -> str:
        w = rng.normal(size=(rows, cols)).astype(np.float32)
        b = (rng.normal(size=rows) * 0.3).astype(np.float32)
        inits.extend(
            [
                numpy_helper.from_array(w, f"{name}_w"),
                numpy_helper.from_array(b, f"{name}_b"),
            ]
        )
        nodes.append(
            helper.make_node("Gemm", [src, f"{name}_w", f"{name}_b"], [name], transB=1)
        )
        return name

    def op(kind: str, ins: list[str], out: str) -> str:
        nodes.append(helper.make_node(kind, ins, [out]))
        return out

    s = op("Sigmoid", [gemm("a", "x", 4)], "s")
    t = op("Tanh", [gemm("b", "x", 4)], "t")
    r = op("Relu", [gemm("c", "x", 4)], "r")
    e = op("Exp", [gemm("d", "x", 4)], "e")
    inits.append(numpy_helper.from_array(np.ones(4, np.float32), "one"))
    q = op(
        "Reciprocal",
        [op("Add", [op("Exp", [gemm("f", "x", 4)], "e2"), "one"], "p")],
        "q",
    )
    g1, g2 = op("Mul", [s, t], "g1"), op("Mul", [r, e], "g2")
    g3 = op("Mul", [gemm("h", "x", 4), q], "g3")
    cat = op("Concat", [g1, g2, g3], "cat")
    nodes[-1].attribute.append(helper.make_attribute("axis", 1))
    gemm_out = gemm("y", cat, 2, cols=12)
    nodes.append(helper.make_node("Identity", [gemm_out], ["out"]))
    graph = helper.make_graph(
        nodes,
        "gates",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 2])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def relu_sum_model(path: Path, offsets, weights, bias, reduce: bool) -> Path:
    """``x [1, 3] -> Gemm -> c + sum_k w_k relu(h - o_k) -> Gemm -> y [1, 2]``."""
    rng = np.random.default_rng(0)
    f32 = np.float32
    inits = [
        numpy_helper.from_array(rng.normal(size=(4, 3)).astype(f32), "w1"),
        numpy_helper.from_array(np.zeros(4, f32), "b1"),
        numpy_helper.from_array(np.array([-1], np.int64), "axis"),
        numpy_helper.from_array(np.asarray(offsets, f32), "offsets"),
        numpy_helper.from_array(np.asarray(weights, f32), "weights"),
        numpy_helper.from_array(np.asarray(bias, f32), "bias"),
        numpy_helper.from_array(rng.normal(size=(2, 4)).astype(f32), "w2"),
        numpy_helper.from_array(np.zeros(2, f32), "b2"),
    ]
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
        helper.make_node("Unsqueeze", ["h", "axis"], ["hu"]),
        helper.make_node("Sub", ["hu", "offsets"], ["hs"]),
        helper.make_node("Relu", ["hs"], ["hr"]),
    ]
    if reduce:
        nodes += [
            helper.make_node("Mul", ["hr", "weights"], ["hm"]),
            helper.make_node("ReduceSum", ["hm", "axis"], ["hp0"], keepdims=0),
        ]
    else:
        nodes.append(helper.make_node("MatMul", ["hr", "weights"], ["hp0"]))
    nodes += [
        helper.make_node("Add", ["hp0", "bias"], ["hp"]),
        helper.make_node("Gemm", ["hp", "w2", "b2"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "relu_sum",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path
