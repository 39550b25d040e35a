"""Soundness, tightness and exact values of the GeLU relaxation."""

from __future__ import annotations

import math

import pytest
import relax_sampling as rs
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import genbab.bounds.relax.gelu as gelu_module
from genbab.bounds.relax import UNARY_FAMILIES
from genbab.bounds.relax.base import interpolate
from genbab.bounds.relax.gelu import (
    _tangent_points,
    gelu,
    gelu_deriv,
    gelu_plans,
    init_gelu_params,
    relax_gelu,
)

DTYPES = [torch.float32, torch.float64]
S = math.sqrt(2.0)
X_MIN = -0.7517916  # argmin of GeLU
FAMILY = UNARY_FAMILIES["gelu"]

# One interval per case of the module docstring, plus boundary-touching ones.
CASES = {
    "concave_left": (-5.0, -2.0),
    "convex_middle": (-1.0, 1.0),
    "concave_right": (2.0, 5.0),
    "concave_then_convex_chord": (-1.6, 1.2),
    "concave_then_convex_tangents": (-8.0, -0.5),
    "convex_then_concave_chord": (-0.5, 4.0),
    "convex_then_concave_tangents": (0.2, 9.0),
    "all_three": (-3.0, 3.0),
    "ends_at_inflections": (-S, S),
    "left_inflection_point": (-S, -S),
}


@pytest.fixture(autouse=True)
def _one_thread():
    with rs.single_thread():
        yield


def t(*values: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


def phi_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / S)


def f(x: float) -> float:
    return x * phi_cdf(x)


def df(x: float) -> float:
    return phi_cdf(x) + x * math.exp(-x * x / 2) / math.sqrt(2 * math.pi)


def tangent_points(lower, upper, params=None) -> torch.Tensor:
    lo_plan, up_plan = gelu_plans(lower, upper)
    if params is None:
        params = init_gelu_params(lower, upper)
    return torch.stack(
        torch.broadcast_tensors(
            interpolate(lo_plan.start, lo_plan.end, params[0]),
            interpolate(up_plan.start, up_plan.end, params[1]),
        )
    )


