"""Splits, children and split constraints of genbab.bab, checked by sampling.

Every child's bound must hold at every sampled input that lies in the child
(its split constraints hold there), every sample must lie in some child, and
any non-negative beta multipliers must keep bounds valid.
"""

from __future__ import annotations

import pytest
import torch
from bab_nets import (
    net,
    objective,
    product_net,
    random_samples,
    root,
    samples_values,
    unit_box,
)

from genbab.bab import bounding, split
from genbab.bab.domains import DomainPool, Domains
from genbab.bab.problem import flat

torch.set_num_threads(1)
HEURISTICS = ["bbps", "babsr", "widest"]
TOL = 1e-9


def _inside(problem, doms, values) -> torch.Tensor:
    """``[M, N]``: sample ``m`` satisfies every bound of domain ``n``."""
    ok = None
    for name, (lo, hi) in doms.bounds.items():
        v = flat(values[name])  # [M, n]
        here = (v[:, None] >= flat(lo)[None] - TOL) & (
            v[:, None] <= flat(hi)[None] + TOL
        )
        here = here.all(-1)
        ok = here if ok is None else ok & here
    assert ok is not None
    return ok


def _outputs(problem, doms, values) -> torch.Tensor:
    """``[M, N]``: the rows' values ``c . y`` (one row per item)."""
    y = flat(values[problem.engine.graph.output_name])  # [M, n_out]
    c = problem.objective.coeffs[doms.item][:, 0]  # [N, n_out]
    return y @ c.T


def _raw_lower(problem, doms, beta=None) -> torch.Tensor:
    """The bound of the domains' own parameters (not max'd with the parent's)."""
    dt = problem.engine.dtype
    alpha = {k: v.to(dt) for k, v in doms.alpha.items()}
    if beta is None:
        beta = {k: v.to(dt) for k, v in doms.beta.items()}
    masks = bounding.split_masks(problem, doms)
    with torch.no_grad():
        return bounding.lower_bound(problem, doms, alpha, beta, masks)[:, 0]


def _check_children(problem, kids, values):
    inside = _inside(problem, kids, values)
    assert inside.any(1).all(), "some sample lies in no child"
    out = _outputs(problem, kids, values)
    for lower in (kids.lower[:, 0], _raw_lower(problem, kids)):
        slack = torch.where(inside, out - lower[None], torch.inf)
        assert float(slack.min()) >= -1e-7, "a child's bound exceeds a sample"


def _setup(engine, radius, seed=0, **bab):
    box = unit_box(engine, radius)
    x, values = samples_values(engine, random_samples(box, 3000, seed))
    y = flat(values[engine.graph.output_name])[:, 0]
    # A false property: bound y from below by more than its minimum.
    obj = objective(float(y.min()) + 0.3)
    problem, doms, _, _, _ = root(engine, box, obj, **bab)
    doms = bounding.optimize(problem, doms, 10)
    return problem, doms, values


@pytest.mark.parametrize("act", ["Sigmoid", "Tanh", "Sin", "Relu"])
@pytest.mark.parametrize("heuristic", HEURISTICS)
def test_children_enclose_parent_values(tmp_path, act, heuristic):
    engine = net(tmp_path, act, seed=1, sizes=(2, 12, 12, 1))
    problem, doms, values = _setup(engine, 2.0, heuristic=heuristic)
    for depth in (2, 1, 1):
        choice = split.choose(problem, doms, depth)
        assert choice.valid.all()
        _check_choice(problem, doms, choice)
        kids = split.make_children(problem, doms, choice)
        assert len(kids) == len(doms) * 2**depth
        kids = bounding.optimize(problem, kids, 15)
        _check_children(problem, kids, values)
        doms = kids


def _check_choice(problem, doms, choice):
    """Chosen neurons are candidates; points lie strictly inside them (0 for
    ReLU)."""
    for v, start, end in zip(
        problem.values, problem.offsets[:-1], problem.offsets[1:], strict=True
    ):
        lo, hi = (flat(t) for t in doms.bounds[v.name])
        for d in range(choice.index.shape[1]):
            idx, p = choice.index[:, d], choice.point[:, d]
            sel = (idx >= start) & (idx < end)
            j = idx[sel] - start
            rows = torch.nonzero(sel).flatten()
            l, u = lo[rows, j], hi[rows, j]
            assert (l < p[sel]).all() and (p[sel] < u).all()
            if v.relu_only:
                assert (p[sel] == 0).all()
            else:
                assert (u - l > problem.config.min_gap).all()


def test_product_inputs_are_split_values_and_children_enclose(tmp_path):
    engine = product_net(tmp_path, seed=2)
    problem, doms, values = _setup(engine, 1.5)
    names = {v.name for v in problem.values}
    mul = next(n for n in engine.graph.nodes if n.op.op_type == "Mul")
    assert set(mul.inputs) <= names
    for _ in range(3):
        choice = split.choose(problem, doms, 2)
        kids = bounding.optimize(
            problem, split.make_children(problem, doms, choice), 15
        )
        _check_children(problem, kids, values)
        doms = kids


