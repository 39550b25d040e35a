"""Sums of shifted ReLUs as one piecewise-linear function: relaxation, rewrite.

* The relaxation of ``f(x) = c + sum_k w_k relu(x - o_k)`` is checked by
  sampling (uniform, edge-heavy, the interval ends and every breakpoint) on
  wide, narrow, negative, positive, zero-crossing and point intervals, with the
  default slopes and with random parameters inside and outside ``[0, 1]``.
* Hand-computed lines on a tent function pin the hull slopes.
* The rewrite (:func:`merge_relu_sums`) is checked on small ONNX graphs of
  both patterns (``MatMul`` by a vector, and ``Mul`` + ``ReduceSum``) against
  onnxruntime, must leave other graphs alone, and must make CROWN tighter
  than the per-ReLU triangles while still enclosing the true outputs.
* On the shared ACOPF surrogates the rewritten graph equals onnxruntime.
"""

from __future__ import annotations

import gzip

import bounds_sampling as bs
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx_builders import SHARED, relu_sum_model

from genbab.bounds import Box, Engine
from genbab.bounds.piecewise import (
    PiecewiseLinear,
    breakpoint_split_points,
    breakpoints_inside,
)
from genbab.bounds.relax.piecewise_linear import (
    PiecewiseLinearFunction,
    init_piecewise_params,
    piecewise_range,
    relax_piecewise_linear,
)
from genbab.bounds.rewrite import decompose_softmax, merge_relu_sums
from genbab.model import load_model

DT = torch.float64


def _random_function(K: int, seed: int) -> PiecewiseLinearFunction:
    g = torch.Generator().manual_seed(seed)
    o = torch.sort(torch.randn(K, generator=g, dtype=DT) * 1.5).values
    w = torch.randn(K, generator=g, dtype=DT)
    return PiecewiseLinearFunction(o, w, torch.randn((), generator=g, dtype=DT))