def case_tensors(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    lower = torch.tensor([v[0] for v in CASES.values()], dtype=dtype)
    upper = torch.tensor([v[1] for v in CASES.values()], dtype=dtype)
    return lower, upper


@pytest.mark.parametrize("dtype", DTYPES)
def test_sound_on_all_interval_cases(dtype: torch.dtype) -> None:
    special = [-S, S, 0.0, X_MIN, -3.0]
    cases = rs.interval_cases(dtype, special=special)
    cases["handpicked"] = case_tensors(dtype)
    for case, (lower, upper) in cases.items():
        extra = tangent_points(lower, upper)
        rs.check_family(FAMILY, lower, upper, extra=extra, tol=0.0, context=case)


def test_registered_function_matches_accurate_gelu() -> None:
    x = torch.linspace(-8, 8, 101, dtype=torch.float64)
    assert torch.allclose(FAMILY.fn(x), gelu(x), atol=1e-15)
    assert FAMILY.num_params == 2
    for v in (-7.0, -1.0, X_MIN, 0.3, 2.0):
        assert gelu(t(v)).item() == pytest.approx(f(v), rel=1e-14)
        assert gelu_deriv(t(v)).item() == pytest.approx(df(v), abs=1e-15)
    assert abs(df(X_MIN)) < 1e-6


def test_convex_middle_hand_computed() -> None:
    # [-1, 1]: upper = chord, slope (f(1) - f(-1)) / 2 = 1/2, bias f(1) - 1/2;
    # lower = tangent at the midpoint 0: slope 1/2, bias 0.
    rel = relax_gelu(t(-1.0), t(1.0), None)
    assert rel.upper_slope.item() == pytest.approx(0.5, abs=1e-14)
    assert rel.upper_bias.item() == pytest.approx(f(1.0) - 0.5, abs=1e-13)
    assert rel.lower_slope.item() == pytest.approx(0.5, abs=1e-14)
    assert rel.lower_bias.item() == pytest.approx(0.0, abs=1e-13)


def test_concave_left_hand_computed() -> None:
    # [-5, -2]: lower = chord; upper = tangent at -3.5 by default, at -4.4 for p=0.2.
    rel = relax_gelu(t(-5.0), t(-2.0), t(0.5, 0.2)[:, None])
    k = (f(-2.0) - f(-5.0)) / 3.0
    assert rel.lower_slope.item() == pytest.approx(k, rel=1e-12)
    assert rel.upper_slope.item() == pytest.approx(df(-4.4), rel=1e-12)
    _, hi = rs.line_values(rel, t(-4.4))
    assert hi.item() == pytest.approx(f(-4.4), abs=1e-13)


def test_all_three_pieces() -> None:
    # [-3, 3]: upper = chord; lower = tangent in [d_L, d_R], default at 0.
    rel = relax_gelu(t(-3.0), t(3.0), None)
    assert rel.upper_slope.item() == pytest.approx((f(3.0) - f(-3.0)) / 6, rel=1e-12)
    assert rel.lower_slope.item() == pytest.approx(0.5, abs=1e-14)
    # The ends of the tangent range pass through (l, f(l)) and (u, f(u)).
    for p, x in ((0.0, -3.0), (1.0, 3.0)):
        rel = relax_gelu(t(-3.0), t(3.0), t(p, 0.5)[:, None])
        lo, _ = rs.line_values(rel, t(x))
        assert 0 <= f(x) - lo.item() < 1e-9


@pytest.mark.parametrize(
    ("case", "side", "p", "anchor"),
    [
        ("concave_then_convex_tangents", "lower", 0.0, "lower"),
        ("concave_then_convex_tangents", "upper", 1.0, "upper"),
        ("convex_then_concave_tangents", "lower", 1.0, "upper"),
        ("convex_then_concave_tangents", "upper", 0.0, "lower"),
    ],
)
def test_tangent_range_ends_pass_through_anchor(case, side, p, anchor) -> None:
    # At the far end of its range a tangent passes through the other end of the
    # interval (up to the bisection and the margin), on the correct side.
    lo, hi = CASES[case]
    params = t(p, 0.5) if side == "lower" else t(0.5, p)
    rel = relax_gelu(t(lo), t(hi), params[:, None])
    x = lo if anchor == "lower" else hi
    k = rel.lower_slope if side == "lower" else rel.upper_slope
    chord = (f(hi) - f(lo)) / (hi - lo)
    assert abs(k.item() - chord) > 1e-3, "expected a tangent, not the chord"
    line_lo, line_hi = rs.line_values(rel, t(x))
    gap = f(x) - line_lo.item() if side == "lower" else line_hi.item() - f(x)
    assert 0 <= gap < 1e-9


def test_tangent_point_ranges() -> None:
    # d_L(l) < x* < d_R(u) for all l < -s < s < u: the all-three-pieces range is
    # never empty; all four points lie in the claimed pieces.
    far = torch.logspace(-6, 4, 400, dtype=torch.float64)
    lower, upper = -S - far, S + far
    d_left, d_right, _, _ = _tangent_points(lower, upper)
    assert d_left.min() >= -S - 1e-12 and d_left.max() < X_MIN + 1e-6
    assert d_right.min() > 0.7 and d_right.max() <= S + 1e-12
    # d_U(u): tangent point in (-inf, -s] through (u, f(u)), u in (-s, s];
    # d_V(l): in [s, inf) through (l, f(l)), l in [-s, s). They are used (and
    # must be valid) where the chord test fails.
    ls = [-1e3, -50.0, -3.0, -1.5, -1.5, -4.0]
    us = [-0.2, -0.5, -1.0, -1.3, 0.0, 1.0]
    _, _, d_up, _ = _tangent_points(t(*ls), t(*us))
    used = 0
    for lo, hi, d in zip(ls, us, d_up.tolist(), strict=True):
        if (f(hi) - f(lo)) / (hi - lo) < df(lo):  # upper chord invalid
            used += 1
            assert lo <= d <= -S
            assert f(d) + df(d) * (hi - d) >= f(hi) - 1e-15
    assert used >= 4
    ls = [0.7, 1.0, 1.3, -1.0, 0.0, 1.4]
    us = [2.5, 2.5, 3.0, 1.6, 20.0, 1.5]
    _, _, _, d_v = _tangent_points(t(*ls), t(*us))
    used = 0
    for lo, hi, d in zip(ls, us, d_v.tolist(), strict=True):
        if (f(hi) - f(lo)) / (hi - lo) > df(hi):  # upper chord invalid
            used += 1
            assert S <= d <= hi
            assert f(d) + df(d) * (lo - d) >= f(lo) - 1e-15
    assert used >= 4


def test_chord_used_exactly_when_valid() -> None:
    g = torch.Generator().manual_seed(7)
    lower = -6 * torch.rand(500, generator=g, dtype=torch.float64)
    upper = lower + 8 * torch.rand(500, generator=g, dtype=torch.float64) + 1e-3
    rel = relax_gelu(lower, upper, None)
    x = lower + torch.linspace(0, 1, 4001, dtype=torch.float64)[:, None] * (
        upper - lower
    )
    k = (gelu(upper) - gelu(lower)) / (upper - lower)
    chord = gelu(lower) + k * (x - lower)
    slack_lo = (gelu(x) - chord).min(0).values
    slack_hi = (chord - gelu(x)).min(0).values
    is_chord_lo = (rel.lower_slope - k).abs() < 1e-9
    is_chord_hi = (rel.upper_slope - k).abs() < 1e-9
    assert is_chord_lo[slack_lo > 1e-9].all()
    assert not is_chord_lo[slack_lo < -1e-9].any()
    assert is_chord_hi[slack_hi > 1e-9].all()
    assert not is_chord_hi[slack_hi < -1e-9].any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_lines_touch_the_function(dtype: torch.dtype) -> None:
    lower, upper = rs.interval_cases(dtype, seed=2)["wide"]
    for params in (None, rs.random_params(2, lower.shape, dtype=dtype, seed=9)):
        rel = relax_gelu(lower, upper, params)
        pts = rs.sample_points(lower, upper, extra=tangent_points(lower, upper, params))
        gap_lo, gap_hi = rs.touch_gaps(gelu, rel, pts)
        scale = 1 + torch.maximum(lower.abs(), upper.abs()).double()
        assert (gap_lo / scale).max() < 1e-5 and (gap_hi / scale).max() < 1e-5
        assert gap_lo.min() >= 0 and gap_hi.min() >= 0


def test_init_params_reproduce_default() -> None:
    for lower, upper in rs.interval_cases(torch.float32, special=[-S, S]).values():
        init = FAMILY.init_params(lower, upper)
        assert init.shape == (2, *lower.shape)
        assert ((init >= 0) & (init <= 1)).all()
        rs.assert_same_relaxation(
            FAMILY.relax(lower, upper, None), FAMILY.relax(lower, upper, init)
        )


def test_default_is_continuous_across_inflections() -> None:
    eps = 1e-9
    for lo, hi in ((-3.0, -S), (-S, 1.0), (-1.0, S), (S, 3.0), (-2.0, 0.5)):
        a = relax_gelu(t(lo - eps), t(hi - eps), None)
        b = relax_gelu(t(lo + eps), t(hi + eps), None)
        rs.assert_same_relaxation(a, b, atol=1e-5)


def test_gradient_reaches_both_params() -> None:
    lower, upper = case_tensors(torch.float32)
    params = FAMILY.init_params(lower, upper).requires_grad_(True)
    rel = FAMILY.relax(lower, upper, params)
    x = 0.3 * lower + 0.7 * upper
    gap = rel.upper_slope * x + rel.upper_bias - rel.lower_slope * x - rel.lower_bias
    gap.sum().backward()
    grad = params.grad
    assert grad is not None and torch.isfinite(grad).all()
    names = list(CASES)
    assert grad[0, names.index("convex_middle")] != 0
    assert grad[0, names.index("all_three")] != 0
    assert grad[1, names.index("concave_left")] != 0
    assert grad[0, names.index("concave_then_convex_tangents")] != 0
    assert grad[1, names.index("convex_then_concave_tangents")] != 0
    assert grad[1, names.index("all_three")] == 0  # the chord


def test_extreme_bounds_are_finite() -> None:
    for dtype in DTYPES:
        lower = t(-1e4, -1e4, -1e4, 9e3, -40.0, -1e-30, dtype=dtype)
        upper = t(1e4, -9e3, 0.5, 1e4, 40.0, 1e-30, dtype=dtype)
        params = torch.full((2, 6), 0.5, dtype=dtype, requires_grad=True)
        rel = relax_gelu(lower, upper, params)
        sum(v.sum() for v in vars(rel).values()).backward()
        assert params.grad is not None and torch.isfinite(params.grad).all()
        rs.assert_sound(gelu, rel, lower, upper, tol=0.0)


@settings(max_examples=60, deadline=None)
@given(
    lower=st.floats(-30.0, 30.0),
    width=st.one_of(st.floats(0.0, 1e-4), st.floats(0.0, 40.0)),
    p0=st.floats(-3.0, 3.0),
    p1=st.floats(-3.0, 3.0),
    dtype=st.sampled_from(DTYPES),
)
def test_sound_hypothesis(lower, width, p0, p1, dtype) -> None:
    lo = torch.tensor([lower], dtype=dtype)
    hi = torch.tensor([lower + width], dtype=dtype)
    params = torch.tensor([[p0], [p1]], dtype=dtype)
    rs.assert_sound(
        gelu,
        relax_gelu(lo, hi, params),
        lo,
        hi,
        extra=tangent_points(lo, hi, params),
        tol=0.0,
        context=f"gelu [{lower}, {lower + width}] p=({p0}, {p1})",
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_sound() -> None:
    lower, upper = rs.interval_cases(torch.float32)["wide"]
    rel = relax_gelu(lower.cuda(), upper.cuda(), None)
    rs.assert_sound(gelu, rel, lower.cuda(), upper.cuda(), tol=0.0)


def test_tangent_point_cache_never_stale() -> None:
    lower, upper = case_tensors(torch.float64)
    first = relax_gelu(lower, upper, None)
    again = relax_gelu(lower.clone(), upper.clone(), None)
    rs.assert_same_relaxation(first, again)
    # Changing the bounds in place must not return the cached points.
    upper[1] = 1.3  # convex_middle -> still convex, but another chord
    upper[4] = 0.9  # concave_then_convex_tangents: new d_L and d_U
    changed = relax_gelu(lower, upper, None)
    gelu_module._CACHE.clear()
    fresh = relax_gelu(lower, upper, None)
    rs.assert_same_relaxation(changed, fresh)
    assert changed.upper_slope[4] != first.upper_slope[4]
