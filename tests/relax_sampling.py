"""Sampling soundness checker shared by the relaxation tests.

Import it from a test module in ``tests/`` as ``import relax_sampling as rs`` (pytest's
default "prepend" import mode puts ``tests/`` on ``sys.path``).

Stable API (other relaxation tests rely on it; extend, do not change):

``tolerance(dtype) -> float``
    Relative tolerance used for a relaxation computed in ``dtype`` (a few eps).

``interval_cases(dtype=torch.float64, device="cpu", *, special=(), domain=None,
seed=0, size=64) -> dict[str, tuple[Tensor, Tensor]]``
    Named batches of intervals ``(lower, upper)``, each a pair of 1-D tensors of
    equal length with ``lower <= upper``: ``"wide"`` (ends up to 20 in size),
    ``"very_wide"`` (up to 1e3), ``"huge"`` (up to 1e4, few), ``"narrow"`` (widths
    1e-6..1e-2), ``"negative"``, ``"positive"``, ``"crossing"`` (contain 0),
    ``"degenerate"`` (``lower == upper``), and, when ``special`` points are given,
    ``"special"`` (intervals that start, end at or straddle each special point,
    narrow and wide). ``domain=(lo, hi)`` clamps both ends into ``[lo, hi]`` for
    functions defined on part of the line (e.g. ``(1e-6, inf)`` for log); cases
    that would be empty after clamping are still returned, degenerate.

``sample_points(lower, upper, *, num_uniform=32, num_beta=32, extra=None,
seed=0) -> Tensor``
    Points of ``[lower, upper]``, shape ``[K, *shape]`` with ``shape`` the
    broadcast shape of the bounds: the two endpoints exactly, ``num_uniform``
    uniform points, ``num_beta`` edge-heavy Beta(0.5, 0.5) points, and ``extra``
    (shape ``[E, *shape]`` or broadcastable; e.g. tangent points), clamped into
    the interval. All in the dtype/device of ``lower``.

``violations(fn, relaxation, points) -> tuple[Tensor, Tensor]``
    Per-point amount by which ``lower_line(x) - f(x)`` and ``f(x) - upper_line(x)``
    exceed the tolerance-free check (positive means violated), computed in float64
    with ``f`` evaluated in float64 on the exact sample points, shape of
    ``points``. ``assert_sound`` applies the scaled tolerance.

``assert_sound(fn, relaxation, lower, upper, *, extra=None, tol=None, seed=0,
context="") -> None``
    Samples points (``sample_points``) and raises ``AssertionError`` naming the
    largest violation (its value, the interval, the point, the line, ``context``)
    if ``lower_line(x) <= f(x) <= upper_line(x)`` fails by more than
    ``tol * (1 + |f(x)| + |slope * x| + |bias|)``; ``tol`` defaults to
    ``tolerance(dtype of the relaxation)``. Also checks that the four tensors are
    finite and have the broadcast shape of the bounds.

``random_params(num_params, shape, *, low=0.0, high=1.0, dtype, device, seed=0)
-> Tensor``
    Uniform random parameters, shape ``[num_params, *shape]``.

``check_family(family, lower, upper, *, fn=None, extra=None, tol=None, seed=0,
context="") -> None``
    Runs ``assert_sound`` for ``params=None``, ``family.init_params``, random
    parameters uniform in [0, 1], in [-5, 5] and in {-1e3, 1e3} (far outside any
    valid range: the relaxation must clamp). ``fn`` defaults to ``family.fn``.
    Parameters get an extra broadcast dimension (``[P, 3, *shape]``) so
    per-specification parameters are exercised too.

``assert_same_relaxation(a, b, *, atol=0.0) -> None``
    The four tensors of two relaxations agree within ``atol``.

``line_values(relaxation, x) -> tuple[Tensor, Tensor]``
    ``(lower_line(x), upper_line(x))`` in float64.

``touch_gaps(fn, relaxation, points) -> tuple[Tensor, Tensor]``
    Per element, the smallest ``f(x) - lower_line(x)`` and ``upper_line(x) - f(x)``
    over the points ``[K, *shape]`` (float64, shape ``shape``): how close each line
    comes to ``f``; a tight line touches ``f`` (gap ~ 0) somewhere.

``single_thread()``
    Context manager running torch on one CPU thread (restored afterwards): the
    tensors here are small, and on a loaded machine the thread pool costs more
    than it saves. Use it in an autouse fixture.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor

from genbab.bounds.relax.base import Relaxation, UnaryFamily

__all__ = [
    "assert_same_relaxation",
    "assert_sound",
    "check_family",
    "interval_cases",
    "line_values",
    "random_params",
    "sample_points",
    "single_thread",
    "tolerance",
    "touch_gaps",
    "violations",
]


def tolerance(dtype: torch.dtype) -> float:
    """Relative tolerance for relaxations computed in ``dtype`` (a few eps)."""
    return 8.0 * torch.finfo(dtype).eps


def _sorted_pair(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    return torch.minimum(a, b), torch.maximum(a, b)


def interval_cases(
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    *,
    special: Sequence[float] = (),
    domain: tuple[float, float] | None = None,
    seed: int = 0,
    size: int = 64,
) -> dict[str, tuple[Tensor, Tensor]]:
    """Named batches of test intervals; see the module docstring.

    Args:
        dtype: Dtype of the returned bounds.
        device: Device of the returned bounds.
        special: Points around which to build extra intervals (case "special").
        domain: Optional ``(lo, hi)`` into which both ends are clamped.
        seed: Seed of the random generator.
        size: Number of intervals in each random case.

    Returns:
        Map from case name to ``(lower, upper)``, two 1-D tensors of equal length.
    """
    g = torch.Generator().manual_seed(seed)

    def rand(lo: float, hi: float, n: int = size) -> Tensor:
        return torch.rand(n, generator=g, dtype=torch.float64) * (hi - lo) + lo

    cases: dict[str, tuple[Tensor, Tensor]] = {}
    cases["wide"] = _sorted_pair(rand(-20, 20), rand(-20, 20))
    cases["very_wide"] = _sorted_pair(rand(-1e3, 1e3, 16), rand(-1e3, 1e3, 16))
    cases["huge"] = (
        torch.tensor([-1e4, -1e4, -1e4, 1.0, -3.0, 9e3], dtype=torch.float64),
        torch.tensor([1e4, -9e3, 2.0, 1e4, 1e4, 1e4], dtype=torch.float64),
    )
    centre = rand(-10, 10)
    width = 10 ** rand(-6, -2)
    cases["narrow"] = (centre - width / 2, centre + width / 2)
    cases["negative"] = _sorted_pair(-(10 ** rand(-3, 1.3)), -(10 ** rand(-3, 1.3)))
    cases["positive"] = _sorted_pair(10 ** rand(-3, 1.3), 10 ** rand(-3, 1.3))
    cases["crossing"] = (-(10 ** rand(-4, 1.3)), 10 ** rand(-4, 1.3))
    point = torch.cat([rand(-20, 20, size - 4), torch.tensor([0.0, 1e-8, -3.0, 7.0])])
    cases["degenerate"] = (point, point.clone())
    if special:
        pts = torch.tensor(list(special), dtype=torch.float64)
        offsets = torch.tensor(
            [0.0, 1e-6, 1e-3, 0.1, 1.0, 5.0, 30.0], dtype=torch.float64
        )
        lo = (pts[:, None] - offsets[None, :]).flatten()
        hi = (pts[:, None] + offsets[None, :]).flatten()
        p = pts[:, None].expand(-1, offsets.numel()).flatten()
        cases["special"] = (
            torch.cat([lo, p, lo, p]),
            torch.cat([p, hi, hi, p + offsets.flip(0).repeat(pts.numel())]),
        )

    out = {}
    for name, (lower, upper) in cases.items():
        if domain is not None:
            lower = lower.clamp(domain[0], domain[1])
            upper = upper.clamp(domain[0], domain[1])
        lower = lower.to(dtype=dtype, device=device)
        upper = torch.maximum(upper.to(dtype=dtype, device=device), lower)
        out[name] = (lower, upper)
    return out


def sample_points(
    lower: Tensor,
    upper: Tensor,
    *,
    num_uniform: int = 32,
    num_beta: int = 32,
    extra: Tensor | None = None,
    seed: int = 0,
) -> Tensor:
    """Sample points of ``[lower, upper]``; see the module docstring.

    Args:
        lower: Lower interval ends, any shape broadcastable with ``upper``.
        upper: Upper interval ends.
        num_uniform: Number of uniformly distributed points per interval.
        num_beta: Number of Beta(0.5, 0.5) (edge-heavy) points per interval.
        extra: Additional points, broadcastable to ``[E, *shape]``; clamped in.
        seed: Seed of the random generator.

    Returns:
        Points, shape ``[K, *shape]``, dtype and device of ``lower``.
    """
    lower, upper = torch.broadcast_tensors(lower, upper)
    shape = lower.shape
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(num_uniform, *shape, generator=g, dtype=torch.float64)
    beta = torch.distributions.Beta(
        torch.tensor(0.5, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64)
    )
    torch.manual_seed(seed)  # Beta sampling has no generator argument
    b = beta.sample((num_beta, *shape))
    fractions = torch.cat([u, b]).to(device=lower.device)
    lo64, hi64 = lower.double(), upper.double()
    inner = (lo64 + fractions * (hi64 - lo64)).to(lower.dtype)
    pts = [lower[None], upper[None], inner]
    if extra is not None:
        e = extra.to(dtype=lower.dtype, device=lower.device)
        if e.dim() <= len(shape):
            e = e[None]
        pts.append(e.expand(e.shape[0], *shape))
    out = torch.cat(pts)
    return torch.minimum(torch.maximum(out, lower), upper)


def line_values(relaxation: Relaxation, x: Tensor) -> tuple[Tensor, Tensor]:
    """Return ``(lower_line(x), upper_line(x))`` evaluated in float64.

    Args:
        relaxation: Lines of shape ``shape``.
        x: Points, shape ``[K, *shape]`` (or broadcastable).

    Returns:
        Two float64 tensors of the shape of ``x``.
    """
    x = x.double()
    lo = relaxation.lower_slope.double() * x + relaxation.lower_bias.double()
    hi = relaxation.upper_slope.double() * x + relaxation.upper_bias.double()
    return lo, hi


def violations(
    fn: Callable[[Tensor], Tensor], relaxation: Relaxation, points: Tensor
) -> tuple[Tensor, Tensor]:
    """Per-point violations ``lower_line(x) - f(x)`` and ``f(x) - upper_line(x)``.

    Args:
        fn: The relaxed function, evaluated in float64 on the points.
        relaxation: Lines of shape ``shape``.
        points: Points, shape ``[K, *shape]``.

    Returns:
        Two float64 tensors of shape ``[K, *shape]``; positive means violated.
    """
    lo, hi = line_values(relaxation, points)
    f = fn(points.double())
    return lo - f, f - hi


def _scale(
    fn: Callable[[Tensor], Tensor], relaxation: Relaxation, x: Tensor
) -> tuple[Tensor, Tensor]:
    x = x.double()
    f = fn(x).abs()
    lo = 1 + f + (relaxation.lower_slope.double() * x).abs()
    lo = lo + relaxation.lower_bias.double().abs()
    hi = 1 + f + (relaxation.upper_slope.double() * x).abs()
    hi = hi + relaxation.upper_bias.double().abs()
    return lo, hi


def assert_sound(
    fn: Callable[[Tensor], Tensor],
    relaxation: Relaxation,
    lower: Tensor,
    upper: Tensor,
    *,
    extra: Tensor | None = None,
    tol: float | None = None,
    seed: int = 0,
    context: str = "",
) -> None:
    """Assert that the relaxation encloses ``fn`` on sampled points of the interval.

    Args:
        fn: The relaxed function (evaluated in float64).
        relaxation: The relaxation to check.
        lower: Lower interval ends, broadcastable to the relaxation's shape.
        upper: Upper interval ends.
        extra: Extra points (e.g. tangent points), broadcastable to ``[E, *shape]``.
        tol: Relative tolerance; defaults to ``tolerance(relaxation dtype)``.
        seed: Seed of the sampling.
        context: Text added to the failure message.

    Raises:
        AssertionError: With the largest violation, if any exceeds the tolerance.
    """
    tensors = [
        relaxation.lower_slope,
        relaxation.lower_bias,
        relaxation.upper_slope,
        relaxation.upper_bias,
    ]
    shape = torch.broadcast_shapes(
        lower.shape, upper.shape, *(t.shape for t in tensors)
    )
    for name, t in zip(
        ("lower_slope", "lower_bias", "upper_slope", "upper_bias"), tensors, strict=True
    ):
        assert t.shape == shape, (
            f"{context}: {name} has shape {tuple(t.shape)}, expected {tuple(shape)}"
        )
        assert torch.isfinite(t).all(), f"{context}: {name} is not finite: {t}"
    if tol is None:
        tol = tolerance(relaxation.lower_bias.dtype)
    lower, upper = lower.expand(shape), upper.expand(shape)
    x = sample_points(lower, upper, extra=extra, seed=seed)
    v_lo, v_hi = violations(fn, relaxation, x)
    s_lo, s_hi = _scale(fn, relaxation, x)
    for side, v, s in (("lower", v_lo, s_lo), ("upper", v_hi, s_hi)):
        excess = v / s
        worst = int(excess.flatten().argmax())
        if excess.flatten()[worst] > tol:
            idx = torch.unravel_index(torch.tensor(worst), excess.shape)
            el = tuple(int(i) for i in idx[1:])
            slope = getattr(relaxation, f"{side}_slope")[el].item()
            bias = getattr(relaxation, f"{side}_bias")[el].item()
            raise AssertionError(
                f"{context}: {side} line violated by {v[idx].item():.3e} "
                f"(relative {excess[idx].item():.3e} > tol {tol:.1e}) at x="
                f"{x[idx].item()!r} in [{lower[el].item()!r}, {upper[el].item()!r}], "
                f"line {slope!r} * x + {bias!r}, f(x)="
                f"{fn(x[idx].double()).item()!r}, element {el}"
            )


def random_params(
    num_params: int,
    shape: Sequence[int],
    *,
    low: float = 0.0,
    high: float = 1.0,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> Tensor:
    """Uniform random parameters in ``[low, high)``, shape ``[num_params, *shape]``."""
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(num_params, *shape, generator=g, dtype=torch.float64)
    return (low + (high - low) * p).to(dtype=dtype, device=device)


def assert_same_relaxation(a: Relaxation, b: Relaxation, *, atol: float = 0.0) -> None:
    """Assert that the four tensors of two relaxations agree within ``atol``."""
    for name in ("lower_slope", "lower_bias", "upper_slope", "upper_bias"):
        ta, tb = getattr(a, name), getattr(b, name)
        ta, tb = torch.broadcast_tensors(ta, tb)
        diff = (ta.double() - tb.double()).abs()
        where = torch.unravel_index(diff.argmax(), diff.shape)
        assert diff.max() <= atol, (
            f"{name} differs by {diff.max().item():.3e} (atol {atol:.1e}) at "
            f"element {tuple(int(i) for i in where)}"
        )


def check_family(
    family: UnaryFamily,
    lower: Tensor,
    upper: Tensor,
    *,
    fn: Callable[[Tensor], Tensor] | None = None,
    extra: Tensor | None = None,
    tol: float | None = None,
    seed: int = 0,
    context: str = "",
) -> None:
    """Check a family's relaxation for default, initial and random parameters.

    Args:
        family: The family under test.
        lower: Lower interval ends, shape ``shape``.
        upper: Upper interval ends, shape ``shape``.
        fn: Reference function (float64); defaults to ``family.fn``.
        extra: Extra sample points, broadcastable to ``[E, *shape]``.
        tol: Relative tolerance (see ``assert_sound``); defaults by dtype.
        seed: Seed of sampling and parameters.
        context: Text added to failure messages.

    Raises:
        AssertionError: If any relaxation is unsound, not finite or misshapen.
    """
    fn = family.fn if fn is None else fn
    if extra is not None and extra.dim() <= lower.dim():
        extra = extra[None]
    name = f"{family.name} {context}".strip()
    assert_sound(
        fn,
        family.relax(lower, upper, None),
        lower,
        upper,
        extra=extra,
        seed=seed,
        tol=tol,
        context=f"{name} params=None",
    )
    if family.num_params == 0:
        return
    init = family.init_params(lower, upper)
    assert init.shape == (family.num_params, *lower.shape), (
        f"{name}: init_params shape {tuple(init.shape)}"
    )
    assert_sound(
        fn,
        family.relax(lower, upper, init),
        lower,
        upper,
        extra=extra,
        seed=seed,
        tol=tol,
        context=f"{name} params=init",
    )

    # Parameters with an extra specification dimension: bounds broadcast over it.
    lo3, hi3 = lower[None], upper[None]
    shape = (3, *lower.shape)
    kw = {"dtype": lower.dtype, "device": lower.device}
    draws = {
        "uniform[0,1]": random_params(family.num_params, shape, seed=seed, **kw),
        "uniform[-5,5]": random_params(
            family.num_params, shape, low=-5.0, high=5.0, seed=seed + 1, **kw
        ),
        "+-1e3": 1e3
        * torch.sign(
            random_params(family.num_params, shape, low=-1, high=1, seed=seed + 2, **kw)
        ),
    }
    for label, params in draws.items():
        rel = family.relax(lo3, hi3, params)
        assert_sound(
            fn,
            rel,
            lo3,
            hi3,
            extra=None if extra is None else extra[:, None],
            seed=seed,
            tol=tol,
            context=f"{name} params={label}",
        )


def touch_gaps(
    fn: Callable[[Tensor], Tensor], relaxation: Relaxation, points: Tensor
) -> tuple[Tensor, Tensor]:
    """Smallest ``f - lower_line`` and ``upper_line - f`` over the points.

    Args:
        fn: The relaxed function (evaluated in float64).
        relaxation: Lines of shape ``shape``.
        points: Points, shape ``[K, *shape]``.

    Returns:
        Two float64 tensors of shape ``shape``.
    """
    v_lo, v_hi = violations(fn, relaxation, points)
    return (-v_lo).min(0).values, (-v_hi).min(0).values


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one CPU thread inside the block, restoring the count after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
