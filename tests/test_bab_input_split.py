"""Tests of genbab.bab.input_split: branch and bound over the input box.

Small hand-built networks whose true output range is known give properties that
plain CROWN cannot prove but splitting does, false properties that must give a
counterexample (never ``unsat``), and limits that must be respected. A real ACAS
Xu instance is proven when the shared benchmarks are present.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx_builders import SHARED, mlp, random_mlp

import genbab
from genbab.attack import check_counterexample
from genbab.bab.input_split import (
    InputSplitOptions,
    _bound_rows,
    _prepare,
    _root_boxes,
    _split,
    input_split_bab,
)
from genbab.bounds import Engine, build_objective
from genbab.config import load_config
from genbab.errors import ConfigError
from genbab.model import load_model
from genbab.spec import Case, Clause, Property, read_vnnlib

torch.set_num_threads(1)
ACASXU = SHARED / "acasxu_2023"


def _engine(path: Path, dtype: torch.dtype = torch.float64) -> Engine:
    graph = load_model(path).to("cpu", dtype)
    return Engine(graph, dtype, torch.device("cpu"))


def _case(lower, upper, matrix, rhs) -> Case:
    """One case whose violation is ``matrix @ y <= rhs``."""
    clause = Clause(np.atleast_2d(np.array(matrix, float)), np.atleast_1d(rhs))
    return Case(np.array(lower, float), np.array(upper, float), (clause,))


def _run(path, case, dtype=torch.float64, **kw) -> object:
    deadline = kw.pop("deadline", None)
    validate = kw.pop("validate", None)
    options = InputSplitOptions(**kw)
    return input_split_bab(
        _engine(path, dtype), [case], options, deadline=deadline, validate=validate
    )


@pytest.fixture
def cancel(tmp_path) -> Path:
    # y = relu(x) - relu(x) = 0 on [-1, 1]; CROWN's upper bound at the root is > 0.
    w1 = np.array([[1.0], [1.0]])
    w2 = np.array([[1.0, -1.0]])
    return mlp(tmp_path / "cancel.onnx", [w1, w2], [np.zeros(2), np.zeros(1)])


@pytest.fixture
def two_relus(tmp_path) -> Path:
    # y = relu(x1 + x2) + relu(x1 - x2) on [-1, 1]^2: max 2 (x1 = 1), CROWN says 3.
    w1 = np.array([[1.0, 1.0], [1.0, -1.0]])
    w2 = np.array([[1.0, 1.0]])
    return mlp(tmp_path / "two.onnx", [w1, w2], [np.zeros(2), np.zeros(1)])


# ---------------------------------------------------------------- verdicts


@pytest.mark.parametrize("heuristic", ["smart", "widest"])
@pytest.mark.parametrize("method", ["crown", "alpha-crown"])
def test_cancelling_relus_proven_only_by_splitting(cancel, heuristic, method):
    case = _case([-1], [1], [[-1.0]], [-0.1])  # violation: y >= 0.1
    result = _run(cancel, case, heuristic=heuristic, method=method)
    assert result.root_margins[0] < 0  # the whole box is not proven
    assert result.verdict == "unsat"
    assert result.domains > 1
    assert result.pool_left == 0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("threshold", [2.5, 2.05])
def test_two_relus_max_proven(two_relus, dtype, threshold):
    case = _case([-1, -1], [1, 1], [[-1.0]], [-threshold])  # violation: y >= t
    margin = 1e-5 if dtype == torch.float32 else 0.0
    result = _run(two_relus, case, dtype, margin=margin, batch_size=64)
    assert result.root_margins[0] < 0
    assert result.verdict == "unsat"
    assert result.max_depth >= 1


def test_false_property_gives_a_replayable_candidate(two_relus):
    case = _case([-1, -1], [1, 1], [[-1.0]], [-1.9])  # y >= 1.9 at x1 = 1
    result = _run(two_relus, case, batch_size=16)
    assert result.verdict == "candidate"
    x = result.point
    assert np.all(x >= case.lower) and np.all(x <= case.upper)
    prop = Property((case,), 2, 1, "p")
    cex = check_counterexample(two_relus, prop, x)
    assert cex is not None and cex.y[0] >= 1.9


def test_validator_decides_between_sat_and_going_on(two_relus):
    case = _case([-1, -1], [1, 1], [[-1.0]], [-1.9])
    seen = []

    def accept(index, x):
        seen.append(x)
        return True

    result = _run(two_relus, case, validate=accept)
    assert result.verdict == "sat" and len(seen) == 1
    assert result.case == 0 and result.clause == 0

    # A validator that rejects everything: the search goes on, never unsat.
    result = _run(two_relus, case, max_domains=300, validate=lambda i, x: False)
    assert result.verdict == "unknown" and result.reason == "domain limit"
    assert result.rejected >= 1
    assert 300 <= result.domains < 300 + 1024


@pytest.fixture
def cancel_sigmoid(tmp_path) -> Path:
    # y = sigmoid(x) - sigmoid(x) = 0: true for y >= 1e-12, but CROWN's gap on a
    # box of width w is about w**2 / 40, so millions of boxes are needed.
    w1 = np.array([[1.0], [1.0]])
    w2 = np.array([[1.0, -1.0]])
    return mlp(tmp_path / "cs.onnx", [w1, w2], [np.zeros(2), np.zeros(1)], "Sigmoid")


def test_deadline_and_domain_limit(cancel_sigmoid):
    case = _case([-1], [1], [[-1.0]], [-1e-12])  # violation: y >= 1e-12
    start = time.monotonic()
    result = _run(cancel_sigmoid, case, deadline=start + 1.0, batch_size=256)
    assert result.verdict == "unknown" and result.reason == "time limit"
    assert time.monotonic() - start < 2.5
    assert result.domains > 0 and result.domains_per_second > 0
    result = _run(cancel_sigmoid, case, max_domains=500, batch_size=64)
    assert result.verdict == "unknown" and result.reason == "domain limit"
    assert 500 <= result.domains < 500 + 64


def test_stop_event(two_relus):
    case = _case([-1, -1], [1, 1], [[-1.0]], [-2.0])

    class StopAfter:
        calls = 0

        def is_set(self):
            self.calls += 1
            return self.calls > 3

    engine = _engine(two_relus)
    options = InputSplitOptions(check_points=False)
    result = input_split_bab(engine, [case], options, stop_event=StopAfter())
    assert result.verdict == "unknown" and result.reason == "stopped"
    assert result.rounds == 3


def test_point_box_that_cannot_be_proven_is_unknown(two_relus):
    # A zero-width box at the true max with threshold exactly 2: y >= 2 holds
    # there, so without point checks the search must stop as stuck, not loop.
    case = _case([1, 0], [1, 0], [[-1.0]], [-2.0])
    result = _run(two_relus, case, check_points=False)
    assert result.verdict == "unknown"
    assert "cannot be split" in result.reason
    result = _run(two_relus, case)
    assert result.verdict == "candidate"


def test_several_cases_and_clauses(two_relus):
    # Case 0 is true (y >= 2.2 impossible); case 1 has two clauses, the second
    # reachable (y <= 0.1 near x1 = -1).
    true_case = _case([-1, -1], [1, 1], [[-1.0]], [-2.2])
    clauses = (
        Clause(np.array([[-1.0]]), np.array([-2.5])),
        Clause(np.array([[1.0]]), np.array([0.1])),
    )
    false_case = Case(np.array([-1.0, -1]), np.array([0.0, 1]), clauses)
    engine = _engine(two_relus)
    result = input_split_bab(engine, [true_case, false_case])
    assert result.verdict == "candidate"
    assert result.case == 1 and result.clause == 1
    result = input_split_bab(engine, [true_case, true_case])
    assert result.verdict == "unsat"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_network_never_unsat_below_its_max(tmp_path, seed):
    path = random_mlp(tmp_path / "r.onnx", [2, 12, 12, 1], "Relu", seed=seed, batch="N")
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, 301)] * 2), -1).reshape(-1, 2)
    session = ort.InferenceSession(str(path))
    y = session.run(None, {"input": grid.astype(np.float32)})[0][:, 0]
    top = float(y.max())
    false_case = _case([-1, -1], [1, 1], [[-1.0]], [-(top - 0.02)])
    result = _run(path, false_case, max_domains=20_000)
    assert result.verdict == "candidate"
    true_case = _case([-1, -1], [1, 1], [[-1.0]], [-(top + 0.2)])
    assert _run(path, true_case, max_domains=20_000).verdict == "unsat"


# ---------------------------------------------------------------- pieces


def test_proven_boxes_hold_at_sampled_points(tmp_path):
    path = random_mlp(tmp_path / "r.onnx", [3, 16, 16, 2], "Relu", seed=4, batch="N")
    rng = np.random.default_rng(0)
    centre = rng.uniform(-1, 1, size=(200, 3))
    radius = rng.uniform(0.01, 0.3, size=(200, 1))
    lower, upper = centre - radius, centre + radius
    session = ort.InferenceSession(str(path))
    y_mid = session.run(None, {"input": centre.astype(np.float32)})[0]
    # Violation y0 - y1 <= r with r just below the centre value: many boxes
    # are proven, some are not.
    rhs = float(np.median(y_mid[:, 0] - y_mid[:, 1])) - 0.3
    case = _case([-2] * 3, [2] * 3, [[1.0, -1.0]], [rhs])
    engine = _engine(path)
    search = _prepare(engine, [case], InputSplitOptions(), None)
    objective = build_objective([case] * 200, torch.float64, "cpu")
    rows, coeffs = _bound_rows(
        search, torch.as_tensor(lower), torch.as_tensor(upper), objective
    )
    assert coeffs.shape == (200, 1, 3)
    proven = objective.proven(rows).numpy()
    assert 10 < proven.sum() < 190
    for b in range(200):
        xs = rng.uniform(lower[b], upper[b], size=(300, 3))
        xs = np.concatenate([xs, lower[b : b + 1], upper[b : b + 1]])
        y = session.run(None, {"input": xs.astype(np.float32)})[0]
        value = y[:, 0] - y[:, 1]
        assert value.min() >= rows[b, 0].item() - 1e-4
        if proven[b]:
            assert (value > rhs).all()


@pytest.mark.parametrize("k", [1, 2, 3])
def test_split_children_tile_the_parent(k):
    rng = np.random.default_rng(k)
    lower = torch.as_tensor(rng.uniform(-1, 0, size=(5, 4)))
    upper = lower + torch.as_tensor(rng.uniform(0.1, 1, size=(5, 4)))
    dims = torch.stack([torch.randperm(4)[:k] for _ in range(5)])
    splittable = torch.ones(5, k, dtype=torch.bool)
    lo, hi = _split(lower, upper, dims, splittable)
    assert lo.shape == (5 * 2**k, 4)
    lo, hi = lo.reshape(5, 2**k, 4), hi.reshape(5, 2**k, 4)
    assert (lo >= lower.unsqueeze(1)).all() and (hi <= upper.unsqueeze(1)).all()
    volume = (hi - lo).prod(-1).sum(-1)
    assert torch.allclose(volume, (upper - lower).prod(-1))
    # Every child is distinct, and each split dim is halved exactly.
    for i in range(5):
        assert len({tuple(r) for r in lo[i].tolist()}) == 2**k
        for d in dims[i].tolist():
            width = hi[i, :, d] - lo[i, :, d]
            assert torch.allclose(width, (upper[i, d] - lower[i, d]) / 2)


def test_float32_root_box_rounds_outwards(two_relus):
    case = _case([0.1, -0.3], [0.7, 0.9], [[-1.0]], [-2.5])
    search = _prepare(
        _engine(two_relus, torch.float32), [case], InputSplitOptions(), None
    )
    lower, upper = _root_boxes(search)
    assert lower.dtype == torch.float32
    assert (lower.double() <= search.case_lower).all()
    assert (upper.double() >= search.case_upper).all()


def test_bad_options_raise():
    with pytest.raises(ConfigError, match="method"):
        InputSplitOptions(method="beta")
    with pytest.raises(ConfigError, match="heuristic"):
        InputSplitOptions(heuristic="random")
    with pytest.raises(ConfigError, match="batch_size"):
        InputSplitOptions(batch_size=0)


# ---------------------------------------------------------------- ACAS Xu


def _acas(net: str, prop: int):
    path = ACASXU / "onnx" / f"ACASXU_run2a_{net}_batch_2000.onnx.gz"
    graph = load_model(path)
    spec = read_vnnlib(
        ACASXU / "vnnlib" / f"prop_{prop}.vnnlib.gz",
        graph.num_inputs,
        graph.num_outputs,
    )
    return path, Engine(graph.to("cpu", torch.float64)), spec


@pytest.mark.skipif(not ACASXU.is_dir(), reason="shared benchmarks missing")
def test_acasxu_prop4_proven():
    _, engine, spec = _acas("1_1", 4)  # known unsat
    result = input_split_bab(engine, spec.cases, deadline=time.monotonic() + 60)
    assert result.verdict == "unsat", result.reason
    assert result.root_margins[0] < 0


@pytest.mark.skipif(not ACASXU.is_dir(), reason="shared benchmarks missing")
def test_acasxu_sat_instance_never_unsat():
    path, engine, spec = _acas("1_2", 2)  # known sat
    result = input_split_bab(engine, spec.cases, deadline=time.monotonic() + 15)
    assert result.verdict in ("candidate", "unknown")
    if result.verdict == "candidate":
        cex = check_counterexample(path, spec, result.point, case=result.case)
        assert cex is not None


@pytest.mark.skipif(not ACASXU.is_dir(), reason="shared benchmarks missing")
def test_verify_splits_inputs_of_small_models():
    net = ACASXU / "onnx" / "ACASXU_run2a_1_1_batch_2000.onnx.gz"
    prop = ACASXU / "vnnlib" / "prop_4.vnnlib.gz"  # known unsat
    result = genbab.verify(net, prop, timeout=60)
    assert result.verdict == genbab.Verdict.UNSAT
    assert result.stats["input_split_domains"] > 1
    off = load_config(None, ["input_split.mode=never", "bab.enabled=false"])
    result = genbab.verify(net, prop, timeout=60, config=off)
    assert result.verdict == genbab.Verdict.UNKNOWN
    assert "input_split_domains" not in result.stats
