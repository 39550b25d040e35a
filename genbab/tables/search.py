"""Vectorised one-dimensional minimisation over many independent problems at once.

Every grid entry of a table is one problem: find the relative split position
``t`` in ``(0, 1)`` minimising its loss. The losses need not be smooth (a
relaxation switches between chord and tangent as an end moves) nor unimodal
(sin, cos and GeLU), so the search has two stages:

1. a scan of evenly spaced candidates (done by the caller, or by :func:`scan`)
   whose best point and its two neighbours bracket a minimum;
2. Brent's method (golden-section steps, with parabolic steps where the loss
   is locally smooth) inside that bracket, for all problems together; each
   iteration evaluates one new point of every problem not yet converged.

Brent's method keeps the best point seen and only ever shrinks the bracket
around it, so its result is never worse than the scan's best candidate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Bracket", "LossFn", "bracket_at", "bracket_best", "brent", "scan"]

#: ``loss(index, t)``: losses ``[k]`` of the problems ``index`` (``[k]``, long)
#: split at the relative positions ``t`` (``[k]``, in ``[0, 1]``).
LossFn = Callable[[Tensor, Tensor], Tensor]

_CGOLD = 0.5 * (3.0 - math.sqrt(5.0))
_INF = float("inf")


@dataclass
class Bracket:
    """A bracket per problem: ends ``a < b`` and the best point ``x`` between them.

    ``w`` and ``v`` are two more evaluated points (Brent's second and third best);
    the bracket ends themselves serve at the start. All tensors have shape
    ``[N]``.
    """

    a: Tensor
    b: Tensor
    x: Tensor
    fx: Tensor
    w: Tensor
    fw: Tensor
    v: Tensor
    fv: Tensor


def scan(
    loss: LossFn,
    count: int,
    cells: int,
    f0: Tensor,
    f1: Tensor,
    dtype: torch.dtype = torch.float64,
) -> Bracket:
    """Evaluate the cell centres ``t = (k + 1/2) / cells``; bracket the best.

    Cell centres rather than ``k / cells``: relaxations built from tables of
    tangent points (sigmoid, tanh) jump where an end crosses a table point, and
    evenly spaced fractions of a grid interval tend to land exactly on them.

    Args:
        loss: The problems' loss function.
        count: Number of problems ``N``.
        cells: Number of candidates (``>= 1``).
        f0: ``[N]`` losses at ``t = 0`` (known to the caller: no split).
        f1: ``[N]`` losses at ``t = 1``.
        dtype: Dtype of the positions.

    Returns:
        The bracket from the previous to the next candidate around the best one
        (from ``t = 0`` or to ``t = 1`` at the ends; the first best on ties),
        with those two points as ``w`` and ``v``.
    """
    index = torch.arange(count)
    values = []
    for k in range(cells):
        t = torch.full((count,), (k + 0.5) / cells, dtype=dtype)
        values.append(loss(index, t))
    table = torch.stack(values, dim=1)  # [N, cells]
    return bracket_best(table, f0, f1, 0.5, 1.0 / cells)


def bracket_best(
    values: Tensor, f0: Tensor, f1: Tensor, offset: float, step: float
) -> Bracket:
    """Bracket around the best of evenly spaced candidates ``(k + offset) * step``.

    See :func:`bracket_at`; ``values`` is ``[N, C]``.
    """
    c = values.shape[1]
    positions = (torch.arange(c, dtype=values.dtype) + offset) * step
    return bracket_at(values, f0, f1, positions)


def bracket_at(values: Tensor, f0: Tensor, f1: Tensor, positions: Tensor) -> Bracket:
    """Bracket around the best candidate of each problem.

    Args:
        values: ``[N, C]`` losses at the increasing ``positions`` (``+inf`` for
            candidates a problem does not have; they must come last).
        f0: ``[N]`` losses at ``t = 0``.
        f1: ``[N]`` losses at ``t = 1``.
        positions: ``[C]`` candidate positions in ``(0, 1)``.

    Returns:
        The bracket from the previous to the next candidate around the best one
        (from ``t = 0`` or to ``t = 1`` at the ends; the first best on ties),
        with those two points as ``w`` and ``v``.
    """
    n, c = values.shape
    best = values.argmin(dim=1)
    rows = torch.arange(n)
    zero = torch.zeros(1, dtype=positions.dtype)
    one = torch.ones(1, dtype=positions.dtype)
    padded_pos = torch.cat([zero, positions, one])
    prev, nxt = best, best + 2  # columns in padded_pos
    fx = values[rows, best]
    fa = torch.where(best > 0, values[rows, (best - 1).clamp(min=0)], f0)
    fb = values[rows, (best + 1).clamp(max=c - 1)]
    last = (best == c - 1) | torch.isinf(fb)
    fb = torch.where(last, f1, fb)
    a = padded_pos[prev]
    b = torch.where(last, one, padded_pos[nxt.clamp(max=c + 1)])
    x = positions[best]
    return Bracket(a=a, b=b, x=x, fx=fx, w=a, fw=fa, v=b, fv=fb)


def brent(
    loss: LossFn,
    bracket: Bracket,
    tol: float,
    max_iter: int = 60,
    on_iter: Callable[[int, int], None] | None = None,
) -> tuple[Tensor, Tensor]:
    """Brent's minimisation inside each bracket, all problems at once.

    Args:
        loss: The problems' loss function.
        bracket: Start brackets (``a <= x <= b``), shape ``[N]`` each.
        tol: Absolute tolerance on ``t``: a problem stops once its bracket is
            about ``4 * tol`` wide.
        max_iter: Iteration limit (each evaluates one point per open problem).
        on_iter: Called as ``on_iter(iteration, open_problems)`` after each
            iteration.

    Returns:
        ``(t, loss)``: the best point found per problem and its loss, ``[N]``.
    """
    s = _State.start(bracket)
    for it in range(max_iter):
        xm = 0.5 * (s.a + s.b)
        open_ = (s.x - xm).abs() > 2 * tol - 0.5 * (s.b - s.a)
        index = open_.nonzero().squeeze(1)
        if on_iter is not None:
            on_iter(it, int(index.numel()))
        if index.numel() == 0:
            break
        s.step(loss, index, xm, tol)
    return s.x, s.fx


@dataclass
class _State:
    """Brent's variables (Numerical Recipes' names), one entry per problem."""

    a: Tensor
    b: Tensor
    x: Tensor
    w: Tensor
    v: Tensor
    fx: Tensor
    fw: Tensor
    fv: Tensor
    d: Tensor
    e: Tensor

    @classmethod
    def start(cls, br: Bracket) -> _State:
        # e (the step before last) starts at the bracket width, so the very first
        # step may already be parabolic through x and the two known neighbours.
        return cls(
            br.a.clone(), br.b.clone(), br.x.clone(), br.w.clone(), br.v.clone(),
            br.fx.clone(), br.fw.clone(), br.fv.clone(),
            torch.zeros_like(br.x), br.b - br.a,
        )  # fmt: skip

    def step(self, loss: LossFn, index: Tensor, xm_all: Tensor, tol: float) -> None:
        """One iteration for the open problems ``index``."""
        a, b, x, w, v = (t[index] for t in (self.a, self.b, self.x, self.w, self.v))
        fx, fw, fv = self.fx[index], self.fw[index], self.fv[index]
        d, e, xm = self.d[index], self.e[index], xm_all[index]
        tol2 = 2 * tol

        # Parabola through (x, fx), (w, fw), (v, fv); accepted if it falls well
        # inside the bracket and moves less than half the step before last.
        r = (x - w) * (fx - fv)
        q = (x - v) * (fx - fw)
        p = (x - v) * q - (x - w) * r
        q = 2 * (q - r)
        p = torch.where(q > 0, -p, p)
        q = q.abs()
        try_para = e.abs() > tol
        para = (
            try_para & (p.abs() < (0.5 * q * e).abs())
            & (p > q * (a - x)) & (p < q * (b - x))
        )  # fmt: skip
        safe_q = torch.where(para, q, torch.ones_like(q))
        d_para = p / safe_q
        u_para = x + d_para
        near_end = ((u_para - a) < tol2) | ((b - u_para) < tol2)
        d_para = torch.where(near_end, _sign(xm - x) * tol, d_para)
        e_gold = torch.where(x >= xm, a - x, b - x)
        e_new = torch.where(para, d, e_gold)
        d_new = torch.where(para, d_para, _CGOLD * e_gold)
        u = torch.where(d_new.abs() >= tol, x + d_new, x + _sign(d_new) * tol)
        u = torch.minimum(torch.maximum(u, a), b)
        fu = loss(index, u)

        # Bookkeeping of the bracket and of the three best points.
        better = fu <= fx
        right = u >= x
        a_new = torch.where(better, torch.where(right, x, a), torch.where(right, a, u))
        b_new = torch.where(better, torch.where(right, b, x), torch.where(right, u, b))
        second = ~better & ((fu <= fw) | (w == x))
        third = ~better & ~second & ((fu <= fv) | (v == x) | (v == w))
        v_new = torch.where(better | second, w, torch.where(third, u, v))
        fv_new = torch.where(better | second, fw, torch.where(third, fu, fv))
        w_new = torch.where(better, x, torch.where(second, u, w))
        fw_new = torch.where(better, fx, torch.where(second, fu, fw))
        x_new = torch.where(better, u, x)
        fx_new = torch.where(better, fu, fx)
        for name, value in (
            ("a", a_new), ("b", b_new), ("x", x_new), ("fx", fx_new),
            ("w", w_new), ("fw", fw_new), ("v", v_new), ("fv", fv_new),
            ("d", d_new), ("e", e_new),
        ):  # fmt: skip
            getattr(self, name)[index] = value


def _sign(t: Tensor) -> Tensor:
    return torch.where(t >= 0, torch.ones_like(t), -torch.ones_like(t))
