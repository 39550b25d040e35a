"""Soundness and exactness of the ReLU / LeakyReLU / Abs relaxations."""

from __future__ import annotations

import pytest
import relax_sampling as rs
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from genbab.bounds.relax import UNARY_FAMILIES
from genbab.bounds.relax.relu import leaky_relu_family, relax_leaky_relu, relax_relu

DTYPES = [torch.float32, torch.float64]
FAMILIES = {
    "relu": UNARY_FAMILIES["relu"],
    "leaky_relu(0.01)": UNARY_FAMILIES["leaky_relu"],
    "leaky_relu(0.2)": leaky_relu_family(0.2),
    "leaky_relu(2.0)": leaky_relu_family(2.0),
    "leaky_relu(-0.5)": leaky_relu_family(-0.5),
    "abs": UNARY_FAMILIES["abs"],
}


@pytest.fixture(autouse=True)
def _one_thread():
    with rs.single_thread():
        yield


def t(*values: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", FAMILIES)
def test_sound_on_all_interval_cases(name: str, dtype: torch.dtype) -> None:
    family = FAMILIES[name]
    for case, (lower, upper) in rs.interval_cases(dtype, special=[0.0]).items():
        rs.check_family(
            family, lower, upper, extra=torch.zeros_like(lower), context=case
        )


def test_registered_names() -> None:
    assert UNARY_FAMILIES["relu"].num_params == 1
    assert UNARY_FAMILIES["leaky_relu"].num_params == 1
    x = t(-2.0, 3.0)
    assert torch.equal(UNARY_FAMILIES["leaky_relu"].fn(x), t(-0.02, 3.0))
    assert leaky_relu_family(0.2) is leaky_relu_family(0.2)  # cached


def test_relu_crossing_hand_computed() -> None:
    rel = relax_relu(t(-1.0, -3.0), t(3.0, 1.0), None)
    assert torch.allclose(rel.upper_slope, t(0.75, 0.25))
    assert torch.allclose(rel.upper_bias, t(0.75, 0.75))
    # Default lower slope: 1 where u > -l, else 0; through the origin.
    assert torch.equal(rel.lower_slope, t(1.0, 0.0))
    assert torch.equal(rel.lower_bias, t(0.0, 0.0))


def test_relu_stable_intervals_are_exact() -> None:
    rel = relax_relu(
        t(1.0, -2.0, 0.0, -4.0), t(2.0, -1.0, 5.0, 0.0), t(0.3, 0.3, 0.3, 0.3)[None]
    )
    assert torch.equal(rel.lower_slope, t(1.0, 0.0, 1.0, 0.0))
    assert torch.equal(rel.upper_slope, t(1.0, 0.0, 1.0, 0.0))
    assert torch.equal(rel.lower_bias, torch.zeros(4, dtype=torch.float64))
    assert torch.equal(rel.upper_bias, torch.zeros(4, dtype=torch.float64))


def test_leaky_relu_hand_computed() -> None:
    # Chord through (-1, -0.1) and (3, 3): slope 3.1 / 4, bias 3 - 3 * 0.775.
    rel = relax_leaky_relu(t(-1.0), t(3.0), t(0.0, 0.5, 1.0, 5.0, -5.0)[None], 0.1)
    assert torch.allclose(rel.upper_slope, torch.full((5,), 0.775, dtype=torch.float64))
    assert torch.allclose(rel.upper_bias, torch.full((5,), 0.675, dtype=torch.float64))
    # Lower slope s + p (1 - s), p clamped into [0, 1].
    assert torch.allclose(rel.lower_slope, t(0.1, 0.55, 1.0, 1.0, 0.1))
    assert torch.equal(rel.lower_bias, torch.zeros(5, dtype=torch.float64))


def test_abs_hand_computed() -> None:
    rel = UNARY_FAMILIES["abs"].relax(t(-1.0, -3.0, 2.0), t(3.0, 1.0, 5.0), None)
    # Chord from (l, |l|) to (u, u): slope (u + l) / (u - l), bias -2 u l / (u - l).
    assert torch.allclose(rel.upper_slope, t(0.5, -0.5, 1.0))
    assert torch.allclose(rel.upper_bias, t(1.5, 1.5, 0.0))
    # Lower: slope 1 where u > -l, else -1, through the origin; exact if l >= 0.
    assert torch.equal(rel.lower_slope, t(1.0, -1.0, 1.0))
    assert torch.equal(rel.lower_bias, t(0.0, 0.0, 0.0))


def test_concave_leaky_relu_swaps_roles() -> None:
    # Slope 2 on the negative side: concave, so the chord is the lower line.
    rel = relax_leaky_relu(t(-1.0), t(1.0), t(0.5)[None], 2.0)
    assert torch.allclose(rel.lower_slope, t(1.5))  # (1 - (-2)) / 2
    assert torch.allclose(rel.lower_bias, t(-0.5))
    assert torch.allclose(rel.upper_slope, t(1.5))  # 2 + 0.5 * (1 - 2)
    assert torch.equal(rel.upper_bias, t(0.0))


@pytest.mark.parametrize("name", FAMILIES)
def test_init_params_reproduce_default(name: str) -> None:
    family = FAMILIES[name]
    lower, upper = rs.interval_cases(torch.float64)["crossing"]
    default = family.relax(lower, upper, None)
    init = family.init_params(lower, upper)
    assert init.shape == (1, *lower.shape)
    rs.assert_same_relaxation(default, family.relax(lower, upper, init))


def test_broadcast_shapes() -> None:
    lower = -torch.rand(2, 1, 3, dtype=torch.float64)
    upper = torch.rand(2, 1, 3, dtype=torch.float64)
    params = torch.rand(1, 2, 4, 3, dtype=torch.float64)
    rel = relax_relu(lower, upper, params)
    for tensor in (rel.lower_slope, rel.lower_bias, rel.upper_slope, rel.upper_bias):
        assert tensor.shape == (2, 4, 3)
    assert torch.equal(rel.lower_slope, params[0])


def test_gradient_reaches_params() -> None:
    params = torch.full((1, 3), 0.4, dtype=torch.float64, requires_grad=True)
    lower, upper = t(-1.0, -2.0, 1.0), t(2.0, 1.0, 2.0)
    rel = relax_relu(lower, upper, params)
    (rel.lower_slope * 3.0 + rel.lower_bias).sum().backward()
    assert params.grad is not None
    assert torch.equal(params.grad[0], t(3.0, 3.0, 0.0))  # stable: no dependence


def test_clamped_params_get_inward_gradient_only() -> None:
    params = t(1.5, 1.5, -0.5, -0.5)[None].requires_grad_(True)
    lower, upper = torch.full((4,), -1.0, dtype=torch.float64), torch.ones(4).double()
    rel = relax_relu(lower, upper, params)
    (rel.lower_slope * t(-1.0, 1.0, -1.0, 1.0)).sum().backward()
    assert params.grad is not None
    # Descent moves p by -grad: allowed only back towards [0, 1].
    assert torch.equal(params.grad[0], t(0.0, 1.0, -1.0, 0.0))


@settings(max_examples=60, deadline=None)
@given(
    lower=st.floats(-1e3, 1e3),
    width=st.floats(0.0, 1e3),
    p=st.floats(-10.0, 10.0),
    slope=st.sampled_from([0.0, 0.01, 0.3, 1.0, 3.0]),
    dtype=st.sampled_from(DTYPES),
)
def test_sound_hypothesis(
    lower: float, width: float, p: float, slope: float, dtype: torch.dtype
) -> None:
    lo = torch.tensor([lower], dtype=dtype)
    hi = torch.tensor([lower + width], dtype=dtype)
    params = torch.tensor([[p]], dtype=dtype)
    rel = relax_leaky_relu(lo, hi, params, slope)
    rs.assert_sound(
        lambda x: torch.nn.functional.leaky_relu(x, slope),
        rel,
        lo,
        hi,
        extra=torch.zeros(1, 1, dtype=dtype),
        context=f"leaky_relu({slope}) p={p}",
    )
