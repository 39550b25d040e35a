"""CROWN passes of wide values in chunks, and the passes the engine skips.

``Engine.crown_value`` bounds ``2 n`` rows per value; with a small
``max_elements`` it splits them (and the domains) into chunks, which must give
exactly the bounds, and the linear forms, of one pass. ``Engine.crown_bounds``
skips the pass from the output of a monotone elementwise node (its interval is
never looser, see ``Engine.interval_suffices``); the bounds must never get
looser than with every pass run, and must still enclose sampled values.
"""

from __future__ import annotations

from pathlib import Path

import bounds_sampling as bs
import pytest
import torch
from onnx_builders import gates_model, random_mlp

from genbab.bounds import Box, Engine
from genbab.bounds.alpha import init_params
from genbab.bounds.rewrite import prepare_for_bounds
from genbab.model import load_model

DT = torch.float64
MODELS = Path(__file__).resolve().parents[1] / "models"


def _box(graph, batch: int, width: float, seed: int = 0) -> Box:
    g = torch.Generator().manual_seed(seed)
    mid = torch.randn(batch, *graph.input_shape, generator=g, dtype=DT) * 0.5
    rad = width * torch.rand(batch, *graph.input_shape, generator=g, dtype=DT)
    return Box(mid - rad, mid + rad)


def _engine(path, max_elements: int | None = None, **options) -> Engine:
    graph = prepare_for_bounds(load_model(path)).to("cpu", DT)
    if max_elements is not None:
        options["max_elements"] = max_elements
    return Engine(graph, DT, **options)


@pytest.fixture
def tanh_net(tmp_path):
    return random_mlp(tmp_path / "tanh.onnx", [4, 16, 12, 3], "Tanh", seed=5)


@pytest.mark.parametrize("cap", [1, 40, 5000])
def test_chunked_passes_match_one_pass(tanh_net, cap):
    whole, chunked = _engine(tanh_net), _engine(tanh_net, cap)
    box = _box(whole.graph, batch=2, width=0.4)
    bounds = whole.crown_bounds(box)
    name = whole.needs_bounds()[-1]  # the second hidden layer, 12 neurons
    forms_a, forms_b = {}, {}
    lo_a, hi_a = whole.crown_value(name, box, bounds, forms=forms_a)
    lo_b, hi_b = chunked.crown_value(name, box, bounds, forms=forms_b)
    assert torch.allclose(lo_a, lo_b, rtol=1e-13, atol=1e-13)
    assert torch.allclose(hi_a, hi_b, rtol=1e-13, atol=1e-13)
    for fa, fb in zip(forms_a[name], forms_b[name], strict=True):
        assert fa.coeffs.shape == fb.coeffs.shape == (2, 12, 1, 4)
        assert torch.allclose(fa.coeffs, fb.coeffs, rtol=1e-13, atol=1e-13)
        assert torch.allclose(fa.bias, fb.bias, rtol=1e-13, atol=1e-13)
    if cap != 40:
        return
    # The whole-graph bounds agree too.
    other = chunked.crown_bounds(box)
    for k, (lo, hi) in bounds.items():
        assert torch.allclose(lo, other[k][0], rtol=1e-13, atol=1e-13), k
        assert torch.allclose(hi, other[k][1], rtol=1e-13, atol=1e-13), k


def test_chunk_sizes_follow_the_cap(tanh_net):
    engine = _engine(tanh_net, 40)
    name = engine.needs_bounds()[-1]
    # The pass from the 12-neuron layer visits the 16-neuron one: 16 entries
    # per row and domain, so two rows of one domain fit in 40.
    assert engine.rows_per_pass(name, 1) == 2
    assert engine.rows_per_pass(name, 3) == 1
    chunks = list(engine._chunks(name, 3, 24))
    assert chunks[0] == (0, 2, 0, 1)  # two domains, one row each
    assert sum((b1 - b0) * (r1 - r0) for b0, b1, r0, r1 in chunks) == 3 * 24


def test_chunked_passes_with_parameters(tanh_net):
    whole, chunked = _engine(tanh_net), _engine(tanh_net, 40)
    box = _box(whole.graph, batch=2, width=0.6, seed=1)
    bounds = whole.crown_bounds(box)
    name = whole.needs_bounds()[-1]
    params = bs.random_params(init_params(whole, bounds, 24), low=0, high=1, seed=3)
    # Only the nodes before the value matter; their parameters are per row.
    a = whole.crown_value(name, box, bounds, params)
    b = chunked.crown_value(name, box, bounds, params)
    for x, y in zip(a, b, strict=True):
        assert torch.allclose(x, y, rtol=1e-13, atol=1e-13)
    default = whole.crown_value(name, box, bounds)
    assert not torch.allclose(a[0], default[0])  # the parameters were used


