"""Bounds of tiny graphs: products, division, LayerNorm's parts, sin of a layer.

Hand-computed values pin interval, CROWN and alpha-CROWN bounds of graphs small
enough to work out on paper; ONNX models checked against onnxruntime cover the
operator patterns exporters write (``Div`` of two variables, decomposed
LayerNorm). Non-finite input bounds must raise an error naming the node.
"""

from __future__ import annotations

import math

import bounds_sampling as bs
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import relax_sampling as rs
import torch
from onnx import TensorProto, helper, numpy_helper

from genbab.bounds import Box, Engine, bound_objective
from genbab.bounds.nonlinear import relax_unary, unary_interval
from genbab.bounds.objective import Objective
from genbab.bounds.relax import UNARY_FAMILIES
from genbab.bounds.rules import rule_for
from genbab.config import BoundsConfig
from genbab.errors import BoundsError
from genbab.model import load_model
from genbab.model.graph import Graph, Node
from genbab.model.ops import Concat, Linear, Mul, Unary

DT = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    with rs.single_thread():
        yield


def _pick(n: int, rows: list[list[float]], bias=None) -> Linear:
    """``x @ W`` with ``W[:, j] = rows[j]``: output ``j`` is ``rows[j] . x``."""
    w = torch.tensor(rows, dtype=DT).T.reshape(n, len(rows))
    return Linear(w, None if bias is None else torch.tensor(bias, dtype=DT))


def _box(lo: list[float], hi: list[float]) -> Box:
    return Box(torch.tensor([lo], dtype=DT), torch.tensor([hi], dtype=DT))


def _rows(*rows: list[float]) -> Objective:
    c = torch.tensor([rows], dtype=DT)
    S = c.shape[1]
    # Thresholds far above any bound: nothing is proven, alpha-CROWN runs fully.
    rhs = torch.full((1, S), 1e9, dtype=DT)
    return Objective(c, rhs, torch.ones(1, S, dtype=torch.bool), 1)


# ---------------------------------------------------------------- x * y


def _product_graph() -> Graph:
    nodes = [
        Node("x", _pick(2, [[1.0, 0.0]]), ("input",), (1,)),
        Node("y", _pick(2, [[0.0, 1.0]]), ("input",), (1,)),
        Node("xy", Mul(), ("x", "y"), (1,)),
    ]
    return Graph("input", (2,), nodes, "xy")


def test_product_by_hand() -> None:
    """``x y`` on ``[1, 2] x [-1, 3]``: exact range ``[-2, 6]``.

    Weight-0.5 planes: lower ``x + 1.5 y - 2.5`` (min -3 at (1, -1)), upper
    ``x + 1.5 y - 0.5`` (max 6 at (2, 3)). alpha-CROWN moves the lower plane to
    the first McCormick plane ``-x + y + 1``, whose minimum -2 is exact.
    """
    graph = _product_graph()
    box = _box([1.0, -1.0], [2.0, 3.0])
    res = bs.check_graph(graph, box)
    assert res["interval"][0].item() == -2.0 and res["interval"][1].item() == 6.0
    lo, hi = res["crown"]
    assert lo.item() == pytest.approx(-3.0, abs=1e-12)
    assert hi.item() == pytest.approx(6.0, abs=1e-12)
    cfg = BoundsConfig(method="alpha-crown", intermediate="crown", alpha_lr=0.5)
    engine = Engine(graph, DT)
    low, _ = bound_objective(engine, box, _rows([1.0], [-1.0]), cfg)
    assert low[0, 0].item() == pytest.approx(-2.0, abs=1e-6)
    assert low[0, 0].item() <= -2.0 + 1e-12  # never past the true minimum
    assert -low[0, 1].item() == pytest.approx(6.0, abs=1e-9)


