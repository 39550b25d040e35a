"""The branch-and-bound loop over splits of nonlinear nodes' inputs (GenBaB).

Every clause left open by the bounds becomes an *item* with its own tree. Each
round takes the hardest open domains (lowest margin first), picks a neuron and a
point per domain (several levels at once while the pool is small), bounds all
children in one batched pass (alpha and beta optimized, warm-started from the
parent, intermediate bounds inherited), drops the proven children and returns
the rest to the pool. ``unsat`` only when the pool runs empty; ``unknown`` at
the time limit, the domain limit, or when an open domain has nothing left to
split. Rounds are sized from the measured time per child so that the loop
returns before its deadline, and the batch halves when memory runs out.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from genbab.bab import bounding, split
from genbab.bab.branching import split_values
from genbab.bab.domains import DomainPool, Domains
from genbab.bab.problem import Problem, Shortcuts, value_offsets
from genbab.bounds.box import Bounds, Box
from genbab.bounds.engine import Engine
from genbab.bounds.objective import Objective
from genbab.config import BabConfig

logger = logging.getLogger(__name__)

# Shortcuts (root linear bounds for BBPS) larger than this are not kept.
MAX_SHORTCUT_BYTES = 1 << 29


@dataclass
class BabResult:
    """Outcome of branch-and-bound.

    Attributes:
        proven: True when every domain was proven (the cases hold).
        reason: Why it stopped otherwise (``"timeout"``, ``"max_domains"``,
            ``"max_pool_mb"``, ``"unsplittable"``, ``"out_of_memory"``).
        stats: Domains visited, rounds, seconds, domains per second, depth.
    """

    proven: bool
    reason: str = ""
    stats: dict = field(default_factory=dict)


def run_bab(
    engine: Engine,
    box: Box,
    objective: Objective,
    bounds: Bounds,
    lower: Tensor,
    config: BabConfig,
    deadline: float | None = None,
    table: object | None = None,
) -> BabResult:
    """Branch and bound on the clauses that bounds alone did not refute.

    Args:
        engine: The bound engine.
        box: Input boxes of the cases, ``[C, *input_shape]``.
        objective: Rows of the cases, ``[C, K * R]``.
        bounds: Intermediate bounds of the cases (the roots), ``[C, *shape]``.
        lower: Valid lower bounds of the rows at the roots, ``[C, K * R]``.
        config: Branch-and-bound options.
        deadline: ``time.monotonic()`` value at which to give up.
        table: Branching-point lookup (``points(func, lower, upper)``) or None.
    """
    start = time.monotonic()
    problem, root = _setup(engine, box, objective, bounds, lower, config, table)
    stats = {"bab_items": int(problem.item_case.numel())}
    if len(root):
        root = bounding.optimize(problem, root, config.root_iterations, deadline)
    pool = DomainPool(root.take(~(root.margin > 0)))  # NaN counts as open
    loop = _Loop(problem, pool, deadline)
    reason = loop.run()
    seconds = time.monotonic() - start
    stats.update(loop.stats())
    stats["bab_seconds"] = seconds
    stats["bab_domains_per_second"] = loop.visited / seconds if seconds > 0 else 0.0
    proven = len(pool) == 0 and not reason
    _log_items(pool)
    logger.info(
        "BaB %s after %d domains in %.1f s (%.1f/s), %d rounds, %d open",
        "proved every item" if proven else f"stopped ({reason})",
        loop.visited,
        seconds,
        stats["bab_domains_per_second"],
        loop.rounds,
        len(pool),
    )
    return BabResult(proven, reason, stats)


def _log_items(pool: DomainPool) -> None:
    """Open domains and worst margin of every item still open (debug log)."""
    if not len(pool) or not logger.isEnabledFor(logging.DEBUG):
        return
    items, margins = pool.items(), pool.margins()
    for it in torch.unique(items).tolist():
        sel = items == it
        logger.debug(
            "item %d: %d open domains, worst margin %.4g",
            it,
            int(sel.sum()),
            float(margins[sel].min()),
        )


def _setup(engine, box, objective, bounds, lower, config, table):
    """The problem (one item per open clause) and the items' root domains."""
    C = box.batch
    K, R = objective.num_clauses, objective.rows_per_clause
    margins = objective.clause_margins(lower)  # [C, K]
    # Every clause not proven (NaN included) becomes an item.
    case, clause = torch.nonzero(~(margins > 0), as_tuple=True)
    coeffs = objective.coeffs.reshape(C, K, R, -1)[case, clause]
    rhs = objective.rhs.reshape(C, K, R)[case, clause]
    valid = torch.ones(case.numel(), 1, dtype=torch.bool, device=case.device)
    items = Objective(coeffs, rhs, valid, R)
    needed = set(engine.needs_bounds()) - {engine.graph.input_name}
    root_bounds = {
        k: (v[0][case], v[1][case]) for k, v in bounds.items() if k in needed
    }
    values = split_values(engine)
    problem = Problem(
        engine,
        case,
        box.lower,
        box.upper,
        items,
        root_bounds,
        values,
        value_offsets(engine, values),
        config,
        table,
    )
    if config.heuristic == "bbps" and values and case.numel():
        problem.shortcuts = _shortcuts(problem, box, bounds)
    n = case.numel()

    def items_of(n: int) -> Tensor:
        return torch.arange(n, device=case.device)

    item_lower = lower.reshape(C, K, R)[case, clause]
    root = Domains(
        torch.arange(n, device=case.device),
        item_lower,
        (item_lower - rhs).max(-1).values,
        torch.zeros(n, dtype=torch.long, device=case.device),
        dict(root_bounds),
        bounding.init_alpha(problem, problem.full_bounds(items_of(n), root_bounds), R)
        if n
        else {},
        bounding.zero_beta(problem, n, R) if config.beta else {},
    )
    return problem, root


