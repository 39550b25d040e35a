"""Branch and bound over the input box, for models with few inputs.

Every property case starts as one domain: its input box. Each round takes up to
``batch_size`` domains from a pool, bounds them all in one batched pass (CROWN
with intermediate bounds recomputed per box, optionally a few alpha-CROWN steps),
drops the proven ones and puts both halves of every other box back, split along
one input dimension (or several, while the pool is small). The property holds
(``unsat``) when the pool runs empty.

Each round also evaluates the network, in float64, at the centre of every
unproven box and at the corner that minimises the CROWN linear form of its worst
row. A point whose output satisfies a clause is a candidate counterexample; the
caller replays it with onnxruntime before believing it.

Shapes: ``N`` domains in the pool, ``b`` domains in a round, ``n`` inputs
(flattened), ``S = K * R`` objective rows per case, ``K`` clauses.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from genbab.bounds import Box, Engine, Objective, build_objective, output_interval_lower
from genbab.bounds.alpha import optimize_bounds
from genbab.config import BoundsConfig
from genbab.errors import ConfigError
from genbab.model.graph import Graph
from genbab.spec import Case

logger = logging.getLogger(__name__)

METHODS = ("crown", "alpha-crown")
HEURISTICS = ("smart", "widest")


class StopEvent(Protocol):
    """Anything with ``is_set()``, such as :class:`threading.Event`."""

    def is_set(self) -> bool: ...  # noqa: D102


Validator = Callable[[int, np.ndarray], bool]
"""``validate(case, x)``: True when ``x`` (flat float64) really violates the case."""


@dataclass(frozen=True)
class InputSplitOptions:
    """Options of the input-splitting branch and bound.

    Attributes:
        batch_size: Domains bounded together in one pass.
        method: ``"crown"`` or ``"alpha-crown"`` (CROWN first, then
            ``alpha_iterations`` Adam steps on the domains CROWN left open).
        alpha_iterations: Steps of alpha-CROWN per round.
        alpha_lr: Its learning rate.
        heuristic: ``"smart"``: the dimension with the largest
            ``|coefficient| * width`` in the CROWN linear form of the worst row;
            ``"widest"``: the widest dimension.
        max_domains: Domains bounded in all before giving up (``unknown``).
        max_split_dims: Most dimensions split at once (``2**k`` children) while the
            pool holds fewer than ``batch_size`` domains.
        max_elements: Rough cap on the elements of the largest tensor of a round;
            the batch shrinks to respect it for wide models.
        margin: A clause counts as refuted when its lower bound exceeds its
            threshold by more than this (0 in float64; a small positive value
            guards float32 rounding).
        check_points: Evaluate the network at box centres and minimising corners
            to find candidate counterexamples.
    """

    batch_size: int = 1024
    method: str = "crown"
    alpha_iterations: int = 5
    alpha_lr: float = 0.1
    heuristic: str = "smart"
    max_domains: int = 5_000_000
    max_split_dims: int = 3
    max_elements: int = 1 << 25
    margin: float = 0.0
    check_points: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(
                f"input split: method must be one of {', '.join(METHODS)}, "
                f"got '{self.method}'"
            )
        if self.heuristic not in HEURISTICS:
            raise ConfigError(
                f"input split: heuristic must be one of {', '.join(HEURISTICS)}, "
                f"got '{self.heuristic}'"
            )
        for name in ("batch_size", "max_domains", "max_split_dims", "max_elements"):
            if getattr(self, name) < 1:
                raise ConfigError(f"input split: {name} must be at least 1")
        if self.margin < 0:
            raise ConfigError("input split: margin must be non-negative")


@dataclass
class InputSplitResult:
    """What the input-splitting branch and bound found.

    Attributes:
        verdict: ``"unsat"`` (every sub-box proven), ``"sat"`` (a point that
            ``validate`` confirmed), ``"candidate"`` (a point that violates a
            clause in the engine's float64 evaluation; no validator was given) or
            ``"unknown"`` (a limit was reached; see ``reason``).
        reason: Why the search stopped, in a few words.
        point: The (candidate) counterexample, flat ``[n]`` float64 inside its
            case's box, or None.
        case: Index of the case ``point`` violates.
        clause: Index of the clause it satisfies (engine evaluation).
        domains: Domains bounded.
        proven: Domains proven (the leaves of the search tree that closed).
        rounds: Batched passes.
        max_depth: Deepest domain bounded (number of halvings of its box).
        seconds: Wall-clock time.
        worst_margin: Smallest clause margin among the domains of the last round
            (negative: not refuted there), ``inf`` if nothing was bounded.
        root_margins: Worst clause margin of each domain of the first round (the
            whole case boxes, when they fit in one batch).
        pool_left: Domains still open when the search stopped.
        rejected: Candidate points the validator turned down.
    """

    verdict: str
    reason: str = ""
    point: np.ndarray | None = None
    case: int = -1
    clause: int = -1
    domains: int = 0
    proven: int = 0
    rounds: int = 0
    max_depth: int = 0
    seconds: float = 0.0
    worst_margin: float = math.inf
    root_margins: list[float] = field(default_factory=list)
    pool_left: int = 0
    rejected: int = 0

    @property
    def domains_per_second(self) -> float:
        """Throughput of the search."""
        return self.domains / self.seconds if self.seconds > 0 else 0.0

    def stats(self) -> dict[str, float | int | str]:
        """The numbers worth putting into a run's statistics."""
        return {
            "input_split_verdict": self.verdict,
            "input_split_reason": self.reason,
            "input_split_domains": self.domains,
            "input_split_rounds": self.rounds,
            "input_split_max_depth": self.max_depth,
            "input_split_seconds": self.seconds,
            "input_split_domains_per_second": self.domains_per_second,
            "input_split_worst_margin": self.worst_margin,
            "input_split_pool_left": self.pool_left,
        }


# ---------------------------------------------------------------------- the pool


class _Pool:
    """Open domains as stacked tensors, used as a stack (depth first).

    Depth-first order keeps the pool at most about ``batch * 2**k * depth``
    domains, whatever the size of the search tree.
    """

    def __init__(self, lower: Tensor, upper: Tensor, case: Tensor) -> None:
        self.lower = lower  # [N, n]
        self.upper = upper  # [N, n]
        self.case = case  # [N] long
        self.depth = torch.zeros_like(case)

    def __len__(self) -> int:
        return self.lower.shape[0]

    def pop(self, count: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Remove and return the last ``count`` domains."""
        cut = max(0, len(self) - count)
        out = (self.lower[cut:], self.upper[cut:], self.case[cut:], self.depth[cut:])
        self.lower, self.upper = self.lower[:cut], self.upper[:cut]
        self.case, self.depth = self.case[:cut], self.depth[:cut]
        return out

    def push(self, lower: Tensor, upper: Tensor, case: Tensor, depth: Tensor) -> None:
        """Add domains at the top of the stack."""
        self.lower = torch.cat([self.lower, lower])
        self.upper = torch.cat([self.upper, upper])
        self.case = torch.cat([self.case, case])
        self.depth = torch.cat([self.depth, depth])


# ---------------------------------------------------------------------- search


@dataclass
class _Search:
    """Everything one search needs that does not change between rounds."""

    engine: Engine
    objective: Objective  # one row set per case, [C, S]
    case_lower: Tensor  # [C, n] float64, the cases' exact boxes
    case_upper: Tensor
    options: InputSplitOptions
    deadline: float | None
    eval_graph: Graph  # the model in float64, for point checks

    @property
    def shape(self) -> tuple[int, ...]:
        return self.engine.graph.input_shape


def input_split_bab(
    engine: Engine,
    cases: Sequence[Case],
    options: InputSplitOptions | None = None,
    *,
    deadline: float | None = None,
    stop_event: StopEvent | None = None,
    validate: Validator | None = None,
) -> InputSplitResult:
    """Prove the cases by splitting their input boxes, or find a candidate.

    Args:
        engine: Bound engine of the model (its dtype is used for bounding; points
            are checked in float64).
        cases: Property cases, each with a box ``[n]`` and clauses over the
            flattened output.
        options: Search options; defaults when None.
        deadline: ``time.monotonic()`` value; the search returns ``unknown`` soon
            after it (the batch shrinks so that a round fits the time left).
        stop_event: Checked between rounds; when set the search stops.
        validate: Called with ``(case, x)`` on a candidate point; True makes the
            verdict ``sat``, False continues the search. Without it the first
            candidate ends the search with verdict ``candidate``.

    Returns:
        The verdict and the statistics of the search.
    """
    options = options or InputSplitOptions()
    start = time.monotonic()
    search = _prepare(engine, list(cases), options, deadline)
    pool = _Pool(*_root_boxes(search), torch.arange(len(cases), device=engine.device))
    result = InputSplitResult("unknown")
    per_domain = None  # seconds per domain, measured
    limit = _batch_limit(engine, options)
    seen_points: set[bytes] = set()
    while len(pool):
        reason = _stop_reason(result, options, deadline, stop_event)
        if reason:
            result.reason = reason
            break
        batch = _affordable_batch(limit, per_domain, deadline)
        t0 = time.monotonic()
        lower, upper, case, depth = pool.pop(batch)
        stuck = False
        try:
            found = _round(search, pool, result, lower, upper, case, depth, len(pool))
        except _Stuck as exc:
            found, stuck = exc.found, True
        per_domain = (time.monotonic() - t0) / lower.shape[0]
        if found is not None and _accept(found, validate, seen_points, result):
            break
        if stuck:
            break
    else:
        result.verdict, result.reason = "unsat", "every sub-box proven"
    result.pool_left = len(pool)
    result.seconds = time.monotonic() - start
    logger.info(
        "input split: %s (%s) after %d domains in %.2f s (%.0f/s), depth %d",
        result.verdict,
        result.reason,
        result.domains,
        result.seconds,
        result.domains_per_second,
        result.max_depth,
    )
    return result


def _accept(
    found: tuple[int, np.ndarray, int],
    validate: Validator | None,
    seen: set[bytes],
    result: InputSplitResult,
) -> bool:
    """Record a candidate point; True when it ends the search."""
    if validate is None:
        result.verdict, result.reason = "candidate", "point violates a clause"
        result.case, result.point, result.clause = found
        return True
    key = found[1].tobytes()
    if key in seen:
        return False
    seen.add(key)
    if validate(found[0], found[1]):
        result.verdict, result.reason = "sat", "validated counterexample"
        result.case, result.point, result.clause = found
        return True
    result.rejected += 1
    return False


def _prepare(
    engine: Engine,
    cases: list[Case],
    options: InputSplitOptions,
    deadline: float | None,
) -> _Search:
    if not cases:
        raise ValueError("input_split_bab needs at least one case")
    device = engine.device
    lower = torch.as_tensor(np.stack([c.lower for c in cases]), device=device)
    upper = torch.as_tensor(np.stack([c.upper for c in cases]), device=device)
    objective = build_objective(cases, engine.dtype, device)
    if engine.dtype == torch.float64:
        eval_graph = engine.graph
    else:
        eval_graph = engine.graph.to(device, torch.float64)
    return _Search(engine, objective, lower, upper, options, deadline, eval_graph)


def _root_boxes(search: _Search) -> tuple[Tensor, Tensor]:
    """The cases' boxes in the engine dtype, rounded outwards (never smaller)."""
    dtype = search.engine.dtype
    lower, upper = search.case_lower.to(dtype), search.case_upper.to(dtype)
    if dtype != torch.float64:
        inf = torch.full_like(lower, math.inf)
        low = lower.double() > search.case_lower
        high = upper.double() < search.case_upper
        lower = torch.where(low, torch.nextafter(lower, -inf), lower)
        upper = torch.where(high, torch.nextafter(upper, inf), upper)
    return lower, upper


def _batch_limit(engine: Engine, options: InputSplitOptions) -> int:
    """``batch_size``, lowered so a CROWN pass stays under ``max_elements``."""
    widths = [
        math.prod(engine.shape(name))
        for name in engine.needs_bounds()
        if name != engine.graph.input_name
    ]
    widest = max(widths, default=1)
    per_domain = 2 * widest * widest
    return max(1, min(options.batch_size, options.max_elements // per_domain))


def _affordable_batch(limit: int, per_domain: float | None, deadline: float | None):
    """A batch that should finish before the deadline at the measured pace."""
    if deadline is None or per_domain is None:
        return limit
    left = deadline - time.monotonic()
    return max(1, min(limit, int(left / max(per_domain, 1e-9))))


def _stop_reason(
    result: InputSplitResult,
    options: InputSplitOptions,
    deadline: float | None,
    stop_event: StopEvent | None,
) -> str:
    if deadline is not None and time.monotonic() > deadline:
        return "time limit"
    if stop_event is not None and stop_event.is_set():
        return "stopped"
    if result.domains >= options.max_domains:
        return "domain limit"
    return ""


def _round(
    search: _Search,
    pool: _Pool,
    result: InputSplitResult,
    lower: Tensor,
    upper: Tensor,
    case: Tensor,
    depth: Tensor,
    waiting: int,
) -> tuple[int, np.ndarray, int] | None:
    """Bound one batch, split what stays open; return a candidate if one is seen.

    Args:
        lower, upper: ``[b, n]`` boxes popped from the pool.
        case: ``[b]`` their case indices.
        depth: ``[b]`` their depths.
        waiting: Domains left in the pool.
    """
    b = lower.shape[0]
    objective = search.objective.select(case)
    rows, form = _bound_rows(search, lower, upper, objective)
    margins = objective.clause_margins(rows)  # [b, K]
    if result.rounds == 0:
        result.root_margins = margins.min(-1).values.tolist()
    open_ = ~(margins > search.options.margin).all(-1)
    result.rounds += 1
    result.domains += b
    result.proven += int(b - open_.sum())
    result.max_depth = max(result.max_depth, int(depth.max()))
    result.worst_margin = float(margins.min())
    if not open_.any():
        return None

    # Keep only the open domains; pick the row each is furthest from refuting.
    lower, upper, case, depth = lower[open_], upper[open_], case[open_], depth[open_]
    margins, rows, form = margins[open_], rows[open_], form[open_]
    row = _worst_row(objective.select(open_.nonzero().squeeze(1)), margins, rows)
    coeffs = form[torch.arange(row.shape[0]), row]  # [u, n]
    found = None
    if search.options.check_points:
        found = _check_points(search, lower, upper, case, coeffs)

    # Split along the dims that the heuristic ranks first.
    width = upper - lower
    score = width if search.options.heuristic == "widest" else coeffs.abs() * width
    score = torch.where(width > 0, score + width * 1e-12, torch.zeros_like(score))
    k = _num_split_dims(search, lower.shape[0], waiting, lower.shape[1])
    dims = score.topk(k, dim=1).indices  # [u, k]
    splittable = torch.gather(width, 1, dims) > 0
    if not splittable[:, 0].all():
        # A point box that cannot be proven: splitting cannot help.
        result.reason = "an unprovable box cannot be split"
        stuck = ~splittable[:, 0]
        pool.push(lower[stuck], upper[stuck], case[stuck], depth[stuck])
        raise _Stuck(found)
    children = _split(lower, upper, dims, splittable)
    count = children[0].shape[0] // lower.shape[0]
    pool.push(
        *children,
        case.repeat_interleave(count),
        (depth + 1).repeat_interleave(count),
    )
    return found


class _Stuck(Exception):
    """Raised inside a round when a box cannot be split further; carries the
    round's candidate point, if any."""

    def __init__(self, found: tuple[int, np.ndarray, int] | None) -> None:
        super().__init__("an unprovable box cannot be split")
        self.found = found


def _bound_rows(
    search: _Search, lower: Tensor, upper: Tensor, objective: Objective
) -> tuple[Tensor, Tensor]:
    """Lower bounds of the rows and the CROWN coefficients on the input.

    Returns:
        ``[b, S]`` lower bounds and ``[b, S, n]`` CROWN input coefficients.
    """
    engine = search.engine
    b = lower.shape[0]
    box = Box(lower.reshape(b, *search.shape), upper.reshape(b, *search.shape))
    out = engine.graph.output_name
    with torch.no_grad():
        bounds = engine.crown_bounds(box, deadline=search.deadline)
        interval = output_interval_lower(objective.coeffs, *bounds[out])
        coeffs = objective.coeffs.reshape(b, -1, *engine.graph.output_shape)
        form = engine.backward(out, coeffs, bounds)
        rows = torch.maximum(interval, box.concretize(form.coeffs, form.bias))
    if search.options.method == "alpha-crown":
        rows = _alpha_rows(search, box, bounds, objective, rows)
    return rows, form.coeffs.flatten(2)


def _alpha_rows(
    search: _Search, box: Box, bounds, objective: Objective, rows: Tensor
) -> Tensor:
    """Tighten the rows of the domains CROWN left open with alpha-CROWN."""
    open_ = ~objective.proven(rows - search.options.margin)
    if not open_.any():
        return rows
    index = open_.nonzero().squeeze(1)
    sub_box = Box(box.lower[index], box.upper[index])
    sub_bounds = {k: (lo[index], hi[index]) for k, (lo, hi) in bounds.items()}
    config = BoundsConfig(
        method="alpha-crown",
        alpha_iterations=search.options.alpha_iterations,
        alpha_lr=search.options.alpha_lr,
    )
    best, _ = optimize_bounds(
        search.engine,
        sub_box,
        sub_bounds,
        objective.select(index),
        config,
        search.deadline,
        start_lower=rows[index],
    )
    rows = rows.clone()
    rows[index] = torch.maximum(rows[index], best)
    return rows


def _worst_row(objective: Objective, margins: Tensor, rows: Tensor) -> Tensor:
    """Per domain, the best row of its least refuted clause, ``[u]`` in ``[0, S)``."""
    u = rows.shape[0]
    clause = margins.argmin(-1)  # [u]
    per_row = (rows - objective.rhs).reshape(u, objective.num_clauses, -1)
    best = per_row[torch.arange(u), clause].argmax(-1)
    return clause * objective.rows_per_clause + best


def _num_split_dims(search: _Search, open_count: int, waiting: int, n: int) -> int:
    """``k`` with ``open_count * 2**k + waiting`` near the batch size, at least 1."""
    room = search.options.batch_size - waiting
    k = 1
    while (
        k < min(search.options.max_split_dims, n) and open_count * 2 ** (k + 1) <= room
    ):
        k += 1
    return k


def _split(
    lower: Tensor, upper: Tensor, dims: Tensor, splittable: Tensor
) -> tuple[Tensor, Tensor]:
    """Halve every box along each of its ``dims`` (``2**k`` children per box).

    A dimension that is not ``splittable`` (zero width) is left whole; its two
    "halves" are then the same box, which is harmless but wasteful, so callers
    only pass it for the second and later dims.

    Args:
        lower, upper: ``[u, n]``.
        dims: ``[u, k]`` dimensions to split.
        splittable: ``[u, k]`` False where the dimension has zero width.

    Returns:
        Children lower and upper, ``[u * 2**k, n]``, those of box ``i`` at rows
        ``i * 2**k`` to ``(i + 1) * 2**k - 1``.
    """
    u, n = lower.shape
    k = dims.shape[1]
    count = 2**k
    lo = lower.unsqueeze(1).repeat(1, count, 1)  # [u, count, n]
    hi = upper.unsqueeze(1).repeat(1, count, 1)
    pattern = torch.arange(count, device=lower.device)
    for i in range(k):
        d = dims[:, i : i + 1]  # [u, 1]
        mid = (torch.gather(lower, 1, d) + torch.gather(upper, 1, d)) / 2  # [u, 1]
        upper_half = ((pattern >> i) & 1).bool().unsqueeze(0)  # [1, count]
        take = splittable[:, i : i + 1]  # [u, 1]
        index = d.unsqueeze(1).expand(u, count, 1)
        old_lo = torch.gather(lo, 2, index).squeeze(2)  # [u, count]
        old_hi = torch.gather(hi, 2, index).squeeze(2)
        new_lo = torch.where(upper_half & take, mid, old_lo)
        new_hi = torch.where(~upper_half & take, mid, old_hi)
        lo.scatter_(2, index, new_lo.unsqueeze(2))
        hi.scatter_(2, index, new_hi.unsqueeze(2))
    return lo.reshape(u * count, n), hi.reshape(u * count, n)


def _check_points(
    search: _Search, lower: Tensor, upper: Tensor, case: Tensor, coeffs: Tensor
) -> tuple[int, np.ndarray, int] | None:
    """Evaluate centres and minimising corners; return the most violating point.

    Args:
        lower, upper: ``[u, n]`` open boxes (engine dtype).
        case: ``[u]``.
        coeffs: ``[u, n]`` CROWN coefficients of each box's worst row; the corner
            minimising them is the most promising point of the linear form.

    Returns:
        ``(case, x, clause)`` with ``x`` flat float64 inside the case's box, or
        None when no point satisfies a clause.
    """
    lo, hi = lower.double(), upper.double()
    centre = (lo + hi) / 2
    corner = torch.where(coeffs > 0, lo, hi)
    points = torch.cat([centre, corner])  # [2u, n]
    cases = torch.cat([case, case])
    points = torch.maximum(points, search.case_lower[cases])
    points = torch.minimum(points, search.case_upper[cases])
    graph = search.eval_graph
    with torch.no_grad():
        y = graph.forward(points.reshape(-1, *search.shape)).flatten(1)  # [2u, m]
    objective = search.objective
    coef = objective.coeffs[cases].double()  # [2u, S, m]
    value = torch.einsum("psm,pm->ps", coef, y) - objective.rhs[cases].double()
    value = value.reshape(len(cases), objective.num_clauses, -1)
    violation = value.max(-1).values  # [2u, K]; <= 0: the clause holds
    violation = torch.where(
        objective.clause_valid[cases], violation, torch.full_like(violation, math.inf)
    )
    worst, clause = violation.min(-1)
    best = int(worst.argmin())
    if not worst[best] <= 0:
        return None
    point = points[best].cpu().numpy().copy()
    return int(cases[best]), point, int(clause[best])
