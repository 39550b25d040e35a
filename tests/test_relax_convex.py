"""Soundness and exactness of the convex/concave relaxations (exp, log, sqrt, ...)."""

from __future__ import annotations

import math

import pytest
import relax_sampling as rs
import torch

from genbab.bounds.relax import UNARY_FAMILIES
from genbab.bounds.relax.base import Relaxation, UnaryFamily
from genbab.bounds.relax.convex import pow_family, softplus

INF = math.inf
POS = (1e-6, INF)
NEG = (-INF, -1e-6)

# name -> (family, domain used to clamp the test intervals)
FAMILIES: dict[str, tuple[UnaryFamily, tuple[float, float] | None]] = {
    "exp": (UNARY_FAMILIES["exp"], (-1e3, 80.0)),  # exp(80) is finite in float32
    "softplus": (UNARY_FAMILIES["softplus"], None),
    "log": (UNARY_FAMILIES["log"], POS),
    "sqrt": (UNARY_FAMILIES["sqrt"], (0.0, INF)),
    "reciprocal+": (UNARY_FAMILIES["reciprocal"], POS),
    "reciprocal-": (UNARY_FAMILIES["reciprocal"], NEG),
    "square": (UNARY_FAMILIES["square"], None),
}
for _a in (0, 1, 2, 3, 4, 5, 7):
    FAMILIES[f"pow{_a}"] = (pow_family(float(_a)), None)
for _a in (-1, -2, -3, 0.5, 1.5, 2.5, -0.5):
    FAMILIES[f"pow{_a}"] = (pow_family(float(_a)), POS)
for _a in (-1, -2, -3):
    FAMILIES[f"pow{_a}neg"] = (pow_family(float(_a)), NEG)

