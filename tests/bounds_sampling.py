"""Sampling checks of whole-graph bounds, shared by the bound tests.

Import it from a test module in ``tests/`` as ``import bounds_sampling as bs``.

``box_points(lower, upper, *, num_uniform=64, num_beta=64, num_corners=32,
seed=0) -> Tensor``
    Points of the boxes ``[B, *shape]``: both corners exactly, uniform points,
    Beta(0.5, 0.5) edge-heavy points and random corners, ``[B, K, *shape]`` in
    the dtype of the bounds.

``graph_values(graph, points, names) -> dict[str, Tensor]``
    The named values of the graph on points ``[B, K, *input_shape]``, each
    ``[B, K, *shape]`` (the graph evaluated in its own dtype).

``assert_inside(values, lower, upper, *, tol, context)``
    Every value ``[B, K, *shape]`` lies in ``[lower - tol, upper + tol]``
    (bounds ``[B, *shape]``); the message names the worst element.

``random_params(params, *, low, high, seed) -> Params``
    Parameters of the shapes of ``params`` drawn uniformly in ``[low, high)``.

``check_graph(graph, box, *, tol=1e-9, seed=0, params_draws=2)``
    Interval bounds of every node, CROWN bounds of every value a relaxation
    needs, CROWN bounds of the output with default, initial and random
    (in- and out-of-range) parameters: each must enclose the graph's values on
    sampled points. Returns the output's interval and CROWN bounds.
"""

from __future__ import annotations

import torch
from torch import Tensor

from genbab.bounds import Box, Engine
from genbab.bounds.alpha import init_params
from genbab.bounds.engine import Params
from genbab.model.graph import Graph


def box_points(
    lower: Tensor,
    upper: Tensor,
    *,
    num_uniform: int = 64,
    num_beta: int = 64,
    num_corners: int = 32,
    seed: int = 0,
) -> Tensor:
    """Sample points of each box; see the module docstring."""
    g = torch.Generator().manual_seed(seed)
    B, shape = lower.shape[0], lower.shape[1:]
    u = torch.rand(B, num_uniform, *shape, generator=g, dtype=torch.float64)
    beta = torch.distributions.Beta(
        torch.tensor(0.5, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64)
    )
    torch.manual_seed(seed)  # Beta sampling has no generator argument
    b = beta.sample((B, num_beta, *shape))
    c = torch.randint(0, 2, (B, num_corners, *shape), generator=g).double()
    ends = torch.stack([torch.zeros(B, *shape), torch.ones(B, *shape)], 1).double()
    frac = torch.cat([ends, u, b, c], 1).to(lower.device)
    lo, hi = lower.double().unsqueeze(1), upper.double().unsqueeze(1)
    pts = (lo + frac * (hi - lo)).to(lower.dtype)
    return torch.minimum(torch.maximum(pts, lower.unsqueeze(1)), upper.unsqueeze(1))


def graph_values(graph: Graph, points: Tensor, names: list[str]) -> dict[str, Tensor]:
    """Values of the graph on ``points`` ``[B, K, *input_shape]``."""
    B, K = points.shape[:2]
    flat = points.reshape(B * K, *points.shape[2:])
    with torch.no_grad():
        vals = graph.forward_values(flat, names)
    return {k: v.reshape(B, K, *v.shape[1:]) for k, v in vals.items()}


def assert_inside(
    values: Tensor, lower: Tensor, upper: Tensor, *, tol: float, context: str = ""
) -> None:
    """Assert ``lower - tol <= values <= upper + tol`` (see module docs)."""
    lo, hi = lower.unsqueeze(1), upper.unsqueeze(1)
    scale = 1 + values.abs()
    below = ((lo - values) / scale).max().item()
    above = ((values - hi) / scale).max().item()
    assert torch.isfinite(lower).all() and torch.isfinite(upper).all(), (
        f"{context}: non-finite bounds"
    )
    if below > tol or above > tol:
        v = torch.maximum(lo - values, values - hi) / scale
        where = tuple(int(i) for i in torch.unravel_index(v.argmax(), v.shape))
        b, _, *el = where
        raise AssertionError(
            f"{context}: value {values[where].item()!r} outside "
            f"[{lower[(b, *el)].item()!r}, {upper[(b, *el)].item()!r}] by "
            f"{max(below, above):.3e} (relative, tol {tol:.1e}) at {where}"
        )


def random_params(params: Params, *, low: float, high: float, seed: int) -> Params:
    """Uniform parameters in ``[low, high)`` of the shapes of ``params``."""
    g = torch.Generator().manual_seed(seed)
    out: Params = {}
    for name, p in params.items():
        r = torch.rand(p.shape, generator=g, dtype=torch.float64)
        out[name] = (low + (high - low) * r).to(p.dtype)
    return out


def _output_rows(engine: Engine, B: int) -> Tensor:
    n = engine.graph.num_outputs
    eye = torch.eye(n, dtype=engine.dtype)
    return torch.cat([eye, -eye]).unsqueeze(0).expand(B, -1, -1)


def check_graph(
    graph: Graph,
    box: Box,
    *,
    tol: float = 1e-9,
    seed: int = 0,
    params_draws: int = 2,
) -> dict[str, tuple[Tensor, Tensor]]:
    """Check interval and CROWN bounds of a graph against sampled values.

    Args:
        graph: The graph (float64 recommended; its dtype is used throughout).
        box: Input boxes ``[B, *input_shape]``.
        tol: Relative tolerance of the enclosure.
        seed: Seed of the sampling and of the random parameters.
        params_draws: Number of random parameter draws in each of ``[0, 1]`` and
            ``[-5, 5]``.

    Returns:
        ``{"interval": (lo, hi), "crown": (lo, hi)}`` of the flattened output,
        each ``[B, num_outputs]`` (CROWN not intersected with the interval).
    """
    dtype = box.lower.dtype
    engine = Engine(graph, dtype, box.lower.device)
    names = [n.name for n in graph.nodes]
    pts = box_points(box.lower, box.upper, seed=seed)
    values = graph_values(graph, pts, names)
    B = box.batch

    interval = engine.interval(box)
    for name in names:
        assert_inside(
            values[name], *interval[name], tol=tol, context=f"interval {name}"
        )
    bounds = engine.crown_bounds(box)
    for name in engine.needs_bounds():
        if name in values:
            assert_inside(values[name], *bounds[name], tol=tol, context=f"CROWN {name}")

    out = graph.output_name
    y = values[out].flatten(2)
    rows = _output_rows(engine, B)
    n = graph.num_outputs
    init = init_params(engine, bounds, rows.shape[1])
    draws: dict[str, Params | None] = {"default": None, "init": init}
    for k in range(params_draws):
        draws[f"uniform{k}"] = random_params(init, low=0, high=1, seed=seed + k)
        draws[f"wide{k}"] = random_params(init, low=-5, high=5, seed=seed + 50 + k)
    result: dict[str, tuple[Tensor, Tensor]] = {}
    for label, params in draws.items():
        with torch.no_grad():
            low = engine.objective_lower(rows, box, bounds, params)
        lo, hi = low[:, :n], -low[:, n:]
        assert_inside(y, lo, hi, tol=tol, context=f"CROWN output, params {label}")
        if label == "default":
            result["crown"] = (lo, hi)
    ilo, ihi = interval[out]
    result["interval"] = (ilo.flatten(1), ihi.flatten(1))
    return result
