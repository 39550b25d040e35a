"""Choosing where to split: the neuron (heuristics) and the point.

Candidates are the neurons of values that feed nonlinear nodes (the "split
values"). Each heuristic scores every candidate of every domain; the best one per
domain is split.

* ``widest``: the widest input interval.
* ``babsr``: the change of the relaxation's intercepts, weighted by the
  objective's coefficients on the nonlinearity's output (one backward step,
  no concretization): BaBSR's idea carried over to general functions.
* ``bbps``: one backward step through the relaxation of each child, then a
  shortcut to the input through the value's own linear bounds in terms of the
  input (saved at the root), concretized over the box: the estimated new lower
  bound of each objective row. The score is the improvement of the worst child on
  the worst unproven row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from genbab.bounds.box import Bounds, Box
from genbab.bounds.engine import Engine, LinearForm
from genbab.bounds.nonlinear import relax_unary
from genbab.bounds.relax.bivariate import relax_mul
from genbab.model.graph import Node
from genbab.model.ops import Mul, Unary


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
        if not nodes:
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


def split_points(value: SplitValue, lower: Tensor, upper: Tensor, table=None) -> Tensor:
    """Branching point of every neuron of a value, strictly inside its interval.

    ReLU-like consumers split at 0; a single univariate consumer with a lookup
    table uses it; everything else splits at the midpoint.
    """
    mid = (lower + upper) / 2
    if value.relu_only:
        return torch.where((lower < 0) & (upper > 0), torch.zeros_like(mid), mid)
    if table is not None and len(value.consumers) == 1:
        node = value.consumers[0]
        if isinstance(node.op, Unary) and node.op.param is None:
            p = table.points(node.op.func, lower, upper)
            inside = (p > lower) & (p < upper)
            return torch.where(inside, p, mid)
    return mid


def score(
    heuristic: str,
    engine: Engine,
    values: list[SplitValue],
    bounds: Bounds,
    points: dict[str, Tensor],
    record: dict[str, Tensor],
    form: LinearForm,
    box: Box,
    rows_open: Tensor,
    root_forms: dict[str, tuple[LinearForm, LinearForm]] | None,
) -> dict[str, Tensor]:
    """Score every neuron of every split value; higher is better.

    Args:
        heuristic: ``bbps``, ``babsr`` or ``widest``.
        bounds: Current bounds of the batch, ``[N, *shape]`` per value.
        points: Branching point per value, ``[N, *shape]``.
        record: Objective coefficients on each nonlinear node's output,
            ``[N, S, *shape]`` (from :meth:`Engine.backward`).
        form: The objective's linear form in the input, ``[N, S, *in]``.
        box: The input boxes of the batch.
        rows_open: ``[N, S]`` True for rows not yet proven (others are ignored).
        root_forms: Linear bounds of each split value in the input, indexed per
            domain already (``[N, n, *in]``), for ``bbps``.

    Returns:
        Value name -> scores ``[N, n]`` (flattened neurons).
    """
    out: dict[str, Tensor] = {}
    for value in values:
        lo, hi = bounds[value.name]
        if heuristic == "widest":
            out[value.name] = (hi - lo).flatten(1)
            continue
        p = points[value.name]
        gain = None
        for node in value.consumers:
            a = record.get(node.name)
            if a is None:
                continue
            g = _consumer_gain(
                heuristic, node, value.name, a, bounds, lo, hi, p, form, box, root_forms
            )
            gain = g if gain is None else gain + g
        if gain is None:
            out[value.name] = torch.zeros_like(lo.flatten(1))
            continue
        # gain: [children=2, N, S, n]; worst child, worst open row.
        big = torch.finfo(gain.dtype).max
        gain = torch.where(rows_open[None, :, :, None], gain, big)
        out[value.name] = gain.min(0).values.min(1).values
    return out


def _consumer_gain(
    heuristic, node, name, a, bounds, lo, hi, p, form, box, root_forms
) -> Tensor:
    """Estimated change of each row's bound from splitting each neuron of
    ``name`` for one consumer node, ``[2, N, S, n]``."""
    N, S = a.shape[:2]
    if isinstance(node.op, Unary):
        parent = _unary_terms(node, a, lo, hi)
        kids = [_unary_terms(node, a, lo, p), _unary_terms(node, a, p, hi)]
    else:
        kids, parent = _mul_terms(node, name, a, bounds, p)
    # Each term is (coefficient on h, intercept), [N, S, *shape].
    c0, b0 = parent
    gains = []
    for (c1, b1), (klo, khi) in zip(kids, [(lo, p), (p, hi)], strict=True):
        db = (b1 - b0).flatten(2)
        if heuristic == "babsr":
            gains.append(db)
            continue
        dc = (c1 - c0).flatten(2)
        if root_forms is not None and name in root_forms and isinstance(node.op, Unary):
            gains.append(db + _shortcut(dc, form, box, root_forms[name]))
        else:
            # Interval shortcut: the change of c * h over the child's interval.
            kl, kh = klo.flatten(1)[:, None], khi.flatten(1)[:, None]
            new = torch.minimum(c1.flatten(2) * kl, c1.flatten(2) * kh)
            ol, oh = lo.flatten(1)[:, None], hi.flatten(1)[:, None]
            old = torch.minimum(c0.flatten(2) * ol, c0.flatten(2) * oh)
            gains.append(db + new - old)
    return torch.stack(gains)


def _unary_terms(node: Node, a: Tensor, lo: Tensor, hi: Tensor):
    rel = relax_unary(node, lo.unsqueeze(1), hi.unsqueeze(1))
    pos, neg = a.clamp(min=0), a.clamp(max=0)
    return (
        pos * rel.lower_slope + neg * rel.upper_slope,
        pos * rel.lower_bias + neg * rel.upper_bias,
    )


def _mul_terms(node: Node, name: str, a: Tensor, bounds: Bounds, p: Tensor):
    """Terms for a product when one of its inputs (``name``) is split; only the
    intercept and the split input's coefficient are compared (shapes must match:
    otherwise no gain is estimated)."""
    (xl, xu), (yl, yu) = (bounds[i] for i in node.inputs)
    first = node.inputs[0] == name
    zeros = torch.zeros_like(a)
    if (xl.shape if first else yl.shape)[1:] != tuple(node.shape):
        return [(zeros, zeros), (zeros, zeros)], (zeros, zeros)

    def terms(xl, xu, yl, yu):
        rel = relax_mul(*(t.unsqueeze(1) for t in (xl, xu, yl, yu)))
        pos, neg = a.clamp(min=0), a.clamp(max=0)
        cx = pos * rel.lower_x + neg * rel.upper_x
        cy = pos * rel.lower_y + neg * rel.upper_y
        b = pos * rel.lower_bias + neg * rel.upper_bias
        # The other input's term is concretized over its interval.
        ol, oh = (yl, yu) if first else (xl, xu)
        other = cy if first else cx
        b = b + torch.minimum(other * ol.unsqueeze(1), other * oh.unsqueeze(1))
        return (cx if first else cy), b

    try:
        parent = terms(xl, xu, yl, yu)
        if first:
            kids = [terms(xl, p, yl, yu), terms(p, xu, yl, yu)]
        else:
            kids = [terms(xl, xu, yl, p), terms(xl, xu, p, yu)]
    except RuntimeError:  # broadcasting the other input does not fit
        return [(zeros, zeros), (zeros, zeros)], (zeros, zeros)
    return kids, parent


def _shortcut(dc: Tensor, form: LinearForm, box: Box, forms) -> Tensor:
    """Change of each row's concretized bound when neuron ``j``'s coefficient
    changes by ``dc[..., j]``, with ``h_j`` replaced by its linear bounds in the
    input. ``[N, S, n]``."""
    low, up = forms
    N, S, n = dc.shape
    a0 = form.coeffs.flatten(2)  # [N, S, I]
    base = _concretize(a0, box)  # [N, S]
    lo_c, up_c = low.coeffs.flatten(2), up.coeffs.flatten(2)  # [N, n, I]
    out = torch.empty(N, S, n, dtype=dc.dtype, device=dc.device)
    chunk = max(1, int(2e7 // max(1, N * S * a0.shape[-1])))
    for j in range(0, n, chunk):
        d = dc[:, :, j : j + chunk]  # [N, S, k]
        pos, neg = d.clamp(min=0), d.clamp(max=0)
        coeff = (
            a0[:, :, None]
            + pos[..., None] * lo_c[:, None, j : j + chunk]
            + neg[..., None] * up_c[:, None, j : j + chunk]
        )
        bias = (
            pos * low.bias[:, None, j : j + chunk]
            + neg * up.bias[:, None, j : j + chunk]
        )
        out[:, :, j : j + chunk] = _concretize(coeff, box) + bias - base[..., None]
    return out


def _concretize(coeffs: Tensor, box: Box) -> Tensor:
    """Minimum of ``coeffs . x`` over the boxes; ``coeffs`` ``[N, ..., I]``."""
    lo = box.lower.flatten(1)
    hi = box.upper.flatten(1)
    shape = (lo.shape[0],) + (1,) * (coeffs.dim() - 2) + (lo.shape[1],)
    lo, hi = lo.reshape(shape), hi.reshape(shape)
    return (coeffs.clamp(min=0) * lo + coeffs.clamp(max=0) * hi).sum(-1)
