"""Projected gradient descent on a property's violation margin.

For one case, the margin of a clause is ``max_r (matrix[r] @ y - rhs[r])``: it is
``<= 0`` exactly when the output ``y`` satisfies every row of that clause. The
margin of a case is the minimum over its clauses, so a point with a case margin
``<= 0`` is a counterexample. :func:`pgd_attack` minimises this margin from many
starting points at once (every case times every restart, batched into
``graph.forward`` calls of at most ``batch_size`` samples) with signed gradient
steps that shrink over time, clamping to the case's box after each step.
Candidates with margin ``<= 0`` are replayed (by default with onnxruntime on the
original ONNX file) before one is returned.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from genbab.attack.check import OnnxRuntimeModel, validate_point
from genbab.config import AttackConfig
from genbab.model.graph import Graph
from genbab.result import Counterexample
from genbab.spec.property import Property

logger = logging.getLogger(__name__)

# Candidates replayed per step at most (the ones with the lowest margin).
_CHECKS_PER_STEP = 4
# The step size shrinks geometrically to this fraction of its start.
_FINAL_STEP_FRACTION = 0.02
# Random draws screened (by loss, no gradients) for each starting point.
_SCREEN_DRAWS = 64
# Properties with at most this many clause rows (all cases) evaluate them all.
_FLAT_ROWS = 1 << 14

Validator = Callable[[np.ndarray, int], Counterexample | None]


@dataclass
class _SpecTensors:
    """A property's cases as padded tensors.

    Attributes:
        lower, upper: Boxes, [C, num_inputs].
        matrix: Clause rows, [C, K, R, num_outputs] (K clauses of R rows at most).
        rhs: Right-hand sides, [C, K, R].
        row_pad: True for padding rows, [C, K, R].
        clause_pad: True for padding clauses, [C, K].
    """

    lower: Tensor
    upper: Tensor
    matrix: Tensor
    rhs: Tensor
    row_pad: Tensor
    clause_pad: Tensor

    @classmethod
    def build(cls, prop: Property, device: torch.device | str, dtype: torch.dtype):
        cases = prop.cases
        n_out = prop.num_outputs
        num_k = max(1, max(len(c.clauses) for c in cases))
        num_r = max(
            [1] + [len(np.atleast_1d(cl.rhs)) for c in cases for cl in c.clauses]
        )
        matrix = np.zeros((len(cases), num_k, num_r, n_out))
        rhs = np.zeros((len(cases), num_k, num_r))
        row_pad = np.ones((len(cases), num_k, num_r), dtype=bool)
        clause_pad = np.ones((len(cases), num_k), dtype=bool)
        for i, case in enumerate(cases):
            for j, clause in enumerate(case.clauses):
                rows = np.asarray(clause.matrix, dtype=np.float64).reshape(-1, n_out)
                matrix[i, j, : len(rows)] = rows
                rhs[i, j, : len(rows)] = np.asarray(clause.rhs).reshape(-1)
                row_pad[i, j, : len(rows)] = False
                clause_pad[i, j] = False

        def tensor(a: np.ndarray) -> Tensor:
            return torch.as_tensor(a, device=device)

        lower = np.stack([np.asarray(c.lower, dtype=np.float64) for c in cases])
        upper = np.stack([np.asarray(c.upper, dtype=np.float64) for c in cases])
        return cls(
            lower=tensor(lower).to(dtype),
            upper=tensor(upper).to(dtype),
            matrix=tensor(matrix).to(dtype),
            rhs=tensor(rhs).to(dtype),
            row_pad=tensor(row_pad),
            clause_pad=tensor(clause_pad),
        )

    def margin(self, y: Tensor, case: Tensor) -> tuple[Tensor, Tensor]:
        """Violation margin and loss of outputs ``y`` [S, num_outputs], cases [S].

        The loss of a clause is the sum of its rows' positive parts (every
        violated row pulls), or its (negative) margin once all rows hold, so that
        descent keeps moving deeper inside; a case takes its smallest clause loss.

        Returns:
            The margin [S] (``<= 0`` where ``y`` satisfies some clause of its case)
            and the loss [S] to minimise.
        """
        C, K, R, O = self.matrix.shape
        if C * K * R <= _FLAT_ROWS:
            # Every case's rows at once, then each sample's case: no per-sample
            # copy of the (possibly large) clause matrices.
            flat = y @ self.matrix.reshape(C * K * R, O).T
            rows = flat.reshape(-1, C, K, R)[torch.arange(y.shape[0]), case]
        else:
            rows = torch.einsum("skro,so->skr", self.matrix[case], y)
        rows = rows - self.rhs[case]
        rows = rows.masked_fill(self.row_pad[case], -math.inf)
        clauses = rows.amax(dim=2).masked_fill(self.clause_pad[case], math.inf)
        loss = torch.relu(rows).sum(dim=2) + clauses.clamp(max=0)
        loss = loss.masked_fill(self.clause_pad[case], math.inf)
        return clauses.amin(dim=1), loss.amin(dim=1)


def pgd_attack(
    graph: Graph,
    prop: Property,
    config: AttackConfig,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    deadline: float | None = None,
) -> Counterexample | None:
    """Search for a counterexample to ``prop`` by projected gradient descent.

    Every case gets ``config.restarts`` starting points: its box center, then
    random corners, edge-heavy points and uniform points, each the lowest-loss of
    ``_SCREEN_DRAWS`` random draws (forward passes only). All (case,
    restart) pairs run together in batches of ``config.batch_size``; each runs
    ``config.steps`` signed gradient steps of ``step_size * half_width``, shrinking
    geometrically, clamped to the box after every step. Points whose margin is
    ``<= 0`` are replayed (with onnxruntime on ``graph.source`` when
    ``config.check_onnxruntime``, else with ``graph`` in float64) and the first
    one that passes is returned.

    Args:
        graph: The model; ``graph.source`` names its ONNX file.
        prop: The property (``cases``, ``num_inputs``, ``num_outputs``).
        config: Attack options.
        device: Where the search runs.
        dtype: Precision of the search (candidates are replayed exactly anyway).
        seed: Seed of the random starting points.
        deadline: A ``time.monotonic()`` value; the search stops (returning None)
            once it is past, checked between steps.

    Returns:
        A checked counterexample, or None when none was found.
    """
    if not config.enabled or not prop.cases:
        return None
    if prop.num_inputs != graph.num_inputs or prop.num_outputs != graph.num_outputs:
        raise ValueError(
            f"property has {prop.num_inputs} inputs and {prop.num_outputs} outputs,"
            f" the model {graph.num_inputs} and {graph.num_outputs}"
        )
    started = time.monotonic()
    spec = _SpecTensors.build(prop, device, dtype)
    model = graph.to(device, dtype)
    validate = make_validator(graph, prop, config)
    generator = torch.Generator(device=device).manual_seed(seed)

    num_cases = len(prop.cases)
    total = max(1, config.restarts) * num_cases
    batch = max(1, config.batch_size)
    for start in range(0, total, batch):
        if deadline is not None and time.monotonic() > deadline:
            logger.info("PGD stopped at its deadline")
            return None
        # Restart-major order: the first batch covers every case's center first.
        slots = torch.arange(start, min(start + batch, total), device=device)
        case = slots % num_cases
        starts = _screened_starts(
            model, spec, case, slots // num_cases, generator, batch, deadline
        )
        cex = _descend(model, spec, case, starts, config, validate, deadline)
        if cex is not None:
            logger.info(
                "PGD found a counterexample in %.2f s", time.monotonic() - started
            )
            return cex
    logger.info("PGD found no counterexample in %.2f s", time.monotonic() - started)
    return None


def _screened_starts(
    model: Graph,
    spec: _SpecTensors,
    case: Tensor,
    restart: Tensor,
    generator: torch.Generator,
    batch_size: int,
    deadline: float | None,
) -> Tensor:
    """Starting points [S, n] for cases [S], each the best of ``_SCREEN_DRAWS``.

    Every slot draws candidates of its kind and keeps the one with the lowest
    loss. Draws are evaluated without gradients, as many slots' draws per
    forward call as ``batch_size`` allows (so memory stays at one batch).
    Restart 0 stays at the box center. Screening ends early past ``deadline``.
    """
    lower, upper = spec.lower[case], spec.upper[case]
    best = _starting_points(lower, upper, restart, generator)
    best_loss = _loss_no_grad(model, spec, case, best)
    per_call = max(1, batch_size // len(case))  # draws stacked into one call
    done = 1
    while done < _SCREEN_DRAWS:
        if deadline is not None and time.monotonic() > deadline:
            break
        group = min(per_call, _SCREEN_DRAWS - done)
        x = torch.stack(
            [_starting_points(lower, upper, restart, generator) for _ in range(group)]
        )  # [group, S, n]
        loss = _loss_no_grad(model, spec, case.repeat(group), x.flatten(0, 1))
        loss, pick = loss.reshape(group, -1).min(dim=0)  # [S]
        better = loss < best_loss
        best = torch.where(
            better.unsqueeze(1),
            x[pick, torch.arange(len(case), device=case.device)],
            best,
        )
        best_loss = torch.where(better, loss, best_loss)
        done += group
    return best


def _loss_no_grad(model: Graph, spec: _SpecTensors, case: Tensor, x: Tensor) -> Tensor:
    """The loss [S] of points ``x`` [S, n] for cases [S], without gradients."""
    with torch.no_grad():
        y = model.forward(x.reshape(len(x), *model.input_shape))
        return spec.margin(y.reshape(len(x), -1), case)[1]


def _starting_points(
    lower: Tensor, upper: Tensor, restart: Tensor, generator: torch.Generator
) -> Tensor:
    """Starting points [S, n] in the boxes [S, n] by restart index [S].

    Restart 0 is the center; after that restarts cycle through random corners,
    edge-heavy points (Beta(1/2, 1/2) per coordinate) and uniform points.
    """

    def rand() -> Tensor:
        return torch.rand(
            lower.shape, generator=generator, device=lower.device, dtype=lower.dtype
        )

    uniform = rand()
    corner = (rand() < 0.5).to(lower.dtype)
    edgy = torch.sin(0.5 * math.pi * rand()) ** 2  # Beta(1/2, 1/2)
    kind = (restart % 3).unsqueeze(1)
    fraction = torch.where(kind == 1, corner, torch.where(kind == 2, edgy, uniform))
    fraction = torch.where(restart.unsqueeze(1) == 0, 0.5, fraction)
    return torch.clamp(lower + fraction * (upper - lower), lower, upper)


def _descend(
    model: Graph,
    spec: _SpecTensors,
    case: Tensor,
    x: Tensor,
    config: AttackConfig,
    validate: Validator,
    deadline: float | None,
) -> Counterexample | None:
    """Run signed-gradient descent from ``x`` [S, n]; return a checked hit."""
    lower, upper = spec.lower[case], spec.upper[case]
    half_width = (upper - lower) / 2
    steps = max(0, config.steps)
    decay = _FINAL_STEP_FRACTION ** (1.0 / max(1, steps - 1))
    best = math.inf
    for t in range(steps + 1):
        if deadline is not None and time.monotonic() > deadline:
            return None
        x = x.detach().requires_grad_(True)
        y = model.forward(x.reshape(len(x), *model.input_shape)).reshape(len(x), -1)
        margin, loss = spec.margin(y, case)
        best = min(best, float(margin.detach().min()))

        cex = _check_hits(x.detach(), margin.detach(), case, validate)
        if cex is not None or t == steps:
            logger.debug("PGD batch of %d: best margin %.6g", len(x), best)
            return cex

        # Signed step, then back into the box.
        (grad,) = torch.autograd.grad(loss.sum(), x)
        step = config.step_size * decay**t * half_width
        with torch.no_grad():
            x = x - step * torch.nan_to_num(grad).sign()
            x = torch.minimum(torch.maximum(x, lower), upper)
    return None


def _check_hits(
    x: Tensor, margin: Tensor, case: Tensor, validate: Validator
) -> Counterexample | None:
    """Replay the lowest-margin points with margin <= 0; return the first valid."""
    hits = torch.nonzero(margin <= 0).flatten()
    if len(hits) == 0:
        return None
    order = hits[torch.argsort(margin[hits])][:_CHECKS_PER_STEP]
    points = x[order].to("cpu", torch.float64).numpy()
    for row, i in enumerate(order.tolist()):
        cex = validate(points[row], int(case[i]))
        if cex is not None:
            return cex
        logger.debug(
            "candidate with margin %.3g (case %d) rejected on replay",
            float(margin[i]),
            int(case[i]),
        )
    return None


def make_validator(graph: Graph, prop: Property, config: AttackConfig) -> Validator:
    """The replay used on candidates: onnxruntime, or the graph in float64.

    Returns:
        ``validate(x, case)``: the counterexample when the flat float64 ``x``
        (clipped into the case's box) violates case ``case`` on replay, else None.
    """
    evaluate: Callable[[np.ndarray], np.ndarray]
    if config.check_onnxruntime and graph.source:
        runtime = OnnxRuntimeModel(graph.source)
        evaluate, input_dtype = runtime.run_one, runtime.dtype
    else:
        if config.check_onnxruntime:
            logger.warning(
                "graph has no ONNX source; replaying candidates with the graph in "
                "float64 instead of onnxruntime"
            )
        exact = graph.to("cpu", torch.float64)

        def evaluate(point: np.ndarray) -> np.ndarray:
            x = torch.as_tensor(point, dtype=torch.float64)
            with torch.no_grad():
                y = exact.forward(x.reshape(1, *exact.input_shape))
            return y.reshape(-1).numpy()

        input_dtype = np.float64

    def validate(x: np.ndarray, case: int) -> Counterexample | None:
        c = prop.cases[case]
        lower = np.asarray(c.lower, dtype=np.float64)
        upper = np.asarray(c.upper, dtype=np.float64)
        point = np.clip(x, lower, upper)
        return validate_point(evaluate, input_dtype, prop, point, case=case)

    return validate