@pytest.mark.parametrize("act", ["Sigmoid", "Tanh", "Sin"])
def test_any_nonnegative_beta_keeps_bounds_valid(tmp_path, act):
    engine = net(tmp_path, act, seed=3, sizes=(2, 10, 10, 1))
    problem, doms, values = _setup(engine, 2.0)
    for depth in (3, 2):  # five splits per domain (some on one neuron)
        choice = split.choose(problem, doms, depth)
        doms = split.make_children(problem, doms, choice)
    masks = bounding.split_masks(problem, doms)
    assert sum(int(a.sum() + b.sum()) for a, b in masks.values()) >= 3 * len(doms)
    gen = torch.Generator().manual_seed(0)
    inside = _inside(problem, doms, values)
    out = _outputs(problem, doms, values)
    for scale in (0.1, 1.0, 10.0):
        beta = {
            k: scale * torch.rand(v.shape, generator=gen, dtype=torch.float64)
            for k, v in doms.beta.items()
        }
        lower = _raw_lower(problem, doms, beta)
        slack = torch.where(inside, out - lower[None], torch.inf)
        assert float(slack.min()) >= -1e-7


def test_optimized_beta_is_used_and_sound(tmp_path):
    engine = net(tmp_path, "Tanh", seed=4, sizes=(2, 10, 10, 1))
    problem, doms, values = _setup(engine, 2.0)
    for depth in (3, 1):
        doms = split.make_children(problem, doms, split.choose(problem, doms, depth))
    doms = bounding.optimize(problem, doms, 40)
    betas = torch.cat([v.flatten() for v in doms.beta.values()])
    assert float(betas.max()) > 0  # the multipliers moved off zero
    assert float(betas.min()) >= 0
    _check_children(problem, doms, values)


def test_beta_off_keeps_zero_multipliers(tmp_path):
    engine = net(tmp_path, "Tanh", seed=4, sizes=(2, 10, 10, 1))
    problem, doms, values = _setup(engine, 2.0, beta=False)
    assert doms.beta == {}
    doms = split.make_children(problem, doms, split.choose(problem, doms, 2))
    doms = bounding.optimize(problem, doms, 10)
    _check_children(problem, doms, values)


def test_relu_splits_at_zero(tmp_path):
    engine = net(tmp_path, "Relu", seed=0, sizes=(2, 12, 12, 1))
    problem, doms, _ = _setup(engine, 2.0, heuristic="widest")
    assert all(v.relu_only for v in problem.values)
    choice = split.choose(problem, doms, 3)
    assert (choice.point == 0).all()


def test_missing_decisions_make_no_duplicate_children(tmp_path):
    engine = net(tmp_path, "Tanh", seed=0, sizes=(2, 4, 1))
    problem, doms, _ = _setup(engine, 1.0)
    choice = split.choose(problem, doms, 2)
    choice.valid[:, 1] = False
    kids = split.make_children(problem, doms, choice)
    assert len(kids) == 2 * len(doms)
    assert (kids.depth == doms.depth.repeat(2) + 1).all()


def test_bbps_exact_scores_do_not_exceed_estimates(tmp_path):
    # The first-order estimate is optimistic: keeping every candidate exact
    # can only lower the best score.
    engine = net(tmp_path, "Sigmoid", seed=5, sizes=(2, 12, 12, 1))
    problem, doms, _ = _setup(engine, 3.0)
    T = problem.num_neurons
    bounds = doms.bounds
    pts = torch.cat([flat((lo + hi) / 2) for lo, hi in bounds.values()], 1)
    ok = torch.ones_like(pts, dtype=torch.bool)
    cfg = problem.config
    problem.config = type(cfg)(**{**cfg.__dict__, "candidates": T})
    exact = split._scores(problem, doms, pts, ok, 1)
    problem.config = type(cfg)(**{**cfg.__dict__, "candidates": 0})
    estimate = split._scores(problem, doms, pts, ok, 0)
    assert (exact <= estimate + 1e-4).all()


def test_pool_pops_lowest_margins_and_grows():
    def doms(margins):
        n = len(margins)
        m = torch.tensor(margins, dtype=torch.float64)
        return Domains(
            torch.arange(n),
            m[:, None],
            m,
            torch.zeros(n, dtype=torch.long),
            {"h": (torch.zeros(n, 3), torch.ones(n, 3))},
        )

    pool = DomainPool(doms([-1.0, -3.0, -2.0]))
    pool.push(doms([-5.0, -0.5] * 20))
    assert len(pool) == 43 and pool.capacity >= 43
    out = pool.pop(2)
    assert sorted(out.margin.tolist()) == [-5.0, -5.0]
    assert len(pool) == 41
    assert pool.worst_margin() == -5.0
    rest = pool.pop(100)
    assert len(rest) == 41 and len(pool) == 0
    assert pool.worst_margin() == float("inf")
