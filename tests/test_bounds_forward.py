"""Forward linear bounds (``genbab.bounds.forward``) and their use by the engine.

Forward bounds must enclose sampled values of every node on small graphs of
every kind they handle (linear maps, ReLU/sigmoid/tanh, products of two values,
piecewise-linear sums, and nodes they only take intervals of), must reduce to
exact bounds on linear graphs, and ``Engine.crown_bounds`` with them must never
be looser than interval bounds; on a graph with few inputs it uses them and
skips costly CROWN passes.
"""

from __future__ import annotations

import bounds_sampling as bs
import numpy as np
import pytest
import torch
from onnx_builders import gates_model, mlp, random_mlp, relu_sum_model
from test_bounds_passes import _box
from test_relax_piecewise_linear import OFFSETS, WEIGHTS

from genbab.bounds import Engine
from genbab.bounds.forward import forward_bounds
from genbab.bounds.rewrite import prepare_for_bounds
from genbab.model import load_model

DT = torch.float64


def _graph(path):
    return prepare_for_bounds(load_model(path)).to("cpu", DT)


def _check_forward(graph, box, seed=0):
    engine = Engine(graph, DT, forward_max_inputs=0)
    interval = engine.interval(box)
    bounds = forward_bounds(engine, box, interval)
    names = [n.name for n in graph.nodes]
    pts = bs.box_points(box.lower, box.upper, seed=seed)
    values = bs.graph_values(graph, pts, names)
    for name in names:
        bs.assert_inside(values[name], *bounds[name], tol=1e-9, context=name)
        lo, hi = bounds[name]
        assert (lo >= interval[name][0]).all() and (hi <= interval[name][1]).all()
    return engine, bounds, interval


@pytest.mark.parametrize("act", ["Relu", "Sigmoid", "Tanh"])
@pytest.mark.parametrize("width", [0.05, 1.0])
def test_forward_bounds_enclose_mlp_values(tmp_path, act, width):
    graph = _graph(random_mlp(tmp_path / "m.onnx", [3, 12, 12, 2], act, seed=2))
    _check_forward(graph, _box(graph, batch=3, width=width))


def test_forward_bounds_enclose_products_and_piecewise(tmp_path):
    for path in (
        gates_model(tmp_path / "gates.onnx"),
        relu_sum_model(tmp_path / "pwl.onnx", OFFSETS, WEIGHTS, 0.25, False),
    ):
        graph = _graph(path)
        for seed, width in enumerate([0.1, 1.5]):
            _check_forward(graph, _box(graph, batch=2, width=width, seed=seed), seed)


def test_forward_bounds_are_exact_on_linear_graphs(tmp_path):
    # y = W2 (W1 x + b1) + b2 with no activation: the forms are y itself.
    rng = np.random.default_rng(0)
    w1, w2 = rng.normal(size=(5, 3)), rng.normal(size=(2, 5))
    path = mlp(tmp_path / "lin.onnx", [w1, w2], [np.ones(5), np.zeros(2)], "Identity")
    graph = _graph(path)
    box = _box(graph, batch=2, width=0.7)
    engine, bounds, interval = _check_forward(graph, box)
    lo, hi = bounds[graph.output_name]
    # Exact range of an affine map over a box: centre +- |W| rad.
    w = torch.as_tensor(w2 @ w1, dtype=torch.float32).double()
    mid, rad = (box.upper + box.lower) / 2, (box.upper - box.lower) / 2
    centre = graph.forward(mid)
    spread = (rad.reshape(2, 1, 3) * w.abs().unsqueeze(0)).sum(-1).reshape(2, 1, 2)
    assert torch.allclose(lo, centre - spread, atol=1e-5)
    assert torch.allclose(hi, centre + spread, atol=1e-5)
    ilo, ihi = interval[graph.output_name]
    assert ((hi - lo) < 0.999 * (ihi - ilo)).all()  # interval loses correlations


def test_engine_uses_forward_bounds_for_few_inputs(tmp_path, monkeypatch):
    graph = _graph(random_mlp(tmp_path / "m.onnx", [3, 16, 16, 2], "Tanh", seed=4))
    box = _box(graph, batch=2, width=0.5)
    plain = Engine(graph, DT, forward_max_inputs=0)
    both = Engine(graph, DT)  # 3 inputs: forward bounds first
    cheap = Engine(graph, DT, max_pass_work=0)  # forward bounds only
    assert both.uses_forward() and not plain.uses_forward()
    calls = []
    real = Engine.crown_value
    monkeypatch.setattr(
        Engine,
        "crown_value",
        lambda self, *a, **k: calls.append(1) or real(self, *a, **k),
    )
    b_plain = plain.crown_bounds(box)
    b_both = both.crown_bounds(box)
    n_both = len(calls)
    b_cheap = cheap.crown_bounds(box)
    assert len(calls) == n_both  # no CROWN pass past the work cap
    interval = plain.interval(box)
    pts = bs.box_points(box.lower, box.upper)
    names = plain.needs_bounds()
    values = bs.graph_values(graph, pts, names)
    for name in names:
        (a, b), (c, d) = b_both[name], b_plain[name]
        assert (a >= c - 1e-12).all() and (b <= d + 1e-12).all(), name
        e, f = b_cheap[name]
        assert (e >= interval[name][0]).all() and (f <= interval[name][1]).all()
        for lo, hi in (b_both[name], b_cheap[name]):
            bs.assert_inside(values[name], lo, hi, tol=1e-9, context=name)


def test_forward_bounds_keep_values_before_a_split(tmp_path):
    graph = _graph(random_mlp(tmp_path / "m.onnx", [3, 8, 8, 2], "Relu", seed=1))
    engine = Engine(graph, DT)
    box = _box(graph, batch=1, width=0.5)
    known = engine.crown_bounds(box)
    first = engine.needs_bounds()[0]
    lo, hi = known[first]
    split = {**known, first: (lo, (lo + hi) / 2)}
    again = engine.crown_bounds(box, known=split, start_after=first)
    assert torch.equal(again[first][1], (lo + hi) / 2)
