"""Soundness and exactness of the McCormick relaxation of ``x * y``."""

from __future__ import annotations

import itertools

import pytest
import torch

from genbab.bounds.relax.base import PlaneRelaxation
from genbab.bounds.relax.bivariate import MUL_NUM_PARAMS, init_mul_params, relax_mul

DTYPES = [torch.float64, torch.float32]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small tensors: intra-op threads only add overhead (a lot on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _interval(kind: str, n: int, g: torch.Generator, scale: float):
    """``n`` random intervals of a sign pattern, float64."""
    a = torch.rand(n, generator=g, dtype=torch.float64) * scale
    b = torch.rand(n, generator=g, dtype=torch.float64) * scale
    if kind == "pos":
        return torch.minimum(a, b), torch.maximum(a, b)
    if kind == "neg":
        return -torch.maximum(a, b), -torch.minimum(a, b)
    if kind == "cross":
        return -a, b
    if kind == "point":
        return a - scale / 2, a - scale / 2
    if kind == "narrow":
        c = a - scale / 2
        return c, c + 1e-6 * (1 + b)
    raise ValueError(kind)


KINDS = ["pos", "neg", "cross", "point", "narrow"]


def _boxes(dtype: torch.dtype, n: int = 8, seed: int = 0):
    """Boxes of every pair of sign patterns, at scales 1, 20 and 1e3."""
    g = torch.Generator().manual_seed(seed)
    parts = []
    for kx, ky in itertools.product(KINDS, KINDS):
        for scale in (1.0, 20.0, 1e3):
            parts.append((*_interval(kx, n, g, scale), *_interval(ky, n, g, scale)))
    xl, xu, yl, yu = (torch.cat(t).to(dtype) for t in zip(*parts, strict=True))
    return xl, xu, yl, yu


def _box_points(xl, xu, yl, yu, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Corners, edge, uniform and Beta(0.5, 0.5) points of each box, ``[K, n]``."""
    g = torch.Generator().manual_seed(seed)
    n = xl.shape[-1]
    fx, fy = [], []
    for cx, cy in itertools.product((0.0, 1.0), repeat=2):  # corners
        fx.append(torch.full((1, n), cx))
        fy.append(torch.full((1, n), cy))
    t = torch.rand(16, n, generator=g)
    for edge in (0.0, 1.0):  # edges
        fx += [t, torch.full((16, n), edge)]
        fy += [torch.full((16, n), edge), t]
    fx.append(torch.rand(64, n, generator=g))  # interior
    fy.append(torch.rand(64, n, generator=g))
    beta = torch.distributions.Beta(torch.tensor(0.5), torch.tensor(0.5))
    torch.manual_seed(seed)  # edge-heavy Beta(0.5, 0.5) points (no generator arg)
    fx.append(beta.sample((64, n)))
    fy.append(beta.sample((64, n)))
    fx, fy = torch.cat(fx).double(), torch.cat(fy).double()
    x = (xl.double() + fx * (xu.double() - xl.double())).to(xl.dtype)
    y = (yl.double() + fy * (yu.double() - yl.double())).to(yl.dtype)
    x = torch.minimum(torch.maximum(x, xl), xu)
    y = torch.minimum(torch.maximum(y, yl), yu)
    return x, y


def _assert_planes_sound(rel: PlaneRelaxation, xl, xu, yl, yu, context: str) -> None:
    for name in ("lower_x", "lower_y", "lower_bias", "upper_x", "upper_y"):
        assert torch.isfinite(getattr(rel, name)).all(), f"{context}: {name}"
    x, y = _box_points(xl, xu, yl, yu)
    x, y = x.double(), y.double()
    f = x * y
    lo = rel.lower_x.double() * x + rel.lower_y.double() * y + rel.lower_bias.double()
    hi = rel.upper_x.double() * x + rel.upper_y.double() * y + rel.upper_bias.double()
    eps = torch.finfo(rel.lower_bias.dtype).eps
    scale = 1 + (x * y).abs() + x.abs() * y.abs().amax(0) + y.abs() * x.abs().amax(0)
    tol = 8 * eps * scale
    assert (lo - f <= tol).all(), f"{context}: lower plane above x*y by {lo - f}"
    assert (f - hi <= tol).all(), f"{context}: upper plane below x*y by {f - hi}"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_sound_for_all_sign_patterns_and_params(dtype: torch.dtype) -> None:
    xl, xu, yl, yu = _boxes(dtype)
    n = xl.shape[0]
    g = torch.Generator().manual_seed(1)
    draws = {
        "None": None,
        "init": init_mul_params(xl, xu, yl, yu),
        "uniform": torch.rand(2, n, generator=g, dtype=dtype),
        "wide": torch.rand(2, n, generator=g, dtype=dtype) * 10 - 5,
        "+-1e3": 1e3 * torch.sign(torch.rand(2, n, generator=g, dtype=dtype) - 0.5),
        "ends": torch.randint(0, 2, (2, n), generator=g).to(dtype),
    }
    for label, params in draws.items():
        rel = relax_mul(xl, xu, yl, yu, params)
        assert rel.lower_x.shape == (n,)
        _assert_planes_sound(rel, xl, xu, yl, yu, f"params={label} {dtype}")


def test_mccormick_planes_on_unit_square_by_hand() -> None:
    z, o = torch.zeros(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)

    def planes(r_lo: float, r_up: float) -> list[float]:
        params = torch.tensor([[r_lo], [r_up]], dtype=torch.float64)
        rel = relax_mul(z, o, z, o, params)
        return [
            t.item()
            for t in (rel.lower_x, rel.lower_y, rel.lower_bias)
            + (rel.upper_x, rel.upper_y, rel.upper_bias)
        ]

    # r = 1: L1 = yl x + xl y - xl yl = 0 and U1 = yu x + xl y - xl yu = x.
    assert planes(1, 1) == pytest.approx([0, 0, 0, 1, 0, 0], abs=1e-14)
    # r = 0: L2 = yu x + xu y - xu yu = x + y - 1 and U2 = yl x + xu y - xu yl = y.
    assert planes(0, 0) == pytest.approx([1, 1, -1, 0, 1, 0], abs=1e-14)
    # Default r = 0.5: the averages.
    rel = relax_mul(z, o, z, o)
    got = [rel.lower_x, rel.lower_y, rel.lower_bias, rel.upper_x, rel.upper_y]
    got += [rel.upper_bias]
    assert [t.item() for t in got] == pytest.approx([0.5, 0.5, -0.5, 0.5, 0.5, 0])


def test_planes_are_exact_at_their_corners() -> None:
    """``x y - L1 = (x - xl)(y - yl)``: L1 is exact where ``x = xl`` or ``y = yl``.

    Likewise L2 where ``x = xu`` or ``y = yu``, U1 where ``x = xl`` or ``y = yu``
    and U2 where ``x = xu`` or ``y = yl``; r = 1 selects L1/U1, r = 0 L2/U2.
    """
    xl, xu, yl, yu = _boxes(torch.float64, n=4)
    n = xl.shape[0]
    exact = {  # r -> (corners of the lower plane, corners of the upper plane)
        1.0: ([(xl, yu), (xu, yl)], [(xl, yl), (xu, yu)]),
        0.0: ([(xu, yl), (xl, yu)], [(xu, yu), (xl, yl)]),
    }
    for r, (lower_corners, upper_corners) in exact.items():
        rel = relax_mul(xl, xu, yl, yu, torch.full((2, n), r, dtype=torch.float64))
        for side, corners in (("lower", lower_corners), ("upper", upper_corners)):
            cx_, cy_, b = (getattr(rel, f"{side}_{k}") for k in ("x", "y", "bias"))
            for cx, cy in corners:
                plane = cx_ * cx + cy_ * cy + b
                scale = 1 + 4 * xl.abs().maximum(xu.abs()) * yl.abs().maximum(yu.abs())
                assert ((plane - cx * cy).abs() <= 1e-14 * scale).all(), (r, side)


def test_volume_does_not_depend_on_r() -> None:
    """Every r gives planes with the same mean over the box (so the default 0.5)."""
    xl, xu, yl, yu = _boxes(torch.float64, n=2)
    xc, yc = (xl + xu) / 2, (yl + yu) / 2
    means = []
    for r in (0.0, 0.3, 1.0):
        rel = relax_mul(xl, xu, yl, yu, torch.full((2, xl.shape[0]), r).double())
        means.append(
            (
                rel.lower_x * xc + rel.lower_y * yc + rel.lower_bias,
                rel.upper_x * xc + rel.upper_y * yc + rel.upper_bias,
            )
        )
    for lo, hi in means[1:]:
        torch.testing.assert_close(lo, means[0][0], rtol=1e-12, atol=1e-9)
        torch.testing.assert_close(hi, means[0][1], rtol=1e-12, atol=1e-9)


def test_default_equals_init_and_shapes_broadcast() -> None:
    xl = torch.tensor([[-1.0], [0.5]])  # [2, 1]
    xu = xl + 1
    yl = torch.tensor([-2.0, 0.0, 3.0])  # [3]
    yu = yl + 2
    init = init_mul_params(xl, xu, yl, yu)
    assert init.shape == (MUL_NUM_PARAMS, 2, 3)
    a, b = relax_mul(xl, xu, yl, yu), relax_mul(xl, xu, yl, yu, init)
    for name in ("lower_x", "lower_y", "lower_bias", "upper_x", "upper_y"):
        assert torch.equal(getattr(a, name), getattr(b, name))
        assert getattr(a, name).shape == (2, 3)
    # Parameters with an extra leading (spec) dimension broadcast too.
    rel = relax_mul(xl, xu, yl, yu, torch.rand(2, 4, 2, 3))
    assert rel.upper_bias.shape == (4, 2, 3)


def test_gradient_with_respect_to_params() -> None:
    xl, xu, yl, yu = (torch.tensor(v, dtype=torch.float64) for v in (-1, 2, -3, 0.5))
    params = torch.full((2,), 0.4, dtype=torch.float64, requires_grad=True)
    rel = relax_mul(xl, xu, yl, yu, params)
    # Corners where only one plane of each pair is exact: (xl, yl) for the lower
    # planes (L1 exact, L2 not) and (xl, yu) for the upper ones (U1 exact, U2 not).
    obj = rel.lower_x * xl + rel.lower_y * yl + rel.lower_bias
    obj = obj - (rel.upper_x * xl + rel.upper_y * yu + rel.upper_bias)
    (grad,) = torch.autograd.grad(obj, params)
    assert torch.isfinite(grad).all() and (grad != 0).all(), grad


def test_unbounded_box_gives_infinite_constants_not_nan() -> None:
    inf = float("inf")
    xl = torch.tensor([-inf, 0.0])
    xu = torch.tensor([1.0, 1.0])
    yl = torch.tensor([0.0, -1.0])
    yu = torch.tensor([1.0, inf])
    rel = relax_mul(xl, xu, yl, yu)
    for t in (rel.lower_x, rel.lower_y, rel.upper_x, rel.upper_y):
        assert torch.equal(t, torch.zeros(2))
    assert (rel.lower_bias == -inf).all() and (rel.upper_bias == inf).all()
