"""Bounds on a graph's values over input boxes: interval, CROWN and alpha-CROWN.

:func:`bound_objective` is the entry point used by verification: it returns lower
bounds of a property's rows with the method chosen in the config.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor

from genbab.bounds.alpha import optimize_bounds, optimize_intermediate
from genbab.bounds.box import Bounds, Box
from genbab.bounds.engine import Engine
from genbab.bounds.objective import Objective, build_objective
from genbab.config import BoundsConfig


def output_interval_lower(coeffs: Tensor, lower: Tensor, upper: Tensor) -> Tensor:
    """Lower bound of ``coeffs . y`` given an interval of the flattened ``y``.

    Args:
        coeffs: ``[B, S, n]``.
        lower: ``[B, *output_shape]``.
        upper: ``[B, *output_shape]``.

    Returns:
        ``[B, S]``.
    """
    lo = lower.flatten(1).unsqueeze(1)
    hi = upper.flatten(1).unsqueeze(1)
    return (coeffs.clamp(min=0) * lo + coeffs.clamp(max=0) * hi).sum(-1)


def bound_objective(
    engine: Engine,
    box: Box,
    objective: Objective,
    config: BoundsConfig,
    method: str | None = None,
    deadline: float | None = None,
) -> tuple[Tensor, Bounds]:
    """Lower bounds of the objective's rows over the boxes.

    Args:
        engine: Bound engine of the graph.
        box: Input boxes ``[B, *input_shape]``.
        objective: Rows ``[B, S]``.
        config: Bound options; ``config.method`` unless ``method`` is given.
        method: ``"interval"``, ``"crown"`` or ``"alpha-crown"``.
        deadline: ``time.monotonic()`` value; alpha-CROWN stops early after it.

    Returns:
        Lower bounds ``[B, S]`` and the intermediate bounds used.
    """
    method = method or config.method
    with torch.no_grad():
        if method == "interval" or config.intermediate == "interval":
            bounds = engine.interval(box)
        else:
            bounds = engine.crown_bounds(box, deadline=deadline)
        out = engine.graph.output_name
        lower = output_interval_lower(objective.coeffs, *bounds[out])
        if method == "interval":
            return lower, bounds
        crown = engine.objective_lower(objective.coeffs, box, bounds)
        lower = torch.maximum(lower, crown)
    if method == "crown" or objective.proven(lower).all():
        return lower, bounds
    if deadline is not None and time.monotonic() > deadline:
        return lower, bounds
    best, _ = optimize_bounds(
        engine, box, bounds, objective, config, deadline, start_lower=lower
    )
    if config.intermediate != "alpha-crown" or objective.proven(best).all():
        return best, bounds
    if deadline is not None and time.monotonic() > deadline:
        return best, bounds
    # Tighter intermediate bounds, then alpha-CROWN on the output again.
    bounds = optimize_intermediate(
        engine,
        box,
        bounds,
        config.intermediate_iterations,
        config.intermediate_lr,
        deadline,
        lr_decay=config.intermediate_lr_decay,
    )
    with torch.no_grad():
        crown = engine.objective_lower(objective.coeffs, box, bounds)
    best = torch.maximum(best, crown)
    if objective.proven(best).all():
        return best, bounds
    if deadline is not None and time.monotonic() > deadline:
        return best, bounds
    again, _ = optimize_bounds(
        engine, box, bounds, objective, config, deadline, start_lower=best
    )
    return again, bounds


__all__ = [
    "Box",
    "Engine",
    "Objective",
    "bound_objective",
    "build_objective",
    "output_interval_lower",
]
