"""Per-operator import tests: small ONNX models built with ``onnx.helper``.

Each model is compared with onnxruntime in float32 and float64; every linear
node is checked against its explicit Jacobian (``abs_forward`` = ``|J| r``)
and for linearity.
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from genbab.errors import ModelError, UnsupportedOperatorError
from genbab.model import Graph, Node, load_model

RNG = np.random.default_rng(0)


def W(*shape: int) -> np.ndarray:
    """A random float32 constant."""
    return RNG.standard_normal(shape).astype(np.float32)


def I64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


N = helper.make_node


@dataclass
class Case:
    """A one-input model: nodes reading ``x`` and writing ``y``."""

    nodes: list[onnx.NodeProto]
    x_shape: list[int | str]
    inits: dict[str, np.ndarray] = field(default_factory=dict)
    opset: int = 17
    low: float = -1.0
    high: float = 1.0
    expect: tuple[str, ...] = ()  # op types the graph must contain


def save(tmp_path: Path, case: Case, name: str = "m.onnx") -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, case.x_shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    inits = [numpy_helper.from_array(v, k) for k, v in case.inits.items()]
    g = helper.make_graph(case.nodes, "g", [x], [y], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", case.opset)])
    m.ir_version = 9 if case.opset >= 19 else 8
    path = tmp_path / name
    onnx.save(m, path)
    return path


CASES: dict[str, Callable[[], Case]] = {
    # ---- weights
    "gemm": lambda: Case(
        [N("Gemm", ["x", "B", "C"], ["y"], transB=1, alpha=0.5, beta=2.0)],
        [2, 3],
        {"B": W(4, 3), "C": W(4)},
        expect=("Linear",),
    ),
    "gemm_transA": lambda: Case(
        [N("Gemm", ["x", "B"], ["y"], transA=1)],
        [3, 2],
        {"B": W(3, 4)},
        expect=("Linear", "Transpose"),
    ),
    "gemm_variable_B": lambda: Case(
        [N("Gemm", ["A", "x", "C"], ["y"], transB=1, alpha=1.5)],
        ["batch", 3],
        {"A": W(4, 3), "C": W(4, 1)},
        expect=("Linear", "Transpose"),
    ),
    "matmul_right": lambda: Case(
        [N("MatMul", ["x", "B"], ["y"])],
        [1, 2, 3],
        {"B": W(3, 4)},
        expect=("Linear",),
    ),
    "matmul_left": lambda: Case(
        [N("MatMul", ["A", "x"], ["y"])],
        [1, 2, 3],
        {"A": W(4, 2)},
        expect=("Linear",),
    ),
    "conv2d": lambda: Case(
        [
            N(
                "Conv",
                ["x", "W", "b"],
                ["y"],
                strides=[2, 1],
                pads=[1, 0, 2, 1],
                dilations=[1, 2],
                group=2,
            )
        ],
        [1, 4, 7, 6],
        {"W": W(6, 2, 3, 2), "b": W(6)},
        expect=("Conv",),
    ),
    "conv_same_lower": lambda: Case(
        [N("Conv", ["x", "W"], ["y"], auto_pad="SAME_LOWER", strides=[2, 2])],
        [1, 2, 5, 6],
        {"W": W(3, 2, 2, 3)},
        expect=("Conv",),
    ),
    "conv_same_upper": lambda: Case(
        [N("Conv", ["x", "W"], ["y"], auto_pad="SAME_UPPER")],
        [1, 2, 5, 6],
        {"W": W(3, 2, 2, 3)},
        expect=("Conv",),
    ),
    "conv1d": lambda: Case(
        [N("Conv", ["x", "W", "b"], ["y"], strides=[2], pads=[1, 1])],
        [1, 2, 9],
        {"W": W(3, 2, 3), "b": W(3)},
        expect=("Conv",),
    ),
    "conv_transpose": lambda: Case(
        [
            N(
                "ConvTranspose",
                ["x", "W", "b"],
                ["y"],
                strides=[2, 2],
                pads=[1, 0, 0, 1],
                output_padding=[1, 0],
            )
        ],
        [1, 2, 4, 3],
        {"W": W(2, 3, 3, 3), "b": W(3)},
        expect=("ConvTranspose",),
    ),
    "batch_norm": lambda: Case(
        [N("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=0.1)],
        [1, 3, 2, 2],
        {"s": W(3), "b": W(3), "m": W(3), "v": np.abs(W(3))},
        expect=("ScaleShift",),
    ),
    # ---- elementwise affine and sums
    "affine_chain": lambda: Case(
        [
            N("Add", ["x", "c1"], ["a"]),
            N("Sub", ["c2", "a"], ["b"]),
            N("Mul", ["b", "c3"], ["c"]),
            N("Div", ["c", "c4"], ["d"]),
            N("Neg", ["d"], ["y"]),
        ],
        [1, 3],
        {"c1": W(3), "c2": W(1), "c3": W(2, 1, 3), "c4": W(3) + 3},
        expect=("ScaleShift",),
    ),
    "add_sub_variables": lambda: Case(
        [
            N("Slice", ["x", "s0", "e1", "a0"], ["r"]),
            N("Slice", ["x", "s0", "e1", "a1"], ["c"]),
            N("Sub", ["r", "c"], ["d"]),
            N("Add", ["d", "x"], ["y"]),
        ],
        [2, 3],
        {"s0": I64(0), "e1": I64(1), "a0": I64(0), "a1": I64(1)},
        expect=("WeightedSum", "Select"),
    ),
    "reduce": lambda: Case(
        [
            N("ReduceSum", ["x", "ax"], ["s"], keepdims=1),
            N("ReduceMean", ["s"], ["y"], axes=[1], keepdims=0),
        ],
        [1, 3, 4],
        {"ax": I64(-1)},
        opset=13,
        expect=("Reduce",),
    ),
    "pool": lambda: Case(
        [
            N(
                "AveragePool",
                ["x"],
                ["p"],
                kernel_shape=[3, 3],
                strides=[2, 2],
                pads=[1, 1, 1, 1],
            ),
            N("GlobalAveragePool", ["p"], ["y"]),
        ],
        [1, 2, 6, 6],
        expect=("AvgPool", "Reduce"),
    ),
    # ---- structural
    "reshape_transpose_slice_gather": lambda: Case(
        [
            N("Reshape", ["x", "shape"], ["r"]),
            N("Transpose", ["r"], ["t"], perm=[0, 2, 1]),
            N("Slice", ["t", "st", "en", "ax", "sp"], ["s"]),
            N("Gather", ["s", "idx"], ["g"], axis=2),
            N("Flatten", ["g"], ["y"], axis=2),
        ],
        [1, 2, 3, 4],
        {
            "shape": I64(0, -1, 4),
            "st": I64(3, -1),
            "en": I64(-5, -100),
            "ax": I64(1, -1),
            "sp": I64(-2, -2),
            "idx": np.array([[0, -1], [1, 1]], dtype=np.int64),
        },
        expect=("Reshape", "Transpose", "Select", "Gather"),
    ),
    "concat_mixed": lambda: Case(
        [N("Concat", ["c1", "x", "c2", "x"], ["y"], axis=-1)],
        [1, 3],
        {"c1": W(1, 2), "c2": W(1, 1)},
        expect=("Concat",),
    ),
    "split_input": lambda: Case(
        [
            N("Split", ["x", "sizes"], ["a", "b"], axis=1),
            N("Concat", ["b", "a"], ["y"], axis=1),
        ],
        [1, 7],
        {"sizes": I64(3, 4)},
        opset=13,
        expect=("Select", "Concat"),
    ),
    "split_equal_opset11": lambda: Case(
        [
            N("Split", ["x"], ["a", "b", "c"], axis=-1),
            N("Sum", ["a", "b", "c"], ["y"]),
        ],
        [1, 6],
        opset=11,
        expect=("Select", "WeightedSum"),
    ),
    "squeeze_unsqueeze_opset11": lambda: Case(
        [
            N("Unsqueeze", ["x"], ["u"], axes=[0, 3]),
            N("Squeeze", ["u"], ["y"], axes=[1]),
        ],
        [1, 2, 3],
        opset=11,
        expect=("Reshape",),
    ),
    "squeeze_unsqueeze_opset13": lambda: Case(
        [
            N("Unsqueeze", ["x", "ua"], ["u"]),
            N("Squeeze", ["u", "sa"], ["y"]),
        ],
        [1, 2, 3],
        {"ua": I64(-1), "sa": I64(0)},
        opset=13,
        expect=("Reshape",),
    ),
    "expand_tile": lambda: Case(
        [
            N("Expand", ["x", "shape"], ["e"]),
            N("Tile", ["e", "reps"], ["y"]),
        ],
        [1, 3, 1],
        {"shape": I64(2, 1, 1, 4), "reps": I64(1, 2, 1, 1)},
        expect=("Expand", "Tile"),
    ),
    "pad": lambda: Case(
        [N("Pad", ["x", "pads", "value"], ["y"])],
        [1, 2, 3, 3],
        {"pads": I64(0, 0, 1, 2, 0, 0, 2, 0), "value": np.array(0.5, np.float32)},
        opset=13,
        expect=("Pad",),
    ),
    "upsample_opset9": lambda: Case(
        [N("Upsample", ["x", "scales"], ["y"], mode="nearest")],
        [1, 2, 3, 2],
        {"scales": np.array([1, 1, 2, 3], np.float32)},
        opset=9,
        expect=("Select",),
    ),
    "resize_half_pixel": lambda: Case(
        [N("Resize", ["x", "", "scales"], ["y"], mode="nearest")],
        [1, 2, 3, 4],
        {"scales": np.array([1, 1, 2, 3], np.float32)},
        opset=13,
        expect=("Select",),
    ),
    "resize_asymmetric_floor": lambda: Case(
        [
            N(
                "Resize",
                ["x", "", "scales"],
                ["y"],
                mode="nearest",
                coordinate_transformation_mode="asymmetric",
                nearest_mode="floor",
            )
        ],
        [1, 2, 4, 4],
        {"scales": np.array([1, 1, 1.5, 0.5], np.float32)},
        opset=13,
        expect=("Select",),
    ),
    "resize_sizes_align_corners": lambda: Case(
        [
            N(
                "Resize",
                ["x", "", "", "sizes"],
                ["y"],
                mode="nearest",
                coordinate_transformation_mode="align_corners",
                nearest_mode="round_prefer_ceil",
            )
        ],
        [1, 1, 3, 4],
        {"sizes": I64(1, 1, 7, 5)},
        opset=13,
        expect=("Select",),
    ),
    "identity_dropout_cast": lambda: Case(
        [
            N("Identity", ["x"], ["i"]),
            N("Dropout", ["i"], ["d"]),
            N("Cast", ["d"], ["c"], to=TensorProto.FLOAT),
            N("Relu", ["c"], ["y"]),
        ],
        [1, 4],
        expect=("Unary",),
    ),
    # ---- nonlinear
    "leaky_relu": lambda: Case(
        [N("LeakyRelu", ["x"], ["y"], alpha=0.2)], [1, 5], expect=("Unary",)
    ),
    "gelu_opset20": lambda: Case(
        [N("Gelu", ["x"], ["y"])], [1, 5], opset=20, expect=("Unary",)
    ),
    "pow_1_is_identity": lambda: Case(
        [N("Pow", ["x", "p"], ["y"])],
        [1, 5],
        {"p": np.array(1.0, np.float32)},
        expect=("Identity",),
    ),
    "mul_variables": lambda: Case(
        [
            N("Slice", ["x", "s0", "e1", "a0"], ["r"]),
            N("Slice", ["x", "s0", "e1", "a1"], ["c"]),
            N("Mul", ["r", "c"], ["m"]),
            N("Mul", ["m", "m"], ["y"]),
        ],
        [2, 3],
        {"s0": I64(0), "e1": I64(1), "a0": I64(0), "a1": I64(1)},
        expect=("Mul", "Unary"),
    ),
    "div_variables": lambda: Case(
        [
            N("Slice", ["x", "s0", "e1", "a0"], ["r"]),
            N("Div", ["x", "r"], ["d"]),
            N("Div", ["c", "d"], ["y"]),
        ],
        [2, 3],
        {"s0": I64(0), "e1": I64(1), "a0": I64(0), "c": W(3)},
        low=0.5,
        high=2.0,
        expect=("Mul", "Unary", "ScaleShift"),
    ),
    "bilinear_matmul": lambda: Case(
        [
            N("Transpose", ["x"], ["t"], perm=[0, 1, 3, 2]),
            N("MatMul", ["x", "t"], ["y"]),
        ],
        [1, 2, 3, 4],
        expect=("BilinearMatMul",),
    ),
    "softmax_opset13": lambda: Case(
        [N("Softmax", ["x"], ["y"], axis=1)],
        [1, 4, 3],
        opset=13,
        expect=("Softmax",),
    ),
    "softmax_opset11_flattens": lambda: Case(
        [N("Softmax", ["x"], ["y"], axis=1)],
        [1, 4, 3],
        opset=11,
        expect=("Softmax", "Reshape"),
    ),
    "gelu_pattern_half_last": lambda: Case(
        [
            N("Div", ["x", "sqrt2"], ["d"]),
            N("Erf", ["d"], ["e"]),
            N("Add", ["e", "one"], ["a"]),
            N("Mul", ["x", "a"], ["m"]),
            N("Mul", ["m", "half"], ["y"]),
        ],
        [1, 5],
        {
            "sqrt2": np.array(math.sqrt(2), np.float32),
            "one": np.array(1.0, np.float32),
            "half": np.array(0.5, np.float32),
        },
        expect=("Unary",),
    ),
    "gelu_pattern_half_first": lambda: Case(
        [
            N("Mul", ["x", "half"], ["h"]),
            N("Mul", ["x", "rsqrt2"], ["d"]),
            N("Erf", ["d"], ["e"]),
            N("Add", ["one", "e"], ["a"]),
            N("Mul", ["h", "a"], ["y"]),
        ],
        [1, 5],
        {
            "rsqrt2": np.array(1 / math.sqrt(2), np.float32),
            "one": np.array(1.0, np.float32),
            "half": np.array(0.5, np.float32),
        },
        expect=("Unary",),
    ),
    # ---- constant folding
    "fold_shape_reshape": lambda: Case(
        [
            N("Shape", ["x"], ["sh"]),
            N("Gather", ["sh", "zero"], ["n"], axis=0),
            N("Unsqueeze", ["n", "zero1"], ["n1"]),
            N("Concat", ["n1", "minus1"], ["target"], axis=0),
            N("Reshape", ["x", "target"], ["y"]),
        ],
        ["batch", 2, 3],
        {"zero": np.array(0, np.int64), "zero1": I64(0), "minus1": I64(-1)},
        opset=13,
        expect=("Reshape",),
    ),
    "fold_where_range_cast": lambda: Case(
        [
            N(
                "ConstantOfShape",
                ["four"],
                ["ones"],
                value=numpy_helper.from_array(np.array([1], np.int64)),
            ),
            N("Range", ["r0", "r1", "r2"], ["rng"]),
            N("Equal", ["rng", "ones"], ["eq"]),
            N("Where", ["eq", "rng", "ones"], ["w"]),
            N("Cast", ["w"], ["wf"], to=TensorProto.FLOAT),
            N("Constant", [], ["k"], value_float=2.0),
            N("Mul", ["wf", "k"], ["c"]),
            N("Add", ["x", "c"], ["y"]),
        ],
        [1, 4],
        {
            "four": I64(4),
            "r0": np.array(0, np.int64),
            "r1": np.array(4, np.int64),
            "r2": np.array(1, np.int64),
        },
        expect=("ScaleShift",),
    ),
}

UNARY_OPS = [
    ("Relu", -1, 1), ("Sigmoid", -3, 3), ("Tanh", -3, 3), ("Sin", -4, 4),
    ("Cos", -4, 4), ("Exp", -2, 2), ("Log", 0.1, 3), ("Sqrt", 0.1, 3),
    ("Reciprocal", 0.2, 3), ("Atan", -3, 3), ("Erf", -2, 2), ("Softplus", -3, 3),
    ("Abs", -1, 1), ("Floor", -3, 3),
]  # fmt: skip
for _op, _lo, _hi in UNARY_OPS:
    CASES[f"unary_{_op}"] = lambda op=_op, lo=_lo, hi=_hi: Case(
        [N(op, ["x"], ["y"])], [1, 6], low=lo, high=hi, expect=("Unary",)
    )
for _p in (2.0, 3.0, 0.5, -1.0):
    CASES[f"pow_{_p}"] = lambda p=_p: Case(
        [N("Pow", ["x", "p"], ["y"])], [1, 5], {"p": np.array(p, np.float32)},
        low=0.2, high=2.0, expect=("Unary",),
    )  # fmt: skip


def _onnxruntime(path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.stack([sess.run(None, {"x": xi})[0] for xi in x])


def _input_shape(graph: Graph, name: str) -> tuple[int, ...]:
    return graph.input_shape if name == graph.input_name else graph.node(name).shape


def _check_linear(graph: Graph, node: Node) -> None:
    """``abs_forward`` equals ``|J| r``, vjp gives ``J^T``, forward is affine."""
    op = node.op.to("cpu", torch.float64)
    shapes = [_input_shape(graph, i) for i in node.inputs]
    xs = tuple(torch.randn(s, dtype=torch.float64) for s in shapes)
    jac = torch.autograd.functional.jacobian(op.forward, xs)
    out_n = math.prod(node.shape)
    rs = [torch.rand(s, dtype=torch.float64) for s in shapes]
    want = sum(
        j.reshape(out_n, -1).abs() @ r.reshape(-1) for j, r in zip(jac, rs, strict=True)
    )
    got = op.abs_forward(*rs).reshape(-1)
    assert torch.allclose(got, want, atol=1e-10), node.name

    # the transposed map by vjp under vmap, as the bound engine computes it
    zeros = [torch.zeros(s, dtype=torch.float64) for s in shapes]
    zero, vjp = torch.func.vjp(op.forward, *zeros)
    cot = torch.randn(3, *node.shape, dtype=torch.float64)
    grads = torch.vmap(vjp)(cot)
    for g, j in zip(grads, jac, strict=True):
        want_t = cot.reshape(3, out_n) @ j.reshape(out_n, -1)
        assert torch.allclose(g.reshape(3, -1), want_t, atol=1e-10), node.name
    batched = torch.vmap(op.abs_forward)(*(torch.stack([r, r]) for r in rs))
    assert torch.allclose(batched[1].reshape(-1), want, atol=1e-10), node.name

    ys = tuple(torch.randn(s, dtype=torch.float64) for s in shapes)
    mix = op.forward(*(2.0 * x - 3.0 * y for x, y in zip(xs, ys, strict=True)))
    lin = 2.0 * (op.forward(*xs) - zero) - 3.0 * (op.forward(*ys) - zero)
    assert torch.allclose(mix - zero, lin, atol=1e-9), node.name


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_onnxruntime(tmp_path: Path, name: str) -> None:
    case = CASES[name]()
    path = save(tmp_path, case)
    graph = load_model(path)
    kinds = {n.op.op_type for n in graph.nodes}
    assert set(case.expect) <= kinds, f"graph has {kinds}"

    gen = np.random.default_rng(1)
    x = gen.uniform(case.low, case.high, (4, *graph.input_shape)).astype(np.float32)
    ref = _onnxruntime(path, x)
    y32 = graph.forward(torch.from_numpy(x)).numpy()
    y64 = graph.to("cpu", torch.float64).forward(torch.from_numpy(x).double())
    assert y32.shape == ref.shape == (4, *graph.output_shape)
    np.testing.assert_allclose(y32, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y64.numpy(), ref, rtol=1e-5, atol=1e-5)

    for node in graph.nodes:
        if node.op.linear:
            _check_linear(graph, node)


def test_gelu_pattern_becomes_one_node(tmp_path: Path) -> None:
    for name in ("gelu_pattern_half_last", "gelu_pattern_half_first"):
        graph = load_model(save(tmp_path, CASES[name](), f"{name}.onnx"))
        assert [repr(n.op) for n in graph.nodes] == ["Unary(gelu)"]
        assert graph.nodes[0].name == graph.output_name


def test_node_names_and_shapes(tmp_path: Path) -> None:
    graph = load_model(save(tmp_path, CASES["div_variables"]()))
    names = [n.name for n in graph.nodes]
    assert len(set(names)) == len(names)
    assert any(n.endswith("/recip") for n in names)
    assert graph.input_shape == (2, 3)
    assert graph.num_inputs == 6 and graph.num_outputs == 6


def test_dynamic_batch_becomes_one(tmp_path: Path) -> None:
    graph = load_model(save(tmp_path, CASES["gemm_variable_B"]()))
    assert graph.input_shape == (1, 3)
    assert graph.output_shape == (4, 1)


# ------------------------------------------------------------------ errors
def test_unsupported_operator_names_op_and_node(tmp_path: Path) -> None:
    case = Case(
        [N("Relu", ["x"], ["r"]), N("Hardmax", ["r"], ["y"], name="hm")], [1, 3]
    )
    with pytest.raises(UnsupportedOperatorError, match=r"Hardmax.*'hm'") as info:
        load_model(save(tmp_path, case))
    assert info.value.op_type == "Hardmax" and info.value.node_name == "hm"


def test_where_on_variable_is_unsupported(tmp_path: Path) -> None:
    case = Case(
        [
            N("Greater", ["x", "z"], ["g"], name="cmp"),
            N("Where", ["g", "x", "z"], ["y"], name="sel"),
        ],
        [1, 3],
        {"z": np.zeros(1, np.float32)},
    )
    with pytest.raises(UnsupportedOperatorError, match="Greater.*'cmp'"):
        load_model(save(tmp_path, case))


def test_unsupported_attribute(tmp_path: Path) -> None:
    case = Case(
        [N("Resize", ["x", "", "s"], ["y"], mode="linear", name="rs")],
        [1, 1, 2, 2],
        {"s": np.array([1, 1, 2, 2], np.float32)},
        opset=13,
    )
    with pytest.raises(UnsupportedOperatorError, match="Resize.*'rs'.*linear"):
        load_model(save(tmp_path, case))


def test_used_dropped_output_is_an_error(tmp_path: Path) -> None:
    case = Case(
        [
            N("Dropout", ["x"], ["d", "mask"], name="drop"),
            N("Cast", ["mask"], ["mf"], to=TensorProto.FLOAT),
            N("Add", ["d", "mf"], ["y"]),
        ],
        [1, 3],
    )
    with pytest.raises(UnsupportedOperatorError, match="Dropout.*'drop'.*output 1"):
        load_model(save(tmp_path, case))


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.onnx"
    with pytest.raises(ModelError, match="nope.onnx.*not found"):
        load_model(path)


def test_garbage_bytes(tmp_path: Path) -> None:
    path = tmp_path / "garbage.onnx"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ModelError, match="garbage.onnx"):
        load_model(path)


def test_truncated_gzip(tmp_path: Path) -> None:
    data = gzip.compress(save(tmp_path, CASES["gemm"]()).read_bytes())
    path = tmp_path / "cut.onnx.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="cut.onnx.gz.*gzip"):
        load_model(path)


def test_gzip_loads(tmp_path: Path) -> None:
    plain = save(tmp_path, CASES["gemm"]())
    path = tmp_path / "m.onnx.gz"
    path.write_bytes(gzip.compress(plain.read_bytes()))
    x = torch.rand(2, 2, 3)
    assert torch.equal(load_model(path).forward(x), load_model(plain).forward(x))


def test_two_inputs(tmp_path: Path) -> None:
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 2])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
    g = helper.make_graph([N("Add", ["a", "b"], ["y"])], "g", [a, b], [y])
    path = tmp_path / "two.onnx"
    onnx.save(helper.make_model(g), path)
    with pytest.raises(ModelError, match="two.onnx.*exactly one graph input"):
        load_model(path)


def test_constant_output(tmp_path: Path) -> None:
    case = Case([N("Constant", [], ["y"], value_float=1.0)], [1, 2])
    with pytest.raises(ModelError, match="does not depend on the input"):
        load_model(save(tmp_path, case))


def test_unsorted_nodes_are_ordered(tmp_path: Path) -> None:
    case = Case([N("Relu", ["r"], ["y"]), N("Neg", ["x"], ["r"])], [1, 4])
    graph = load_model(save(tmp_path, case))
    x = torch.randn(3, 1, 4)
    assert torch.equal(graph.forward(x), torch.relu(-x))


def test_input_without_shape(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, None)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    g = helper.make_graph([N("Relu", ["x"], ["y"])], "g", [x], [y])
    path = tmp_path / "noshape.onnx"
    onnx.save(helper.make_model(g), path)
    with pytest.raises(ModelError, match="noshape.onnx.*no declared shape"):
        load_model(path)
