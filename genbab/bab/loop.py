"""The branch-and-bound loop over splits of nonlinear nodes' inputs (GenBaB).

Each round takes the hardest open domains, picks one neuron and point per domain,
bounds both children of every domain in one batched pass (CROWN intermediate
bounds after the split, alpha-CROWN on the objective), drops the proven children
and returns the rest to the pool. ``unsat`` only when the pool runs empty.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from genbab.bab import branching
from genbab.bab.domains import DomainPool, Domains
from genbab.bounds.alpha import optimize_bounds
from genbab.bounds.box import Bounds, Box
from genbab.bounds.engine import Engine, LinearForm
from genbab.bounds.objective import Objective
from genbab.config import BabConfig, BoundsConfig

logger = logging.getLogger(__name__)


@dataclass
class BabResult:
    """Outcome of branch-and-bound.

    Attributes:
        proven: True when every domain was proven (the cases hold).
        reason: Why it stopped otherwise (``"timeout"``, ``"max_domains"``,
            ``"unsplittable"``).
        stats: Domains visited, rounds, seconds, domains per second, depth.
    """

    proven: bool
    reason: str = ""
    stats: dict = field(default_factory=dict)


@dataclass
class _Problem:
    """What every round needs: the engine, the boxes and rows of all cases."""

    engine: Engine
    lower: Tensor  # [C, *input_shape]
    upper: Tensor
    objective: Objective  # [C, S]
    root_forms: dict[str, tuple[LinearForm, LinearForm]]
    values: list[branching.SplitValue]
    bab: BabConfig
    bounds_config: BoundsConfig
    table: object | None

    def box(self, case: Tensor) -> Box:
        return Box(self.lower[case], self.upper[case])


def run_bab(
    engine: Engine,
    box: Box,
    objective: Objective,
    bounds: Bounds,
    lower: Tensor,
    config: BabConfig,
    bounds_config: BoundsConfig,
    deadline: float | None = None,
    table: object | None = None,
) -> BabResult:
    """Branch and bound on the cases that bounds alone did not prove.

    Args:
        engine: The bound engine.
        box: Input boxes of the cases, ``[C, *input_shape]``.
        objective: Rows of the cases, ``[C, S]``.
        bounds: Intermediate bounds of the cases (the root domains).
        lower: The root lower bounds of the rows, ``[C, S]``.
        config: Branch-and-bound options.
        bounds_config: Options of the bound computations.
        deadline: ``time.monotonic()`` value at which to give up.
        table: Branching-point lookup (``points(func, lower, upper)``) or None.
    """
    start = time.monotonic()
    values = branching.split_values(engine)
    forms: dict[str, tuple[LinearForm, LinearForm]] = {}
    if config.heuristic == "bbps":
        with torch.no_grad():
            engine.crown_bounds(box, known=bounds, forms=forms)
    problem = _Problem(
        engine,
        box.lower,
        box.upper,
        objective,
        forms,
        values,
        config,
        bounds_config,
        table,
    )
    margins = objective.clause_margins(lower).min(-1).values
    open_cases = margins <= 0
    C = box.batch
    case = torch.arange(C, device=box.lower.device)[open_cases]
    needed = set(engine.needs_bounds())
    root = Domains(
        case,
        {
            k: (v[0][open_cases], v[1][open_cases])
            for k, v in bounds.items()
            if k in needed
        },
        margins[open_cases],
        torch.zeros_like(case),
    )
    pool = DomainPool(root)
    visited, rounds, max_depth = 0, 0, 0
    reason = ""
    while len(pool):
        if deadline is not None and time.monotonic() > deadline:
            reason = "timeout"
            break
        if visited >= config.max_domains:
            reason = "max_domains"
            break
        batch = pool.pop(config.batch_size)
        children, splittable = _split(problem, batch)
        if not splittable.all():
            reason = "unsplittable"
            pool.push(batch.take(~splittable))
            break
        children = _bound_children(problem, children, deadline)
        visited += len(children)
        rounds += 1
        max_depth = max(max_depth, int(children.depth.max()))
        pool.push(children.take(children.margin <= 0))
        if rounds % 10 == 0:
            logger.info(
                "BaB round %d: %d open domains, %d visited, worst margin %.4g",
                rounds,
                len(pool),
                visited,
                pool.worst_margin(),
            )
    seconds = time.monotonic() - start
    stats = {
        "bab_domains": visited,
        "bab_rounds": rounds,
        "bab_seconds": seconds,
        "bab_domains_per_second": visited / seconds if seconds > 0 else 0.0,
        "bab_max_depth": max_depth,
        "bab_open_domains": len(pool),
    }
    proven = len(pool) == 0 and not reason
    return BabResult(proven, reason, stats)


def _split(problem: _Problem, batch: Domains) -> tuple[Domains, Tensor]:
    """Children of every domain of the batch (``2 N``: all left, then all right),
    and which domains had a neuron left to split."""
    engine = problem.engine
    box = problem.box(batch.case)
    objective = problem.objective.select(batch.case)
    record: dict[str, Tensor] = {}
    forms: list[LinearForm] = []
    with torch.no_grad():
        lower = engine.objective_lower(
            objective.coeffs, box, batch.bounds, record=record, forms=forms
        )
    rows_open = (lower - objective.rhs) <= 0
    points = {
        v.name: branching.split_points(v, *batch.bounds[v.name], problem.table)
        for v in problem.values
    }
    root_forms = None
    if problem.root_forms:
        root_forms = {
            k: tuple(LinearForm(f.coeffs[batch.case], f.bias[batch.case]) for f in pair)
            for k, pair in problem.root_forms.items()
        }
    with torch.no_grad():
        scores = branching.score(
            problem.bab.heuristic,
            engine,
            problem.values,
            batch.bounds,
            points,
            record,
            forms[0],
            box,
            rows_open,
            root_forms,
        )
    # Best candidate per domain across all split values.
    N = len(batch)
    best = torch.full((N,), -torch.inf, dtype=lower.dtype, device=lower.device)
    best_value = torch.full((N,), -1, dtype=torch.long, device=lower.device)
    best_index = torch.zeros(N, dtype=torch.long, device=lower.device)
    for k, value in enumerate(problem.values):
        lo, hi = batch.bounds[value.name]
        mask = branching.candidate_mask(value, lo, hi, problem.bab.min_gap)
        s = scores[value.name]
        # A tiny bonus for width keeps ties (all-zero scores) meaningful.
        s = s + 1e-9 * (hi - lo).flatten(1)
        s = torch.where(mask.flatten(1), s, -torch.inf)
        top, idx = s.max(1)
        better = top > best
        best = torch.where(better, top, best)
        best_value = torch.where(better, k, best_value)
        best_index = torch.where(better, idx, best_index)
    splittable = best_value >= 0

    # Children: left (h <= p) then right (h >= p).
    bounds: Bounds = {}
    rows = torch.arange(N, device=lower.device)
    for k, value in enumerate(problem.values):
        lo, hi = batch.bounds[value.name]
        sel = best_value == k
        # Domains splitting another (maybe larger) value must not index this one.
        p = points[value.name].flatten(1)[rows, torch.where(sel, best_index, 0)]
        left_hi, right_lo = hi.flatten(1).clone(), lo.flatten(1).clone()
        left_hi[sel, best_index[sel]] = p[sel]
        right_lo[sel, best_index[sel]] = p[sel]
        bounds[value.name] = (
            torch.cat([lo, right_lo.reshape(lo.shape)]),
            torch.cat([left_hi.reshape(hi.shape), hi]),
        )
    for name, (lo, hi) in batch.bounds.items():
        if name not in bounds:
            bounds[name] = (torch.cat([lo, lo]), torch.cat([hi, hi]))
    children = Domains(
        torch.cat([batch.case, batch.case]),
        bounds,
        torch.cat([batch.margin, batch.margin]),
        torch.cat([batch.depth, batch.depth]) + 1,
    )
    keep = torch.cat([splittable, splittable])
    return children.take(keep), splittable


def _bound_children(problem: _Problem, children: Domains, deadline) -> Domains:
    """Bound the children; their margins become the worst clause margins."""
    engine = problem.engine
    box = problem.box(children.case)
    objective = problem.objective.select(children.case)
    with torch.no_grad():
        if problem.bab.recompute_intermediate:
            bounds = engine.crown_bounds(box, known=children.bounds)
        else:
            bounds = engine.interval(box, children.bounds)
        lower = engine.objective_lower(objective.coeffs, box, bounds)
    if problem.bab.alpha_iterations > 0 and not objective.proven(lower).all():
        cfg = BoundsConfig(
            alpha_iterations=problem.bab.alpha_iterations,
            alpha_lr=problem.bounds_config.alpha_lr,
            alpha_lr_decay=problem.bounds_config.alpha_lr_decay,
            early_stop_patience=problem.bounds_config.early_stop_patience,
        )
        lower, _ = optimize_bounds(
            engine, box, bounds, objective, cfg, deadline, start_lower=lower
        )
    margins = objective.clause_margins(lower).min(-1).values
    stored = {k: bounds[k] for k in children.bounds}
    return Domains(children.case, stored, margins, children.depth)
