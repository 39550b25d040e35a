"""Interval, CROWN and alpha-CROWN bounds on small graphs.

Hand-computed values pin the exact bounds of tiny networks; sampling checks that
bounds of random networks enclose the outputs onnxruntime computes.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx_builders import mlp, random_mlp

from genbab.bounds import Box, Engine, bound_objective
from genbab.bounds.objective import Objective
from genbab.config import BoundsConfig
from genbab.model import load_model

DT = torch.float64


def _engine(path):
    graph = load_model(path).to("cpu", DT)
    return Engine(graph, DT, torch.device("cpu"))


def _box(lo, hi):
    lo = torch.as_tensor(lo, dtype=DT).reshape(1, 1, -1)
    hi = torch.as_tensor(hi, dtype=DT).reshape(1, 1, -1)
    return Box(lo, hi)


@pytest.fixture
def two_relus(tmp_path):
    # y = relu(x1 + x2) + relu(x1 - x2) on [-1, 1]^2: true range [0, 2].
    w1 = np.array([[1.0, 1.0], [1.0, -1.0]])
    w2 = np.array([[1.0, 1.0]])
    return mlp(tmp_path / "m.onnx", [w1, w2], [np.zeros(2), np.zeros(1)])


def test_two_relus_exact_values(two_relus):
    engine = _engine(two_relus)
    box = _box([-1, -1], [1, 1])
    ibp = engine.interval(box)[engine.graph.output_name]
    assert ibp[0].item() == pytest.approx(0.0)
    assert ibp[1].item() == pytest.approx(4.0)
    bounds = engine.crown_bounds(box)
    lo, hi = engine.crown_value(engine.graph.output_name, box, bounds)
    # Each ReLU on [-2, 2]: upper chord 0.5 h + 1, so y <= x1 + 2 <= 3.
    assert lo.item() == pytest.approx(0.0)
    assert hi.item() == pytest.approx(3.0)


def test_alpha_crown_tightens_two_relus(two_relus):
    engine = _engine(two_relus)
    box = _box([-1, -1], [1, 1])
    bounds = engine.crown_bounds(box)
    # Bound -y from below: that is y's upper bound, 3 by CROWN; the true max is 2.
    objective = Objective(
        torch.tensor([[[-1.0]]], dtype=DT),
        torch.tensor([[-2.5]], dtype=DT),
        torch.tensor([[True]]),
        1,
    )
    crown = engine.objective_lower(objective.coeffs, box, bounds)
    assert crown.item() == pytest.approx(-3.0)
    cfg = BoundsConfig(alpha_iterations=30, alpha_lr=0.2)
    lower, _ = bound_objective(engine, box, objective, cfg)
    assert lower.item() >= crown.item() - 1e-9
    assert lower.item() <= -2.0 + 1e-9  # never tighter than the truth


ACTS = ["Relu", "Sigmoid", "Tanh", "Sin", "Cos", "Square", "Softplus"]


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("width", [0.05, 0.5, 2.0])
def test_bounds_enclose_onnxruntime(tmp_path, act, width):
    path = random_mlp(tmp_path / f"{act}.onnx", [4, 8, 8, 3], act, seed=3)
    engine = _engine(path)
    rng = np.random.default_rng(0)
    center = rng.uniform(-1, 1, size=4)
    lo, hi = center - width, center + width
    box = _box(lo, hi)
    # Samples: uniform, edge-heavy and corners.
    n = 2000
    u = rng.uniform(size=(n, 4))
    beta = rng.beta(0.5, 0.5, size=(n, 4))
    corners = rng.integers(0, 2, size=(64, 4)).astype(float)
    xs = lo + (hi - lo) * np.concatenate([u, beta, corners])
    sess = ort.InferenceSession(str(path))
    ys = np.concatenate(
        [sess.run(None, {"input": x[None].astype(np.float32)})[0] for x in xs]
    )
    objective = Objective(
        torch.cat([torch.eye(3), -torch.eye(3)]).to(DT).unsqueeze(0),
        torch.zeros(1, 6, dtype=DT),
        torch.ones(1, 6, dtype=torch.bool),
        1,
    )
    tol = 1e-4  # onnxruntime computes in float32
    results = {}
    for method in ["interval", "crown", "alpha-crown"]:
        cfg = BoundsConfig(method=method, alpha_iterations=10)
        lower, _ = bound_objective(engine, box, objective, cfg)
        lower = lower[0].numpy()
        out_lo, out_hi = lower[:3], -lower[3:]
        assert (ys.min(0) >= out_lo - tol).all(), (method, ys.min(0), out_lo)
        assert (ys.max(0) <= out_hi + tol).all(), (method, ys.max(0), out_hi)
        results[method] = lower
    # CROWN is at least as tight as interval arithmetic after intersection, and
    # alpha-CROWN at least as tight as CROWN.
    assert (results["crown"] >= results["interval"] - 1e-9).all()
    assert (results["alpha-crown"] >= results["crown"] - 1e-9).all()
