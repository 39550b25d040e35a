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