def _intervals(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Wide, narrow, negative, positive, crossing, point and breakpoint-ended
    intervals, ``[6, 30]``."""
    g = torch.Generator().manual_seed(seed)
    kinds = [
        (torch.randn(30, generator=g) * 2, torch.rand(30, generator=g) * 4),
        (torch.randn(30, generator=g), torch.rand(30, generator=g) * 1e-3),
        (-3 - torch.rand(30, generator=g), torch.rand(30, generator=g)),
        (1 + torch.rand(30, generator=g), torch.rand(30, generator=g)),
        (torch.zeros(30), 0.1 + torch.rand(30, generator=g)),
        (torch.randn(30, generator=g), torch.zeros(30)),
    ]
    lo = torch.stack([(m - r).double() for m, r in kinds])
    hi = torch.stack([(m + r).double() for m, r in kinds])
    return lo, hi


def _samples(f: PiecewiseLinearFunction, lo: torch.Tensor, hi: torch.Tensor):
    """``[*shape, N]`` points: ends, uniform, Beta(0.5, 0.5), breakpoints."""
    g = torch.Generator().manual_seed(0)
    u = torch.rand(*lo.shape, 200, generator=g, dtype=DT)
    beta = torch.distributions.Beta(
        torch.tensor(0.5, dtype=DT), torch.tensor(0.5, dtype=DT)
    )
    b = beta.sample((*lo.shape, 200))
    frac = torch.cat(
        [torch.zeros(*lo.shape, 1, dtype=DT), torch.ones(*lo.shape, 1, dtype=DT), u, b],
        -1,
    )
    pts = lo.unsqueeze(-1) + frac * (hi - lo).unsqueeze(-1)
    o = f.breakpoints.expand(*lo.shape, -1)
    inside = (o >= lo.unsqueeze(-1)) & (o <= hi.unsqueeze(-1))
    pts = torch.cat([pts, torch.where(inside, o, lo.unsqueeze(-1))], -1)
    return torch.minimum(torch.maximum(pts, lo.unsqueeze(-1)), hi.unsqueeze(-1))


def _assert_sound(f, rel, lo, hi) -> None:
    x = _samples(f, lo, hi)
    y = f(x)
    low = rel.lower_slope.unsqueeze(-1) * x + rel.lower_bias.unsqueeze(-1)
    up = rel.upper_slope.unsqueeze(-1) * x + rel.upper_bias.unsqueeze(-1)
    assert (low <= y).all(), (y - low).min()
    assert (up >= y).all(), (up - y).min()


@pytest.mark.parametrize("K", [1, 3, 18, 55])
@pytest.mark.parametrize("seed", [0, 1])
def test_default_relaxation_is_sound_and_exact_range(K, seed):
    f = _random_function(K, seed)
    lo, hi = _intervals(seed)
    rel = relax_piecewise_linear(f, lo, hi)
    _assert_sound(f, rel, lo, hi)
    # The range is exact: reached by sampled points, never exceeded.
    rlo, rhi = piecewise_range(f, lo, hi)
    y = f(_samples(f, lo, hi))
    assert (y >= rlo.unsqueeze(-1) - 1e-12).all() and (
        y <= rhi.unsqueeze(-1) + 1e-12
    ).all()
    assert torch.allclose(y.min(-1).values, rlo) and torch.allclose(
        y.max(-1).values, rhi
    )


@pytest.mark.parametrize("low,high", [(0.0, 1.0), (-5.0, 5.0)])
def test_relaxation_is_sound_for_any_parameters(low, high):
    f = _random_function(18, 3)
    lo, hi = _intervals(4)
    init = init_piecewise_params(f, lo, hi)
    assert init.shape == (2, *lo.shape)
    assert ((init >= 0) & (init <= 1)).all()
    # The initial parameters reproduce the default slopes.
    default = relax_piecewise_linear(f, lo, hi)
    again = relax_piecewise_linear(f, lo, hi, init)
    assert torch.allclose(default.lower_slope, again.lower_slope, atol=1e-12)
    assert torch.allclose(default.upper_bias, again.upper_bias, atol=1e-9)
    g = torch.Generator().manual_seed(5)
    for _ in range(3):
        p = low + (high - low) * torch.rand(2, *lo.shape, generator=g, dtype=DT)
        _assert_sound(f, relax_piecewise_linear(f, lo, hi, p), lo, hi)


def _tent() -> PiecewiseLinearFunction:
    # relu(x) - 2 relu(x - 1): 0, then x on [0, 1], then 2 - x.
    return PiecewiseLinearFunction(
        torch.tensor([0.0, 1.0], dtype=DT), torch.tensor([1.0, -2.0], dtype=DT),
        torch.tensor(0.0, dtype=DT),
    )  # fmt: skip


def test_tent_hull_lines_by_hand():
    f = _tent()
    lo, hi = (
        torch.tensor([-1.0, 0.2, -1.0], dtype=DT),
        torch.tensor([2.0, 0.8, 3.0], dtype=DT),
    )
    rel = relax_piecewise_linear(f, lo, hi)
    # [-1, 2]: f >= 0 is the lower hull; the upper hull over m = 0.5 is the
    # edge from (-1, 0) to (1, 1): 0.5 x + 0.5.
    assert rel.lower_slope[0].item() == pytest.approx(0.0, abs=1e-12)
    assert rel.lower_bias[0].item() == pytest.approx(0.0, abs=1e-12)
    assert rel.upper_slope[0].item() == pytest.approx(0.5)
    assert rel.upper_bias[0].item() == pytest.approx(0.5)
    # [0.2, 0.8]: no breakpoint inside, f(x) = x exactly.
    for k in (rel.lower_slope, rel.upper_slope):
        assert k[1].item() == pytest.approx(1.0)
    assert rel.lower_bias[1].item() == pytest.approx(0.0, abs=1e-12)
    assert rel.upper_bias[1].item() == pytest.approx(0.0, abs=1e-12)
    # [-1, 3]: the lower hull is the chord to (3, -1): -x / 4 - 1 / 4.
    assert rel.lower_slope[2].item() == pytest.approx(-0.25)
    assert rel.lower_bias[2].item() == pytest.approx(-0.25)
    rlo, rhi = piecewise_range(f, lo, hi)
    assert rlo.tolist() == pytest.approx([0.0, 0.2, -1.0])
    assert rhi.tolist() == pytest.approx([1.0, 0.8, 1.0])


def test_split_points_are_breakpoints():
    op = PiecewiseLinear(
        torch.tensor([-1.0, 0.0, 0.5, 2.0], dtype=DT),
        torch.ones(4, dtype=DT),
        torch.tensor(0.0, dtype=DT),
    )
    lo = torch.tensor([[-2.0, -0.9, 0.6, -1.0]], dtype=DT)
    hi = torch.tensor([[3.0, 0.9, 1.5, 0.0]], dtype=DT)
    p = breakpoint_split_points(op, lo, hi)
    # Nearest breakpoint strictly inside to the midpoint; the midpoint if none
    # (for [-1, 0] both ends are breakpoints, none is inside).
    assert p.tolist() == [[0.5, 0.0, 1.05, -0.5]]
    assert breakpoints_inside(op, lo, hi).tolist() == [[4, 2, 0, 0]]


# ---------------------------------------------------------------- the rewrite


OFFSETS = [0.5, -1.0, 0.0, 1.2, -0.3]  # not sorted, as a model may store them
WEIGHTS = [-2.0, 1.0, 1.5, 0.7, -0.4]


@pytest.mark.parametrize("reduce", [False, True])
def test_rewrite_matches_onnxruntime(tmp_path, reduce):
    path = relu_sum_model(tmp_path / "m.onnx", OFFSETS, WEIGHTS, 0.25, reduce)
    graph = load_model(path)
    new = merge_relu_sums(graph)
    pwl = [n for n in new.nodes if isinstance(n.op, PiecewiseLinear)]
    assert len(pwl) == 1 and len(new.nodes) == len(graph.nodes) - 3 - reduce
    assert pwl[0].op.breakpoints.tolist() == pytest.approx(sorted(OFFSETS))
    assert pwl[0].shape == (1, 4)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 1, 3)).astype(np.float32) * 2
    sess = ort.InferenceSession(str(path))
    want = np.stack([sess.run(None, {"x": xi})[0] for xi in x])
    got = new.forward(torch.as_tensor(x)).numpy()
    assert np.allclose(got, want, rtol=1e-5, atol=1e-5)


def test_rewrite_leaves_other_graphs_alone(tmp_path):
    path = relu_sum_model(tmp_path / "m.onnx", OFFSETS, WEIGHTS, 0.0, False)
    model = onnx.load(path)
    for node in model.graph.node:
        if node.op_type == "Relu":
            node.op_type = "Sigmoid"
    onnx.save(model, tmp_path / "sig.onnx")
    graph = load_model(tmp_path / "sig.onnx")
    assert merge_relu_sums(graph) is graph


def test_rewrite_tightens_crown_and_encloses(tmp_path):
    path = relu_sum_model(tmp_path / "m.onnx", OFFSETS, WEIGHTS, 0.25, False)
    plain = load_model(path).to("cpu", DT)
    merged = merge_relu_sums(plain)
    lo = torch.tensor([[[-1.0, -0.5, -1.0]]], dtype=DT)
    box = Box(lo, lo + 1.5)
    outs = {}
    for label, graph in (("plain", plain), ("merged", merged)):
        engine = Engine(graph, DT)
        bounds = engine.crown_bounds(box)
        outs[label] = engine.crown_value(graph.output_name, box, bounds)
    pts = bs.box_points(box.lower, box.upper)
    y = bs.graph_values(plain, pts, [plain.output_name])[plain.output_name]
    bs.assert_inside(y, *outs["merged"], tol=1e-9, context="merged")
    (plo, phi), (mlo, mhi) = outs["plain"], outs["merged"]
    assert (mlo >= plo - 1e-12).all() and (mhi <= phi + 1e-12).all()
    width_plain, width_merged = (phi - plo).sum().item(), (mhi - mlo).sum().item()
    assert width_merged < 0.9 * width_plain


ACOPF_2024 = SHARED / "ml4acopf_2024" / "onnx"


@pytest.mark.skipif(not ACOPF_2024.exists(), reason="shared benchmarks not found")
@pytest.mark.parametrize(
    "model",
    ["14_ieee_ml4acopf-linear-nonresidual", "14_ieee_ml4acopf-linear-residual"],
)
def test_acopf_surrogates_rewritten_match_onnxruntime(model):
    path = ACOPF_2024 / f"{model}.onnx.gz"
    graph = load_model(path)
    new = decompose_softmax(merge_relu_sums(graph))
    pwl = [n for n in new.nodes if isinstance(n.op, PiecewiseLinear)]
    # The surrogates of sigmoid, cos and sin.
    assert len(pwl) == 3
    sess = ort.InferenceSession(gzip.decompress(path.read_bytes()))
    name = sess.get_inputs()[0].name
    rng = np.random.default_rng(2)
    # Loads near the properties' boxes, and wider to reach more breakpoints.
    x = 0.5 + rng.uniform(size=(32, 1, 22)) * rng.choice([0.1, 1.0], (32, 1, 1))
    x = x.astype(np.float32)
    want = np.stack([sess.run(None, {name: xi})[0] for xi in x])
    got = new.to("cpu", DT).forward(torch.as_tensor(x, dtype=DT)).numpy()
    assert np.allclose(got, want, rtol=1e-4, atol=1e-4 * (1 + np.abs(want).max()))
