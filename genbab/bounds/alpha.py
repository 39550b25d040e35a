"""alpha-CROWN: optimize the relaxations' parameters to tighten output bounds.

Each nonlinear node gets its own parameters per domain and per objective row
(``[P, B, S, *shape]``), since the best relaxation depends on what is bounded.
Intermediate bounds stay fixed; plain Adam steps move the parameters and the
relaxations clamp them into their valid ranges, so every iterate is sound and the
best bound seen per row is kept.
"""

from __future__ import annotations

import logging
import time

import torch
from torch import Tensor

from genbab.bounds.box import Bounds, Box
from genbab.bounds.engine import Engine, Params
from genbab.bounds.objective import Objective
from genbab.bounds.rules import rule_for
from genbab.config import BoundsConfig

logger = logging.getLogger(__name__)


def init_params(engine: Engine, bounds: Bounds, num_specs: int) -> Params:
    """Parameters that reproduce the default relaxations, one set per spec.

    Returns:
        Node name -> leaf tensor ``[P, B, S, *shape]`` requiring grad.
    """
    params: Params = {}
    for node in engine.graph.nodes:
        if node.op.linear:
            continue
        p = rule_for(node).init_params(node, [bounds[i] for i in node.inputs])
        if p is None:
            continue
        p = p.unsqueeze(2).expand(p.shape[0], p.shape[1], num_specs, *p.shape[2:])
        params[node.name] = p.detach().clone().requires_grad_(True)
    return params


def optimize_bounds(
    engine: Engine,
    box: Box,
    bounds: Bounds,
    objective: Objective,
    config: BoundsConfig,
    deadline: float | None = None,
    start_lower: Tensor | None = None,
) -> tuple[Tensor, Params]:
    """Run alpha-CROWN on the objective's rows.

    Args:
        engine: The bound engine of the graph.
        box: Input boxes ``[B, *input_shape]``.
        bounds: Intermediate bounds (fixed during the optimization).
        objective: The rows to bound, ``[B, S]``.
        config: Iterations, learning rate, decay, early-stopping patience.
        deadline: ``time.monotonic()`` value after which to stop.
        start_lower: Known valid lower bounds of the rows ``[B, S]`` (e.g. CROWN's),
            kept where better.

    Returns:
        The best lower bound of every row ``[B, S]``, and the final parameters.
    """
    S = objective.coeffs.shape[1]
    params = init_params(engine, bounds, S)
    best = start_lower.detach().clone() if start_lower is not None else None
    if not params:
        return best if best is not None else _bound(
            engine, box, bounds, objective, params
        ), params
    opt = torch.optim.Adam(list(params.values()), lr=config.alpha_lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, config.alpha_lr_decay)
    stale, best_loss = 0, float("inf")
    for it in range(config.alpha_iterations):
        lower = _bound(engine, box, bounds, objective, params)
        best = lower.detach() if best is None else torch.maximum(best, lower.detach())
        if objective.proven(best).all():
            logger.debug("alpha-CROWN proved every case at iteration %d", it)
            break
        margins = objective.clause_margins(lower)
        loss = -margins.clamp(max=0).sum()
        if loss.item() < best_loss - 1e-6 * (1 + abs(best_loss)):
            best_loss, stale = loss.item(), 0
        else:
            stale += 1
            if stale >= config.early_stop_patience:
                break
        if deadline is not None and time.monotonic() > deadline:
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    assert best is not None
    return best, {k: v.detach() for k, v in params.items()}


def _bound(
    engine: Engine, box: Box, bounds: Bounds, objective: Objective, params: Params
) -> Tensor:
    return engine.objective_lower(objective.coeffs, box, bounds, params)