def _shortcuts(problem: Problem, box: Box, bounds: Bounds) -> Shortcuts | None:
    """CROWN linear bounds of every split value in terms of the input, per case."""
    engine = problem.engine
    C = box.batch
    inputs = box.lower[0].numel()
    size = 2 * C * problem.num_neurons * inputs * 4
    if size > MAX_SHORTCUT_BYTES:
        logger.info("BBPS without shortcuts: they would take %d MB", size >> 20)
        return None
    forms: dict = {}
    full = {**bounds, engine.graph.input_name: (box.lower, box.upper)}
    with torch.no_grad():
        for v in problem.values:
            engine.crown_value(v.name, box, full, forms=forms)
    parts = [forms[v.name] for v in problem.values]
    f32 = torch.float32
    return Shortcuts(
        torch.cat([lo.coeffs.flatten(2) for lo, _ in parts], 1).to(f32),
        torch.cat([lo.bias for lo, _ in parts], 1).to(f32),
        torch.cat([up.coeffs.flatten(2) for _, up in parts], 1).to(f32),
        torch.cat([up.bias for _, up in parts], 1).to(f32),
    )


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` reports an allocation failure (CPU or accelerator)."""
    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


class _Loop:
    """The rounds of one run, with their counters and the adaptive batch size."""

    def __init__(self, problem: Problem, pool: DomainPool, deadline: float | None):
        self.problem = problem
        self.pool = pool
        self.deadline = deadline
        self.batch_size = max(1, problem.config.batch_size)
        self.visited = 0
        self.rounds = 0
        self.max_depth = 0
        self.oom_halvings = 0
        self.seconds_per_child: float | None = None
        self._last_log = time.monotonic()

    def stats(self) -> dict:
        return {
            "bab_domains": self.visited,
            "bab_rounds": self.rounds,
            "bab_max_depth": self.max_depth,
            "bab_open_domains": len(self.pool),
            "bab_worst_margin": self.pool.worst_margin(),
            "bab_batch_size": self.batch_size,
            "bab_oom_halvings": self.oom_halvings,
        }

    def run(self) -> str:
        """Rounds until the pool is empty or a limit is hit; the reason if not."""
        cfg = self.problem.config
        while len(self.pool):
            if self.visited >= cfg.max_domains:
                return "max_domains"
            if self.pool.nbytes() > cfg.max_pool_mb * 2**20:
                return "max_pool_mb"
            count = self._round_size()
            if count == 0:
                return "timeout"
            batch = self.pool.pop(count)
            t0 = time.monotonic()
            try:
                children, splittable = self._round(batch)
            except Exception as exc:  # noqa: BLE001  (only memory errors)
                if not is_out_of_memory(exc):
                    raise
                self.pool.push(batch)
                if count <= 1:
                    return "out_of_memory"
                self.batch_size = max(1, count // 2)
                self.oom_halvings += 1
                logger.warning("BaB out of memory: batch size now %d", self.batch_size)
                continue
            if not bool(splittable.all()):
                self.pool.push(batch)
                return "unsplittable"
            self._account(children, time.monotonic() - t0)
            self.pool.push(children.take(~(children.margin > 0)))
        return ""

    def _round_size(self) -> int:
        """Domains to split this round: the batch size, fewer near the deadline."""
        count = min(self.batch_size, len(self.pool))
        if self.deadline is None:
            return count
        left = self.deadline - time.monotonic()
        if left <= 0:
            return 0
        if self.seconds_per_child is not None:
            # Children per domain: 2 (more only when the pool is small).
            fit = int(0.8 * left / (2 * self.seconds_per_child))
            count = min(count, fit)
        return max(0, count)

    def _depth(self, count: int) -> int:
        cfg = self.problem.config
        levels = int(math.floor(math.log2(max(1.0, 2 * self.batch_size / count))))
        return max(1, min(cfg.max_split_depth, levels))

    def _round(self, batch: Domains) -> tuple[Domains, Tensor]:
        problem = self.problem
        if problem.config.filter_candidates > 0:
            choice = split.choose_filtered(problem, batch)
        else:
            choice = split.choose(problem, batch, self._depth(len(batch)))
        splittable = choice.valid[:, 0]
        if not bool(splittable.all()):
            return batch, splittable
        children = split.make_children(problem, batch, choice)
        if problem.config.recompute_intermediate:
            children = _recompute(problem, children)
        children = bounding.optimize(
            problem, children, problem.config.iterations, self.deadline
        )
        return children, splittable

    def _account(self, children: Domains, seconds: float) -> None:
        n = max(1, len(children))
        per = seconds / n
        if self.seconds_per_child is None:
            self.seconds_per_child = per
        else:
            self.seconds_per_child = 0.5 * self.seconds_per_child + 0.5 * per
        self.visited += len(children)
        self.rounds += 1
        self.max_depth = max(self.max_depth, int(children.depth.max()))
        now = time.monotonic()
        if now - self._last_log > 5.0:
            self._last_log = now
            logger.info(
                "BaB round %d: %d open domains, %d visited, worst margin %.4g",
                self.rounds,
                len(self.pool),
                self.visited,
                min(self.pool.worst_margin(), float(children.margin.min())),
            )


def _recompute(problem: Problem, children: Domains) -> Domains:
    """CROWN bounds of every value after the first split one, intersected with
    the inherited bounds."""
    engine = problem.engine
    first = problem.values[0].name if problem.values else None
    box = problem.box(children.item)
    with torch.no_grad():
        full = problem.full_bounds(children.item, children.bounds)
        new = engine.crown_bounds(box, known=full, start_after=first)
    children.bounds = {k: new[k] for k in children.bounds}
    return children
