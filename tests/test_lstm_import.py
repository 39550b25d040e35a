"""The ONNX LSTM operator and exported LSTMs: import, evaluation, errors, bounds.

Models are built here with ``onnx.helper`` (random weights) or exported from
torch; genbab's graph is compared with onnxruntime on random inputs.
"""

from __future__ import annotations

import io
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from lstm_helpers import box_samples, output_bounds
from onnx import TensorProto, helper, numpy_helper

import genbab
from genbab.errors import UnsupportedOperatorError
from genbab.model import load_model
from genbab.result import Verdict

TOLERANCE = 1e-5  # on max |error| / (1 + max |reference|)
OUTPUT_SHAPES = {
    "Y": lambda seq, nd, batch, hidden: [seq, nd, batch, hidden],
    "Y_h": lambda seq, nd, batch, hidden: [nd, batch, hidden],
    "Y_c": lambda seq, nd, batch, hidden: [nd, batch, hidden],
}


def lstm_model(
    seq: int,
    hidden: int,
    *,
    n_in: int = 3,
    batch: int = 1,
    direction: str = "forward",
    bias: bool = True,
    state: str = "none",
    output: str = "Y_h",
    seed: int = 0,
    extra_inputs: dict[int, np.ndarray] | None = None,
    **attrs: object,
) -> onnx.ModelProto:
    """``input [seq, batch, n_in] -> LSTM -> output`` (one of Y, Y_h, Y_c).

    ``state`` is ``"none"`` (zero initial states), ``"const"`` (random
    initializers) or ``"var"`` (``initial_h = tanh(x_0 M)`` and ``initial_c =
    sin(initial_h)``, computed from the input). ``extra_inputs`` sets LSTM
    inputs by position (4: sequence_lens, 7: P); ``attrs`` are LSTM attributes.
    """
    rng = np.random.default_rng(seed)
    nd = 2 if direction == "bidirectional" else 1

    def init(name: str, a: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(a, name))
        return name

    inits: list[TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    ins = ["input", "", "", "", "", "", "", ""]
    ins[1] = init("W", rng.normal(size=(nd, 4 * hidden, n_in)).astype(np.float32))
    ins[2] = init("R", 0.7 * rng.normal(size=(nd, 4 * hidden, hidden)).astype("f4"))
    if bias:
        ins[3] = init("B", rng.normal(size=(nd, 8 * hidden)).astype(np.float32))
    if state == "const":
        ins[5] = init("h0", rng.normal(size=(nd, batch, hidden)).astype("f4"))
        ins[6] = init("c0", rng.normal(size=(nd, batch, hidden)).astype("f4"))
    elif state == "var":
        init("zero", np.array(0, np.int64))
        init("M", rng.normal(size=(n_in, hidden)).astype(np.float32))
        init("state_shape", np.array([nd, batch, hidden], np.int64))
        nodes += [
            helper.make_node("Gather", ["input", "zero"], ["x0"], axis=0),
            helper.make_node("MatMul", ["x0", "M"], ["x0M"]),
            helper.make_node("Tanh", ["x0M"], ["h0_one"]),
            helper.make_node("Expand", ["h0_one", "state_shape"], ["h0"]),
            helper.make_node("Sin", ["h0"], ["c0"]),
        ]
        ins[5], ins[6] = "h0", "c0"
    for k, value in (extra_inputs or {}).items():
        ins[k] = init(f"in{k}", value)
    while ins[-1] == "":
        ins.pop()
    outs = ["Y", "Y_h", "Y_c"]
    outs = [o if o == output else "" for o in outs[: outs.index(output) + 1]]
    attrs = {"hidden_size": hidden, "direction": direction, **attrs}
    nodes.append(helper.make_node("LSTM", ins, outs, name="lstm", **attrs))
    shape = OUTPUT_SHAPES[output](seq, nd, batch, hidden)
    graph = helper.make_graph(
        nodes,
        "lstm",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [seq, batch, n_in])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, shape)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _save(model: onnx.ModelProto, tmp_path: Path, check: bool = True) -> Path:
    if check:
        onnx.checker.check_model(model, full_check=True)
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    return path


