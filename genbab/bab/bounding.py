"""Bounding a batch of domains: alpha-CROWN with beta multipliers (beta-CROWN).

A domain's split constraints are ``h_j >= l_j`` and ``h_j <= u_j`` for the
neurons whose bounds a split tightened (those differing from the root's). For
multipliers ``b >= 0`` the function ``f - b_lo (h - l) - b_hi (u - h)`` is at most
``f`` on the domain, so any lower bound of it bounds ``f`` there; the backward
pass adds ``b_hi - b_lo`` to the coefficient on ``h`` and ``b_lo l - b_hi u`` to
the bias (:meth:`Engine.backward`'s ``extra``). The relaxation parameters
(alpha) and the multipliers are optimized together by projected Adam, and the
best bound of every row over all iterations is kept (every iterate is sound).
Proven domains leave the batch as soon as they are proven.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from genbab.bab.domains import Domains
from genbab.bab.problem import Problem, flat
from genbab.bounds.alpha import init_params
from genbab.bounds.box import Bounds
from genbab.bounds.engine import LinearForm

STORE_DTYPE = torch.float32  # alpha and beta are stored in this dtype


def init_alpha(problem: Problem, bounds: Bounds, rows: int) -> dict[str, Tensor]:
    """Parameters of the default relaxations, ``[N, P, R, *shape]`` per node
    (alpha-CROWN's starting point, domains first)."""
    params = init_params(problem.engine, bounds, rows)  # [P, N, R, *shape]
    return {k: p.detach().movedim(1, 0).to(STORE_DTYPE) for k, p in params.items()}


def zero_beta(problem: Problem, size: int, rows: int) -> dict[str, Tensor]:
    """Zero multipliers ``[N, 2, R, n]`` for every split value."""
    out = {}
    for v, start, end in zip(
        problem.values, problem.offsets[:-1], problem.offsets[1:], strict=True
    ):
        out[v.name] = torch.zeros(
            size,
            2,
            rows,
            end - start,
            dtype=STORE_DTYPE,
            device=problem.item_case.device,
        )
    return out


def split_masks(problem: Problem, doms: Domains) -> dict[str, tuple[Tensor, Tensor]]:
    """Which neurons carry a split constraint on each side, ``[N, 1, n]`` each."""
    out = {}
    for v in problem.values:
        lo, hi = doms.bounds[v.name]
        rlo, rhi = problem.root_bounds[v.name]
        m_lo = flat(lo) > flat(rlo)[doms.item]
        m_hi = flat(hi) < flat(rhi)[doms.item]
        out[v.name] = (m_lo.unsqueeze(1), m_hi.unsqueeze(1))
    return out


def beta_terms(
    problem: Problem,
    bounds: Bounds,
    beta: dict[str, Tensor],
    masks: dict[str, tuple[Tensor, Tensor]],
) -> dict[str, tuple[Tensor, Tensor]]:
    """The backward pass's extra terms of the split constraints.

    Args:
        bounds: The domains' bounds ``[N, *shape]``.
        beta: Value -> multipliers ``[N, 2, R, n]`` (non-negative).
        masks: From :func:`split_masks`.

    Returns:
        Value -> ``(coeffs [N, R, *shape], bias [N, R])``.
    """
    out = {}
    for name, b in beta.items():
        m_lo, m_hi = masks[name]
        lo, hi = bounds[name]
        b_lo = b[:, 0] * m_lo
        b_hi = b[:, 1] * m_hi
        coef = (b_hi - b_lo).reshape(b.shape[0], b.shape[2], *lo.shape[1:])
        bias = (b_lo * flat(lo).unsqueeze(1) - b_hi * flat(hi).unsqueeze(1)).sum(-1)
        out[name] = (coef, bias)
    return out


def lower_bound(
    problem: Problem,
    doms: Domains,
    alpha: dict[str, Tensor],
    beta: dict[str, Tensor] | None,
    masks: dict[str, tuple[Tensor, Tensor]] | None,
    record: dict[str, Tensor] | None = None,
    forms: list[LinearForm] | None = None,
) -> Tensor:
    """Lower bounds of the domains' rows, ``[N, R]``.

    Args:
        alpha: Node -> ``[N, P, R, *shape]`` in the engine's dtype.
        beta: Value -> ``[N, 2, R, n]`` or None (no split constraints).
        masks: From :func:`split_masks` (with ``beta``).
        record: See :meth:`Engine.backward`.
        forms: If given, the linear form in the input is appended.
    """
    engine = problem.engine
    objective = problem.objective
    coeffs = objective.coeffs[doms.item]
    N, R = coeffs.shape[:2]
    bounds = problem.full_bounds(doms.item, doms.bounds)
    params = {k: v.movedim(1, 0) for k, v in alpha.items()}
    extra = None
    if beta is not None and masks is not None:
        extra = beta_terms(problem, bounds, beta, masks)
    form = engine.backward(
        engine.graph.output_name,
        coeffs.reshape(N, R, *engine.graph.output_shape),
        bounds,
        params,
        record,
        extra,
    )
    if forms is not None:
        forms.append(form)
    return problem.box(doms.item).concretize(form.coeffs, form.bias)


class _Adam:
    """Adam on a list of tensors whose rows (dim 0) can be dropped in between."""

    def __init__(self, tensors: list[Tensor], lrs: list[float], decay: float):
        self.tensors = tensors
        self.lrs = lrs
        self.decay = decay
        self.m = [torch.zeros_like(t) for t in tensors]
        self.v = [torch.zeros_like(t) for t in tensors]
        self.step_count = 0

    @torch.no_grad()
    def step(self) -> None:
        self.step_count += 1
        k = self.step_count
        c1, c2 = 1 - 0.9**k, 1 - 0.999**k
        scale = self.decay ** (k - 1)
        for t, m, v, lr in zip(self.tensors, self.m, self.v, self.lrs, strict=True):
            if t.grad is None:
                continue
            g = t.grad
            m.mul_(0.9).add_(g, alpha=0.1)
            v.mul_(0.999).addcmul_(g, g, value=0.001)
            denom = (v / c2).sqrt_().add_(1e-8)
            t.addcdiv_(m, denom, value=-lr * scale / c1)
            t.grad = None

    def keep(self, index: Tensor) -> list[Tensor]:
        """Drop all rows but ``index``; returns the new leaf tensors."""
        self.tensors = [
            t.detach()[index].clone().requires_grad_(True) for t in self.tensors
        ]
        self.m = [m[index] for m in self.m]
        self.v = [v[index] for v in self.v]
        return self.tensors


def optimize(
    problem: Problem,
    doms: Domains,
    iterations: int,
    deadline: float | None = None,
) -> Domains:
    """Tighten the domains' bounds by alpha (and beta) optimization.

    Args:
        doms: Domains whose ``lower`` holds valid bounds (e.g. the parent's), and
            whose ``alpha``/``beta`` are the starting point.
        iterations: Adam steps at most (early stop when all are proven).
        deadline: ``time.monotonic()`` value after which to stop.

    Returns:
        The domains with the best ``lower`` and ``margin`` found, and the final
        parameters of those not proven.
    """
    cfg = problem.config
    use_beta = cfg.beta and bool(doms.beta)
    names_a = list(doms.alpha)
    names_b = list(doms.beta) if use_beta else []
    dtype = problem.engine.dtype
    leaves = [doms.alpha[k].to(dtype).clone().requires_grad_(True) for k in names_a]
    leaves += [doms.beta[k].to(dtype).clone().requires_grad_(True) for k in names_b]
    lrs = [cfg.lr_alpha] * len(names_a) + [cfg.lr_beta] * len(names_b)
    adam = _Adam(leaves, lrs, cfg.lr_decay)
    best = doms.lower.clone()
    rhs = problem.objective.rhs[doms.item]
    active = _Active(
        torch.arange(len(doms), device=best.device),
        doms,
        split_masks(problem, doms) if use_beta else None,
    )
    n_a = len(names_a)
    for it in range(max(1, iterations)):
        alpha = dict(zip(names_a, adam.tensors[:n_a], strict=True))
        beta = dict(zip(names_b, adam.tensors[n_a:], strict=True))
        with torch.enable_grad():
            lower = lower_bound(problem, active.doms, alpha, beta or None, active.masks)
        # fmax: a NaN bound (never expected) is ignored, not propagated.
        best[active.index] = torch.fmax(best[active.index], lower.detach())
        done = (best[active.index] - rhs[active.index]).max(-1).values > 0
        if done.all() or it == iterations - 1:
            break
        if deadline is not None and time.monotonic() > deadline:
            break
        margin = (lower - rhs[active.index]).max(-1).values
        (-margin.clamp(max=0).sum()).backward()
        adam.step()
        for t in adam.tensors[n_a:]:  # project beta onto >= 0
            t.data.clamp_(min=0)
        if done.sum() * 4 >= done.numel():
            keep = torch.nonzero(~done).flatten()
            adam.keep(keep)
            active = active.keep(keep)
    return _finish(doms, best, rhs, names_a, names_b, adam.tensors, active.index)


@dataclass
class _Active:
    """The domains still being optimized: their rows in the batch, their data
    and their split masks."""

    index: Tensor
    doms: Domains
    masks: dict[str, tuple[Tensor, Tensor]] | None

    def keep(self, keep: Tensor) -> _Active:
        masks = self.masks
        if masks is not None:
            masks = {k: (a[keep], b[keep]) for k, (a, b) in masks.items()}
        doms = self.doms
        lean = Domains(doms.item, doms.lower, doms.margin, doms.depth, doms.bounds)
        return _Active(self.index[keep], lean.take(keep), masks)


def _finish(doms, best, rhs, names_a, names_b, tensors, active) -> Domains:
    """The domains with their best bounds and the final parameters of those
    still open (``active``)."""
    out = Domains(
        doms.item,
        best,
        (best - rhs).max(-1).values,
        doms.depth,
        doms.bounds,
        {k: v.clone() for k, v in doms.alpha.items()},
        {k: v.clone() for k, v in doms.beta.items()},
    )
    n_a = len(names_a)
    with torch.no_grad():
        for k, t in zip(names_a, tensors[:n_a], strict=True):
            out.alpha[k][active] = t.detach().to(STORE_DTYPE)
        for k, t in zip(names_b, tensors[n_a:], strict=True):
            out.beta[k][active] = t.detach().to(STORE_DTYPE)
    return out


def record_coefficients(
    problem: Problem, doms: Domains
) -> tuple[dict[str, Tensor], LinearForm, Tensor]:
    """The objective's coefficients on each nonlinear output and its linear form
    in the input, with the domains' own parameters (for the heuristics).

    Returns:
        ``(record, form, lower)``: node -> ``[N, R, *shape]``, the form
        (``[N, R, *input_shape]``) and the lower bounds ``[N, R]``.
    """
    dtype = problem.engine.dtype
    alpha = {k: v.to(dtype) for k, v in doms.alpha.items()}
    beta = {k: v.to(dtype) for k, v in doms.beta.items()} if problem.config.beta else {}
    masks = split_masks(problem, doms) if beta else None
    record: dict[str, Tensor] = {}
    forms: list[LinearForm] = []
    with torch.no_grad():
        lower = lower_bound(problem, doms, alpha, beta or None, masks, record, forms)
    return record, forms[0], lower