@pytest.mark.parametrize("radius", [1e-3, 0.5, 4.0])
def test_product_of_correlated_values(radius: float) -> None:
    """``(a + b)(a - b)`` and ``sigmoid(a) * tanh(b)``: products of shared inputs."""
    nodes = [
        Node("s", _pick(2, [[1.0, 1.0]]), ("input",), (1,)),
        Node("d", _pick(2, [[1.0, -1.0]]), ("input",), (1,)),
        Node("sd", Mul(), ("s", "d"), (1,)),
        Node("sig", Unary("sigmoid"), ("s",), (1,)),
        Node("th", Unary("tanh"), ("d",), (1,)),
        Node("gate", Mul(), ("sig", "th"), (1,)),
        Node("cat", Concat(0, ((0, 1), (1, 1))), ("sd", "gate"), (2,)),
        Node("out", _pick(2, [[1.0, 0.0], [0.0, 1.0], [1.0, -2.0]]), ("cat",), (3,)),
    ]
    graph = Graph("input", (2,), nodes, "out")
    g = torch.Generator().manual_seed(0)
    c = torch.rand(3, 2, generator=g, dtype=DT) * 4 - 2
    bs.check_graph(graph, Box(c - radius, c + radius))


# ---------------------------------------------------------------- ONNX models