def optimize_intermediate(
    engine: Engine,
    box: Box,
    bounds: Bounds,
    iterations: int,
    lr: float,
    deadline: float | None = None,
    max_rows: int = 2048,
    lr_decay: float = 1.0,
) -> Bounds:
    """Tighten the bounds of every value a relaxation needs, by alpha-CROWN.

    Values are taken in topological order. For each, the lower and upper bound
    of every neuron is a row of its own, with its own parameters for every
    nonlinear node before it; the rows are optimized together (their losses are
    independent) with the bounds of earlier values fixed at their tightened
    values, and the best bound of each row over the iterations is intersected
    with the known one. The first iterate is CROWN itself, so the result is
    never looser than CROWN on the same earlier bounds. Past ``deadline`` the
    remaining values keep the bounds they have.

    Args:
        engine: The bound engine.
        box: Input boxes ``[B, *input_shape]``.
        bounds: Valid bounds of every value (e.g. CROWN's), ``[B, *shape]``.
        iterations: Adam steps per value.
        lr: Adam's learning rate.
        deadline: ``time.monotonic()`` value after which to stop.
        max_rows: Largest number of rows optimized together (more are chunked).
        lr_decay: Factor of the learning rate after each step.

    Returns:
        The tightened bounds (a new dict; ``bounds`` is not modified).
    """
    out = dict(bounds)
    order = {n.name: i for i, n in enumerate(engine.graph.nodes)}
    for name in engine.needs_bounds():
        if name == engine.graph.input_name:
            continue
        before = [
            n
            for n in engine.graph.nodes[: order[name]]
            if not n.op.linear and rule_for(n).init_params(n, _ins(n, out)) is not None
        ]
        if not before:
            continue
        if deadline is not None and time.monotonic() > deadline:
            break
        lo, hi = _optimize_value(engine, box, out, name, before, iterations, lr,
                                 deadline, max_rows, lr_decay)  # fmt: skip
        olo, ohi = out[name]
        out[name] = (torch.maximum(lo, olo), torch.minimum(hi, ohi))
        out = engine.interval(box, out)
    return out


def _ins(node, bounds: Bounds) -> list:
    return [bounds[i] for i in node.inputs]


def _optimize_value(
    engine: Engine,
    box: Box,
    bounds: Bounds,
    name: str,
    before: list,
    iterations: int,
    lr: float,
    deadline: float | None,
    max_rows: int,
    lr_decay: float,
) -> tuple[Tensor, Tensor]:
    """Best lower and upper bounds of value ``name`` over the iterations."""
    shape = engine.shape(name)
    n = 1
    for d in shape:
        n *= d
    B = box.batch
    dtype, device = box.lower.dtype, box.lower.device
    best = torch.empty(B, 2 * n, dtype=dtype, device=device)
    for start in range(0, 2 * n, max_rows):
        rows = torch.arange(start, min(2 * n, start + max_rows), device=device)
        sign = torch.where(rows < n, 1.0, -1.0).to(dtype)
        eye = torch.zeros(rows.numel(), n, dtype=dtype, device=device)
        eye[torch.arange(rows.numel(), device=device), rows % n] = sign
        coeffs = eye.reshape(1, rows.numel(), *shape).expand(B, -1, *shape)
        params: Params = {}
        for node in before:
            p = rule_for(node).init_params(node, _ins(node, bounds))
            p = p.unsqueeze(2).expand(
                p.shape[0], p.shape[1], rows.numel(), *p.shape[2:]
            )
            params[node.name] = p.detach().clone().requires_grad_(True)
        best[:, rows] = _optimize_rows(
            engine, box, bounds, name, coeffs, params, iterations, lr, lr_decay,
            deadline,
        )  # fmt: skip
    lower = best[:, :n].reshape(B, *shape)
    upper = -best[:, n:].reshape(B, *shape)
    return lower, upper


def _optimize_rows(
    engine: Engine,
    box: Box,
    bounds: Bounds,
    name: str,
    coeffs: Tensor,
    params: Params,
    iterations: int,
    lr: float,
    lr_decay: float,
    deadline: float | None,
) -> Tensor:
    """Adam on independent rows ``coeffs`` ``[B, S, *shape]``, each with its own
    parameters (dim 2 of every tensor of ``params``).

    (Freezing rows whose best bound stalls for a few steps was tried: it halves
    the time but loses much of the gain, since rows often improve again later.)

    Returns:
        The best bound of every row ``[B, S]``.
    """
    opt = torch.optim.Adam(list(params.values()), lr=lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, lr_decay)
    best: Tensor | None = None
    for step in range(max(1, iterations)):
        form = engine.backward(name, coeffs, bounds, params)
        value = box.concretize(form.coeffs, form.bias)  # [B, rows]
        v = value.detach()
        best = v if best is None else torch.maximum(best, v)
        if step == iterations - 1 or (
            deadline is not None and time.monotonic() > deadline
        ):
            break
        opt.zero_grad(set_to_none=True)
        (-value.sum()).backward()
        opt.step()
        sched.step()
    assert best is not None
    return best