DTYPES = [torch.float64, torch.float32]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small tensors: intra-op threads only add overhead (a lot on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tangent_points(lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """Default tangent points (midpoints) and a few others, ``[4, *shape]``."""
    fr = torch.tensor([0.5, 0.25, 0.75, 1e-3], dtype=lower.dtype)
    return lower + fr.view(-1, *([1] * lower.dim())) * (upper - lower)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", list(FAMILIES))
def test_sound_on_all_interval_cases(name: str, dtype: torch.dtype) -> None:
    family, domain = FAMILIES[name]
    cases = rs.interval_cases(dtype, special=(0.0, 1.0, -1.0), domain=domain)
    for case, (lower, upper) in cases.items():
        rs.check_family(
            family,
            lower,
            upper,
            extra=_tangent_points(lower, upper),
            context=f"{name} {case} {dtype}",
        )


def _gaps(family: UnaryFamily, rel: Relaxation, lower, upper, points):
    """Smallest ``f - lower_line`` and ``upper_line - f`` over the points."""
    x = torch.cat([points, torch.stack([lower, upper])]).double()
    lo, hi = rs.line_values(rel, x)
    f = family.fn(x)
    return (f - lo).amin(0), (hi - f).amin(0)


@pytest.mark.parametrize("name", ["exp", "softplus", "log", "sqrt", "reciprocal+"])
def test_default_lines_touch_the_function(name: str) -> None:
    """Chord touches at both ends, the tangent at the midpoint: not just loose."""
    family, domain = FAMILIES[name]
    lower, upper = rs.interval_cases(torch.float64, domain=domain)["wide"]
    lower, upper = lower.clamp(min=0.01), upper.clamp(min=0.01) + 0.5
    rel = family.relax(lower, upper, None)
    mid = (lower + upper) / 2
    gap_lo, gap_hi = _gaps(family, rel, lower, upper, mid[None])
    scale = 1 + family.fn(upper).abs() + family.fn(lower).abs()
    assert (gap_lo <= 1e-12 * scale).all() and (gap_hi <= 1e-12 * scale).all()
    # The tangent side is exactly the tangent at the midpoint.
    convex = name in ("exp", "softplus", "reciprocal+")
    slope = rel.lower_slope if convex else rel.upper_slope
    x = mid.clone().requires_grad_(True)
    (deriv,) = torch.autograd.grad(family.fn(x).sum(), x)
    torch.testing.assert_close(slope, deriv, rtol=1e-12, atol=0.0)


def test_exp_on_unit_interval_by_hand() -> None:
    rel = UNARY_FAMILIES["exp"].relax(
        torch.tensor([0.0], dtype=torch.float64), torch.tensor([1.0]).double(), None
    )
    e = math.e
    assert rel.upper_slope.item() == pytest.approx(e - 1, rel=1e-14)
    assert rel.upper_bias.item() == pytest.approx(1.0, rel=1e-13)
    assert rel.lower_slope.item() == pytest.approx(math.exp(0.5), rel=1e-14)
    assert rel.lower_bias.item() == pytest.approx(0.5 * math.exp(0.5), rel=1e-13)


def test_exact_lines_by_hand() -> None:
    d = torch.float64

    def rel(name: str, lo: float, hi: float, params=None) -> list[float]:
        fam = FAMILIES[name][0]
        r = fam.relax(torch.tensor([lo], dtype=d), torch.tensor([hi], dtype=d), params)
        return [r.lower_slope.item(), r.lower_bias.item(), r.upper_slope.item(),
                r.upper_bias.item()]  # fmt: skip

    # log on [1, e]: chord slope 1/(e-1) through (1, 0); tangent at (1+e)/2.
    m = (1 + math.e) / 2
    expect = [1 / (math.e - 1), -1 / (math.e - 1), 1 / m, math.log(m) - 1]
    assert rel("log", 1.0, math.e) == pytest.approx(expect, rel=1e-13)
    # sqrt on [0, 4]: chord y = x / 2; tangent at 2.
    expect = [0.5, 0.0, 0.5 / math.sqrt(2), math.sqrt(2) / 2]
    assert rel("sqrt", 0.0, 4.0) == pytest.approx(expect, rel=1e-13, abs=1e-14)
    # 1/x on [1, 2]: chord slope -1/2 bias 3/2; tangent at 1.5: -x/2.25 + 2/1.5.
    expect = [-1 / 2.25, 2 / 1.5, -0.5, 1.5]
    assert rel("reciprocal+", 1.0, 2.0) == pytest.approx(expect, rel=1e-13)
    # 1/x on [-2, -1] mirrors it.
    expect = [-0.5, -1.5, -1 / 2.25, -2 / 1.5]
    assert rel("reciprocal-", -2.0, -1.0) == pytest.approx(expect, rel=1e-13)
    # x^2 on [-1, 1]: tangent at 0 is y = 0, chord y = 1.
    assert rel("square", -1.0, 1.0) == pytest.approx([0, 0, 0, 1], abs=1e-14)
    # x^3 on [-2, 1]: chord is the lower line; the upper is the tangent at -1/2,
    # which passes through (1, 1).
    assert rel("pow3", -2.0, 1.0) == pytest.approx([3, -2, 0.75, 0.25], rel=1e-13)
    assert rel("pow3", -1.0, 2.0) == pytest.approx([0.75, -0.25, 3, 2], rel=1e-13)
    # x^3 on [1, 2] (convex part): chord above (slope 7, bias -6), tangent at 1.5.
    expect = [6.75, 1.5**3 - 6.75 * 1.5, 7.0, -6.0]
    assert rel("pow3", 1.0, 2.0) == pytest.approx(expect, rel=1e-13)
    # A tangent point parameter of 0 puts the exp tangent at the left end.
    p = torch.zeros(1, 1, dtype=d)
    assert rel("exp", -1.0, 1.0, p)[:2] == pytest.approx([1 / math.e, 2 / math.e])
    # Trivial powers are exact.
    assert rel("pow0", -3.0, 5.0) == [0.0, 1.0, 0.0, 1.0]
    assert rel("pow1", -3.0, 5.0) == [1.0, 0.0, 1.0, 0.0]


def test_default_equals_init_params() -> None:
    for name, (family, domain) in FAMILIES.items():
        lower, upper = rs.interval_cases(torch.float64, domain=domain)["wide"]
        a = family.relax(lower, upper, None)
        b = family.relax(lower, upper, family.init_params(lower, upper))
        rs.assert_same_relaxation(a, b)
        assert family.init_params(lower, upper).shape[0] == family.num_params, name


@pytest.mark.parametrize(
    "name", [n for n, (f, _) in FAMILIES.items() if f.num_params > 0]
)
def test_gradient_with_respect_to_params(name: str) -> None:
    family, domain = FAMILIES[name]
    lower, upper = rs.interval_cases(torch.float64, domain=domain)["crossing"]
    if domain is not None:
        lower, upper = rs.interval_cases(torch.float64, domain=domain)["wide"]
    params = rs.random_params(family.num_params, lower.shape, low=0.1, high=0.9)
    params.requires_grad_(True)
    rel = family.relax(lower, upper, params)
    # A bound-like objective: lower line at the upper end, upper line at the lower.
    obj = (rel.lower_slope * upper + rel.lower_bias).sum()
    obj = obj - (rel.upper_slope * lower + rel.upper_bias).sum()
    (grad,) = torch.autograd.grad(obj, params)
    assert torch.isfinite(grad).all()
    assert (grad.abs().sum(0) > 0).float().mean() > 0.5, "gradient mostly zero"


def test_params_outside_range_get_gradient_back_inward() -> None:
    family = UNARY_FAMILIES["exp"]
    lower = torch.tensor([-1.0], dtype=torch.float64)
    upper = torch.tensor([1.0], dtype=torch.float64)
    for start, sign in ((5.0, 1.0), (-5.0, -1.0)):
        p = torch.full((1, 1), start, dtype=torch.float64, requires_grad=True)
        rel = family.relax(lower, upper, p)
        # Maximizing the lower line at 0 wants the tangent point at 0 (p = 0.5).
        obj = -(rel.lower_bias.sum())
        (grad,) = torch.autograd.grad(obj, p)
        assert grad.item() * sign > 0


def test_exp_overflow_gives_infinite_upper_constant_not_nan() -> None:
    lower = torch.tensor([0.0, -200.0, 50.0], dtype=torch.float32)
    upper = torch.tensor([100.0, 200.0, 1e6], dtype=torch.float32)
    for params in (None, torch.tensor([[0.0, 0.5, 1.0]]), torch.full((1, 3), 1e3)):
        rel = UNARY_FAMILIES["exp"].relax(lower, upper, params)
        assert torch.isfinite(rel.lower_slope).all()
        assert torch.isfinite(rel.lower_bias).all()
        assert (rel.upper_slope == 0).all() and (rel.upper_bias == INF).all()
        # The lower line is still a valid lower bound where exp is finite.
        x = torch.linspace(0, 1, 101)[:, None] * (upper - lower) + lower
        x = x.clamp(max=88.0)
        lo = rel.lower_slope.double() * x.double() + rel.lower_bias.double()
        assert (lo <= torch.exp(x.double()) * (1 + 1e-6)).all()


def test_wide_exp_float32_is_finite_and_sound() -> None:
    lower = torch.tensor([-1e3, -500.0, -20.0, 60.0], dtype=torch.float32)
    upper = torch.tensor([80.0, 85.0, 20.0, 80.0], dtype=torch.float32)
    rs.check_family(UNARY_FAMILIES["exp"], lower, upper, context="wide exp f32")


@pytest.mark.parametrize(
    "name,lower,upper",
    [
        ("log", [-1.0, 0.0, -2.0], [2.0, 3.0, -1.0]),
        ("sqrt", [-1.0, -3.0, 0.0], [2.0, -1.0, 0.0]),
        ("reciprocal+", [-1.0, 0.0, -2.0], [2.0, 3.0, 0.0]),
        ("pow-2", [-1.0, 0.0], [2.0, 3.0]),
        ("pow-1", [-1.0, 0.0], [2.0, 3.0]),
        ("pow0.5", [-1.0, -3.0], [2.0, -1.0]),
        ("pow-0.5", [0.0, -3.0], [2.0, 1.0]),
    ],
)
def test_outside_domain_never_nan(name: str, lower, upper) -> None:
    family = FAMILIES[name][0]
    for dtype in DTYPES:
        lo, hi = torch.tensor(lower, dtype=dtype), torch.tensor(upper, dtype=dtype)
        for params in (None, torch.zeros(1, len(lower), dtype=dtype)):
            rel = family.relax(lo, hi, params)
            for t in (rel.lower_slope, rel.lower_bias, rel.upper_slope, rel.upper_bias):
                assert not torch.isnan(t).any(), (name, dtype, rel)
    # Documented values: log's lower line is -inf where lower <= 0; 1/x across 0 is
    # bounded by the constants -inf and inf.
    if name == "log":
        rel = family.relax(torch.tensor([0.0, 1.0]), torch.tensor([2.0, 2.0]), None)
        assert rel.lower_bias[0] == -INF and rel.lower_slope[0] == 0
        assert (
            torch.isfinite(rel.lower_bias[1]) and torch.isfinite(rel.upper_bias).all()
        )
    if name == "reciprocal+":
        rel = family.relax(torch.tensor([-1.0]), torch.tensor([2.0]), None)
        assert rel.lower_bias.item() == -INF and rel.upper_bias.item() == INF


def test_point_intervals_give_exact_lines() -> None:
    for name, (family, domain) in FAMILIES.items():
        x = torch.tensor([0.5, 2.0, 7.0], dtype=torch.float64)
        if domain == NEG:
            x = -x
        rel = family.relax(x, x, None)
        lo, hi = rs.line_values(rel, x)
        f = family.fn(x)
        torch.testing.assert_close(lo, f, rtol=1e-14, atol=1e-300, msg=name)
        torch.testing.assert_close(hi, f, rtol=1e-14, atol=1e-300, msg=name)
        if name != "pow1":  # constants, whatever the derivative
            assert (rel.lower_slope == 0).all() and (rel.upper_slope == 0).all()


def test_softplus_is_exact_past_torch_threshold() -> None:
    x = torch.tensor([25.0, -30.0], dtype=torch.float64)
    expect = torch.log1p(torch.exp(x))
    torch.testing.assert_close(softplus(x), expect, rtol=1e-15, atol=0.0)


def test_pow_family_cache_and_registry() -> None:
    assert pow_family(3) is pow_family(3.0)
    assert pow_family(2.0).num_params == 1 and pow_family(3.0).num_params == 2
    assert pow_family(0.0).num_params == 0 and pow_family(-1.0).domain == (0.0, INF)
    for name in ("exp", "log", "sqrt", "reciprocal", "softplus", "square"):
        assert UNARY_FAMILIES[name].name == name
    assert "pow" not in UNARY_FAMILIES
    assert UNARY_FAMILIES["log"].domain == (0.0, INF)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    for name, (family, domain) in FAMILIES.items():
        lower, upper = rs.interval_cases(torch.float32, domain=domain)["wide"]
        cpu = family.relax(lower, upper, None)
        gpu = family.relax(lower.cuda(), upper.cuda(), None)
        assert gpu.lower_bias.device.type == "cuda"
        rs.assert_sound(family.fn, gpu, lower.cuda(), upper.cuda(), context=name)
        torch.testing.assert_close(gpu.upper_slope.cpu(), cpu.upper_slope)