def _save(path, nodes, inits, n_in: int, n_out: int, opset: int = 17):
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, n_in])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, n_out])],
        [
            numpy_helper.from_array(np.asarray(v, np.float32), k)
            for k, v in inits.items()
        ],  # noqa: E501
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _division_model(path):
    """``output = [x0 / (x1 + 3), (x0 - x1) / (x0 + x1 + 4)]`` (positive divisors)."""
    N = helper.make_node
    nodes = [
        N("Gather", ["input", "i0"], ["x0"], axis=1),
        N("Gather", ["input", "i1"], ["x1"], axis=1),
        N("Add", ["x1", "three"], ["d0"]),
        N("Div", ["x0", "d0"], ["q0"]),
        N("Sub", ["x0", "x1"], ["n1"]),
        N("Add", ["x0", "x1"], ["s1"]),
        N("Add", ["s1", "four"], ["d1"]),
        N("Div", ["n1", "d1"], ["q1"]),
        N("Concat", ["q0", "q1"], ["output"], axis=1),
    ]
    inits = {"i0": np.array([0]), "i1": np.array([1]), "three": 3.0, "four": 4.0}
    inits = {k: np.asarray(v) for k, v in inits.items()}
    graph = helper.make_graph(
        nodes,
        "div",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 2])],
        [
            numpy_helper.from_array(
                v.astype(np.int64 if v.dtype.kind == "i" else np.float32), k
            )
            for k, v in inits.items()
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _layer_norm_model(path, n: int = 4, seed: int = 0):
    """Linear layer, then LayerNorm as exporters before opset 17 write it."""
    rng = np.random.default_rng(seed)
    N = helper.make_node
    nodes = [
        N("Gemm", ["input", "W", "B"], ["h"], transB=1),
        N("ReduceMean", ["h"], ["mean"], axes=[-1]),
        N("Sub", ["h", "mean"], ["centred"]),
        N("Pow", ["centred", "two"], ["square"]),
        N("ReduceMean", ["square"], ["var"], axes=[-1]),
        N("Add", ["var", "eps"], ["var_eps"]),
        N("Sqrt", ["var_eps"], ["std"]),
        N("Div", ["centred", "std"], ["normed"]),
        N("Mul", ["normed", "gamma"], ["scaled"]),
        N("Add", ["scaled", "beta"], ["output"]),
    ]
    inits = {
        "W": rng.normal(size=(n, 3)),
        "B": rng.normal(size=n),
        "two": 2.0,
        "eps": 1e-5,
        "gamma": rng.uniform(0.5, 1.5, size=n),
        "beta": rng.normal(size=n) * 0.1,
    }
    return _save(path, nodes, inits, 3, n)


def _sin_model(path):
    """``sin(W x + b)`` then a linear layer: sin over intervals of any width."""
    rng = np.random.default_rng(1)
    N = helper.make_node
    nodes = [
        N("Gemm", ["input", "W", "B"], ["h"], transB=1),
        N("Sin", ["h"], ["s"]),
        N("Cos", ["h"], ["c"]),
        N("Mul", ["s", "c"], ["sc"]),
        N("Gemm", ["sc", "W2", "B2"], ["output"], transB=1),
    ]
    inits = {
        "W": rng.normal(size=(5, 3)) * 2,
        "B": rng.normal(size=5),
        "W2": rng.normal(size=(2, 5)),
        "B2": rng.normal(size=2),
    }
    return _save(path, nodes, inits, 3, 2)


MODELS = {
    "division": _division_model,
    "layer_norm": _layer_norm_model,
    "sin": _sin_model,
}
BOXES = {
    "division": [((0.3, -0.5), 0.01), ((1.0, 0.5), 0.5), ((-1.0, 1.0), 0.9)],
    "layer_norm": [((0.2, -0.1, 0.4), 0.01), ((0.5, 0.5, -0.5), 0.1), ((0, 0, 0), 1.0)],
    "sin": [((0.1, 0.2, 0.3), 0.01), ((0.0, 0.5, -0.5), 0.3), ((1.0, 0.0, 2.0), 2.0)],
}


@pytest.mark.parametrize("name", MODELS)
def test_onnx_patterns_enclose_onnxruntime(tmp_path, name: str) -> None:
    path = MODELS[name](tmp_path / f"{name}.onnx")
    graph = load_model(path).to("cpu", DT)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for center, radius in BOXES[name]:
        c = torch.tensor([[center]], dtype=DT)
        box = Box(c - radius, c + radius)
        res = bs.check_graph(graph, box)
        x = bs.box_points(box.lower, box.upper)[0].numpy().astype(np.float32)
        y = np.concatenate([sess.run(None, {"input": xi})[0] for xi in x])
        # onnxruntime computes in float32: a few ulps of the largest value.
        tol = 1e-5 * (1 + np.abs(y).max())
        for method in ("interval", "crown"):
            lo, hi = (t[0].numpy() for t in res[method])
            assert (y >= lo - tol).all() and (y <= hi + tol).all(), (name, method)


def test_division_by_hand() -> None:
    """``x / y`` on ``[1, 2] x [1, 2]``, as ``x * reciprocal(y)``: exact [0.5, 2].

    ``r = 1/y`` in ``[0.5, 1]`` with the tangent at 1.5 below (``4/3 - 4y/9``)
    and the chord above (``1.5 - y/2``). Weight-0.5 product planes: lower
    ``0.75 x + 1.5 r - 1.25`` gives ``0.75 x - 2y/3 + 0.75``, min 1/6 at (1, 2);
    upper ``0.75 x + 1.5 r - 1`` gives ``0.75 x - 0.75 y + 1.25``, max 2 at (2, 1).
    """
    nodes = [
        Node("x", _pick(2, [[1.0, 0.0]]), ("input",), (1,)),
        Node("y", _pick(2, [[0.0, 1.0]]), ("input",), (1,)),
        Node("r", Unary("reciprocal"), ("y",), (1,)),
        Node("q", Mul(), ("x", "r"), (1,)),
    ]
    graph = Graph("input", (2,), nodes, "q")
    res = bs.check_graph(graph, _box([1.0, 1.0], [2.0, 2.0]))
    assert res["interval"][0].item() == 0.5 and res["interval"][1].item() == 2.0
    lo, hi = res["crown"]
    assert lo.item() == pytest.approx(1 / 6, abs=1e-12)
    assert hi.item() == pytest.approx(2.0, abs=1e-12)


def test_sin_of_a_layer_by_hand() -> None:
    """``sin(x0 + x1)`` on ``[0, pi/4]^2``: ``h`` in ``[0, pi/2]``, range [0, 1].

    sin is concave there: the chord ``2h/pi`` below (min 0), the tangent at
    ``pi/4`` above, max ``(1 + pi/4) / sqrt 2`` at ``h = pi/2``.
    """
    nodes = [
        Node("h", _pick(2, [[1.0, 1.0]]), ("input",), (1,)),
        Node("s", Unary("sin"), ("h",), (1,)),
    ]
    graph = Graph("input", (2,), nodes, "s")
    q = math.pi / 4
    res = bs.check_graph(graph, _box([0.0, 0.0], [q, q]))
    ilo, ihi = res["interval"]
    assert ilo.item() == pytest.approx(0.0, abs=1e-12)
    assert ihi.item() == pytest.approx(1.0, abs=1e-12)
    lo, hi = res["crown"]
    assert lo.item() == pytest.approx(0.0, abs=1e-12)
    assert hi.item() == pytest.approx((1 + q) / math.sqrt(2), abs=1e-12)


def test_layer_norm_parts_by_hand() -> None:
    """LayerNorm's variance of two entries, ``((x0 - x1) / 2)^2``, on a box.

    ``x0 - x1`` in ``[1, 3]`` (x0 in [2, 3], x1 in [0, 1]): the centred value
    ``c = (x0 - x1) / 2`` is in ``[0.5, 1.5]``; the square's chord ``2 c - 0.75``
    bounds the variance above (max 2.25), the midpoint tangent ``2 c - 1`` below
    (min 0, weaker than the interval's 0.25). The normalised value ``c / sqrt(c^2
    + eps)`` is then bounded by sampling.
    """
    half = [[0.5, -0.5]]
    one = torch.ones(1, 1, dtype=DT)
    nodes = [
        Node("c", _pick(2, half), ("input",), (1,)),
        Node("sq", Unary("pow", 2.0), ("c",), (1,)),
        Node("var", Linear(one, torch.tensor([1e-5], dtype=DT)), ("sq",), (1,)),
        Node("std", Unary("sqrt"), ("var",), (1,)),
        Node("inv", Unary("reciprocal"), ("std",), (1,)),
        Node("normed", Mul(), ("c", "inv"), (1,)),
    ]
    box = _box([2.0, 0.0], [3.0, 1.0])
    var = Graph("input", (2,), nodes[:2], "sq")
    res = bs.check_graph(var, box)
    assert res["interval"][0].item() == 0.25 and res["interval"][1].item() == 2.25
    lo, hi = res["crown"]
    assert lo.item() == pytest.approx(0.0, abs=1e-12)
    assert hi.item() == pytest.approx(2.25, abs=1e-12)
    res = bs.check_graph(Graph("input", (2,), nodes, "normed"), box)
    # True range: c / sqrt(c^2 + eps) increases from 0.99998 (c = 0.5) to 0.999998.
    for method in ("interval", "crown"):
        lo, hi = res[method]
        assert lo.item() <= 0.5 / math.sqrt(0.25 + 1e-5)
        assert hi.item() >= 1.5 / math.sqrt(2.25 + 1e-5)


# ---------------------------------------------------------------- errors


PARAMS = {"pow": 2.0, "leaky_relu": 0.1}


@pytest.mark.parametrize("func", sorted(set(UNARY_FAMILIES) - {"square"}))
def test_unary_non_finite_input_bounds_name_the_node(func: str) -> None:
    op = Unary(func, PARAMS.get(func))
    node = Node(f"node_{func}", op, ("x",), (2,))
    lo = torch.tensor([[0.5, 1.0]], dtype=DT)
    for bad, word in ((math.inf, "infinite"), (math.nan, "NaN")):
        hi = torch.tensor([[1.0, bad]], dtype=DT)
        with pytest.raises(BoundsError, match=f"node 'node_{func}'.*{word}"):
            unary_interval(node, lo, hi)
        with pytest.raises(BoundsError, match=f"node 'node_{func}'.*{word}"):
            relax_unary(node, lo, hi)


def test_mul_non_finite_input_bounds_name_the_node() -> None:
    node = Node("prod", Mul(), ("x", "y"), (2,))
    rule = rule_for(node)
    ok = (torch.zeros(1, 2, dtype=DT), torch.ones(1, 2, dtype=DT))
    bad = (torch.zeros(1, 2, dtype=DT), torch.tensor([[1.0, math.nan]], dtype=DT))
    with pytest.raises(BoundsError, match="node 'prod' \\(Mul\\).*NaN"):
        rule.interval(node, [ok, bad])
    a = torch.ones(1, 1, 2, dtype=DT)
    with pytest.raises(BoundsError, match="node 'prod' \\(Mul\\).*infinite"):
        rule.backward(node, a, [(ok[0] - math.inf, ok[1]), ok], None, [(2,), (2,)])


def test_unbounded_input_box_names_the_first_nonlinear_node() -> None:
    nodes = [
        Node("h", _pick(2, [[1.0, 1.0]]), ("input",), (1,)),
        Node("act", Unary("sigmoid"), ("h",), (1,)),
    ]
    engine = Engine(Graph("input", (2,), nodes, "act"), DT)
    box = _box([0.0, -math.inf], [1.0, 1.0])
    with pytest.raises(BoundsError, match="node 'act' \\(sigmoid\\)"):
        engine.interval(box)
    with pytest.raises(BoundsError, match="node 'act' \\(sigmoid\\)"):
        engine.crown_bounds(box)


# ---------------------------------------------------------------- unary intervals

UNARY_CASES = {
    "relu": (None, None),
    "leaky_relu(0.01)": (0.01, None),
    "leaky_relu(2)": (2.0, None),
    "leaky_relu(-0.5)": (-0.5, None),
    "abs": (None, None),
    "sigmoid": (None, None),
    "tanh": (None, None),
    "atan": (None, None),
    "erf": (None, None),
    "sin": (None, None),
    "cos": (None, None),
    "gelu": (None, None),
    "exp": (None, (-700.0, 700.0)),
    "softplus": (None, None),
    "log": (None, (1e-6, math.inf)),
    "sqrt": (None, (0.0, math.inf)),
    "reciprocal": (None, (1e-6, math.inf)),
    "floor": (None, None),
    "pow(2)": (2.0, None),
    "pow(3)": (3.0, None),
    "pow(4)": (4.0, None),
    "pow(-1)": (-1.0, (1e-3, math.inf)),
    "pow(-2)": (-2.0, (1e-3, math.inf)),
    "pow(0.5)": (0.5, (0.0, math.inf)),
    "pow(1.5)": (1.5, (0.0, math.inf)),
}


@pytest.mark.parametrize("case", UNARY_CASES)
def test_unary_interval_encloses_the_function(case: str) -> None:
    """The interval rule of every unary node holds on sampled points."""
    func = case.split("(")[0]
    param, domain = UNARY_CASES[case]
    op = Unary(func, param)
    node = Node("u", op, ("x",), (64,))
    for name, (lower, upper) in rs.interval_cases(
        DT, special=(0.0, 1.0, -1.0), domain=domain
    ).items():
        lo, hi = unary_interval(node, lower[None], upper[None])
        x = rs.sample_points(lower, upper)
        y = op.forward(x)
        scale = 1e-12 * (1 + y.abs())
        assert (y >= lo - scale).all(), f"{case} {name}: below the interval"
        assert (y <= hi + scale).all(), f"{case} {name}: above the interval"


def _two_layer(case: str, seed: int = 0) -> Graph:
    """``x -> Linear -> f -> Linear -> f -> Linear``; positive-domain functions
    get ``softplus(h) + 0.05`` as input."""
    func = case.split("(")[0]
    param, domain = UNARY_CASES[case]
    g = torch.Generator().manual_seed(seed)
    nodes, prev, width = [], "input", 3
    for k, out in enumerate((6, 4)):
        w = torch.randn(width, out, generator=g, dtype=DT) / math.sqrt(width)
        b = torch.randn(out, generator=g, dtype=DT) * 0.3
        nodes.append(Node(f"lin{k}", Linear(w, b), (prev,), (1, out)))
        prev = f"lin{k}"
        if domain is not None and domain[0] >= 0:
            nodes.append(Node(f"pos{k}", Unary("softplus"), (prev,), (1, out)))
            shift = Linear(torch.eye(out, dtype=DT), torch.full((out,), 0.05, dtype=DT))
            nodes.append(Node(f"shift{k}", shift, (f"pos{k}",), (1, out)))
            prev = f"shift{k}"
        nodes.append(Node(f"act{k}", Unary(func, param), (prev,), (1, out)))
        prev, width = f"act{k}", out
    w = torch.randn(width, 2, generator=g, dtype=DT)
    nodes.append(Node("out", Linear(w), (prev,), (1, 2)))
    return Graph("input", (1, 3), nodes, "out")


@pytest.mark.parametrize("case", UNARY_CASES)
def test_two_layer_bounds_enclose_values(case: str) -> None:
    """Every unary rule inside a network: interval, CROWN, random parameters."""
    graph = _two_layer(case)
    g = torch.Generator().manual_seed(1)
    for radius in (1e-3, 0.3, 2.0):
        c = torch.rand(2, 1, 3, generator=g, dtype=DT) * 2 - 1
        bs.check_graph(graph, Box(c - radius, c + radius))
