"""Bounds of the attention ops: two-variable MatMul, softmax (fallback and rewrite).

Every bound is checked by sampling the input box (corners, uniform and
edge-heavy points) against the graph's own float64 values, for the default
relaxations and for random parameters in and far outside their ranges; a few
tiny cases pin exact values.
"""

from __future__ import annotations

import math
import warnings

import bounds_sampling as bs
import pytest
import relax_sampling as rs
import torch

from genbab.bounds import Box, Engine, attention
from genbab.bounds.alpha import init_params
from genbab.bounds.attention import (
    SoftmaxDenominator,
    SoftmaxReciprocal,
    denominator_interval,
    matmul_interval,
    softmax_interval,
)
from genbab.bounds.rewrite import decompose_softmax, prepare_for_bounds
from genbab.bounds.rules import rule_for
from genbab.errors import BoundsError
from genbab.model.graph import Graph, Node
from genbab.model.ops import BilinearMatMul, Linear, Reshape, Softmax

DT = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    with rs.single_thread():
        yield


def _box(center: torch.Tensor, radius: float) -> Box:
    return Box(center - radius, center + radius)


def _centers(n: int, batch: int, kind: str, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    c = torch.rand(batch, 1, n, generator=g, dtype=DT) * 2 - 1
    if kind == "positive":
        c = c.abs() + 1.5
    elif kind == "negative":
        c = -c.abs() - 1.5
    return c


# ---------------------------------------------------------------- MatMul graphs


def _matmul_graph(sx: tuple[int, ...], sy: tuple[int, ...], seed: int = 0) -> Graph:
    """``input [1, n] -> (Linear, Reshape) twice -> x @ y -> flatten``."""
    g = torch.Generator().manual_seed(seed)
    n = 3
    nodes = []
    for name, shape in (("x", sx), ("y", sy)):
        size = math.prod(shape)
        w = torch.randn(n, size, generator=g, dtype=DT)
        b = torch.randn(size, generator=g, dtype=DT) * 0.5
        nodes.append(Node(f"{name}_flat", Linear(w, b), ("input",), (1, size)))
        nodes.append(Node(name, Reshape(shape), (f"{name}_flat",), shape))
    out = tuple(torch.matmul(torch.zeros(sx), torch.zeros(sy)).shape)
    nodes.append(Node("xy", BilinearMatMul(), ("x", "y"), out))
    nodes.append(
        Node("out", Reshape((1, math.prod(out))), ("xy",), (1, math.prod(out)))
    )
    return Graph("input", (1, n), nodes, "out")


MATMUL_SHAPES = {
    "2d": ((3, 4), (4, 2)),
    "batched": ((2, 3, 4), (2, 4, 2)),
    "broadcast": ((2, 3, 4), (4, 5)),
    "broadcast_unit": ((2, 1, 2, 3), (1, 3, 3, 2)),
    "vector_left": ((4,), (4, 3)),
    "vector_right": ((3, 4), (4,)),
    "dot": ((4,), (4,)),
}


@pytest.mark.parametrize("kind", ["crossing", "positive", "negative"])
@pytest.mark.parametrize("shapes", MATMUL_SHAPES)
def test_matmul_bounds_enclose_values(shapes: str, kind: str) -> None:
    graph = _matmul_graph(*MATMUL_SHAPES[shapes])
    for radius in (1e-3, 0.3, 3.0):
        box = _box(_centers(3, 2, kind, seed=1), radius)
        res = bs.check_graph(graph, box)
        # CROWN is exact up to rounding on a tiny box: at most the interval width.
        lo, hi = res["crown"]
        ilo, ihi = res["interval"]
        if radius == 1e-3:
            assert ((hi - lo) <= (ihi - ilo) * 1.01 + 1e-9).all()


def test_matmul_center_radius_and_parameterless_paths(monkeypatch) -> None:
    """The large-size fallbacks (centre-radius interval, no alpha parameters)."""
    monkeypatch.setattr(attention, "INTERVAL_CORNER_LIMIT", 0)
    monkeypatch.setattr(attention, "MATMUL_PARAM_LIMIT", 0)
    graph = _matmul_graph(*MATMUL_SHAPES["broadcast"])
    engine = Engine(graph, DT)
    box = _box(_centers(3, 2, "crossing", seed=2), 0.7)
    bounds = engine.crown_bounds(box)
    assert attention._matmul_init(graph.node("xy"), [bounds["x"], bounds["y"]]) is None
    bs.check_graph(graph, box)


def test_matmul_interval_exact_on_products() -> None:
    # One product: exactly the corners' min and max.
    lo, hi = matmul_interval(*(torch.tensor([[[v]]], dtype=DT) for v in (1, 2, 3, 4)))
    assert (lo.item(), hi.item()) == (3.0, 8.0)
    lo, hi = matmul_interval(
        *(torch.tensor([[[v]]], dtype=DT) for v in (-1.0, 2.0, -3.0, 1.0))
    )
    assert (lo.item(), hi.item()) == (-6.0, 3.0)
    # x = [x1, x2] in [0, 1] x [-1, 1], y = [2, 3]^T fixed: [-3, 5].
    xl, xu = torch.tensor([[[0.0, -1.0]]], dtype=DT), torch.tensor([[[1.0, 1.0]]])
    yl = yu = torch.tensor([[[2.0], [3.0]]], dtype=DT)
    lo, hi = matmul_interval(xl, xu.double(), yl, yu)
    assert (lo.item(), hi.item()) == (-3.0, 5.0)


def test_matmul_crown_by_hand() -> None:
    """x in [1, 2], y in [3, 4] (1x1 matrices): the weight-0.5 McCormick planes.

    Lower ``3.5 x + 1.5 y - 5.5`` (min 2.5 at (1, 3)); upper ``3.5 x + 1.5 y - 5``
    (max 8 at (2, 4)); the interval is exact, [3, 8].
    """
    pick = {k: torch.tensor([[1.0 - k], [float(k)]], dtype=DT) for k in (0, 1)}
    nodes = [
        Node("x_sel", Linear(pick[0]), ("input",), (1,)),
        Node("x", Reshape((1, 1)), ("x_sel",), (1, 1)),
        Node("y_sel", Linear(pick[1]), ("input",), (1,)),
        Node("y", Reshape((1, 1)), ("y_sel",), (1, 1)),
        Node("xy", BilinearMatMul(), ("x", "y"), (1, 1)),
    ]
    graph = Graph("input", (2,), nodes, "xy")
    box = Box(
        torch.tensor([[1.0, 3.0]], dtype=DT), torch.tensor([[2.0, 4.0]], dtype=DT)
    )
    res = bs.check_graph(graph, box)
    lo, hi = res["crown"]
    assert lo.item() == pytest.approx(2.5, abs=1e-12)
    assert hi.item() == pytest.approx(8.0, abs=1e-12)
    ilo, ihi = res["interval"]
    assert (ilo.item(), ihi.item()) == (3.0, 8.0)
    # With the plane weight 1 (r = 1): lower plane 3 x + y - 3, min 3 (exact).
    engine = Engine(graph, DT)
    bounds = engine.crown_bounds(box)
    params = {"xy": torch.ones(2, 1, 1, 1, 1, 1, dtype=DT)}
    low = engine.objective_lower(torch.ones(1, 1, 1, dtype=DT), box, bounds, params)
    assert low.item() == pytest.approx(3.0, abs=1e-12)


# ---------------------------------------------------------------- softmax


def _softmax_graph(n: int, shape: tuple[int, ...], axis: int, seed: int = 0) -> Graph:
    """``input [1, n] -> Linear -> Reshape(shape) -> Softmax(axis) -> flatten``."""
    g = torch.Generator().manual_seed(seed)
    size = math.prod(shape)
    w = torch.randn(n, size, generator=g, dtype=DT)
    b = torch.randn(size, generator=g, dtype=DT)
    nodes = [
        Node("logits_flat", Linear(w, b), ("input",), (1, size)),
        Node("logits", Reshape(shape), ("logits_flat",), shape),
        Node("softmax", Softmax(axis), ("logits",), shape),
        Node("out", Reshape((1, size)), ("softmax",), (1, size)),
    ]
    return Graph("input", (1, n), nodes, "out")


SOFTMAX_CASES = {
    "two": ((2,), 0),
    "row": ((1, 4), 1),
    "columns": ((3, 2), 0),
    "middle": ((2, 3, 2), 1),
    "single": ((3, 1), 1),
}


@pytest.mark.parametrize("radius", [1e-4, 0.2, 2.0, 30.0])
@pytest.mark.parametrize("case", SOFTMAX_CASES)
def test_decomposed_softmax_bounds_enclose_values(case: str, radius: float) -> None:
    shape, axis = SOFTMAX_CASES[case]
    graph = prepare_for_bounds(_softmax_graph(3, shape, axis))
    box = _box(_centers(3, 2, "crossing", seed=3), radius)
    res = bs.check_graph(graph, box)
    lo, hi = res["crown"]
    ilo, ihi = res["interval"]
    assert (ilo >= 0).all() and (ihi <= 1).all()
    if radius <= 0.2:  # CROWN is useful on small boxes
        assert (hi - lo).mean() <= (ihi - ilo).mean()


@pytest.mark.parametrize("radius", [1e-4, 0.2, 2.0, 30.0])
@pytest.mark.parametrize("case", SOFTMAX_CASES)
def test_fallback_softmax_bounds_enclose_values(case: str, radius: float) -> None:
    shape, axis = SOFTMAX_CASES[case]
    graph = _softmax_graph(3, shape, axis)
    box = _box(_centers(3, 2, "crossing", seed=4), radius)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = bs.check_graph(graph, box)
    ilo, ihi = res["interval"]
    assert (ilo >= 0).all() and (ihi <= 1).all()


def test_fallback_softmax_warns() -> None:
    graph = _softmax_graph(3, (4,), 0)
    engine = Engine(graph, DT)
    box = _box(_centers(3, 1, "crossing", seed=5), 0.1)
    bounds = engine.crown_bounds(box)
    rows = torch.eye(4, dtype=DT)[None]
    with pytest.warns(UserWarning, match="softmax node 'softmax'.*prepare_for_bounds"):
        engine.objective_lower(rows, box, bounds)


@pytest.mark.parametrize("case", SOFTMAX_CASES)
def test_decomposition_computes_softmax(case: str) -> None:
    shape, axis = SOFTMAX_CASES[case]
    graph = _softmax_graph(3, shape, axis)
    rewritten = decompose_softmax(graph)
    assert rewritten.output_name == graph.output_name
    assert not any(isinstance(n.op, Softmax) for n in rewritten.nodes)
    # The softmax value keeps its name; new values are named "<softmax>/<part>".
    new = {n.name for n in rewritten.nodes} - {n.name for n in graph.nodes}
    assert all(name.startswith("softmax/") for name in new)
    assert rewritten.node("softmax").shape == graph.node("softmax").shape
    x = torch.randn(50, 1, 3, dtype=DT, generator=torch.Generator().manual_seed(0)) * 5
    torch.testing.assert_close(
        rewritten.forward(x), graph.forward(x), rtol=1e-12, atol=0
    )
    assert decompose_softmax(rewritten).nodes == rewritten.nodes  # idempotent


def test_softmax_interval_exact_by_hand() -> None:
    # Two logits in [0, 1]: softmax_1 ranges over [1 / (1 + e), e / (1 + e)].
    lo, hi = softmax_interval(
        torch.zeros(1, 2, dtype=DT), torch.ones(1, 2, dtype=DT), 1
    )
    e = math.e
    torch.testing.assert_close(lo, torch.full((1, 2), 1 / (1 + e), dtype=DT))
    torch.testing.assert_close(hi, torch.full((1, 2), e / (1 + e), dtype=DT))
    assert (lo <= 1 / (1 + e)).all() and (hi >= e / (1 + e)).all()  # rounded outward
    # A fixed logit vector gives its softmax (up to the rounding pad).
    x = torch.tensor([[0.5, -1.0, 2.0]], dtype=DT)
    lo, hi = softmax_interval(x, x, 1)
    ref = torch.softmax(x, 1)
    assert (lo <= ref).all() and (hi >= ref).all()
    torch.testing.assert_close(lo, ref, rtol=1e-14, atol=0)


def test_softmax_of_two_logits_crown_by_hand() -> None:
    """Softmax of (x, 0) for x in [-1, 1], rewritten: ``1 / (1 + exp(z))``, z = -+x.

    The interval is exact, ``[1 / (1 + e), e / (1 + e)]``. CROWN, by hand: the
    denominator ``d = 1 + exp(z)`` lies in ``[1 + 1/e, 1 + e]`` with midpoint
    ``t = 1 + cosh 1``; below, ``1/d >= 2/t - d/t^2`` (tangent at ``t``) with
    ``d <= 1 + cosh 1 + z sinh 1`` (exp's chord), minimal at ``z = 1``:
    ``2/t - (1 + e)/t^2``. Above, the chord ``1/d <= 1 - d / (2t)`` (as
    ``d_l d_u = 2t`` and ``1/d_l + 1/d_u = 1``) with ``d >= 2 + z`` (exp's
    tangent at 0), maximal at ``z = -1``: ``1 - 1/(2t)``. For the sum of both
    outputs the ``z`` terms cancel: ``[2/t, 2 - 2/t]``.
    """
    nodes = [
        Node("logits", Linear(torch.tensor([[1.0, 0.0]], dtype=DT)), ("input",), (2,)),
        Node("softmax", Softmax(0), ("logits",), (2,)),
    ]
    graph = prepare_for_bounds(Graph("input", (1,), nodes, "softmax"))
    box = Box(torch.tensor([[-1.0]], dtype=DT), torch.tensor([[1.0]], dtype=DT))
    res = bs.check_graph(graph, box)
    s, t, e = 1 / (1 + math.e), 1 + math.cosh(1.0), math.e

    def full(v: float) -> torch.Tensor:
        return torch.full((1, 2), v, dtype=DT)

    ilo, ihi = res["interval"]
    torch.testing.assert_close(ilo, full(s), rtol=1e-12, atol=0)
    torch.testing.assert_close(ihi, full(1 - s), rtol=1e-12, atol=0)
    lo, hi = res["crown"]
    torch.testing.assert_close(lo, full(2 / t - (1 + e) / t**2), rtol=1e-12, atol=0)
    torch.testing.assert_close(hi, full(1 - 1 / (2 * t)), rtol=1e-12, atol=0)
    engine = Engine(graph, DT)
    bounds = engine.crown_bounds(box)
    rows = torch.tensor([[[1.0, 1.0], [-1.0, -1.0]]], dtype=DT)
    low = engine.objective_lower(rows, box, bounds)
    assert low[0, 0].item() == pytest.approx(2 / t, rel=1e-12)
    assert -low[0, 1].item() == pytest.approx(2 - 2 / t, rel=1e-12)


# ---------------------------------------------------------------- rewrite parts


def _node(op, shape=(2, 3)) -> Node:
    return Node("n", op, ("x",), shape)


def test_denominator_interval_sound_and_exact() -> None:
    g = torch.Generator().manual_seed(0)
    for scale in (1e-3, 1.0, 20.0):
        a = torch.randn(4, 2, 5, generator=g, dtype=DT) * scale
        b = a + torch.rand(4, 2, 5, generator=g, dtype=DT) * scale
        lo, hi = denominator_interval(a, b, 2)
        at_lo = 1 + torch.exp(a).sum(2)
        at_hi = 1 + torch.exp(b).sum(2)
        assert (lo <= at_lo).all() and (hi >= at_hi).all()
        torch.testing.assert_close(lo, at_lo, rtol=1e-14, atol=0)
        torch.testing.assert_close(hi, at_hi, rtol=1e-14, atol=0)
    # Overflow: the upper end is infinite, never NaN; the lower one stays >= 1.
    lo, hi = denominator_interval(
        torch.tensor([[-2000.0, 0.0]], dtype=DT),
        torch.tensor([[800.0, 1.0]]).double(),
        1,
    )
    assert hi.item() == math.inf and lo.item() == pytest.approx(2.0)


def test_denominator_backward_sound_for_random_params() -> None:
    node = Node("d", SoftmaxDenominator(1), ("z",), (2,))
    g = torch.Generator().manual_seed(1)
    rule = attention.RULES[SoftmaxDenominator]
    for scale in (1e-3, 1.0, 10.0):
        zl = torch.randn(3, 2, 4, generator=g, dtype=DT) * scale
        zu = zl + torch.rand(3, 2, 4, generator=g, dtype=DT) * scale
        a = torch.randn(3, 5, 2, generator=g, dtype=DT)
        draws = [
            None,
            rule.init_params(node, [(zl, zu)])[:, :, None].expand(1, 3, 5, 2, 4),
        ]
        draws.append(torch.rand(1, 3, 5, 2, 4, generator=g, dtype=DT) * 10 - 5)
        z = bs.box_points(zl, zu)  # [3, K, 2, 4]
        d = 1 + torch.exp(z).sum(-1)  # [3, K, 2]
        for params in draws:
            (coef,), bias = rule.backward(node, a, [(zl, zu)], params, [(2, 4)])
            lhs = torch.einsum("bsi,bki->bks", a, d)
            rhs = torch.einsum("bsij,bkij->bks", coef, z) + bias[:, None]
            assert (lhs - rhs >= -1e-12 * (1 + lhs.abs())).all()


def test_softmax_reciprocal_clips_and_tolerates_overflow() -> None:
    node = Node("r", SoftmaxReciprocal(), ("d",), (3,))
    rule = attention.RULES[SoftmaxReciprocal]
    lo = torch.tensor([[0.5, 1.0, 2.0]], dtype=DT)  # 0.5 < 1: clipped to 1
    hi = torch.tensor([[4.0, math.inf, 2.0]], dtype=DT)
    out_lo, out_hi = rule.interval(node, [(lo, hi)])
    torch.testing.assert_close(out_lo, torch.tensor([[0.25, 0.0, 0.5]], dtype=DT))
    torch.testing.assert_close(out_hi, torch.tensor([[1.0, 1.0, 0.5]], dtype=DT))
    with pytest.raises(BoundsError, match="node 'r'"):
        rule.interval(node, [(lo, torch.full_like(hi, math.nan))])
    # The backward step on finite bounds is the reciprocal's on [max(l, 1), u].
    a = torch.tensor([[[1.0, -1.0, 2.0]]], dtype=DT)
    hi = torch.tensor([[4.0, 3.0, 2.5]], dtype=DT)
    (coef,), bias = rule.backward(node, a, [(lo, hi)], None, [(3,)])
    d = bs.box_points(lo.clamp(min=1), hi)  # [1, K, 3]
    lhs = (a[:, None, 0] / d).sum(-1)
    rhs = (coef[:, None, 0] * d).sum(-1) + bias
    assert (lhs >= rhs - 1e-12).all()


def test_softmax_rewrite_survives_overflowing_interval() -> None:
    """Logit differences too wide for exp: the interval pass stays finite."""
    graph = prepare_for_bounds(_softmax_graph(3, (4,), 0))
    engine = Engine(graph, DT)
    box = _box(_centers(3, 1, "crossing", seed=6), 400.0)
    bounds = engine.interval(box)
    lo, hi = bounds["out"]
    assert torch.isfinite(lo).all() and torch.isfinite(hi).all()
    assert (lo >= 0).all() and (hi <= 1).all()
    assert bounds["softmax/denominator"][1].isinf().any()


def test_softmax_rewrite_bounded_from_overflowing_intervals() -> None:
    """CROWN on interval intermediate bounds whose denominators are infinite."""
    graph = prepare_for_bounds(_softmax_graph(3, (2, 4), 1))
    engine = Engine(graph, DT)
    box = _box(_centers(3, 2, "crossing", seed=7), 400.0)
    bounds = engine.interval(box)
    assert bounds["softmax/denominator"][1].isinf().any()
    n = graph.num_outputs
    eye = torch.eye(n, dtype=DT)
    rows = torch.cat([eye, -eye]).unsqueeze(0).expand(2, -1, -1)
    values = bs.graph_values(graph, bs.box_points(box.lower, box.upper), ["out"])
    y = values["out"].flatten(2)
    init = init_params(engine, bounds, 2 * n)
    for params in (None, init, bs.random_params(init, low=-5, high=5, seed=0)):
        low = engine.objective_lower(rows, box, bounds, params)
        assert torch.isfinite(low).all()
        bs.assert_inside(y, low[:, :n], -low[:, n:], tol=1e-9, context="overflow")


@pytest.mark.parametrize(
    "op, shape",
    [
        (SoftmaxDenominator(1), (2,)),
        (Softmax(1), (2, 3)),
    ],
    ids=["denominator", "softmax"],
)
def test_non_finite_input_bounds_name_the_node(op, shape) -> None:
    node = _node(op, shape)
    rule = rule_for(node)
    lo = torch.zeros(1, 2, 3, dtype=DT)
    a = torch.ones(1, 1, *shape, dtype=DT)
    for bad, word in ((math.inf, "infinite"), (math.nan, "NaN")):
        hi = torch.ones(1, 2, 3, dtype=DT)
        hi[0, 1, 2] = bad
        with pytest.raises(BoundsError, match=f"node 'n'.*{word}"):
            rule.interval(node, [(lo, hi)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(BoundsError, match=f"node 'n'.*{word}"):
                rule.backward(node, a, [(lo, hi)], None, [(2, 3)])


def test_matmul_non_finite_input_bounds_name_the_node() -> None:
    node = Node("mm", BilinearMatMul(), ("x", "y"), (2, 2))
    rule = rule_for(node)
    ok = (torch.zeros(1, 2, 3, dtype=DT), torch.ones(1, 2, 3, dtype=DT))
    bad = (torch.zeros(1, 3, 2, dtype=DT), torch.full((1, 3, 2), math.nan, dtype=DT))
    with pytest.raises(BoundsError, match="node 'mm'.*NaN"):
        rule.interval(node, [ok, bad])
    a = torch.ones(1, 1, 2, 2, dtype=DT)
    with pytest.raises(BoundsError, match="node 'mm'.*infinite"):
        rule.backward(node, a, [(ok[0], ok[1] + math.inf), bad], None, [(2, 3), (3, 2)])
