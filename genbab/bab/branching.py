"""Choosing where to split: the neuron (heuristics), the point, the children.

Candidates are the neurons of values that feed nonlinear nodes (the "split
values"). Each heuristic scores the candidates of every domain; the best one per
domain (the best few, when several levels are split at once) is split.

* ``widest``: the widest input interval.
* ``babsr``: the change of the relaxation's intercepts when the neuron's
  interval is replaced by each child's, weighted by the objective's coefficients
  on the nonlinearity's output (one backward step, no concretization): BaBSR's
  idea carried over to general functions.
* ``bbps``: the same backward step also changes the coefficient ``c`` on the
  neuron ``h``; the change ``dc * h`` is replaced by ``h``'s own linear bounds in
  terms of the input (saved at the root: a shortcut past all layers between) and
  concretized together with the objective's linear form over the box. Score: the
  estimated new margin of the worst child.

BBPS is evaluated in two stages. Over the box, ``min_x (A + D) . x`` is at most
``min_x A . x + D . x*`` with ``x*`` the corner minimizing ``A . x``, so this
first-order value (one matrix-vector product per domain) is an optimistic
estimate of every candidate's score. Only the ``candidates`` best by it get the
exact score, ``(A + D) . mid - |A + D| . rad``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from genbab.bounds.box import Bounds, broadcast_batch
from genbab.bounds.engine import Engine, LinearForm
from genbab.bounds.nonlinear import relax_unary
from genbab.bounds.relax.bivariate import relax_mul
from genbab.model.graph import Node
from genbab.model.ops import Mul, Unary
from genbab.tables.keys import table_key

SCORE_DTYPE = torch.float32  # scores only rank candidates


@dataclass(frozen=True)
class SplitValue:
    """A value whose neurons may be split, with the nonlinear nodes it feeds."""

    name: str
    consumers: tuple[Node, ...]
    relu_only: bool  # split only where the interval contains 0 (ReLU-like)


def split_values(engine: Engine) -> list[SplitValue]:
    """The values feeding splittable nonlinear nodes, in topological order."""
    graph = engine.graph
    feeds: dict[str, list[Node]] = {}
    for node in graph.nodes:
        if isinstance(node.op, Unary | Mul):
            for i in node.inputs:
                feeds.setdefault(i, []).append(node)
    out = []
    for name in engine.needs_bounds():
        nodes = feeds.get(name)
        if not nodes or name == graph.input_name:
            continue
        relu_only = all(
            isinstance(n.op, Unary) and n.op.func in ("relu", "leaky_relu", "abs")
            for n in nodes
        )
        out.append(SplitValue(name, tuple(nodes), relu_only))
    return out


def candidate_mask(value: SplitValue, lower: Tensor, upper: Tensor, min_gap: float):
    """Boolean ``[N, *shape]``: which neurons may be split."""
    if value.relu_only:
        return (lower < 0) & (upper > 0)
    return (upper - lower) > min_gap


def split_points(
    value: SplitValue,
    lower: Tensor,
    upper: Tensor,
    table=None,
    bounds: Bounds | None = None,
) -> Tensor:
    """Branching point of every neuron of a value, strictly inside its interval.

    ReLU-like consumers split at 0; a single univariate consumer, or a single
    product, with a lookup table uses it (``table.points(func, lower, upper)``,
    ``table.mul_points(xl, xu, yl, yu)`` with the split input first); everything
    else, and any point the table puts outside ``(lower, upper)``, splits at the
    midpoint.

    Args:
        bounds: Bounds of the other inputs (for products).
    """
    mid = (lower + upper) / 2
    if value.relu_only:
        return torch.where((lower < 0) & (upper > 0), torch.zeros_like(mid), mid)
    if table is None or len(value.consumers) != 1:
        return mid
    node = value.consumers[0]
    p = None
    if isinstance(node.op, Unary):
        key = table_key(node.op.func, node.op.param)
        if key is not None:
            p = table.points(key, lower, upper)
    elif (
        isinstance(node.op, Mul) and bounds is not None and hasattr(table, "mul_points")
    ):
        others = [i for i in node.inputs if i != value.name]
        if len(others) == 1 and bounds[others[0]][0].shape == lower.shape:
            ol, ou = bounds[others[0]]
            p = table.mul_points(lower, upper, ol, ou)
    if p is None:
        return mid
    p = torch.as_tensor(p, dtype=lower.dtype, device=lower.device)
    inside = (p > lower) & (p < upper)
    return torch.where(inside, p, mid)


@dataclass
class Scores:
    """Scores of every candidate of every domain, higher is better.

    Attributes:
        value: ``[N, T]`` (``T`` neurons of all split values, concatenated).
        mask: ``[N, T]`` True where the neuron may be split.
        points: ``[N, T]`` the branching point of each neuron.
    """

    value: Tensor
    mask: Tensor
    points: Tensor


def child_terms(
    value: SplitValue,
    record: dict[str, Tensor],
    bounds: Bounds,
    points: Tensor,
    alpha: dict[str, Tensor],
) -> tuple[Tensor, Tensor, Tensor] | None:
    """Coefficient on each neuron of ``value`` after one backward step through
    its consumers' relaxations, for the parent and for each child's interval,
    and the change of the bias, all consumers together.

    Args:
        record: Objective coefficients on nonlinear outputs, ``[N, R, *shape]``.
        bounds: The domains' bounds.
        points: Branching points ``[N, *shape]``.
        alpha: The domains' relaxation parameters ``[N, P, R, *shape]`` (the
            parent's relaxation uses them, the children's the default).

    Returns:
        ``(c0, c1, db)``: ``[N, R, n]``, ``[2, N, R, n]`` (child ``h <= p``
        first) and ``[2, N, R, n]``; None when no consumer was reached.
    """
    lo, hi = bounds[value.name]
    c0 = c1 = db = None
    for node in value.consumers:
        a = record.get(node.name)
        if a is None:
            continue
        if isinstance(node.op, Unary):
            p0 = alpha.get(node.name)
            p0 = None if p0 is None else p0.movedim(1, 0).to(a.dtype)
            parent = _unary_terms(node, a, lo, hi, p0)
            kids = [
                _unary_terms(node, a, lo, points),
                _unary_terms(node, a, points, hi),
            ]
        else:
            kids, parent = _mul_terms(node, value.name, a, bounds, points)
        pc, pb = parent
        c = pc.flatten(2)
        k = torch.stack([kc.flatten(2) for kc, _ in kids])
        b = torch.stack([(kb - pb).flatten(2) for _, kb in kids])
        c0 = c if c0 is None else c0 + c
        c1 = k if c1 is None else c1 + k
        db = b if db is None else db + b
    if c0 is None or c1 is None or db is None:
        return None
    return c0, c1, db


def _unary_terms(node: Node, a: Tensor, lo: Tensor, hi: Tensor, params=None):
    rel = relax_unary(node, lo.unsqueeze(1), hi.unsqueeze(1), params)
    pos, neg = a.clamp(min=0), a.clamp(max=0)
    return (
        pos * rel.lower_slope + neg * rel.upper_slope,
        pos * rel.lower_bias + neg * rel.upper_bias,
    )


def _mul_terms(node: Node, name: str, a: Tensor, bounds: Bounds, p: Tensor):
    """Terms for a product when one of its inputs (``name``) is split; the other
    input's term is concretized over its interval. A split input broadcast in the
    product (shape ``[N, *s]`` with ``s`` smaller than the product's) gets the sum
    of its terms over the product's entries it feeds. If broadcasting fails no
    gain is estimated (all terms zero)."""
    (xl, xu), (yl, yu) = (bounds[i] for i in node.inputs)
    first = node.inputs[0] == name
    split_shape = tuple((xl if first else yl).shape[1:])
    zeros = a.new_zeros(*a.shape[:2], *split_shape)
    none = [(zeros, zeros), (zeros, zeros)], (zeros, zeros)

    def terms(xl, xu, yl, yu):
        xl, xu, yl, yu = broadcast_batch(tuple(node.shape), xl, xu, yl, yu)
        rel = relax_mul(*(t.unsqueeze(1) for t in (xl, xu, yl, yu)))
        pos, neg = a.clamp(min=0), a.clamp(max=0)
        cx = pos * rel.lower_x + neg * rel.upper_x
        cy = pos * rel.lower_y + neg * rel.upper_y
        b = pos * rel.lower_bias + neg * rel.upper_bias
        ol, oh = (yl, yu) if first else (xl, xu)
        other = cy if first else cx
        b = b + torch.minimum(other * ol.unsqueeze(1), other * oh.unsqueeze(1))
        return (
            _sum_to(cx if first else cy, split_shape),
            _sum_to(b, split_shape),
        )

    try:
        parent = terms(xl, xu, yl, yu)
        if first:
            kids = [terms(xl, p, yl, yu), terms(p, xu, yl, yu)]
        else:
            kids = [terms(xl, xu, yl, p), terms(xl, xu, p, yu)]
    except RuntimeError:  # broadcasting the other input does not fit
        return none
    return kids, parent


def _sum_to(t: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Sum ``t`` (``[N, R, *out]``) over the entries broadcast from ``shape``:
    the result is ``[N, R, *shape]``."""
    out = t.shape[2:]
    padded = (1,) * (len(out) - len(shape)) + shape
    dims = [2 + i for i, (o, s) in enumerate(zip(out, padded, strict=True)) if s != o]
    if dims:
        t = t.sum(dims, keepdim=True)
    return t.reshape(*t.shape[:2], *shape)


def per_case_matvec(mat: Tensor, case: Tensor, x: Tensor) -> Tensor:
    """``mat[case[n]] @ x[n]`` for every domain ``n``, grouped by case.

    Args:
        mat: ``[C, T, I]``.
        case: ``[N]`` long.
        x: ``[N, R, I]``.

    Returns:
        ``[N, R, T]``.
    """
    N, R, _ = x.shape
    out = x.new_empty(N, R, mat.shape[1])
    for c in torch.unique(case).tolist():
        sel = torch.nonzero(case == c).flatten()
        xs = x[sel].reshape(-1, x.shape[-1])  # [n_c R, I]
        out[sel] = (xs @ mat[c].T).reshape(sel.numel(), R, -1)
    return out


def concretize_mid_rad(coeffs: Tensor, mid: Tensor, rad: Tensor) -> Tensor:
    """``min_x coeffs . x`` over ``|x - mid| <= rad`` along the last dim."""
    return (coeffs * mid).sum(-1) - (coeffs.abs() * rad).sum(-1)


def clause_score(margin: Tensor, gain: Tensor, reduce: str = "open_sum") -> Tensor:
    """Score of a split from the estimated margins of its children.

    Args:
        margin: Current row margins ``lower - rhs``, ``[N, R]``.
        gain: Estimated change per child and row, ``[2, N, R, K]``.
        reduce: ``worst``: the estimated clause margin of the worst child;
            ``open_sum``: the sum over children of the negative part of their
            estimated clause margins (a child expected to be proven counts 0,
            so a split that proves one side scores well).

    Returns:
        ``[N, K]``, higher is better.
    """
    new = (margin[None, :, :, None] + gain).max(2).values  # [2, N, K]
    if reduce == "worst":
        return new.min(0).values
    return new.clamp(max=0).sum(0)


def form_parts(form: LinearForm, lower: Tensor, upper: Tensor):
    """Flattened form coefficients, box mid and radius in :data:`SCORE_DTYPE`."""
    a0 = form.coeffs.flatten(2).to(SCORE_DTYPE)  # [N, R, I]
    lo = lower.flatten(1).to(SCORE_DTYPE)
    hi = upper.flatten(1).to(SCORE_DTYPE)
    mid, rad = ((lo + hi) / 2).unsqueeze(1), ((hi - lo) / 2).clamp(min=0).unsqueeze(1)
    return a0, mid, rad