def _reference(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    name = sess.get_inputs()[0].name
    return np.stack([sess.run(None, {name: xi})[0] for xi in x])


def _assert_matches(model: onnx.ModelProto, path: Path, x: np.ndarray) -> None:
    """genbab's graph (float32 and float64) equals onnxruntime on ``x``."""
    graph = load_model(path)
    ref = _reference(model, x)
    assert ref.shape == (len(x), *graph.output_shape)
    scale = 1.0 + np.abs(ref).max()
    y32 = graph.forward(torch.from_numpy(x)).numpy()
    assert np.abs(y32 - ref).max() / scale < TOLERANCE
    y64 = graph.to("cpu", torch.float64).forward(torch.from_numpy(x).double())
    assert np.abs(y64.numpy() - ref).max() / scale < TOLERANCE


def _inputs(shape: tuple[int, ...], n: int = 6, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype(np.float32)


CASES = [
    # seq, hidden, direction, bias, state, output, batch
    (1, 1, "forward", True, "none", "Y_h", 1),
    (1, 3, "forward", False, "const", "Y", 1),
    (2, 3, "forward", True, "var", "Y_c", 1),
    (3, 8, "forward", True, "none", "Y", 1),
    (5, 4, "forward", True, "const", "Y_h", 1),
    (5, 2, "forward", False, "var", "Y", 1),
    (4, 3, "reverse", True, "none", "Y", 1),
    (3, 5, "reverse", True, "var", "Y_h", 1),
    (2, 2, "reverse", False, "const", "Y_c", 1),
    (3, 4, "bidirectional", True, "none", "Y", 1),
    (4, 3, "bidirectional", True, "const", "Y_h", 1),
    (2, 2, "bidirectional", False, "var", "Y_c", 1),
    (5, 6, "bidirectional", True, "var", "Y", 1),
    (3, 4, "forward", True, "const", "Y", 2),
    (2, 3, "bidirectional", True, "var", "Y_h", 3),
]


@pytest.mark.parametrize(
    ("seq", "hidden", "direction", "bias", "state", "output", "batch"),
    CASES,
    ids=["-".join(map(str, c)) for c in CASES],
)
def test_lstm_operator_matches_onnxruntime(
    tmp_path: Path,
    seq: int,
    hidden: int,
    direction: str,
    bias: bool,
    state: str,
    output: str,
    batch: int,
) -> None:
    model = lstm_model(
        seq, hidden, batch=batch, direction=direction, bias=bias, state=state,
        output=output, seed=seq * 10 + hidden,
    )  # fmt: skip
    _assert_matches(model, _save(model, tmp_path), _inputs((seq, batch, 3)))


def test_explicit_default_activations_and_other_gate_functions(tmp_path: Path) -> None:
    default = lstm_model(3, 4, activations=["Sigmoid", "Tanh", "Tanh"])
    _assert_matches(default, _save(default, tmp_path), _inputs((3, 1, 3)))
    other = lstm_model(
        3, 4, direction="bidirectional",
        activations=["Sigmoid", "Relu", "Tanh", "Tanh", "Tanh", "Sigmoid"],
    )  # fmt: skip
    _assert_matches(other, _save(other, tmp_path), _inputs((3, 1, 3)))
    funcs = Counter(n.op.func for n in load_model(tmp_path / "model.onnx").nodes
                    if n.op.op_type == "Unary")  # fmt: skip
    # 3 steps per direction; the first step's forget gate multiplies the zero
    # initial cell, so it is dropped. Forward: sigmoid gates (3 * 3 - 1), relu
    # cell candidates (3), tanh of the cell (3); reverse: tanh gates (8), tanh
    # candidates (3), sigmoid of the cell (3).
    assert funcs == {"sigmoid": 8 + 3, "relu": 3, "tanh": 3 + 8 + 3}


def test_full_sequence_lens_and_zero_peepholes_are_accepted(tmp_path: Path) -> None:
    extra = {4: np.array([4], np.int32), 7: np.zeros((1, 9), np.float32)}
    model = lstm_model(4, 3, output="Y", extra_inputs=extra)
    _assert_matches(model, _save(model, tmp_path), _inputs((4, 1, 3)))


def test_graph_has_gate_products_and_s_shaped_units(tmp_path: Path) -> None:
    seq, hidden = 4, 5
    graph = load_model(_save(lstm_model(seq, hidden, output="Y_h"), tmp_path))
    kinds = Counter(
        n.op.op_type + (f":{n.op.func}" if n.op.op_type == "Unary" else "")
        for n in graph.nodes
    )
    # zero initial state: no f * c (so no forget gate) and no h R^T at step 0
    assert kinds["Mul"] == 3 * seq - 1
    assert kinds["Unary:sigmoid"] == 3 * seq - 1
    assert kinds["Unary:tanh"] == 2 * seq
    assert kinds["Linear"] == 1 + (seq - 1)  # x W^T for all steps, h R^T per step
    assert set(kinds) <= {
        "Linear", "Gather", "Select", "Unary:sigmoid", "Unary:tanh", "Mul",
        "WeightedSum", "Reshape",
    }  # fmt: skip
    products = [n for n in graph.nodes if n.op.op_type == "Mul"]
    assert all(n.shape == (1, hidden) for n in products)


UNSUPPORTED = {
    "clip": ({"clip": 3.0}, None, "'clip'"),
    "input_forget": ({"input_forget": 1}, None, "'input_forget'"),
    "layout": ({"layout": 1}, None, "'layout'=1"),
    "activation_alpha": (
        {"activations": ["LeakyRelu", "Tanh", "Tanh"], "activation_alpha": [0.1]},
        None,
        "'activation_alpha'",
    ),
    "activations": (
        {"activations": ["HardSigmoid", "Tanh", "Tanh"]},
        None,
        "'activations' = 'HardSigmoid'",
    ),
    "activation count": ({"activations": ["Sigmoid", "Tanh"]}, None, "2 entries"),
    "sequence_lens": ({}, {4: np.array([2], np.int32)}, "'sequence_lens'"),
    "peepholes": ({}, {7: np.ones((1, 9), np.float32)}, "'P'"),
    "hidden_size": (None, None, "'hidden_size' is missing"),
}


def _without_hidden_size(model: onnx.ModelProto) -> onnx.ModelProto:
    (node,) = [n for n in model.graph.node if n.op_type == "LSTM"]
    kept = [a for a in node.attribute if a.name != "hidden_size"]
    del node.attribute[:]
    node.attribute.extend(kept)
    return model


@pytest.mark.parametrize("case", sorted(UNSUPPORTED))
def test_unsupported_attribute_is_named(tmp_path: Path, case: str) -> None:
    attrs, extra, needle = UNSUPPORTED[case]
    model = lstm_model(3, 3, extra_inputs=extra, **(attrs or {}))
    if attrs is None:
        model = _without_hidden_size(model)
    path = _save(model, tmp_path, check=False)
    with pytest.raises(UnsupportedOperatorError) as info:
        load_model(path)
    message = str(info.value)
    assert info.value.op_type == "LSTM" and info.value.node_name == "lstm"
    assert message.startswith("unsupported operator LSTM at node 'lstm': ")
    assert needle in message


def test_unsupported_lstm_is_an_error_verdict(tmp_path: Path) -> None:
    path = _save(lstm_model(2, 2, clip=1.0), tmp_path, check=False)
    prop = tmp_path / "prop.vnnlib"
    lines = [f"(declare-const X_{i} Real)" for i in range(6)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(2)]
    lines += [f"(assert (>= X_{i} 0.0))\n(assert (<= X_{i} 1.0))" for i in range(6)]
    lines.append("(assert (>= Y_0 Y_1))")
    prop.write_text("\n".join(lines) + "\n")
    result = genbab.verify(path, prop, timeout=20)
    assert result.verdict == Verdict.ERROR
    assert "LSTM at node 'lstm'" in result.message and "'clip'" in result.message


# ------------------------------------------------------------------ torch exports
def _export(module: torch.nn.Module, shape: tuple[int, ...]) -> onnx.ModelProto:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(), (torch.zeros(shape),), buffer, dynamo=False,
            opset_version=17, input_names=["input"], output_names=["output"],
        )  # fmt: skip
    return onnx.load_from_string(buffer.getvalue())


class _TorchLstm(torch.nn.Module):
    """``nn.LSTM`` (batch first) and a linear head on the output of the last step."""

    def __init__(self, bidirectional: bool, layers: int) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(
            6, 5, num_layers=layers, batch_first=True, bidirectional=bidirectional
        )
        self.head = torch.nn.Linear(10 if bidirectional else 5, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.lstm(x)
        return self.head(y[:, -1])


class _CellSteps(torch.nn.Module):
    """An LSTM written step by step with ``nn.Linear`` gates and ``torch.split``."""

    def __init__(self, steps: int, n_in: int, hidden: int) -> None:
        super().__init__()
        self.steps, self.hidden = steps, hidden
        self.ih = torch.nn.Linear(n_in, 4 * hidden)
        self.hh = torch.nn.Linear(hidden, 4 * hidden, bias=False)
        self.head = torch.nn.Linear(hidden, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.zeros(x.shape[0], self.hidden)
        c = torch.zeros(x.shape[0], self.hidden)
        for t in range(self.steps):
            gates = self.ih(x[:, t, :]) + self.hh(h)
            i, f, g, o = torch.split(gates, self.hidden, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
        return self.head(h)


@pytest.mark.parametrize(
    ("bidirectional", "layers"), [(False, 1), (True, 1), (False, 2)]
)
def test_torch_exported_lstm_operator(
    tmp_path: Path, bidirectional: bool, layers: int
) -> None:
    torch.manual_seed(layers)
    module = _TorchLstm(bidirectional, layers)
    model = _export(module, (1, 4, 6))
    assert "LSTM" in {n.op_type for n in model.graph.node}
    x = _inputs((1, 4, 6))
    _assert_matches(model, _save(model, tmp_path), x)
    with torch.no_grad():
        expected = module(torch.from_numpy(x[:, 0])).numpy()
    assert np.abs(_reference(model, x)[:, 0] - expected).max() < 1e-5


def test_torch_exported_cell_steps(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _export(_CellSteps(3, 4, 5), (1, 3, 4))
    ops = {n.op_type for n in model.graph.node}
    assert {"Gemm", "Split", "Sigmoid", "Tanh", "Mul", "Add"} <= ops
    assert "LSTM" not in ops
    _assert_matches(model, _save(model, tmp_path), _inputs((1, 3, 4)))


# ------------------------------------------------------------------ bounds
@pytest.mark.parametrize("method", ["interval", "crown", "alpha-crown"])
def test_bounds_enclose_onnxruntime_on_random_lstm(tmp_path: Path, method: str) -> None:
    model = lstm_model(
        3, 4, direction="bidirectional", state="const", output="Y", seed=7
    )
    path = _save(model, tmp_path)
    rng = np.random.default_rng(3)
    centre = rng.normal(size=9)
    lower, upper = centre - 0.3, centre + 0.3
    lo, hi = output_bounds(path, lower, upper, method)
    x = box_samples(lower, upper, 200)
    y = _reference(model, x.reshape(-1, 3, 1, 3)).reshape(len(x), -1)
    assert np.all(y >= lo - 1e-6) and np.all(y <= hi + 1e-6)
    assert np.all(hi - lo < 10)  # bounded, not vacuous
