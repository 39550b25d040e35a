"""Soundness, exactness and tightness of the sin and cos relaxations."""

from __future__ import annotations

import math

import pytest
import relax_sampling as rs
import torch

from genbab.bounds.relax import UNARY_FAMILIES
from genbab.bounds.relax.base import Relaxation, UnaryFamily

PI = math.pi
SPECIAL = [k * PI / 2 for k in range(-6, 7)]
DTYPES = [torch.float64, torch.float32]
NAMES = ["sin", "cos"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small tensors: intra-op threads only add overhead (a lot on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _family(name: str) -> UnaryFamily:
    return UNARY_FAMILIES[name]


def _relax(name: str, lo, hi, params=None, dtype=torch.float64) -> Relaxation:
    lower = torch.as_tensor(lo, dtype=dtype)
    upper = torch.as_tensor(hi, dtype=dtype)
    return _family(name).relax(lower, upper, params)


def _stationary_points(lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """Multiples of pi/2 nearest the ends and the midpoint, ``[3, *shape]``."""
    pts = torch.stack([lower, upper, (lower + upper) / 2])
    return torch.round(pts / (PI / 2)) * (PI / 2)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", NAMES)
def test_sound_on_all_interval_cases(name: str, dtype: torch.dtype) -> None:
    cases = rs.interval_cases(dtype, special=SPECIAL)
    for case, (lower, upper) in cases.items():
        rs.check_family(
            _family(name),
            lower,
            upper,
            extra=_stationary_points(lower, upper),
            context=f"{case} {dtype}",
        )


def _dense_gaps(
    name: str, rel: Relaxation, lower: torch.Tensor, upper: torch.Tensor, n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Smallest ``f - lower_line`` and ``upper_line - f`` on a dense grid (float64)."""
    grid = torch.linspace(0, 1, n, dtype=torch.float64)[:, None]
    x = lower.double() + grid * (upper.double() - lower.double())
    lo, hi = rs.line_values(rel, x)
    f = _family(name).fn(x)
    return (f - lo).amin(0), (hi - f).amin(0)


@pytest.mark.parametrize("name", NAMES)
def test_lines_touch_the_function_for_any_params(name: str) -> None:
    """The shifted bias is the exact extremum: each line touches ``f`` somewhere."""
    lower = torch.tensor([-20.0, -1.0, 0.3, 2.0, -0.1, 100.0, -7.0, 3.0])
    upper = torch.tensor([20.0, 2.5, 0.5, 9.0, 0.1, 103.0, 0.5, 3.2])
    lower, upper = lower.double(), upper.double()
    for seed, (lo, hi) in enumerate([(0.0, 1.0), (-3.0, 4.0)]):
        params = rs.random_params(2, lower.shape, low=lo, high=hi, seed=seed)
        for p in (None, params):
            rel = _family(name).relax(lower, upper, p)
            gap_lo, gap_hi = _dense_gaps(name, rel, lower, upper, 400_001)
            # Grid spacing h <= 1e-4: a touching point is missed by <= h^2 / 2.
            assert (gap_lo >= -1e-13).all() and (gap_hi >= -1e-13).all()
            assert (gap_lo <= 1e-8).all(), gap_lo
            assert (gap_hi <= 1e-8).all(), gap_hi


def test_sin_by_hand() -> None:
    # [0, pi]: concave; the lower line is the chord y = 0, the upper the tangent at
    # pi/2, y = 1.
    r = _relax("sin", [0.0], [PI])
    assert r.lower_slope.item() == pytest.approx(0.0, abs=1e-14)
    assert r.lower_bias.item() == pytest.approx(0.0, abs=1e-14)
    assert r.upper_slope.item() == pytest.approx(0.0, abs=1e-14)
    assert r.upper_bias.item() == pytest.approx(1.0, abs=1e-14)
    # [0, pi/2]: chord y = 2x/pi below, tangent at pi/4 above.
    r = _relax("sin", [0.0], [PI / 2])
    assert r.lower_slope.item() == pytest.approx(2 / PI, rel=1e-14)
    assert r.lower_bias.item() == pytest.approx(0.0, abs=1e-14)
    assert r.upper_slope.item() == pytest.approx(math.cos(PI / 4), rel=1e-14)
    bias = math.sin(PI / 4) - math.cos(PI / 4) * PI / 4
    assert r.upper_bias.item() == pytest.approx(bias, rel=1e-14)
    # [-pi, 0]: convex; chord y = 0 above, tangent at -pi/2 (y = -1) below.
    r = _relax("sin", [-PI], [0.0])
    vals = [r.lower_slope, r.lower_bias, r.upper_slope, r.upper_bias]
    assert [v.item() for v in vals] == pytest.approx([0, -1, 0, 0], abs=1e-14)


def test_two_periods_or_more_give_the_constant_bounds() -> None:
    """With two maxima (minima) either side of the midpoint, no sloped line wins."""
    for name in NAMES:
        for dtype in DTYPES:
            r = _relax(name, [-20.0, 0.0, 3.0], [20.0, 4 * PI + 0.1, 1e3], dtype=dtype)
            assert torch.equal(r.lower_slope, torch.zeros(3, dtype=dtype))
            assert torch.equal(r.upper_slope, torch.zeros(3, dtype=dtype))
            tol = 1e-6 if dtype == torch.float32 else 1e-14
            assert torch.allclose(
                r.upper_bias.double(), torch.ones(3).double(), atol=tol
            )
            assert torch.allclose(
                r.lower_bias.double(), -torch.ones(3).double(), atol=tol
            )


def test_shifted_bias_is_never_below_the_true_extremum() -> None:
    """Against a dense grid, for fixed slopes on wide and narrow intervals."""
    lower = torch.tensor([-50.0, -3.0, 1.0, 1.5707, -1e-3], dtype=torch.float64)
    upper = torch.tensor([40.0, 3.0, 1.2, 1.5709, 1e-3], dtype=torch.float64)
    for name in NAMES:
        params = rs.random_params(2, (7, 5), seed=11)
        lo3, hi3 = lower[None], upper[None]
        rel = _family(name).relax(lo3, hi3, params)
        grid = torch.linspace(0, 1, 200_001, dtype=torch.float64)[:, None, None]
        x = lo3 + grid * (hi3 - lo3)
        f = _family(name).fn(x)
        max_dev = (f - rel.upper_slope * x).amax(0)
        min_dev = (f - rel.lower_slope * x).amin(0)
        assert (rel.upper_bias >= max_dev).all() and (rel.lower_bias <= min_dev).all()
        # And it is the extremum itself (grid step <= 4.5e-4 misses at most 1e-7).
        assert (rel.upper_bias - max_dev <= 2e-7).all()
        assert (min_dev - rel.lower_bias <= 2e-7).all()


def test_cos_agrees_with_shifted_sin() -> None:
    lower, upper = rs.interval_cases(torch.float64, special=SPECIAL)["wide"]
    params = rs.random_params(2, lower.shape, seed=5)
    c = _family("cos").relax(lower, upper, params)
    s = _family("sin").relax(lower + PI / 2, upper + PI / 2, params)
    torch.testing.assert_close(c.lower_slope, s.lower_slope, rtol=0, atol=1e-9)
    torch.testing.assert_close(c.upper_slope, s.upper_slope, rtol=0, atol=1e-9)
    shifted_lo = s.lower_bias + s.lower_slope * PI / 2
    shifted_hi = s.upper_bias + s.upper_slope * PI / 2
    torch.testing.assert_close(c.lower_bias, shifted_lo, rtol=0, atol=1e-9)
    torch.testing.assert_close(c.upper_bias, shifted_hi, rtol=0, atol=1e-9)


def test_default_picks_the_tightest_candidate_and_equals_init() -> None:
    for name in NAMES:
        fam = _family(name)
        lower, upper = rs.interval_cases(torch.float64, special=SPECIAL)["special"]
        default = fam.relax(lower, upper, None)
        init = fam.init_params(lower, upper)
        assert init.shape == (2, *lower.shape)
        assert ((init >= 0) & (init <= 1)).all()
        rs.assert_same_relaxation(default, fam.relax(lower, upper, init))
        # No grid parameter gives a line tighter at the midpoint than the default.
        mid = (lower + upper) / 2
        for v in torch.linspace(0, 1, 11):
            other = fam.relax(lower, upper, torch.full((2, *lower.shape), v.item()))
            d_lo, d_hi = rs.line_values(default, mid)
            o_lo, o_hi = rs.line_values(other, mid)
            if v.item() in (0.0, 0.5, 1.0):  # candidates of the default
                assert (d_lo >= o_lo - 1e-12).all() and (d_hi <= o_hi + 1e-12).all()


def test_gradient_with_respect_to_params() -> None:
    lower = torch.tensor([-2.0, 0.1, -10.0, 4.0], dtype=torch.float64)
    upper = torch.tensor([1.0, 1.0, 10.0, 6.0], dtype=torch.float64)
    for name in NAMES:
        params = torch.full((2, 4), 0.3, dtype=torch.float64, requires_grad=True)
        rel = _family(name).relax(lower, upper, params)
        obj = (rel.lower_slope * upper + rel.lower_bias).sum()
        obj = obj - (rel.upper_slope * lower + rel.upper_bias).sum()
        (grad,) = torch.autograd.grad(obj, params)
        assert torch.isfinite(grad).all()
        assert (grad != 0).all(), grad


def test_gradient_finite_at_extreme_slopes() -> None:
    """Slopes of exactly +-1 (acos' is infinite there) still give finite gradients."""
    lower = torch.tensor([-10.0, -0.5], dtype=torch.float64)
    upper = torch.tensor([10.0, 0.5], dtype=torch.float64)
    for name in NAMES:
        for v in (0.0, 1.0, 7.0, -7.0):
            params = torch.full((2, 2), v, dtype=torch.float64, requires_grad=True)
            rel = _family(name).relax(lower, upper, params)
            obj = (rel.lower_bias + rel.upper_bias + rel.upper_slope).sum()
            (grad,) = torch.autograd.grad(obj, params)
            assert torch.isfinite(grad).all(), (name, v, grad)


def test_huge_float32_inputs_stay_sound() -> None:
    """Far from 0 the float32 grid is coarse; the widened bias keeps lines sound."""
    lower = torch.tensor([1e5, -3e5, 5e4, 1e6], dtype=torch.float32)
    upper = lower + torch.tensor([0.5, 2.0, 1e3, 3.0])
    for name in NAMES:
        rs.check_family(_family(name), lower, upper, context="huge f32")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_sound() -> None:
    for name in NAMES:
        for case, (lower, upper) in rs.interval_cases(
            torch.float32, "cuda", special=SPECIAL
        ).items():
            rel = _family(name).relax(lower, upper, None)
            assert rel.upper_bias.device.type == "cuda"
            rs.assert_sound(_family(name).fn, rel, lower, upper, context=case)
