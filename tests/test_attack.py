"""Tests of genbab.attack: PGD counterexample search and onnxruntime replay.

The tiny model used throughout is ``y0 = relu(x0) + relu(x1)``,
``y1 = relu(x0) - relu(x1)`` on inputs in ``[-1, 1]^2``, so which output
constraints are reachable can be worked out by hand: ``0 <= y0 <= 2`` and
``-1 <= y1 <= 1``.
"""

from __future__ import annotations

import csv
import gzip
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from genbab.attack import OnnxRuntimeModel, check_counterexample, pgd_attack
from genbab.config import AttackConfig
from genbab.errors import ModelError
from genbab.model import load_model
from genbab.spec import Case, Clause, Property, read_vnnlib

BENCHMARKS = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"

W1 = np.eye(2)
B1 = np.zeros(2)
W2 = np.array([[1.0, 1.0], [1.0, -1.0]])  # MatMul layout: h @ W2
B2 = np.zeros(2)


def _write_model(
    path: Path,
    elem: int = TensorProto.FLOAT,
    input_dims: tuple = (1, 2),
    gz: bool = False,
) -> Path:
    """Write ``y = relu(x @ W1 + B1) @ W2 + B2`` as an ONNX file."""
    np_type = np.float32 if elem == TensorProto.FLOAT else np.float64

    def const(name: str, value: np.ndarray) -> onnx.TensorProto:
        return numpy_helper.from_array(value.astype(np_type), name)

    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["m1"]),
        helper.make_node("Add", ["m1", "b1"], ["a1"]),
        helper.make_node("Relu", ["a1"], ["h"]),
        helper.make_node("MatMul", ["h", "w2"], ["m2"]),
        helper.make_node("Add", ["m2", "b2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", elem, list(input_dims))],
        [helper.make_tensor_value_info("y", elem, [1, 2])],
        [const("w1", W1), const("b1", B1), const("w2", W2), const("b2", B2)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    data = model.SerializeToString()
    if gz:
        path = path.with_suffix(".onnx.gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def _reference(x: np.ndarray) -> np.ndarray:
    """The tiny model in float64 numpy, x [N, 2] -> y [N, 2]."""
    return np.maximum(x @ W1 + B1, 0.0) @ W2 + B2


def _prop(
    cases: list[tuple[list[float], list[float], list[tuple[list, list]]]],
) -> Property:
    built = tuple(
        Case(
            np.array(lo, dtype=np.float64),
            np.array(up, dtype=np.float64),
            tuple(Clause(np.array(m, dtype=np.float64), np.array(r)) for m, r in cl),
        )
        for lo, up, cl in cases
    )
    return Property(built, 2, 2, "test.vnnlib")


def _ort_output(path: Path, x: np.ndarray, np_type=np.float32) -> np.ndarray:
    """onnxruntime's output on one input, independently of genbab.attack."""
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": x.astype(np_type).reshape(1, 2)})
    return y.reshape(-1).astype(np.float64)


def _assert_valid(cex, prop: Property, path: Path, np_type=np.float32) -> None:
    case = prop.cases[cex.case]
    assert cex.x.dtype == np.float64 and cex.y.dtype == np.float64
    assert np.all(case.lower <= cex.x) and np.all(cex.x <= case.upper)
    # x is exactly what onnxruntime was fed: representable in the input type.
    assert np.array_equal(cex.x.astype(np_type).astype(np.float64), cex.x)
    np.testing.assert_array_equal(cex.y, _ort_output(path, cex.x, np_type))
    clause = case.clauses[cex.clause]
    assert np.all(clause.matrix @ cex.y - clause.rhs <= 0.0)


BOX = ([-1.0, -1.0], [1.0, 1.0])
CONFIG = AttackConfig(restarts=8, steps=30, batch_size=64)


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    return _write_model(tmp_path / "tiny.onnx")


# ---------------------------------------------------------------- pgd_attack


def test_attack_finds_single_clause_counterexample(model_path: Path) -> None:
    # y0 >= 1.8 needs x0 + x1 >= 1.8 with both positive: a corner region.
    prop = _prop([(*BOX, [([[-1.0, 0.0]], [-1.8])])])
    graph = load_model(model_path)
    cex = pgd_attack(graph, prop, CONFIG)
    assert cex is not None
    _assert_valid(cex, prop, model_path)
    assert cex.y[0] >= 1.8
    np.testing.assert_allclose(cex.y, _reference(cex.x[None])[0], atol=1e-6)


def test_attack_finds_second_clause_and_second_case(model_path: Path) -> None:
    impossible = ([[1.0, 0.0]], [-0.1])  # y0 <= -0.1, but y0 >= 0
    reachable = ([[0.0, -1.0], [1.0, 0.0]], [-0.9, 1.0])  # y1 >= 0.9, y0 <= 1
    prop = _prop(
        [
            ([-1.0, 0.0], [-0.5, 1.0], [reachable]),  # y1 <= 0 on this box
            (*BOX, [impossible, reachable]),
        ]
    )
    cex = pgd_attack(load_model(model_path), prop, CONFIG)
    assert cex is not None
    assert (cex.case, cex.clause) == (1, 1)
    _assert_valid(cex, prop, model_path)


@pytest.mark.parametrize(
    "rows, rhs",
    [
        ([[-1.0, 0.0]], [-2.001]),  # y0 >= 2.001, but y0 <= 2
        ([[0.0, -1.0]], [-1.0001]),  # y1 >= 1.0001, but y1 <= 1
        ([[1.0, 0.0], [0.0, -1.0]], [0.4, -0.5]),  # y0 <= 0.4 and y1 >= 0.5
    ],
)
def test_attack_returns_none_when_no_counterexample(
    model_path: Path, rows: list, rhs: list
) -> None:
    # The third row pair is impossible since y1 <= y0 whenever y1 >= 0.
    prop = _prop([(*BOX, [(rows, rhs)])])
    assert pgd_attack(load_model(model_path), prop, CONFIG) is None


def test_attack_with_degenerate_box(tmp_path: Path) -> None:
    # x1 fixed at 0.7 (no float32 value equals it): use a float64 model.
    path = _write_model(tmp_path / "tiny64.onnx", elem=TensorProto.DOUBLE)
    prop = _prop([([-1.0, 0.7], [1.0, 0.7], [([[-1.0, 0.0]], [-1.5])])])
    cex = pgd_attack(load_model(path), prop, CONFIG, dtype=torch.float64)
    assert cex is not None
    assert cex.x[1] == 0.7 and cex.x[0] >= 0.8 - 1e-12
    _assert_valid(cex, prop, path, np.float64)


def test_attack_degenerate_float32_box_without_representable_point(
    model_path: Path,
) -> None:
    # No float32 input equals 0.7, so no input of this float32 model lies in the
    # box; nothing may be reported even though y0 >= 0.5 holds near it.
    prop = _prop([([0.7, 0.0], [0.7, 0.0], [([[-1.0, 0.0]], [-0.5])])])
    assert pgd_attack(load_model(model_path), prop, CONFIG) is None


def test_attack_stops_at_past_deadline(model_path: Path) -> None:
    prop = _prop([(*BOX, [([[-1.0, 0.0]], [-1.8])])])
    graph = load_model(model_path)
    big = AttackConfig(restarts=1000, steps=1000, batch_size=100)
    start = time.monotonic()
    assert pgd_attack(graph, prop, big, deadline=start - 1.0) is None
    assert time.monotonic() - start < 1.0


def test_attack_is_deterministic_for_a_seed(model_path: Path) -> None:
    prop = _prop([(*BOX, [([[-1.0, 0.0]], [-1.8])])])
    graph = load_model(model_path)
    first = pgd_attack(graph, prop, CONFIG, seed=3)
    second = pgd_attack(graph, prop, CONFIG, seed=3)
    assert first is not None and second is not None
    np.testing.assert_array_equal(first.x, second.x)


def test_attack_disabled_returns_none(model_path: Path) -> None:
    prop = _prop([(*BOX, [([[-1.0, 0.0]], [0.0])])])  # every point violates
    off = AttackConfig(enabled=False)
    assert pgd_attack(load_model(model_path), prop, off) is None


# ------------------------------------------------------- check_counterexample


def test_check_accepts_and_matches_onnxruntime(model_path: Path) -> None:
    prop = _prop([(*BOX, [([[-1.0, 0.0]], [-1.5])])])
    cex = check_counterexample(model_path, prop, np.array([0.9, 0.8]))
    assert cex is not None
    _assert_valid(cex, prop, model_path)
    np.testing.assert_array_equal(cex.x, np.float32([0.9, 0.8]).astype(np.float64))


def test_check_rejects_point_outside_box(model_path: Path) -> None:
    # The output condition holds at x, but x is 0.01 outside the only box.
    prop = _prop([([0.0, 0.0], [0.5, 0.5], [([[-1.0, 0.0]], [-0.9])])])
    assert check_counterexample(model_path, prop, np.array([0.51, 0.5])) is None
    # Within the clipping tolerance it is clipped into the box and checked there.
    cex = check_counterexample(model_path, prop, np.array([0.5 + 1e-9, 0.5]))
    assert cex is not None and np.all(cex.x <= 0.5)


def test_check_rejects_output_violating_by_1e_9(model_path: Path) -> None:
    x = np.array([0.25, 0.5])
    y = _ort_output(model_path, x)
    exact = _prop([(*BOX, [([[1.0, 0.0]], [y[0]])])])  # y0 <= y0: holds
    short = _prop([(*BOX, [([[1.0, 0.0]], [y[0] - 1e-9])])])
    assert check_counterexample(model_path, exact, x) is not None
    assert check_counterexample(model_path, short, x) is None


def test_check_reads_gzip_and_reuses_session(tmp_path: Path) -> None:
    path = _write_model(tmp_path / "tiny.onnx", gz=True)
    assert path.name.endswith(".onnx.gz")
    session = OnnxRuntimeModel(path)
    prop = _prop([(*BOX, [([[0.0, -1.0]], [-0.5])])])  # y1 >= 0.5
    x = np.array([0.75, -0.3])
    cex = check_counterexample(path, prop, x, session=session)
    assert cex is not None
    _assert_valid(cex, prop, path)
    assert check_counterexample(path, prop, -x, session=session) is None


def test_check_rounds_to_float32_inside_box(model_path: Path) -> None:
    # float32(0.7) < 0.7: the point must move up one float32 ulp to stay inside.
    assert float(np.float32(0.7)) < 0.7
    prop = _prop([([0.7, 0.0], [0.8, 0.1], [([[-1.0, 0.0]], [-0.6])])])
    cex = check_counterexample(model_path, prop, np.array([0.7, 0.0]))
    assert cex is not None
    assert cex.x[0] >= 0.7
    assert cex.x[0] == float(np.nextafter(np.float32(0.7), np.float32(1.0)))
    _assert_valid(cex, prop, model_path)
    # A box narrower than one float32 ulp holds no float32 input.
    thin = _prop([([0.7, 0.0], [0.7 + 1e-9, 0.1], [([[-1.0, 0.0]], [-0.6])])])
    assert check_counterexample(model_path, thin, np.array([0.7, 0.0])) is None


def test_check_float64_model_keeps_exact_point(tmp_path: Path) -> None:
    path = _write_model(tmp_path / "tiny64.onnx", elem=TensorProto.DOUBLE)
    prop = _prop([([0.7, 0.0], [0.7, 0.1], [([[-1.0, 0.0]], [-0.6])])])
    cex = check_counterexample(path, prop, np.array([0.7, 0.05]))
    assert cex is not None
    np.testing.assert_array_equal(cex.x, [0.7, 0.05])
    _assert_valid(cex, prop, path, np.float64)


def test_onnxruntime_model_batches_and_dynamic_dims(tmp_path: Path) -> None:
    path = _write_model(tmp_path / "dyn.onnx", input_dims=("batch", 2))
    model = OnnxRuntimeModel(path)
    assert model.input_shape == (1, 2) and model.num_inputs == 2
    assert model.dtype is np.float32
    x = np.array([[0.5, -0.25], [-1.0, 1.0], [0.125, 0.375]])
    np.testing.assert_allclose(model(x), _reference(x), rtol=1e-6)
    assert model(x).shape == (3, 2)


def test_onnxruntime_model_rejects_integer_input(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "ints",
        [helper.make_tensor_value_info("x", TensorProto.INT64, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, [1, 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "ints.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ModelError, match="ints.onnx.*only float32 and float64"):
        OnnxRuntimeModel(path)
    with pytest.raises(ModelError, match="cannot read ONNX model"):
        OnnxRuntimeModel(tmp_path / "missing.onnx")


# ----------------------------------------------------------- real benchmark


def _acasxu_sat_instance(net: str, prop: str) -> tuple[Path, Path]:
    family = BENCHMARKS / "acasxu_2023"
    onnx_rel = f"onnx/ACASXU_run2a_{net}_batch_2000.onnx.gz"
    vnnlib_rel = f"vnnlib/{prop}.vnnlib.gz"
    with open(BENCHMARKS / "known_verdicts.csv", encoding="utf-8") as f:
        expected = {
            (r["onnx"], r["vnnlib"]): r["expected"]
            for r in csv.DictReader(f)
            if r["family"] == "acasxu_2023"
        }
    assert expected[(onnx_rel, vnnlib_rel)] == "sat"
    return family / onnx_rel, family / vnnlib_rel


@pytest.mark.skipif(not BENCHMARKS.is_dir(), reason="shared benchmarks missing")
@pytest.mark.parametrize("net, prop", [("2_5", "prop_2"), ("1_9", "prop_4")])
def test_acasxu_sat_instance(net: str, prop: str) -> None:
    onnx_path, vnnlib_path = _acasxu_sat_instance(net, prop)
    graph = load_model(onnx_path)
    spec = read_vnnlib(vnnlib_path, graph.num_inputs, graph.num_outputs)
    start = time.monotonic()
    cex = pgd_attack(graph, spec, AttackConfig(), deadline=start + 20.0)
    assert cex is not None
    assert time.monotonic() - start < 10.0

    # Replay independently: fresh session, scorer-style reshape and cast.
    case = spec.cases[cex.case]
    assert np.all(case.lower <= cex.x) and np.all(cex.x <= case.upper)
    session = ort.InferenceSession(
        gzip.decompress(onnx_path.read_bytes()), providers=["CPUExecutionProvider"]
    )
    declared = session.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in declared.shape]
    (y,) = session.run(None, {declared.name: cex.x.astype(np.float32).reshape(shape)})
    np.testing.assert_array_equal(cex.y, y.reshape(-1).astype(np.float64))
    clause = case.clauses[cex.clause]
    assert np.all(clause.matrix @ cex.y <= clause.rhs)


def test_margin_same_with_and_without_all_rows_at_once(monkeypatch) -> None:
    import genbab.attack.pgd as pgd

    rng = np.random.default_rng(0)
    cases = [
        (
            [-1.0, -1.0],
            [1.0, 1.0],
            [(rng.normal(size=(r, 2)), rng.normal(size=r)) for r in rows],
        )
        for rows in ([1, 2], [2], [1, 1, 2])
    ]
    spec = pgd._SpecTensors.build(_prop(cases), "cpu", torch.float64)
    y = torch.as_tensor(rng.normal(size=(7, 2)))
    case = torch.tensor([0, 1, 2, 2, 1, 0, 2])
    flat = spec.margin(y, case)
    monkeypatch.setattr(pgd, "_FLAT_ROWS", 0)
    per_sample = spec.margin(y, case)
    for a, b in zip(flat, per_sample, strict=True):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)
    # By hand: the first sample's margin is its best clause's worst row.
    m0 = min(float(np.max(mat @ y[0].numpy() - r)) for mat, r in cases[0][2])
    assert flat[0][0].item() == pytest.approx(m0)
