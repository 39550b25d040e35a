"""Soundness, tightness and exact values of the sigmoid/tanh/atan/erf relaxations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import relax_sampling as rs
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import brentq

from genbab.bounds.relax import UNARY_FAMILIES
from genbab.bounds.relax.base import interpolate
from genbab.bounds.relax.s_shaped import ATAN, ERF, SIGMOID, TANH, SShaped

DTYPES = [torch.float32, torch.float64]
SPECS = {"sigmoid": SIGMOID, "tanh": TANH, "atan": ATAN, "erf": ERF}


def _np_sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


NUMPY_FNS = {
    "sigmoid": (_np_sigmoid, lambda x: _np_sigmoid(x) * _np_sigmoid(-x)),
    "tanh": (math.tanh, lambda x: 1 / math.cosh(min(abs(x), 300.0)) ** 2),
    "atan": (math.atan, lambda x: 1 / (1 + x * x)),
    "erf": (math.erf, lambda x: 2 / math.sqrt(math.pi) * math.exp(-x * x)),
}


@pytest.fixture(autouse=True)
def _one_thread():
    with rs.single_thread():
        yield


def t(*values: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


def tangent_points(spec: SShaped, lower, upper, params=None) -> torch.Tensor:
    """The points ``[2, *shape]`` where the lower/upper tangents touch ``f``."""
    lo_plan, up_plan = spec.plans(lower, upper)
    if params is None:
        params = spec.init_params(lower, upper)
    return torch.stack(
        torch.broadcast_tensors(
            interpolate(lo_plan.start, lo_plan.end, params[0]),
            interpolate(up_plan.start, up_plan.end, params[1]),
        )
    )


def exact_d(name: str, u: float) -> float:
    """Tangent point d <= 0 whose tangent passes through (u, f(u)), by brentq."""
    f, df = NUMPY_FNS[name]
    return brentq(lambda d: f(d) + df(d) * (u - d) - f(u), -u - 1.0, 0.0, xtol=1e-14)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", SPECS)
def test_sound_on_all_interval_cases(name: str, dtype: torch.dtype) -> None:
    # The rounding margins make the lines truly sound: no tolerance at all.
    spec, family = SPECS[name], UNARY_FAMILIES[name]
    for case, (lower, upper) in rs.interval_cases(
        dtype, special=[0.0, 1.0, -2.5]
    ).items():
        extra = tangent_points(spec, lower, upper)
        rs.check_family(family, lower, upper, extra=extra, tol=0.0, context=case)


@pytest.mark.parametrize("name", SPECS)
def test_registered(name: str) -> None:
    family = UNARY_FAMILIES[name]
    assert family.name == name and family.num_params == 2
    x = t(-1.0, 0.5)
    assert torch.equal(family.fn(x), getattr(torch, name)(x))


def test_sigmoid_concave_interval_hand_computed() -> None:
    # [1, 2] lies in the concave part: chord below, tangent at the midpoint above.
    rel = SIGMOID.relax(t(1.0), t(2.0), None)
    s1, s2, s15 = (1 / (1 + math.exp(-x)) for x in (1.0, 2.0, 1.5))
    assert rel.lower_slope.item() == pytest.approx(s2 - s1, abs=1e-14)
    assert rel.lower_bias.item() == pytest.approx(s1 - (s2 - s1), abs=1e-13)
    assert rel.upper_slope.item() == pytest.approx(s15 * (1 - s15), abs=1e-14)
    assert rel.upper_bias.item() == pytest.approx(
        s15 - 1.5 * s15 * (1 - s15), abs=1e-13
    )
    # The lines are pinned: chord through both ends, tangent touching at 1.5.
    lo, hi = rs.line_values(rel, t(1.0, 2.0, 1.5))
    assert torch.allclose(lo[:2], t(s1, s2), atol=1e-13)
    assert hi[2].item() == pytest.approx(s15, abs=1e-13)


def test_tangent_at_parameter_point() -> None:
    # Convex part [-3, -1]; p = 0.25 puts the lower tangent at -2.5.
    rel = TANH.relax(t(-3.0), t(-1.0), t(0.25, 0.9)[:, None])
    assert rel.lower_slope.item() == pytest.approx(1 / math.cosh(-2.5) ** 2, rel=1e-13)
    lo, _ = rs.line_values(rel, t(-2.5))
    assert lo.item() == pytest.approx(math.tanh(-2.5), abs=1e-13)
    # The upper line is the chord whatever p[1] is.
    _, hi = rs.line_values(rel, t(-3.0, -1.0))
    assert torch.allclose(hi, t(math.tanh(-3.0), math.tanh(-1.0)), atol=1e-13)


def test_crossing_chord_and_tangent_choice() -> None:
    # tanh on [-1, 5]: chord slope 0.294 <= f'(-1) = 0.42, so the chord is the
    # lower line; it exceeds f'(5), so the upper line is a tangent, by default at
    # max(d_up, midpoint) = 2.
    rel = TANH.relax(t(-1.0), t(5.0), None)
    k = (math.tanh(5.0) - math.tanh(-1.0)) / 6.0
    assert rel.lower_slope.item() == pytest.approx(k, rel=1e-13)
    assert rel.upper_slope.item() == pytest.approx(1 / math.cosh(2.0) ** 2, rel=1e-13)
    # With p[1] = 0 the tangent point is d_up = -d(1), read from the table on the
    # conservative side: its tangent passes above (l, f(l)), by less than one
    # table step (0.01) times the slope.
    rel0 = TANH.relax(t(-1.0), t(5.0), t(0.5, 0.0)[:, None])
    _, hi = rs.line_values(rel0, t(-1.0))
    gap = hi.item() - math.tanh(-1.0)
    assert 0.0 <= gap < 0.01 * rel0.upper_slope.item()


@pytest.mark.parametrize("name", SPECS)
def test_table_is_conservative_and_close(name: str) -> None:
    spec = SPECS[name]
    us = [0.005, 0.01, 0.3, 1.0, 2.345, 7.77, 40.0, 123.456, 499.99]
    d_table = spec.tangent_point(torch.tensor(us, dtype=torch.float64))
    d32 = spec.tangent_point(torch.tensor(us, dtype=torch.float32))
    for u, d, e in zip(us, d_table.tolist(), d32.tolist(), strict=True):
        exact = exact_d(name, u)
        assert d <= exact, f"u={u}: table {d} is nearer u than exact {exact}"
        assert e <= d, f"u={u}: float32 entry {e} not rounded down from {d}"
        # At most one grid step of u away: d changes by less than 0.01 per step.
        assert exact - d < 0.01
    beyond = spec.tangent_point(t(501.0))
    assert beyond.item() == -math.inf


@pytest.mark.parametrize("name", SPECS)
def test_chord_used_exactly_when_valid(name: str) -> None:
    spec = SPECS[name]
    g = torch.Generator().manual_seed(3)
    lower = -10 * torch.rand(400, generator=g, dtype=torch.float64)
    upper = 10 * torch.rand(400, generator=g, dtype=torch.float64)
    rel = spec.relax(lower, upper, None)
    x = lower + torch.linspace(0, 1, 2001, dtype=torch.float64)[:, None] * (
        upper - lower
    )
    f = spec.fn(x)
    k = (spec.fn(upper) - spec.fn(lower)) / (upper - lower)
    chord = spec.fn(lower) + k * (x - lower)
    slack_lo = (f - chord).min(0).values  # >= 0 iff the chord is a lower bound
    slack_hi = (chord - f).min(0).values
    is_chord_lo = (rel.lower_slope - k).abs() < 1e-9
    is_chord_hi = (rel.upper_slope - k).abs() < 1e-9
    assert is_chord_lo[slack_lo > 1e-9].all()
    assert not is_chord_lo[slack_lo < -1e-9].any()
    assert is_chord_hi[slack_hi > 1e-9].all()
    assert not is_chord_hi[slack_hi < -1e-9].any()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", SPECS)
def test_lines_touch_the_function(name: str, dtype: torch.dtype) -> None:
    # Tightness: every line touches f (a tangent at its point, a chord at the
    # ends), for default and random parameters, up to the rounding margin.
    spec = SPECS[name]
    lower, upper = rs.interval_cases(dtype, seed=1)["wide"]
    for params in (None, rs.random_params(2, lower.shape, dtype=dtype, seed=5)):
        rel = spec.relax(lower, upper, params)
        pts = rs.sample_points(
            lower, upper, extra=tangent_points(spec, lower, upper, params)
        )
        gap_lo, gap_hi = rs.touch_gaps(spec.fn, rel, pts)
        assert gap_lo.max() < 1e-5 and gap_hi.max() < 1e-5
        assert gap_lo.min() >= 0 and gap_hi.min() >= 0


@pytest.mark.parametrize("name", SPECS)
def test_init_params_reproduce_default(name: str) -> None:
    family = UNARY_FAMILIES[name]
    for lower, upper in rs.interval_cases(torch.float32).values():
        init = family.init_params(lower, upper)
        assert init.shape == (2, *lower.shape)
        assert ((init >= 0) & (init <= 1)).all()
        rs.assert_same_relaxation(
            family.relax(lower, upper, None), family.relax(lower, upper, init)
        )


@pytest.mark.parametrize("name", SPECS)
def test_default_is_continuous_across_cases(name: str) -> None:
    # The default tangent points move continuously when u crosses 0 (convex
    # case -> crossing case) and when l crosses 0.
    spec = SPECS[name]
    a = spec.relax(t(-2.0, 1e-9), t(-1e-9, 2.0), None)
    b = spec.relax(t(-2.0, -1e-9), t(1e-9, 2.0), None)
    rs.assert_same_relaxation(a, b, atol=1e-6)


@pytest.mark.parametrize("name", SPECS)
def test_gradient_reaches_both_params(name: str) -> None:
    spec = SPECS[name]
    lower = t(-4.0, -3.0, 0.5).float()
    upper = t(4.0, -1.0, 2.0).float()
    params = spec.init_params(lower, upper).requires_grad_(True)
    rel = spec.relax(lower, upper, params)
    x = 0.3 * lower + 0.7 * upper
    (
        rel.lower_slope * x + rel.lower_bias - rel.upper_slope * x - rel.upper_bias
    ).sum().backward()
    grad = params.grad
    assert grad is not None and torch.isfinite(grad).all()
    assert grad[0, 0] != 0 and grad[1, 0] != 0  # crossing: both tangents
    assert grad[0, 1] != 0 and grad[1, 1] == 0  # convex: upper is the chord
    assert grad[0, 2] == 0 and grad[1, 2] != 0  # concave: lower is the chord


def test_float32_gradients_finite_for_extreme_bounds() -> None:
    lower = t(-1e4, -1e4, -60.0, 3.0).float()
    upper = t(1e4, -9e3, 60.0, 1e4).float()
    for spec in SPECS.values():
        params = torch.full((2, 4), 0.5, requires_grad=True)
        rel = spec.relax(lower, upper, params)
        sum(v.sum() for v in vars(rel).values()).backward()
        assert params.grad is not None and torch.isfinite(params.grad).all()


@settings(max_examples=60, deadline=None)
@given(
    lower=st.floats(-60.0, 60.0),
    width=st.one_of(st.floats(0.0, 1e-4), st.floats(0.0, 80.0)),
    p0=st.floats(-3.0, 3.0),
    p1=st.floats(-3.0, 3.0),
    name=st.sampled_from(list(SPECS)),
    dtype=st.sampled_from(DTYPES),
)
def test_sound_hypothesis(lower, width, p0, p1, name, dtype) -> None:
    spec = SPECS[name]
    lo = torch.tensor([lower], dtype=dtype)
    hi = torch.tensor([lower + width], dtype=dtype)
    params = torch.tensor([[p0], [p1]], dtype=dtype)
    rel = spec.relax(lo, hi, params)
    rs.assert_sound(
        spec.fn,
        rel,
        lo,
        hi,
        extra=tangent_points(spec, lo, hi, params),
        tol=0.0,
        context=f"{name} [{lower}, {lower + width}] p=({p0}, {p1})",
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu() -> None:
    lower, upper = rs.interval_cases(torch.float32)["wide"]
    for spec in SPECS.values():
        cpu = spec.relax(lower, upper, None)
        gpu = spec.relax(lower.cuda(), upper.cuda(), None)
        for name in ("lower_slope", "lower_bias", "upper_slope", "upper_bias"):
            assert torch.allclose(
                getattr(cpu, name), getattr(gpu, name).cpu(), atol=1e-5
            )
        rs.assert_sound(spec.fn, gpu, lower.cuda(), upper.cuda(), tol=0.0)


def test_numpy_reference_matches_torch() -> None:
    # Guard for the reference functions used by exact_d.
    for name, (f, df) in NUMPY_FNS.items():
        x = np.linspace(-5, 5, 11)
        assert np.allclose([f(v) for v in x], SPECS[name].fn(torch.tensor(x)).numpy())
        assert np.allclose(
            [df(v) for v in x], SPECS[name].deriv(torch.tensor(x)).numpy()
        )