def test_deadline_leaves_rows_unbounded(tanh_net):
    engine = _engine(tanh_net, 16, forward_max_inputs=0)
    box = _box(engine.graph, batch=1, width=0.4)
    bounds = engine.crown_bounds(box)
    name = engine.needs_bounds()[-1]
    lo, hi = engine.crown_value(name, box, bounds, deadline=0.0)
    assert torch.isinf(lo).all() and (lo < 0).all()
    assert torch.isinf(hi).all() and (hi > 0).all()
    with pytest.raises(ValueError, match="deadline"):
        engine.crown_value(name, box, bounds, forms={}, deadline=0.0)
    # crown_bounds past its deadline keeps the interval bounds.
    late = engine.crown_bounds(box, deadline=0.0)
    interval = engine.interval(box)
    for k in late:
        assert torch.equal(late[k][0], interval[k][0])


# ---------------------------------------------------------------- skipped passes


def _assert_not_looser(skipped, full, names) -> int:
    """Every bound of ``skipped`` within ``full`` (up to rounding); returns how
    many values got strictly tighter somewhere."""
    tighter = 0
    for k in names:
        (a, b), (c, d) = skipped[k], full[k]
        tol = 1e-12 * (1 + c.abs() + d.abs())
        assert (a >= c - tol).all() and (b <= d + tol).all(), k
        tighter += bool((a > c + tol).any() or (b < d - tol).any())
    return tighter


def test_gate_passes_skipped_and_not_looser(tmp_path):
    engine = _engine(gates_model(tmp_path / "gates.onnx"))
    skipped = {n for n in engine.needs_bounds() if engine.interval_suffices(n)}
    # sigmoid, tanh, relu, exp and the reciprocal feed products; the exp
    # inside "p" and the Gemm outputs are not monotone-node outputs.
    assert skipped == {"s", "t", "r", "e", "q"}
    beaten = 0
    for seed, width in enumerate([0.05, 0.5, 2.0]):
        box = _box(engine.graph, batch=4, width=width, seed=seed)
        fast = engine.crown_bounds(box)
        full = engine.crown_bounds(box, forms={})  # forms: every pass runs
        # CROWN is intersected with the interval, which it never beats here:
        # both give the interval.
        assert _assert_not_looser(fast, full, engine.needs_bounds()) == 0
        _assert_not_looser(full, fast, engine.needs_bounds())
        for k in skipped:
            lo, hi = engine.crown_value(k, box, fast)
            beaten += bool(
                (lo < fast[k][0] - 1e-9).any() or (hi > fast[k][1] + 1e-9).any()
            )
        pts = bs.box_points(box.lower, box.upper, seed=seed)
        values = bs.graph_values(engine.graph, pts, sorted(skipped))
        for k in skipped:
            bs.assert_inside(values[k], *fast[k], tol=1e-9, context=k)
    assert beaten > 0  # a CROWN pass alone is strictly looser somewhere


@pytest.mark.skipif(
    not (MODELS / "lstm_unrolled_4x16_h16.onnx").exists(),
    reason="LSTM models not built",
)
def test_lstm_skips_half_the_passes(monkeypatch):
    # The other LSTM models skip 39 of their 78 passes; this one is quicker.
    engine = _engine(MODELS / "lstm_unrolled_4x16_h16.onnx")
    names = [n for n in engine.needs_bounds() if n != engine.graph.input_name]
    assert len(names) == 39
    assert sum(engine.interval_suffices(n) for n in names) == 19
    calls: list[str] = []
    real = Engine.crown_value

    def counting(self, name, *args, **kwargs):
        calls.append(name)
        return real(self, name, *args, **kwargs)

    monkeypatch.setattr(Engine, "crown_value", counting)
    box = _box(engine.graph, batch=1, width=0.02)
    fast = engine.crown_bounds(box)
    assert len(calls) == 20
    full = engine.crown_bounds(box, forms={})
    assert len(calls) == 20 + 39
    _assert_not_looser(fast, full, names)


def test_interval_after_a_value_recomputes_only_later_nodes(tanh_net):
    engine = _engine(tanh_net)
    box = _box(engine.graph, batch=2, width=0.5)
    bounds = engine.crown_bounds(box)
    name = engine.needs_bounds()[1]
    lo, hi = bounds[name]
    tighter = {**bounds, name: (lo + 0.25 * (hi - lo), hi)}
    full = engine.interval(box, tighter)
    part = engine.interval(box, tighter, after=name)
    order = [n.name for n in engine.graph.nodes]
    for k in order:
        assert torch.equal(full[k][0], part[k][0]), k
        assert torch.equal(full[k][1], part[k][1]), k
    # Nodes up to the value keep what they were given, even if looser.
    first = order[0]
    loose = {**tighter, first: (bounds[first][0] - 1, bounds[first][1] + 1)}
    kept = engine.interval(box, loose, after=name)
    assert torch.equal(kept[first][0], bounds[first][0] - 1)
